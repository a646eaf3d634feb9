"""Download a dataset's official files, check their published MD5s, unpack them atomically.

``fetch(name)`` works through the dataset's ``Resource`` list into one folder ``D`` (``--root``,
else ``$ROBUSTQ_DATA/<folder>``, else ``~/.local/share/robustq/<folder>``):

1. ``D/<file>`` already there with the published MD5: kept. There with another MD5: left
   alone and reported (robustq never overwrites a file it did not write).
2. Otherwise the file is downloaded to ``D/.<file>.part``, from each mirror in turn (the
   dataset's home page first; ``mirror=`` replaces the list). A ``.part`` left by an
   interrupted fetch is resumed with an HTTP ``Range`` request; a server that answers with
   the whole file (200) restarts it from zero, and a 416 (the .part is not a prefix) too.
3. The MD5 of the ``.part`` is checked. A mismatch deletes it (a resumed file is first
   retried once from zero) and the next mirror is tried.
4. ``os.replace(.part, D/<file>)``: a file under its final name is always complete and
   verified. Archives are then unpacked into ``D/.<folder>.unpacking`` (member names checked:
   regular files and folders under ``<folder>/`` only, no absolute paths, no ``..``, no
   links) and renamed to ``D/<folder>`` in one step. A stale ``.unpacking`` is removed first.

A lock file (``D/.fetch.lock``, ``flock``) keeps two fetches into the same folder from
interleaving. Every failure a user can cause or fix is a ``DataError`` of one sentence.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Optional

from .. import __version__
from ..errors import DataError
from .datasets import ENV_VAR, DatasetSpec, Resource, get_spec, user_data_dir

CHUNK = 1 << 20
Log = Callable[[str], None]


class _Failed(Exception):
    """A mirror did not deliver the file (HTTP error, network error, stall, short body)."""


def fetch_dir(spec: DatasetSpec, root: Optional[str | Path] = None) -> Path:
    """Where ``fetch`` puts ``spec``: ``root``; else ``$ROBUSTQ_DATA/<folder>``; else the user
    data directory. All three are places ``find_root`` searches."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser() / spec.dirname
    return user_data_dir() / spec.dirname


