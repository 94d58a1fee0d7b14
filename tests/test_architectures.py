"""Shared architectures: shapes, catalogue broadcasting, parameter groups, which task reaches which parameter,
and that each one trains. Everything here is tiny (one CPU thread, a few milliseconds per test)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlrec.config import ModelConfig
from mtlrec.errors import ConfigError
from mtlrec.models import ARCHITECTURES, MultiTaskModel
from mtlrec.models.mmoe import MMoE
from mtlrec.models.ple import PLE
from mtlrec.tasks import build_tasks

TASKS = ["interest", "rating", "genre"]
CONFIG = ModelConfig(dim=8, hidden=(16, 8), dropout=0.0, history_len=4, experts=3, task_experts=2, levels=2)


def body(arch: str, **changes: object) -> nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(**{**CONFIG.__dict__, "arch": arch, **changes})  # type: ignore[arg-type]
    return ARCHITECTURES.get(arch)(config, TASKS).eval()


def model(arch: str, n_users: int = 5, n_items: int = 7) -> MultiTaskModel:
    torch.manual_seed(0)
    text = torch.randn(n_items, 12)
    config = ModelConfig(**{**CONFIG.__dict__, "arch": arch})  # type: ignore[arg-type]
    return MultiTaskModel(config, build_tasks(dict.fromkeys(TASKS, {})), n_users, text, n_categories=3).eval()


def grads(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


def untouched(loss: torch.Tensor, module: nn.Module) -> bool:
    return all(g is None or not g.any() for g in grads(loss, list(module.parameters())))


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
@pytest.mark.parametrize("hidden", [(16, 8), (8,)])
def test_one_feature_tensor_per_task_for_rows_and_catalogue(arch: str, hidden: tuple[int, ...]) -> None:
    b = body(arch, hidden=hidden)
    rows = b(torch.randn(6, 8), torch.randn(6, 8))
    grid = b(torch.randn(2, 1, 8), torch.randn(1, 5, 8))
    assert set(rows) == set(grid) == set(TASKS)
    assert all(x.shape == (6, b.out_dim) for x in rows.values()) and b.out_dim == hidden[-1]
    assert all(x.shape == (2, 5, b.out_dim) for x in grid.values())


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_catalogue_scoring_equals_row_scoring(arch: str) -> None:
    """score_items (broadcast over the catalogue) must give the same numbers as scoring (user, item) rows."""
    m = model(arch)
    users = torch.tensor([0, 3])
    hist, mask = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 6]]), torch.tensor([[True] * 4, [False, False, False, True]])
    full = m.score_items(users, hist, mask, ["interest", "rating"])
    for row in range(2):
        rows = m(users[row].repeat(7), torch.arange(7), hist[row].repeat(7, 1), mask[row].repeat(7, 1))
        assert torch.allclose(full["interest"][row], rows["interest"], atol=1e-5)
        assert torch.allclose(full["rating"][row], rows["rating"], atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_parameter_groups_nest(arch: str) -> None:
    b = body(arch)
    every, shared, last = set(b.parameters()), set(b.shared_parameters()), set(b.last_shared_parameters())
    assert last and last <= shared <= every
    m = model(arch)
    assert set(m.last_shared_parameters()) <= set(m.shared_parameters()) <= set(m.parameters())


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_task_loss_reaches_every_shared_parameter(arch: str) -> None:
    b = body(arch)
    out = b(torch.randn(6, 8), torch.randn(6, 8))
    for task in TASKS:
        assert all(g is not None and g.any() for g in grads(out[task].sum(), b.shared_parameters())), task


def test_mmoe_gates_are_task_specific_and_sum_to_one() -> None:
    torch.manual_seed(0)
    b = MMoE(ModelConfig(dim=4, hidden=(8,), dropout=0.0, experts=2), ["a", "b"])
    for gate in b.gates.values():  # both tasks start from the same uniform gate
        for layer in gate.children():
            nn.init.zeros_(layer.weight)
    user, item = torch.randn(64, 4), torch.randn(64, 4)
    targets = {"a": (user * item).sum(-1), "b": -(user * item).sum(-1).abs()}  # different functions of the pair
    heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in targets})
    out = b(user, item)
    losses = {t: ((heads[t](out[t])[:, 0] - y) ** 2).mean() for t, y in targets.items()}
    assert untouched(losses["b"], b.gates["a"]) and untouched(losses["a"], b.gates["b"])
    assert not untouched(losses["a"], b.gates["a"])
    opt = torch.optim.AdamW([*b.parameters(), *heads.parameters()], lr=0.05)
    for _ in range(30):
        out = b(user, item)
        loss = sum(((heads[t](out[t])[:, 0] - y) ** 2).mean() for t, y in targets.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = b.gate_weights(user, item)
    assert all(torch.allclose(w.sum(-1), torch.ones(64)) and (w >= 0).all() for w in weights.values())
    assert (weights["a"] - weights["b"]).abs().mean() > 0.05


def test_ple_task_experts_get_no_gradient_from_other_tasks() -> None:
    b = body("ple", levels=2)
    assert isinstance(b, PLE) and len(b.levels) == 2 and b.levels[0].shared_gate is not None
    out = b(torch.randn(6, 8), torch.randn(6, 8))
    first, last = b.levels
    for task, other in (("interest", "rating"), ("rating", "genre")):
        loss = out[other].sum()
        assert (
            untouched(loss, last.own[task])
            and untouched(loss, last.gates[task])
            and untouched(loss, first.gates[task])
        )
        assert not untouched(out[task].sum(), last.own[task])
        # Below the last level, the shared gate mixes every expert, so other tasks reach them only through it.
        assert not untouched(loss, first.own[task])
    cgc = body("ple", levels=1)
    out = cgc(torch.randn(6, 8), torch.randn(6, 8))
    assert untouched(out["rating"].sum(), cgc.levels[0].own["interest"])


def test_mixture_sizes_are_checked() -> None:
    with pytest.raises(ConfigError, match="model.experts"):
        body("mmoe", experts=0)
    with pytest.raises(ConfigError, match="model.levels"):
        body("ple", levels=0)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_a_few_steps_lower_the_loss(arch: str) -> None:
    m = model(arch, n_users=8, n_items=10).train()
    tasks = build_tasks(dict.fromkeys(TASKS, {}))
    g = torch.Generator().manual_seed(1)
    users, items = torch.randint(0, 8, (64,), generator=g), torch.randint(0, 10, (64,), generator=g)
    hist, mask = torch.randint(0, 10, (64, 4), generator=g), torch.ones(64, 4, dtype=torch.bool)
    targets = {"interest": ((users + items) % 2).float(), "rating": (users % 5).float(),
               "genre": torch.nn.functional.one_hot(items % 3, 3).float()}  # fmt: skip
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        out = m(users, items, hist, mask)
        return sum(tasks[t].loss(out[t], y, torch.ones(64, dtype=torch.bool)) for t, y in targets.items())

    first = loss().item()
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.8 * first
