"""Device and precision are parameters: every tensor a training step builds follows the model's device (checked on
PyTorch's "meta" device, where any CPU tensor in the computation is an error), bf16 autocast trains (CPU here), and a
device or precision that cannot work is a clear config error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import make_world, tiny_overrides
from mtlrec.config import load_config
from mtlrec.errors import ConfigError
from mtlrec.train.run import check_config, train_run
from test_sparse_ids import build, one_batch


@pytest.mark.parametrize("sparse", [False, True])
def test_a_training_step_runs_wholly_on_the_model_device(tmp_path: Path, sparse: bool) -> None:
    # (the transformer tower and next_item read data-dependent values, which the meta device does not have)
    trainer = build(tmp_path, **{"train.sparse_ids": sparse, "tasks": {"interest": {}, "rating": {}, "genre": {}}})
    trainer.model.to("meta")
    losses = one_batch(trainer)  # inputs built on the CPU from numpy: moved by the model, or this raises
    assert {loss.device.type for loss in losses.values()} == {"meta"}
    sum(losses.values()).backward()
    for optimizer in trainer.optimizers:
        optimizer.step()
    assert all(p.device.type == "meta" for p in trainer.model.parameters())


def test_inputs_already_on_the_device_are_not_copied(tmp_path: Path) -> None:
    model = build(tmp_path).model
    ids = torch.arange(3)
    assert model.device == torch.device("cpu") and model.here(ids) is ids


def test_bf16_autocast_trains_and_keeps_float32_weights(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w")
    metrics = {}
    for precision in ("fp32", "bf16"):
        config = load_config(overrides=tiny_overrides(world, **{"train.precision": precision, "train.epochs": 6}))
        metrics[precision] = train_run(config, tmp_path / precision, progress=False, log=lambda _: None)["test"]
    assert metrics["bf16"]["auc"] > 0.75  # the world is learnable: bf16 learns it as fp32 does
    assert abs(metrics["bf16"]["auc"] - metrics["fp32"]["auc"]) < 0.05
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train.precision": "fp16"}, "train.precision: 'fp16' is not one of fp32, bf16"),
    ({"train.device": "gpu0"}, "train.device: 'gpu0' is not a torch device"),
])  # fmt: skip
def test_impossible_devices_and_precisions_are_config_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(overrides=overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        check_config(load_config(overrides={"train.device": "cuda"}))
