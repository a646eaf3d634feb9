"""Attacks under one contract (``base.Attack``); one file per attack, created by name."""
from . import apgd, cw_l2, cw_paper, fgsm, ifgsm, pgd, random_sign, trades_kl, transfer  # noqa: F401
from .base import ATTACKS, Attack, make_attack, parse_eps

__all__ = ["ATTACKS", "Attack", "make_attack", "parse_eps"]
