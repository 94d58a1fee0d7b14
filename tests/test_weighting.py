"""Loss-balancing strategies: every registered one trains a tiny model; each one checked against its formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtlrec.config import ModelConfig
from mtlrec.models import ARCHITECTURES, MultiTaskModel
from mtlrec.tasks import build_tasks
from mtlrec.tasks.base import Task
from mtlrec.weighting import WEIGHTINGS, WeightingStrategy
from mtlrec.weighting.base import WeightingContext

Problem = tuple[MultiTaskModel, dict[str, Task], dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, ...]]]


def tiny_problem(contrarian: bool = False, arch: str = "shared-bottom") -> Problem:
    """A tiny model with the real tasks, and one fixed synthetic batch: inputs and each task's (target, mask).
    ``contrarian`` adds an interest task with the opposite labels, whose gradients conflict with interest's."""
    torch.manual_seed(0)
    spec: dict = {"interest": {}, "rating": {"dropout": 0.0}, "genre": {}}
    tasks = build_tasks(spec | ({"contrarian": {"kind": "interest"}} if contrarian else {}))
    n_users, n_items, rows = 6, 10, 24
    model = MultiTaskModel(ModelConfig(arch=arch, dim=8, hidden=(16, 8), dropout=0.0, history_len=4, experts=2),
                           tasks, n_users,
                           torch.randn(n_items, 12), n_categories=3)  # fmt: skip
    inputs = {"users": torch.randint(0, n_users, (rows,)), "items": torch.randint(0, n_items, (rows,)),
              "history": torch.randint(0, n_items, (rows, 4)), "mask": torch.rand(rows, 4) > 0.3}  # fmt: skip
    everyone = torch.ones(rows, dtype=torch.bool)
    labels = {
        "interest": (torch.randint(0, 2, (rows,)).float(), everyone),
        "rating": (torch.randint(1, 6, (rows,)).float(), torch.rand(rows) > 0.3),  # partial labels, as in training
        "genre": (torch.randint(0, 2, (rows, 3)).float(), everyone),
    }
    labels["contrarian"] = (1 - labels["interest"][0], everyone)
    return model, tasks, inputs, labels


def task_losses(model: MultiTaskModel, tasks: dict[str, Task], inputs: dict, labels: dict) -> dict[str, torch.Tensor]:
    logits = model(inputs["users"], inputs["items"], inputs["history"], inputs["mask"])
    return {name: task.loss(logits[name], *labels[name]) for name, task in tasks.items()}


def train(
    name: str, steps: int = 60, lr: float = 0.02, arch: str = "shared-bottom"
) -> tuple[WeightingStrategy, list[dict[str, float]], torch.optim.Optimizer]:
    """The trainer's protocol (zero_grad, backward, step, after_step; end_epoch every 10 steps); the unweighted
    task losses before each step."""
    model, tasks, inputs, labels = tiny_problem(arch=arch)
    strategy = WEIGHTINGS.get(name)(tasks)
    optimizer = torch.optim.AdamW([*model.parameters(), *strategy.parameters()], lr=lr)
    ctx = WeightingContext(model.shared_parameters(), model.last_shared_parameters())
    history: list[dict[str, float]] = []
    for step in range(steps):
        losses = task_losses(model, tasks, inputs, labels)
        history.append({n: loss.item() for n, loss in losses.items()})
        optimizer.zero_grad(set_to_none=True)
        total = strategy.backward(losses, ctx)
        assert total.ndim == 0 and not total.requires_grad
        if step == 0:  # every parameter got a gradient, but the mixture parts of genre, whose head reads only the item
            missing = [n for n, p in model.named_parameters() if p.grad is None and ".genre" not in n]
            assert missing == [], missing
        optimizer.step()
        strategy.after_step()
        if step % 10 == 9:
            strategy.end_epoch(history[-1] | {"total": total.item()})
    return strategy, history, optimizer


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_architecture_with_every_strategy_trains_a_tiny_model(name: str, arch: str) -> None:
    strategy, history, _ = train(name, arch=arch)
    first, last = history[0], history[-1]
    assert sum(last.values()) < 0.5 * sum(first.values()), (first, last)
    assert all(last[t] < 0.85 * first[t] for t in first), (first, last)  # every task learns, none is starved
    weights = strategy.weights()
    assert set(weights) == {"interest", "rating", "genre"}
    assert all(isinstance(w, float) and math.isfinite(w) and w > 0 for w in weights.values()), weights


