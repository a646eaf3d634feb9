"""The report: the stored paper numbers, mean/std and verdicts on constructed records, tolerant
reading of records, the CSV/Markdown/HTML outputs, and bad input."""
from __future__ import annotations

import csv
import json
import math
import os
import time

import pytest
import yaml

from robustq.cli import main
from robustq.config import RunConfig
from robustq.errors import ConfigError
from robustq.report import claims, find_runs, paper_data, paper_value, table_rows, write_report
from robustq.report.paper import paper_columns
from robustq.report.stats import FAILS, HOLDS, INCONCLUSIVE, NOT_RUN, combine, mean_std, paired
from tests.sweep_helpers import REPO


@pytest.mark.parametrize("table, row, col, value", [
    ("T1", "en1r20_br", "A2", 43.89), ("T1", "r38_br", "A3", 54.75),
    ("T2", "en5r20_bc", "A1", 51.03), ("T2", "en2r20_float", "N", 80.10),
    ("T3", "trades8", "N", 75.82), ("T3", "tradeoff14", "A3", 66.53),
    ("T4", "en2_a0b1", "N", 71.58), ("T4", "en5_a1b8", "A2", 45.63),
    ("T5", "en1r56_4b_8", "CS", 33.18), ("T5", "r20_tnn_at", "WS", 50.71),
    ("T5", "en1r20_4b_nat", "A2", 0.62),
    ("T6", "fmnist_r44_trades", "A3", 90.12), ("T6", "svhn_en2r56_4b", "CS", 49.03),
    ("T6", "mnist_en2_br", "N", 99.22), ("T6", "c100_r110_trades", "A1", 28.23),
])
def test_stored_paper_numbers_match_the_paper(table, row, col, value):
    assert paper_value(table, row, col) == value


def test_every_paper_row_has_its_tables_columns_and_every_claim_names_real_rows():
    data = paper_data()
    assert [len(t["rows"]) for t in data["tables"].values()] == [4, 9, 6, 9, 20, 15]
    for tid, t in data["tables"].items():
        ids = [r["id"] for r in t["rows"]]
        assert len(set(ids)) == len(ids)
        for r in t["rows"]:
            assert set(r["paper"]) == set(t["columns"]), (tid, r["id"])
    for c in data["claims"].values():
        for comp in c["compare"]:
            for side in (comp["a"], comp["b"]):
                t, r = side.split(".")
                assert r in [x["id"] for x in data["tables"][t]["rows"]]
    assert sorted(data["claims"]) == ["C1", "C2", "C3", "C4", "C5", "C6"]


