"""Load and validate ``cardsync.toml``.

:func:`load` finds the file (``--config``, else ``$CARDSYNC_CONFIG``, else
``./cardsync.toml``), parses it and turns it into the frozen :class:`Config` the rest
of cardsync uses. Every problem in the file is reported at once, each with its key
path, in one :class:`~cardsync.errors.ConfigError`. Secret values never appear in
messages or reprs. The keys are declared in the schema tables below; adding an
optional key is one line there (plus the field it fills).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import _configschema as sch
from .errors import ConfigError

ENV_VAR = "CARDSYNC_CONFIG"
DEFAULT_FILE = "cardsync.toml"
_COPY_HINT = "copy config.example.toml to cardsync.toml and edit it, or pass --config PATH"
_SYNTAX_HINT = "look for a missing quote, bracket or '=' at that spot (TOML: https://toml.io)"

# cloud name -> (login host, Graph host)
CLOUDS: dict[str, tuple[str, str]] = {
    "global": ("login.microsoftonline.com", "graph.microsoft.com"),
    "usgov": ("login.microsoftonline.us", "graph.microsoft.us"),
    "usgov-dod": ("login.microsoftonline.us", "dod-graph.microsoft.us"),
    "china": ("login.chinacloudapi.cn", "microsoftgraph.chinacloudapi.cn"),
}
_LOGIN_HOSTS = frozenset(login for login, _ in CLOUDS.values())

# Used until the package ships its templates/ folder.


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
    # Sync scope, as in Entra provisioning: "all" users, users "assigned" to the
    # enterprise application (directly or as immediate members of an assigned group),
    # or members of "groups" (group_ids).
    scope: str = "all"
    group_ids: tuple[str, ...] = ()
    service_principal_id: str | None = None  # the enterprise app; looked up when absent
    include_guests: bool = False

    @property
    def graph_scope(self) -> str:
        """The token scope: the cloud's Graph resource, whatever graph_url says."""
        return f"https://{CLOUDS[self.cloud][1]}/.default"

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.client_secret, self.certificate_password) if s)


@dataclass(frozen=True)
class PersonRole:
    """A person of the organization with a role: owner, admin, editor or viewer."""

    mail: str  # lower-cased
    role: str


ROLES = ("owner", "admin", "editor", "viewer")


@dataclass(frozen=True)
class PhotosConfig:
    """``[organizations.photos]``: profile photos from Entra ID on cards (off by default)."""

    enabled: bool = False
    # A separate app registration for photo requests; None: the organization's own.
    entra: EntraConfig | None = None
    refresh_days: int = 7  # every photo is re-checked about this often (rolling)


@dataclass(frozen=True)
class OrgConfig:
    slug: str
    name: str
    entra: EntraConfig
    template: str = "classic"  # a built-in template name, or a folder of jinja2 templates
    domains: tuple[str, ...] = ()  # mail domains for domain-based assignment (lower case)
    seats: int | None = None  # None: unlimited
    max_deletes: int = 500  # deletion threshold per cycle (deletes + deactivations)
    on_disable: str = "keep"  # "keep" | "deactivate": disabled, soft-deleted, out of scope
    people: tuple[PersonRole, ...] = ()
    photos: PhotosConfig = field(default_factory=PhotosConfig)


@dataclass(frozen=True)
class StateConfig:
    path: Path


@dataclass(frozen=True)
class BackendConfig:
    type: str = "local"
    # Backend-specific keys (for "local": output, base_url, index), paths resolved.
    options: dict[str, Any] = field(default_factory=dict)
    # Option keys whose value came from ${ENV} (third-party backends): masked in repr().
    env_keys: frozenset[str] = field(default=frozenset(), repr=False)

    def __repr__(self) -> str:
        shown = {k: "***" if k in self.env_keys else v for k, v in self.options.items()}
        return f"BackendConfig(type={self.type!r}, options={shown!r})"

    def secrets(self) -> tuple[str, ...]:
        """Values taken from the environment for a third-party backend's options."""
        return tuple(s for key in sorted(self.env_keys) for s in sch.strings_in(self.options[key]))


