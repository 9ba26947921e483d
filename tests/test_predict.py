"""POST /v1/predict and /v1/predict/batch: answers, defaults, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.inputs import parse_pairs
from tests.conftest import Contract, clone_version
from training.store import ModelStore

PREDICT, BATCH = "/v1/predict", "/v1/predict/batch"


def post(client: FlaskClient, path: str, body: Any) -> Any:
    """POST a JSON body and return the response."""
    return client.post(path, data=json.dumps(body), content_type="application/json")


def problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """Assert a problem document with this status (and field) and return it."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["type"].startswith("urn:rnnadd:problem:")
    if field is not None:
        assert body.get("field") == field, body
    return body


def test_predict_example(client: FlaskClient, contract: Contract, store) -> None:
    response = post(client, PREDICT, {"a": 3, "b": 5})
    assert response.status_code == 200
    assert response.get_json() == {
        "a": 3, "b": 5, "bits": 8, "binary": "00001000", "decimal": 8, "correct": True,
        "model_version": store.current(),
    }
    contract.check(response, PREDICT, "POST")


def test_strings_of_digits_are_accepted_and_echoed_as_integers(client: FlaskClient) -> None:
    body = post(client, PREDICT, {"a": "100", "b": "0027"}).get_json()
    assert (body["a"], body["b"], body["decimal"], body["correct"]) == (100, 27, 127, True)


@pytest.mark.parametrize(("a", "b", "bits"), [
    (0, 0, 8), (255, 0, 9), (255, 255, 9), (2**20, 1, 22), (2**64 - 1, 2**64 - 1, 65),
])
def test_default_bits_is_training_width_or_longest_input_plus_one(
    client: FlaskClient, a: int, b: int, bits: int
) -> None:
    body = post(client, PREDICT, {"a": a, "b": b}).get_json()
    assert body["bits"] == bits
    assert len(body["binary"]) == bits and int(body["binary"], 2) == body["decimal"]
    assert body["decimal"] == a + b and body["correct"] is True


def test_explicit_bits_sets_the_width(client: FlaskClient) -> None:
    body = post(client, PREDICT, {"a": 3, "b": 5, "bits": 16}).get_json()
    assert body["binary"] == "0000000000001000" and body["bits"] == 16


def test_wide_integers_as_strings(client: FlaskClient) -> None:
    a, b = 3**300, 7**150  # 476 and 422 bits: far wider than any JSON client's integers
    body = post(client, PREDICT, {"a": str(a), "b": str(b)}).get_json()
    assert body["a"] == a and body["bits"] == a.bit_length() + 1
    assert body["decimal"] == a + b and body["correct"] is True


def test_inputs_up_to_the_configured_width(client: FlaskClient) -> None:
    a = 2**4095 - 1
    body = post(client, PREDICT, {"a": str(a), "b": 0}).get_json()
    assert body["bits"] == 4096 and len(body["binary"]) == 4096
    assert int(body["binary"], 2) == body["decimal"]
    assert body["correct"] is (body["decimal"] == a)


def test_an_incorrect_prediction_is_reported_as_such(client: FlaskClient) -> None:
    body = post(client, PREDICT, {"a": 255, "b": 255, "bits": 9}).get_json()
    assert body["correct"] is (body["decimal"] == 510)


