"""profile: user attributes from behaviour. Options and dataset errors, classes and held-out masks, the loss,
macro-F1 against sklearn, every architecture and weighting, reload from a run directory, and that a user-level
signal (gender decides which item block a user watches) is learned for users whose gender was never trained on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_overrides
from mtlrec import Recommender
from mtlrec.config import load_config
from mtlrec.data.splits import TEST, TRAIN, VALID
from mtlrec.errors import ConfigError, DataError
from mtlrec.models import MultiTaskModel
from mtlrec.tasks import build_tasks
from mtlrec.tasks.profile import MISSING, ProfileHead, ProfileTask, age_labels, macro_f1
from mtlrec.train.data import NegativeSampler, PairRows, TrainingData, train_positive_rows
from mtlrec.train.pipeline import load_split
from mtlrec.train.run import evaluate_run, train_run
from mtlrec.weighting import WEIGHTINGS

OCCUPATIONS = ["student", "writer", "doctor"]
ML1M_BUCKETS = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]


def make_profile_world(folder: Path, n_users: int = 200, n_items: int = 80, per_user: int = 10, seed: int = 0) -> Path:
    """The world of conftest plus a users table. Gender decides the item block a user watches (F: items of the
    first half, M: the second; 2 of each user's items come from the other block); age and occupation are noise.
    User u0 has no gender and u1 no age (empty fields)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    half = n_items // 2
    gender = np.where(rng.random(n_users) < 0.6, "M", "F")
    rows = []
    for u in range(n_users):
        own = np.arange(half) + (half if gender[u] == "M" else 0)
        other = np.arange(half) + (0 if gender[u] == "M" else half)
        picks = np.concatenate([rng.choice(own, per_user - 2, replace=False), rng.choice(other, 2, replace=False)])
        for t, i in enumerate(rng.permutation(picks)):
            rows.append((f"u{u}", f"i{i}", int(rng.integers(1, 6)), 1_000_000 + 100 * u + t))
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(
        folder / "interactions.csv", index=False
    )
    pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "title": [f"movie number {i}" for i in range(n_items)],
                  "categories": ["Drama" if i % 2 else "Comedy" for i in range(n_items)]}).to_csv(
        folder / "items.csv", index=False)  # fmt: skip
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(n_users)], "age": rng.integers(12, 70, n_users),
                          "gender": gender, "occupation": rng.choice(OCCUPATIONS, n_users)})  # fmt: skip
    users["age"] = users["age"].astype(str)
    users.loc[0, "gender"] = ""
    users.loc[1, "age"] = ""
    users.to_csv(folder / "users.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def profile_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_profile_world(tmp_path_factory.mktemp("profile_world"))


def overrides(folder: Path, **extra: object) -> dict[str, object]:
    return tiny_overrides(folder, **{"data.users_path": str(folder / "users.csv"),
                                     "tasks": {"interest": {}, "profile": {}}, **extra})  # fmt: skip


def training_data(config_overrides: dict[str, object]) -> TrainingData:
    """The split and roles of the configured data, with zero text vectors (no encoder needed)."""
    dataset, split, roles, _ = load_split(load_config(overrides=config_overrides), log=lambda _: None)
    return TrainingData.build(dataset, split, np.zeros((dataset.n_items, 8), np.float32), roles)


@pytest.fixture(scope="module")
def data(profile_world: Path) -> TrainingData:
    return training_data(overrides(profile_world))


def prepared(data: TrainingData, **options: object) -> ProfileTask:
    task = build_tasks({"profile": options})["profile"]
    assert isinstance(task, ProfileTask)
    task.prepare(data)
    return task


# -- options and data errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"test": 0.8, "valid": 0.3}, r"tasks.profile: test \(0.8\) and valid \(0.3\) are shares of users"),
        ({"valid": -0.1}, "at least 0"),
        ({"age_buckets": [25, 18]}, r"tasks.profile.age_buckets: give increasing bucket lower bounds"),
        ({"age_buckets": []}, "tasks.profile.age_buckets"),
        ({"attributes": []}, "tasks.profile.attributes: give one or more distinct user columns"),
        ({"attributes": ["gender", "gender"]}, "distinct"),
        ({"attributes": "gender"}, "tasks.profile.attributes: expected a list"),
        ({"seed": 1.5}, "tasks.profile.seed: expected an integer"),
        ({"colour": 1}, "unknown config key 'tasks.profile.colour'"),
    ],
)
def test_bad_options_are_clear(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_tasks({"profile": options})


def test_age_buckets_need_only_be_increasing_when_age_is_predicted() -> None:
    task = build_tasks({"profile": {"attributes": ["gender"], "age_buckets": []}})["profile"]
    assert task.options.attributes == ("gender",)


def test_dataset_without_user_attributes_is_a_clear_error(world: Path) -> None:
    """conftest's world has no users table: its users have only an id."""
    data = training_data(tiny_overrides(world))
    assert list(data.dataset.users.columns) == ["user_id"]
    with pytest.raises(ConfigError, match=r"task 'profile' needs user attributes age/gender/occupation; interactions "
                       r"has columns \[user_id\]; drop the task"):  # fmt: skip
        build_tasks({"profile": {}})["profile"].prepare(data)


def test_non_numeric_age_names_the_file_line_and_user(profile_world: Path, tmp_path: Path) -> None:
    users = pd.read_csv(profile_world / "users.csv", dtype=str, keep_default_na=False)
    users.loc[3, "age"] = "old"
    users.to_csv(tmp_path / "users.csv", index=False)
    data = training_data(overrides(profile_world, **{"data.users_path": str(tmp_path / "users.csv")}))
    with pytest.raises(DataError, match=r"users.csv, line 5, field 'age': age 'old' of user 'u3' is not a number"):
        prepared(data)


def test_an_attribute_without_values_is_a_clear_error(profile_world: Path, tmp_path: Path) -> None:
    users = pd.read_csv(profile_world / "users.csv", dtype=str, keep_default_na=False)
    users["zodiac"] = ""
    users.to_csv(tmp_path / "users.csv", index=False)
    data = training_data(overrides(profile_world, **{"data.users_path": str(tmp_path / "users.csv")}))
    with pytest.raises(ConfigError, match="user attribute 'zodiac' of interactions has no values"):
        prepared(data, attributes=["gender", "zodiac"])


# -- classes, roles, labels and masks -------------------------------------------------------------------------------
def test_classes_and_per_user_targets(data: TrainingData) -> None:
    task = prepared(data)
    assert task.classes() == {"age": ML1M_BUCKETS, "gender": ["F", "M"], "occupation": sorted(OCCUPATIONS)}
    assert age_labels((18, 25)) == ["<18", "18-24", "25+"]
    users = data.dataset.users
    age = pd.to_numeric(users["age"], errors="coerce")
    for u in range(2, len(users)):
        bucket = sum(age[u] >= b for b in (18, 25, 35, 45, 50, 56))
        assert task.targets[u].tolist() == [bucket, ["F", "M"].index(users["gender"][u]),
                                            sorted(OCCUPATIONS).index(users["occupation"][u])]  # fmt: skip
    assert task.targets[0, 1] == MISSING and task.targets[0, 0] != MISSING  # u0: no gender, an age
    assert task.targets[1, 0] == MISSING and task.targets[1, 1] != MISSING  # u1: no age, a gender


def test_ages_fall_in_the_ml1m_buckets(profile_world: Path, tmp_path: Path) -> None:
    """Bucket edges, and ML-1M's own age codes (1, 18, 25, 35, 45, 50, 56) each land in their bucket."""
    ages = [1, 17, 18, 24, 25, 34, 35, 45, 49, 50, 55, 56, 80]
    users = pd.read_csv(profile_world / "users.csv", dtype=str, keep_default_na=False)
    users.loc[: len(ages) - 1, "age"] = [str(a) for a in ages]
    users.to_csv(tmp_path / "users.csv", index=False)
    task = prepared(training_data(overrides(profile_world, **{"data.users_path": str(tmp_path / "users.csv")})))
    names = [ML1M_BUCKETS[k] for k in task.targets[: len(ages), 0].tolist()]
    assert names == ["<18", "<18", "18-24", "18-24", "25-34", "25-34", "35-44", "45-49", "45-49", "50-55", "50-55",
                     "56+", "56+"]  # fmt: skip


def test_roles_are_seeded_shares_of_users(data: TrainingData) -> None:
    task = prepared(data)
    n = data.dataset.n_users
    assert (task.roles == TEST).sum() == round(0.2 * n) and (task.roles == VALID).sum() == round(0.1 * n)
    assert np.array_equal(task.roles, prepared(data).roles)
    assert not np.array_equal(task.roles, prepared(data, seed=1).roles)
    assert ((prepared(data, test=0.5, valid=0.0).roles == TEST).sum(), (prepared(data, test=0.5, valid=0.0).roles
            == VALID).sum()) == (n // 2, 0)  # fmt: skip


def test_only_observed_rows_of_train_users_are_labelled(data: TrainingData) -> None:
    task = prepared(data)
    positives = train_positive_rows(data, data.split.train_positions())
    rows = NegativeSampler(data.split, seed=0).rows(positives, 3)
    targets, mask = task.labels(rows)
    train_user = task.roles[rows.users] == TRAIN
    assert torch.equal(mask, torch.from_numpy(rows.positive & train_user))
    assert mask.any() and (~mask).any()
    assert not mask[torch.from_numpy(~rows.positive)].any()  # sampled negatives: never labelled
    assert (targets[~mask] == MISSING).all()  # held-out users' attributes are not even in the targets
    held_out = torch.from_numpy(~train_user)
    assert held_out.any() and not mask[held_out].any()
    labelled = torch.nonzero(mask).squeeze(1)
    assert torch.equal(targets[labelled], task.targets[rows.users[labelled]])
    # u0 (no gender) and u1 (no age) keep their other attributes; the missing one is masked
    for user, missing in ((0, 1), (1, 0)):
        if task.roles[user] == TRAIN:
            own = targets[torch.from_numpy(rows.users == user) & mask]
            assert len(own) and (own[:, missing] == MISSING).all() and (own[:, 2] != MISSING).all()
    # rows another task adds to the batch are not profile rows
    extra = PairRows(users=positives.users[:4], items=positives.items[:4], history_end=positives.history_end[:4],
                     position=positives.position[:4], owner=np.arange(4))  # fmt: skip
    extended = rows.extend(extra, "other")
    assert not task.labels(extended)[1][-4:].any()


def test_loss_is_the_mean_over_attributes_of_masked_cross_entropy(data: TrainingData) -> None:
    task = prepared(data)
    sizes = task.sizes()
    assert sizes == [7, 2, 3]
    torch.manual_seed(0)
    logits = torch.randn(4, sum(sizes), requires_grad=True)
    targets = torch.tensor([[1, 0, 2], [6, MISSING, 0], [0, 1, 1], [3, 1, 0]])
    mask = torch.tensor([True, True, True, False])
    parts = logits.split(sizes, dim=-1)
    by_hand = (F.cross_entropy(parts[0][:3], targets[:3, 0]) + F.cross_entropy(parts[1][[0, 2]], targets[[0, 2], 1])
               + F.cross_entropy(parts[2][:3], targets[:3, 2])) / 3  # fmt: skip
    loss = task.loss(logits, targets, mask)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    loss.backward()
    assert logits.grad is not None and (logits.grad[3] == 0).all() and (logits.grad[1, 7:9] == 0).all()
    empty = task.loss(logits, targets, torch.zeros(4, dtype=torch.bool))  # a batch without labels
    assert empty.item() == 0.0 and empty.requires_grad


def test_predict_and_describe(data: TrainingData) -> None:
    task = prepared(data)
    logits = torch.zeros(12)
    logits[2], logits[7], logits[11] = 3.0, 1.0, 2.0  # 25-34, F, writer
    prob = task.predict(logits)
    assert [float(p.sum()) for p in prob.split(task.sizes())] == pytest.approx([1.0, 1.0, 1.0])
    described = task.describe(prob.numpy(), [])
    assert list(described) == ["age=25-34", "gender=F", "occupation=writer"]
    assert described["gender=F"] == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))), abs=1e-3)