@dataclass(frozen=True)
class ScheduleConfig:
    interval_minutes: int = 40  # daemon polling interval


@dataclass(frozen=True)
class Config:
    path: Path | None
    state: StateConfig
    backend: BackendConfig
    organizations: tuple[OrgConfig, ...]
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    domain_assignment: bool = False  # route users to the organization owning their domain

    def secrets(self) -> tuple[str, ...]:
        entra = tuple(s for org in self.organizations for s in org.entra.secrets())
        photos = tuple(
            s for org in self.organizations if org.photos.entra for s in org.photos.entra.secrets()
        )
        return entra + photos + self.backend.secrets()

    def org(self, slug: str) -> OrgConfig:
        for org in self.organizations:
            if org.slug == slug:
                return org
        raise KeyError(slug)


# Checks for values with a meaning ---------------------------------------------------

_SLUG = "up to 63 lowercase letters, digits and '-', not starting with '-'"
_TENANT = "a GUID or a domain like contoso.onmicrosoft.com"
_CLIENT = "a GUID (the Application (client) ID)"
_GUID = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"


def builtin_templates() -> tuple[str, ...]:
    """Names of the templates shipped in ``cardsync/templates/`` (one folder each)."""
    from .templates import builtin_templates as shipped

    return tuple(shipped())


def _template(value: str, ctx: sch.Context) -> str:
    names = builtin_templates()
    if value in names:
        return value
    folder = ctx.path(value)
    if folder.is_dir():
        return str(folder)
    raise sch.Invalid(
        f"expected a built-in template ({', '.join(names)}) or a folder of templates,"
        f" and {folder} is not a folder",
        suggestion=sch.suggest(value, names),
        show_value=False,
    )


def _backend_type(value: str, ctx: sch.Context) -> str:
    if value in BACKEND_OPTIONS:
        return value
    from .backends import available  # imports entry points: only for third-party names

    names = available()
    if value not in names:
        raise sch.Invalid(
            f"expected an installed backend ({', '.join(names)})",
            suggestion=sch.suggest(value, names),
        )
    return value


# The schema: key -> Field(kind, default, check) ---------------------------------------

# tenant_id and client_id are not echoed: a secret pasted into the wrong key is common.
ENTRA = sch.Table(
    {
        "tenant_id": sch.Field(str, check=sch.matches(f"{_GUID}|{_DOMAIN}", _TENANT), echo=False),
        "client_id": sch.Field(str, check=sch.matches(_GUID, _CLIENT), echo=False),
        "client_secret": sch.Field(str, None, secret=True),
        "certificate_path": sch.Field(str, None, check=sch.existing_file),
        "certificate_password": sch.Field(str, None, secret=True),
        "cloud": sch.Field(str, "global", check=sch.one_of(*CLOUDS)),
        "authority_host": sch.Field(str, None, check=sch.authority),
        "graph_url": sch.Field(str, None, check=sch.graph_url),
        "scope": sch.Field(str, "all", check=sch.one_of("all", "assigned", "groups")),
        "group_ids": sch.Field(list, [], check=sch.strings_matching(_GUID, "a group object id")),
        "service_principal_id": sch.Field(str, None, check=sch.matches(_GUID, "a GUID")),
        "include_guests": sch.Field(bool, False),
    }
)

PERSON = sch.Table(
    {
        "mail": sch.Field(str, check=sch.matches(r"[^@\s]+@" + _DOMAIN, "an email address")),
        "role": sch.Field(str, check=sch.one_of(*ROLES)),
    }
)

