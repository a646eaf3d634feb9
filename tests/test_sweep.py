"""Sweeps: expansion and names, bad input before anything runs, shards, claims under races,
exact resume of a point killed mid-run, and concurrent workers that never share a point."""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from robustq.cli import main
from robustq.errors import ConfigError
from robustq.sweep import load_sweep, load_sweeps, parse_shard, point_name, run_sweep, shard
from robustq.sweep.claims import generations, try_claim
from tests.sweep_helpers import REPO, cli, env, popen, write_sweep


def test_grid_zip_rows_and_seeds_expand_to_named_points(tmp_path):
    f = write_sweep(tmp_path / "s.yaml", rows=[{"quant.method": "br"}, {"quant.method": "bc"}],
                    grid={"model.ensemble": [1, 2]},
                    zip={"loss.alpha": [0, 1], "loss.beta": [1, 8]}, seeds=[0, 1])
    points = load_sweep(f)
    assert len(points) == 2 * 2 * 2 * 2
    names = [p.name for p in points]
    assert len(set(names)) == len(names)
    assert "alpha-1_beta-8_ensemble-2_method-bc_seed-1" in names
    p = next(p for p in points if p.name == "alpha-1_beta-8_ensemble-2_method-bc_seed-1")
    c = p.config
    assert (c.quant.method, c.model.ensemble, c.loss.alpha, c.loss.beta, c.seed) == ("bc", 2, 1.0, 8.0, 1)
    assert c.train.epochs == 2 and c.model.depth == 8   # the shared set applies to every point
    # zip takes lists together: no alpha-0 with beta-8
    assert not any("alpha-0_beta-8" in n for n in names)


def test_names_disambiguate_and_sanitize():
    assert point_name({"loss.name": "trades", "data.name": "mnist", "seed": 0}) == \
        "data-name-mnist_loss-name-trades_seed-0"
    assert point_name({"adv.eps": "8/255", "loss.beta": 1.0}) == "eps-8d255_beta-1"
    assert point_name({}) == "point"


@pytest.mark.parametrize("parts, words", [
    ({"grid": {"model.depthh": [8]}}, "unknown config key 'model.depthh'"),
    ({"grid": {"model.depth": [8, 21]}}, "model.depth must be 6n+2"),
    ({"zip": {"loss.alpha": [0, 1], "loss.beta": [1]}}, "one length"),
    ({"rows": [{"loss.beta": 1}], "grid": {"loss.beta": [4]}}, "more than one of rows, grid, zip"),
    ({"axes": {}}, "unknown key 'axes'"),
    ({"evaluate": {"bogus": {}}}, "is not a suite"),
    ({"evaluate": {"paper": {"eval.n_eval": 0}}}, "eval.n_eval must be >= 1"),
    ({"base": "no-such-config"}, "neither a bundled config"),
    ({"seeds": ["a"]}, "seeds must be a non-empty list of integers"),
])
def test_bad_sweep_fails_before_anything_runs(tmp_path, capsys, parts, words):
    f = write_sweep(tmp_path / "bad.yaml", **parts)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("+", r"\+")):
        load_sweep(f)
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robustq: error:")
    assert not out.exists()   # nothing started, nothing written


def test_bad_shard_and_workers(tmp_path, capsys):
    f = write_sweep(tmp_path / "s.yaml")
    for args in (["--shard", "3/2"], ["--shard", "x"], ["--workers", "0"]):
        assert main(["sweep", str(f), "--out", str(tmp_path / "o"), *args]) == 2
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_partition_the_points_exactly(tmp_path, n):
    f = write_sweep(tmp_path / "s.yaml", grid={"model.ensemble": [1, 2, 3], "loss.beta": [1, 4, 8]},
                    seeds=[0, 1])
    points = load_sweep(f)
    parts = [shard(points, k, n) for k in range(1, n + 1)]
    names = [p.name for part in parts for p in part]
    assert sorted(names) == sorted(p.name for p in points)   # every point, once
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parse_shard(f"{n}/{n}") == (n, n)


def test_points_run_in_the_files_order_and_shards_do_not_depend_on_it(tmp_path):
    a = write_sweep(tmp_path / "a.yaml", grid={"loss.beta": [8, 1]})
    b = write_sweep(tmp_path / "b.yaml", grid={"loss.beta": [4, 1]})
    assert [p.name for p in load_sweeps([a, b])] == ["beta-8", "beta-1", "beta-4"]
    assert [p.name for p in load_sweeps([b, a])] == ["beta-4", "beta-1", "beta-8"]
    assert [p.name for p in shard(load_sweeps([a, b]), 1, 1)] == ["beta-8", "beta-1", "beta-4"]
    for k in (1, 2):
        assert {p.name for p in shard(load_sweeps([a, b]), k, 2)} == \
            {p.name for p in shard(load_sweeps([b, a]), k, 2)}


