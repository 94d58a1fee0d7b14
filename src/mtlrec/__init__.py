"""mtlrec: multi-task collaborative learning for LLM-based recommendation."""

__version__ = "0.1.0"