def test_mean_std_and_the_paired_rule():
    m, sd, n = mean_std([45.0, 46.0, 44.0])
    assert (m, sd, n) == (45.0, 1.0, 3)
    assert mean_std([3.0])[1] == 0.0 and math.isnan(mean_std([])[0])
    # diffs +5, +5, +2 points: mean 4, SE 1 -> holds
    r = paired({0: .45, 1: .46, 2: .44}, {0: .40, 1: .41, 2: .42})
    assert [round(d, 6) for d in r.diffs] == [5, 5, 2] and r.verdict == HOLDS
    assert round(r.mean, 6) == 4 and round(r.se, 6) == 1
    assert paired({0: .40, 1: .41, 2: .42}, {0: .45, 1: .46, 2: .44}).verdict == FAILS
    # mixed signs: inconclusive however large the mean
    assert paired({0: .60, 1: .60, 2: .39}, {0: .40, 1: .40, 2: .40}).verdict == INCONCLUSIVE
    assert paired({0: .5}, {0: .4}).verdict == INCONCLUSIVE          # one pair is not enough
    assert paired({0: .5}, {1: .4}).verdict == NOT_RUN                # no common seed
    close = paired({0: .500, 1: .502, 2: .499}, {0: .501, 1: .500, 2: .500}, "similar", 1.0)
    far = paired({0: .55, 1: .56, 2: .57}, {0: .50, 1: .50, 2: .50}, "similar", 1.0)
    assert close.verdict == HOLDS and far.verdict == FAILS
    assert combine([HOLDS, NOT_RUN]) == HOLDS and combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([HOLDS, FAILS]) == FAILS and combine([NOT_RUN]) == NOT_RUN
    # one value in every run of both settings: inconclusive, and marked as carrying no signal
    flat = paired({0: 0.0, 1: 0.0, 2: 0.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert flat.verdict == INCONCLUSIVE and flat.constant == 0.0
    assert paired({0: .4, 1: .4, 2: .4}, {0: .4, 1: .4, 2: .41}).constant is None
    # equal values are evidence for "similar", not an absence of signal
    same = paired({0: .99, 1: .99}, {0: .99, 1: .99}, "similar", 1.0)
    assert same.verdict == HOLDS and same.constant is None


def make_run(root, name, *, protocol="reduced", seed=0, records=(), **cfg_over):
    """A run directory with a full config.yaml and the given records (suite, fields)."""
    cfg = RunConfig().to_dict()
    cfg["seed"] = seed
    for key, value in cfg_over.items():
        section, leaf = key.split("__")
        cfg[section][leaf] = value
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "sweep.json").write_text(json.dumps({"protocol": protocol}))
    for i, (suite, fields) in enumerate(records):
        rec = {"suite": suite, "natural_acc": 0.5, "attacks": {}, "weight_sparsity": 0.4,
               "channel_sparsity": 0.05, "n_eval": 500, **fields}
        (d / f"eval-{suite}-2026120{i}.json").write_text(json.dumps(rec))
    return d


BIN_AT = dict(data__name="cifar10", quant__scheme="binary", quant__method="br", loss__name="tradeoff",
              loss__alpha=0.0, loss__beta=1.0)


def t1_runs(root, protocol="reduced"):
    """En1ResNet20 vs ResNet20, binary BR AT, 3 seeds; IFGSM +5/+5/+2 points, natural mixed."""
    en = [(.45, .60), (.46, .58), (.44, .59)]
    plain = [(.40, .55), (.41, .60), (.42, .57)]
    for seed in range(3):
        for name, vals, noise in (("en", en, 0.1), ("plain", plain, 0.0)):
            ifgsm, nat = vals[seed]
            make_run(root, f"{name}-{seed}", protocol=protocol, seed=seed, model__noise=noise,
                     records=[("paper", {"natural_acc": nat, "attacks": {"fgsm": .5, "ifgsm": ifgsm, "cw_paper": .55}}),
                              ("strong", {"natural_acc": nat - .01, "robust_acc_worst": ifgsm - .1,
                                          "attacks": {"pgd_ce": ifgsm - .05}})], **BIN_AT)


def test_report_cells_and_verdicts_from_constructed_records(tmp_path):
    t1_runs(tmp_path / "runs")
    runs = find_runs([tmp_path / "runs"])
    rows = {r["id"]: r for r in table_rows(runs, "T1", "paper", paper_columns("T1"))}
    cell = rows["en1r20_br"]["ours"]["A2"]
    assert (round(cell.mean, 6), round(cell.std, 6), cell.n) == (45.0, 1.0, 3)
    assert rows["en1r20_br"]["paper"]["A2"] == 43.89 and rows["r38_br"]["runs"] == 0
    c1 = claims(runs, "paper")["C1"]
    verdicts = [c.result.verdict for c in c1["comparisons"]]
    assert verdicts == [INCONCLUSIVE, HOLDS, NOT_RUN, NOT_RUN]   # natural: +5, -2, +2
    assert c1["verdict"] == INCONCLUSIVE
    strong = claims(runs, "strong")["C1"]["comparisons"][1]
    assert strong.metric == "robust_acc_worst" and strong.result.verdict == HOLDS
    assert claims(runs, "paper")["C2"]["verdict"] == NOT_RUN


def test_a_metric_that_never_moves_is_reported_as_no_signal(tmp_path):
    nat4 = dict(data__name="cifar10", quant__scheme="4bit", quant__method="br", model__depth=20,
                model__noise=0.0)
    for seed in range(3):
        for name, over in (("nat", dict(loss__name="natural")),
                           ("at", dict(loss__name="tradeoff", loss__alpha=0.0, loss__beta=1.0))):
            make_run(tmp_path / "runs", f"{name}-{seed}", seed=seed, **nat4, **over,
                     records=[("paper", {"channel_sparsity": 0.0})])
    out = tmp_path / "rep.md"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 0
    md = out.read_text()
    row = next(line for line in md.splitlines() if "T5.r20_4b_nat | T5.r20_4b_at" in line)
    assert row.endswith("| inconclusive (no signal) |")
    assert "| C5 |" in md and "inconclusive (no signal)" in md.split("| C5 |")[1].splitlines()[0]
    assert "No signal: channel_sparsity = 0.00 % in every run" in md


def test_report_writes_csv_markdown_html_and_plots(tmp_path):
    t1_runs(tmp_path / "runs")
    make_run(tmp_path / "runs", "mine", seed=0, model__depth=32,
             records=[("paper", {"natural_acc": .7, "robust_acc_worst": .3})])
    out = tmp_path / "rep" / "report.md"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 0
    md = out.read_text()
    assert "45.00 ± 1.00 (n=3)" in md and "| 43.89 |" in md
    assert "Other runs (in no paper table)" in md and "En1ResNet32" in md
    assert "holds" in md and "Verdict rule" in md
    html = out.with_suffix(".html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "45.00 ± 1.00 (n=3)" in html
    with open(out.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["suite"] for r in rows} == {"paper", "strong"}
    assert any(r["metric"] == "ifgsm" and r["model"] == "ResNet20" and r["seed"] == "2"
               and float(r["value"]) == 0.42 for r in rows)
    pytest.importorskip("matplotlib")
    assert (tmp_path / "rep" / "report-t1-accuracy.png").stat().st_size > 1000
    assert "report-t1-accuracy.png" in md
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(out.with_suffix(".csv"))
    assert len(frame) == len(rows)


def test_records_are_read_tolerantly(tmp_path):
    d = make_run(tmp_path, "r", records=[])
    (d / "results.json").write_text(json.dumps({"natural_acc": 0.3, "attacks": {"ifgsm": .1}}))
    (d / "eval-strong-1.json").write_text("{not json")
    (d / "eval-paper-old.json").write_text(json.dumps({"suite": "paper", "natural_acc": 0.2}))
    old = time.time() - 100
    os.utime(d / "eval-paper-old.json", (old, old))
    run = find_runs([tmp_path])[0]
    assert set(run.records) == {"paper"} and run.records["paper"]["natural_acc"] == 0.3


def test_bad_input_no_runs_and_mixed_protocols(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "rep.md"
    assert main(["report", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no runs found" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    t1_runs(tmp_path / "a", protocol="reduced")
    t1_runs(tmp_path / "b", protocol="paper")
    with pytest.raises(ConfigError, match="mix protocols"):
        write_report([tmp_path / "a", tmp_path / "b"], out)
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mix protocols" in err[0]
    assert not out.exists()   # nothing half-written


def test_two_runs_of_one_setting_and_seed_are_refused(tmp_path):
    t1_runs(tmp_path / "a")
    t1_runs(tmp_path / "b")
    with pytest.raises(ConfigError, match="same settings and seed"):
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "r.md", plots=False)


SWEEPS = REPO / "sweeps"


def _descriptors(points):
    from robustq.report.collect import descriptor
    return [descriptor(p.config.to_dict()) for p in points]


@pytest.mark.parametrize("table", ["T1", "T2", "T3", "T4", "T5", "T6"])
def test_paper_sweep_files_cover_their_tables_row_for_row(table):
    from robustq.sweep import load_sweep

    points = load_sweep(SWEEPS / "paper" / f"{table.lower()}.yaml")
    descs = _descriptors(points)
    rows = paper_data()["tables"][table]["rows"]
    for row in rows:   # every row of the paper's table has its 3 seeds
        hits = [d for d in descs if all(d.get(k) == v for k, v in row["match"].items())]
        assert sorted(d["seed"] for d in hits) == [0, 1, 2], row["id"]
    assert len(points) == 3 * len(rows)
    assert all(p.protocol == "paper" and p.config.train.epochs == 200 for p in points)


def test_reduced_sweep_files_expand_to_21_shared_points():
    from robustq.sweep import load_sweeps

    points = load_sweeps(sorted((SWEEPS / "reduced").glob("t*.yaml")))
    assert len(points) == 21 * 3 and all(p.protocol == "reduced" for p in points)
    descs = _descriptors(points)
    assert {d["dataset"] for d in descs} == {"cifar10", "mnist", "fashion-mnist"}
    for claim in ("C1", "C2", "C3", "C4", "C5", "C6"):   # every claim has a comparison to make
        runnable = 0
        for comp in paper_data()["claims"][claim]["compare"]:
            sides = []
            for side in (comp["a"], comp["b"]):
                t, r = side.split(".")
                match = next(x for x in paper_data()["tables"][t]["rows"] if x["id"] == r)["match"]
                sides.append(sum(all(d.get(k) == v for k, v in match.items()) for d in descs))
            runnable += sides == [3, 3]
        assert runnable >= 1, claim


def test_compute_is_wall_time_times_threads_and_says_what_it_leaves_out(tmp_path):
    """Points the sweep timed count their sitting x threads; a run without that timing counts
    its recorded epoch and evaluation seconds; a resumed point is flagged."""
    from robustq.report.collect import core_hours
    a = make_run(tmp_path, "a", records=[("paper", {"eval_seconds": 60})])
    (a / "sweep-done.json").write_text(json.dumps({"sitting_seconds": 1800.0, "threads": 2, "cpus": 2,
                                                   "cpu": "X", "resumed": False}))
    b = make_run(tmp_path, "b", seed=1, records=[("paper", {"eval_seconds": 60})])
    (b / "sweep-done.json").write_text(json.dumps({"sitting_seconds": 900.0, "threads": 1, "cpus": 2,
                                                   "cpu": "X", "resumed": True}))
    c = make_run(tmp_path, "c", seed=2, records=[("paper", {"eval_seconds": 120})])
    (c / "metrics.csv").write_text("epoch,seconds\n1,100\n2,140\n")
    (c / "sweep-done.json").write_text(json.dumps({"cpu": "X", "cpus": 2}))   # an older marker
    make_run(tmp_path, "d", seed=3, records=[("paper", {"eval_seconds": 999})])   # not done: left out
    c_h = core_hours(find_runs([tmp_path]))
    assert c_h == {"core_hours": (3600 + 900 + 360) / 3600, "timed": 2, "untimed": 1, "resumed": 1}
    out = tmp_path / "rep.md"
    assert main(["report", str(tmp_path), "--out", str(out), "--no-plots"]) == 0
    text = out.read_text()
    assert "Compute: 1.35 core-hours" in text and "1 of them resumed" in text
    assert "1 run without that timing" in text and "1 sweep point not finished" in text
    # the same costs per setting: a, b and c share one (seeds 0-2), in core-minutes
    from robustq.report.collect import cost_by_setting
    (row,) = cost_by_setting(find_runs([tmp_path]))
    assert (row["runs"], row["untimed"]) == (3, 1)
    assert round(row["minutes_mean"], 6) == round((60 + 15 + 6) / 3, 6)
    assert round(row["core_hours"], 6) == round((3600 + 900 + 360) / 3600, 6)
    line = next(l for l in text.splitlines() if "(1 untimed)" in l)
    assert line.endswith("| 3 (1 untimed) | 27.0 ± 28.9 | 1.35 |")


def test_compute_falls_back_to_the_sweep_log(tmp_path):
    from robustq.report.collect import core_hours
    a = make_run(tmp_path, "a", records=[("paper", {})])
    (a / "sweep-done.json").write_text(json.dumps({"threads": 2, "cpus": 2, "cpu": "X"}))
    b = make_run(tmp_path, "b", seed=1, records=[("paper", {})])
    (b / "sweep-done.json").write_text(json.dumps({"threads": 1, "cpus": 2, "cpu": "X"}))
    events = [(0, "start", "a", 7), (5, "start", "b", 8), (100, "start", "a", 9),   # a: killed, restarted
              (400, "done", "b", 8), (1000, "done", "a", 9)]
    (tmp_path / "sweep-log.jsonl").write_text("".join(
        json.dumps({"time": t, "event": e, "point": p, "host": "h", "pid": pid}) + "\n"
        for t, e, p, pid in events) + "{torn line\n")
    assert core_hours(find_runs([tmp_path])) == {"core_hours": (900 * 2 + 395) / 3600, "timed": 2,
                                                   "untimed": 0, "resumed": 1}
