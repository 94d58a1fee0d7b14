"""Loading a run and recommending from it."""

from mtlrec.recommend.artifact import Artifact, load_artifact, save_artifact
from mtlrec.recommend.recommender import Query, Recommender, UnknownUserError

__all__ = ["Artifact", "Query", "Recommender", "UnknownUserError", "load_artifact", "save_artifact"]
