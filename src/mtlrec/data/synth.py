"""A synthetic recommendation world for scaling runs (``mtlrec data synth``): the shape of real data at any size.

- Items belong to 1-3 of ``categories`` categories; each category has its own vocabulary, and an item's text is
  words drawn from its categories' vocabularies (so a language model can read the category off the text).
- Latent tastes: category centroids in ``dim`` dimensions; an item's vector is its categories' mean plus noise; a
  user's taste is a mix of a few categories' centroids plus noise.
- Popularity follows a power law (Zipf, exponent ``zipf``); activity too (a few heavy users, many light ones).
- A user's items are drawn among popularity-drawn candidates by taste (Gumbel top-k over affinity + log
  popularity), without repeats; ratings 1-5 follow affinity; timestamps increase per user.
- A social graph with homophily: each user befriends users of similar taste (listed both ways).

Generation is vectorised (chunked where arrays would be [candidates, dim]). Same seed, same world.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtlrec.errors import ConfigError

CANDIDATES = 4  # popularity-drawn candidates per interaction, among which taste picks
CHUNK = 1 << 20  # candidates whose affinity is computed at once
USER_CHUNK = 4096
WORDS_PER_CATEGORY = 40
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "da", "fe", "gu", "hi", "jo", "pe", "qu"]


@dataclass(frozen=True)
class SynthWorld:
    interactions: pd.DataFrame  # user_id, item_id, rating, timestamp
    items: pd.DataFrame  # item_id, title, text, categories ('|'-joined)
    social: pd.DataFrame  # user_id, friend_id (both directions)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Parquet files that ``mtlrec train --dataset generic`` reads (see the README's data formats)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / f"{name}.parquet" for name in ("interactions", "items", "social")}
        for name, path in paths.items():
            getattr(self, name).to_parquet(path, index=False)
        return paths


def _words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct made-up words."""
    words: set[str] = set()
    while len(words) < n:
        parts = rng.choice(len(SYLLABLES), size=rng.integers(2, 4))
        words.add("".join(SYLLABLES[p] for p in parts))
    return sorted(words)


