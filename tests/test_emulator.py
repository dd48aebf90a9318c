"""The Graph emulator through raw HTTPS (httpx trusting its CA): login, users/delta paging,
removals, link expiry, faults, users, deleted items, photos, $batch and the request log."""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import certifi
import httpx
import pytest
from PIL import Image

from cardsync.emulator import App, EmulatorServer, GraphEmulator, RequestRecord, Tenant
from cardsync.emulator.sample import sample_users

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
SELECT = "displayName,jobTitle,accountEnabled"


def person(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "displayName": f"Person {i:02d}",
        "userPrincipalName": f"p{i:02d}@contoso.com",
        "jobTitle": "Engineer",
        "city": "Aarhus",
        **extra,
    }


def jpeg(width: int = 64, height: int = 48, color: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "JPEG")
    return out.getvalue()


@dataclass
class Graph:
    """An httpx client for one emulator, logged in as ``app``."""

    emu: GraphEmulator
    server: EmulatorServer
    tenant: Tenant
    app: App
    http: httpx.Client
    token: str = ""

    def login(
        self, app: App | None = None, tenant: str | None = None, **form: str
    ) -> httpx.Response:
        app = app or self.app
        data = {
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.secret,
            "scope": GRAPH_SCOPE,
            **form,
        }
        url = f"{self.server.url}/{tenant or self.tenant.id}/oauth2/v2.0/token"
        return self.http.post(url, data=data)

    def token_for(self, app: App, tenant: str | None = None) -> str:
        response = self.login(app, tenant)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def get(self, url: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        if url.startswith("/"):
            url = self.server.graph_url + url
        headers = {"Authorization": f"Bearer {token or self.token}", **kwargs.pop("headers", {})}
        return self.http.get(url, headers=headers, **kwargs)

    def post(self, url: str, body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.http.post(self.server.graph_url + url, json=body, headers=headers)

    def round(self, url: str, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        """Follow nextLinks to the deltaLink; returns the pages' bodies and the deltaLink."""
        pages = []
        while True:
            response = self.get(url, **kwargs)
            assert response.status_code == 200, response.text
            page = response.json()
            assert not ("@odata.nextLink" in page and "@odata.deltaLink" in page)
            pages.append(page)
            if "@odata.deltaLink" in page:
                return pages, page["@odata.deltaLink"]
            url = page["@odata.nextLink"]
            kwargs.pop("params", None)  # query options go on the first request only


def trusting(server: EmulatorServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca_path)


def values(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for p in pages for v in p["value"]]


@pytest.fixture
def graph(emulator: GraphEmulator, emulator_server: EmulatorServer) -> Iterator[Graph]:
    tenant = emulator.default_tenant
    with httpx.Client(verify=trusting(emulator_server), timeout=10) as http:
        g = Graph(emulator, emulator_server, tenant, tenant.apps()[0], http)
        g.token = g.token_for(g.app)
        yield g


@pytest.fixture
def people(graph: Graph) -> list[str]:
    return graph.tenant.add_users([person(i) for i in range(12)])


# -- Python API ----------------------------------------------------------------------------


def test_add_users_validates_properties() -> None:
    tenant = GraphEmulator().add_tenant(name="Fabrikam")
    with pytest.raises(ValueError, match="unknown user properties: favouriteColour"):
        tenant.add_user(userPrincipalName="a@f.com", favouriteColour="red")
    with pytest.raises(ValueError, match="userPrincipalName is required"):
        tenant.add_user(displayName="Nobody")
    tenant.add_user(userPrincipalName="a@f.com")
    with pytest.raises(ValueError, match="already in use"):
        tenant.add_users([{"userPrincipalName": "b@f.com"}, {"userPrincipalName": "A@F.com"}])
    assert len(tenant.user_ids()) == 1  # a failed bulk add adds nobody


def test_lifecycle_state_rules() -> None:
    tenant = GraphEmulator().add_tenant()
    uid = tenant.add_user(userPrincipalName="a@f.com", displayName="A")
    with pytest.raises(KeyError):
        tenant.restore(uid)  # not in deleted items
    tenant.soft_delete(uid)
    assert tenant.user_ids() == []
    assert tenant.user(uid)["deletedDateTime"]  # still readable, in the bin
    with pytest.raises(KeyError):
        tenant.update_user(uid, displayName="B")
    tenant.hard_delete(uid)
    assert tenant.user(uid) is None
    with pytest.raises(KeyError):
        tenant.restore(uid)
    again = tenant.add_user(userPrincipalName="a@f.com")  # the UPN is free again
    assert tenant.user_ids() == [again]


def test_tenant_and_app_ids_can_be_chosen() -> None:
    emu = GraphEmulator()
    tenant = emu.add_tenant(tenant_id="11111111-2222-3333-4444-555555555555", name="Fabrikam")
    app = tenant.add_app(client_id="cid", secret="s3cret", roles=())
    assert (tenant.id, tenant.tenant_id, tenant.domain) == (
        "11111111-2222-3333-4444-555555555555",
        "11111111-2222-3333-4444-555555555555",
        "fabrikam.onmicrosoft.com",
    )
    assert (app.client_id, app.secret, app.roles) == ("cid", "s3cret", ())
    assert emu.find_tenant("FABRIKAM.onmicrosoft.com") is tenant
    with pytest.raises(ValueError):
        emu.add_tenant(tenant_id=tenant.id)


# -- login ---------------------------------------------------------------------------------


def test_openid_configuration_names_the_token_endpoint(graph: Graph) -> None:
    base = f"{graph.server.url}/{graph.tenant.id}"
    for key in (graph.tenant.id, graph.tenant.domain):
        response = graph.http.get(f"{graph.server.url}/{key}/v2.0/.well-known/openid-configuration")
        assert response.status_code == 200
        meta = response.json()
        assert meta["token_endpoint"] == f"{base}/oauth2/v2.0/token"
        assert meta["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
        assert meta["issuer"] == f"{base}/v2.0"


def test_openid_configuration_of_unknown_tenant(graph: Graph) -> None:
    url = f"{graph.server.url}/no-such-tenant/v2.0/.well-known/openid-configuration"
    response = graph.http.get(url)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_tenant"
    assert body["error_description"].startswith("AADSTS90002: Tenant 'no-such-tenant' not found.")
    assert body["error_codes"] == [90002]


def test_token_success(graph: Graph) -> None:
    graph.emu.faults.token_ttl = 1234
    body = graph.login().json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 1234
    assert len(body["access_token"]) >= 32
    assert body["access_token"] != graph.token  # opaque and random


@pytest.mark.parametrize(
    ("form", "status", "error", "code"),
    [
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, 400, "unauthorized_client", 700016),
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"tenant": "00000000-0000-0000-0000-00000000dead"}, 400, "invalid_tenant", 90002),
        ({"scope": "User.Read.All"}, 400, "invalid_scope", 1002012),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ],
)
def test_token_errors(
    graph: Graph, form: dict[str, str], status: int, error: str, code: int
) -> None:
    response = graph.login(**form)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    if code == 7000215:
        assert "Invalid client secret provided." in body["error_description"]


# -- Graph auth and permissions --------------------------------------------------------------


def assert_graph_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    return dict(error)


def test_graph_needs_a_valid_unexpired_token(graph: Graph) -> None:
    url = graph.server.graph_url + "/users/delta"
    error = assert_graph_error(graph.http.get(url), 401, "InvalidAuthenticationToken")
    assert error["message"] == "Access token is empty."
    assert_graph_error(graph.get("/users/delta", token="forged"), 401, "InvalidAuthenticationToken")
    graph.emu.faults.token_ttl = 0
    expired = graph.token_for(graph.app)
    error = assert_graph_error(
        graph.get("/users/delta", token=expired), 401, "InvalidAuthenticationToken"
    )
    assert "expired" in error["message"]


def test_missing_admin_consent_is_403(graph: Graph, people: list[str]) -> None:
    bare = graph.tenant.add_app(roles=())
    token = graph.token_for(bare)  # login works without consent; Graph refuses
    for path in ("/users/delta", f"/users/{people[0]}", f"/users/{people[0]}/photo/$value"):
        error = assert_graph_error(graph.get(path, token=token), 403, "Authorization_RequestDenied")
        assert error["message"] == "Insufficient privileges to complete the operation."
    directory = graph.token_for(graph.tenant.add_app(roles=("Directory.Read.All",)))
    assert graph.get("/users/delta", token=directory).status_code == 200


def test_request_id_headers(graph: Graph) -> None:
    response = graph.get("/users/delta", headers={"client-request-id": "abc-123"})
    assert response.headers["client-request-id"] == "abc-123"
    assert response.headers["request-id"]
    failed = graph.get("/users/nobody@contoso.com", headers={"client-request-id": "def-456"})
    inner = failed.json()["error"]["innerError"]
    assert inner["request-id"] == failed.headers["request-id"] != response.headers["request-id"]
    assert inner["client-request-id"] == "def-456"


# -- users/delta: initial round ------------------------------------------------------------


def test_initial_round_pages_in_creation_order(graph: Graph, people: list[str]) -> None:
    pages, delta_link = graph.round("/users/delta", params={"$select": SELECT})
    assert [len(p["value"]) for p in pages] == [5, 5, 2]
    got = values(pages)
    assert [u["id"] for u in got] == people
    assert got[3] == {
        "id": people[3],
        "displayName": "Person 03",
        "jobTitle": "Engineer",
        "accountEnabled": True,
    }
    for page in pages[:-1]:
        link = page["@odata.nextLink"]
        assert link.startswith(graph.server.graph_url + "/users/delta?$skiptoken=")
        assert "$select" not in link and "displayName" not in link  # opaque
    assert delta_link.startswith(graph.server.graph_url + "/users/delta?$deltatoken=")


def test_without_select_the_default_properties(graph: Graph, people: list[str]) -> None:
    first = graph.get("/users/delta").json()["value"][0]
    assert set(first) == {
        "id", "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
        "officeLocation", "preferredLanguage", "surname", "userPrincipalName",
    }  # fmt: skip
    assert first["businessPhones"] == [] and first["mail"] is None
    assert "city" not in first


def test_unknown_select_property_is_400(graph: Graph) -> None:
    response = graph.get("/users/delta", params={"$select": "displayName,shoeSize"})
    error = assert_graph_error(response, 400, "BadRequest")
    assert "shoeSize" in error["message"]


def test_filter_by_ids(graph: Graph, people: list[str]) -> None:
    wanted = f"id eq '{people[1]}' or id eq '{people[7]}'"
    pages, _ = graph.round("/users/delta", params={"$filter": wanted, "$select": "displayName"})
    assert [u["id"] for u in values(pages)] == [people[1], people[7]]
    response = graph.get("/users/delta", params={"$filter": "city eq 'Aarhus'"})
    assert_graph_error(response, 400, "BadRequest")


def test_bounds_are_fixed_when_a_round_starts(graph: Graph, people: list[str]) -> None:
    first = graph.get("/users/delta", params={"$select": SELECT}).json()
    late = graph.tenant.add_user(**person(50))
    graph.tenant.soft_delete(people[9])  # not reached yet: skipped in this round
    graph.tenant.update_user(people[6], jobTitle="Boss")
    rest, delta_link = graph.round(first["@odata.nextLink"])
    ids = [u["id"] for u in first["value"] + values(rest)]
    assert late not in ids and people[9] not in ids
    assert next(u for u in values(rest) if u["id"] == people[6])["jobTitle"] == "Boss"
    changes, _ = graph.round(delta_link)
    assert {u["id"]: u.get("@removed") for u in values(changes)} == {
        late: None,
        people[9]: {"reason": "changed"},
        people[6]: None,
    }


# -- users/delta: incremental rounds -------------------------------------------------------


def test_incremental_round_changes_and_removals(graph: Graph, people: list[str]) -> None:
    t = graph.tenant
    _, link = graph.round("/users/delta", params={"$select": SELECT})
    t.update_user(people[0], jobTitle="CTO")
    t.update_user(people[1], accountEnabled=False)
    t.update_user(people[2], city="Odense")  # not selected: not tracked
    t.update_user(people[3], jobTitle="Engineer")  # no actual change
    t.soft_delete(people[4])
    t.soft_delete(people[5])
    t.hard_delete(people[5])
    t.hard_delete(people[6])
    t.soft_delete(people[7])
    t.restore(people[7])
    t.set_photo(people[8], jpeg())  # photos are not tracked by delta
    new = t.add_user(**person(40))
    pages, next_link = graph.round(link)
    got = {u["id"]: u for u in values(pages)}
    assert set(got) == {people[0], people[1], people[4], people[5], people[6], people[7], new}
    assert got[people[0]] == {
        "id": people[0],
        "displayName": "Person 00",
        "jobTitle": "CTO",
        "accountEnabled": True,
    }
    assert got[people[1]]["accountEnabled"] is False
    assert got[people[4]] == {"id": people[4], "@removed": {"reason": "changed"}}
    assert got[people[5]] == {"id": people[5], "@removed": {"reason": "deleted"}}
    assert got[people[6]] == {"id": people[6], "@removed": {"reason": "deleted"}}
    assert got[people[7]]["displayName"] == "Person 07"
    assert got[new]["displayName"] == "Person 40"

    quiet, newer_link = graph.round(next_link)
    assert len(quiet) == 1 and quiet[0]["value"] == []
    assert newer_link != next_link


def test_incremental_round_pages_too(graph: Graph, people: list[str]) -> None:
    _, link = graph.round("/users/delta", params={"$select": "displayName"})
    for i, uid in enumerate(people):
        graph.tenant.update_user(uid, displayName=f"Renamed {i}")
        graph.tenant.update_user(uid, displayName=f"Renamed again {i}")
    pages, _ = graph.round(link)
    assert [len(p["value"]) for p in pages] == [5, 5, 2]  # each user once
    assert values(pages)[11] == {"id": people[11], "displayName": "Renamed again 11"}


def test_deltatoken_latest_starts_from_now(graph: Graph, people: list[str]) -> None:
    response = graph.get("/users/delta", params={"$deltatoken": "latest", "$select": "jobTitle"})
    page = response.json()
    assert page["value"] == [] and "@odata.nextLink" not in page
    graph.tenant.update_user(people[2], jobTitle="Lead")
    pages, _ = graph.round(page["@odata.deltaLink"])
    assert values(pages) == [{"id": people[2], "jobTitle": "Lead"}]


def test_prefer_return_minimal_leaves_out_unchanged(graph: Graph, people: list[str]) -> None:
    _, link = graph.round("/users/delta", params={"$select": SELECT})
    graph.tenant.update_user(people[0], jobTitle="CTO")
    response = graph.get(link, headers={"Prefer": "return=minimal"})
    assert response.headers["Preference-Applied"] == "return=minimal"
    assert response.json()["value"] == [{"id": people[0], "jobTitle": "CTO"}]


# -- users/delta: expiry and faults --------------------------------------------------------


def test_expired_link_410_points_to_a_fresh_round(graph: Graph, people: list[str]) -> None:
    _, link = graph.round("/users/delta", params={"$select": SELECT})
    graph.emu.faults.expire_delta_links(mode="410")
    response = graph.get(link)
    assert_graph_error(response, 410, "resyncRequired")
    fresh = response.headers["Location"]
    assert fresh == f"{graph.server.graph_url}/users/delta?$select={SELECT}"
    pages, new_link = graph.round(fresh)
    assert [u["id"] for u in values(pages)] == people
    assert graph.get(new_link).status_code == 200  # links issued after expiry work
    graph.emu.faults.clear()  # back to the default mode, but the link stays expired
    assert_graph_error(graph.get(link), 400, "syncStateNotFound")


@pytest.mark.parametrize("mode", ["syncStateNotFound", "resyncRequired"])
def test_expired_link_400_modes(graph: Graph, people: list[str], mode: str) -> None:
    _, link = graph.round("/users/delta", params={"$select": SELECT})
    graph.emu.faults.expire_delta_links(mode=mode)
    assert_graph_error(graph.get(link), 400, mode)


def test_delta_link_ttl(graph: Graph, people: list[str]) -> None:
    first = graph.get("/users/delta", params={"$select": SELECT}).json()
    graph.emu.faults.delta_link_ttl = 0.0
    _, link = graph.round(first["@odata.nextLink"])  # skip tokens do not age
    assert_graph_error(graph.get(link), 400, "syncStateNotFound")
    graph.emu.faults.delta_link_ttl = 3600.0
    assert graph.get(link).status_code == 200


def test_tampered_and_foreign_tokens_are_400(graph: Graph, people: list[str]) -> None:
    assert_graph_error(graph.get("/users/delta?$skiptoken=garbage!"), 400, "BadRequest")
    other = graph.emu.add_tenant(name="Fabrikam")
    other.add_user(userPrincipalName="x@fabrikam.com")
    other_token = graph.token_for(other.add_app(), other.id)
    link = graph.get("/users/delta", token=other_token).json()["@odata.deltaLink"]
    assert_graph_error(graph.get(link), 400, "BadRequest")  # another tenant's state


def test_duplicate_entries(graph: Graph, people: list[str]) -> None:
    graph.emu.faults.duplicate_entries = True
    pages, _ = graph.round("/users/delta", params={"$select": "displayName"})
    ids = [[u["id"] for u in p["value"]] for p in pages]
    assert ids[1][0] == ids[0][-2]  # page 2 starts with page 1's last user...
    assert ids[0][-1] == ids[0][0]  # ...after page 1 sent its first user twice
    assert set(sum(ids, [])) == set(people)
    assert len(sum(ids, [])) > len(people)


def test_empty_pages_and_page_delay(graph: Graph, people: list[str]) -> None:
    graph.emu.faults.empty_pages = 2
    graph.emu.faults.page_delay = 0.05
    started = time.monotonic()
    pages, _ = graph.round("/users/delta", params={"$select": "displayName"})
    assert time.monotonic() - started >= 0.05 * len(pages)
    assert [len(p["value"]) for p in pages] == [0, 0, 5, 5, 2]
    assert all("@odata.nextLink" in p for p in pages[:2])


def test_throttling_answers_429_with_retry_after(graph: Graph, people: list[str]) -> None:
    graph.emu.faults.throttle(probability=1.0, status=429, retry_after=7)
    response = graph.get("/users/delta")
    assert_graph_error(response, 429, "TooManyRequests")
    assert response.headers["Retry-After"] == "7"
    graph.emu.faults.throttle(probability=1.0, status=503, retry_after=2)
    response = graph.get(f"/users/{people[0]}")
    assert_graph_error(response, 503, "serviceNotAvailable")
    assert response.headers["Retry-After"] == "2"
    graph.emu.faults.clear()
    assert graph.login().status_code == 200  # login is never throttled


def test_seeded_throttling_is_deterministic(graph: Graph, people: list[str]) -> None:
    def statuses(seed: int) -> list[int]:
        graph.emu.faults.throttle(probability=0.5, seed=seed)
        return [graph.get(f"/users/{people[0]}").status_code for _ in range(16)]

    first = statuses(seed=4)
    assert first == statuses(seed=4)
    assert {200, 429} == set(first)


def test_fail_next_matches_paths(graph: Graph, people: list[str]) -> None:
    graph.emu.faults.fail_next(n=2, status=503, retry_after=0, path_contains="/users/delta")
    assert graph.get(f"/users/{people[0]}").status_code == 200  # other paths untouched
    assert [graph.get("/users/delta").status_code for _ in range(3)] == [503, 503, 200]


# -- users, deleted items, photos -----------------------------------------------------------


def test_get_user_by_id_or_upn(graph: Graph, people: list[str]) -> None:
    by_id = graph.get(f"/users/{people[3]}", params={"$select": "displayName,city"}).json()
    assert by_id["id"] == people[3] and by_id["displayName"] == "Person 03"
    assert by_id["city"] == "Aarhus" and "jobTitle" not in by_id
    by_upn = graph.get("/users/P03@contoso.com").json()
    assert by_upn["id"] == people[3] and by_upn["userPrincipalName"] == "p03@contoso.com"
    assert_graph_error(graph.get("/users/nobody@contoso.com"), 404, "Request_ResourceNotFound")
    graph.tenant.soft_delete(people[3])
    assert_graph_error(graph.get(f"/users/{people[3]}"), 404, "Request_ResourceNotFound")


def test_deleted_items_tell_soft_from_hard(graph: Graph, people: list[str]) -> None:
    path = f"/directory/deletedItems/{people[0]}"
    assert_graph_error(graph.get(path), 404, "Request_ResourceNotFound")  # active
    graph.tenant.soft_delete(people[0])
    item = graph.get(path).json()
    assert item["id"] == people[0] and item["@odata.type"] == "#microsoft.graph.user"
    assert item["deletedDateTime"]
    graph.tenant.hard_delete(people[0])
    assert_graph_error(graph.get(path), 404, "Request_ResourceNotFound")


def test_photos(graph: Graph, people: list[str]) -> None:
    uid = people[0]
    assert_graph_error(graph.get(f"/users/{uid}/photo"), 404, "ImageNotFound")
    assert_graph_error(graph.get(f"/users/{uid}/photo/$value"), 404, "ImageNotFound")
    picture = jpeg(64, 48)
    graph.tenant.set_photo(uid, picture)
    meta = graph.get(f"/users/{uid}/photo").json()
    assert (meta["id"], meta["width"], meta["height"]) == ("default", 64, 48)
    etag = meta["@odata.mediaEtag"]
    assert etag.startswith('W/"') and etag.endswith('"')
    value = graph.get(f"/users/{uid}/photo/$value")
    assert value.content == picture
    assert value.headers["Content-Type"] == "image/jpeg"
    graph.tenant.set_photo(uid, jpeg(color="red"))
    assert graph.get(f"/users/{uid}/photo").json()["@odata.mediaEtag"] != etag
    graph.tenant.set_photo(uid, None)
    assert graph.get(f"/users/{uid}/photo/$value").status_code == 404
    with pytest.raises(ValueError):
        graph.tenant.set_photo(uid, b"not an image")


# -- $batch --------------------------------------------------------------------------------


def test_batch_mixes_binary_json_and_errors(graph: Graph, people: list[str]) -> None:
    picture = jpeg()
    graph.tenant.set_photo(people[0], picture)
    requests = [
        {"id": "1", "method": "GET", "url": f"/users/{people[0]}/photo/$value"},
        {"id": "2", "method": "GET", "url": f"/users/{people[1]}/photo/$value"},
        {"id": "3", "method": "GET", "url": f"/users/{people[2]}?$select=displayName"},
        {"id": "4", "method": "GET", "url": f"https://graph.microsoft.com/v1.0/users/{people[2]}"},
    ]
    response = graph.post("/$batch", {"requests": requests})
    assert response.status_code == 200
    items = {r["id"]: r for r in response.json()["responses"]}
    assert items["1"]["status"] == 200
    assert items["1"]["headers"]["Content-Type"] == "image/jpeg"
    assert items["1"]["body"] == base64.b64encode(picture).decode()
    assert items["2"]["status"] == 404
    assert items["2"]["body"]["error"]["code"] == "ImageNotFound"
    assert items["3"]["status"] == 200 and items["3"]["body"]["displayName"] == "Person 02"
    assert items["4"]["status"] == 400  # absolute item URLs are rejected, as in Graph


def test_batch_limits(graph: Graph, people: list[str]) -> None:
    item = {"method": "GET", "url": f"/users/{people[0]}"}
    too_many = [{"id": str(i), **item} for i in range(21)]
    assert_graph_error(graph.post("/$batch", {"requests": too_many}), 400, "BadRequest")
    twice = [{"id": "1", **item}, {"id": "1", **item}]
    assert_graph_error(graph.post("/$batch", {"requests": twice}), 400, "BadRequest")
    assert_graph_error(graph.post("/$batch", {"nothing": []}), 400, "BadRequest")
    twenty = [{"id": str(i), **item} for i in range(20)]
    assert graph.post("/$batch", {"requests": twenty}).status_code == 200


def test_batch_items_are_throttled_one_by_one(graph: Graph, people: list[str]) -> None:
    graph.emu.faults.throttle(probability=0.5, status=429, retry_after=3, seed=1)
    requests = [{"id": str(i), "method": "GET", "url": f"/users/{u}"} for i, u in enumerate(people)]
    response = graph.post("/$batch", {"requests": requests})
    assert response.status_code == 200  # the batch itself goes through
    items = response.json()["responses"]
    throttled = [r for r in items if r["status"] == 429]
    assert throttled and len(throttled) < len(items)
    assert all(r["headers"]["Retry-After"] == "3" for r in throttled)
    assert all(r["body"]["error"]["code"] == "TooManyRequests" for r in throttled)


# -- request log, transport ----------------------------------------------------------------


def test_requests_are_recorded(graph: Graph, people: list[str]) -> None:
    graph.emu.clear_requests()
    graph.get("/users/delta", params={"$select": "displayName"},
              headers={"client-request-id": "r-1", "Prefer": "return=minimal"})
    graph.get("/users/nobody@contoso.com")
    graph.http.get(f"{graph.server.url}/_emulator/users")  # control calls are not recorded
    agent = {"user-agent": graph.http.headers["User-Agent"],
             "accept-encoding": graph.http.headers["Accept-Encoding"]}
    assert graph.emu.requests == [
        RequestRecord("GET", "/v1.0/users/delta", "$select=displayName", 200,
                      {**agent, "client-request-id": "r-1", "prefer": "return=minimal"}),
        RequestRecord("GET", "/v1.0/users/nobody@contoso.com", "", 404, agent),
    ]
    # The log keeps what a client says about itself, never its credentials.
    assert all("authorization" not in r.headers for r in graph.emu.requests)
    assert graph.emu.requests[0].params == {"$select": "displayName"}
    assert graph.emu.stats() == {"users/delta": 1, "users": 1, "status:404": 1}
    graph.emu.clear_requests()
    assert graph.emu.requests == []


def test_keep_alive_and_content_length(graph: Graph, people: list[str]) -> None:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", graph.server.port, context=trusting(graph.server)
    )
    try:
        headers = {"Authorization": f"Bearer {graph.token}"}
        conn.request("GET", "/v1.0/users/delta", headers=headers)
        first = conn.getresponse()
        body = first.read()
        assert first.version == 11 and int(first.headers["Content-Length"]) == len(body)
        sock = conn.sock
        conn.request("GET", f"/v1.0/users/{people[0]}", headers=headers)
        assert conn.getresponse().read()
        assert conn.sock is sock  # the same TLS connection served both
    finally:
        conn.close()


