"""Reading a JSON request body: media type, size, depth, UTF-8, known fields."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from flask import request

from service.api import services
from service.core.errors import InvalidInput, MalformedJSON, PredqError

MAX_DEADLINE = timedelta(days=30)
log = logging.getLogger(__name__)


class UnsupportedMediaType(PredqError):
    status = 415
    code = "unsupported_media_type"


def json_body(also: Sequence[str] = ()) -> dict[str, Any]:
    """The request body as a JSON object, or an error that says what is wrong with it (and
    which other types, `also`, the endpoint takes)."""
    max_depth = services().settings.max_json_depth
    mimetype = request.mimetype
    # curl -d sends application/x-www-form-urlencoded unless told otherwise; read it as JSON.
    if mimetype not in ("", "application/json", "application/x-www-form-urlencoded"):
        others = f", or a bulk body: {', '.join(also)}" if also else ""
        raise UnsupportedMediaType(f"send Content-Type: application/json{others}; not "
                                   f"{mimetype}")
    raw = request.get_data(cache=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A body sent chunked (no Content-Length) stops at the limit when read whole: one
        # more byte tells a body that fits from one that was cut (werkzeug raises 413 then).
        request.stream.read(1)
    depth = json_depth(raw, max_depth)
    if depth > max_depth:
        raise MalformedJSON(f"the JSON is nested {depth} levels deep; at most {max_depth}")
    try:
        body = json.loads(raw.decode("utf-8"))  # RFC 8259: JSON between systems is UTF-8
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"the body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise MalformedJSON(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise MalformedJSON("the JSON is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise MalformedJSON(f"malformed JSON: {str(exc)[:200]}") from exc
    if not isinstance(body, dict):
        raise MalformedJSON("the body must be a JSON object")
    return body


_URLS = frozenset({"url", "webhook_url"})
_BRACKETS = np.zeros(256, dtype=np.int8)
_BRACKETS[[ord("["), ord("{")]] = 1
_BRACKETS[[ord("]"), ord("}")]] = -1
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(raw: bytes, limit: int = 0) -> int:
    """How deeply the arrays and objects of a JSON text nest, counted in C before the parser
    recurses (strings are blanked first: they may hold brackets). A text with at most `limit`
    brackets in all cannot nest deeper: its bracket count is returned without a scan."""
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets <= limit:
        return brackets
    if b'"' in raw:
        raw = _STRINGS.sub(b'""', raw)
    steps = _BRACKETS[np.frombuffer(raw, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    """Only the `allowed` fields, and no string longer than the settings' max_string_length
    among them (URLs have their own limit)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(unknown[0][:100], "unknown field")
    max_string = services().settings.max_string_length
    for name, value in body.items():
        if isinstance(value, str) and len(value) > max_string and name not in _URLS:
            raise InvalidInput(name, f"{len(value)} characters; at most {max_string}")
