"""The Graph emulator through the real clients: azure-identity's ClientSecretCredential and
msgraph-sdk's GraphServiceClient, unmodified, over HTTPS trusting the emulator's CA; and the
``python -m cardsync.emulator`` process driven through its control API."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential, ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
from PIL import Image

from cardsync.emulator import App, EmulatorServer, GraphEmulator
from cardsync.emulator.sample import sample_users

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
SELECT = ["id", "displayName", "accountEnabled"]


def credential(server: EmulatorServer, tenant_id: str, client_id: str, secret: str) -> Any:
    authority = server.url.removeprefix("https://")  # "127.0.0.1:PORT", as cardsync passes it
    return ClientSecretCredential(
        tenant_id, client_id, secret, authority=authority, disable_instance_discovery=True
    )


def sdk_client(server: EmulatorServer, tenant_id: str, app: App) -> GraphServiceClient:
    cred = credential(server, tenant_id, app.client_id, app.secret)
    client = GraphServiceClient(credentials=cred, scopes=[GRAPH_SCOPE])
    client.request_adapter.base_url = server.graph_url
    return client


async def get_page(client: GraphServiceClient, link: str | None) -> dict[str, Any]:
    """One delta page the way cardsync fetches it: built by the SDK, parsed as raw JSON."""
    if link is None:
        query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=SELECT)
        info = client.users.delta.to_get_request_information(
            RequestConfiguration(query_parameters=query)
        )
    else:
        info = client.users.delta.with_url(link).to_get_request_information()
    raw = await client.request_adapter.send_primitive_async(info, "bytes", {"XXX": ODataError})
    return dict(json.loads(raw))


async def get_round(client: GraphServiceClient, link: str | None) -> tuple[list[Any], str]:
    entries: list[Any] = []
    while True:
        page = await get_page(client, link)
        entries += page["value"]
        if "@odata.deltaLink" in page:
            return entries, page["@odata.deltaLink"]
        link = page["@odata.nextLink"]


@pytest.fixture
def app(emulator: GraphEmulator) -> App:
    return emulator.default_tenant.apps()[0]


@pytest.fixture
def ids(emulator: GraphEmulator) -> list[str]:
    return emulator.default_tenant.add_users(sample_users(12, seed=5))


def test_sdk_rounds_through_login_and_delta(
    emulator: GraphEmulator, emulator_server: EmulatorServer, app: App, ids: list[str]
) -> None:
    tenant = emulator.default_tenant

    async def scenario() -> tuple[list[Any], list[Any]]:
        client = sdk_client(emulator_server, tenant.id, app)
        initial, link = await get_round(client, None)
        tenant.update_user(ids[0], displayName="Zoë Renamed")
        tenant.update_user(ids[1], accountEnabled=False)
        tenant.soft_delete(ids[2])
        tenant.hard_delete(ids[3])
        changes, _ = await get_round(client, link)
        return initial, changes

    initial, changes = asyncio.run(scenario())
    assert [u["id"] for u in initial] == ids
    assert set(initial[0]) == {"id", "displayName", "accountEnabled"}
    assert initial[0]["displayName"] == "José Müller"
    assert changes == [
        {"id": ids[0], "displayName": "Zoë Renamed", "accountEnabled": True},
        {"id": ids[1], "displayName": tenant.user(ids[1])["displayName"], "accountEnabled": False},
        {"id": ids[2], "@removed": {"reason": "changed"}},
        {"id": ids[3], "@removed": {"reason": "deleted"}},
    ]
    kinds = [r.kind for r in emulator.requests]
    # MSAL reads the metadata once, gets one token, then pages 5-5-2 and one change page.
    assert kinds == ["openid-configuration", "token"] + ["users/delta"] * 4
    first = emulator.requests[2]
    assert first.path == "/v1.0/users/delta()"  # the SDK's spelling of the function
    assert first.params == {"$select": "id,displayName,accountEnabled"}
    assert all("$select" not in r.params for r in emulator.requests[3:])


def test_sdk_retries_a_throttled_page(
    emulator: GraphEmulator, emulator_server: EmulatorServer, app: App, ids: list[str]
) -> None:
    emulator.faults.fail_next(n=1, status=429, retry_after=1, path_contains="/users/delta")
    client_entries, _ = asyncio.run(
        get_round(sdk_client(emulator_server, emulator.default_tenant.id, app), None)
    )
    assert [u["id"] for u in client_entries] == ids
    statuses = [r.status for r in emulator.requests if r.kind == "users/delta"]
    assert statuses == [429, 200, 200, 200]  # kiota's RetryHandler honoured Retry-After


def test_sdk_surfaces_graph_errors(
    emulator: GraphEmulator, emulator_server: EmulatorServer, ids: list[str]
) -> None:
    tenant = emulator.default_tenant
    bare = tenant.add_app(roles=())
    consented = tenant.apps()[0]

    async def scenario() -> tuple[ODataError, ODataError]:
        with pytest.raises(ODataError) as denied:
            await get_page(sdk_client(emulator_server, tenant.id, bare), None)
        client = sdk_client(emulator_server, tenant.id, consented)
        _, link = await get_round(client, None)
        emulator.faults.expire_delta_links(mode="410")
        with pytest.raises(ODataError) as gone:
            await get_page(client, link)
        return denied.value, gone.value

    denied, gone = asyncio.run(scenario())
    assert denied.response_status_code == 403
    assert denied.error is not None and denied.error.code == "Authorization_RequestDenied"
    assert gone.response_status_code == 410
    fresh = f"{emulator_server.graph_url}/users/delta?$select=id,displayName,accountEnabled"
    assert gone.response_headers["location"] == fresh


@pytest.mark.parametrize(
    ("which", "aadsts"),
    [("secret", "AADSTS7000215"), ("client", "AADSTS700016"), ("tenant", "AADSTS90002")],
)
def test_azure_identity_login_errors(
    emulator: GraphEmulator, emulator_server: EmulatorServer, app: App, which: str, aadsts: str
) -> None:
    args = {
        "tenant_id": emulator.default_tenant.id,
        "client_id": app.client_id,
        "secret": app.secret,
    }
    args[{"secret": "secret", "client": "client_id", "tenant": "tenant_id"}[which]] = (
        "00000000-0000-0000-0000-00000000dead"
    )
    cred = credential(emulator_server, **args)
    with pytest.raises(ClientAuthenticationError) as caught:
        cred.get_token(GRAPH_SCOPE)
    chain, exc = [], caught.value
    while exc is not None:  # MSAL reports an unknown tenant from a chained ValueError
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert aadsts in " ".join(chain)
    if which != "tenant":
        assert aadsts in caught.value.message


def test_azure_identity_gets_a_token(
    emulator: GraphEmulator, emulator_server: EmulatorServer, app: App
) -> None:
    emulator.faults.token_ttl = 600
    cred = credential(emulator_server, emulator.default_tenant.id, app.client_id, app.secret)
    token = cred.get_token(GRAPH_SCOPE)
    again = cred.get_token(GRAPH_SCOPE)  # cached by MSAL: one token request
    assert token.token == again.token
    assert 500 < token.expires_on - time.time() <= 600
    assert [r.kind for r in emulator.requests] == ["openid-configuration", "token"]


def test_azure_identity_certificate_credential(
    emulator: GraphEmulator, emulator_server: EmulatorServer
) -> None:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    good, bad = (ca.issue_cert(name, key_type=trustme.KeyType.RSA) for name in ("good", "bad"))
    tenant = emulator.default_tenant
    app = tenant.add_app(certificate=good.cert_chain_pems[0].bytes())
    authority = emulator_server.url.removeprefix("https://")

    def token_with(leaf: trustme.LeafCert) -> Any:
        cred = CertificateCredential(
            tenant.id,
            app.client_id,
            certificate_data=leaf.private_key_and_cert_chain_pem.bytes(),
            authority=authority,
            disable_instance_discovery=True,
        )
        return cred.get_token(GRAPH_SCOPE)

    assert token_with(good).token
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
        token_with(bad)  # signed by a key the app does not know


# -- the emulator as a process --------------------------------------------------------------


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    command = [sys.executable, "-m", "cardsync.emulator", "--users", "30", "--page-size", "10"]
    process = subprocess.Popen(
        [*command, "--dir", str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        yield process, info
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_process_serves_and_obeys_its_control_api(
    emulator_process: tuple[subprocess.Popen[str], dict[str, str]], tmp_path: Path
) -> None:
    process, info = emulator_process
    assert set(info) == {"url", "graph_url", "ca_path", "tenant_id", "client_id", "client_secret"}
    assert Path(info["ca_path"]).parent == tmp_path
    assert info["graph_url"] == info["url"] + "/v1.0"
    control = info["url"] + "/_emulator"
    trust = ssl.create_default_context(cafile=info["ca_path"])
    with httpx.Client(verify=trust, timeout=10) as http:
        ids = http.get(f"{control}/users").json()
        assert len(ids) == 30
        login = http.post(
            f"{info['url']}/{info['tenant_id']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "scope": GRAPH_SCOPE,
            },
        )
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}

        def delta_round(url: str) -> tuple[list[Any], str]:
            entries: list[Any] = []
            while True:
                page = http.get(url, headers=auth).json()
                entries += page["value"]
                if "@odata.deltaLink" in page:
                    return entries, page["@odata.deltaLink"]
                url = page["@odata.nextLink"]

        initial, link = delta_round(info["graph_url"] + "/users/delta?$select=displayName")
        assert [u["id"] for u in initial] == ids
        assert initial[0]["displayName"] == "José Müller"

        new = http.post(f"{control}/users", json=[{"userPrincipalName": "n@contoso.com"}])
        assert new.status_code == 201
        assert (
            http.patch(f"{control}/users/{ids[0]}", json={"displayName": "Jo"}).status_code == 204
        )
        assert http.post(f"{control}/users/{ids[1]}/soft-delete").status_code == 204
        assert http.post(f"{control}/users/{ids[2]}/hard-delete").status_code == 204
        assert http.post(f"{control}/users/{ids[2]}/restore").status_code == 404
        assert http.patch(f"{control}/users/{ids[3]}", json={"shoeSize": 44}).status_code == 400
        changes, _ = delta_round(link)
        assert {c["id"]: c for c in changes} == {
            ids[0]: {"id": ids[0], "displayName": "Jo"},
            ids[1]: {"id": ids[1], "@removed": {"reason": "changed"}},
            ids[2]: {"id": ids[2], "@removed": {"reason": "deleted"}},
            new.json()[0]: {"id": new.json()[0], "displayName": None},
        }

        picture = io.BytesIO()
        Image.new("RGB", (10, 10), "navy").save(picture, "JPEG")
        put = http.put(f"{control}/users/{ids[4]}/photo", content=picture.getvalue())
        assert put.status_code == 204
        photo = http.get(f"{info['graph_url']}/users/{ids[4]}/photo/$value", headers=auth)
        assert photo.content == picture.getvalue()

        faults = {"fail_next": {"n": 1, "status": 503, "retry_after": 2}}
        assert http.post(f"{control}/faults", json=faults).status_code == 204
        failed = http.get(f"{info['graph_url']}/users/{ids[4]}", headers=auth)
        assert failed.status_code == 503 and failed.headers["Retry-After"] == "2"
        assert http.post(f"{control}/faults", json={"bogus": 1}).status_code == 400

        seen = http.get(f"{control}/requests").json()
        assert seen[-1] == {
            "method": "GET",
            "path": f"/v1.0/users/{ids[4]}",
            "query": "",
            "status": 503,
            "headers": {"user-agent": http.headers["User-Agent"],
                        "accept-encoding": http.headers["Accept-Encoding"]},
        }
        assert http.delete(f"{control}/requests").status_code == 204
        assert http.get(f"{control}/requests").json() == []

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
