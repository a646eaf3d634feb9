"""Robustness you can trust: evaluation suites, EOT for randomized models, gradient-masking
checks and robustness curves (see docs/robustness.md)."""
from .checks import masking_checks, masking_suspected
from .curve import DEFAULT_EPS, plot_curve, robustness_curve
from .run import SuiteOptions, evaluate_suite, get_suite
from .sampling import SingleSampleError, draw_correct, is_randomized, noise_disabled, sampling_plan
from .suites import SUITES, Outcome, build_attacks, run_attacks

__all__ = ["DEFAULT_EPS", "SUITES", "Outcome", "SingleSampleError", "SuiteOptions", "build_attacks",
           "draw_correct", "evaluate_suite", "get_suite", "is_randomized", "masking_checks",
           "masking_suspected", "noise_disabled", "plot_curve", "robustness_curve", "run_attacks",
           "sampling_plan"]
