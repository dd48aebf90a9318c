"""Microsoft Graph: users/delta and a few single-object reads, as plain cardsync models.

This is the only async code in cardsync, and the only code that imports msgraph-sdk and
azure-identity, which happens when a :class:`GraphSource` is first used, never when this
package is imported (``cardsync --help`` stays fast).

    parse     pure: Graph JSON bytes -> DeltaPage / DirectoryUser / GraphUser (json.loads
              and msgspec, no SDK models)
    errors    SDK / azure-identity / httpx exceptions -> one-line CardsyncErrors
    client    credential + GraphServiceClient + the time-bounded retry loop (async)
    transport httpcore's connections on asyncio's own streams (instead of anyio's)
    source    GraphSource, the synchronous facade; its event loop runs on the caller's thread
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .parse import parse_delta_page, parse_delta_page_counted, parse_user

if TYPE_CHECKING:
    from .source import GraphSource

__all__ = ["GraphSource", "parse_delta_page", "parse_delta_page_counted", "parse_user"]


def __getattr__(name: str) -> Any:
    if name == "GraphSource":
        from .source import GraphSource

        return GraphSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
