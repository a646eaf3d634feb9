"""The attack that makes x_adv during training, chosen by ``adv.attack``.

``pgd`` (the paper's PGD-10) and the fast single-step methods ``fgsm_rs``, ``n_fgsm`` and
``free`` all feed the objectives that take an x_adv (``at``, ``tradeoff``); ``trades``
always maximises its own KL term (``trades_kl``) with BatchNorm in eval mode, as TRADES and
eq. (7) prescribe; ``natural`` needs no attack. PGD and the single-step attacks run in
``adv.bn_mode`` (the reference: train mode); free AT has no separate attack pass at all: its
perturbation rides on the training forward (``attacks/free.py``).
"""
from __future__ import annotations

from typing import Optional, Union

from .base import Attack, make_attack
from .free import FreeReplay

TRAINING_ATTACKS = ("pgd", "fgsm_rs", "n_fgsm", "free")
FAST = ("fgsm_rs", "n_fgsm", "free")
TAKES_X_ADV = ("at", "tradeoff")


def check_training_attack(cfg) -> Optional[str]:
    """One sentence saying what is wrong with the training-attack settings, or None."""
    a, loss = cfg.adv, cfg.loss.name
    if a.attack not in TRAINING_ATTACKS:
        return (f"adv.attack {a.attack!r} is not a training attack; choose one of "
                f"{', '.join(TRAINING_ATTACKS)}")
    if a.attack in FAST and loss not in TAKES_X_ADV:
        why = "trains without an attack" if loss == "natural" else "keeps its own KL attack (eq. 7)"
        return (f"adv.attack {a.attack} makes x_adv for the at and tradeoff losses, but loss.name "
                f"{loss} {why}; use adv.attack pgd or loss.name at / tradeoff")
    if a.replay < 1:
        return f"adv.replay (free AT's minibatch replays m) must be >= 1, got {a.replay}"
    if not 0 <= a.noise_k <= 16:
        return f"adv.noise_k (N-FGSM's noise U[-k eps, k eps]) must be in [0, 16], got {a.noise_k}"
    if a.fast_step is not None:   # an Eps, parsed when the config was read
        if not 0 < a.fast_step <= 1:
            return (f"adv.fast_step must be null (the method's paper default) or a step in "
                    f"(0, 1] pixel units such as 10/255, got {a.fast_step!r}")
    return None


def training_attack(cfg, objective_attack: Optional[str]) -> Union[Attack, FreeReplay, None]:
    """The training attack for an objective that asks for ``objective_attack``."""
    a = cfg.adv
    if objective_attack is None:
        return None
    if objective_attack == "trades_kl":   # eq. (7): model in eval mode while maximising the KL
        return make_attack("trades_kl", eps=a.eps, alpha=a.step, steps=a.steps, model_mode="eval")
    if a.attack == "pgd":
        return make_attack("pgd", eps=a.eps, alpha=a.step, steps=a.steps, model_mode=a.bn_mode)
    if a.attack == "fgsm_rs":
        return make_attack("fgsm_rs", eps=a.eps, alpha=a.fast_step, model_mode=a.bn_mode)
    if a.attack == "n_fgsm":
        return make_attack("n_fgsm", eps=a.eps, alpha=a.fast_step, k=a.noise_k, model_mode=a.bn_mode)
    return FreeReplay(a.eps, a.fast_step)
