"""Loss-balancing strategies, one per file, registered by config name."""

from mtlrec.weighting import fixed  # noqa: F401  (registration)
from mtlrec.weighting.base import WEIGHTINGS, WeightingStrategy

__all__ = ["WEIGHTINGS", "WeightingStrategy"]
