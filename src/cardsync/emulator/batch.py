"""``POST /v1.0/$batch``: up to 20 requests with relative URLs, answered one by one.

Each item is throttled on its own (a 429 with ``Retry-After`` in the item's headers, which
the SDK never retries), and binary bodies come back base64-encoded, as in Graph.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .graph import Caller, authenticate, failed, route, with_request_ids
from .wire import Request, Response, graph_error, json_response

if TYPE_CHECKING:
    from .core import GraphEmulator

MAX_ITEMS = 20


def handle(emu: GraphEmulator, request: Request) -> Response:
    caller = authenticate(emu, request)
    if isinstance(caller, Response):
        return with_request_ids(caller, request)
    try:
        items = _parse(request.body)
    except ValueError as exc:
        return with_request_ids(graph_error(400, "BadRequest", str(exc), request), request)
    responses = [_run_item(caller, request, item) for item in items]
    return with_request_ids(json_response(200, {"responses": responses}), request)


def _parse(body: bytes) -> list[dict[str, Any]]:
    try:
        items = json.loads(body or b"null")["requests"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError("Invalid batch payload format.") from exc
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and {"id", "method", "url"} <= i.keys() for i in items
    ):
        raise ValueError("Invalid batch payload format.")
    if len(items) > MAX_ITEMS:
        raise ValueError(f"The number of batch requests ({len(items)}) exceeds the limit of 20.")
    if len({str(i["id"]) for i in items}) != len(items):
        raise ValueError("Batch request ids must be unique.")
    return items


def _run_item(caller: Caller, outer: Request, item: dict[str, Any]) -> dict[str, Any]:
    url = str(item["url"])
    path, _, raw_query = url.partition("?")
    inner = Request(
        method=str(item["method"]).upper(),
        path="/v1.0" + unquote(path if path.startswith("/") else "/" + path),
        raw_query=raw_query,
        headers={str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()},
        base_url=outer.base_url,
    )
    if "://" in url:
        # Graph resolves item URLs against /v1.0; an absolute URL names no resource.
        message = f"Resource not found for the segment '{url.split('/')[0]}'."
        response = graph_error(400, "BadRequest", message, inner)
    else:
        failure = caller.emu.faults.failure_for(inner.path)
        response = failed(failure, inner) if failure else route(caller, inner)
    return _item_response(str(item["id"]), response)


def _item_response(item_id: str, response: Response) -> dict[str, Any]:
    headers = {"Content-Type": response.content_type, **dict(response.headers)}
    out: dict[str, Any] = {"id": item_id, "status": response.status, "headers": headers}
    if response.body:
        if response.content_type.startswith("application/json"):
            out["body"] = json.loads(response.body)
        else:
            out["body"] = base64.b64encode(response.body).decode()
    return out
