"""Fine-tuning the language model with LoRA adapters (text.lora): the adapted encoder, per-step re-encoding inside
the multi-task model, the optimizer, saving and loading a run, and the configuration's errors.

These tests load the real all-MiniLM-L6-v2 (packaged, offline) on one thread and keep every text set tiny."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import crash_at, tiny_overrides
from mtlrec import Recommender
from mtlrec.config import Config, LoraConfig, load_config
from mtlrec.errors import ConfigError, MtlrecError
from mtlrec.models.model import MultiTaskModel
from mtlrec.models.tuned_text import TunedItemEncoder, check_tuning, text_tuning
from mtlrec.recommend.artifact import load_artifact
from mtlrec.tasks.base import build_tasks
from mtlrec.text import EmbeddingCache, SentenceTransformerEncoder, encode_cached
from mtlrec.text.lora import LoraTextModel
from mtlrec.train.data import PairRows, heldout_positive_rows, histories, row_logits
from mtlrec.train.pipeline import prepare
from mtlrec.train.run import check_config, evaluate_run, train_run
from mtlrec.train.trainer import Trainer, build_optimizers
from mtlrec.weighting.base import WEIGHTINGS

pytest.importorskip("peft")

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "Heat (1995). Genres: Action, Crime, Thriller.",
    "Sense and Sensibility (1995). Genres: Drama, Romance.",
    "Alien (1979). Genres: Horror, Sci-Fi.",
    "",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def frozen() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder()


def lora_model(**options: object) -> LoraTextModel:
    torch.manual_seed(0)
    return LoraTextModel(SentenceTransformerEncoder(), LoraConfig(**{"rank": 4, **options}))  # type: ignore[arg-type]


def perturb(model: LoraTextModel, seed: int = 1) -> None:
    """Give every adapter B a random value (as training would): the adapted model then differs from the base."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.adapters.items():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def lora_overrides(world: Path, **extra: object) -> dict[str, object]:
    """The tiny world with the real language model and small adapters; a few items re-encoded per step."""
    return tiny_overrides(world, **{"text.encoder": "sentence-transformers", "text.dim": None, "text.lora.rank": 4,
                                    "text.lora.items_per_step": 16, "text.lora.max_length": 32, "text.batch_size": 32,
                                    "train.epochs": 1, "train.batch_size": 256, **extra})  # fmt: skip


# -- the adapted encoder ---------------------------------------------------------------------------------------------
def test_zero_initialised_adapters_give_the_frozen_cached_vectors(frozen: SentenceTransformerEncoder, tmp_path):
    cached, encoded = encode_cached(frozen, TEXTS, EmbeddingCache(tmp_path), progress=False)
    assert encoded == len(TEXTS)
    model = lora_model()
    a = [p for n, p in model.adapters.items() if "lora_A" in n]
    b = [p for n, p in model.adapters.items() if "lora_B" in n]
    assert a and b and all(bool(p.abs().sum() > 0) for p in a) and all(bool((p == 0).all()) for p in b)
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=2), cached, atol=1e-5)
    model.train()  # adapter dropout on, gradient on: still the frozen vectors while B is zero
    tokens = model.tokenize(TEXTS)
    with_grad = model.embed(tokens, batch_size=2)
    assert with_grad.requires_grad
    np.testing.assert_allclose(with_grad.detach().numpy(), cached, atol=1e-5)
    perturb(model)
    assert np.abs(model.encode(TEXTS) - cached).max() > 1e-3  # the comparison above can fail


def test_max_length_cuts_texts_and_is_part_of_the_name() -> None:
    model = lora_model(max_length=8)
    tokens = model.tokenize(["a long text with many more than eight word pieces in it, surely"])
    assert tokens["input_ids"].shape == (1, 8)
    assert ":L8@" in model.name


def test_name_differs_from_the_frozen_one_and_follows_the_adapters(frozen: SentenceTransformerEncoder, tmp_path):
    model = lora_model()
    assert model.name.startswith(frozen.name + "+lora:r4:a16:")
    before = model.name
    perturb(model)
    assert model.name != before and model.name.startswith(frozen.name + "+lora:")
    cache = EmbeddingCache(tmp_path)
    frozen_vectors, _ = encode_cached(frozen, TEXTS, cache, progress=False)
    tuned_vectors, encoded = encode_cached(model, TEXTS, cache, progress=False)
    assert encoded == len(TEXTS)  # nothing of the frozen model's cache is reused
    assert np.abs(tuned_vectors - frozen_vectors).max() > 1e-3
    assert cache.encoder_dir(model.name) != cache.encoder_dir(frozen.name)