def _power_law(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Weights proportional to rank^-exponent, in random order, summing to 1."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return rng.permutation(weights / weights.sum())


def synth_world(
    users: int,
    items: int,
    interactions: int,
    *,
    categories: int = 20,
    dim: int = 16,
    friends: int = 10,
    zipf: float = 0.9,
    seed: int = 0,
) -> SynthWorld:
    """A world of ``users`` users, ``items`` items and about ``interactions`` interactions (a little fewer when heavy
    users draw the same item among their candidates). ``friends``: friendships per user (0: no social graph)."""
    if users < 2 or items < 2:
        raise ConfigError(f"synth: need at least 2 users and 2 items, got {users} users and {items} items")
    if interactions < users:
        raise ConfigError(f"synth: {interactions} interactions cannot give each of {users} users one")
    if not 1 <= categories <= 1000 or dim < 1 or friends < 0:
        raise ConfigError("synth: categories must be 1-1000, dim at least 1, friends 0 or more")
    rng = np.random.default_rng(seed)

    # items: categories, vector, popularity, text
    centroids = rng.normal(size=(categories, dim)).astype(np.float32)
    n_cats = rng.integers(1, 4, size=items).clip(max=categories)
    cat_rank = _power_law(rng, categories, 0.5)  # some categories are bigger than others
    item_cats = [rng.choice(categories, size=k, replace=False, p=cat_rank) for k in n_cats]
    item_vec = np.stack([centroids[c].mean(0) for c in item_cats]) + 0.5 * rng.normal(size=(items, dim))
    item_vec = item_vec.astype(np.float32)
    log_pop = np.log(_power_law(rng, items, zipf))
    names = [f"category-{c:03d}" for c in range(categories)]
    vocab = _words(rng, categories * WORDS_PER_CATEGORY)
    cat_words = np.asarray(vocab, dtype=object).reshape(categories, WORDS_PER_CATEGORY)
    titles = [f"{cat_words[c[0], rng.integers(WORDS_PER_CATEGORY)].capitalize()} {i}" for i, c in enumerate(item_cats)]
    texts = [" ".join(rng.choice(cat_words[c].ravel(), size=12)) for c in item_cats]
    item_ids = np.asarray([f"i{i}" for i in range(items)], dtype=object)
    items_frame = pd.DataFrame({"item_id": item_ids, "title": titles, "text": texts,
                                "categories": ["|".join(names[k] for k in c) for c in item_cats]})  # fmt: skip

    # users: taste, activity
    mix = rng.dirichlet(np.full(categories, 0.3), size=users).astype(np.float32)
    taste = mix @ centroids + 0.3 * rng.normal(size=(users, dim)).astype(np.float32)
    activity = _power_law(rng, users, 0.7)
    counts = 1 + rng.multinomial(interactions - users, activity)
    counts = np.minimum(counts, items // 2 if items >= 4 else items)

    # interactions: each user's candidates are drawn by popularity; taste picks among them (Gumbel top-k)
    per_user = counts * CANDIDATES
    cand_user = np.repeat(np.arange(users, dtype=np.int32), per_user)
    pop_cdf = np.cumsum(np.exp(log_pop))
    cand_item = np.searchsorted(pop_cdf, rng.random(len(cand_user)) * pop_cdf[-1]).clip(max=items - 1)
    cand_item = cand_item.astype(np.int32)
    affinity = np.empty(len(cand_user), dtype=np.float32)
    for lo in range(0, len(cand_user), CHUNK):  # [CHUNK, dim] at a time
        hi = lo + CHUNK
        affinity[lo:hi] = np.einsum("cd,cd->c", taste[cand_user[lo:hi]], item_vec[cand_item[lo:hi]])
    score = 2.0 * affinity + rng.gumbel(size=len(affinity)).astype(np.float32)
    order = np.lexsort((-score, cand_user))  # by user, best score first
    del score
    cand_user, cand_item, affinity = cand_user[order], cand_item[order], affinity[order]
    _, first = np.unique(cand_user.astype(np.int64) * items + cand_item, return_index=True)  # no repeats
    keep = np.zeros(len(cand_user), dtype=bool)
    keep[first] = True
    cand_user, cand_item, affinity = cand_user[keep], cand_item[keep], affinity[keep]
    rank = np.arange(len(cand_user)) - np.searchsorted(cand_user, np.arange(users))[cand_user]
    chosen = rank < counts[cand_user]  # each user's best ``counts`` distinct candidates
    user_idx, item_idx, aff = cand_user[chosen].astype(np.int64), cand_item[chosen].astype(np.int64), affinity[chosen]
    rating = np.clip(np.rint(3.0 + 1.2 * (aff - aff.mean()) / (aff.std() + 1e-9) + 0.7 * rng.normal(size=len(aff))),
                     1, 5).astype(np.float32)  # fmt: skip
    start = rng.integers(1_000_000_000, 1_300_000_000, size=users)
    gaps = rng.exponential(3600.0, size=len(user_idx)).astype(np.int64) + 1
    order = np.lexsort((rng.random(len(user_idx)), user_idx))  # a random order of each user's items: their time order
    user_idx, item_idx, rating, gaps = user_idx[order], item_idx[order], rating[order], gaps[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(user_idx, minlength=users))])
    within = np.cumsum(gaps) - np.repeat(np.concatenate([[0], np.cumsum(gaps)])[offsets[:-1]], np.diff(offsets))
    user_ids = np.asarray([f"u{u}" for u in range(users)], dtype=object)
    inter = pd.DataFrame({"user_id": user_ids[user_idx], "item_id": item_ids[item_idx], "rating": rating,
                          "timestamp": start[user_idx] + within})  # fmt: skip

    # social graph: each user picks friends among random candidates, the most similar in taste (homophily)
    social = pd.DataFrame({"user_id": pd.Series(dtype=object), "friend_id": pd.Series(dtype=object)})
    if friends > 0 and users > 1:
        unit = taste / np.linalg.norm(taste, axis=1, keepdims=True)
        k = min(friends, users - 1)
        src, dst = [], []
        for lo in range(0, users, USER_CHUNK):
            hi = min(users, lo + USER_CHUNK)
            cand = rng.integers(0, users, size=(hi - lo, 8 * k))
            sim = np.einsum("ud,ucd->uc", unit[lo:hi], unit[cand]) + 0.3 * rng.gumbel(size=cand.shape)
            sim[cand == np.arange(lo, hi)[:, None]] = -np.inf  # never oneself
            best = np.take_along_axis(cand, np.argsort(-sim, axis=1)[:, :k], 1)
            src.append(np.repeat(np.arange(lo, hi), k))
            dst.append(best.ravel())
        a, b = np.concatenate(src), np.concatenate(dst)
        pairs = np.unique(np.concatenate([np.stack([a, b], 1), np.stack([b, a], 1)]), axis=0)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        social = pd.DataFrame({"user_id": user_ids[pairs[:, 0]], "friend_id": user_ids[pairs[:, 1]]})
    return SynthWorld(inter, items_frame, social)