def test_gzip_for_clients_that_accept_it(graph: Graph, people: list[str]) -> None:
    # Like Graph, the emulator (with gzip on) compresses JSON for a client that accepts
    # gzip; photos, small bodies and clients that do not accept it get the bytes as they are.
    graph.emu.gzip = True
    graph.emu.page_size = 50  # the 12 people in one page of ~2 KB
    conn = http.client.HTTPSConnection(
        "127.0.0.1", graph.server.port, context=trusting(graph.server)
    )
    try:
        auth = {"Authorization": f"Bearer {graph.token}"}
        sent: dict[str, tuple[Any, bytes]] = {}
        for name, accept in (("gzip", "gzip, deflate"), ("refused", "gzip;q=0, identity"),
                             ("none", "")):
            headers = {**auth, "Accept-Encoding": accept} if accept else auth
            conn.request("GET", f"/v1.0/users/delta?$select={SELECT},userPrincipalName,city",
                         headers=headers)
            response = conn.getresponse()
            sent[name] = (response.headers, response.read())
        headers, body = sent["gzip"]
        assert headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in headers["Vary"]
        assert int(headers["Content-Length"]) == len(body)
        page = json.loads(gzip.decompress(body))
        for name in ("refused", "none"):
            assert sent[name][0]["Content-Encoding"] is None
            plain = json.loads(sent[name][1])
            assert [v["id"] for v in plain["value"]] == [v["id"] for v in page["value"]]
        graph.tenant.set_photo(people[0], jpeg())
        conn.request("GET", f"/v1.0/users/{people[0]}/photo/$value",
                     headers={**auth, "Accept-Encoding": "gzip"})
        photo = conn.getresponse()
        assert photo.headers["Content-Encoding"] is None and photo.read() == jpeg()
        conn.request("GET", f"/v1.0/users/{people[0]}?$select=id",
                     headers={**auth, "Accept-Encoding": "gzip"})
        small = conn.getresponse()
        assert small.headers["Content-Encoding"] is None  # under 1 KB
        assert json.loads(small.read())["id"] == people[0]
    finally:
        conn.close()
    # httpx (and so msgraph-sdk) accepts gzip by default and decodes it.
    pages, _ = graph.round("/users/delta")
    assert len(values(pages)) == len(people)


