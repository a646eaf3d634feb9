"""``robustq report``: run directories -> a tidy CSV, a Markdown and an HTML report, plots.

``collect`` finds runs and their records, ``paper`` holds the paper's numbers and claims and sets
them against the runs, ``stats`` computes mean +- std and the paired verdicts, ``document``
writes the content, ``render`` turns it into Markdown / HTML, ``plots`` draws the figures.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..checkpoint import atomic_write
from .collect import Run, check_one_protocol, check_unique, find_runs, tidy_rows, to_csv
from .paper import claims, paper_data, paper_value, table_rows
from .stats import mean_std, paired

__all__ = ["write_report", "build_blocks", "find_runs", "tidy_rows", "claims", "paper_data",
           "paper_value", "table_rows", "mean_std", "paired", "Run"]


def _plots(runs: list[Run], out: Path) -> tuple[dict, list[Path]]:
    """Figures next to the report: {table id: [(relative path, alt)]}, and the files."""
    from . import plots

    stem, where, written = out.stem, out.parent, []
    per_table: dict = {}

    def keep(table: str, path, alt: str) -> None:
        if path is not None:
            written.append(path)
            per_table.setdefault(table, []).append((path.name, alt))

    for tid in paper_data()["tables"]:
        keep(tid, plots.accuracy_bars(runs, tid, where / f"{stem}-{tid.lower()}-accuracy.png"),
             f"Table {tid[1:]}: accuracy, mean and std over seeds")
    keep("T5", plots.sparsity_scatter(runs, where / f"{stem}-sparsity.png"),
         "weight sparsity vs channel sparsity")
    keep("T3", plots.tradeoff_frontier(runs, where / f"{stem}-frontier.png"),
         "trade-off frontier of (7) and (8)")
    return per_table, written


def build_blocks(runs: list[Run], command: str, plots: dict | None = None) -> list[tuple]:
    from .document import claim_blocks, header, other_blocks, table_blocks

    protocol = check_one_protocol(runs)
    return (header(runs, protocol, command) + claim_blocks(runs) +
            table_blocks(runs, plots or {}) + other_blocks(runs))


def write_report(dirs: list[str], out: str | Path = "report.md", *, plots: bool = True,
                 command: str | None = None) -> list[Path]:
    """Collect the runs under ``dirs`` and write ``out`` (Markdown), ``out`` with ``.html`` and
    ``.csv`` suffixes, and the plots beside it; returns the files written."""
    from .render import to_html, to_markdown
    from . import plots as plot_mod

    runs = find_runs(dirs)
    check_one_protocol(runs)   # both before anything is written
    check_unique(runs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = command or "robustq report " + " ".join(shlex.quote(str(d)) for d in dirs)
    figures, written = ({}, [])
    if plots and plot_mod.available():
        figures, written = _plots(runs, out)
    elif plots:
        print("robustq: note: no plots (matplotlib is not installed: pip install 'robustq[plot]')",
              file=sys.stderr)
    blocks = build_blocks(runs, command, figures)
    csv_path, html_path = out.with_suffix(".csv"), out.with_suffix(".html")
    atomic_write(csv_path, to_csv(tidy_rows(runs)).encode())
    atomic_write(out, to_markdown(blocks).encode())
    atomic_write(html_path, to_html(blocks, blocks[0][2]).encode())
    return [out, html_path, csv_path, *written]
