"""The pages and their assets through Flask's test client: types, headers, and no outside hosts."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from service import pages

STATIC = Path(pages.__file__).with_name("static")
TEMPLATES = Path(pages.__file__).with_name("templates")
VENDORED = STATIC / "swagger-ui"
# Ours: every byte written for this project. The vendored bundle is checked by checksum instead
# (it holds URLs as strings, e.g. of the specs it implements; the CSP keeps the browser home).
OURS = sorted(p for p in [*STATIC.glob("*.*"), *TEMPLATES.glob("*.html")])
URL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)
NAMESPACES = {"//www.w3.org"}  # XML namespace names: identifiers, never fetched
REFERENCE = re.compile(r"""(?:src|href)="([^"]+)\"""")


def test_home_page_is_html_with_its_scripts(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    for needed in ('id="add-form"', 'id="a"', 'id="b"', 'id="steps"', 'id="model-facts"',
                   'id="gate"', 'id="curve"', 'type="module"'):
        assert needed in html
    assert "<script>" not in html and "style=" not in html, "inline code would need the CSP relaxed"


def test_docs_page_loads_the_vendored_swagger_ui(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "/assets/swagger-ui/swagger-ui-bundle.js" in html
    assert "/assets/swagger-ui/swagger-ui.css" in html
    assert 'data-spec="/openapi.json"' in html


@pytest.mark.parametrize("page", ["/", "/docs"])
def test_every_referenced_asset_is_served_with_its_type(client: FlaskClient, page: str) -> None:
    html = client.get(page).get_data(as_text=True)
    references = REFERENCE.findall(html)
    assert references
    types = {".js": "text/javascript", ".css": "text/css", ".json": "application/json"}
    for ref in references:
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/"), f"{page} refers to {ref}: not this server"
        response = client.get(ref)
        assert response.status_code == 200, ref
        suffix = Path(ref).suffix
        if suffix in types:
            assert response.mimetype == types[suffix], ref
        if ref.endswith("home.js"):  # its modules too
            for module in re.findall(r'from "\./([\w.]+)"', response.get_data(as_text=True)):
                answer = client.get(f"/assets/{module}")
                assert (answer.status_code, answer.mimetype) == (200, "text/javascript"), module


def test_our_pages_name_no_outside_host() -> None:
    assert {p.name for p in OURS} >= {"index.html", "docs.html", "home.js", "draw.js",
                                      "numbers.js", "docs.js", "pages.css"}
    for path in OURS:
        hosts = set(URL.findall(path.read_text())) - {f"http:{n}" for n in NAMESPACES}
        assert not hosts, f"{path.name} names {hosts}"


def test_vendored_swagger_ui_is_the_pinned_release() -> None:
    notes = (VENDORED / "README.md").read_text()
    assert "swagger-ui-dist 5.35.0" in notes
    for name in ("swagger-ui.css", "swagger-ui-bundle.js"):
        digest = hashlib.sha256((VENDORED / name).read_bytes()).hexdigest()
        assert f"| {name} | {digest} |" in notes, f"{name} differs from the recorded release"
    assert "Apache License" in (VENDORED / "LICENSE").read_text()


@pytest.mark.parametrize("path", ["/", "/docs", "/assets/home.js", "/assets/pages.css"])
def test_pages_are_kept_to_this_origin(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    policy = dict(part.strip().split(" ", 1)
                  for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert "script-src" not in policy and "style-src" not in policy, "both fall back to 'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_api_keeps_its_own_headers(client: FlaskClient) -> None:
    """The policy is the pages' own: JSON answers are not changed by the blueprint."""
    response = client.post("/v1/predict", json={"a": 2, "b": 3})
    assert response.status_code == 200 and response.get_json()["decimal"] == 5
    assert "Content-Security-Policy" not in response.headers


def test_unknown_assets_are_404(client: FlaskClient) -> None:
    assert client.get("/assets/nothing-here.js").status_code == 404
    assert client.get("/assets/../pages.py").status_code == 404
