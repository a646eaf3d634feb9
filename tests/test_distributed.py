"""torchrun on the CPU (gloo): training, resume, evaluation, two "nodes", bad input.

Each torchrun start costs seconds, so the launches are few and shared (module fixtures) and
every run is tiny. ``tests/ddp_entry.py`` is the robustq command with probes that record each
rank's file writes and its weights after every optimizer step."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustq.checkpoint import CHECKPOINT_FORMAT, load
from robustq.cli import main
from robustq.data import Batches, ImageData
from robustq.distributed import Dist, shard_range, sharded_masks
from robustq.engine import per_rank_batches

ROOT = Path(__file__).resolve().parents[1]
ENTRY = str(ROOT / "tests" / "ddp_entry.py")
CONFIG = str(ROOT / "configs" / "quickstart.yaml")
# 96 images, 16 a batch per rank: 3 steps per epoch on each of 2 ranks
TINY = ["data.train_size=96", "data.val_size=32", "model.depth=8", "train.epochs=2",
        "train.batch_size=16", "adv.steps=2", "train.val_attack_steps=1"]
EVAL = ["eval.n_eval=37", "eval.noise=false", "eval.attack_args={ifgsm: {steps: 2}, cw_paper: {steps: 2}}"]


def sets(items):
    return [a for s in items for a in ("--set", s)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, probe=None, nproc=2, extra_env=None, timeout=240, launcher=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    if probe is not None:
        probe.mkdir(parents=True, exist_ok=True)
        env["RQ_PROBE"] = str(probe)
    launcher = launcher or ["--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
                            "--master_port", str(free_port())]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, ENTRY, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def failed(p, probe=None) -> str:
    """What a failed torchrun printed, its first lines too (a rank's own error comes before the
    launcher's long traceback), and how many optimizer steps each rank had logged."""
    err = p.stderr if len(p.stderr) <= 6000 else p.stderr[:3000] + "\n[...]\n" + p.stderr[-3000:]
    if probe is not None:
        steps = {f.name: len(f.read_text().split()) for f in sorted(Path(probe).glob("steps*.txt"))}
        err += f"\nsteps logged per rank: {steps}"
    return err


def robustq_err(p) -> list[str]:
    return [l for l in p.stderr.splitlines() if l.startswith("robustq")]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted 2-rank run (2 epochs, no eval)."""
    base = tmp_path_factory.mktemp("ddp")
    p = torchrun(["train", CONFIG, "--out", str(base / "run"), "--quiet", "--no-eval", *sets(TINY)],
                 probe=base / "probe")
    assert p.returncode == 0, failed(p, base / "probe")
    return base


def test_shards_of_an_epoch_are_disjoint_and_cover_it():
    n, world = 53, 3
    data = ImageData(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.arange(n))
    seen = []
    for r in range(world):
        b = Batches(data, 5, shuffle=True, shard=(r, world), generator=torch.Generator().manual_seed(1),
                    order_generator=torch.Generator().manual_seed(7))
        seen.append(torch.cat([y for _, y in b]))
    everything = torch.cat(seen)
    assert everything.numel() == n and set(everything.tolist()) == set(range(n))
    assert per_rank_batches(n, 5, Dist(0, world)) == 4   # 17 images in the smallest shard
    spans = [shard_range(37, Dist(r, 4)) for r in range(4)]
    assert spans[0][0] == 0 and spans[-1][1] == 37 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    single = sharded_masks(lambda lo, hi: {"m": torch.arange(lo, hi) % 2 == 0}, 9, Dist())
    assert single["m"].tolist() == [i % 2 == 0 for i in range(9)]


def test_two_ranks_train_write_each_file_once_and_keep_identical_weights(full):
    run, probe = full / "run", full / "probe"
    for f in ("config.yaml", "metrics.csv", "checkpoint.pt", "model.pt"):
        assert (run / f).is_file(), f
    writes0 = (probe / "writes0.txt").read_text().split()
    assert not (probe / "writes1.txt").exists()          # rank 1 writes nothing
    assert writes0.count("config.yaml") == 1
    assert writes0.count("metrics.csv") == 2 and writes0.count("checkpoint.pt") == 2  # per epoch
    steps = [(probe / f"steps{r}.txt").read_text().split() for r in (0, 1)]
    assert len(steps[0]) == 2 * 3 and steps[0] == steps[1]   # identical after EVERY step
    w0, w1 = (torch.load(probe / f"weights{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)          # BN buffers included
    ck = load(run / "checkpoint.pt", CHECKPOINT_FORMAT)
    assert ck["world_size"] == 2 and len(ck["ranks"]) == 2
    assert not torch.equal(ck["ranks"][0]["rng"]["torch"], ck["ranks"][1]["rng"]["torch"])


def test_distributed_eval_gives_the_single_process_record(full, tmp_path):
    run = full / "run"
    p = torchrun(["eval", str(run), "--results", str(tmp_path / "two.json"), *sets(EVAL)])
    assert p.returncode == 0, failed(p)
    assert main(["eval", str(run), "--results", str(tmp_path / "one.json"), *sets(EVAL)]) == 0
    two, one = (json.loads((tmp_path / f).read_text()) for f in ("two.json", "one.json"))
    assert two.pop("processes") == 2 and one.pop("processes") == 1
    for timing in ("eval_seconds", "suite_seconds", "attack_seconds"):
        two.pop(timing), one.pop(timing)
    assert two == one and two["n_eval"] == 37


def test_resume_under_torchrun_is_exact_for_the_same_world_size(full, tmp_path):
    out = tmp_path / "run"
    args = ["train", CONFIG, "--out", str(out), "--quiet", "--no-eval", *sets(TINY)]
    p = torchrun(args, extra_env={"RQ_SIGTERM_AT": "3"})   # rank 0 preempted in epoch 2
    assert p.returncode != 0
    err = robustq_err(p)
    assert len(err) == 1 and "SIGTERM" in err[0], failed(p)
    assert f"torchrun --nproc_per_node 2 -m robustq train --resume {out.resolve()}" in err[0]
    ck = load(out / "checkpoint.pt", CHECKPOINT_FORMAT)
    assert (ck["epoch"], ck["batch"]) == (1, 2)
    p = torchrun(["train", "--resume", str(out), "--quiet", "--no-eval"])
    assert p.returncode == 0, failed(p)
    a = load(full / "run" / "checkpoint.pt", CHECKPOINT_FORMAT)
    b = load(out / "checkpoint.pt", CHECKPOINT_FORMAT)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in rows]
    assert strip(a["metrics"]) == strip(b["metrics"])


def test_two_nodes_on_localhost_complete(tmp_path):
    port, out = free_port(), tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agents = []
    for node in (0, 1):   # node 0 hosts the rendezvous store: both guessing from the hostname races
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "rq",
               "--rdzv_conf", f"is_host={int(node == 0)}",
               ENTRY, "train", CONFIG, "--out", str(out), "--quiet", "--no-eval",
               *sets([*TINY, "train.epochs=1"])]
        agents.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env, cwd=ROOT))
    try:
        results = [a.communicate(timeout=240) for a in agents]
    except subprocess.TimeoutExpired:
        for a in agents:
            a.kill()
        tails = [a.communicate()[1][-2000:] for a in agents]
        pytest.fail("the two torchrun agents did not finish in 240 s:\n" + "\n---\n".join(tails))
    assert [a.returncode for a in agents] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert load(out / "checkpoint.pt", CHECKPOINT_FORMAT)["world_size"] == 2


@pytest.mark.parametrize("overrides,env,message", [
    (["data.train_size=16"], {}, "an epoch has only 1 training batch"),
    ([], {"RQ_RANK1_SET": "seed=5"}, "resolved a different config"),
], ids=["world>batches", "mismatched-configs"])
def test_bad_distributed_input_is_one_sentence_and_writes_nothing(tmp_path, overrides, env, message):
    out = tmp_path / "run"
    p = torchrun(["train", CONFIG, "--out", str(out), "--quiet", *sets([*TINY, *overrides])],
                 extra_env=env)
    assert p.returncode != 0
    err = robustq_err(p)
    assert len(err) == 1 and message in err[0], failed(p)
    assert not out.exists()


def test_cuda_on_a_host_without_cuda_is_one_sentence(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    assert main(["train", CONFIG, "--out", str(tmp_path / "r"), "--device", "cuda", *sets(TINY)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_resume_with_another_world_size_warns_and_continues(full, tmp_path):
    import shutil
    import yaml
    run = tmp_path / "run"
    shutil.copytree(full / "run", run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["epochs"] = 3                      # one more epoch, now in one process
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    from robustq.config import load_config
    from robustq.engine import train
    train(load_config(run / "config.yaml"), run, torch.device("cpu"), resume=True, progress=False,
          log=lines.append)
    assert any("checkpointed with 2 process(es) and resumes with 1" in l for l in lines)
    ck = load(run / "checkpoint.pt", CHECKPOINT_FORMAT)
    assert ck["epoch"] == 3 and ck["world_size"] == 1 and len(ck["metrics"]) == 3
