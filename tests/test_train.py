"""The trainer converges, is deterministic, and its CLI stores verified versions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import clone_version
from training import rnn
from training import train as train_module
from training.certify import Certificate, verify
from training.config import (
    FIELDS,
    MAX_JOB_SECONDS,
    ConfigError,
    config_from_request,
    max_gate_runs,
    request_schema,
    work_seconds_estimate,
)
from training.store import ModelStore
from training.train import TrainConfig, make_config, train


@pytest.mark.parametrize("seed", range(2))
def test_default_config_reaches_a_certified_model(seed: int) -> None:
    result = train(TrainConfig(seed=seed))
    assert result.accuracy == 1.0 and result.gate is not None and result.gate["passed"]
    assert result.gate["max_bits"] == 4096 and result.stopped is None
    assert result.certified and result.verdict is not None
    assert result.verdict.status == "certified" and result.finetune[-1]["status"] == "certified"
    # the proof holds for the weights returned, checked again from its bytes
    verify(result.params, Certificate.from_bytes(result.verdict.certificate.to_bytes()))
    assert result.steps < TrainConfig().max_steps + 4 * TrainConfig().finetune_steps


def test_original_preset_reaches_full_accuracy_at_seed_0() -> None:
    config = make_config({"preset": "original", "seed": 0})
    assert (config.optimizer, config.learning_rate, config.batch_size) == ("sgd", 0.1, 1)
    assert (config.hidden_size, config.max_steps, config.biases) == (16, 10_000, False)
    assert (config.certify, config.finetune_rounds) == (False, 0)
    result = train(config)
    assert result.accuracy == 1.0 and result.steps <= 10_000
    assert result.verdict is None and result.finetune == [] and not result.certified
    summary = result.certificate_summary()
    assert summary["status"] == "unknown" and summary["certified"] is False
    assert "certify false" in summary["reason"]


def saturation(params: rnn.Params, seed: int) -> float:
    """mean h (1 - h) over 64 random 32-bit pairs."""
    rng = np.random.default_rng(seed)
    x, _ = rnn.batch(rng.integers(0, 1 << 31, 64), rng.integers(0, 1 << 31, 64), 32)
    h = rnn.forward(params, x)["h"][1:]
    return float(np.mean(h * (1 - h)))


def test_a_fine_tune_round_saturates_the_hidden_units() -> None:
    config = TrainConfig(seed=4, certify=False)
    trained = train(config).params
    _, draw = train_module.sources(config)
    tuned = {k: v.copy() for k, v in trained.items()}
    clock = train_module._Clock(config, None)
    made, _ = train_module._finetune(tuned, config, draw, clock, 0, 0, None)
    assert made == config.finetune_steps
    assert saturation(tuned, 1) < 0.7 * saturation(trained, 1)
    plain = {k: v.copy() for k, v in trained.items()}
    train_module._finetune(plain, TrainConfig(seed=4, saturation=0.0), draw, clock, 0, 0, None)
    assert saturation(tuned, 1) < saturation(plain, 1)


def test_a_short_deadline_stops_training_and_says_so() -> None:
    config = TrainConfig(seed=0, max_steps=100_000, early_stop=False, deadline_seconds=0.3)
    result = train(config)
    assert result.stopped is not None and "deadline" in result.stopped
    assert 0 < result.steps < 100_000 and not result.certified
    assert "deadline" in result.certificate_summary()["reason"]


def test_a_deadline_during_certification_stops_it_and_says_so() -> None:
    """Given less time than its fine-tunes need, the trainer stops in them, uncertified."""
    config = TrainConfig(seed=1, finetune_steps=5_000, deadline_seconds=1.5)
    result = train(config)
    assert result.stopped is not None and "deadline" in result.stopped
    assert result.finetune and result.finetune[0]["steps"] < 5_000 and not result.certified


def test_full_gates_back_off_so_every_check_cannot_run_one(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"quick": 0, "gate": 0}
    real_quick, real_gate = train_module.quick_check, train_module.run_gate

    def quick(*args: object, **kwargs: object) -> bool:
        calls["quick"] += 1
        return real_quick(*args, **kwargs)

    def gate(*args: object, **kwargs: object) -> dict:
        calls["gate"] += 1
        return real_gate(*args, **kwargs)

    monkeypatch.setattr(train_module, "quick_check", quick)
    monkeypatch.setattr(train_module, "run_gate", gate)
    config = TrainConfig(seed=1, max_steps=300, check_every=1, early_stop=False, certify=False)
    result = train(config)
    assert result.steps == 300 and calls["gate"] >= 2
    assert calls["gate"] <= max_gate_runs(config.max_steps // config.check_every + 1)
    exact_checks = sum(h["accuracy"] == 1.0 for h in result.history)
    assert exact_checks > 3 * calls["gate"]  # without the back-off most of these would gate


def test_training_and_fine_tuning_are_deterministic_for_a_seed() -> None:
    """(The certifier's verdict is not: its search is bounded in wall-clock time.)"""
    config = TrainConfig(seed=3, certify=False)
    first, second = train(config), train(config)
    assert first.steps == second.steps
    for name in first.params:
        np.testing.assert_array_equal(first.params[name], second.params[name])
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]
    tuned = []
    for _ in range(2):
        params, draw = train_module.sources(config)
        params = {k: v.copy() for k, v in first.params.items()}
        train_module._finetune(params, TrainConfig(seed=3, finetune_steps=50), draw,
                               train_module._Clock(config, None), 0, 0, None)
        tuned.append(params)
    for name in first.params:
        np.testing.assert_array_equal(tuned[0][name], tuned[1][name])
        assert not np.array_equal(tuned[0][name], first.params[name])