def test_only_adapters_train_and_are_in_the_state() -> None:
    model = lora_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".attention.self.")[1].split(".")[0] for n in trainable} == {"query", "key", "value"}
    assert {k.removeprefix("model.") for k in model.state_dict()} == set(model.adapters)
    # 6 layers x 3 projections x (A [4, 384] + B [384, 4])
    assert sum(p.numel() for p in model.adapters.values()) == 6 * 3 * 2 * 4 * 384


def test_adapter_state_round_trips_to_identical_vectors() -> None:
    model = lora_model()
    perturb(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    again = lora_model()
    assert np.abs(again.encode(TEXTS) - model.encode(TEXTS)).max() > 1e-3
    again.load_state_dict(state)  # adapters only: the base weights stay the language model's own
    np.testing.assert_array_equal(again.encode(TEXTS), model.encode(TEXTS))
    assert again.name == model.name


def test_layers_restrict_the_adapters() -> None:
    model = lora_model(layers=(5,), target_modules=("value",))
    assert model.adapters and all(".layer.5.attention.self.value." in n for n in model.adapters)


def test_unknown_target_modules_name_the_key_and_the_real_layers() -> None:
    with pytest.raises(ConfigError, match=r"text\.lora\.target_modules \['qkv'\].*named .*query"):
        lora_model(target_modules=("qkv",))


# -- inside the multi-task model --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned_parts(world: Path):
    config = load_config(overrides=lora_overrides(world))
    prepared = prepare(config, progress=False, log=lambda _: None)
    tasks = build_tasks(config.tasks)
    for task in tasks.values():
        task.prepare(prepared.data)
    return config, prepared, tasks


def build_model(parts, items_per_step: int = 16) -> MultiTaskModel:
    config, prepared, tasks = parts
    config = config.with_overrides({"text.lora.items_per_step": items_per_step})
    torch.manual_seed(config.train.seed)
    data = prepared.data
    model = MultiTaskModel(config.model, tasks, data.split.n_users, torch.from_numpy(data.text_vectors),
                           data.categories.shape[1], tuning=text_tuning(config, prepared.texts))  # fmt: skip
    model.item_encoder.set_warm(data.split.trained_items())
    return model


def few_rows(data, n: int = 3) -> PairRows:
    """The validation interactions of the first ``n`` evaluated users (short histories: a few distinct items)."""
    rows = heldout_positive_rows(data, "valid")
    return PairRows(rows.users[:n], rows.items[:n], rows.history_end[:n], rows.position[:n])


def count_encoded(model: MultiTaskModel) -> list[int]:
    """Patch the language model to record how many texts each of its passes encodes."""
    counts: list[int] = []
    lm = model.item_encoder.language_model
    embed = lm.embed

    def counting(features: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        counts.append(int(features["input_ids"].shape[0]))
        return embed(features, batch_size)

    lm.embed = counting  # type: ignore[method-assign]
    return counts


def test_a_training_step_changes_the_adapters_and_nothing_of_the_base_model(tuned_parts) -> None:
    config, prepared, tasks = tuned_parts
    frozen_start = prepared.data.text_vectors.copy()
    model = build_model(tuned_parts)
    lm = model.item_encoder.language_model
    base = {n: p.detach().clone() for n, p in lm.model.named_parameters() if n not in lm.adapters}
    adapters = {n: p.detach().clone() for n, p in lm.adapters.items()}
    others = {n: p.detach().clone() for n, p in model.named_parameters() if "language_model" not in n}
    weighting = WEIGHTINGS.get(config.train.weighting)(tasks)
    trainer = Trainer(config, model, tasks, weighting, prepared.data, progress=False, log=lambda _: None)

    rows = few_rows(prepared.data)
    model.train()
    losses = trainer._row_losses(rows)
    for name, loss in losses.items():  # every task's loss reaches the adapters (B gets gradient first)
        grads = torch.autograd.grad(loss, list(lm.adapters.values()), retain_graph=True, allow_unused=True)
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), name

    trainer._epoch(1)
    assert all(torch.equal(p, base[n]) for n, p in lm.model.named_parameters() if n not in lm.adapters)
    changed = [n for n, p in lm.adapters.items() if not torch.equal(p, adapters[n])]
    assert set(changed) == set(adapters)
    assert not torch.equal(model.item_encoder.project.weight, others["item_encoder.project.weight"])
    np.testing.assert_array_equal(prepared.data.text_vectors, frozen_start)  # the memory bank is the model's own
    (optimizer,) = trainer.optimizers
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [config.train.lr, config.train.lr, config.text.lora.lr]
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in lm.adapters.values()}
    assert not any(id(p) in {id(q) for q in lm.model.parameters() if not q.requires_grad}
                   for g in groups for p in g["params"])  # fmt: skip


