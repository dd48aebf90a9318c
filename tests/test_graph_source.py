"""GraphSource end to end: the real msgraph-sdk and azure-identity against the emulator
over HTTPS on loopback (its own throwaway CA, trusted through SSL_CERT_FILE and
REQUESTS_CA_BUNDLE)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pytest
import trustme

from cardsync.config import EntraConfig
from cardsync.emulator import GraphEmulator
from cardsync.errors import (
    AuthError,
    ConsentError,
    DeltaExpiredError,
    GraphError,
    ThrottledError,
    UnreachableError,
)
from cardsync.graph import GraphSource
from cardsync.graph import source as source_module
from cardsync.graph.client import IDLE_HANDLERS
from cardsync.graph.source import PREFETCH_PAGES
from cardsync.models import DELTA_SELECT, DeltaPage, DirectoryUser, GraphUser, Removal

E = TypeVar("E", bound=BaseException)


@dataclass
class Env:
    emu: Any
    tenant: Any
    app: Any
    server: Any
    entra: EntraConfig

    def source(self, **changes: Any) -> GraphSource:
        retry_budget = changes.pop("retry_budget", 30.0)
        return GraphSource(replace(self.entra, **changes), retry_budget=retry_budget)

    def records(self, kind: str) -> list[Any]:
        return [r for r in self.emu.requests if r.kind == kind]


def user_props(i: int) -> dict[str, Any]:
    return {
        "displayName": f"User {i:03d}",
        "givenName": "User",
        "surname": f"{i:03d}",
        "userPrincipalName": f"user{i:03d}@contoso.com",
        "mail": f"user{i:03d}@contoso.com",
        "jobTitle": "Engineer",
        "businessPhones": [f"+1 555 01{i:02d}"],
        "accountEnabled": True,
    }


@pytest.fixture
def env(emulator: GraphEmulator, emulator_server: Any) -> Env:
    """conftest's served emulator (5 users a page, SSL_CERT_FILE and REQUESTS_CA_BUNDLE
    already set) with 23 users, and the config of its consented app."""
    tenant = emulator.default_tenant
    app = tenant.apps()[0]
    tenant.add_users([user_props(i) for i in range(23)])
    entra = EntraConfig(
        tenant_id=tenant.tenant_id,
        client_id=app.client_id,
        client_secret=app.secret,
        authority=emulator_server.url,
        graph_url=emulator_server.graph_url,
        custom_authority=True,
    )
    return Env(emulator, tenant, app, emulator_server, entra)


def drain(source: GraphSource, link: str | None) -> tuple[list[DeltaPage], str]:
    pages = list(source.delta(link))
    assert pages, "a round has at least one page"
    assert all(p.next_link for p in pages[:-1])
    assert pages[-1].next_link is None and pages[-1].delta_link
    return pages, pages[-1].delta_link


def entries(pages: list[DeltaPage]) -> list[DirectoryUser | GraphUser | Removal]:
    return [e for p in pages for e in p.entries]


def users_by_id(pages: list[DeltaPage]) -> dict[str, GraphUser]:
    # Delta pages are read for the mirror: users keep Graph's JSON text.
    users = [e for e in entries(pages) if not isinstance(e, Removal)]
    assert all(isinstance(u, GraphUser) for u in users)
    return {u.id: u for u in users if isinstance(u, GraphUser)}


def test_initial_round_across_pages(env: Env) -> None:
    with env.source() as source:
        pages, link = drain(source, None)
        assert len(pages) >= 5  # 23 users, 5 a page
        users = users_by_id(pages)
        assert set(users) == set(env.tenant.user_ids())
        ada = next(u for u in users.values() if u.person.display_name == "User 007")
        assert ada.person.user_principal_name == "user007@contoso.com"
        assert ada.person.business_phones == ("+1 555 0107",)
        assert ada.account_enabled is True
        assert ada.user_type == "Member"
        assert source.requests_made == len(env.records("users/delta")) == len(pages)
        assert link.startswith(env.server.graph_url)


def test_select_on_the_first_request_only(env: Env) -> None:
    with env.source() as source:
        drain(source, None)
    first, *rest = env.records("users/delta")
    assert first.params["$select"].split(",") == list(DELTA_SELECT)
    assert rest
    assert all("$select" not in r.params for r in rest)
    assert all("$skiptoken" in r.params for r in rest)


def test_incremental_round_update_soft_and_hard_delete_restore(env: Env) -> None:
    t = env.tenant
    ids = t.user_ids()
    with env.source() as source:
        _, link = drain(source, None)
        t.soft_delete(ids[3])  # restored below: comes back as a normal object
        _, link = drain(source, link)
        t.update_user(ids[0], jobTitle="CTO")
        t.update_user(ids[1], accountEnabled=False)
        t.soft_delete(ids[2])
        t.soft_delete(ids[4])
        t.hard_delete(ids[4])
        t.restore(ids[3])
        new = t.add_user(**user_props(99))

        pages, next_link = drain(source, link)
        got = {e.id: e for e in entries(pages)}
        assert set(got) == {ids[0], ids[1], ids[2], ids[3], ids[4], new}
        assert got[ids[0]].person.job_title == "CTO"
        assert got[ids[1]].account_enabled is False  # a disable is not a removal
        assert got[ids[2]] == Removal(ids[2], "changed")
        assert got[ids[4]] == Removal(ids[4], "deleted")
        assert isinstance(got[ids[3]], GraphUser)
        assert got[new].person.display_name == "User 099"

        # A round without changes still hands out a (new) deltaLink.
        quiet, _ = drain(source, next_link)
        assert entries(quiet) == []


def test_duplicates_and_empty_pages(env: Env) -> None:
    env.emu.faults.duplicate_entries = True
    env.emu.faults.empty_pages = 2
    with env.source() as source:
        pages, _ = drain(source, None)
    empty = [p for p in pages if not p.entries and p.next_link]
    assert len(empty) >= 2
    ids = [e.id for e in entries(pages)]
    assert len(ids) > len(set(ids))  # some user came twice
    assert set(ids) == set(env.tenant.user_ids())


def test_throttling_is_waited_out(env: Env) -> None:
    env.emu.faults.throttle(probability=0.3, status=429, retry_after=1, seed=7)
    with env.source() as source:
        pages, _ = drain(source, None)
        assert set(users_by_id(pages)) == set(env.tenant.user_ids())
        assert source.stats.throttled > 0
        assert source.requests_made == len(env.records("users/delta"))  # retries count
    delta = env.records("users/delta")
    throttled = [r for r in delta if r.status == 429]
    assert throttled, "the seed throttles some requests"
    assert len([r for r in delta if r.status == 200]) == len(pages)


def test_503_then_success(env: Env) -> None:
    env.emu.faults.fail_next(n=2, status=503, retry_after=0, path_contains="/users/delta")
    with env.source() as source:
        pages, _ = drain(source, None)
    assert set(users_by_id(pages)) == set(env.tenant.user_ids())
    statuses = [r.status for r in env.records("users/delta")]
    assert statuses[:3] == [503, 503, 200]


def test_throttling_beyond_the_budget_is_a_throttled_error(env: Env) -> None:
    env.emu.faults.throttle(probability=1.0, status=429, retry_after=1)
    started = time.monotonic()
    with env.source(retry_budget=2.0) as source, pytest.raises(ThrottledError, match="429"):
        list(source.delta(None))
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("mode", ["410", "syncStateNotFound", "resyncRequired"])
def test_expired_link_raises_before_any_page(env: Env, mode: str) -> None:
    with env.source() as source:
        _, link = drain(source, None)
        env.emu.faults.expire_delta_links(mode=mode)
        seen: list[DeltaPage] = []
        with pytest.raises(DeltaExpiredError):
            for page in source.delta(link):
                seen.append(page)
        assert seen == []
        pages, _ = drain(source, None)  # what the caller does next: a full round
        assert set(users_by_id(pages)) == set(env.tenant.user_ids())


@pytest.mark.parametrize(
    "link",
    [
        "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x",  # another host
        "{graph}/../beta/users/delta?$deltatoken=x",  # another API version
        "{graph}/groups/delta?$deltatoken=x",  # not users
    ],
)
def test_link_for_another_endpoint_is_treated_as_expired(env: Env, link: str) -> None:
    link = link.format(graph=env.server.graph_url).replace("/v1.0/../", "/")
    with env.source() as source:
        rounds = source.delta(link)  # like a link Graph refuses: raised by the first next()
        with pytest.raises(DeltaExpiredError):
            next(rounds)
    assert env.records("users/delta") == []


def test_garbled_stored_link_is_treated_as_expired(env: Env) -> None:
    with env.source() as source:
        _, link = drain(source, None)
        garbled = link.split("$deltatoken=")[0] + "$deltatoken=not-a-token"
        with pytest.raises(DeltaExpiredError, match="stored deltaLink"):
            list(source.delta(garbled))


def failure(env: Env, expected: type[E], **changes: Any) -> E:
    """What one round raises with these config changes."""
    with env.source(**changes) as source, pytest.raises(expected) as caught:
        list(source.delta(None))
    return caught.value


def assert_clean(exc: BaseException, env: Env) -> None:
    text = f"{exc} {exc!r}"
    assert env.app.secret not in text
    assert "\n" not in str(exc)
    assert exc.__cause__ is not None  # the SDK's exception is kept


def test_wrong_secret(env: Env) -> None:
    wrong = "wrong-" + env.app.secret[::-1]
    error = failure(env, AuthError, client_secret=wrong)
    assert "client secret" in error.message
    assert env.entra.tenant_id in error.message
    assert "Certificates & secrets" in (error.hint or "")
    assert wrong not in f"{error} {error!r}"
    assert_clean(error, env)
    assert env.records("users/delta") == []


def test_unknown_tenant(env: Env) -> None:
    missing = "00000000-0000-0000-0000-00000000dead"
    error = failure(env, AuthError, tenant_id=missing)
    assert missing in error.message
    assert "tenant_id" in (error.hint or "")
    assert_clean(error, env)


def test_unknown_client_id(env: Env) -> None:
    missing = "00000000-0000-0000-0000-0000000c1d00"
    error = failure(env, AuthError, client_id=missing)
    assert missing in error.message
    assert "client_id" in (error.hint or "")
    assert_clean(error, env)


def test_missing_admin_consent(env: Env) -> None:
    bare = env.tenant.add_app(roles=())
    error = failure(env, ConsentError, client_id=bare.client_id, client_secret=bare.secret)
    assert "User.Read.All" in (error.hint or "")
    assert "admin consent" in (error.hint or "")
    assert_clean(error, env)
    assert bare.secret not in f"{error} {error!r}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("which", ["login", "graph"])
def test_unreachable_port_fails_fast(env: Env, which: str) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    changes = {"authority": dead} if which == "login" else {"graph_url": f"{dead}/v1.0"}
    started = time.monotonic()
    error = failure(env, UnreachableError, **changes)
    assert time.monotonic() - started < 5
    assert dead.removeprefix("https://") in error.message
    assert_clean(error, env)


def test_custom_authority_stays_on_loopback(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host.decode() if isinstance(host, bytes) else str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with env.source() as source:
        drain(source, None)
    assert looked_up
    assert set(looked_up) <= {"127.0.0.1", "localhost"}, looked_up
    kinds = {r.kind for r in env.emu.requests}
    assert {"openid-configuration", "token", "users/delta"} <= kinds


def test_token_is_reused_across_rounds(env: Env) -> None:
    with env.source() as source:
        _, link = drain(source, None)
        drain(source, link)
        drain(source, None)
        graph_requests = source.requests_made
    assert len(env.records("token")) == 1
    assert graph_requests == len(env.records("users/delta"))


def test_pages_stream_with_a_bounded_read_ahead(env: Env) -> None:
    env.tenant.add_users([user_props(i) for i in range(100, 220)])  # 143 users: 29 pages
    assert 5 * (PREFETCH_PAGES + 3) < 143
    with env.source() as source:
        rounds = source.delta(None)
        first = next(rounds)
        assert first.entries
        time.sleep(0.3)
        # The loop runs only while the caller waits on the source: the page taken, and
        # the next one's request, sent before the page was handed on.
        assert len(env.records("users/delta")) == 2
        source._loop.run(asyncio.sleep(0.5))  # the caller waits on something else
        # The round read ahead meanwhile, but only so far: the page taken,
        # PREFETCH_PAGES waiting, one parsed and waiting for room, and the next one's
        # body, fetched before that one was parsed.
        assert len(env.records("users/delta")) == 1 + PREFETCH_PAGES + 2
        rounds.close()  # abandoning a round is fine, and the source stays usable
        time.sleep(0.2)
        assert len(env.records("users/delta")) == 1 + PREFETCH_PAGES + 2
        pages, _ = drain(source, None)
    assert set(users_by_id(pages)) == set(env.tenant.user_ids())


def test_a_wrong_next_link_hint_is_dropped_for_the_parsed_link(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The next request goes out on a link read from the raw bytes; the parsed page has
    # the last word. A hint that disagrees costs one request, never a page.
    real = source_module._next_link_hint

    def wrong(body: bytes) -> str | None:
        hint = real(body)
        return None if hint is None else hint.replace("$skiptoken=", "$skiptoken=x")

    monkeypatch.setattr(source_module, "_next_link_hint", wrong)
    with env.source() as source:
        pages, link = drain(source, None)
        assert set(users_by_id(pages)) == set(env.tenant.user_ids())
        env.tenant.update_user(env.tenant.user_ids()[0], jobTitle="Changed")
        again, _ = drain(source, link)
    assert [u.person.job_title for u in entries(again)] == ["Changed"]


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (b'{"value":[],"@odata.nextLink":"https://g/v1.0/users/delta?$skiptoken=a"}',
         "https://g/v1.0/users/delta?$skiptoken=a"),
        (b'{"@odata.nextLink":"https://g/v1.0/users/delta?$skiptoken=b","value":[]}',
         "https://g/v1.0/users/delta?$skiptoken=b"),
        (b'{"value":[],"@odata.deltaLink":"https://g/v1.0/users/delta?$deltatoken=c"}', None),
        (b'{"value":[], "@odata.nextLink": "https://g/x"}', None),  # not compact
        (b'{"value":[],"@odata.nextLink":"https:\\/\\/g\\/x"}', None),  # escapes
        (b'{"value":[],"@odata.nextLink":"https://g/x', None),  # cut off
    ],
)
def test_next_link_hint(body: bytes, hint: str | None) -> None:
    assert source_module._next_link_hint(body) == hint


def test_short_lived_tokens_are_renewed(env: Env) -> None:
    env.emu.faults.token_ttl = 1
    with env.source() as source:
        _, link = drain(source, None)
        time.sleep(1.5)  # every token issued so far has expired
        drain(source, link)
    assert len(env.records("token")) >= 2
    assert all(r.status == 200 for r in env.records("users/delta"))


def test_close_with_a_round_left_open(env: Env) -> None:
    source = env.source()
    rounds = source.delta(None)
    next(rounds)  # a prefetch is now under way
    source.close()  # cancels it, closes the client, stops the loop; no hang
    assert source.requests_made >= 1


def test_get_user_and_deleted_items(env: Env) -> None:
    t = env.tenant
    ids = t.user_ids()
    with env.source() as source:
        by_id = source.get_user(ids[5])
        assert by_id is not None and by_id.person.display_name == "User 005"
        by_upn = source.get_user("user006@contoso.com")
        assert by_upn is not None and by_upn.id == ids[6]
        assert source.get_user("nobody@contoso.com") is None
        assert source.get_user("00000000-0000-0000-0000-000000000000") is None

        assert source.deleted_item_exists(ids[7]) is False  # active, not in the bin
        t.soft_delete(ids[7])
        assert source.deleted_item_exists(ids[7]) is True
        t.hard_delete(ids[7])
        assert source.deleted_item_exists(ids[7]) is False


def test_closed_source_refuses_work(env: Env) -> None:
    source = env.source()
    source.close()
    source.close()  # idempotent
    with pytest.raises(RuntimeError):
        list(source.delta(None))


def certificate(tmp_path: Any, name: str) -> tuple[Any, bytes]:
    """A PEM file with an RSA key and its certificate, and the public certificate."""
    import trustme

    rsa = trustme.KeyType.RSA  # MSAL signs its client assertion with RS256 or PS256
    cert = trustme.CA(key_type=rsa).issue_cert(f"{name}.cardsync.test", key_type=rsa)
    path = tmp_path / f"{name}.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return path, cert.cert_chain_pems[0].bytes()


def test_certificate_credential(env: Env, tmp_path: Any) -> None:
    path, public = certificate(tmp_path, "app")
    app = env.tenant.add_app(certificate=public)
    with env.source(client_id=app.client_id, client_secret=None, certificate_path=path) as source:
        pages, _ = drain(source, None)
    assert set(users_by_id(pages)) == set(env.tenant.user_ids())


def test_unknown_certificate_is_an_auth_error(env: Env, tmp_path: Any) -> None:
    _, public = certificate(tmp_path, "registered")
    other, _ = certificate(tmp_path, "other")
    app = env.tenant.add_app(certificate=public)
    changes = {"client_id": app.client_id, "client_secret": None, "certificate_path": other}
    error = failure(env, AuthError, **changes)
    assert "certificate" in error.message
    assert "Certificates & secrets" in (error.hint or "")


def test_unreadable_certificate_is_an_auth_error(env: Env, tmp_path: Any) -> None:
    missing = tmp_path / "app.pem"
    with pytest.raises(AuthError, match="cannot load the certificate"):
        env.source(
            client_secret=None, certificate_path=missing, certificate_password=env.app.secret
        )


def test_malformed_tenant_id_is_an_auth_error(env: Env) -> None:
    with pytest.raises(AuthError, match="Invalid tenant ID") as caught:
        env.source(tenant_id="contoso/../other tenant")
    assert_clean(caught.value, env)


# -- the pure helpers behind the retry loop and the error messages ----------------------


def test_retry_after_forms() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from cardsync.graph.errors import parse_retry_after

    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(soon) or 0) <= 31
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past) == 0.0
    assert parse_retry_after("soon") is None


def test_outside_text_is_redacted(env: Env) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    from cardsync.graph.errors import to_cardsync_error

    secret = env.app.secret
    echoes = [
        ClientAuthenticationError(
            message=f"Authentication failed: AADSTS50000: odd client_secret={secret}&x=1 "
            f"Bearer abc.def.ghi and {secret} again"
        ),
        RuntimeError(f"proxy said: client_secret={secret} Bearer abc.def.ghi {secret}"),
    ]
    for echo in echoes:
        error = to_cardsync_error(echo, env.entra, "GET users/delta")
        assert "***" in error.message  # the text was used, minus the credentials
        assert secret not in str(error)
        assert "abc.def.ghi" not in str(error)


def test_requests_go_through_the_sdk_middleware_that_matters(env: Env) -> None:
    # cardsync drops four SDK handlers that do nothing for its requests (IDLE_HANDLERS);
    # the ones that matter stay: redirects, retries, the SDK's user agent and telemetry.
    with env.source() as source:
        drain(source, None)
        handler = source._client._http._transport.pipeline._first_middleware
        chain = []
        while handler is not None:
            chain.append(type(handler).__name__)
            handler = getattr(handler, "next", None)
    delta = env.records("users/delta")
    assert delta
    # (Telemetry headers go to Microsoft's Graph hosts only, never to the emulator.)
    assert all("kiota-python/" in r.headers["user-agent"] for r in delta)
    kept = {"RedirectHandler", "RetryHandler", "UserAgentHandler", "GraphTelemetryHandler"}
    assert kept <= set(chain)
    assert not IDLE_HANDLERS & set(chain)


def test_gzip_pages_read_the_same_as_plain_ones(env: Env) -> None:
    # Graph compresses pages for clients that accept gzip, and the SDK's httpx always does.
    env.emu.page_size = 50  # one page of 23 users, well over the 1 KB the emulator skips
    with env.source() as source:
        plain = users_by_id(drain(source, None)[0])
    env.emu.gzip = True
    env.emu.clear_requests()
    with env.source() as source:
        zipped = users_by_id(drain(source, None)[0])
    assert zipped == plain and len(zipped) == 23  # the same text, so the same hashes
    delta = env.records("users/delta")
    assert delta and all("gzip" in r.headers["accept-encoding"] for r in delta)


@pytest.mark.parametrize("url", [
    "https://graph.microsoft.com/v1.0/users/delta?$skiptoken=" + "x" * 900,
    "https://GRAPH.Microsoft.com/v1.0/me",
    "https://graph.microsoft.com:443/v1.0/users",
    "https://graph.microsoft.com:8443/v1.0/users",
    "http://graph.microsoft.com/v1.0/users",
    "https://graph.microsoft.com.evil.test/v1.0/users",
    "https://user@graph.microsoft.com/v1.0/users",
    "https://graph.microsoft.us/beta/users",
    "https://microsoftgraph.chinacloudapi.cn/v1.0/users?$select=id",
    "https://127.0.0.1:4443/v1.0/users/delta",
])
def test_telemetry_goes_to_the_same_hosts_as_with_the_sdks_own_check(url: str) -> None:
    # cardsync's telemetry handler only swaps the SDK's host check (which re-parses the
    # URL with urllib3 on every request) for one on httpx's parsed URL.
    import httpx
    from msgraph_core.middleware import GraphTelemetryHandler

    from cardsync.graph.client import _telemetry_handler

    ours = _telemetry_handler(GraphTelemetryHandler)()
    assert isinstance(ours, GraphTelemetryHandler)
    parsed = httpx.URL(url)
    assert ours.is_graph_url(parsed) == GraphTelemetryHandler().is_graph_url(parsed)


def test_closing_the_source_mid_round_wakes_the_reader(env: Env) -> None:
    # The daemon closes its sources when it stops, maybe while a cycle's thread still
    # reads a round: that thread must get an error, not wait forever.
    env.tenant.add_users([user_props(i) for i in range(100, 220)])
    source = env.source()
    rounds = source.delta(None)
    next(rounds)
    outcome: list[BaseException | None] = []

    def read_on() -> None:
        try:
            for _ in rounds:
                time.sleep(0.05)  # slower than Graph: the round is still going on
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - what the reader got is the result
            outcome.append(exc)

    reader = threading.Thread(target=read_on)
    reader.start()
    time.sleep(0.2)
    source.close()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], GraphError)
    assert "closed during a sync" in str(outcome[0])


def test_ctrl_c_while_waiting_for_a_page_leaves_the_source_usable(env: Env) -> None:
    # The event loop runs on the caller's thread: Ctrl-C lands in it. The request is
    # cancelled, the round ends with KeyboardInterrupt, and the next call works.
    env.emu.faults.page_delay = 0.5
    with env.source() as source:
        rounds = source.delta(None)
        main = threading.main_thread().ident
        timer = threading.Timer(0.2, signal.pthread_kill, [main, signal.SIGINT])
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            next(rounds)
        assert time.monotonic() - started < 0.45  # the wait for the page was cut short
        rounds.close()
        env.emu.faults.page_delay = 0
        pages, _ = drain(source, None)
    assert set(users_by_id(pages)) == set(env.tenant.user_ids())


def test_a_round_abandoned_inside_a_call_on_the_loop_does_not_deadlock(env: Env) -> None:
    # The round's generator may be finalized while the loop runs on the same thread (by
    # the garbage collector, in the middle of another call): cancelling its producer
    # must not wait for the loop that thread is running.
    with env.source() as source:
        rounds = source.delta(None)
        next(rounds)

        async def abandon() -> None:
            rounds.close()

        source._loop.run(abandon())
        pages, _ = drain(source, None)
    assert set(users_by_id(pages)) == set(env.tenant.user_ids())


def test_graph_connections_run_on_asyncio_streams(env: Env) -> None:
    from cardsync.graph.transport import AsyncioBackend

    with env.source() as source:
        transport = source._client._http._transport  # the SDK's middleware, then httpx's
        while not hasattr(transport, "_pool"):
            transport = transport.transport
        assert isinstance(transport._pool._network_backend, AsyncioBackend)
        pages, _ = drain(source, None)
    assert set(users_by_id(pages)) == set(env.tenant.user_ids())


def test_an_untrusted_graph_certificate_is_a_tls_error(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # The token request trusts the emulator (REQUESTS_CA_BUNDLE); Graph's connections
    # (SSL_CERT_FILE, read when the client is built) trust another CA only.
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    with env.source() as source, pytest.raises(UnreachableError) as caught:
        list(source.delta(None))
    assert "cannot establish a trusted TLS connection to Microsoft Graph" in caught.value.message
    assert not env.records("users/delta")  # refused before any request was sent


def test_a_page_slower_than_the_read_timeout_is_retried_then_reported(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cardsync.graph.client.READ_TIMEOUT", 0.2)
    env.emu.faults.page_delay = 0.6
    with env.source(retry_budget=1.5) as source, pytest.raises(UnreachableError) as caught:
        list(source.delta(None))
    assert "the connection timed out" in caught.value.message
    assert "(retried for" in caught.value.message  # a timeout is retried, within the budget
    env.emu.faults.page_delay = 0
    with env.source() as source:
        pages, _ = drain(source, None)
    assert set(users_by_id(pages)) == set(env.tenant.user_ids())
