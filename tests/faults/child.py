"""``python -m tests.faults.child ARGS...``: run ``robustq ARGS`` and SIGKILL this process at
the moment ``$ROBUSTQ_FAULT_KILL`` names, as a crash or ``kill -9`` would:

* ``replace:K:before`` / ``replace:K:after``: around the K-th ``os.replace`` (the rename
  that publishes a finished file: config, model, metrics, checkpoint);
* ``fsync:K``: at the K-th ``os.fsync``, after cutting the file being synced to half its
  size (a writer killed in the middle of writing; the first is the output-folder probe,
  then each write syncs its file and, after the rename, its folder);
* ``step:K``: before the K-th training step (mid-epoch); ``validate:K``: before the K-th
  validation (between an epoch's training and its checkpoint);
* ``time:T``: T seconds after start, wherever the run is.

Only this test helper patches anything; robustq itself has no fault hooks."""
from __future__ import annotations

import os
import signal
import sys
import threading


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _nth(k: int):
    count = {"n": 0}

    def hit() -> bool:
        count["n"] += 1
        return count["n"] == k
    return hit


def install(spec: str) -> None:
    kind, _, rest = spec.partition(":")
    if kind == "time":
        threading.Timer(float(rest), _die).start()
        return
    k, _, when = rest.partition(":")
    hit = _nth(int(k))
    if kind == "replace":
        real = os.replace

        def replace(src, dst, *a, **kw):
            now = hit()
            if now and when == "before":
                _die()
            real(src, dst, *a, **kw)
            if now and when == "after":
                _die()
        os.replace = replace
    elif kind == "fsync":
        real_fsync = os.fsync

        def fsync(fd):
            if hit():
                try:  # a file: cut it; a folder (the rename's sync): nothing to cut
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                except OSError:
                    pass
                _die()
            real_fsync(fd)
        os.fsync = fsync
    elif kind in ("step", "validate"):
        import robustq.engine as engine
        if kind == "step":
            real_call = engine.TrainStep.__call__
            engine.TrainStep.__call__ = lambda self, *a, **kw: (_die() if hit() else None) or real_call(self, *a, **kw)
        else:
            real_val = engine.validate
            engine.validate = lambda *a, **kw: (_die() if hit() else None) or real_val(*a, **kw)
    else:
        raise SystemExit(f"unknown fault {spec!r}")


if __name__ == "__main__":
    install(os.environ["ROBUSTQ_FAULT_KILL"])
    from robustq.cli import main
    sys.exit(main(sys.argv[1:]))