def test_a_step_encodes_its_distinct_items_once_and_evaluation_the_catalogue_once(tuned_parts) -> None:
    config, prepared, tasks = tuned_parts
    split = prepared.data.split
    n_items = split.n_items
    model = build_model(tuned_parts, items_per_step=0)
    counts = count_encoded(model)
    rows = few_rows(prepared.data)
    hist, mask = histories(split, rows.users, rows.history_end, model.history_len)
    distinct = len(torch.unique(torch.cat([hist[mask], torch.from_numpy(rows.items)])))
    model.train()
    logits = row_logits(model, split, rows)
    # first the bank is made the model's own (the whole catalogue, no gradient), then the step's items once
    assert counts == [n_items, distinct] and distinct < n_items
    sum(v.float().sum() for v in logits.values()).backward()
    counts.clear()
    model.eval()
    with torch.no_grad():
        first = model.item_encoder.all()
        second = model.item_encoder.all()
        row_logits(model, split, rows)
    assert counts == [n_items]  # once per evaluation, and only because a step ran
    torch.testing.assert_close(first, second)
    vectors = model.item_encoder.text.numpy()
    np.testing.assert_allclose(vectors, model.item_encoder.language_model.encode(prepared.texts), atol=1e-5)


def test_items_per_step_caps_the_items_encoded_with_gradient(tuned_parts) -> None:
    config, prepared, tasks = tuned_parts
    model = build_model(tuned_parts, items_per_step=5)
    counts = count_encoded(model)
    rows = few_rows(prepared.data, 10)
    model.train()
    row_logits(model, prepared.data.split, rows)
    assert counts == [prepared.data.split.n_items, 5]


def test_build_optimizer_without_lora_keeps_one_learning_rate(tiny_run: Path) -> None:
    artifact = load_artifact(tiny_run)
    assert artifact.model.language_model_parameters() == []
    (optimizer,) = build_optimizers(artifact.config, artifact.model, WEIGHTINGS.get("fixed")(artifact.tasks))
    assert len(optimizer.param_groups) == 2
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(artifact.model.parameters()))


# -- a whole run ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lora"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        train_run(load_config(overrides=lora_overrides(world)), out, progress=False, log=lambda _: None)
    return out


