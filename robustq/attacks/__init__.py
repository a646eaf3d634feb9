"""Attacks under one contract (``base.Attack``); one file per attack, created by name."""
from . import (apgd, autoattack, cw_l2, cw_paper, fgsm, fgsm_rs, free, ifgsm,  # noqa: F401
               n_fgsm, pgd, random_sign, trades_kl, transfer)
from .base import ATTACKS, Attack, check_attack_args, make_attack

__all__ = ["ATTACKS", "Attack", "check_attack_args", "make_attack"]
