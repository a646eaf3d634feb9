"""``robustq data fetch`` against a local HTTP server on 127.0.0.1 serving files this test
writes: good file, truncated file, wrong checksum, 404, slow server, resume, mirrors,
atomic unpacking. Nothing half-written may be left under a name a later run would trust."""
from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from robustq.cli import main
from robustq.data import DatasetSpec, Resource
from robustq.data.fetch import fetch, unpack
from robustq.errors import DataError

BLOB = bytes(range(256)) * 4096                                   # 1 MiB


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            t.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


ARCHIVE = _tarball({"toy-py/a.bin": b"a" * 100, "toy-py/sub/b.bin": b"b" * 50})
FILES = {"blob.bin": BLOB, "toy.tar.gz": ARCHIVE}
MD5 = {k: hashlib.md5(v).hexdigest() for k, v in FILES.items()}


class Handler(BaseHTTPRequestHandler):
    """Paths are /<mode>/<file>; modes: good, cut (closes halfway), wrong (other bytes),
    slow (sends half, then stalls), and anything else is a 404. Supports Range on good."""
    requests: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        Handler.requests.append((mode, name, self.headers.get("Range")))
        body = FILES.get(name)
        if body is None or mode not in ("good", "cut", "wrong", "slow"):
            self.send_error(404, "Not Found")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and mode == "good":
            start = int(rng.split("=")[1].rstrip("-"))
            if start >= len(body):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if mode == "wrong":
            body = body[::-1]
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if mode in ("cut", "slow"):
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            if mode == "slow":
                time.sleep(1.5)
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def toy(server: str, *modes: str, md5=None) -> DatasetSpec:
    return DatasetSpec("toy", 1, 4, ("a", "b"), (1, 1), read=None, files=("blob.bin",),
                       mirrors=tuple(f"{server}/{m}/" for m in modes),
                       resources=(Resource("blob.bin", md5 or MD5["blob.bin"]),
                                  Resource("toy.tar.gz", MD5["toy.tar.gz"], extract="toy-py")))


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != ".fetch.lock")


def test_good_fetch_verifies_and_unpacks(server, tmp_path):
    dest = fetch(toy(server, "good"), tmp_path, timeout=5)
    assert dest == tmp_path
    assert (tmp_path / "blob.bin").read_bytes() == BLOB
    assert (tmp_path / "toy-py" / "sub" / "b.bin").read_bytes() == b"b" * 50
    assert leftovers(tmp_path) == ["blob.bin", "toy-py", "toy.tar.gz"]   # no .part, no temp
    Handler.requests.clear()
    fetch(toy(server, "good"), tmp_path, timeout=5)                       # idempotent
    assert Handler.requests == []


def test_cut_connection_keeps_part_then_resumes(server, tmp_path):
    with pytest.raises(DataError, match="closed after|connection broke") as e:
        fetch(toy(server, "cut"), tmp_path, timeout=5)
    assert "resumed next time" in str(e.value)
    assert not (tmp_path / "blob.bin").exists()
    assert (tmp_path / ".blob.bin.part").stat().st_size == len(BLOB) // 2
    Handler.requests.clear()
    fetch(toy(server, "good"), tmp_path, timeout=5)
    assert ("good", "blob.bin", f"bytes={len(BLOB) // 2}-") in Handler.requests
    assert (tmp_path / "blob.bin").read_bytes() == BLOB


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    with pytest.raises(DataError, match="is not the published"):
        fetch(toy(server, "wrong"), tmp_path, timeout=5)
    assert leftovers(tmp_path) == []


def test_bad_resume_restarts_from_zero(server, tmp_path):
    (tmp_path / ".blob.bin.part").write_bytes(b"garbage" * 10)    # not a prefix of the file
    fetch(toy(server, "good"), tmp_path, timeout=5)
    assert (tmp_path / "blob.bin").read_bytes() == BLOB


def test_404_and_mirror_fallback(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(toy(server, "missing"), tmp_path / "a", timeout=5)
    assert leftovers(tmp_path / "a") == []
    fetch(toy(server, "missing", "good"), tmp_path / "b", timeout=5)
    assert (tmp_path / "b" / "blob.bin").read_bytes() == BLOB
    fetch(toy(server, "missing"), tmp_path / "c", mirror=f"{server}/good", timeout=5)
    assert (tmp_path / "c" / "blob.bin").read_bytes() == BLOB


def test_slow_server_times_out(server, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="sent nothing for 0.3 s"):
        fetch(toy(server, "slow"), tmp_path, timeout=0.3)
    assert time.perf_counter() - t0 < 1.4                          # before the server wakes up
    assert not (tmp_path / "blob.bin").exists()


def test_unreachable_server(tmp_path):
    spec = toy("http://127.0.0.1:9", "good")                       # discard port: refused
    with pytest.raises(DataError, match="could not get blob.bin"):
        fetch(spec, tmp_path, timeout=2)


def test_existing_file_with_other_md5_is_not_overwritten(server, tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"mine")
    with pytest.raises(DataError, match="not the official file"):
        fetch(toy(server, "good"), tmp_path, timeout=5)
    assert (tmp_path / "blob.bin").read_bytes() == b"mine"


def test_unpack_is_atomic_and_refuses_escapes(tmp_path):
    (tmp_path / "ok.tar.gz").write_bytes(ARCHIVE)
    stale = tmp_path / ".toy-py.unpacking"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")                         # an interrupted unpack
    unpack(tmp_path / "ok.tar.gz", "toy-py", tmp_path)
    assert not stale.exists() and (tmp_path / "toy-py" / "a.bin").exists()
    (tmp_path / "evil.tar.gz").write_bytes(_tarball({"toy-py/a": b"", "toy-py/../../x": b"!"}))
    with pytest.raises(DataError, match="not a file under toy-py"):
        unpack(tmp_path / "evil.tar.gz", "toy-py", tmp_path / "e")
    assert not (tmp_path / "x").exists() and leftovers(tmp_path / "e") == []
    (tmp_path / "cut.tar.gz").write_bytes(ARCHIVE[:len(ARCHIVE) // 2])
    with pytest.raises(DataError, match="could not unpack"):
        unpack(tmp_path / "cut.tar.gz", "toy-py", tmp_path / "c")
    assert leftovers(tmp_path / "c") == []                         # no half folder


def test_cli_data_verbs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTQ_DATA", str(tmp_path))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist-10k" in out and "robustq data fetch svhn" in out
    assert main(["data", "fetch", "imagenet"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["data", "fetch", "fashion-mnist-10k"]) == 2
    assert main(["data", "fetch", "mnist", "--mirror", "http://127.0.0.1:9/",
                 "--timeout", "2"]) == 2
    assert "could not get" in capsys.readouterr().err
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_disk_error_is_a_data_error_and_leaves_no_final_file(server, tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("robustq.data.fetch.os.fsync", disk_full)
    with pytest.raises(DataError, match="No space left on device.*--root"):
        fetch(toy(server, "good"), tmp_path, timeout=5)
    assert not (tmp_path / "blob.bin").exists()