@pytest.mark.parametrize(("header", "accepted"), [
    ("gzip, deflate", True), ("br, GZIP;q=0.5", True), ("x-gzip", True), ("*", True),
    ("gzip;q=0", False), ("gzip;q=0, *", False), ("identity", False), ("", False),
    ("deflate, br", False), ("gzip;q=bad", False), ("*;q=0, gzip", True),
    ("gzip; q=0.001", True), ("identity;q=1, *;q=0.1", True),
])
def test_accept_encoding_is_read_as_rfc_9110_says(header: str, accepted: bool) -> None:
    from cardsync.emulator.wire import accepts_gzip

    assert accepts_gzip(header) is accepted


def test_certificate_covers_localhost(graph: Graph) -> None:
    url = f"https://localhost:{graph.server.port}/{graph.tenant.id}/v2.0/.well-known/openid-configuration"
    assert graph.http.get(url).status_code == 200
    public_roots = ssl.create_default_context(cafile=certifi.where())
    with httpx.Client(verify=public_roots) as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.get(url)  # only clients that trust the throwaway CA get in


def test_serves_on_ipv6_loopback(emulator: GraphEmulator) -> None:
    try:
        server = emulator.serve(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server, httpx.Client(verify=trusting(server)) as http:
        assert server.url == f"https://[::1]:{server.port}"
        tenant = emulator.default_tenant.id
        response = http.get(f"{server.url}/{tenant}/v2.0/.well-known/openid-configuration")
        assert response.json()["token_endpoint"].startswith(server.url)


def test_sample_company_is_deterministic_and_unicode_rich() -> None:
    users = sample_users(300, seed=3)
    assert users == sample_users(300, seed=3)
    assert users != sample_users(300, seed=4)
    assert [u["displayName"] for u in users[:4]] == [
        "José Müller",
        "Zoë Lefèvre",
        "王小明",
        "Søren Ørsted",
    ]
    upns = [u["userPrincipalName"] for u in users]
    assert len(set(upns)) == len(upns)
    assert all(u.isascii() and u.endswith("@contoso.com") for u in upns)
    assert any(not u["displayName"].isascii() for u in users[4:])
    assert any("mobilePhone" not in u for u in users)  # sparse, like real directories
    tenant = GraphEmulator().add_tenant()
    assert len(tenant.add_users(users)) == 300
    assert json.dumps(users, ensure_ascii=False)


def test_concurrent_paging_and_writes(graph: Graph, people: list[str]) -> None:
    """Clients page while the directory changes: no errors, and every round is complete."""
    errors: list[BaseException] = []

    def page_rounds() -> None:
        try:
            with httpx.Client(verify=trusting(graph.server), timeout=10) as http:
                reader = Graph(graph.emu, graph.server, graph.tenant, graph.app, http, graph.token)
                for _ in range(5):
                    pages, _ = reader.round("/users/delta", params={"$select": "displayName"})
                    assert set(people) <= {u["id"] for u in values(pages)}
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    readers = [threading.Thread(target=page_rounds) for _ in range(4)]
    for thread in readers:
        thread.start()
    for i in range(200):
        graph.tenant.update_user(people[i % len(people)], displayName=f"Name {i}")
        graph.tenant.add_user(**person(100 + i))
    for thread in readers:
        thread.join(timeout=30)
    assert errors == []
    assert all(r.status == 200 for r in graph.emu.requests)
