"""HetRec 2011 Last.fm-2K: listening counts, artists with their tags, and the friend graph.

- Interactions: ``user_artists.dat`` (userID, artistID, weight): each user's top artists with a listening count,
  kept as ``weight``. There are no ratings and no timestamps, so the dataset asks for a seeded *random*
  leave-one-out (``Dataset.split = "random"``); every figure on it says so.
- Items: ``artists.dat`` (id, name, url, pictureURL). Their text comes from ``user_taggedartists.dat`` and
  ``tags.dat``: the tags listeners gave each artist. The ``CATEGORY_TAGS`` most used tags (by number of artists
  they were given to) are the category vocabulary, so the category task has labels on Last.fm too; each artist's
  other tags, most given first, are its ``text`` (at most ``TEXT_TAGS``). Categories are kept out of ``text``
  so that hiding a held-out item's categories hides them everywhere.
- Social: ``user_friends.dat`` (userID, friendID), one row per direction of a friendship.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.data.dataset import Dataset
from mtlrec.data.readers import read_table
from mtlrec.data.validate import Table, check_known, check_unique, resolve_duplicates

NAME = "lastfm-2k"
FILES = ("user_artists.dat", "artists.dat", "user_friends.dat", "user_taggedartists.dat", "tags.dat")
CATEGORY_TAGS = 20  # most used tags form the category vocabulary
TEXT_TAGS = 10  # further tags per artist shown in its text
_HINT = "the HetRec files hold each pair once; the file looks edited, so re-download it"


def load_lastfm(path: str | Path, name: str = NAME) -> Dataset:
    root = Path(path)

    def tsv(file: str, required: list[str], ints: list[str] = (), encoding: str = "utf-8", **kw) -> Table:
        return read_table(root / file, required=required, ints=ints, sep="\t", encoding=encoding, quoted=False,
                          dataset=name, **kw)  # fmt: skip

    listens = tsv(
        "user_artists.dat", ["user_id", "item_id", "weight"], ["weight"],
        columns={"user_id": "userID", "item_id": "artistID"},
    )  # fmt: skip
    resolve_duplicates(listens, "error", hint=_HINT)
    negative = listens.frame["weight"].to_numpy() < 0
    if negative.any():
        raise listens.error("negative listening count", row=int(np.flatnonzero(negative)[0]), field="weight",
                            hint="counts are 0 or more; re-download the dataset")  # fmt: skip
    artists = tsv("artists.dat", ["item_id", "title"], columns={"item_id": "id", "title": "name"})
    check_unique(artists, "item_id")
    check_known(listens, "item_id", artists, "artists")
    friends = tsv("user_friends.dat", ["user_id", "friend_id"], columns={"user_id": "userID", "friend_id": "friendID"})
    tagged = tsv(
        "user_taggedartists.dat", ["user_id", "item_id", "tag_id"],
        columns={"user_id": "userID", "item_id": "artistID", "tag_id": "tagID"},
    )  # fmt: skip
    tags = tsv("tags.dat", ["tag_id", "tag"], encoding="latin-1", columns={"tag_id": "tagID", "tag": "tagValue"})
    check_unique(tags, "tag_id")
    check_known(tagged, "tag_id", tags, "tags")

    users = pd.DataFrame({"user_id": pd.unique(listens.frame["user_id"])})
    for column in ("user_id", "friend_id"):
        unknown = ~friends.frame[column].isin(users["user_id"]).to_numpy()
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            user = friends.frame[column].iloc[row]
            raise friends.error(f"user '{user}' has no listening data in {listens.path.name}", row=row,
                                field=column, hint="delete the line or re-download the dataset")  # fmt: skip
    social = friends.frame[["user_id", "friend_id"]]
    if (social["user_id"] == social["friend_id"]).any():
        row = int(np.flatnonzero((social["user_id"] == social["friend_id"]).to_numpy())[0])
        raise friends.error("a user is their own friend", row=row, field="friend_id", hint="delete the line")

    categories, vocab, text = _artist_tags(artists.frame["item_id"], tagged.frame, tags.frame)
    items = pd.DataFrame(
        {"item_id": artists.frame["item_id"].to_numpy(), "title": artists.frame["title"].str.strip().to_numpy(),
         "text": text, "categories": categories, "year": np.nan}
    )  # fmt: skip
    interactions = listens.frame.assign(rating=np.nan, timestamp=np.int64(0))
    return Dataset(
        name=name,
        interactions=interactions[["user_id", "item_id", "rating", "timestamp", "weight"]],
        items=items,
        users=users,
        social=social.reset_index(drop=True),
        categories=vocab,
        has_timestamps=False,
        has_ratings=False,
        split="random",
        sources={"interactions": str(listens.path), "items": str(artists.path), "social": str(friends.path)},
        first_line={"interactions": listens.first_line, "items": artists.first_line, "social": friends.first_line},
    )


def _artist_tags(
    artist_ids: pd.Series, tagged: pd.DataFrame, tags: pd.DataFrame
) -> tuple[list[list[str]], list[str], list[str]]:
    """Per artist: its category tags, the vocabulary, and the text of its other tags (most given first)."""
    names = tags.set_index("tag_id")["tag"].str.strip().str.lower()
    counts = (
        tagged.assign(tag=names.reindex(tagged["tag_id"]).to_numpy())
        .groupby(["item_id", "tag"], sort=False)
        .size()
        .rename("n")
        .reset_index()
    )
    counts = counts[counts["tag"].str.len() > 0]
    artists_per_tag = counts.groupby("tag")["item_id"].nunique()
    vocab = sorted(artists_per_tag.sort_values(ascending=False, kind="stable").index[:CATEGORY_TAGS].tolist())
    counts = counts.sort_values(["item_id", "n", "tag"], ascending=[True, False, True], kind="stable")
    in_vocab = counts["tag"].isin(vocab)
    category = counts[in_vocab].groupby("item_id")["tag"].agg(list)
    other = counts[~in_vocab].groupby("item_id")["tag"].agg(lambda t: list(t)[:TEXT_TAGS])
    cats = [sorted(category.get(a, [])) for a in artist_ids]
    text = [("Tags: " + ", ".join(other[a]) + ".") if a in other.index else "" for a in artist_ids]
    return cats, vocab, text
