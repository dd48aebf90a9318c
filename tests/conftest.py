"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cardsync.emulator import EmulatorServer, GraphEmulator

# -- Graph emulator -------------------------------------------------------------------------


@pytest.fixture
def emulator() -> GraphEmulator:
    """A Graph emulator, not served, with one tenant ("Contoso", ``emulator.default_tenant``)
    and one app consented for User.Read.All (``emulator.default_tenant.apps()[0]``).
    Pages hold 5 users so that a few users already span several pages."""
    emu = GraphEmulator(page_size=5)
    tenant = emu.add_tenant(name="Contoso")
    tenant.add_app(roles=("User.Read.All",))
    return emu


@pytest.fixture
def emulator_server(
    emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmulatorServer]:
    """``emulator`` served over HTTPS on 127.0.0.1, with SSL_CERT_FILE and REQUESTS_CA_BUNDLE
    pointing at its CA (set before any client exists: httpx reads them at creation)."""
    with emulator.serve() as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_path)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_path)
        yield server
