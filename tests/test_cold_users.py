"""New users: recommendations from a few liked items or from words, through the trained user tower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CATEGORIES
from mtlrec.cli import main
from mtlrec.errors import MtlrecError
from mtlrec.recommend import Recommender
from mtlrec.train.data import histories


def category_of(title: str) -> str:
    return title.split()[0]  # the world's titles are "<Category> movie number <i>"


def test_cold_repr_swaps_only_the_id_part(tiny_run: Path) -> None:
    rec = Recommender.load(tiny_run)
    model, split = rec.model, rec.split
    users = np.arange(5)
    hist, mask = histories(split, users, split.offsets[1:][users], model.history_len)
    with torch.no_grad():
        known = model.user_repr(torch.from_numpy(users), hist, mask)
        cold = model.cold_user_repr(hist, mask)
        ids = model.user_encoder.ids.weight
        assert torch.allclose(cold, known - ids[:5] + ids.mean(0), atol=1e-6)


@pytest.mark.parametrize("category", CATEGORIES[:2])
def test_liked_items_steer_a_new_user(tiny_run: Path, category: str) -> None:
    rec = Recommender.load(tiny_run)
    liked = [i for i, t in zip(rec.item_ids, rec._titles, strict=True) if category_of(t) == category][:3]
    top = rec.recommend_new_user(liked=liked, k=10)
    assert len(top) == 10 and not {r["item_id"] for r in top} & set(liked)  # liked items are not recommended back
    assert sum(category_of(r["title"]) == category for r in top) >= 7
    assert all(set(r["scores"]) == set(rec.tasks) for r in top)


def test_text_steers_a_new_user(tiny_run: Path) -> None:
    rec = Recommender.load(tiny_run)
    for category in CATEGORIES:
        top = rec.recommend_new_user(text=f"{category} movie", k=10)
        assert sum(category_of(r["title"]) == category for r in top) >= 7, category


def test_new_user_errors_and_cli(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recommender.load(tiny_run)
    with pytest.raises(MtlrecError, match="unknown item 'nope'"):
        rec.recommend_new_user(liked=["nope"])
    with pytest.raises(MtlrecError, match="needs liked items or a text"):
        rec.recommend_new_user(liked=[], text="  ")
    main(["recommend", str(tiny_run), "--liked", "i0,i4", "--json", "-k", "5"])
    out = capsys.readouterr().out
    assert '"item_id"' in out and '"i0"' not in out
    with pytest.raises(SystemExit) as info:
        main(["recommend", str(tiny_run), "--user", "u1", "--text", "comedy"])
    assert info.value.code == 2 and "not both" in capsys.readouterr().err
