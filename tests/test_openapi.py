"""The OpenAPI document: well-formed, and in step with the routes the app really has."""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator

from tests.conftest import Contract

UNDOCUMENTED = ("/static/", "/v2")  # Flask's static route; /v2 follows its own protocol


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


def test_document_basics(openapi_document: dict[str, Any]) -> None:
    assert openapi_document["openapi"].startswith("3.1")
    assert openapi_document["info"]["title"] and openapi_document["info"]["version"]
    for schema in openapi_document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_route_is_documented_and_every_documented_route_exists(
    app, openapi_document: dict[str, Any]
) -> None:
    assert routed(app) == documented(openapi_document)


def test_every_operation_documents_errors_as_problems(openapi_document: dict[str, Any]) -> None:
    responses = openapi_document["components"]["responses"]
    for path, item in openapi_document["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), (path, method)
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                if "$ref" in response:
                    response = responses[response["$ref"].split("/")[-1]]
                assert list(response["content"]) == ["application/problem+json"], (path, status)


def test_admin_operations_declare_the_bearer_scheme(openapi_document: dict[str, Any]) -> None:
    scheme = openapi_document["components"]["securitySchemes"]["adminToken"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for path in ("/v1/retrain", "/v1/models/{version}/activate"):
        assert openapi_document["paths"][path]["post"]["security"] == [{"adminToken": []}]


def test_examples_match_their_schemas(
    openapi_document: dict[str, Any], contract: Contract
) -> None:
    for name, schema in openapi_document["components"]["schemas"].items():
        for example in schema.get("examples", []):
            contract.validate({"$ref": f"#/components/schemas/{name}"}, example)