def test_macro_f1_equals_sklearn() -> None:
    from sklearn.metrics import f1_score

    true = np.array([0, 0, 1, 1, 1, 2, 2, 3, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 2, 1, 1, 0, 4])  # class 3 never predicted, class 4 never true
    assert macro_f1(pred, true) == pytest.approx(f1_score(true, pred, average="macro"), abs=1e-12)
    assert macro_f1(pred, true) == pytest.approx((2 / 3 + 4 / 9 + 2 / 3 + 0 + 0) / 5, abs=1e-12)  # F1 of classes 0..4
    assert macro_f1(true, true) == 1.0


# -- the model -------------------------------------------------------------------------------------------------------
def test_head_reloads_its_classes_and_width_from_a_state_dict(data: TrainingData) -> None:
    """A run directory is loaded without its data: the head takes its width and class names from the weights."""
    config = load_config(overrides={"model.dim": 8, "model.hidden": [16, 8], "model.history_len": 4})
    trained = {"interest": build_tasks({"interest": {}})["interest"], "profile": prepared(data)}
    torch.manual_seed(0)
    model = MultiTaskModel(config.model, trained, data.split.n_users, torch.randn(data.split.n_items, 8), 2)
    fresh = build_tasks({"interest": {}, "profile": {}})
    loaded = MultiTaskModel(config.model, fresh, data.split.n_users, torch.randn(data.split.n_items, 8), 2)
    assert fresh["profile"].classes() == {}
    loaded.load_state_dict(model.state_dict())
    head = loaded.heads["profile"]
    assert isinstance(head, ProfileHead) and head.out.weight.shape == (12, 8)
    assert fresh["profile"].classes() == trained["profile"].classes()
    user = torch.randn(5, 8)
    assert torch.equal(loaded.user_logits("profile", user), model.user_logits("profile", user))
    assert model.user_logits("profile", user).shape == (5, 12)
    other = replace(data, dataset=replace(data.dataset, users=data.dataset.users.assign(gender="X")))
    with pytest.raises(ConfigError, match="the model was trained on the classes"):
        fresh["profile"].prepare(other)  # evaluating on data with other classes


