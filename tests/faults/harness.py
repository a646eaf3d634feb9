"""The fault-injection harness: run one hostile case through the real command line and say
which outcome class it fell into.

A case prepares its inputs in a fresh folder, names the ``robustq`` arguments to run, and
says what it expects: ``error`` (a clean refusal), ``success`` (a correct result, checked by
the case) or ``either`` (a damaged file whose damage may not matter: then the result must
be the intact one). ``judge`` runs it in-process with a time bound and classifies:

* ``error``: exit code 2 and one ``robustq: error:`` sentence, no traceback, and nothing
  that existed before was changed (no overwrite, no half-written file, no stale ``.tmp``);
* ``success``: exit code 0 and the case's own check of the result passes;
* ``traceback``: an exception escaped, or another exit code;
* ``hang``: the time bound (``TIMEOUT`` s) ran out;
* ``silent``: exit code 0 where an error was due, or a result that differs from the intact
  one (silently accepted nonsense);
* ``damage``: a refusal that changed or left behind files it must not have (an overwrite).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

OUTCOMES = ("error", "success", "traceback", "hang", "silent", "damage")
TIMEOUT = 90
SENTENCE = re.compile(r"^robustq( [\w-]+)*: error: [^\n]{1,700}$")


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` swallows it."""


@dataclass
class Case:
    area: str                                     # the row of the table
    name: str
    prepare: Callable[[Path], list[str]]          # builds inputs in the folder, returns argv
    expect: str = "error"                         # error | success | either
    check: Optional[Callable[[Path], Optional[str]]] = None  # after exit 0: None if correct
    allow_new: tuple[str, ...] = ()               # on error: new files allowed (glob patterns)
    tags: tuple[str, ...] = field(default_factory=tuple)
    cleanup: Optional[Callable[[Path], None]] = None  # e.g. unmount what prepare mounted

    @property
    def id(self) -> str:
        return f"{self.area}:{self.name}"


@dataclass
class Result:
    rc: Optional[int]
    out: str
    err: str
    exc: Optional[BaseException] = None
    hang: bool = False


def cli(argv: list[str], timeout: int = TIMEOUT) -> Result:
    """``robustq.cli.main(argv)`` in this process, output captured, bounded by ``timeout``."""
    from robustq.cli import main

    out, err = io.StringIO(), io.StringIO()

    def alarm(*_):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:   # argparse refusals
                rc = e.code if isinstance(e.code, int) else 2
        return Result(rc, out.getvalue(), err.getvalue())
    except Hang:
        return Result(None, out.getvalue(), err.getvalue(), hang=True)
    except BaseException as e:  # noqa: BLE001 (the point is to see what escapes)
        return Result(None, out.getvalue(), err.getvalue(), exc=e)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of the regular files under ``root`` (links not followed)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            try:
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode):
                    out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                continue
    return out


def one_sentence(err: str) -> bool:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return bool(lines) and "Traceback" not in err and SENTENCE.match(lines[-1]) is not None


def _clean_refusal(case: Case, before: dict, after: dict) -> bool:
    changed = [p for p in before if after.get(p, before[p]) != before[p] or p not in after]
    new = [p for p in after if p not in before]
    stale = [p for p in new if re.search(r"(^|/)\.[^/]*\.tmp\d*$", p)]
    allowed = [p for p in new if any(Path(p).match(g) for g in case.allow_new)]
    return not changed and not stale and len(allowed) == len(new)


def judge(case: Case, work: Path) -> tuple[str, Result]:
    """Run ``case`` in the empty folder ``work``; returns its outcome class and the result."""
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _judge(case, work)
    finally:
        if case.cleanup is not None:
            case.cleanup(work)


def _judge(case: Case, work: Path) -> tuple[str, Result]:
    argv = case.prepare(work)
    before = snapshot(work)
    cwd = os.getcwd()
    os.chdir(work)  # default outputs (runs/) land in the case's folder
    try:
        res = cli(argv)
    finally:
        os.chdir(cwd)
    if res.hang:
        return "hang", res
    if res.exc is not None or res.rc not in (0, 2):
        return "traceback", res
    if res.rc == 2:
        if not one_sentence(res.err):
            return "traceback", res
        return ("error" if _clean_refusal(case, before, snapshot(work)) else "damage"), res
    if case.expect == "error":
        return "silent", res
    problem = case.check(work) if case.check else None
    return ("success" if problem is None else "silent"), res


def expected(case: Case, outcome: str) -> bool:
    return outcome == case.expect or (case.expect == "either" and outcome in ("error", "success"))


def tally(results: list[tuple[Case, str]]) -> dict[str, dict[str, int]]:
    """``{area: {"tried": n, outcome: count, ...}}``, areas in first-seen order."""
    table: dict[str, dict[str, int]] = {}
    for case, outcome in results:
        row = table.setdefault(case.area, {"tried": 0, **{o: 0 for o in OUTCOMES}})
        row["tried"] += 1
        row[outcome] += 1
    return table


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