def test_a_lora_run_killed_anywhere_resumes_to_the_same_metrics(world: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """With items_per_step > 0 the memory bank holds training-mode vectors of earlier steps and a generator draws the
    items re-encoded; neither was in the checkpoint, so a resumed run drifted from the uninterrupted one."""
    from mtlrec.train.checkpoint import CHECKPOINT

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config(overrides=lora_overrides(world, **{"train.epochs": 2, "train.batch_size": 64,
                                                            "train.checkpoint_every": 2}))  # fmt: skip
    train_run(config, tmp_path / "whole", progress=False, log=lambda _: None)
    whole = (tmp_path / "whole" / "metrics.json").read_bytes()
    for step in (5, 14):  # inside epoch 1; in epoch 2, after validation re-encoded the catalogue
        out = tmp_path / f"killed-{step}"
        with monkeypatch.context() as m:
            crash_at(step, m)
            with pytest.raises(SystemExit):
                train_run(config, out, progress=False, log=lambda _: None)
        assert (out / CHECKPOINT).exists()
        train_run(config, out, progress=False, log=lambda _: None, resume=True)
        assert (out / "metrics.json").read_bytes() == whole, step


def test_a_lora_run_saves_its_adapters_and_fine_tuned_vectors(lora_run: Path, frozen: SentenceTransformerEncoder):
    assert (lora_run / "text_adapter.safetensors").is_file()
    assert not [p for p in lora_run.rglob("*") if p.suffix in {".pt", ".pkl", ".pth", ".bin"}]
    adapter = load_file(str(lora_run / "text_adapter.safetensors"))
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert any(".lora_B." in k and bool(v.abs().sum() > 0) for k, v in adapter.items())  # it trained
    assert not [k for k in load_file(str(lora_run / "model.safetensors")) if "language_model" in k]
    meta = json.loads((lora_run / "meta.json").read_text())
    assert meta["encoder"].startswith(frozen.name + "+lora:r4:a16:L32@")

    artifact = load_artifact(lora_run)
    encoder = artifact.model.item_encoder
    assert isinstance(encoder, TunedItemEncoder)
    assert encoder.language_model.name == meta["encoder"]  # the same adapters as at the end of training
    texts = artifact.items["text"].tolist()
    stored = load_file(str(lora_run / "item_vectors.safetensors"))["text"].numpy()
    np.testing.assert_allclose(encoder.language_model.encode(texts), stored, atol=1e-5)
    assert np.abs(stored - frozen.encode(texts)).max() > 1e-4  # fine-tuned, not the frozen vectors


def test_a_lora_run_loads_recommends_and_encodes_new_users_with_its_adapters(lora_run: Path) -> None:
    rec = Recommender.load(lora_run)
    counts = count_encoded(rec.model)
    top = rec.recommend("u1", k=5)
    assert len(top) == 5 and counts == []  # the stored catalogue vectors serve known users: no encoding
    new = rec.recommend_new_user(text="a comedy movie", k=5)
    assert len(new) == 5 and counts == [1]  # the user's text went through the fine-tuned language model
    assert rec._encoder is rec.model.item_encoder.language_model
    metrics = json.loads((lora_run / "metrics.json").read_text())
    again = evaluate_run(lora_run, log=lambda _: None)
    for key, value in again["test"].items():
        assert value == pytest.approx(metrics["test"][key], abs=1e-6), key


def test_a_run_with_other_or_without_adapters_warns_or_is_refused(lora_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(lora_run, copy)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "encoder": meta["encoder"][:-4] + "beef"}))
    with pytest.warns(UserWarning, match="new users' texts will not be encoded as in training"):
        load_artifact(copy)  # other adapters (or another base model) than the run was trained with
    (copy / "text_adapter.safetensors").unlink()
    with pytest.raises(MtlrecError, match="missing text_adapter.safetensors"):
        load_artifact(copy)


# -- configuration ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rank", -1, "text.lora.rank: expected a whole number >= 0"),
        ("alpha", 0, "text.lora.alpha: expected a number > 0"),
        ("dropout", 1.0, r"text.lora.dropout: expected a probability in \[0, 1\)"),
        ("target_modules", [], "text.lora.target_modules: expected a non-empty list"),
        ("layers", [-1], "text.lora.layers: expected layer indexes >= 0"),
        ("lr", 0.0, "text.lora.lr: expected a learning rate > 0"),
        ("max_length", -8, "text.lora.max_length: expected a token count >= 0"),
        ("items_per_step", -1, "text.lora.items_per_step: expected a whole number >= 0"),
        ("rnak", 8, "unknown config key 'text.lora.rnak'"),
        ("rank", "eight", "text.lora.rank: expected an integer"),
    ],
)
def test_bad_lora_settings_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={f"text.lora.{key}": value})


def test_lora_is_off_by_default_and_reads_from_yaml(tmp_path: Path) -> None:
    assert Config().text.lora.rank == 0
    path = tmp_path / "c.yaml"
    path.write_text("text:\n  lora: {rank: 8, lr: 0.001, target_modules: [query, value], layers: [4, 5]}\n")
    lora = load_config(path).text.lora
    assert (lora.rank, lora.lr, lora.target_modules, lora.layers) == (8, 0.001, ("query", "value"), (4, 5))


def test_lora_settings_that_cannot_work_fail_before_any_data_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    on = {"text.lora.rank": 4}
    with pytest.raises(ConfigError, match="needs text.encoder 'sentence-transformers', not 'hashing'"):
        check_config(load_config(overrides={**on, "text.encoder": "hashing", "text.dim": 8}))
    with pytest.raises(ConfigError, match="model.friends"):
        check_tuning(load_config(overrides={**on, "model.friends": 5}))
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(MtlrecError, match=r'pip install "mtlrec\[lora\]"'):
        check_config(load_config(overrides=on))
    with pytest.raises(MtlrecError, match=r'pip install "mtlrec\[lora\]"'):
        lora_model()
    check_config(load_config())  # off: peft is never needed
