"""robustq: adversarially robust, low-bit, pruned image classifiers (Binary-Relax EnResNets).

The pipeline, one module per arrow: ``data`` -> ``models`` -> ``quant`` -> ``engine``
(``losses``, ``attacks``) -> ``evaluate`` (``sparsity``). The ``robustq`` command strings
them together from a config (``cli.py``).
"""
__version__ = "0.1.0"
