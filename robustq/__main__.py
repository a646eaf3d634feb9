"""``python -m robustq``: the same command as ``robustq`` (and what ``torchrun -m robustq`` runs)."""
import sys

from .cli import main

sys.exit(main())
