"""HTTPS on loopback: a threaded HTTP/1.1 server that hands each request to ``dispatch``.

Keep-alive matters: kiota's httpx client reuses connections, and a TLS handshake per page
would dominate a 500-page benchmark. Every response therefore carries Content-Length.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from .tls import make_certificates
from .wire import Request, Response, json_response

log = logging.getLogger(__name__)
Dispatch = Callable[[Request], Response]
_HANDSHAKE_TIMEOUT = 10.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cardsync-graph-emulator"
    timeout = 120  # reap idle keep-alive connections eventually
    # Headers and body leave in one write (flushed after each request), and without Nagle:
    # two small writes would otherwise meet the client's delayed ACK, 40 ms per response.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # the body cannot be skipped safely
            self._send(json_response(411, {"error": "send Content-Length, not chunked"}))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._send(json_response(400, {"error": "bad Content-Length"}))
            return
        body = self.rfile.read(length) if length > 0 else b""
        path, _, raw_query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=unquote(path),
            raw_query=raw_query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=self.server.base_url,
            peer=str(self.client_address[0]),
        )
        try:
            response = self.server.dispatch(request)
        except Exception:
            log.exception("emulator failed on %s %s", self.command, self.path)
            response = json_response(500, {"error": {"code": "generalException"}})
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        if response.body or response.status not in (204, 304):
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``emu.requests`` instead of stderr."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, context: ssl.SSLContext, dispatch: Dispatch) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self.context = context
        self.dispatch = dispatch
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"https://{shown}:{self.server_address[1]}"
        self._open: set[ssl.SSLSocket] = set()
        self._open_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, in the connection's own thread, so that a slow or
        # failing client never blocks accept().
        request.settimeout(_HANDSHAKE_TIMEOUT)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return  # e.g. a client that does not trust our CA
        with self._open_lock:
            self._open.add(conn)
        try:
            _Handler(conn, client_address, self)
        except OSError:
            pass  # the client went away mid-request
        finally:
            with self._open_lock:
                self._open.discard(conn)
            conn.close()

    def close_connections(self) -> None:
        """Wake up the threads blocked on idle keep-alive connections so they exit."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)


class EmulatorServer:
    """A running emulator (see :meth:`GraphEmulator.serve`). Use it as a context manager,
    or call :meth:`stop`. ``url`` is the authority, ``graph_url`` the Graph base URL and
    ``ca_path`` the CA certificate clients must trust."""

    def __init__(
        self, dispatch: Dispatch, host: str = "127.0.0.1", port: int = 0, ca_dir: str | None = None
    ) -> None:
        self._certs = make_certificates(ca_dir)
        self._httpd = _HTTPServer(host, port, self._certs.context, dispatch)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self.url = self._httpd.base_url
        self.graph_url = f"{self.url}/v1.0"
        self.ca_path = str(self._certs.ca_path)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"graph-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._certs.cleanup()

    def __enter__(self) -> EmulatorServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