# A separate app registration for photos is optional: without client_id the
# organization's [organizations.entra] credentials are used.
PHOTOS = sch.Table(
    {
        "enabled": sch.Field(bool, False),
        "tenant_id": sch.Field(
            str, None, check=sch.matches(f"{_GUID}|{_DOMAIN}", _TENANT), echo=False
        ),
        "client_id": sch.Field(str, None, check=sch.matches(_GUID, _CLIENT), echo=False),
        "client_secret": sch.Field(str, None, secret=True),
        "certificate_path": sch.Field(str, None, check=sch.existing_file),
        "certificate_password": sch.Field(str, None, secret=True),
        "refresh_days": sch.Field(int, 7, check=sch.between(1, 365)),
    }
)

ORGANIZATION = sch.Table(
    {
        "slug": sch.Field(str, check=sch.matches(r"[a-z0-9][a-z0-9-]{0,62}", _SLUG)),
        "name": sch.Field(str, None),
        "template": sch.Field(str, "classic", check=_template),
        "domains": sch.Field(list, [], check=sch.strings_matching(_DOMAIN, "a domain", True)),
        "seats": sch.Field(int, None, check=sch.between(0, 10_000_000)),
        "max_deletes": sch.Field(int, 500, check=sch.between(0, 10_000_000)),
        "on_disable": sch.Field(str, "keep", check=sch.one_of("keep", "deactivate")),
        "people": sch.Field(sch.ArrayOf(PERSON), []),
        "entra": sch.Field(ENTRA),
        "photos": sch.Field(PHOTOS, {}),
    }
)

ROOT = sch.Table(
    {
        "state": sch.Field(sch.Table({"path": sch.Field(str, "cardsync.db", check=sch.path)}), {}),
        # Only "type" here: the other keys depend on it (see BACKEND_OPTIONS).
        "backend": sch.Field(
            sch.Table({"type": sch.Field(str, "local", check=_backend_type)}, extra=True), {}
        ),
        "schedule": sch.Field(
            sch.Table({"interval_minutes": sch.Field(int, 40, check=sch.between(1, 1440))}), {}
        ),
        "domain_assignment": sch.Field(bool, False),
        "organizations": sch.Field(
            sch.ArrayOf(
                ORGANIZATION,
                min_items=1,
                too_few="at least one organization is required; add an [[organizations]] table",
            ),
            [],
        ),
    }
)

# Options of the built-in backends. Any other registered backend gets its options as
# written (with ${ENV} values substituted): it validates them itself.
BACKEND_OPTIONS: dict[str, sch.Table] = {
    "local": sch.Table(
        {
            "output": sch.Field(str, check=sch.path),
            "base_url": sch.Field(str, check=sch.http_url),
            "index": sch.Field(bool, True),
        }
    ),
    "memory": sch.Table(
        {
            "base_url": sch.Field(str, sch.OMIT),  # any scheme: nothing is served
            "fail_user_ids": sch.Field(list, sch.OMIT, check=sch.strings),
        }
    ),
}


# Building the Config ----------------------------------------------------------------


def _entra(e: dict[str, Any], at: str, ctx: sch.Context) -> EntraConfig:
    has_secret = e["client_secret"] is not None
    has_cert = e["certificate_path"] is not None
    if has_secret == has_cert:
        ctx.problem(
            at,
            "set exactly one of client_secret and certificate_path"
            + (", not both" if has_secret else ""),
        )
    if e["certificate_password"] is not None and not has_cert:
        ctx.problem(f"{at}.certificate_password", "is only used with certificate_path")
    if e["scope"] == "groups" and e["group_ids"] == ():
        ctx.problem(f"{at}.group_ids", 'scope = "groups" needs at least one group id')
    if e["group_ids"] and e["scope"] != "groups":
        ctx.problem(f"{at}.group_ids", 'is only used with scope = "groups"')
    cloud = e["cloud"] if e["cloud"] in CLOUDS else "global"
    login, graph = CLOUDS[cloud]
    authority = e["authority_host"] or f"https://{login}"
    return EntraConfig(
        tenant_id=e["tenant_id"],
        client_id=e["client_id"],
        client_secret=e["client_secret"],
        certificate_path=e["certificate_path"],
        certificate_password=e["certificate_password"],
        cloud=cloud,
        authority=authority,
        graph_url=e["graph_url"] or f"https://{graph}/v1.0",
        custom_authority=urlsplit(str(authority)).hostname not in _LOGIN_HOSTS,
        scope=e["scope"],
        group_ids=tuple(g.lower() for g in _items(e["group_ids"])),
        service_principal_id=e["service_principal_id"],
        include_guests=e["include_guests"],
    )


