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


def test_http2_runs_on_asyncio_streams() -> None:
    # Microsoft Graph speaks HTTP/2 and httpx (as the SDK builds it) asks for it: the
    # h2 connection reads and writes through the same stream as HTTP/1.1.
    h2_config = pytest.importorskip("h2.config")
    h2_connection = pytest.importorskip("h2.connection")
    h2_events = pytest.importorskip("h2.events")
    ca = trustme.CA()
    body = b"y" * 300_000

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2_connection.H2Connection(
            config=h2_config.H2Configuration(client_side=False)
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        pending: dict[int, int] = {}  # stream id -> bytes of the body sent so far

        def send_more() -> None:
            for stream_id, sent in list(pending.items()):
                room = min(conn.local_flow_control_window(stream_id), len(body) - sent)
                while room > 0:
                    size = min(room, conn.max_outbound_frame_size)
                    conn.send_data(stream_id, body[sent : sent + size])
                    sent += size
                    room -= size
                pending[stream_id] = sent
                if sent == len(body):
                    conn.end_stream(stream_id)
                    del pending[stream_id]

        while True:
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2_events.RequestReceived):
                    conn.send_headers(event.stream_id, [
                        (":status", "200"), ("content-length", str(len(body))),
                    ])
                    pending[event.stream_id] = 0
                elif isinstance(event, h2_events.WindowUpdated):
                    pass
            send_more()
            writer.write(conn.data_to_send())
            await writer.drain()

    async def scenario() -> tuple[str, bytes]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(context)
        context.set_alpn_protocols(["h2"])
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(http2=True, verify=client_context(ca)) as client:
                assert use_asyncio_streams(client)
                response = await client.get(f"https://localhost:{port}/v1.0/users/delta")
                return response.http_version, response.content
        finally:
            server.close()

    version, content = asyncio.run(scenario())
    assert version == "HTTP/2"
    assert content == body
