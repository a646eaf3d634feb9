"""Attacks under one contract (``base.Attack``); one file per attack, created by name
(``make_attack("pgd", eps="8/255")``) or by class (``PGD(eps=8/255)``).

Every class's docstring names its paper and defaults. ``attack(model, x, y)`` returns x_adv;
``attack.bind(model)`` gives the torchattacks-style ``atk(x, y)``.
"""
from . import (apgd, autoattack, cw_l2, cw_paper, fgsm, fgsm_rs, free, ifgsm,  # noqa: F401
               n_fgsm, pgd, random_sign, trades_kl, transfer)
from .apgd import APGDCE, APGDDLR
from .autoattack import AutoAttack
from .base import ATTACKS, Attack, BoundAttack, check_attack_args, make_attack
from .cw_l2 import CWL2
from .cw_paper import CWPaper
from .fgsm import FGSM
from .fgsm_rs import FGSMRS
from .free import Free
from .ifgsm import IFGSM
from .n_fgsm import NFGSM
from .pgd import PGD
from .random_sign import RandomSign
from .trades_kl import TradesKL
from .transfer import Transfer

__all__ = ["ATTACKS", "APGDCE", "APGDDLR", "Attack", "AutoAttack", "BoundAttack", "CWL2",
           "CWPaper", "FGSM", "FGSMRS", "Free", "IFGSM", "NFGSM", "PGD", "RandomSign",
           "TradesKL", "Transfer", "check_attack_args", "make_attack"]