def test_uncertainty_learns_log_variances_through_the_optimizer() -> None:
    strategy, _, optimizer = train("uncertainty")
    log_vars = strategy.log_vars
    assert any(p is log_vars for group in optimizer.param_groups for p in group["params"])
    assert (log_vars.detach().abs() > 0.05).all(), log_vars
    assert strategy.weights() == pytest.approx(
        dict(zip(strategy.task_names, torch.exp(-log_vars.detach()).tolist(), strict=True))
    )
    # the combined loss is the formula
    losses = {"interest": torch.tensor(2.0), "rating": torch.tensor(3.0), "genre": torch.tensor(0.5)}
    expected = sum(
        math.exp(-s) * losses[n].item() + s for n, s in zip(strategy.task_names, log_vars.tolist(), strict=True)
    )
    assert strategy.combine(losses).item() == pytest.approx(expected, rel=1e-5)


def scalar_tasks(*weights: float) -> dict[str, Task]:
    return build_tasks({f"t{i}": {"kind": "interest", "weight": w} for i, w in enumerate(weights)})


@pytest.mark.parametrize(
    ("g1", "g2", "expected"),
    [
        ((1.0, 0.0), (-1.0, 1.0), (0.5, 1.5)),  # conflict: g1' = (.5, .5), g2' = (0, 1)
        ((1.0, 0.0), (1.0, 2.0), (2.0, 2.0)),  # no conflict: the plain sum
    ],
)
def test_pcgrad_matches_the_analytic_projection(g1: tuple, g2: tuple, expected: tuple) -> None:
    shared, head = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(()))
    losses = {"t0": torch.tensor(g1) @ shared + head, "t1": torch.tensor(g2) @ shared + 2 * head}
    strategy = WEIGHTINGS.get("pcgrad")(scalar_tasks(1.0, 1.0))
    total = strategy.backward(losses, WeightingContext([shared], [shared]))
    assert shared.grad is not None and shared.grad.tolist() == pytest.approx(list(expected))
    assert head.grad is not None and float(head.grad) == pytest.approx(3.0)  # heads: plain gradient of the sum
    assert float(total) == pytest.approx(0.0)


def test_pcgrad_uses_the_config_weights_and_keeps_earlier_gradients() -> None:
    shared = nn.Parameter(torch.zeros(2))
    shared.grad = torch.tensor([10.0, 10.0])  # accumulated before the call
    losses = {"t0": torch.tensor([1.0, 0.0]) @ shared, "t1": torch.tensor([-1.0, 1.0]) @ shared}
    WEIGHTINGS.get("pcgrad")(scalar_tasks(2.0, 1.0)).backward(losses, WeightingContext([shared], [shared]))
    # g1 = (2, 0), g2 = (-1, 1): g1' = g1 + g2 = (1, 1), g2' = g2 + g1 / 2 = (0, 1)
    assert shared.grad.tolist() == pytest.approx([11.0, 12.0])


def test_pcgrad_on_the_model_gives_heads_their_plain_gradient_and_repeats() -> None:
    grads = []
    for name in ("fixed", "pcgrad", "pcgrad"):
        model, tasks, inputs, labels = tiny_problem(contrarian=True)
        ctx = WeightingContext(model.shared_parameters(), model.last_shared_parameters())
        WEIGHTINGS.get(name)(tasks).backward(task_losses(model, tasks, inputs, labels), ctx)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    fixed, pc, again = grads
    shared = {n for n, p in model.named_parameters() if any(p is q for q in model.shared_parameters())}
    for n in fixed:
        if n not in shared:
            assert torch.allclose(pc[n], fixed[n], atol=1e-6), n
        assert torch.equal(pc[n], again[n]), n  # the seeded order makes runs repeat
    assert any(not torch.allclose(pc[n], fixed[n]) for n in shared)  # surgery changed the shared gradients


def gradnorm_step(strategy: WeightingStrategy, shared: nn.Parameter, offsets: tuple[float, float]) -> None:
    """Two tasks with the same gradient (norm 1) on ``shared`` and losses 1 + offset."""
    shared.grad, strategy.task_weights.grad = None, None
    losses = {f"t{i}": shared.sum() + 1 + c for i, c in enumerate(offsets)}
    strategy.backward(losses, WeightingContext([shared], [shared]))