def test_the_same_point_in_two_files_is_one_point(tmp_path):
    a = write_sweep(tmp_path / "a.yaml", grid={"loss.beta": [1, 4]})
    b = write_sweep(tmp_path / "b.yaml", grid={"loss.beta": [4, 8]})
    assert [p.name for p in load_sweeps([a, b])] == ["beta-1", "beta-4", "beta-8"]
    c = write_sweep(tmp_path / "c.yaml", grid={"loss.beta": [4]}, set={"train.epochs": 3})
    with pytest.raises(ConfigError, match="defined differently"):
        load_sweeps([a, c])


def _race(path, barrier, queue):
    barrier.wait()
    claim = try_claim(path, heartbeat_s=60)
    queue.put(claim is not None)
    time.sleep(0.5)   # hold it while the others try


def test_exactly_one_of_many_racing_processes_wins_a_claim(tmp_path):
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path / "p", barrier, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    wins = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sum(wins) == 1


def test_stale_claims_are_taken_over_and_live_ones_are_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    d = tmp_path / "p"
    d.mkdir()
    import socket
    (d / ".claim-0").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    claim = try_claim(d, heartbeat_s=0.05)
    assert claim is not None and claim.gen == 1 and generations(d) == [1]
    assert try_claim(d) is None                   # held by a live process (this one)
    other = d.parent / "q"
    other.mkdir()
    (other / ".claim-0").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert try_claim(other, stale_after_s=60) is None   # another host, fresh heartbeat
    old = time.time() - 120
    import os
    os.utime(other / ".claim-0", (old, old))
    taken = try_claim(other, stale_after_s=60)
    assert taken is not None and taken.gen == 1
    # the first holder, thought dead, notices the takeover at its next heartbeat
    (d / ".claim-2").write_text("{}")
    deadline = time.time() + 10
    while not claim.lost and time.time() < deadline:
        time.sleep(0.02)
    assert claim.lost
    claim.release()
    taken.release()
    assert generations(other) == []


KILLER = textwrap.dedent("""
    import os, signal, sys
    from robustq.sweep import load_sweeps, run_sweep
    def die(epoch):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)   # a machine that stops mid-point
    run_sweep(load_sweeps([sys.argv[1]]), sys.argv[2], opts={"on_epoch_end": die})
""")


def _rows(d):
    with open(d / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in ("img_per_s", "seconds")} for r in csv.DictReader(f)]


