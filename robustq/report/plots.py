"""The report's figures (matplotlib, the optional extra ``plot``; object-oriented API only).

* ``accuracy_bars``: per paper table, natural and robust accuracy per row, mean with std error
  bars over seeds, the paper's numbers as black ticks;
* ``sparsity_scatter``: weight vs channel sparsity of every quantized run (Table 5's question:
  is the sparsity structured?), the paper's Table 5 as hollow markers;
* ``tradeoff_frontier``: natural vs robust accuracy of TRADES (7) and loss (8) as beta grows.
"""
from __future__ import annotations

from pathlib import Path

from .collect import Run
from .paper import by_seed, matching, metric_key, paper_data
from .stats import mean_std


def available() -> bool:
    import importlib.util
    return importlib.util.find_spec("matplotlib") is not None


def _figure(w: float = 7.0, h: float = 4.0):
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h), layout="constrained")


def _save(fig, ax, path: Path, xlabel: str | None, ylabel: str, title: str, legend: int) -> Path:
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend)
    fig.savefig(path, dpi=110)
    return path


def _stat(runs: list[Run], suite: str, metric: str):
    m, sd, n = mean_std([100 * v for v in by_seed(runs, suite, metric).values()])
    return (m, sd) if n else None


def accuracy_bars(runs: list[Run], table: str, path: Path) -> Path | None:
    """Bars: N and A2 (paper protocol), worst case (strong suite); ticks: the paper's N, A2."""
    rows = [(r, matching(runs, r["match"])) for r in paper_data()["tables"][table]["rows"]]
    rows = [(r, m) for r, m in rows if m]
    if not rows:
        return None
    series = [("N (paper protocol)", "paper", "natural_acc", "N"),
              ("A2 IFGSM (paper protocol)", "paper", "ifgsm", "A2"),
              ("worst case (strong)", "strong", "robust_acc_worst", None)]
    fig = _figure(max(6.0, 1.3 * len(rows) + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (label, suite, metric, code) in enumerate(series):
        xs, ys, es = [], [], []
        for j, (row, mine) in enumerate(rows):
            s = _stat(mine, suite, metric)
            if s:
                xs.append(j + (i - 1) * width)
                ys.append(s[0])
                es.append(s[1])
            if code and row["paper"].get(code) is not None:
                ax.plot([j + (i - 1) * width], [row["paper"][code]], marker="_", color="k",
                        markersize=14, label="paper" if (i, j) == (0, 0) else None)
        if xs:
            ax.bar(xs, ys, width, yerr=es, capsize=3, label=label)
    ax.set_xticks(range(len(rows)), [r["label"] for r, _ in rows], rotation=20, ha="right",
                  fontsize=8)
    return _save(fig, ax, path, None, "accuracy (%)", f"Table {table[1:]}: mean ± std over seeds", 7)


def sparsity_scatter(runs: list[Run], path: Path) -> Path | None:
    pts = [(r, rec) for r in runs for rec in list(r.records.values())[:1]
           if r.descriptor["quant"] not in ("float", "binary") and "channel_sparsity" in rec]
    if not pts:
        return None
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot()
    labels = sorted({r.descriptor["loss"] for r, _ in pts})
    for lab in labels:
        xs = [100 * rec["weight_sparsity"] for r, rec in pts if r.descriptor["loss"] == lab]
        ys = [100 * rec["channel_sparsity"] for r, rec in pts if r.descriptor["loss"] == lab]
        ax.scatter(xs, ys, label=f"ours: {lab}", s=18)
    t5 = paper_data()["tables"]["T5"]["rows"]
    ax.scatter([r["paper"]["WS"] for r in t5], [r["paper"]["CS"] for r in t5], facecolors="none",
               edgecolors="k", label="paper Table 5", s=24)
    return _save(fig, ax, path, "weight sparsity (%)", "channel sparsity (%)",
                 "Is the sparsity structured? (one point per run)", 7)


def _families(runs: list[Run], family: str) -> dict:
    """Runs of one loss family ((7) TRADES, or (8) with alpha 1), by (dataset, model, quant),
    then by loss (one beta each)."""
    groups: dict = {}
    for r in runs:
        d = r.descriptor
        if d["loss"].startswith(family + " ") and (family == "trades" or " a=1 " in d["loss"] + " "):
            groups.setdefault((d["dataset"], d["model"], d["quant"]), {}).setdefault(d["loss"], []).append(r)
    return groups


def _frontier(by_loss: dict, suite: str) -> list[tuple]:
    """(beta, natural, robust) means, sorted by beta, for the losses measured in ``suite``."""
    pts = []
    for loss, mine in by_loss.items():
        n, rob = _stat(mine, suite, "natural_acc"), _stat(mine, suite, metric_key("robust", suite))
        if n and rob:
            pts.append((float(loss.split("b=")[1]), n[0], rob[0]))
    return sorted(pts)


def tradeoff_frontier(runs: list[Run], path: Path) -> Path | None:
    """Natural vs robust accuracy, one line per loss family through its beta values."""
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot()
    drawn = False
    for suite, style in (("paper", "-o"), ("strong", "--s")):
        for family in ("trades", "tradeoff"):
            for key, by_loss in _families(runs, family).items():
                pts = _frontier(by_loss, suite)
                if pts:
                    ax.plot([p[2] for p in pts], [p[1] for p in pts], style,
                            label=f"{'(7) TRADES' if family == 'trades' else '(8)'} {key[1]} {key[2]} ({suite})")
                    for b, n, rob in pts:
                        ax.annotate(f"β={b:g}", (rob, n), fontsize=7)
                    drawn = True
    if not drawn:
        return None
    t3 = {r["id"]: r["paper"] for r in paper_data()["tables"]["T3"]["rows"]}
    for fam, ids in (("paper (7)", ["trades1", "trades4", "trades8"]),
                     ("paper (8)", ["tradeoff11", "tradeoff14", "tradeoff18"])):
        ax.plot([t3[i]["A2"] for i in ids], [t3[i]["N"] for i in ids], ":x", color="k" if "7" in fam else "gray", label=fam)
    return _save(fig, ax, path, "robust accuracy (%): A2 (paper protocol) or worst case (strong)",
                 "natural accuracy (%)", "Trade-off frontier of (7) and (8)", 6)