BAD_PREDICT = [
    # body, status, field
    ({"b": 5}, 400, "a"),
    ({"a": 3}, 400, "b"),
    ({}, 400, "a"),
    ({"a": -1, "b": 5}, 400, "a"),
    ({"a": 3, "b": -5}, 400, "b"),
    ({"a": 3.5, "b": 5}, 400, "a"),
    ({"a": 3.0, "b": 5}, 200, None),  # JSON Schema's integer: an integral number is one
    ({"a": 1e3, "b": 5}, 200, None),
    ({"a": 2.0**53, "b": 5}, 400, "a"),  # past 2**53 a float may not be the number written
    ({"a": float("inf"), "b": 5}, 400, "a"),
    ({"a": True, "b": 5}, 400, "a"),
    ({"a": False, "b": 5}, 400, "a"),
    ({"a": None, "b": 5}, 400, "a"),
    ({"a": "abc", "b": 5}, 400, "a"),
    ({"a": "", "b": 5}, 400, "a"),
    ({"a": "-3", "b": 5}, 400, "a"),
    ({"a": "+3", "b": 5}, 400, "a"),
    ({"a": " 3", "b": 5}, 400, "a"),
    ({"a": "3.0", "b": 5}, 400, "a"),
    ({"a": "1_000", "b": 5}, 400, "a"),
    ({"a": "٣", "b": 5}, 400, "a"),  # an Arabic-Indic digit: int() would take it
    ({"a": "0x10", "b": 5}, 400, "a"),
    ({"a": [3], "b": 5}, 400, "a"),
    ({"a": [[3]], "b": 5}, 400, "a"),
    ({"a": {"v": 3}, "b": 5}, 400, "a"),
    ({"a": 2**4095, "b": 0}, 400, "a"),
    ({"a": str(2**5000), "b": 0}, 400, "a"),
    ({"a": "9" * 100_000, "b": 0}, 400, "a"),
    ({"a": 3, "b": 5, "c": 1}, 400, "c"),
    ({"a": 3, "b": 5, "A": 1}, 400, "A"),
    ({"a": 3, "b": 5, "bits": 3}, 400, "bits"),
    ({"a": 3, "b": 5, "bits": 0}, 400, "bits"),
    ({"a": 3, "b": 5, "bits": -8}, 400, "bits"),
    ({"a": 3, "b": 5, "bits": 4097}, 400, "bits"),
    ({"a": 3, "b": 5, "bits": 8.0}, 200, None),
    ({"a": 3, "b": 5, "bits": 8.5}, 400, "bits"),
    ({"a": 3, "b": 5, "bits": "8"}, 400, "bits"),
    ({"a": 3, "b": 5, "bits": True}, 400, "bits"),
    ({"a": 3, "b": 5, "bits": None}, 400, "bits"),
    ({"a": 255, "b": 0, "bits": 8}, 400, "bits"),  # the sum needs 9 bits
    ({"a": 2**4094, "b": 0, "bits": 4096}, 200, None),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_PREDICT)
def test_bad_single_inputs(
    client: FlaskClient, contract: Contract, body: Any, status: int, field: str | None
) -> None:
    response = post(client, PREDICT, body)
    contract.check(response, PREDICT, "POST")
    if status == 200:
        assert response.status_code == 200
    else:
        problem(response, status, field)


@pytest.mark.parametrize("raw", [
    b"", b"{", b"not json", b'{"a": 3, "b": 5', b"\xff\xfe\x00", b'{"a": 3, "b": 5}}',
    b"[3, 5]", b"3", b'"a"', b"null", b"true", b"NaN", b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' + b"9" * 5000 + b', "b": 1}',
])
def test_empty_invalid_or_non_object_json_is_400(client: FlaskClient, raw: bytes) -> None:
    response = client.post(PREDICT, data=raw, content_type="application/json")
    problem(response, 400)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", None,
])
def test_a_body_that_is_not_json_is_415(client: FlaskClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(PREDICT, data=b'{"a": 3, "b": 5}', headers=headers)
    problem(response, 415)


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8", "application/JSON", "application/problem+json",
])
def test_json_content_types_are_accepted(client: FlaskClient, content_type: str) -> None:
    response = client.post(PREDICT, data=b'{"a": 3, "b": 5}', content_type=content_type)
    assert response.status_code == 200


def test_a_body_over_the_limit_is_413(client: FlaskClient) -> None:
    body = json.dumps({"a": 1, "b": 2, "pad": " " * (1024 * 1024)})
    problem(client.post(PREDICT, data=body, content_type="application/json"), 413)


def test_the_body_limit_is_configurable(model_dir: Path) -> None:
    small = create_app({"MODEL_DIR": str(model_dir), "MAX_BODY": 64}).test_client()
    assert post(small, PREDICT, {"a": 3, "b": 5}).status_code == 200
    problem(post(small, PREDICT, {"a": 3, "b": 5, "x": "y" * 64}), 413)


