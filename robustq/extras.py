"""The optional extras (``pip install "robustq[NAME]"``) and a check that runs before the
work that needs one, so a missing package costs a second, not a finished computation."""
from __future__ import annotations

import importlib.util

from .errors import DependencyError

EXTRAS = {                      # extra -> the modules it provides
    "plot": ("matplotlib",),
    "autoattack": ("pyautoattack",),
    "onnx": ("onnx", "onnxruntime"),
    "images": ("PIL",),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Raise one sentence naming the install command if ``extra`` is not installed."""
    gone = missing(extra)
    if gone:
        raise DependencyError(f"{what} needs {' and '.join(gone)}, which "
                              f"{'is' if len(gone) == 1 else 'are'} not installed; install "
                              f"it with: pip install \"robustq[{extra}]\"")
