"""Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018).

``config.experts`` expert networks (each PairInput -> MLP over ``config.hidden``, i.e. one shared bottom) read the
(user, item) pair; each task has its own softmax gate over the experts, computed from the same pair by a
block-split linear map (PairLinear), and reads the gate-weighted sum of the expert outputs. User and item
broadcast as in the shared bottom, so a whole catalogue is scored at about ``experts`` times its cost.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlrec.config import ModelConfig
from mtlrec.errors import ConfigError
from mtlrec.models.architectures import ARCHITECTURES, PairLinear, PairMLP, mix


@ARCHITECTURES.register("mmoe")
class MMoE(nn.Module):
    def __init__(self, config: ModelConfig, tasks: list[str]) -> None:
        super().__init__()
        if config.experts < 1:
            raise ConfigError(f"model.experts: mmoe needs at least one expert, got {config.experts}")
        self.tasks = tasks
        self.experts = nn.ModuleList(PairMLP(config.dim, config.hidden, config.dropout) for _ in range(config.experts))
        self.gates = nn.ModuleDict({t: PairLinear(config.dim, config.experts) for t in tasks})
        self.out_dim = config.hidden[-1]

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> dict[str, torch.Tensor]:
        # user [..., dim], item [..., dim], broadcastable (e.g. [B, 1, dim] and [1, n, dim])
        outputs = [expert(user, item) for expert in self.experts]  # experts x [..., out_dim]
        return {t: mix(self.gates[t](user, item), outputs) for t in self.tasks}  # task -> [..., out_dim]

    def gate_weights(self, user: torch.Tensor, item: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each task's softmax weights over the experts: task -> [..., experts] (for inspection and tests)."""
        return {t: torch.softmax(self.gates[t](user, item), dim=-1) for t in self.tasks}  # task -> [..., experts]

    def shared_parameters(self) -> list[nn.Parameter]:
        """The experts (every task's loss reaches them); the gates are task-specific."""
        return list(self.experts.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [p for expert in self.experts for p in expert.last_layer().parameters()]