def test_get_on_predict_is_405_with_allow(client: FlaskClient) -> None:
    response = client.get(PREDICT)
    problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_batch_example(client: FlaskClient, contract: Contract, store) -> None:
    response = post(client, BATCH, {"pairs": [[3, 5], [100, 27]]})
    contract.check(response, BATCH, "POST")
    body = response.get_json()
    version = store.current()
    assert body == {"model_version": version, "accuracy": 1.0, "results": [
        {"a": 3, "b": 5, "bits": 8, "binary": "00001000", "decimal": 8, "correct": True,
         "model_version": version},
        {"a": 100, "b": 27, "bits": 8, "binary": "01111111", "decimal": 127, "correct": True,
         "model_version": version},
    ]}


def test_batch_matches_single_predictions(client: FlaskClient) -> None:
    pairs = [[0, 0], [1, 2**70], ["12345678901234567890", 7], [2**40, 2**40 - 1], [255, 255]]
    batch = post(client, BATCH, {"pairs": pairs, "bits": 80}).get_json()
    singles = [post(client, PREDICT, {"a": a, "b": b, "bits": 80}).get_json() for a, b in pairs]
    assert batch["results"] == singles
    assert batch["accuracy"] == sum(r["correct"] for r in singles) / len(singles)


def test_batch_default_bits_follows_the_longest_input(client: FlaskClient) -> None:
    body = post(client, BATCH, {"pairs": [[1, 1], [2**30, 0]]}).get_json()
    assert {r["bits"] for r in body["results"]} == {32}  # 2**30 has 31 bits


def test_batch_of_the_maximum_size(client: FlaskClient) -> None:
    pairs = [[i % 256, (i * 7) % 256] for i in range(10_000)]
    body = post(client, BATCH, {"pairs": pairs}).get_json()
    assert len(body["results"]) == 10_000 and body["accuracy"] == 1.0
    assert all(r["decimal"] == a + b for r, (a, b) in zip(body["results"], pairs, strict=True))


def test_batch_over_the_maximum_is_413(client: FlaskClient) -> None:
    problem(post(client, BATCH, {"pairs": [[1, 2]] * 10_001}), 413, "pairs")


def test_batch_limit_is_configurable(model_dir: Path) -> None:
    small = create_app({"MODEL_DIR": str(model_dir), "MAX_BATCH": 2}).test_client()
    assert post(small, BATCH, {"pairs": [[1, 2], [3, 4]]}).status_code == 200
    problem(post(small, BATCH, {"pairs": [[1, 2]] * 3}), 413, "pairs")


def test_batch_work_is_bounded(client: FlaskClient, contract: Contract) -> None:
    assert post(client, BATCH, {"pairs": [[1, 2]] * 10_000, "bits": 256}).status_code == 200
    response = post(client, BATCH, {"pairs": [[1, 2]] * 10_000, "bits": 257})
    contract.check(response, BATCH, "POST")
    assert "pair-bits" in problem(response, 413, "pairs")["detail"]
    wide = post(client, BATCH, {"pairs": [[1, 2]] * 625, "bits": 4096})
    assert wide.status_code == 200 and len(wide.get_json()["results"]) == 625


def test_work_limit_is_configurable(model_dir: Path) -> None:
    small = create_app({"MODEL_DIR": str(model_dir), "MAX_WORK": 14_000}).test_client()
    assert post(small, BATCH, {"pairs": [[1, 2]] * 1000, "bits": 14}).status_code == 200
    problem(post(small, BATCH, {"pairs": [[1, 2]] * 1000, "bits": 15}), 413, "pairs")
    assert post(small, PREDICT, {"a": 1, "b": 2, "bits": 4096}).status_code == 200


