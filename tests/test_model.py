"""The multi-task network: shapes, one score path, causal history, masked partial labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtlrec.config import ModelConfig
from mtlrec.models import ARCHITECTURES, MultiTaskModel
from mtlrec.tasks import TASKS, build_tasks
from mtlrec.train.data import PairRows


def model(arch: str = "shared-bottom", n_users: int = 5, n_items: int = 7) -> MultiTaskModel:
    torch.manual_seed(0)
    tasks = build_tasks({"interest": {}, "rating": {}, "genre": {}})
    text = torch.randn(n_items, 12)
    m = MultiTaskModel(ModelConfig(arch=arch, dim=8, hidden=(16, 8), dropout=0.0, history_len=4), tasks, n_users,
                       text, n_categories=3)  # fmt: skip
    return m.eval()


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_architecture_gives_logits_per_task(arch: str) -> None:
    m = model(arch)
    users, items = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    hist, mask = torch.tensor([[0, 0, 1, 2]] * 3), torch.tensor([[False, True, True, True]] * 3)
    out = m(users, items, hist, mask)
    assert out["interest"].shape == (3,) and out["rating"].shape == (3,) and out["genre"].shape == (3, 3)
    assert set(m.shared_parameters()) <= set(m.parameters())


def test_catalogue_scoring_equals_row_scoring() -> None:
    """score_items (broadcast over the catalogue) must give the same numbers as scoring (user, item) rows."""
    m = model()
    users = torch.tensor([0, 3])
    hist, mask = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 6]]), torch.tensor([[True] * 4, [False, False, False, True]])
    full = m.score_items(users, hist, mask, ["interest", "rating"])
    for row in range(2):
        items = torch.arange(7)
        rows = m(users[row].repeat(7), items, hist[row].repeat(7, 1), mask[row].repeat(7, 1))
        assert torch.allclose(full["interest"][row], rows["interest"], atol=1e-5)
        assert torch.allclose(full["rating"][row], rows["rating"], atol=1e-5)


def test_user_representation_ignores_padding_and_depends_on_history() -> None:
    m = model()
    mask = torch.tensor([[False, False, True, True]])
    a = m.user_repr(torch.tensor([1]), torch.tensor([[5, 6, 1, 2]]), mask)
    b = m.user_repr(torch.tensor([1]), torch.tensor([[0, 3, 1, 2]]), mask)  # only padded slots differ
    c = m.user_repr(torch.tensor([1]), torch.tensor([[0, 3, 1, 4]]), mask)
    assert torch.allclose(a, b)
    assert not torch.allclose(a, c)


def test_rows_without_a_label_are_masked_not_dropped() -> None:
    """A sampled negative has no rating: the rating loss ignores it; a batch with no ratings gives 0, not NaN."""
    task = TASKS.get("rating")("rating", TASKS.get("rating").options_cls())
    task.ratings = np.array([4.0, np.nan, 2.0], dtype=np.float32)
    rows = PairRows(users=np.zeros(4, int), items=np.zeros(4, int), history_end=np.zeros(4, int),
                    position=np.array([0, 1, 2, -1]))  # fmt: skip
    target, mask = task.labels(rows)
    assert mask.tolist() == [True, False, True, False]
    logits = torch.tensor([3.0, 100.0, 2.0, -50.0], requires_grad=True)
    loss = task.loss(logits, target, mask)
    assert loss.item() == pytest.approx(((3 - 4) ** 2 + 0) / 2)
    loss.backward()
    assert logits.grad is not None and logits.grad[1] == 0 and logits.grad[3] == 0
    none = task.loss(logits, target, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0.0
