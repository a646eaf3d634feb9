"""What the ``robustq`` command says after Ctrl-C: what was kept, and the exact command that
continues (or repeats) the work, with the real paths.

The CLI records how far a verb got in a ``State`` (the run directory once it
exists, whether training finished) and ``note`` turns it into one sentence. Nothing here
writes: every file robustq writes is written whole or not at all (``checkpoint.atomic_write``),
so an interrupted verb leaves complete files and nothing half-written.
"""
from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass
class State:
    verb: str
    argv: list[str]                 # the command line as typed, after "robustq"
    run_dir: Optional[Path] = None  # train/run: set once the run directory exists
    created: bool = False           # ...and robustq created it (or only wrote config.yaml)
    trained: bool = False           # train/run: training finished, evaluation under way
    no_eval: bool = False
    epochs: Optional[int] = None
    partial: Optional[object] = None  # eval: where it keeps its progress (journal.Place)

    @property
    def again(self) -> str:
        return shlex.join(["robustq", *self.argv])


def finished_epochs(run_dir: Path) -> int:
    """Epochs whose rows are in ``metrics.csv`` (written with the checkpoint, epoch by epoch)."""
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except OSError:
        return 0


def forget_empty_run(run_dir: Path) -> bool:
    """Remove a run directory that holds nothing but the ``config.yaml`` robustq wrote into
    it (interrupted before anything was trained), so the same command can run again."""
    if (run_dir / "checkpoint.pt").exists():
        return False
    others = [p for p in run_dir.iterdir() if p.name != "config.yaml"]
    if others:
        return False
    (run_dir / "config.yaml").unlink(missing_ok=True)
    run_dir.rmdir()
    return True


def _train_note(p: State) -> str:
    run = p.run_dir
    if run is None:
        return f"nothing was written; run the same command again: {p.again}"
    if p.trained:
        if _kept(p):
            return (f"training finished and is kept in {run} (model.pt); the evaluation's "
                    f"progress is kept in {p.partial.file}: continue it where it stopped with robustq "
                    f"eval {shlex.quote(str(run))}")
        return (f"training finished and is kept in {run} (model.pt); the evaluation did not "
                f"finish and wrote nothing: evaluate with robustq eval {shlex.quote(str(run))}")
    if (run / "checkpoint.pt").exists():
        done = finished_epochs(run)
        of = f" of {p.epochs}" if p.epochs else ""
        resume = shlex.join(["robustq", p.verb, "--resume", str(run)]
                            + (["--no-eval"] if p.no_eval else []))
        return (f"{done}{of} epochs are kept in {run / 'checkpoint.pt'}; continue exactly "
                f"where they end with: {resume}")
    if p.created and forget_empty_run(run):
        return (f"no epoch had finished, so nothing was kept ({run} is removed again); run "
                f"the same command again: {p.again}")
    return f"no epoch had finished, so nothing was kept in {run}; run the same command again: {p.again}"


_NOTES = {
    "eval": "the evaluation did not finish and wrote nothing (earlier results are untouched); "
            "run it again: {again}",
    "sparsity": "the files written so far are complete; run it again: {again}",
    "prune": "nothing half-written was left; run it again: {again}",
    "export": "the files written so far are complete (each is written whole or not at all); "
              "run it again: {again}",
    "data": "a partial download is kept as .<file>.part and resumes where it stopped: {again}",
}


def _kept(p: State) -> bool:
    f = getattr(p.partial, "file", None)
    return f is not None and f.is_file()


def note(p: State) -> str:
    """One sentence: what ``p.verb`` kept and the exact command to continue."""
    if p.verb in ("train", "run"):
        return _train_note(p)
    if p.verb == "eval" and _kept(p):
        return (f"the evaluation did not finish; its progress is kept in {p.partial.file} (earlier "
                f"results are untouched): run the same command to continue where it stopped: "
                f"{p.again}")
    if p.verb == "data" and "fetch" not in p.argv:
        return "nothing was written"
    return _NOTES.get(p.verb, "run the same command again: {again}").format(again=p.again)
