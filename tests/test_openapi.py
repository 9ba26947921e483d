"""The OpenAPI document: well-formed, in step with the routes, and with what the server accepts.

tests/test_fuzz.py runs schemathesis against a real gunicorn; these tests pin the document's
shape and the findings of issue 10 ("A schema fuzzer in CI") with plain requests, so each is
named and fast.
"""

from __future__ import annotations

import copy
import json
import re
import struct
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from service.app import create_app
from service.openapi import document as served_document
from service.settings import Settings
from tests.conftest import Contract

UNDOCUMENTED = ("/static/", "/assets/")  # files, not API
V2_HEALTH = re.compile(r"^/v2(/health/(live|ready)|/models/\{model_name\}(/versions/\{version\})?"
                       r"/ready)$")
# Where service/openapi.py writes this server's limits into the stored document.
PATCHED = (
    ("PredictRequest", "properties", "bits", "maximum"),
    ("BatchRequest", "properties", "bits", "maximum"),
    ("BatchRequest", "properties", "pairs", "maxItems"),
    ("NonNegativeInteger", "oneOf", 1, "maxLength"),
)


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(path, METHOD) pairs the document describes."""
    return {(path, method.upper()) for path, item in document["paths"].items()
            for method in item}


def routed(app) -> set[tuple[str, str]]:
    """(path, METHOD) pairs the app serves, in OpenAPI's {param} spelling."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(UNDOCUMENTED):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        found |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return found


def request_schema(contract: Contract, path: str) -> dict[str, Any]:
    """The JSON request body schema of POST path."""
    body = contract.document["paths"][path]["post"]["requestBody"]
    return body["content"]["application/json"]["schema"]