def test_gradnorm_gradients_follow_the_formula() -> None:
    """t0 and t1 reach the measured layer with gradient norms 2 and 1; t2 does not reach it at all."""
    strategy = WEIGHTINGS.get("gradnorm")(scalar_tasks(1.0, 1.0, 1.0))
    shared, head = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    for offsets, expected in [
        ((0.0, 0.0), [2.0, -1.0, 0.0]),  # L(0) = (1, 1, 1); G = (2, 1), target mean(G) = 1.5 -> sign(G - 1.5) * norm
        ((0.0, -0.5), [-2.0, 1.0, 0.0]),  # r = (1, .5) / .75; target 1.5 * r^1.5 = (2.31, .82); G = (2, 1)
    ]:
        shared.grad, head.grad, strategy.task_weights.grad = None, None, None
        losses = {"t0": 2 * shared.sum() + 1 + offsets[0], "t1": shared.sum() + 1 + offsets[1], "t2": head.sum() + 1}
        strategy.backward(losses, WeightingContext([shared], [shared]))
        # the weights get the gradient of the GradNorm loss only (that of L would add (1, .5, 1) at the 2nd step)
        assert strategy.task_weights.grad.tolist() == pytest.approx(expected)
        assert shared.grad.tolist() == pytest.approx([3.0]) and head.grad.tolist() == pytest.approx([1.0])


def test_gradnorm_raises_the_weight_of_the_slower_task_and_keeps_the_sum() -> None:
    strategy, shared = WEIGHTINGS.get("gradnorm")(scalar_tasks(1.0, 1.0)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD(strategy.parameters(), lr=0.05)
    gradnorm_step(strategy, shared, (0.0, 0.0))
    for step in range(20):
        gradnorm_step(strategy, shared, (0.0, -0.05 * step))  # t1's loss falls, t0's does not
        optimizer.step()
        strategy.after_step()
    w = strategy.weights()
    assert w["t0"] > 1.2 and 0 < w["t1"] < 0.8, w
    assert sum(w.values()) == pytest.approx(2.0, abs=1e-5)


def test_gradnorm_weights_stay_positive_and_sum_to_the_task_count_on_the_model() -> None:
    strategy, _, optimizer = train("gradnorm", steps=15, lr=0.1)
    weights = strategy.weights()
    assert all(w > 0 for w in weights.values()) and sum(weights.values()) == pytest.approx(3.0, abs=1e-5)
    assert any(p is strategy.task_weights for group in optimizer.param_groups for p in group["params"])
    assert weights["interest"] != pytest.approx(1.0), weights  # learned, not stuck at the start


def test_dwa_weights_follow_the_formula() -> None:
    strategy = WEIGHTINGS.get("dwa")(scalar_tasks(3.0, 3.0, 3.0))  # fixed weights are replaced
    epochs = [{"t0": 1.0, "t1": 2.0, "t2": 4.0}, {"t0": 0.5, "t1": 1.8, "t2": 4.0}, {"t0": 0.4, "t1": 0.9, "t2": 2.0}]
    seen = [strategy.weights()]
    for losses in epochs:
        strategy.end_epoch(losses | {"total": 99.0})
        seen.append(strategy.weights())
    assert seen[0] == seen[1] == {"t0": 1.0, "t1": 1.0, "t2": 1.0}  # epochs 1 and 2

    def formula(before: dict[str, float], after: dict[str, float], tau: float = 2.0) -> list[float]:
        e = [math.exp(after[t] / before[t] / tau) for t in ("t0", "t1", "t2")]
        return [3 * x / sum(e) for x in e]

    assert list(seen[2].values()) == pytest.approx(formula(epochs[0], epochs[1]))
    assert list(seen[3].values()) == pytest.approx(formula(epochs[1], epochs[2]))
    assert seen[3]["t0"] > seen[3]["t1"] == pytest.approx(seen[3]["t2"])  # t0 fell least in the last epoch
    losses = {"t0": torch.tensor(1.0), "t1": torch.tensor(2.0), "t2": torch.tensor(3.0)}
    assert float(strategy.combine(losses)) == pytest.approx(sum(seen[3][t] * float(v) for t, v in losses.items()))
