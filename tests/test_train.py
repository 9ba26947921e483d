"""The trainer converges, is deterministic, and its CLI stores verified versions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import train as train_module
from training.store import ModelStore
from training.train import TrainConfig, preset, train


@pytest.mark.parametrize("seed", range(5))
def test_default_config_reaches_full_accuracy(seed: int) -> None:
    result = train(TrainConfig(seed=seed))
    assert result.accuracy == 1.0
    assert result.history[-1]["accuracy"] == 1.0
    assert result.steps < TrainConfig().max_steps


def test_original_preset_reaches_full_accuracy_at_seed_0() -> None:
    config = preset("original", seed=0)
    assert (config.optimizer, config.learning_rate, config.batch_size) == ("sgd", 0.1, 1)
    assert (config.hidden_size, config.max_steps, config.biases) == (16, 10_000, False)
    result = train(config)
    assert result.accuracy == 1.0 and result.steps <= 10_000


def test_training_is_deterministic_for_a_seed() -> None:
    first, second = train(TrainConfig(seed=3)), train(TrainConfig(seed=3))
    assert first.steps == second.steps
    for name in first.params:
        np.testing.assert_array_equal(first.params[name], second.params[name])
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]


def test_biases_are_trained_and_returned() -> None:
    result = train(TrainConfig(seed=0, biases=True, max_steps=50, target_accuracy=2.0))
    assert result.steps == 50 and set(result.params) == {"w_i", "w_h", "w_o", "b_h", "b_o"}
    assert np.any(result.params["b_h"] != 0)


def test_progress_is_reported_at_each_check() -> None:
    seen: list[tuple[int, int, float, float]] = []
    train(
        TrainConfig(seed=0, max_steps=40, check_every=10, target_accuracy=2.0),
        lambda *args: seen.append(args),
    )
    assert [s[0] for s in seen] == [10, 20, 30, 40]
    assert all(s[1] == 40 and s[2] > 0 and 0 <= s[3] <= 1 for s in seen)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("optimizer", "rmsprop", "optimizer"),
        ("hidden_size", 0, "hidden_size"),
        ("batch_size", 0, "batch_size"),
        ("max_steps", 0, "max_steps"),
        ("bits", 1, "bits"),
        ("bits", 65, "bits"),
        ("learning_rate", 0.0, "learning_rate"),
        ("check_every", 0, "check_every"),
    ],
)
def test_bad_config_is_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**{field: value}))


def test_cli_trains_saves_and_activates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = train_module.main(["--seed", "1", "--model-dir", str(tmp_path), "--quiet"])
    assert code == 0
    store = ModelStore(tmp_path)
    version = store.current()
    model = store.load(version)
    record = json.loads((tmp_path / version / "model.json").read_text())
    assert record["metrics"]["accuracy_8bit"] == 1.0
    assert record["hyperparameters"]["optimizer"] == "adam" and record["seed"] == 1
    assert record["parent"] is None and record["history"]
    assert model.params["w_h"].shape == (16, 16)
    assert version in capsys.readouterr().out


def test_cli_without_activate_keeps_current(tmp_path: Path) -> None:
    assert train_module.main(["--seed", "1", "--model-dir", str(tmp_path), "--quiet"]) == 0
    first = ModelStore(tmp_path).current()
    assert (
        train_module.main(["--seed", "2", "--model-dir", str(tmp_path), "--quiet", "--no-activate"])
        == 0
    )
    store = ModelStore(tmp_path)
    assert store.current() == first and len(store.versions()) == 2
    assert store.versions()[-1]["parent"] == first


def test_cli_refuses_to_activate_an_inaccurate_model(tmp_path: Path) -> None:
    code = train_module.main(
        ["--seed", "1", "--model-dir", str(tmp_path), "--quiet", "--max-steps", "5"]
    )
    assert code == 1
    store = ModelStore(tmp_path)
    assert store.current() is None and len(store.versions()) == 1


def test_cli_reports_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert train_module.main(["--hidden-size", "0", "--model-dir", str(tmp_path)]) == 2
    assert "hidden_size" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
