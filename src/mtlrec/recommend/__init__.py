"""Loading a run and recommending from it."""

from mtlrec.recommend.artifact import Artifact, load_artifact, save_artifact
from mtlrec.recommend.recommender import Recommender, UnknownUserError

__all__ = ["Artifact", "Recommender", "UnknownUserError", "load_artifact", "save_artifact"]
