"""Output locations that cannot be written (the "disk full / read-only / permissions" row):
read-only and full file systems (small tmpfs mounts, where this machine allows mounting;
skipped otherwise: root ignores chmod, so permissions cannot be tested by chmod), paths
through a file, names too long, loops of symbolic links, folders given as files, and
outputs that would overwrite a run's own files. Each must be refused before the work, in
one sentence, changing nothing; the valid variants (new nested folders, a run stopped
before its first checkpoint) must succeed."""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .assets import QUIET, assets
from .gen_checkpoints import exact_resume
from .harness import Case, copy_tree

AREA = "disk full / read-only / bad output paths"
RUN_FILES = ("model.pt", "checkpoint.pt", "config.yaml", "metrics.csv")


@functools.lru_cache(maxsize=1)
def can_mount() -> bool:
    """Whether tmpfs file systems can be mounted here (root in a sandbox that allows it)."""
    d = Path(tempfile.mkdtemp(prefix="robustq-mount-probe-"))
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(d)], capture_output=True)
        return ok
    except OSError:
        return False
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _mount(d: Path, size: str) -> None:
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True,
                   capture_output=True)


def _unmount(work: Path) -> None:
    if (work / "m").is_mount():
        subprocess.run(["umount", "-l", str(work / "m")], capture_output=True)


def _fill(d: Path, leave: int) -> None:
    """Fill the tmpfs at ``d`` until only about ``leave`` bytes are free."""
    fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            st = os.statvfs(d)
            free = st.f_bavail * st.f_frsize - leave
            if free <= 0:
                break
            os.write(fd, bytes(min(free, 1 << 20)))
    except OSError:
        pass
    finally:
        os.close(fd)


VERBS = {  # argv for a verb whose output (or input run) lies under {m}
    "train": lambda w, m: ["train", str(assets().config), "--out", f"{m}/run", "--no-eval", *QUIET],
    "eval --results": lambda w, m: ["eval", str(w / "run"), "--results", f"{m}/r.json", *QUIET],
    "export --out": lambda w, m: ["export", str(w / "run"), "--out", f"{m}/e.safetensors"],
    "prune --out": lambda w, m: ["prune", str(w / "run"), "--out", f"{m}/p.safetensors"],
    "sparsity beside the model": lambda w, m: ["sparsity", f"{m}/run", "--no-figures"],
    "train --resume": lambda w, m: ["train", "--resume", f"{m}/run1", "--no-eval", *QUIET],
    "eval into the run": lambda w, m: ["eval", f"{m}/run", *QUIET],
}


def _mounted(verb: str, condition: str) -> Case:
    def prepare(work: Path) -> list[str]:
        copy_tree(assets().run, work / "run")
        m = work / "m"
        _mount(m, "4m")
        if verb in ("sparsity beside the model", "eval into the run"):
            copy_tree(assets().run, m / "run")
        if verb == "train --resume":
            copy_tree(assets().run1, m / "run1")
        if condition == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(m)], check=True, capture_output=True)
        else:
            _fill(m, 0 if condition == "full" else 8192)
        return VERBS[verb](work, m)
    allow = ("m/run/config.yaml",) if condition == "nearly full" and verb == "train" else ()
    return Case(AREA, f"{condition}: {verb}", prepare, "error", allow_new=allow, cleanup=_unmount)


def _plain(name: str, make, expect: str = "error", check=None) -> Case:
    def prepare(work: Path) -> list[str]:
        copy_tree(assets().run, work / "run")
        (work / "file").write_text("x")
        (work / "loop").symlink_to(work / "loop")
        return [a.replace("{w}", str(work)) for a in make(work)]
    return Case(AREA, name, prepare, expect, check=check)


LONG = "n" * 300
TARGETS = {
    "train": lambda out: ["train", "CFG", "--out", out, "--no-eval", *QUIET],
    "eval --results": lambda out: ["eval", "{w}/run", "--results", out, *QUIET],
    "export --out": lambda out: ["export", "{w}/run", "--out", out],
    "prune --out": lambda out: ["prune", "{w}/run", "--out", out],
}


def _cfg(argv: list[str]) -> list[str]:
    return [str(assets().config) if a == "CFG" else a for a in argv]


def plain_cases() -> list[Case]:
    out = []
    for verb, argv in TARGETS.items():
        out.append(_plain(f"{verb} through a file", lambda w, a=argv: _cfg(a("{w}/file/x.out"))))
        out.append(_plain(f"{verb} name too long", lambda w, a=argv: _cfg(a(f"{{w}}/{LONG}.out"))))
        out.append(_plain(f"{verb} in a link loop", lambda w, a=argv: _cfg(a("{w}/loop/x.out"))))
        out.append(_plain(f"{verb} under /proc", lambda w, a=argv: _cfg(a("/proc/robustq/x.out"))))
    for verb in ("eval --results", "export --out", "prune --out"):
        out.append(_plain(f"{verb} a folder", lambda w, a=TARGETS[verb]: _cfg(a("{w}/run"))))
        for f in RUN_FILES:
            out.append(_plain(f"{verb} over the run's {f}", lambda w, a=TARGETS[verb], f=f: _cfg(a(f"{{w}}/run/{f}"))))
    out.append(_plain("export --out the input", lambda w: ["export", "{w}/run/model.pt", "--out", "{w}/run/model.pt"]))
    for f in (*RUN_FILES, "results.json", "old.safetensors"):
        def make(w, f=f):
            (w / "holder").mkdir()
            shutil.copy(assets().run / "config.yaml", w / "holder" / f)
            return _cfg(TARGETS["train"]("{w}/holder"))
        out.append(_plain(f"train --out a folder holding {f}", make))
    out.append(_plain("train --out an existing file", lambda w: _cfg(TARGETS["train"]("{w}/file"))))
    out.append(_plain("eval --results in new folders",
                      lambda w: ["eval", "{w}/run", "--results", "{w}/a/b/r.json", *QUIET], "success",
                      check=lambda w: None if "natural_acc" in json.loads((w / "a/b/r.json").read_text()) else "no results"))
    out.append(_plain("export --out in new folders", lambda w: ["export", "{w}/run", "--out", "{w}/a/b/e.safetensors"],
                      "success", check=lambda w: None if (w / "a/b/e.safetensors").is_file() else "no export"))
    out.append(Case(AREA, "resume a run stopped before its first checkpoint", _before_first, "success",
                    check=lambda w: exact_resume(w / "run1", assets().run)))
    out.append(Case(AREA, "train --out a folder with only stale .tmp files", _only_tmp, "success",
                    check=lambda w: exact_resume(w / "run1", assets().run)))
    return out


def _before_first(work: Path) -> list[str]:
    (work / "run1").mkdir()
    shutil.copy(assets().run / "config.yaml", work / "run1" / "config.yaml")
    (work / "run1" / ".checkpoint.pt.tmp999").write_bytes(b"half")
    return ["train", "--resume", str(work / "run1"), "--no-eval", *QUIET]


def _only_tmp(work: Path) -> list[str]:
    (work / "run1").mkdir()
    (work / "run1" / ".config.yaml.tmp999").write_bytes(b"half")
    return ["train", str(assets().config), "--out", str(work / "run1"), "--no-eval", *QUIET]


def cases() -> list[Case]:
    out = plain_cases()
    if can_mount():
        out += [_mounted(v, c) for c in ("read-only", "full") for v in VERBS]
        out += [_mounted(v, "nearly full") for v in ("train", "export --out", "prune --out")]
    return out
