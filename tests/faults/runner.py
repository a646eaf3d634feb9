"""Run fault cases and print the table (``scripts/fault_table.py`` and the tests use this)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional

from .harness import OUTCOMES, Case, expected, judge, tally

COLUMNS = {"error": "clear error", "success": "correct success / exact resume",
           "traceback": "traceback", "hang": "hang", "silent": "silently accepted nonsense",
           "damage": "overwrite or damage"}


def run_cases(cases: Iterable[Case], log: Optional[Callable[[str], None]] = None) -> list[tuple[Case, str, str]]:
    """``[(case, outcome, detail)]``; ``detail`` is the message or what escaped."""
    out = []
    for case in cases:
        work = Path(tempfile.mkdtemp(prefix="fault-"))
        try:
            outcome, res = judge(case, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        detail = repr(res.exc)[:300] if res.exc is not None else (res.err.strip().splitlines() or [""])[-1][:300]
        if log and not expected(case, outcome):
            log(f"UNEXPECTED {outcome} (wanted {case.expect}): {case.id}: {detail}")
        out.append((case, outcome, detail))
    return out


def format_table(results: list[tuple[Case, str]]) -> str:
    table = tally(results)
    head = ["area", "tried", *COLUMNS.values()]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    total = {"tried": 0, **{o: 0 for o in OUTCOMES}}
    for area, row in table.items():
        lines.append("| " + " | ".join([area, str(row["tried"]), *(str(row[o]) for o in COLUMNS)]) + " |")
        for k in total:
            total[k] += row[k]
    lines.append("| " + " | ".join(["**all**", str(total["tried"]), *(str(total[o]) for o in COLUMNS)]) + " |")
    return "\n".join(lines)
