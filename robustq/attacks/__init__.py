"""Attacks under one contract (``base.Attack``); one file per attack, created by name."""
from . import cw_paper, fgsm, ifgsm, pgd, trades_kl  # noqa: F401  (register the attacks)
from .base import ATTACKS, Attack, make_attack, parse_eps

__all__ = ["ATTACKS", "Attack", "make_attack", "parse_eps"]
