"""``python -m cardsync.emulator``: serve a sample company until SIGTERM or SIGINT.

Prints one JSON line (url, graph_url, ca_path, tenant_id, client_id, client_secret) on
stdout once it accepts connections; drive it through the ``/_emulator/`` control API.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from .core import GraphEmulator
from .sample import sample_users


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cardsync.emulator",
        description="Microsoft Graph + Entra ID emulator over HTTPS on loopback.",
    )
    parser.add_argument("--users", type=int, default=25, help="sample users to create")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample company")
    parser.add_argument("--domain", default="contoso.com", help="mail domain of the users")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--dir", default=None, help="directory for the CA PEM (default: temp)")
    parser.add_argument("--page-size", type=int, default=200, help="users per delta page")
    parser.add_argument(
        "--gzip", action="store_true",
        help="compress Graph's JSON responses for clients that accept gzip, as Graph does",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    emu = GraphEmulator(page_size=args.page_size, gzip=args.gzip)
    tenant = emu.add_tenant(name="Contoso")
    app = tenant.add_app(roles=("User.Read.All",))
    tenant.add_users(sample_users(args.users, seed=args.seed, domain=args.domain))

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with emu.serve(host=args.host, port=args.port, ca_dir=args.dir) as server:
        ready = {
            "url": server.url,
            "graph_url": server.graph_url,
            "ca_path": server.ca_path,
            "tenant_id": tenant.id,
            "client_id": app.client_id,
            "client_secret": app.secret,
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
