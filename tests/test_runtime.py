"""The inference core: every protocol goes through it, so every limit holds on every path."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app import create_app
from service.errors import BadRequest, PayloadTooLarge
from service.runtime import AUTO, TRACE_MAX_BITS, Runtime, integer, work_weight
from tests.conftest import wide_version
from training.store import ModelStore


def runtime_of(model_dir: Path, **config: object) -> Runtime:
    """The core of a real app on a copy of the bundled model."""
    app = create_app({"MODEL_DIR": str(model_dir), **config})
    return app.extensions["rnnadd"].runtime


@pytest.mark.parametrize(("value", "expected"), [
    (5, 5), (5.0, 5), (0.0, 0), (2.0**52, 2**52), (5.5, None), (2.0**53, None), (1e300, None),
    ("5", None), (None, None), ([5], None), (float("nan"), None), (float("inf"), None),
])
def test_integer_accepts_exact_integral_numbers_only(value: object, expected: int | None) -> None:
    assert integer(value) == expected


def test_the_core_adds_exactly_and_counts(model_dir: Path) -> None:
    runtime = runtime_of(model_dir)
    a, b = [0, 1, 2**40, 2**63 - 1, 12345], [0, 2**40, 7, 2**63 - 1, 54321]
    prediction = runtime.predict(a, b)
    assert prediction.sums == [x + y for x, y in zip(a, b, strict=True)]
    assert prediction.correct == [True] * 5 and prediction.bits == 64


def test_single_pairs_are_bound_by_the_work_limit_too(model_dir: Path) -> None:
    # MAX_WORK is at least the widest single pair, so shrink MAX_BITS to see the rule bite
    runtime = runtime_of(model_dir, MAX_BITS=14_000, MAX_WORK=14_000, MAX_BATCH=2)
    runtime.predict([1], [2], 14_000)
    with pytest.raises(PayloadTooLarge, match="pair-bits"):
        runtime.predict([1, 1], [2, 2], 14_000)


@pytest.mark.parametrize(("bits", "message"), [
    (True, "integer"), ("9", "integer"), (9.5, "integer"), (0, "between"), (4097, "between"),
    (3, "too small"),
])
def test_widths_are_checked_in_one_place(model_dir: Path, bits: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        runtime_of(model_dir).predict([100], [27], bits)


def test_operands_are_named_by_the_codec(model_dir: Path) -> None:
    runtime = runtime_of(model_dir, MAX_BITS=16)
    with pytest.raises(BadRequest) as caught:
        runtime.predict([1, 2**15], [3, 4], AUTO, name=lambda i, j: f"pairs[{i}][{j}]")
    assert caught.value.field == "pairs[1][0]" and "16 bits" in caught.value.detail
    with pytest.raises(BadRequest) as caught:
        runtime.predict([1], [-4])
    assert caught.value.field == "b"


def test_trace_agrees_with_the_prediction_and_the_true_carry(model_dir: Path) -> None:
    runtime = runtime_of(model_dir)
    a, b = 0b1011_0110, 0b0110_1111
    prediction, steps = runtime.trace(a, b)
    assert prediction.sums == [a + b] and len(steps) == prediction.bits
    carry = 0
    for i, step in enumerate(steps):
        x, y = a >> i & 1, b >> i & 1
        assert (step["a"], step["b"], step["carry"]) == (x, y, carry)
        assert step["target"] == (x + y + carry) & 1 == step["bit"]
        assert (step["probability"] > 0.5) == bool(step["bit"])
        assert len(step["hidden"]) == 16
        carry = (x + y + carry) >> 1


def test_trace_is_refused_above_its_width(model_dir: Path) -> None:
    runtime = runtime_of(model_dir)
    with pytest.raises(BadRequest, match="trace"):
        runtime.trace(1, 1, TRACE_MAX_BITS + 1)


# --- the work of a request counts the model's size -------------------------------------------

def test_work_counts_hidden_units_squared_so_a_big_stored_version_is_no_slower(
    model_dir: Path, admin_token: str
) -> None:
    """13 pairs of 1,024 bits fit RNNADD_MAX_WORK=14000 on 16 units; on 256 units they are 256
    times the work (one step is a 256 x 256 product), so the same request is refused at once."""
    app = create_app({"MODEL_DIR": str(model_dir), "MAX_WORK": 14_000, "ACCESS_LOG": False,
                      "ADMIN_TOKEN": admin_token})
    wide = wide_version(ModelStore(model_dir), 256)
    client = app.test_client()
    body = {"inputs": [{"name": n, "shape": [13], "datatype": "INT64", "data": [3] * 13}
                       for n in "ab"], "parameters": {"bits": 1024}}
    auth = {"Authorization": f"Bearer {admin_token}"}
    assert client.post("/v2/models/rnnadd/infer", json=body).status_code == 200
    refused = client.post(f"/v2/models/rnnadd/versions/{wide}/infer", json=body, headers=auth)
    assert refused.status_code == 413, refused.get_data(as_text=True)
    assert "256-unit" in refused.get_json()["error"]
    small = {**body, "inputs": [{**t, "shape": [1], "data": [3]} for t in body["inputs"]],
             "parameters": {"bits": 54}}  # 54 x 256 = 13,824 pair-bits of work: fits
    assert client.post(f"/v2/models/rnnadd/versions/{wide}/infer", json=small,
                       headers=auth).status_code == 200


@pytest.mark.parametrize(("hidden", "weight"), [(1, 1), (8, 1), (16, 1), (17, 2), (32, 4),
                                                (64, 16), (256, 256)])
def test_work_weight_is_relative_to_16_units(hidden: int, weight: int) -> None:
    assert work_weight(hidden) == weight


def test_the_default_limits_hold_for_the_16_unit_model(model_dir: Path) -> None:
    runtime = runtime_of(model_dir)
    runtime.check_work(2500, 1024, 16)  # 2,560,000: exactly RNNADD_MAX_WORK
    with pytest.raises(PayloadTooLarge):
        runtime.check_work(2501, 1024, 16)
    with pytest.raises(PayloadTooLarge, match="256-unit"):
        runtime.check_work(10, 1024, 256)
