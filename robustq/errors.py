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
