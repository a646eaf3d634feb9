"""kill -9 at chosen moments of a tiny training run (the "kill -9 -> resume" row): a child
process runs ``robustq train`` and is SIGKILLed (``child.py``) around every rename that
publishes a file, in the middle of writing a file, mid-epoch, before a validation, and at
random times. The run is then continued as a user would (``train --resume DIR``, or the
original command if the kill came before the run's config was written) and must end
bit-identical to the uninterrupted run: weights, optimizer, RNG, selected model, metrics
(timings aside), no stale temporary files. A refusal here is a dead end."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from .assets import QUIET, assets
from .gen_checkpoints import exact_resume
from .harness import Case

AREA = "kill -9 -> resume"
ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 180


def moments() -> list[str]:
    rng = random.Random(9)
    out = [f"replace:{k}:{w}" for k in range(1, 8) for w in ("before", "after")]
    out += [f"fsync:{k}" for k in range(1, 16)]
    out += [f"step:{k}" for k in range(1, 5)] + [f"validate:{k}" for k in (1, 2)]
    out += [f"time:{rng.uniform(1.0, 3.5):.2f}" for _ in range(4)]
    return out


def kill_run(work: Path, spec: str) -> int:
    """Run the tiny training in a child killed at ``spec``; returns its exit status."""
    argv = ["train", str(assets().config), "--out", str(work / "run1"), "--no-eval", *QUIET]
    env = {**os.environ, "ROBUSTQ_FAULT_KILL": spec, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "tests.faults.child", *argv], env=env, cwd=work,
                       capture_output=True, timeout=CHILD_TIMEOUT)
    (work / "child.rc").write_text(str(p.returncode))
    return p.returncode


def _case(spec: str) -> Case:
    def prepare(work: Path) -> list[str]:
        kill_run(work, spec)
        run = work / "run1"
        if (run / "config.yaml").is_file():
            return ["train", "--resume", str(run), "--no-eval", *QUIET]
        # killed before the run's config was written: the folder holds no robustq file, so
        # the original command works again
        return ["train", str(assets().config), "--out", str(run), "--no-eval", *QUIET]

    def check(work: Path):
        if not killed(work):
            return "the child was not killed (the moment was never reached)"
        return exact_resume(work / "run1", assets().run)
    return Case(AREA, f"kill at {spec}", prepare, "success", check=check)


def killed(work: Path) -> bool:
    return (work / "child.rc").read_text().strip() == "-9"


def cases() -> list[Case]:
    return [_case(s) for s in moments()]