def _photos(p: Any, entra: Any, at: str, ctx: sch.Context) -> PhotosConfig:
    """The photos table; its own credentials inherit cloud and hosts from ``entra``."""
    if p is sch.INVALID:
        return PhotosConfig()
    if p["client_id"] is None:
        keys = ("tenant_id", "client_secret", "certificate_path", "certificate_password")
        own = [k for k in keys if p[k] is not None]
        if own:
            ctx.problem(
                at,
                f"{', '.join(own)} set without client_id: a separate app registration for "
                "photos needs its client_id; leave them all out to use [organizations.entra]",
            )
        return PhotosConfig(p["enabled"], None, p["refresh_days"])
    has_secret, has_cert = p["client_secret"] is not None, p["certificate_path"] is not None
    if has_secret == has_cert:
        ctx.problem(
            at,
            "with client_id, set exactly one of client_secret and certificate_path"
            + (", not both" if has_secret else ""),
        )
    if p["certificate_password"] is not None and not has_cert:
        ctx.problem(f"{at}.certificate_password", "is only used with certificate_path")
    if not isinstance(entra, EntraConfig):
        return PhotosConfig(p["enabled"], None, p["refresh_days"])
    photo_entra = dataclasses.replace(
        entra,
        tenant_id=p["tenant_id"] or entra.tenant_id,
        client_id=p["client_id"],
        client_secret=p["client_secret"],
        certificate_path=p["certificate_path"],
        certificate_password=p["certificate_password"],
    )
    return PhotosConfig(p["enabled"], photo_entra, p["refresh_days"])


def _organizations(items: list[Any], ctx: sch.Context) -> tuple[OrgConfig, ...]:
    orgs: list[OrgConfig] = []
    seen: dict[str, int] = {}
    owners_of_domain: dict[str, int] = {}
    for i, org in enumerate(items):
        if org is sch.INVALID:
            continue
        at = f"organizations[{i}]"
        slug = org["slug"]
        if isinstance(slug, str):
            if slug in seen:
                ctx.problem(
                    f"{at}.slug", f"duplicate slug {slug!r} (also organizations[{seen[slug]}])"
                )
            seen.setdefault(slug, i)
        entra = org["entra"]
        if entra is not sch.INVALID:
            entra = _entra(entra, f"{at}.entra", ctx)
        for domain in _items(org["domains"]):
            if domain in owners_of_domain:
                ctx.problem(
                    f"{at}.domains",
                    f"domain {domain!r} is also listed by "
                    f"organizations[{owners_of_domain[domain]}]; a domain belongs to one",
                )
            owners_of_domain.setdefault(domain, i)
        orgs.append(
            OrgConfig(
                slug,
                org["name"] or slug,
                entra,
                org["template"],
                domains=_items(org["domains"]),
                seats=org["seats"],
                max_deletes=org["max_deletes"],
                on_disable=org["on_disable"],
                people=_people(org["people"], f"{at}.people", ctx),
                photos=_photos(org["photos"], entra, f"{at}.photos", ctx),
            )
        )
    return tuple(orgs)


def _items(value: Any) -> tuple[str, ...]:
    """A validated array, or () when it was absent or invalid (already reported)."""
    return () if value is None or value is sch.INVALID else tuple(value)