def test_biases_are_trained_and_returned() -> None:
    result = train(TrainConfig(seed=0, biases=True, max_steps=50, early_stop=False))
    assert result.steps == 50 and set(result.params) == {"w_i", "w_h", "w_o", "b_h", "b_o"}
    assert np.any(result.params["b_h"] != 0)


def test_progress_is_reported_at_each_check() -> None:
    seen: list[tuple[int, int, float, float]] = []
    train(
        TrainConfig(seed=0, max_steps=40, check_every=10, early_stop=False),
        lambda *args: seen.append(args),
    )
    assert [s[0] for s in seen] == [10, 20, 30, 40]
    assert all(s[1] == 40 and s[2] > 0 and 0 <= s[3] <= 1 for s in seen)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("long_bits", 4, "long_bits"),
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


def test_cli_trains_certifies_saves_and_activates(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = train_module.main(["--seed", "1", "--model-dir", str(tmp_path), "--quiet"])
    assert code == 0
    store = ModelStore(tmp_path)
    version = store.current()
    model = store.load(version)
    record = json.loads((tmp_path / version / "model.json").read_text())
    assert record["metrics"]["accuracy_8bit"] == 1.0 and record["gate"]["passed"]
    assert store.last_good() == version
    assert record["hyperparameters"]["optimizer"] == "adam" and record["seed"] == 1
    assert record["parent"] is None and record["history"]
    assert model.params["w_h"].shape == (16, 16)
    out = capsys.readouterr().out
    assert version in out and "certified every width" in out
    summary = record["certificate"]
    assert summary["status"] == "certified" and summary["certified"] is True
    assert {"method", "classes", "seconds"} <= set(summary) and summary["seconds"] > 0
    data = (tmp_path / version / "certificate.npz").read_bytes()
    verify(model.params, Certificate.from_bytes(data))  # the stored proof, for these weights
    assert not (tmp_path / version / "training_curve.png").exists()  # drawn only when asked


def test_cli_without_activate_keeps_current(tmp_path: Path) -> None:
    assert train_module.main(["--seed", "1", "--model-dir", str(tmp_path), "--quiet"]) == 0
    first = ModelStore(tmp_path).current()
    argv = ["--seed", "2", "--model-dir", str(tmp_path), "--quiet", "--no-activate",
            "--no-certify"]
    assert train_module.main(argv) == 0
    store = ModelStore(tmp_path)
    assert store.current() == first and len(store.versions()) == 2
    assert store.versions()[-1]["parent"] == first


def test_cli_refuses_to_activate_a_model_that_fails_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = train_module.main(
        ["--seed", "1", "--model-dir", str(tmp_path), "--quiet", "--max-steps", "5"]
    )
    assert code == 1
    store = ModelStore(tmp_path)
    assert store.current() is None and len(store.versions()) == 1
    assert "not activated: the gate failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        # the search gets no time
        (["--certify-seconds", "0.001", "--finetune-rounds", "1", "--finetune-steps", "10"],
         "not certified (unknown"),
        (["--no-certify"], "certify false"),
        (["--deadline-seconds", "0.05", "--max-steps", "100000", "--no-early-stop"], "deadline"),
    ],
)
def test_cli_saves_an_uncertified_model_but_does_not_activate_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], says: str
) -> None:
    argv = ["--seed", "1", "--model-dir", str(tmp_path), "--quiet", *flags]
    assert train_module.main(argv) == 1
    store = ModelStore(tmp_path)
    (record,) = store.versions()
    assert store.current() is None and store.last_good() is None
    assert not (tmp_path / record["version"] / "certificate.npz").exists()
    assert store.record(record["version"])["certificate"]["certified"] is False
    out = capsys.readouterr()
    assert "not activated" in out.err and says in out.err + out.out


def test_train_and_save_activates_only_a_certified_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(train_module.NotCertified) as info:
        quick = TrainConfig(seed=1, certify_seconds=0.001, finetune_rounds=1, finetune_steps=10)
        train_module.train_and_save(quick, store, activate=True)
    assert info.value.reason == "it has no certificate" and store.current() is None
    assert len(store.versions()) == 1  # saved, inactive
    version, record = train_module.train_and_save(TrainConfig(seed=1), store, activate=True)
    assert store.current() == version and record["certificate"]["certified"] is True