BAD_BATCH = [
    ({}, "pairs"),
    ({"pairs": None}, "pairs"),
    ({"pairs": {"a": 1}}, "pairs"),
    ({"pairs": "1,2"}, "pairs"),
    ({"pairs": [1, 2]}, "pairs[0]"),
    ({"pairs": []}, "pairs"),
    ({"pairs": [[1, 2], [3, 4, 5]]}, "pairs[1]"),
    ({"pairs": [[1]]}, "pairs[0]"),
    ({"pairs": [[]]}, "pairs[0]"),
    ({"pairs": [[1, 2], {"a": 1, "b": 2}]}, "pairs[1]"),
    ({"pairs": [[[1], 2]]}, "pairs[0][0]"),
    ({"pairs": [[1, [2, 3]]]}, "pairs[0][1]"),
    ({"pairs": [[1, 2], [3, -4]]}, "pairs[1][1]"),
    ({"pairs": [[1, 2.5]]}, "pairs[0][1]"),
    ({"pairs": [[1e300, 2]]}, "pairs[0][0]"),
    ({"pairs": [[True, 2]]}, "pairs[0][0]"),
    ({"pairs": [[None, 2]]}, "pairs[0][0]"),
    ({"pairs": [[1, "x"]]}, "pairs[0][1]"),
    ({"pairs": [[2**4095, 1]]}, "pairs[0][0]"),
    ({"pairs": [[1, 2]], "bits": 1}, "bits"),
    ({"pairs": [[1, 2]], "bits": 5000}, "bits"),
    ({"pairs": [[1, 2]], "bits": "8"}, "bits"),
    ({"pairs": [[1, 2]], "a": 1}, "a"),
    ({"pairs": [[1, 2]], "pair": 1}, "pair"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BATCH)
def test_bad_batches(client: FlaskClient, contract: Contract, body: Any, field: str) -> None:
    response = post(client, BATCH, body)
    contract.check(response, BATCH, "POST")
    problem(response, 400, field)


def test_batch_fast_and_slow_validation_agree() -> None:
    fast = parse_pairs({"pairs": [[1, 2], [3, 4]]}, 20)
    slow = parse_pairs({"pairs": [[1, 2], ["3", 4]]}, 20)  # a string takes the slow path
    assert fast == slow == ([1, 3], [2, 4])


def test_predict_without_a_model_is_503(tmp_path: Path, contract: Contract) -> None:
    client = create_app({"MODEL_DIR": str(tmp_path)}).test_client()
    for path, body in ((PREDICT, {"a": 3, "b": 5}), (BATCH, {"pairs": [[3, 5]]})):
        response = post(client, path, body)
        assert "No valid model" in problem(response, 503)["detail"]
        contract.check(response, path, "POST")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=json_values, b=json_values, extra=st.dictionaries(
    st.sampled_from(["bits", "pairs", "x"]), json_values, max_size=2))
def test_no_input_produces_a_server_error(client: FlaskClient, a: Any, b: Any, extra: Any) -> None:
    for path, body in ((PREDICT, {"a": a, "b": b, **extra}), (BATCH, {"pairs": [[a, b]], **extra}),
                       (BATCH, {"pairs": a})):
        response = post(client, path, body)
        assert response.status_code in (200, 400, 413), response.get_data(as_text=True)
        assert response.mimetype in ("application/json", "application/problem+json")


# --- answers of a version that is not trusted say so -----------------------------------------

@pytest.mark.parametrize("fast_path", [True, False])
def test_answers_of_a_forced_version_are_marked(model_dir: Path, auth: dict, admin_token: str,
                                                contract: Contract, fast_path: bool) -> None:
    """A version that fails the gate, activated by force, answers 3 + 5 wrongly: every answer
    says trusted: false, forced: true; a trusted version's answers carry neither."""
    app = create_app({"MODEL_DIR": str(model_dir), "ADMIN_TOKEN": admin_token,
                      "FAST_PATH": fast_path, "ACCESS_LOG": False})
    client = app.test_client()
    assert "trusted" not in post(client, PREDICT, {"a": 3, "b": 5}).get_json()
    store = ModelStore(model_dir)
    flipped = clone_version(store, flip_output=True)
    activated = client.post(f"/v1/models/{flipped}/activate", json={"force": True}, headers=auth)
    assert activated.get_json()["forced"] is True
    single = post(client, PREDICT, {"a": 3, "b": 5})
    contract.check(single, PREDICT, "POST")
    body = single.get_json()
    assert body["model_version"] == flipped and body["decimal"] != 8
    assert (body["trusted"], body["forced"]) == (False, True)
    traced = post(client, PREDICT, {"a": 3, "b": 5, "trace": True}).get_json()
    assert (traced["trusted"], traced["forced"]) == (False, True)
    for pairs in ([[3, 5], [1, 1]], [[3, 2**20]]):  # lookup-table widths and wider ones
        batch = post(client, BATCH, {"pairs": pairs, "bits": 30 if len(pairs) == 1 else 8})
        contract.check(batch, BATCH, "POST")
        answer = batch.get_json()
        assert (answer["trusted"], answer["forced"]) == (False, True)
        assert all((r["trusted"], r["forced"]) == (False, True) for r in answer["results"])