def _people(items: Any, at: str, ctx: sch.Context) -> tuple[PersonRole, ...]:
    if items is sch.INVALID or not items:
        return ()
    people: list[PersonRole] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item is sch.INVALID:
            continue
        mail = item["mail"].lower()
        if mail in seen:
            ctx.problem(f"{at}[{i}].mail", f"{mail} is listed twice")
        seen.add(mail)
        people.append(PersonRole(mail, item["role"]))
    owners = [p.mail for p in people if p.role == "owner"]
    if len(owners) > 1:
        ctx.problem(at, f"at most one owner, found {len(owners)}: {', '.join(owners)}")
    return tuple(people)


def _backend(table: dict[str, Any], ctx: sch.Context) -> BackendConfig:
    kind = table.pop("type")
    if kind is sch.INVALID:
        return BackendConfig(kind)
    if kind in BACKEND_OPTIONS:
        return BackendConfig(kind, ctx.table(table, BACKEND_OPTIONS[kind], "backend"))
    options: dict[str, Any] = {}
    env_keys: set[str] = set()
    for key, raw in table.items():
        options[key], from_env = ctx.expand(raw, f"backend.{key}")
        if from_env:
            env_keys.add(key)
    return BackendConfig(kind, options, frozenset(env_keys))


def _file_order(problem: str) -> tuple[int, int]:
    """Sort key: top-level sections in schema order, organizations by index."""
    head = re.match(r"(\w+)(?:\[(\d+)\])?", problem)
    keys = list(ROOT.fields)
    if not head or head[1] not in keys:
        return (len(keys), 0)
    return (keys.index(head[1]), int(head[2] or -1))


def from_dict(
    data: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] = ".",
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Config:
    """Validate parsed TOML; relative paths are resolved against ``base_dir``."""
    ctx = sch.Context(Path(os.path.abspath(base_dir)), os.environ if env is None else env)
    top = ctx.table(data, ROOT)
    backend = (
        _backend(top["backend"], ctx) if top["backend"] is not sch.INVALID else BackendConfig()
    )
    orgs = (
        _organizations(top["organizations"], ctx) if top["organizations"] is not sch.INVALID else ()
    )
    if ctx.problems:
        raise ConfigError(sorted(ctx.problems, key=_file_order), str(path) if path else None)
    return Config(
        path=path,
        state=StateConfig(**top["state"]),
        backend=backend,
        organizations=orgs,
        schedule=ScheduleConfig(**top["schedule"]),
        domain_assignment=top["domain_assignment"],
    )


# Finding and reading the file ---------------------------------------------------------


def _locate(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Path, str]:
    if explicit is not None and str(explicit) != "":
        return Path(explicit), "given with --config"
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]), f"from the {ENV_VAR} environment variable"
    return Path(DEFAULT_FILE), f"the default when neither --config nor {ENV_VAR} is set"


def resolve_path(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The config file to use: ``explicit``, else ``$CARDSYNC_CONFIG``, else ./cardsync.toml."""
    found, _ = _locate(explicit, os.environ if env is None else env)
    return Path(os.path.abspath(found.expanduser()))


def _read(file: Path, how: str) -> dict[str, Any]:
    def fail(problem: str, hint: str | None = None) -> ConfigError:
        return ConfigError([problem], str(file), hint)

    if file.is_dir():
        raise fail(f"config file {file} ({how}) is a folder, not a file")
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise fail(f"config file {file} not found ({how})", _COPY_HINT) from None
    except OSError as exc:
        raise fail(f"config file {file} ({how}) cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise fail("the file is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(sch.syntax_problem(str(exc), text), _SYNTAX_HINT) from None


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Find, read and validate the config file; raise ConfigError listing every problem.

    ``path`` is the CLI's ``--config``; without it ``$CARDSYNC_CONFIG`` (read from
    ``env``, default ``os.environ``) names the file, else ``./cardsync.toml``.
    """
    env = os.environ if env is None else env
    given, how = _locate(path, env)
    file = Path(os.path.abspath(given.expanduser()))
    data = _read(file, how)
    return from_dict(data, base_dir=file.parent, env=env, path=file)
