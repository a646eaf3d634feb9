"""What ``robustq data list`` shows: each dataset, where it was found, its counts, or how to
get it. Finding is cheap (file names only); ``verify=True`` also reads and checks every
dataset that was found and, where its official files are there (not only their extracted
content), their published MD5s; that takes seconds for the large ones."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import DataError
from .datasets import (ENV_VAR, DATASETS, DatasetSpec, check_md5s, find_root, load_dataset,
                       user_data_dir)


@dataclass
class Entry:
    spec: DatasetSpec
    where: Optional[Path]            # None: not found
    status: str                      # "found", "verified", or the problem / how to get it


def survey(verify: bool = False, names: Optional[list[str]] = None) -> list[Entry]:
    """One ``Entry`` per registered dataset (or per name in ``names``)."""
    out = []
    for name in names or DATASETS.names():
        spec = DATASETS.get(name)
        try:
            where = find_root(spec)
        except DataError:
            how = (f"not found: robustq data fetch {name}" if spec.resources else "not found")
            out.append(Entry(spec, None, how))
            continue
        status = "found"
        if verify:
            try:
                load_dataset(name, where)
                status = "verified" + _md5_note(spec, where)
            except DataError as e:
                status = f"INVALID: {e}"
        out.append(Entry(spec, where, status))
    return out


def _md5_note(spec: DatasetSpec, where: Path) -> str:
    """How the official files compare with their published MD5s (after the content checks
    passed, a mismatch means a re-compressed or modified copy, not a broken one)."""
    try:
        checked = check_md5s(spec, where, require=False) if spec.resources else []
    except DataError:
        return " (content only; MD5s differ from the published files, a re-compressed copy?)"
    return " (and its published MD5s)" if checked else ""


def format_survey(entries: list[Entry]) -> str:
    """A plain-text table of ``survey`` entries."""
    rows = [("dataset", "classes", "image", "train/test", "status", "where")]
    for e in entries:
        s = e.spec
        rows.append((s.name, str(s.num_classes), f"{s.channels}x{s.size}x{s.size}",
                     f"{s.counts[0]}/{s.counts[1]}", e.status.split(":")[0] if e.where else
                     e.status, str(e.where) if e.where else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    problems = [f"{e.spec.name}: {e.status[len('INVALID: '):]}" for e in entries
                if e.status.startswith("INVALID")]
    searched = (f"searched: ${ENV_VAR}/<name>, {user_data_dir()}/<name>, the bundled copy, "
                f"/usr/share/datasets/<name> (data.root overrides all)")
    return "\n".join(lines + problems + [searched])
