"""Weight quantization: projections, Binary-Connect / Binary-Relax, layer swapping."""
from .layers import (POLICIES, QuantConv2d, QuantLinear, bake, bit_map, quant_layers,
                     quantize_model, set_relaxation)
from .projections import PROJECTIONS, Projection, canonical_name, get_projection
from .relax import RelaxSchedule

__all__ = ["POLICIES", "PROJECTIONS", "Projection", "QuantConv2d", "QuantLinear", "RelaxSchedule",
           "bake", "bit_map", "canonical_name", "get_projection", "quant_layers",
           "quantize_model", "set_relaxation"]
