"""User-facing errors: each carries one sentence saying what is wrong and how to fix it.

The CLI prints ``robustq: error: <sentence>`` and exits with status 2 for these; anything
else is a bug and keeps its traceback.
"""


class RobustqError(Exception):
    """A problem with the user's input (config, data, checkpoint), not a bug."""


class ConfigError(RobustqError):
    pass


class DataError(RobustqError):
    pass


class CheckpointError(RobustqError):
    pass


class DependencyError(RobustqError):
    """An optional extra (``pip install robustq[...]``) that a feature needs is missing."""


# optional package -> the extra that installs it
EXTRAS = {"pyautoattack": "autoattack", "matplotlib": "plot", "onnxruntime": "onnx", "onnx": "onnx"}


def require(package: str, what: str) -> None:
    """Raise ``DependencyError`` (one sentence, how to install) unless ``package`` imports;
    checked before any work starts, without importing it."""
    import importlib.util

    from .extras import EXTRAS as BY_EXTRA, require as require_extra
    if EXTRAS.get(package) in BY_EXTRA:   # one check for every optional extra
        return require_extra(EXTRAS[package], what)
    if importlib.util.find_spec(package) is None:
        extra = EXTRAS.get(package)
        how = f'pip install "robustq[{extra}]"' if extra else f"pip install {package}"
        raise DependencyError(f"{what} needs the optional package {package}; install it with: {how}")
