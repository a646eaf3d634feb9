"""Binary-Connect (BC) and Binary-Relax (BR) schedules (Yin et al. 2018; paper Alg. 1).

BR keeps the float weights ``w`` and trains through ``u = (lam Q(w) + w) / (lam + 1)``;
``lam`` starts at ``lam0`` and is multiplied by ``rho`` once per epoch, after the epoch.
From the cut-off epoch ``M`` on (0-based epochs ``e >= M``) training is pure BC: ``u = Q(w)``.
BC uses ``u = Q(w)`` from the start. ``none`` trains float weights.

Defaults scale with the schedule length: the paper trains 200 epochs with ``rho = 1.05`` and
``M = 120`` (the second LR drop). For ``E`` epochs we use ``M = round(0.6 E)`` and
``rho = 1.05 ** (120 / M)``, so ``lam`` reaches the paper's value ``1.05 ** 120`` at the
cut-off whatever ``E`` is. (The BinaryRelax authors used rho 1.04, M 150, from a pretrained
float model; the paper starts from random init, as we do.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

PAPER_EPOCHS, PAPER_CUTOFF, PAPER_RHO = 200, 120, 1.05


def default_cutoff(epochs: int) -> int:
    return max(1, round(epochs * PAPER_CUTOFF / PAPER_EPOCHS))


def default_rho(cutoff: int) -> float:
    return PAPER_RHO ** (PAPER_CUTOFF / max(cutoff, 1))


@dataclass(frozen=True)
class RelaxSchedule:
    method: str          # "br" | "bc" | "none"
    lam0: float = 1.0
    rho: float = PAPER_RHO
    cutoff: int = PAPER_CUTOFF

    @classmethod
    def for_epochs(cls, method: str, epochs: int, lam0: float = 1.0, rho: Optional[float] = None,
                   cutoff: Optional[int] = None) -> "RelaxSchedule":
        cutoff = default_cutoff(epochs) if cutoff is None else cutoff
        return cls(method, lam0, default_rho(cutoff) if rho is None else rho, cutoff)

    def lam(self, epoch: int) -> Optional[float]:
        """The relaxation weight for 0-based ``epoch``; None means u = Q(w) exactly."""
        if self.method == "br" and epoch < self.cutoff:
            return self.lam0 * self.rho ** epoch
        return None

    def is_quantized(self, epoch: int) -> bool:
        """True when the weights used in ``epoch`` are exactly Q(w) (a selectable state)."""
        return self.method != "none" and self.lam(epoch) is None

    def phase(self, epoch: int) -> str:
        if self.method == "none":
            return "float"
        return "BR" if self.lam(epoch) is not None else "BC"