@pytest.mark.parametrize("arch", ["shared-bottom", "mmoe", "ple"])
def test_every_architecture_and_weighting_trains_and_evaluates(profile_world: Path, arch: str) -> None:
    from mtlrec.train.pipeline import prepare
    from mtlrec.train.trainer import Trainer

    config = load_config(overrides=overrides(profile_world, **{"model.arch": arch, "model.experts": 2,
                                                               "train.epochs": 1}))  # fmt: skip
    data = prepare(config, progress=False, log=lambda _: None).data
    for weighting in WEIGHTINGS.names():
        tasks = build_tasks({"interest": {}, "profile": {"weight": 0.5}})
        for task in tasks.values():
            task.prepare(data)
        torch.manual_seed(0)
        model = MultiTaskModel(config.model, tasks, data.split.n_users, torch.from_numpy(data.text_vectors), 2)
        before = model.heads["profile"].out.weight.detach().clone()
        trainer = Trainer(config, model, tasks, WEIGHTINGS.get(weighting)(tasks), data, progress=False,
                          log=lambda _: None)  # fmt: skip
        result = trainer.fit()
        entry = result.history[0]
        assert np.isfinite(entry["train_loss"]["profile"]) and entry["train_loss"]["profile"] > 0, weighting
        assert not torch.equal(before, model.heads["profile"].out.weight), weighting
        valid = entry["valid"]
        assert {"age_acc", "gender_acc", "gender_macro_f1", "occupation_macro_f1", "profile_acc"} <= set(valid)
        assert 0.0 <= valid["profile_acc"] <= 1.0


