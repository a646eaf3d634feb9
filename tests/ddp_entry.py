"""``torchrun tests/ddp_entry.py ARGS``: the robustq command with test probes (for test_distributed).

With ``RQ_PROBE=DIR`` set, each rank records into DIR: every file it writes (``writes<rank>.txt``,
via ``checkpoint.atomic_write``, which all of robustq's files go through), a digest of its
weights after every optimizer step (``steps<rank>.txt``) and its final weights
(``weights<rank>.pt``). ``RQ_SIGTERM_AT=N`` makes rank 0 send itself SIGTERM at its N-th
batch boundary (a deterministic preemption); ``RQ_RANK1_SET=k=v`` gives rank 1 a different
``--set`` (a mismatched config).
"""
import hashlib
import os
import signal
import sys
from pathlib import Path

import torch

from robustq import checkpoint, cli, engine, evaluate, metrics, resume

probe = os.environ.get("RQ_PROBE")
rank = int(os.environ.get("RANK", 0))

if probe:
    probe = Path(probe)
    write = checkpoint.atomic_write

    def logged_write(path, data):
        with open(probe / f"writes{rank}.txt", "a") as f:
            f.write(f"{Path(path).name}\n")
        write(path, data)
    for module in (checkpoint, metrics, evaluate):   # every module that writes files
        module.atomic_write = logged_write
    update = engine.TrainStep._update

    def logged_update(self, loss):
        update(self, loss)
        h = hashlib.sha256()
        for p in self.opt.param_groups[0]["params"]:
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        with open(probe / f"steps{rank}.txt", "a") as f:
            f.write(h.hexdigest() + "\n")
    engine.TrainStep._update = logged_update
    train = engine.train

    def probed_train(*a, **k):
        s = train(*a, **k)
        torch.save({k: v.cpu() for k, v in s.model.state_dict().items()}, probe / f"weights{rank}.pt")
        return s
    engine.train = probed_train

if os.environ.get("RQ_SIGTERM_AT") and rank == 0:
    calls = {"n": 0}
    due = resume.CheckpointClock.due

    def preempt(self):
        calls["n"] += 1
        if calls["n"] == int(os.environ["RQ_SIGTERM_AT"]):
            os.kill(os.getpid(), signal.SIGTERM)
        return due(self)
    resume.CheckpointClock.due = preempt

args = sys.argv[1:]
if os.environ.get("RQ_RANK1_SET") and rank == 1:
    args += ["--set", os.environ["RQ_RANK1_SET"]]
sys.exit(cli.main(args))