def test_cli_draws_the_curve_only_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    argv = ["--seed", "1", "--model-dir", str(tmp_path), "--quiet", "--no-certify",
            "--no-activate", "--curve"]
    assert train_module.main(argv) == 0
    (record,) = ModelStore(tmp_path).versions()
    assert (tmp_path / record["version"] / "training_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_curve_without_matplotlib_says_so_and_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "curve_available", lambda: False)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import fails
    argv = ["--seed", "1", "--model-dir", str(tmp_path), "--quiet", "--no-certify",
            "--no-activate", "--curve"]
    assert train_module.main(argv) == 0
    assert "needs matplotlib" in capsys.readouterr().err
    (record,) = ModelStore(tmp_path).versions()
    assert not (tmp_path / record["version"] / "training_curve.png").exists()


def test_the_cli_path_does_not_import_matplotlib(tmp_path: Path) -> None:
    code = ("import sys; from training import train; "
            f"train.main(['--seed', '1', '--model-dir', {str(tmp_path)!r}, '--quiet', "
            "'--no-certify', '--no-activate']); print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_cli_reports_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert train_module.main(["--hidden-size", "0", "--model-dir", str(tmp_path)]) == 2
    assert "hidden_size" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hidden_size": True}, "hidden_size"),  # bool is not an int
        ({"hidden_size": 5.5}, "hidden_size"),
        ({"learning_rate": 10**400}, "learning_rate"),  # range error, not OverflowError
        ({"learning_rate": -(10**400)}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"beta1": 1.0}, "beta1"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"biases": 1}, "biases"),
        ({"bits": 65}, "bits"),
        ({"colour": "red"}, "colour"),
        ({"preset": "fast"}, "preset"),
        ({"hidden_size": 256, "batch_size": 4096, "max_steps": 100_000}, "max_steps"),
    ],
)
def test_config_from_request_refuses_with_the_field(body: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_request(body)
    assert info.value.field == field and field in str(info.value)


def test_config_from_request_accepts_integral_floats_and_presets() -> None:
    config = config_from_request({"hidden_size": 5.0, "seed": 7, "learning_rate": 1})
    assert config.hidden_size == 5 and type(config.hidden_size) is int
    assert config.learning_rate == 1.0 and type(config.learning_rate) is float
    original = config_from_request({"preset": "original", "seed": 2})
    assert (original.optimizer, original.batch_size, original.long_bits) == ("sgd", 1, 0)
    assert work_seconds_estimate(TrainConfig()) < MAX_JOB_SECONDS


def test_request_schema_states_the_bounds_of_every_field() -> None:
    schema = request_schema()
    assert schema["additionalProperties"] is False and set(schema["properties"]) == set(FIELDS)
    assert schema["properties"]["hidden_size"] == {
        "type": "integer", "minimum": 1, "maximum": 256, "default": 16,
        "description": FIELDS["hidden_size"].help}
    assert schema["properties"]["learning_rate"]["exclusiveMinimum"] == 0.0
    assert schema["properties"]["optimizer"]["enum"] == ["adam", "sgd"]


def test_every_cli_flag_has_help() -> None:
    parser_help = train_module.parse_args.__doc__
    assert parser_help
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        train_module.parse_args(["--help"])
    text = out.getvalue()
    for name in FIELDS:
        assert f"--{name.replace('_', '-')}" in text
    assert "--no-early-stop" in text


def test_training_into_the_bundled_directory_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(train_module, "BUNDLED_DIR", tmp_path)
    fast = ["--quiet", "--seed", "1", "--no-certify"]  # not activated then (exit 1): no matter
    assert train_module.main(["--model-dir", str(tmp_path), *fast]) == 1
    assert "changes its CURRENT" in capsys.readouterr().err
    other = tmp_path / "elsewhere"
    assert train_module.main(["--model-dir", str(other), *fast]) == 1
    assert "changes its CURRENT" not in capsys.readouterr().err


def test_the_cli_keeps_only_the_newest_versions_it_is_told_to(model_dir: Path) -> None:
    store = ModelStore(model_dir)
    bundled = store.current()
    older = [clone_version(store) for _ in range(3)]
    code = train_module.main(["--model-dir", str(model_dir), "--quiet", "--seed", "1",
                              "--no-certify", "--keep-models", "2"])
    assert code == 1  # saved, not certified, so not activated: CURRENT stays the bundled one
    kept = store.version_ids()
    assert bundled in kept and older[-1] in kept and len(kept) == 3  # 2 newest + CURRENT
    assert not set(older[:-1]) & set(kept)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_the_cli_refuses_a_bad_keep_models(value: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_module.parse_args(["--model-dir", str(tmp_path), "--keep-models", value])
    assert exit_info.value.code == 2
