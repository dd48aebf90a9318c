"""Shared pieces for end-to-end tests: a running Graph emulator with a tenant and an
app, the environment that makes the real SDK trust it, and a cardsync config file
pointing at it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardsync.config import Config, load
from cardsync.emulator import GraphEmulator
from cardsync.emulator.sample import sample_users

CONFIG = """\
[state]
path = "state.db"

[backend]
type = "local"
output = "site"
base_url = "https://cards.example.test/people"

[[organizations]]
slug = "{slug}"
name = "Contoso"

[organizations.entra]
tenant_id = "{tenant_id}"
client_id = "{client_id}"
client_secret = "${{E2E_SECRET}}"
authority_host = "{authority}"
graph_url = "{graph_url}"
"""


@dataclass
class Graph:
    emu: Any
    tenant: Any
    app: Any
    server: Any
    dir: Path
    slug: str = "contoso"

    @property
    def config_path(self) -> Path:
        return self.dir / "cardsync.toml"

    def write_config(self, secret: str | None = None, extra: str = "") -> Path:
        self.config_path.write_text(
            CONFIG.format(
                slug=self.slug,
                tenant_id=self.tenant.id,
                client_id=self.app.client_id,
                authority=self.server.url,
                graph_url=self.server.graph_url,
            )
            + extra
        )
        os.environ["E2E_SECRET"] = secret if secret is not None else self.app.secret
        return self.config_path

    def config(self) -> Config:
        if not self.config_path.exists():
            self.write_config()
        return load(self.config_path)

    def add_sample(self, n: int, seed: int = 1) -> list[str]:
        return self.tenant.add_users(sample_users(n, seed=seed, domain="contoso.com"))

    def graph_requests(self, fragment: str = "/v1.0/") -> list[Any]:
        return [r for r in self.emu.requests if fragment in r.path]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SSL_CERT_FILE"] = str(self.server.ca_path)
        env["REQUESTS_CA_BUNDLE"] = str(self.server.ca_path)
        env["E2E_SECRET"] = os.environ.get("E2E_SECRET", self.app.secret)
        return env

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real `cardsync` CLI as a process (not a terminal: plain output)."""
        return subprocess.run(
            [sys.executable, "-m", "cardsync", "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cardsync", "-c", str(self.config_path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )


def start_graph(tmp_path: Path, monkeypatch: Any, page_size: int = 5):
    """Generator for a fixture: yields a Graph with a served emulator."""
    emu = GraphEmulator(page_size=page_size)
    tenant = emu.add_tenant(name="Contoso")
    app = tenant.add_app()
    with emu.serve() as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_path))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_path))
        monkeypatch.setenv("E2E_SECRET", app.secret)
        graph = Graph(emu, tenant, app, server, tmp_path)
        graph.write_config()
        yield graph
