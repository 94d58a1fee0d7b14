"""Loss-balancing strategies, one per file, registered by config name."""

from mtlrec.weighting import dwa, fixed, gradnorm, pcgrad, uncertainty  # noqa: F401  (registration)
from mtlrec.weighting.base import WEIGHTINGS, WeightingStrategy

__all__ = ["WEIGHTINGS", "WeightingStrategy"]
