"""mtlrec: multi-task collaborative learning for LLM-based recommendation."""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mtlrec.recommend import Recommender


def __getattr__(name: str) -> Any:
    # Lazy, so `import mtlrec` (and the CLI's --help) stays fast: torch loads only when it is needed.
    if name == "Recommender":
        from mtlrec.recommend import Recommender

        return Recommender
    raise AttributeError(f"module 'mtlrec' has no attribute {name!r}")


__all__ = ["Recommender", "__version__"]
