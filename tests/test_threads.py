"""The thread count: affinity, cgroup quotas (v1 and v2), other processes' load, overrides."""
from __future__ import annotations

import pytest

from robustq import threads as th
from robustq.cli import main
from tests.test_engine import TINY

STAT = """cpu  100 0 100 800 0 0 0 0 0 0
cpu0 {u0} 0 0 {i0} 0 0 0 0 0 0
cpu1 {u1} 0 0 {i1} 0 0 0 0 0 0
intr 12345
"""


def test_v2_cpu_max_takes_the_tightest_limit_on_the_way_up(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")             # the root: no limit
    (tmp_path / "user.slice").mkdir()
    (tmp_path / "user.slice" / "cpu.max").write_text("250000 100000\n")
    (tmp_path / "user.slice" / "job").mkdir()
    (tmp_path / "user.slice" / "job" / "cpu.max").write_text("150000 100000\n")
    own = tmp_path / "self_cgroup"
    own.write_text("0::/user.slice/job\n")
    assert th.cgroup_cpu_limit(tmp_path, own) == pytest.approx(1.5)
    own.write_text("0::/\n")
    assert th.cgroup_cpu_limit(tmp_path, own) is None
    assert th._quota("max 100000") is None and th._quota("50000 100000") == 0.5


def test_v1_cfs_quota(tmp_path):
    cpu = tmp_path / "cpu,cpuacct"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("200000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert th.cgroup_cpu_limit(tmp_path, tmp_path / "absent") == 2.0
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")                # v1's "no limit"
    assert th.cgroup_cpu_limit(tmp_path, tmp_path / "absent") is None


def test_busy_cpus_counts_only_this_process_cpus(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    before = STAT.format(u0=0, i0=0, u1=0, i1=0)
    after = STAT.format(u0=100, i0=0, u1=10, i1=90)   # cpu0 fully busy, cpu1 10%
    assert th._cpu_times(after, [0, 1]) == (90.0, 200.0)
    assert th._cpu_times(after, [1]) == (90.0, 100.0)
    stat.write_text(before)
    monkeypatch.setattr(th.time, "sleep", lambda s: stat.write_text(after))  # the window
    assert th.busy_cpus([0, 1], stat=stat) == pytest.approx(1.1)
    stat.write_text(before)
    assert th.busy_cpus([1], stat=stat) == pytest.approx(0.1)
    assert th.busy_cpus([0], stat=tmp_path / "missing") == 0.0


@pytest.mark.parametrize("cpus,quota,busy,local,want", [
    ([0, 1], None, 0.0, 1, 2),      # idle 2-core machine: both
    ([0, 1], None, 1.1, 1, 1),      # one other single-threaded job: leave it its core
    ([0, 1], None, 0.3, 1, 2),      # background noise is not a job
    ([0, 1], None, 5.0, 1, 1),      # never below one
    (list(range(64)), 1.5, 0.0, 1, 1),   # a container's 1.5-CPU quota on a 64-core host
    (list(range(8)), None, 0.0, 4, 2),   # torchrun with 4 local processes
    ([3], None, 0.0, 1, 1),         # pinned to one CPU
])
def test_auto_threads(cpus, quota, busy, local, want):
    choice = th.auto_threads(cpus, quota, busy, local)
    assert choice.threads == want and "--threads" in choice.header()


def test_explicit_choices_win(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert th.choose_threads(5) == th.ThreadChoice(5, "--threads")
    assert th.choose_threads(None).threads == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= th.choose_threads(None, window=0).threads <= len(th.affinity_cpus())


def test_threads_flag_sets_torch_and_is_in_the_run_header(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        out = tmp_path / "r"
        assert main(["train", "quickstart", "--no-eval", "--quiet", "--threads", "1", "--out",
                     str(out), *[a for t in TINY for a in ("--set", t)],
                     "--set", "train.epochs=1", "--set", "train.max_batches=1"]) == 0
        assert torch.get_num_threads() == 1
        assert "threads: 1 (--threads)" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):  # argparse: exit code 2 and a usage line
        main(["train", "quickstart", "--threads", "0"])
