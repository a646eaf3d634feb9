"""Attacks under one contract (``base.Attack``); one file per attack, created by name."""
from . import (apgd, cw_l2, cw_paper, fgsm, fgsm_rs, free, ifgsm, n_fgsm, pgd,  # noqa: F401
               random_sign, trades_kl, transfer)
from .base import ATTACKS, Attack, make_attack, parse_eps

__all__ = ["ATTACKS", "Attack", "make_attack", "parse_eps"]
