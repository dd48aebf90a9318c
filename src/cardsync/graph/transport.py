"""An httpcore network backend on asyncio's own streams, for the Graph client.

httpx's async connections run on anyio by default: a read returns one TLS record (16 KB
at most) and opens a cancel scope for its timeout, so a 110 KB users/delta page takes
~10 reads and scopes, each a few turns of the event loop. asyncio's streams hand over
everything the SSL transport has decrypted so far, and a timeout is one timer. A
100,000-user ingest takes ~12% less time (docs/performance.md).

Behaviour is httpcore's: the same exceptions (ConnectError, ConnectTimeout, ReadError,
ReadTimeout, WriteError, WriteTimeout) with the OS or TLS error as their cause, so the
SDK's retries and cardsync's error messages see what they always saw.

httpx offers no public way to choose a connection pool's network backend, so
:func:`use_asyncio_streams` sets it on the client's default transport where the pinned
httpx keeps it, and leaves the client as it is (anyio) when that layout is not there.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import typing
from typing import Any

import httpcore
import httpx

log = logging.getLogger("cardsync.graph")

READ_LIMIT = 1 << 20  # bytes a connection may buffer before asyncio pauses reading it


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection: an asyncio StreamReader and StreamWriter."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(exc) from exc
        except OSError as exc:
            raise httpcore.ReadError(exc) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(exc) from exc
        except OSError as exc:
            raise httpcore.WriteError(exc) from exc

    async def aclose(self) -> None:
        # At once, without waiting for the TLS goodbye (as httpcore's anyio backend,
        # which skips it too): a connection is closed when it is of no more use, and
        # a server busy with the request being abandoned would hold up the close.
        self._writer.transport.abort()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(exc) from exc
        except OSError as exc:  # ssl.SSLError (a failed certificate check) included
            await self.aclose()
            raise httpcore.ConnectError(exc) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            return self._is_readable()
        return None

    def _is_readable(self) -> bool:
        """Has an idle connection heard from the server (mostly: a close)? httpcore then
        drops it instead of sending the next request on it."""
        transport = self._writer.transport
        if transport.is_closing() or self._reader.at_eof() or self._reader_holds_data():
            return True
        sock = self._writer.get_extra_info("socket")
        return sock is not None and _socket_readable(sock)

    def _reader_holds_data(self) -> bool:
        # StreamReader keeps what the loop already read in ``_buffer`` (no public
        # accessor); an idle HTTP connection holds nothing there unless the server
        # spoke out of turn.
        return bool(getattr(self._reader, "_buffer", b""))


def _socket_readable(sock: socket.socket) -> bool:
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed meanwhile
        return True


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's connections opened with :func:`asyncio.open_connection`."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=local, limit=READ_LIMIT
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(exc) from exc
        except OSError as exc:
            raise httpcore.ConnectError(exc) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def use_asyncio_streams(client: httpx.AsyncClient) -> bool:
    """Have ``client``'s default transport open its connections with
    :class:`AsyncioBackend`; False (and nothing changed) when the transport is not laid
    out as the pinned httpx lays it out. Proxied hosts keep their own transports."""
    transport: Any = getattr(client, "_transport", None)
    pool = getattr(transport, "_pool", None)
    if not isinstance(transport, httpx.AsyncHTTPTransport) or not isinstance(
        pool, httpcore.AsyncConnectionPool
    ) or not hasattr(pool, "_network_backend"):
        log.debug("httpx's transport is not laid out as expected: keeping anyio")
        return False
    pool._network_backend = AsyncioBackend()
    return True
