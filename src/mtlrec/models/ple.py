"""Progressive Layered Extraction (Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task
Learning (MTL) Model for Personalized Recommendations", RecSys 2020).

``config.levels`` stacked Customized Gate Control (CGC) levels. Each level has ``config.experts`` shared experts
and ``config.task_experts`` experts per task. Task t's gate mixes t's own experts and the shared ones into t's
output; every level but the last also has a shared gate mixing all experts into the next level's shared input.
Task t's input to level k + 1 is its output of level k.

Expert widths: every expert of every level is an MLP with layer sizes ``config.hidden``. Level 1 reads the
(user, item) pair (PairInput -> MLP, gates are PairLinear, so user and item broadcast as in the shared bottom);
level k > 1 reads the previous level's ``hidden[-1]``-wide features (Linear(hidden[-1], hidden[0]) -> ... ->
hidden[-1], gates are plain Linear). One level costs about (experts + tasks * task_experts) shared bottoms.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlrec.config import ModelConfig
from mtlrec.errors import ConfigError
from mtlrec.models.architectures import ARCHITECTURES, PairLinear, PairMLP, mix, mlp


class CGC(nn.Module):
    """One extraction level. Inputs are argument tuples: (user, item) at the first level, (features,) later."""

    def __init__(self, config: ModelConfig, tasks: list[str], first: bool, last: bool) -> None:
        super().__init__()
        hidden, dropout, n_all = config.hidden, config.dropout, config.experts + len(tasks) * config.task_experts

        def expert() -> nn.Module:
            return PairMLP(config.dim, hidden, dropout) if first else mlp([hidden[-1], *hidden], dropout)

        def gate(n: int) -> nn.Module:
            return PairLinear(config.dim, n) if first else nn.Linear(hidden[-1], n)

        self.tasks = tasks
        self.shared = nn.ModuleList(expert() for _ in range(config.experts))
        self.own = nn.ModuleDict({t: nn.ModuleList(expert() for _ in range(config.task_experts)) for t in tasks})
        self.gates = nn.ModuleDict({t: gate(config.task_experts + config.experts) for t in tasks})
        self.shared_gate = None if last else gate(n_all)

    def forward(
        self, inputs: dict[str, tuple[torch.Tensor, ...]], shared_input: tuple[torch.Tensor, ...]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        shared = [e(*shared_input) for e in self.shared]  # experts x [..., out]
        own = {t: [e(*inputs[t]) for e in self.own[t]] for t in self.tasks}  # task -> task_experts x [..., out]
        out = {t: mix(self.gates[t](*inputs[t]), own[t] + shared) for t in self.tasks}  # task -> [..., out]
        if self.shared_gate is None:
            return out, None
        everything = [x for t in self.tasks for x in own[t]] + shared  # (tasks * task_experts + experts) x [.., out]
        return out, mix(self.shared_gate(*shared_input), everything)  # task -> [..., out], [..., out]


def last_layer(expert: nn.Module) -> nn.Module:
    """The last Linear of an expert (or its PairInput, for a first-level expert with one layer size)."""
    if isinstance(expert, PairMLP):
        return expert.last_layer()
    return [m for m in expert.modules() if isinstance(m, nn.Linear)][-1]


@ARCHITECTURES.register("ple")
class PLE(nn.Module):
    def __init__(self, config: ModelConfig, tasks: list[str]) -> None:
        super().__init__()
        for key, least in (("experts", 1), ("task_experts", 0), ("levels", 1)):
            if getattr(config, key) < least:
                raise ConfigError(f"model.{key}: ple needs at least {least}, got {getattr(config, key)}")
        n = config.levels
        self.tasks = tasks
        self.levels = nn.ModuleList(CGC(config, tasks, first=k == 0, last=k == n - 1) for k in range(n))
        self.out_dim = config.hidden[-1]

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> dict[str, torch.Tensor]:
        # user [..., dim], item [..., dim], broadcastable (e.g. [B, 1, dim] and [1, n, dim])
        inputs = dict.fromkeys(self.tasks, (user, item))  # task -> the pair
        shared: tuple[torch.Tensor, ...] = (user, item)  # the pair
        for level in self.levels:
            out, mixed = level(inputs, shared)  # task -> [..., out_dim], [..., out_dim] (None at the last level)
            inputs = {t: (x,) for t, x in out.items()}  # task -> ([..., out_dim],)
            shared = (mixed,) if mixed is not None else ()  # ([..., out_dim],); () after the last level
        return out  # task -> [..., out_dim]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Shared experts and shared gates of every level: every task's loss reaches them."""
        gates = [level.shared_gate for level in self.levels if level.shared_gate is not None]
        return [
            *(p for level in self.levels for p in level.shared.parameters()),
            *(p for g in gates for p in g.parameters()),
        ]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [p for expert in self.levels[-1].shared for p in last_layer(expert).parameters()]
