"""Load and validate ``cardsync.toml``.

STUB: the data classes below are the interface the rest of cardsync codes
against. ``load()`` is being written (see the config helper's task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# cloud name -> (login host, Graph host)
CLOUDS: dict[str, tuple[str, str]] = {
    "global": ("login.microsoftonline.com", "graph.microsoft.com"),
    "usgov": ("login.microsoftonline.us", "graph.microsoft.us"),
    "usgov-dod": ("login.microsoftonline.us", "dod-graph.microsoft.us"),
    "china": ("login.chinacloudapi.cn", "microsoftgraph.chinacloudapi.cn"),
}


@dataclass(frozen=True)
class EntraConfig:
    """One Entra ID app registration. Secrets are excluded from repr()."""

    tenant_id: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    certificate_path: Path | None = None
    certificate_password: str | None = field(default=None, repr=False)
    cloud: str = "global"
    # Resolved values: authority is "https://host[:port]" (no path); graph_url ends in /v1.0
    authority: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    # True when authority_host was overridden to a non-Microsoft host: the credential
    # must then skip Microsoft's instance discovery.
    custom_authority: bool = False

    @property
    def graph_scope(self) -> str:
        """The token scope: the cloud's Graph resource, whatever graph_url says."""
        return f"https://{CLOUDS[self.cloud][1]}/.default"

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.client_secret, self.certificate_password) if s)


@dataclass(frozen=True)
class OrgConfig:
    slug: str
    name: str
    entra: EntraConfig
    template: str = "classic"  # a built-in template name, or a folder of jinja2 templates


@dataclass(frozen=True)
class StateConfig:
    path: Path


@dataclass(frozen=True)
class BackendConfig:
    type: str = "local"
    # Backend-specific keys (for "local": output, base_url, index), paths resolved.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    path: Path | None
    state: StateConfig
    backend: BackendConfig
    organizations: tuple[OrgConfig, ...]

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for org in self.organizations for s in org.entra.secrets())

    def org(self, slug: str) -> OrgConfig:
        for org in self.organizations:
            if org.slug == slug:
                return org
        raise KeyError(slug)