@pytest.mark.usefixtures("same_threads_as_subprocess")
def test_a_point_killed_mid_run_resumes_exactly_and_finished_points_are_skipped(tmp_path):
    f = write_sweep(tmp_path / "s.yaml", set={"train.epochs": 3}, seeds=[0])
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(f), str(killed)], env=env(), cwd=REPO,
                          timeout=240, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    point = killed / "seed-0"
    assert len(_rows(point)) == 1 and not (point / "sweep-done.json").exists()
    assert generations(point) == [0]   # the dead worker's claim is left behind
    log = lambda *_: None
    assert run_sweep(load_sweeps([f]), killed, log=log) == {"done": 1, "failed": 0, "remaining": 0}
    assert run_sweep(load_sweeps([f]), clean, log=log)["done"] == 1
    assert _rows(point) == _rows(clean / "seed-0") and len(_rows(point)) == 3
    a = torch.load(point / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(clean / "seed-0" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(point.glob("eval-paper-*.json")) and generations(point) == []
    events = [json.loads(line) for line in (killed / "sweep-log.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("gen")) for e in events] == [("start", 0), ("start", 1), ("done", None)]
    assert run_sweep(load_sweeps([f]), killed, log=log) == {"done": 0, "failed": 0, "remaining": 0}


def test_concurrent_workers_never_run_the_same_point(tmp_path):
    f = write_sweep(tmp_path / "s.yaml", grid={"loss.beta": [1, 2, 4]}, seeds=[0, 1],
                    set={"train.epochs": 1})
    out = tmp_path / "out"
    procs = [popen("sweep", str(f), "--out", str(out), "--workers", "2"),
             popen("sweep", str(f), "--out", str(out))]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    events = [json.loads(line) for line in (out / "sweep-log.jsonl").read_text().splitlines()]
    starts = [e["point"] for e in events if e["event"] == "start"]
    assert sorted(starts) == sorted(p.name for p in load_sweep(f))   # each point started once
    assert len({e["pid"] for e in events}) >= 2                       # and work was shared
    assert all((out / p / "sweep-done.json").exists() for p in starts)


def test_dry_run_writes_nothing_and_a_changed_sweep_is_refused(tmp_path):
    f = write_sweep(tmp_path / "s.yaml", set={"train.epochs": 1, "train.max_batches": 1})
    out = tmp_path / "out"
    r = cli("sweep", str(f), "--out", str(out), "--dry-run")
    assert r.returncode == 0 and "new      point" in r.stdout and not out.exists()
    assert cli("sweep", str(f), "--out", str(out)).returncode == 0
    r = cli("sweep", str(f), "--out", str(out), "--dry-run")
    assert "done     point" in r.stdout
    r = cli("sweep", str(f), "--out", str(out), "--set", "train.epochs=2")
    assert r.returncode == 2 and "holds a run with another config (train.epochs: 1 there, 2 now)" in r.stderr


def test_a_failing_point_is_recorded_and_the_others_still_run(tmp_path, capsys):
    f = write_sweep(tmp_path / "s.yaml", set={"train.epochs": 1, "train.max_batches": 1},
                    rows=[{"data.val_size": 20000}, {"data.val_size": 32}])   # 10,000 images
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 points failed" in err[0]
    failed = json.loads((out / "val_size-20000" / "sweep-failed.json").read_text())
    assert "would hold out all" in failed["error"]
    done = json.loads((out / "val_size-32" / "sweep-done.json").read_text())
    assert done["cpus"] >= 1 and done["threads"] >= 1 and done["host"]


def test_a_missing_dataset_stops_the_sweep_before_it_starts(tmp_path, capsys):
    f = write_sweep(tmp_path / "s.yaml", set={"data.root": str(tmp_path / "nowhere")})
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and not out.exists()


def test_submitit_shard_jobs_run_every_point_once(tmp_path, capsys):
    pytest.importorskip("submitit")
    f = write_sweep(tmp_path / "s.yaml", grid={"loss.beta": [1, 4, 8]},
                    set={"train.epochs": 1, "train.max_batches": 1})
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out), "--submitit", "local", "--jobs", "2",
                 "--timeout-min", "10", "--wait"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("'failed': 0") == 2
    events = [json.loads(line) for line in (out / "sweep-log.jsonl").read_text().splitlines()]
    starts = sorted(e["point"] for e in events if e["event"] == "start")
    assert starts == ["beta-1", "beta-4", "beta-8"]
    assert all((out / p / "sweep-done.json").exists() for p in starts)
    assert main(["sweep", str(f), "--out", str(out), "--submitit", "local", "--shard", "1/2"]) == 2


def test_sigterm_releases_the_claim_and_the_point_resumes(tmp_path):
    import signal

    f = write_sweep(tmp_path / "s.yaml", set={"train.epochs": 8})
    out = tmp_path / "out"
    proc = popen("sweep", str(f), "--out", str(out))
    deadline = time.time() + 120
    while not (out / "point" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)   # what scancel or a job's time limit sends
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "run the same robustq sweep command" in text
    assert generations(out / "point") == [] and not (out / "point" / "sweep-done.json").exists()
    assert run_sweep(load_sweeps([f]), out, log=lambda *_: None)["done"] == 1
    assert len(_rows(out / "point")) == 8


def test_sigterm_to_the_parent_alone_stops_its_workers(tmp_path):
    """``kill PID`` of a --workers 2 sweep (not its process group): the workers checkpoint and
    exit too, instead of training on after the sweep says it stopped."""
    import signal

    f = write_sweep(tmp_path / "s.yaml", set={"train.epochs": 8}, seeds=[0, 1])
    out = tmp_path / "out"
    proc = popen("sweep", str(f), "--out", str(out), "--workers", "2")
    deadline = time.time() + 180
    while len(list(out.glob("*/checkpoint.pt"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(list(out.glob("*/checkpoint.pt"))) == 2
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=180)[0]
    assert proc.returncode == 130 and "run the same robustq sweep command" in text
    points = sorted(d for d in out.iterdir() if d.is_dir())
    assert len(points) == 2
    for d in points:   # each checkpointed, its claim released, not done
        assert generations(d) == [] and not (d / "sweep-done.json").exists()
    pids = {int(m) for m in re.findall(r"\[pid (\d+)\]", text)}
    assert len(pids) == 2
    for pid in pids:   # both workers are gone, not training on
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_stop_after_lets_the_running_point_finish_and_starts_no_other(tmp_path, capsys):
    f = write_sweep(tmp_path / "s.yaml", set={"train.epochs": 2}, seeds=[0, 1])
    out = tmp_path / "out"
    start_before = time.time() + 1.0

    def slow_epoch(epoch):   # the first point outlives the deadline
        while time.time() < start_before + 0.1:
            time.sleep(0.05)

    counts = run_sweep(load_sweeps([f]), out, log=lambda *_: None,
                       opts={"start_before": start_before, "on_epoch_end": slow_epoch})
    assert counts == {"done": 1, "failed": 0, "remaining": 1}
    assert (out / "seed-0" / "sweep-done.json").exists() and not (out / "seed-1").exists()
    assert generations(out / "seed-0") == []
    # the same command again (no deadline) goes on with the point not started
    assert main(["sweep", str(f), "--out", str(out), "--stop-after", "0"]) == 0
    assert "0 points run here" in capsys.readouterr().out and not (out / "seed-1").exists()
    assert run_sweep(load_sweeps([f]), out, log=lambda *_: None)["done"] == 1
    assert main(["sweep", str(f), "--out", str(out), "--stop-after", "-1"]) == 2
    assert "--stop-after must be >= 0 minutes, got -1" in capsys.readouterr().err
