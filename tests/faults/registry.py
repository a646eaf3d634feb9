"""Every fault case, by row of the table, and the fast subset the default test run takes."""
from __future__ import annotations

from . import gen_checkpoints, gen_config, gen_data, gen_disk, gen_kills, gen_models
from .harness import Case

GENERATORS = (gen_config, gen_models, gen_checkpoints, gen_disk, gen_data, gen_kills)


def all_cases() -> list[Case]:
    return [c for g in GENERATORS for c in g.cases()]


def fast_subset(cases: list[Case], every: int = 25) -> list[Case]:
    """Every ``every``-th case of each row (and 2 kills), spread over the generators so that
    each kind of fault is seen by the default run; the rest run with ``pytest -m fault``."""
    out, seen = [], {}
    for c in cases:
        k = seen.get(c.area, 0)
        seen[c.area] = k + 1
        step = 20 if c.area == gen_kills.AREA else every
        if k % step == 0 or (c.expect == "success" and c.area == gen_disk.AREA and k % 3 == 0):
            out.append(c)
    return out
