"""`/docs`: Swagger UI on `/openapi.json`, every file served by predq itself (no CDN).

Swagger UI's files come from the flask-swagger-ui package (its `dist/`, Swagger UI 5: the first
major version that renders OpenAPI 3.1); predq serves them under a path that names their
version, so browsers may keep them a year. The package's own blueprint is not used: its page
configures Swagger UI in an inline script, which the Content-Security-Policy forbids. Ours
starts Swagger UI from a static file, /static/apidocs.js.
"""

from __future__ import annotations

import html
from importlib.metadata import version
from importlib.resources import files

from flask import Blueprint, Response, abort, send_from_directory

bp = Blueprint("apidocs", __name__)

SWAGGER_UI_VERSION = version("flask-swagger-ui")  # the Swagger UI release it ships
ASSETS = f"/docs/swagger-ui/{SWAGGER_UI_VERSION}"
#: The files of Swagger UI's dist/ the page uses; nothing else in the package is served.
SERVED = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "index.css",
                    "favicon-32x32.png", "favicon-16x16.png"})
YEAR = 365 * 86400


def _page() -> str:
    assets = html.escape(ASSETS)
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>predq API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="stylesheet" href="{assets}/index.css">
  <link rel="stylesheet" href="/static/apidocs.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="{assets}/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui" data-url="/openapi.json"></div>
  <noscript>This page needs JavaScript; the API's description is at
    <a href="/openapi.json">/openapi.json</a>.</noscript>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="/static/apidocs.js"></script>
</body>
</html>
"""


@bp.get("/docs")
def page() -> Response:
    """Swagger UI on this API's description; "Authorize" takes an API key for "Try it out"."""
    return Response(_page(), mimetype="text/html", headers={"Cache-Control": "no-cache"})


@bp.get("/docs/swagger-ui/<release>/<name>")
def swagger_ui(release: str, name: str) -> Response:
    """Swagger UI's own files, cached for a year: a new release comes under a new path."""
    if release != SWAGGER_UI_VERSION or name not in SERVED:
        abort(404)
    response = send_from_directory(str(files("flask_swagger_ui") / "dist"), name,
                                   max_age=YEAR)
    response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    return response
