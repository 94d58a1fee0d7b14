"""Input encoders, shared architectures (one registry) and the multi-task model."""

from mtlrec.models import mmoe, ple  # noqa: F401  (registers the architectures)
from mtlrec.models.architectures import ARCHITECTURES
from mtlrec.models.model import MultiTaskModel

__all__ = ["ARCHITECTURES", "MultiTaskModel"]
