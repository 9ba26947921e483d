"""Pages for people: `/` (watch the network add) and `/docs` (Swagger UI over /openapi.json).

Both are static HTML plus plain JavaScript that calls the public API, like any other client;
every asset is served from service/static (Swagger UI vendored from swagger-ui-dist), so
nothing is fetched from another host, and a Content-Security-Policy of 'self' says so to the
browser.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

# data: images are the icons inside swagger-ui.css; everything else comes from this origin.
CSP = "; ".join((
    "default-src 'self'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
ASSET_PREFIX = "/assets"


def secure(response: Response) -> Response:
    """Headers that keep the pages to this origin and stop content-type guessing."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def create_blueprint() -> Blueprint:
    """The page routes and their assets (under /assets, apart from the app's own routes)."""
    bp = Blueprint("pages", __name__, static_folder="static", static_url_path=ASSET_PREFIX,
                   template_folder="templates")
    bp.after_request(secure)

    @bp.get("/")
    def index() -> str:
        return render_template("index.html")

    @bp.get("/docs")
    def docs() -> str:
        return render_template("docs.html")

    return bp
