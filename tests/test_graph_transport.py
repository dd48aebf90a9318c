"""cardsync.graph.transport: httpcore's connections on asyncio streams, against a real TLS
server on loopback (asyncio's, with a trustme CA)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpcore
import httpx
import pytest
import trustme

from cardsync.graph.transport import AsyncioBackend, use_asyncio_streams

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tls_server(ca: trustme.CA, handler: Handler) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def connect(ca: trustme.CA, port: int) -> httpcore.AsyncNetworkStream:
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
    return await stream.start_tls(client_context(ca), server_hostname="localhost", timeout=5)


def test_a_large_answer_comes_in_few_reads_and_a_close_is_noticed() -> None:
    ca = trustme.CA()
    body = b"x" * 300_000
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(body)
        await writer.drain()
        await reader.readexactly(4)  # the client's second word: hang up
        writer.close()
        closed.set()

    async def scenario() -> tuple[int, bool, bool]:
        async with tls_server(ca, handler) as port:
            stream = await connect(ca, port)
            await stream.write(b"ping", timeout=5)
            got, reads = b"", 0
            while len(got) < len(body):
                got += await stream.read(65536, timeout=5)
                reads += 1
            assert got == body
            idle = stream.get_extra_info("is_readable")
            await stream.write(b"bye!", timeout=5)
            await closed.wait()
            await asyncio.sleep(0.1)
            after_close = stream.get_extra_info("is_readable")
            await stream.aclose()
            return reads, idle, after_close

    reads, idle, after_close = asyncio.run(scenario())
    # anyio hands over one TLS record (16 KB) a read: 19 reads at least for 300 KB.
    assert reads < 19
    assert (idle, after_close) == (False, True)


def test_timeouts_and_failures_are_httpcores_exceptions() -> None:
    ca = trustme.CA()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def scenario() -> None:
        async with tls_server(ca, silent) as port:
            stream = await connect(ca, port)
            with pytest.raises(httpcore.ReadTimeout):
                await stream.read(1024, timeout=0.1)
            await stream.aclose()
            plain = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
            with pytest.raises(httpcore.ConnectError) as caught:
                await plain.start_tls(client_context(trustme.CA()), "localhost", timeout=5)
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            closed_port = free.getsockname()[1]
        with pytest.raises(httpcore.ConnectError) as refused:
            await AsyncioBackend().connect_tcp("127.0.0.1", closed_port, timeout=5)
        assert isinstance(refused.value.__cause__, ConnectionRefusedError)

    asyncio.run(scenario())


def test_a_transport_laid_out_otherwise_is_left_alone() -> None:
    class Elsewhere(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(204)

    elsewhere = Elsewhere()
    client = httpx.AsyncClient(transport=elsewhere)
    assert use_asyncio_streams(client) is False
    assert client._transport is elsewhere

    default = httpx.AsyncClient()
    assert use_asyncio_streams(default) is True
    pool: Any = default._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool._network_backend, AsyncioBackend)