def response_of(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """A response object, following a $ref into components.responses."""
    if "$ref" in response:
        return document["components"]["responses"][response["$ref"].split("/")[-1]]
    return response


def test_document_basics(openapi_document: dict[str, Any]) -> None:
    assert openapi_document["openapi"].startswith("3.1")
    assert openapi_document["info"]["title"] and openapi_document["info"]["version"]
    for schema in openapi_document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    refs = re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', json.dumps(openapi_document))
    for kind, name in refs:
        assert name in openapi_document["components"][kind], (kind, name)


def test_every_route_of_v1_and_v2_is_documented_and_every_documented_route_exists(
    app, openapi_document: dict[str, Any]
) -> None:
    assert routed(app) == documented(openapi_document)
    assert {p for p, _ in documented(openapi_document) if p.startswith("/v2")} >= {
        "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}",
        "/v2/models/{model_name}/versions/{version}", "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/versions/{version}/ready", "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{version}/infer",
    }


GUNICORN_REFUSALS = ("414", "431")


def test_errors_are_problems_under_v1_and_error_objects_under_v2(
    openapi_document: dict[str, Any],
) -> None:
    for path, item in openapi_document["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), (path, method)
            assert "405" in operation["responses"] and "500" in operation["responses"]
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                content = response_of(openapi_document, response)["content"]
                if not path.startswith("/v2") or status in GUNICORN_REFUSALS:
                    # 414/431: refused before any path is parsed, so one format for every path
                    assert list(content) == ["application/problem+json"], (path, status)
                elif status == "400" and V2_HEALTH.match(path):
                    assert list(content) == ["text/plain"], (path, status)  # "false"
                else:
                    assert list(content) == ["application/json"], (path, status)
                    schema = content["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/InferenceError"}


def test_admin_operations_declare_the_bearer_scheme(openapi_document: dict[str, Any]) -> None:
    scheme = openapi_document["components"]["securitySchemes"]["adminToken"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    admin = {("/v1/retrain", "post"), ("/v1/models/{version}/activate", "post"),
             ("/v1/jobs/{job_id}", "delete"), ("/v2/repository/models/{model_name}/load", "post"),
             ("/v2/repository/models/{model_name}/unload", "post")}
    optional = {("/v2/models/{model_name}/versions/{version}/infer", "post"),  # untrusted
                ("/v2/models/{model_name}/versions/{version}/ready", "get")}  # versions
    for path, item in openapi_document["paths"].items():
        for method, operation in item.items():
            expected = [{"adminToken": []}] if (path, method) in admin else None
            if (path, method) in optional:
                expected = [{}, {"adminToken": []}]
            assert operation.get("security") == expected, (path, method)
            if expected:
                assert "401" in operation["responses"], (path, method)
            if expected and (path, method) != ("/v2/models/{model_name}/versions/{version}/ready",
                                               "get"):
                assert "403" in operation["responses"], (path, method)


def test_examples_match_their_schemas(
    openapi_document: dict[str, Any], contract: Contract
) -> None:
    for name, schema in openapi_document["components"]["schemas"].items():
        for example in schema.get("examples", []):
            contract.validate({"$ref": f"#/components/schemas/{name}"}, example)


def test_the_binary_tensor_extension_is_documented(openapi_document: dict[str, Any]) -> None:
    for path in ("/v2/models/{model_name}/infer",
                 "/v2/models/{model_name}/versions/{version}/infer"):
        operation = openapi_document["paths"][path]["post"]
        assert set(operation["requestBody"]["content"]) == {"application/json",
                                                            "application/octet-stream"}
        assert "Inference-Header-Content-Length" in {p["name"] for p in operation["parameters"]}
        ok = operation["responses"]["200"]
        assert set(ok["content"]) == {"application/json", "application/octet-stream"}
        assert "Inference-Header-Content-Length" in ok["headers"]


# --- the served document -----------------------------------------------------------------------


@pytest.fixture
def limited(model_dir, admin_token):
    """An app with limits other than the defaults, to see them in the served document."""
    return create_app({"MODEL_DIR": str(model_dir), "ADMIN_TOKEN": admin_token,
                       "MAX_BITS": LIMITED.max_bits, "MAX_BATCH": LIMITED.max_batch,
                       "ACCESS_LOG": False, "TESTING": True})


LIMITED = Settings(max_bits=300, max_batch=7)


def limit(keys: tuple, settings: Settings) -> int:
    """The setting a patched key states."""
    return {"maxItems": settings.max_batch, "maxLength": settings.max_digits}.get(
        keys[-1], settings.max_bits)


def get_in(document: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """components.schemas[keys[0]][keys[1]]..."""
    node = document["components"]["schemas"]
    for key in keys:
        node = node[key]
    return node


def test_served_document_differs_from_the_stored_one_only_in_the_patched_limits(
    limited, openapi_document: dict[str, Any]
) -> None:
    response = limited.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_data().endswith(b"}\n")
    served = response.get_json()
    for keys in PATCHED:
        assert get_in(served, keys) == limit(keys, LIMITED), keys
    # The retrain schema is the trainer's own, with `activate` from the stored document.
    stored_activate = openapi_document["components"]["schemas"]["RetrainRequest"]["properties"][
        "activate"]
    assert served["components"]["schemas"]["RetrainRequest"]["properties"]["activate"] == (
        stored_activate)
    expected = copy.deepcopy(openapi_document)
    for keys in PATCHED:
        *parent, last = keys
        get_in(expected, tuple(parent))[last] = get_in(served, keys)
    expected["components"]["schemas"]["RetrainRequest"] = served["components"]["schemas"][
        "RetrainRequest"]
    assert served == expected


def test_stored_document_holds_the_default_limits(openapi_document: dict[str, Any]) -> None:
    defaults = Settings()
    for keys in PATCHED:
        assert get_in(openapi_document, keys) == limit(keys, defaults), keys
    served_retrain = served_document(defaults)["components"]["schemas"]["RetrainRequest"]
    assert served_retrain == openapi_document["components"]["schemas"]["RetrainRequest"], (
        "regenerate RetrainRequest in service/openapi.json from training's request_schema()")


# --- issue 10, "A schema fuzzer in CI": what the server accepts is what the schema says ---------


def test_bits_up_to_the_documented_maximum_are_accepted_and_above_it_refused(
    limited, contract: Contract
) -> None:
    client = limited.test_client()
    document = client.get("/openapi.json").get_json()
    served = Contract(document)
    top = document["components"]["schemas"]["PredictRequest"]["properties"]["bits"]["maximum"]
    assert top == 300
    for path, body in (("/v1/predict", {"a": 3, "b": 5}),
                       ("/v1/predict/batch", {"pairs": [[3, 5]]})):
        response = client.post(path, json={**body, "bits": top})
        assert response.status_code == 200, response.get_data(as_text=True)
        served.check(response, path, "POST")
        response = client.post(path, json={**body, "bits": top + 1})
        assert response.status_code == 400 and response.get_json()["field"] == "bits"
        served.check(response, path, "POST")


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/predict", {"a": 3.0, "b": 5, "bits": 8.0}),
    ("/v1/predict", {"a": 3, "b": 5.0, "trace": True}),
    ("/v1/predict/batch", {"pairs": [[3.0, 5.0], [1, 2]], "bits": 8.0}),
])
def test_integers_written_as_floats_are_integers(
    client, contract: Contract, path: str, body: dict[str, Any]
) -> None:
    contract.validate(request_schema(contract, path), body)
    response = client.post(path, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    contract.check(response, path, "POST")
    result = response.get_json()
    first = result["results"][0] if "results" in result else result
    assert (first["a"], first["b"], first["decimal"]) == (3, 5, 8)


def test_fractions_are_refused_as_the_schema_says(client, contract: Contract) -> None:
    for body in ({"a": 3.5, "b": 5}, {"a": 3, "b": 5, "bits": 8.5}, {"a": True, "b": 5}):
        with pytest.raises(Exception, match=r"is not valid|is not of type"):
            contract.validate(request_schema(contract, "/v1/predict"), body)
        response = client.post("/v1/predict", json=body)
        assert response.status_code == 400
        contract.check(response, "/v1/predict", "POST")


def test_a_batch_over_max_items_is_the_documented_413(limited) -> None:
    client = limited.test_client()
    served = Contract(client.get("/openapi.json").get_json())
    pairs = served.document["components"]["schemas"]["BatchRequest"]["properties"]["pairs"]
    assert pairs["maxItems"] == 7 and "413" in pairs["description"]
    assert client.post("/v1/predict/batch", json={"pairs": [[1, 2]] * 7}).status_code == 200
    response = client.post("/v1/predict/batch", json={"pairs": [[1, 2]] * 8})
    assert response.status_code == 413 and response.get_json()["field"] == "pairs"
    served.check(response, "/v1/predict/batch", "POST")


# --- real responses of the new fields and of /v2 validate against the document -----------------


def test_new_v1_fields_validate(client, auth, contract: Contract, store) -> None:
    response = client.post("/v1/predict", json={"a": 6, "b": 7, "trace": True})
    assert response.status_code == 200 and len(response.get_json()["trace"]) >= 4
    contract.check(response, "/v1/predict", "POST")
    response = client.post("/v1/predict", json={"a": 1 << 300, "b": 1, "trace": True})
    assert response.status_code == 400 and response.get_json()["field"] == "trace"
    contract.check(response, "/v1/predict", "POST")
    for path in ("/readyz", "/v1/model", "/v1/models", "/v1/jobs", "/healthz"):
        contract.check(client.get(path), path)
    version = store.current()
    activate = "/v1/models/{version}/activate"
    for kwargs in ({}, {"json": {}}, {"json": {"force": False}}):
        response = client.post(f"/v1/models/{version}/activate", headers=auth, **kwargs)
        assert response.status_code == 200, response.get_data(as_text=True)
        contract.check(response, activate, "POST")
    response = client.post(f"/v1/models/{version}/activate", headers=auth, json={"force": 1})
    assert response.status_code == 400
    contract.check(response, activate, "POST")
    job = "/v1/jobs/{job_id}"
    response = client.delete("/v1/jobs/20261129T040000Z-0a1b2c", headers=auth)
    assert response.status_code == 404
    contract.check(response, job, "DELETE")
    response = client.delete("/v1/jobs/20261129T040000Z-0a1b2c")
    assert response.status_code == 401
    contract.check(response, job, "DELETE")


def v2_body(**extra: Any) -> dict[str, Any]:
    """A JSON inference request for 3 + 5 and 100 + 27."""
    return {"inputs": [{"name": "a", "datatype": "INT64", "shape": [2], "data": [3, 100]},
                       {"name": "b", "datatype": "INT64", "shape": [2], "data": [5, 27]}],
            **extra}


def test_v2_responses_validate(client, contract: Contract, store) -> None:
    version = store.current()
    for path, template in (
        ("/v2", "/v2"),
        ("/v2/health/live", "/v2/health/live"),
        ("/v2/health/ready", "/v2/health/ready"),
        ("/v2/models/rnnadd", "/v2/models/{model_name}"),
        (f"/v2/models/rnnadd/versions/{version}", "/v2/models/{model_name}/versions/{version}"),
        ("/v2/models/rnnadd/ready", "/v2/models/{model_name}/ready"),
        (f"/v2/models/rnnadd/versions/{version}/ready",
         "/v2/models/{model_name}/versions/{version}/ready"),
        ("/v2/models/other", "/v2/models/{model_name}"),
        ("/v2/models/rnnadd/versions/20261129T040000Z-0a1b2c",
         "/v2/models/{model_name}/versions/{version}"),
    ):
        contract.check(client.get(path), template)
    infer = "/v2/models/{model_name}/infer"
    for body in (v2_body(), v2_body(id="x", parameters={"bits": 8.0})):
        response = client.post("/v2/models/rnnadd/infer", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        contract.check(response, infer, "POST")
    response = client.post("/v2/models/rnnadd/infer", json=v2_body(outputs=[{"name": "x"}]))
    assert response.status_code == 400
    contract.check(response, infer, "POST")
    response = client.put("/v2/models/rnnadd/infer")
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert set(response.get_json()) == {"error"}


def test_v2_binary_answers_match_the_document(client, contract: Contract) -> None:
    head = json.dumps({"inputs": [
        {"name": "a", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}},
        {"name": "b", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}},
    ], "parameters": {"binary_data_output": True}}).encode()
    response = client.post("/v2/models/rnnadd/infer", data=head + struct.pack("<qq", 3, 5),
                           headers={"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.get_data(as_text=True)
    path = "/v2/models/{model_name}/infer"
    assert response.mimetype == "application/octet-stream"
    contract.schema_for(path, "POST", 200, response.mimetype)
    length = int(response.headers["Inference-Header-Content-Length"])
    contract.validate({"$ref": "#/components/schemas/InferenceResponse"},
                      json.loads(response.get_data()[:length]))
