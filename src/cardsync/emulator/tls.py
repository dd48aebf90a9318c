"""A throwaway certificate authority and a server certificate for loopback.

Clients trust the emulator by pointing SSL_CERT_FILE (httpx) and REQUESTS_CA_BUNDLE (MSAL's
requests) at :attr:`Certificates.ca_path`; nothing is added to any system trust store.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Certificates:
    ca_path: Path
    context: ssl.SSLContext  # server side, ready for wrap_socket
    owned_dir: Path | None  # a temp dir we created and must remove

    def cleanup(self) -> None:
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)


def make_certificates(directory: str | Path | None = None) -> Certificates:
    """Create a CA and a cert for :data:`LOOPBACK_NAMES`; write the CA PEM to ``directory``
    (or a new temp dir, removed by :meth:`Certificates.cleanup`)."""
    ca = trustme.CA(organization_name="cardsync Graph emulator")
    server_cert = ca.issue_cert(*LOOPBACK_NAMES)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    owned = None
    if directory is None:
        owned = Path(tempfile.mkdtemp(prefix="cardsync-emulator-"))
        directory = owned
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    ca_path = target / "emulator-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return Certificates(ca_path, context, owned)