# -- a learnable user-level signal ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def profile_run(profile_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "profile"
    config = load_config(overrides=overrides(profile_world, **{"train.epochs": 6, "train.patience": 6}))
    return out, train_run(config, out, progress=False, log=lambda _: None)


def test_gender_is_learned_for_users_it_was_never_trained_on(profile_world: Path, data: TrainingData,
                                                             profile_run: tuple[Path, dict]) -> None:  # fmt: skip
    _, metrics = profile_run
    task = prepared(data)
    genders = task.targets[torch.from_numpy(task.roles == TEST), 1]
    genders = genders[genders != MISSING]
    majority = float(torch.bincount(genders).max()) / len(genders)  # the best constant guess on these users
    assert len(genders) >= 35 and majority < 0.75
    test = metrics["test"]
    assert test["gender_acc"] >= 0.9 > majority + 0.15
    assert test["gender_macro_f1"] >= 0.85
    assert {"age_acc", "age_macro_f1", "occupation_acc", "occupation_macro_f1", "profile_acc"} <= set(test)
    assert test["profile_acc"] == pytest.approx(np.mean([test[f"{a}_acc"] for a in ("age", "gender", "occupation")]))
    assert test["hr@10"] > 0.18  # interest trains beside it (chance: about 10/72; knowing the block: about 0.25)


def test_a_profile_run_reloads_re_evaluates_and_recommends(profile_run: tuple[Path, dict]) -> None:
    run, metrics = profile_run
    again = evaluate_run(run, log=lambda _: None)
    for stage in ("valid", "test"):
        for key in ("gender_acc", "age_macro_f1", "profile_acc", "ndcg@10"):
            assert again[stage][key] == pytest.approx(metrics[stage][key], abs=1e-6), (stage, key)
    items = Recommender.load(run).recommend("u5", k=3)
    profile = items[0]["scores"]["profile"]
    assert [k.split("=")[0] for k in profile] == ["age", "gender", "occupation"]
    assert all(0.0 < p <= 1.0 for p in profile.values())
    assert json.loads(json.dumps(items)) == items
