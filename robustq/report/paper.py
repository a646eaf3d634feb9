"""The paper's tables and claims (``paper_tables.yaml``) set against the collected runs.

Each paper row names the runs it stands for (``match`` on the run descriptor). For a row, a
suite and a metric, the runs give one value per seed; a table cell is their mean +- std (n).
The claims C1-C6 are lists of paired comparisons between rows (``stats.paired``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from ..errors import ConfigError
from .collect import Run
from .stats import Paired, combine, mean_std, paired

SUITE_INDEPENDENT = ("weight_sparsity", "channel_sparsity")   # properties of the model
ROBUST = {"paper": "ifgsm"}                                    # robust = A2 under the paper's protocol
ALIASES = {"natural": "natural_acc"}
STRONG_COLUMNS = [("N", "natural_acc"), ("A1", "fgsm"), ("A2", "ifgsm"), ("A3", "cw_paper"),
                  ("PGD-CE", "pgd_ce"), ("PGD-CW", "pgd_cw"), ("C&W-L2", "cw_l2"),
                  ("worst", "robust_acc_worst")]


@lru_cache(maxsize=1)
def paper_data() -> dict:
    """The transcribed tables and the claims (package data, read once)."""
    text = (resources.files("robustq") / "report" / "paper_tables.yaml").read_text()
    return yaml.safe_load(text)


def paper_value(table: str, row_id: str, column: str):
    """The paper's number (percent) for ``table``/``row_id``/``column`` (e.g. T1, r20_br, A2)."""
    row = _row(table, row_id)
    return row["paper"].get(column)


def _row(table: str, row_id: str) -> dict:
    for row in paper_data()["tables"][table]["rows"]:
        if row["id"] == row_id:
            return row
    raise KeyError(f"{table}.{row_id}")


def metric_key(metric: str, suite: str) -> str:
    """A claim's metric name in the records of ``suite``."""
    if metric == "robust":
        return ROBUST.get(suite, "robust_acc_worst")
    return ALIASES.get(metric, metric)


def matching(runs: list[Run], match: dict) -> list[Run]:
    return [r for r in runs if all(r.descriptor.get(k) == v for k, v in match.items())]


def by_seed(runs: list[Run], suite: str, metric: str) -> dict:
    """seed -> value of ``metric`` under ``suite`` (sparsity: from any record)."""
    out: dict = {}
    for r in runs:
        recs = list(r.records.values()) if metric in SUITE_INDEPENDENT else [r.records.get(suite)]
        values = [_value(rec, metric) for rec in recs if rec]
        values = [v for v in values if v is not None]
        if not values:
            continue
        seed = r.descriptor["seed"]
        if seed in out:
            raise ConfigError(f"two runs have the same settings and seed {seed} "
                              f"({r.path} and another); keep one of them or report them "
                              f"separately")
        out[seed] = values[0]
    return out


def _value(rec: dict, metric: str):
    v = rec.get(metric, (rec.get("attacks") or {}).get(metric))
    return float(v) if isinstance(v, (int, float)) else None


@dataclass
class Cell:
    mean: float
    std: float
    n: int


def table_rows(runs: list[Run], table: str, suite: str, columns: list[tuple[str, str]]) -> list[dict]:
    """Per paper row: label, the paper's numbers, ours (``Cell`` per column code) and run count."""
    rows = []
    for row in paper_data()["tables"][table]["rows"]:
        mine = matching(runs, row["match"])
        ours = {}
        for code, metric in columns:
            values = list(by_seed(mine, suite, metric).values())
            if values:
                ours[code] = Cell(*mean_std([100 * v for v in values]))
        rows.append({"id": row["id"], "label": row["label"], "paper": row.get("paper", {}),
                     "ours": ours, "runs": len(mine)})
    return rows


def paper_columns(table: str) -> list[tuple[str, str]]:
    cols = paper_data()["columns"]
    return [(c, cols[c]) for c in paper_data()["tables"][table]["columns"]]


def matched_run_ids(runs: list[Run]) -> set:
    ids = set()
    for t in paper_data()["tables"].values():
        for row in t["rows"]:
            ids.update(id(r) for r in matching(runs, row["match"]))
    return ids


@dataclass
class Comparison:
    a: str
    b: str
    metric: str
    test: str
    tol: float
    result: Paired


def claims(runs: list[Run], suite: str) -> dict:
    """claim id -> {text, verdict, comparisons: [Comparison]} under ``suite``."""
    out = {}
    for cid, claim in paper_data()["claims"].items():
        comps = []
        for c in claim["compare"]:
            metric = metric_key(c["metric"], suite)
            (ta, ra), (tb, rb) = c["a"].split("."), c["b"].split(".")
            a = by_seed(matching(runs, _row(ta, ra)["match"]), suite, metric)
            b = by_seed(matching(runs, _row(tb, rb)["match"]), suite, metric)
            tol = float(c.get("tol", 0.0))
            comps.append(Comparison(c["a"], c["b"], metric, c["test"], tol,
                                    paired(a, b, c["test"], tol)))
        out[cid] = {"text": claim["text"], "comparisons": comps,
                    "verdict": combine([x.result.verdict for x in comps])}
    return out
