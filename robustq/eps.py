"""Sizes in pixel units (an L-inf radius, a step size), parsed once.

A config may say ``eps: 0.031`` or ``eps: 8/255``. ``Eps`` is a ``float`` (so every formula
uses it as the number it is) that also remembers how the user wrote it, ``spec``, so the
config file and the results record show ``8/255`` and not ``0.03137254901960784``. It is
built once, where a value enters robustq (config load, a command-line flag, a library call);
code further in only ever sees the float.
"""
from __future__ import annotations

import math
from typing import Union


class Eps(float):
    """``Eps("8/255")``, ``Eps("0.031")`` or ``Eps(0.031)``; ``spec`` is the spelling."""
    __slots__ = ("spec",)
    spec: Union[float, str]

    def __new__(cls, value: Union["Eps", float, int, str]) -> "Eps":
        if isinstance(value, Eps):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number or a fraction like 8/255, got {value!r}")
        if isinstance(value, str):
            text = value.strip()
            try:
                num, _, den = text.partition("/")
                number = float(num) / float(den) if den else float(num)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"expected a number or a fraction like 8/255, got {value!r}") from None
            spec: Union[float, str] = text
        else:
            number = spec = float(value)
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        self = super().__new__(cls, number)
        self.spec = spec
        return self

    def __reduce__(self):  # copy / deepcopy / pickle keep the spelling
        return (Eps, (self.spec,))

    def __repr__(self) -> str:
        return repr(self.spec)

    def __str__(self) -> str:
        return str(self.spec)


def spelling(value):
    """``value`` with every ``Eps`` inside (dicts, lists) replaced by its spelling: what goes
    into YAML and JSON files."""
    if isinstance(value, Eps):
        return value.spec
    if isinstance(value, dict):
        return {k: spelling(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [spelling(v) for v in value]
    return value
