"""Claims: which worker runs which point, decided by atomic file creation in the output folder.

A worker that wants point P creates ``P/.claim-<g>`` with ``O_CREAT | O_EXCL``: of any number
of processes (on one machine or on several sharing the folder) exactly one succeeds. The claim
holds the owner's host, pid and a random token; its modification time is the heartbeat, renewed
every ``heartbeat_s`` seconds by a thread while the point runs.

A claim is stale when its owner is gone: on the same host, its pid no longer exists; on any
host, its heartbeat is older than ``stale_after_s``. A stale claim of generation g is taken over
by creating generation g + 1, again with ``O_EXCL``, so two workers that both find it stale
cannot both win. The previous owner, if it was only slow, sees the newer generation on its next
heartbeat and gives the point up at the end of its current epoch (``Claim.lost``).
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

CLAIM_RE = re.compile(r"^\.claim-(\d+)$")
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


def generations(point_dir: Path) -> list[int]:
    """The claim generations present in ``point_dir``, ascending."""
    try:
        names = os.listdir(point_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(CLAIM_RE.match, names) if m)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_claim(path: Path) -> tuple[Optional[dict], Optional[float]]:
    """(contents or None if unreadable, mtime or None if the file is gone)."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    try:
        info = json.loads(text)
    except ValueError:
        info = None   # being written right now, or torn by a crash
    return (info if isinstance(info, dict) else None), mtime


def is_stale(info: Optional[dict], mtime: float, stale_after_s: float = STALE_AFTER_S,
             now: Optional[float] = None) -> bool:
    """A dead owner on this host, or no heartbeat for ``stale_after_s`` seconds."""
    now = time.time() if now is None else now
    if now - mtime > stale_after_s:
        return True
    if info and info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        return not _pid_alive(info["pid"])
    return False


class Claim:
    """A held claim; ``release()`` removes it. ``lost`` turns true if another worker took the
    point over (this one was thought dead)."""

    def __init__(self, path: Path, gen: int, token: str, heartbeat_s: float) -> None:
        self.path, self.gen, self.token = path, gen, token
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            if any(g > self.gen for g in generations(self.path.parent)):
                self.lost = True
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.lost = True
                return

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        info, _ = read_claim(self.path)
        if info is not None and info.get("token") == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def try_claim(point_dir: Path, *, stale_after_s: float = STALE_AFTER_S,
              heartbeat_s: float = HEARTBEAT_S) -> Optional[Claim]:
    """Claim ``point_dir`` for this process, or None if a live worker holds it (or another
    worker won the race for it)."""
    point_dir.mkdir(parents=True, exist_ok=True)
    gens = generations(point_dir)
    gen = 0
    if gens:
        top = point_dir / f".claim-{gens[-1]}"
        info, mtime = read_claim(top)
        if mtime is None or not is_stale(info, mtime, stale_after_s):
            return None   # held (or just released: the next pass will see it)
        gen = gens[-1] + 1
    path = point_dir / f".claim-{gen}"
    token = uuid.uuid4().hex
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                   "started": time.time(), "gen": gen}, f)
        f.flush()
        os.fsync(f.fileno())
    for old in gens:   # superseded generations; the newest one decides
        try:
            (point_dir / f".claim-{old}").unlink()
        except FileNotFoundError:
            pass
    return Claim(path, gen, token, heartbeat_s)


def holder(point_dir: Path, stale_after_s: float = STALE_AFTER_S) -> Optional[dict]:
    """The live claim on ``point_dir`` (its contents), or None."""
    gens = generations(point_dir)
    if not gens:
        return None
    info, mtime = read_claim(point_dir / f".claim-{gens[-1]}")
    if mtime is None or is_stale(info, mtime, stale_after_s):
        return None
    return info or {}
