"""User towers: the registry, the pool tower's unchanged numbers, and the transformer tower's causality,
padding, empty histories and catalogue scoring."""

from __future__ import annotations

import pytest
import torch

from mtlrec.config import ModelConfig
from mtlrec.errors import ConfigError
from mtlrec.models import MultiTaskModel
from mtlrec.models.towers import USER_TOWERS, TransformerTower
from mtlrec.tasks import build_tasks

N_USERS, N_ITEMS = 5, 9


def model(tower: str = "transformer", tasks: tuple[str, ...] = ("interest", "rating", "next_item"),
          **config: object) -> MultiTaskModel:  # fmt: skip
    torch.manual_seed(0)
    cfg = ModelConfig(**{"dim": 8, "hidden": (16, 8), "dropout": 0.0, "history_len": 5, "user_tower": tower,
                         **config})  # type: ignore[arg-type]  # fmt: skip
    m = MultiTaskModel(cfg, build_tasks({t: {} for t in tasks}), N_USERS, torch.randn(N_ITEMS, 12), n_categories=3)
    return m.eval()


def test_unknown_tower_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="unknown user tower 'gru'; valid names: pool, transformer"):
        model("gru")
    with pytest.raises(ConfigError, match="tower_heads"):
        model(tower_heads=3)


def test_pool_tower_numbers_are_unchanged() -> None:
    """Saved before the towers existed (same seed, same construction order), and the old formula itself."""
    torch.manual_seed(0)
    text = torch.randn(7, 12)
    m = MultiTaskModel(ModelConfig(dim=4, hidden=(8,), dropout=0.0, history_len=4), build_tasks({"interest": {}}), 3,
                       text, n_categories=3).eval()  # fmt: skip
    with torch.no_grad():
        m.user_encoder.recency.copy_(torch.tensor([0.5, -0.25, 0.1, 0.0]))
    users = torch.tensor([0, 1, 2])
    hist = torch.tensor([[1, 2, 3, 4], [0, 0, 5, 6], [0, 0, 0, 0]])
    mask = torch.tensor([[True] * 4, [False, False, True, True], [False] * 4])
    got = m.user_repr(users, hist, mask)
    saved = torch.tensor([[-0.575761, -0.077170, -0.589876, 0.315057], [-0.022825, -0.194634, 0.089986, 0.499961],
                          [0.011878, 0.012247, -0.008521, -0.011941]])  # fmt: skip
    assert torch.allclose(got, saved, atol=1e-5)
    enc = m.user_encoder
    weights = torch.softmax(enc.recency.flip(0).masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)  # [B, L]
    old = enc.ids(users) + (weights[..., None] * m.item_encoder(hist)).sum(1)
    assert torch.allclose(got, old, atol=1e-6)


def tower() -> TransformerTower:
    t = model().user_encoder
    assert isinstance(t, TransformerTower)
    return t


def test_transformer_is_causal_prefix_equals_truncated_history() -> None:
    """The encoder's output at slot t equals its output at the last slot of the history cut after t (left-padded
    back to the same length, or simply shorter): later slots never leak into earlier ones."""
    t = tower()
    torch.manual_seed(1)
    x = torch.randn(3, 5, 8)  # slot inputs
    mask = torch.tensor([[True] * 5, [False, True, True, True, True], [False, False, False, True, True]])
    full = t.steps(x, mask)  # [3, 5, 8]
    for end in range(5):
        cut = torch.cat([torch.randn(3, 4 - end, 8), x[:, : end + 1]], 1)  # later slots removed, left-padded
        cut_mask = torch.cat([torch.zeros(3, 4 - end, dtype=torch.bool), mask[:, : end + 1]], 1)
        real = mask[:, end]
        assert torch.allclose(t.steps(cut, cut_mask)[real, -1], full[real, end], atol=1e-5)
        assert torch.allclose(t.steps(x[:, : end + 1], mask[:, : end + 1])[real, -1], full[real, end], atol=1e-5)


def test_transformer_output_is_last_step_plus_user_id() -> None:
    """The fast path (last slot only in the last block) gives the full encoder's last slot."""
    m = model()
    t = tower()
    users, hist = torch.tensor([0, 4]), torch.tensor([[1, 2, 3, 4, 5], [0, 0, 6, 7, 8]])
    mask = torch.tensor([[True] * 5, [False, False, True, True, True]])
    full = t.steps(t.inputs(hist, m.item_encoder), mask)[:, -1] + t.ids(users)
    assert torch.allclose(m.user_repr(users, hist, mask), full, atol=1e-5)


def test_transformer_depends_on_older_items_and_ignores_padding() -> None:
    m = model()
    users, mask = torch.tensor([1]), torch.tensor([[False, False, True, True, True]])
    a = m.user_repr(users, torch.tensor([[5, 6, 1, 2, 3]]), mask)
    b = m.user_repr(users, torch.tensor([[0, 8, 1, 2, 3]]), mask)  # only padded slots differ
    c = m.user_repr(users, torch.tensor([[5, 6, 4, 2, 3]]), mask)  # the oldest real item differs
    d = m.user_repr(users, torch.tensor([[1, 2, 3]]), mask[:, 2:])  # no padding columns at all
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, d, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-4)


def test_transformer_empty_history_is_finite() -> None:
    m = model().train()
    t = tower()
    users = torch.tensor([0, 1, 2])
    hist = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 2], [0, 0, 0, 0, 0]])
    mask = torch.tensor([[False] * 5, [False, False, False, True, True], [False] * 5])
    user = m.user_repr(users, hist, mask)
    assert torch.isfinite(user).all()
    assert torch.allclose(user[[0, 2]], t.ids(users[[0, 2]]) + t.empty)
    all_empty = m.user_repr(users[[0, 2]], hist[[0, 2]], mask[[0, 2]])
    assert torch.isfinite(all_empty).all()
    out = m.pair_logits(user, torch.tensor([3, 4, 5]))
    sum(v.sum() for v in out.values()).backward()  # type: ignore[union-attr]
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_transformer_catalogue_scoring_equals_row_scoring() -> None:
    m = model()
    users = torch.tensor([0, 3])
    hist = torch.tensor([[1, 2, 3, 4, 5], [0, 0, 0, 0, 6]])
    mask = torch.tensor([[True] * 5, [False, False, False, False, True]])
    tasks = ["interest", "rating", "next_item"]
    full = m.score_items(users, hist, mask, tasks)
    for row in range(2):
        items = torch.arange(N_ITEMS)
        rows = m(users[row].repeat(N_ITEMS), items, hist[row].repeat(N_ITEMS, 1), mask[row].repeat(N_ITEMS, 1))
        for task in tasks:
            assert full[task].shape == (2, N_ITEMS)
            assert torch.allclose(full[task][row], rows[task], atol=1e-5)


def test_registry_names() -> None:
    assert USER_TOWERS.names() == ["pool", "transformer"]