def md5sum(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_body(resp, out, timeout: float) -> int:
    """Copy the response body into ``out``; network trouble is ``_Failed``, while a failing
    write (disk full, ...) stays an OSError for ``fetch`` to report."""
    got = 0
    while True:
        try:
            chunk = resp.read(CHUNK)
        except TimeoutError:
            raise _Failed(f"the server sent nothing for {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise _Failed(f"the connection broke ({type(e).__name__})") from None
        if not chunk:
            return got
        out.write(chunk)
        got += len(chunk)


def _transfer(url: str, part: Path, timeout: float, log: Log) -> None:
    """Append the rest of ``url`` to ``part``, resuming from its current size."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"robustq/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:                       # .part is not a prefix: start again
            part.unlink()
            return _transfer(url, part, timeout, log)
        raise _Failed(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:       # refused, DNS, timeout on connect
        raise _Failed(str(getattr(e, "reason", e))) from None
    with resp:
        resumed = have and resp.status == 206
        if resumed and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise _Failed("the server answered the resume request with another byte range")
        log(f"  {'resuming at byte ' + str(have) + ' of' if resumed else 'downloading'} {url}")
        expected = resp.length                           # bytes still to come, if announced
        with open(part, "ab" if resumed else "wb") as out:
            got = _copy_body(resp, out, timeout)
            out.flush()
            os.fsync(out.fileno())
    if expected is not None and got < expected:
        raise _Failed(f"the connection closed after {got} of {expected} bytes")


def _download(res: Resource, urls: list[str], dest: Path, timeout: float, log: Log) -> None:
    """Get ``res`` into ``dest/res.file``, verified, or raise DataError."""
    part, final = dest / f".{res.file}.part", dest / res.file
    problems = []
    for url in urls:
        for attempt in range(2):                         # a resumed file may be retried once
            was_partial = part.exists() and part.stat().st_size > 0
            try:
                _transfer(url, part, timeout, log)
            except _Failed as e:
                problems.append(f"{url}: {e}")
                break
            digest = md5sum(part)
            if digest == res.md5:
                os.replace(part, final)                  # appears complete, or not at all
                log(f"  {res.file}: MD5 {digest} verified")
                return
            part.unlink()
            problems.append(f"{url}: MD5 {digest} is not the published {res.md5}")
            if not was_partial:
                break
    kept = " (the partial download is kept and resumed next time)" if part.exists() else ""
    raise DataError(f"could not get {res.file}: {'; '.join(problems)}{kept}; check the "
                    f"network or pass --mirror with a URL that serves the official file")


def _safe_members(tar: tarfile.TarFile, folder: str, archive: Path) -> Iterator[tarfile.TarInfo]:
    for m in tar:
        rel = PurePosixPath(m.name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] != folder \
                or not (m.isfile() or m.isdir()):
            raise DataError(f"{archive} holds {m.name!r}, which is not a file under {folder}/; "
                            f"it is not the official archive: delete it and fetch again")
        yield m


def unpack(archive: Path, folder: str, dest: Path) -> Path:
    """Unpack ``archive`` (a .tar.gz whose members all lie under ``folder/``) to
    ``dest/folder`` atomically; an existing ``dest/folder`` is kept as it is."""
    final, tmp = dest / folder, dest / f".{folder}.unpacking"
    if final.is_dir():
        return final
    shutil.rmtree(tmp, ignore_errors=True)               # left by an interrupted unpack
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in _safe_members(tar, folder, archive):
                target = tmp.joinpath(*PurePosixPath(m.name).parts[1:])
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        os.replace(tmp, final)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"could not unpack {archive} ({e}); delete it and fetch again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:                                  # Windows: no lock, still atomic
        yield
        return
    with open(dest / ".fetch.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mirrors(spec: DatasetSpec, mirror: Optional[str]) -> list[str]:
    bases = [mirror] if mirror else list(spec.mirrors)
    return [b if b.endswith("/") else b + "/" for b in bases]


def fetch(spec: DatasetSpec | str, root: Optional[str | Path] = None,
          mirror: Optional[str] = None, timeout: float = 30.0,
          log: Optional[Log] = None) -> Path:
    """Download, verify and unpack ``spec``'s official files; return the folder they are in.

    ``mirror`` is a base URL that replaces the dataset's own (the file name is appended);
    ``timeout`` bounds each connect and each wait for data, in seconds."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    log = log or (lambda msg: None)
    if not spec.resources:
        raise DataError(f"{spec.name} has nothing to download (it is bundled with robustq or "
                        f"has no official download); use it as it is")
    dest = fetch_dir(spec, root)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest} ({e.strerror}); pass --root with a folder you "
                        f"can write to") from None
    log(f"fetching {spec.name} into {dest}")
    try:
        with _locked(dest):
            for res in spec.resources:
                _fetch_one(res, spec, dest, mirror, timeout, log)
    except OSError as e:                                 # the disk, not the network
        raise DataError(f"cannot write the {spec.name} files into {dest} "
                        f"({e.strerror or e}); free some space or pass --root with a folder "
                        f"you can write to") from None
    return dest


def _fetch_one(res: Resource, spec: DatasetSpec, dest: Path, mirror: Optional[str],
               timeout: float, log: Log) -> None:
    final = dest / res.file
    if final.exists():
        if md5sum(final) != res.md5:
            raise DataError(f"{final} exists but is not the official file (MD5 differs from "
                            f"{res.md5}); move it away and fetch again, or use the folder as "
                            f"it is with data.root")
        log(f"  {res.file}: already there, MD5 verified")
    else:
        _download(res, [b + res.file for b in _mirrors(spec, mirror)], dest, timeout, log)
    if res.extract:
        unpack(final, res.extract, dest)
