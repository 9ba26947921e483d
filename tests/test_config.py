"""The work bound: every update, check, gate, fine-tune and certification a config can cause."""

from __future__ import annotations

import pytest

from training.config import (
    MAX_JOB_SECONDS,
    SECONDS_PER_STEP_BIT,
    SECONDS_PER_UNIT,
    ConfigError,
    TrainConfig,
    config_from_request,
    make_config,
    work_parts,
    work_seconds_estimate,
)
from training.gate import checks, work_pair_bits


def updates_only_estimate(config: TrainConfig) -> float:
    """The estimate as it was: updates alone, no check, gate or certification counted."""
    width = max(config.bits, config.long_bits)
    units = config.hidden_size * (config.hidden_size + 2)
    return config.max_steps * width * (SECONDS_PER_STEP_BIT + SECONDS_PER_UNIT
                                       * config.batch_size * units)


def test_a_check_at_every_update_is_refused_naming_check_every() -> None:
    body = {"check_every": 1, "early_stop": False, "max_steps": 20_000}
    assert updates_only_estimate(make_config(body, bound_work=False)) < MAX_JOB_SECONDS / 10
    with pytest.raises(ConfigError) as info:
        config_from_request(body)
    assert info.value.field == "check_every"
    assert "check_every" in str(info.value) and "600" in str(info.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"certify_seconds": 60, "finetune_rounds": 10, "finetune_steps": 5_000},
         "certify_seconds"),
        ({"finetune_rounds": 10, "finetune_steps": 5_000, "batch_size": 1024}, "finetune_steps"),
        ({"deadline_seconds": 601}, "deadline_seconds"),
        ({"hidden_size": 256, "max_steps": 20_000}, "max_steps"),
    ],
)
def test_work_over_the_bound_is_refused_with_the_field(body: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_request(body)
    assert info.value.field == field and field in str(info.value)


def test_the_cli_may_ask_for_more_work_than_a_job() -> None:
    config = make_config({"certify_seconds": 60, "finetune_rounds": 10, "finetune_steps": 5_000},
                         bound_work=False)
    assert work_seconds_estimate(config) > MAX_JOB_SECONDS


def test_the_default_and_original_configs_fit_the_bound() -> None:
    assert work_seconds_estimate(TrainConfig()) < MAX_JOB_SECONDS / 2
    original = config_from_request({"preset": "original"})
    assert not original.certify and original.finetune_rounds == 0
    assert work_parts(original)["certify"] == work_parts(original)["finetune"] == 0.0


def test_every_part_of_the_work_grows_with_its_settings() -> None:
    base = work_parts(TrainConfig())
    assert work_parts(TrainConfig(check_every=1))["checks"] > 5 * base["checks"]
    # budgets 5, 10, 20, 40 s instead of 2, 4, 8, 16 s
    assert work_parts(TrainConfig(certify_seconds=40.0))["certify"] > base["certify"] + 44
    assert work_parts(TrainConfig(finetune_steps=3000))["finetune"] > 2.9 * base["finetune"]
    assert work_parts(TrainConfig(hidden_size=32))["checks"] > 2 * base["checks"]
    assert work_parts(TrainConfig(), 16_384)["checks"] > 2 * base["checks"]
    assert work_parts(TrainConfig(certify=False))["certify"] == 0.0


def test_the_gates_work_is_what_its_checks_run() -> None:
    """work_pair_bits counts pairs x the run length each check's pairs are run at."""
    from training.gate import _run_bits

    for max_bits in (8, 100, 4096):
        total = 0
        for name, pairs in checks(max_bits):
            for _, _, width in pairs:
                total += _run_bits(width, max_bits) if name == "carry_chains" else width
        assert work_pair_bits(max_bits) == total
