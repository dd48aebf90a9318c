"""HTTP requests and responses as plain data, and the error bodies of Graph and Entra.

The route modules (login, graph, control) are functions from :class:`Request` to
:class:`Response`; only ``server.py`` touches sockets.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One HTTP request. ``path`` is percent-decoded and has no query; ``headers`` has
    lower-cased names; ``base_url`` is the server's own ``https://host:port``; ``peer`` is
    the client's IP address."""

    method: str
    path: str
    raw_query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    base_url: str = ""
    peer: str = "127.0.0.1"
    # Graph names every request; error bodies and the request-id header repeat it.
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, percent-decoded (the last value wins)."""
        return dict(parse_qsl(self.raw_query, keep_blank_values=True))

    @property
    def client_request_id(self) -> str:
        return self.headers.get("client-request-id", "")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


def dumps(obj: Any) -> bytes:
    # Graph sends raw UTF-8 (no \\u escapes) and no insignificant whitespace.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(
    status: int,
    obj: Any,
    headers: tuple[tuple[str, str], ...] = (),
    content_type: str = "application/json",
) -> Response:
    return Response(status, dumps(obj), content_type, headers)


def utc_now() -> str:
    """An ISO 8601 UTC timestamp with a ``Z``, as Graph writes them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def graph_error(
    status: int,
    code: str,
    message: str,
    request: Request,
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """Graph's error shape: ``{"error": {"code", "message", "innerError": {...}}}``."""
    inner = {
        "date": utc_now(),
        "request-id": request.request_id,
        "client-request-id": request.client_request_id or request.request_id,
    }
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return json_response(status, body, headers, GRAPH_JSON)


def entra_error(status: int, error: str, aadsts: int, description: str) -> Response:
    """Entra's OAuth error shape, with the ``AADSTS`` code leading the description."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": (
            f"AADSTS{aadsts}: {description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}"
        ),
        "error_codes": [aadsts],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={aadsts}",
    }
    return json_response(status, body)


GZIP_MIN_BYTES = 1024  # smaller bodies go out as they are


def accepts_gzip(accept_encoding: str) -> bool:
    """Does an Accept-Encoding header accept gzip (RFC 9110: ``gzip`` or ``x-gzip``, else
    ``*``, with a q-value above 0)?"""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (part.strip().lower() for part in item.split(";"))
        weight = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    weight = float(param[2:])
                except ValueError:
                    weight = 0.0
        weights[coding] = weight
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


def gzipped(response: Response, accept_encoding: str) -> Response:
    """``response`` with a gzip body (and Content-Encoding), when it is JSON, the client
    accepts gzip and the body is worth it; otherwise ``response`` itself (photos, for one,
    are JPEG already)."""
    if (
        not response.content_type.startswith("application/json")
        or len(response.body) < GZIP_MIN_BYTES
        or response.header("Content-Encoding") is not None
        or not accepts_gzip(accept_encoding)
    ):
        return response
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip wrapper; 6: zlib's default
    body = packer.compress(response.body) + packer.flush()
    headers = (*response.headers, ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"))
    return replace(response, body=body, headers=headers)
