"""The Graph emulator's scope support, over raw HTTPS: groups/delta with members@delta, group
members, service principals and app role assignments, guest users."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cardsync.emulator import App, EmulatorServer, GraphEmulator, Tenant

SCOPE_ROLES = ("User.Read.All", "GroupMember.Read.All", "Application.Read.All")


@dataclass
class Scope:
    emu: GraphEmulator
    server: EmulatorServer
    tenant: Tenant
    app: App
    http: httpx.Client
    token: str

    def get(self, url: str, **params: str) -> httpx.Response:
        if url.startswith("/"):
            url = self.server.graph_url + url
        auth = {"Authorization": f"Bearer {self.token}"}
        return self.http.get(url, params=params or None, headers=auth)

    def collect(self, url: str, **params: str) -> tuple[list[dict[str, Any]], str | None]:
        """Every value across nextLinks; returns them and the deltaLink, if any."""
        found: list[dict[str, Any]] = []
        while True:
            response = self.get(url, **params)
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["value"]
            if "@odata.nextLink" not in page:
                return found, page.get("@odata.deltaLink")
            url, params = page["@odata.nextLink"], {}


def login(http: httpx.Client, server: EmulatorServer, tenant: Tenant, app: App) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": app.client_id,
        "client_secret": app.secret,
        "scope": "https://graph.microsoft.com/.default",
    }
    response = http.post(f"{server.url}/{tenant.id}/oauth2/v2.0/token", data=form)
    return str(response.json()["access_token"])


@pytest.fixture
def scope(emulator: GraphEmulator, emulator_server: EmulatorServer) -> Iterator[Scope]:
    tenant = emulator.default_tenant
    app = tenant.add_app(roles=SCOPE_ROLES, display_name="cardsync scope")
    trust = ssl.create_default_context(cafile=emulator_server.ca_path)
    with httpx.Client(verify=trust, timeout=10) as http:
        token = login(http, emulator_server, tenant, app)
        yield Scope(emulator, emulator_server, tenant, app, http, token)


@pytest.fixture
def org(scope: Scope) -> dict[str, str]:
    """Users ann, bob, cy, dee; group "Sales" (ann, bob) containing group "Inner" (cy)."""
    t = scope.tenant
    names = ("ann", "bob", "cy", "dee")
    ids = t.add_users([{"displayName": n, "userPrincipalName": f"{n}@contoso.com"} for n in names])
    people = dict(zip(names, ids, strict=True))
    sales, inner = t.add_group("Sales"), t.add_group("Inner")
    for member in (people["ann"], people["bob"], inner):
        t.add_member(sales, member)
    t.add_member(inner, people["cy"])
    return {**people, "sales": sales, "inner": inner}


def user_ref(uid: str, removed: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"@odata.type": "#microsoft.graph.user", "id": uid}
    return {**ref, "@removed": {"reason": "deleted"}} if removed else ref


def by_id(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in entries}


def test_groups_delta_initial_round_lists_members(scope: Scope, org: dict[str, str]) -> None:
    groups, link = scope.collect("/groups/delta", **{"$select": "displayName,members"})
    assert link is not None
    got = by_id(groups)
    assert got[org["sales"]]["displayName"] == "Sales"
    sales_members = {m["id"]: m["@odata.type"] for m in got[org["sales"]]["members@delta"]}
    assert sales_members == {
        org["ann"]: "#microsoft.graph.user",
        org["bob"]: "#microsoft.graph.user",
        org["inner"]: "#microsoft.graph.group",  # nested, and not expanded
    }
    assert got[org["inner"]]["members@delta"] == [user_ref(org["cy"])]
    names_only, _ = scope.collect("/groups/delta", **{"$select": "displayName"})
    assert all(set(g) == {"id", "displayName"} for g in names_only)


def test_groups_delta_incremental_members(scope: Scope, org: dict[str, str]) -> None:
    t = scope.tenant
    _, link = scope.collect("/groups/delta", **{"$select": "members"})
    assert link is not None
    t.add_member(org["sales"], org["dee"])
    t.remove_member(org["sales"], org["bob"])
    t.add_member(org["inner"], org["ann"])
    t.remove_member(org["inner"], org["ann"])  # net: no change, but touched
    t.soft_delete(org["cy"])  # soft-deleted users keep their memberships
    new = t.add_group("New")
    t.add_member(new, org["ann"])
    groups, link = scope.collect(link)
    assert by_id(groups) == {
        org["sales"]: {
            "id": org["sales"],
            "members@delta": [user_ref(org["dee"]), user_ref(org["bob"], removed=True)],
        },
        org["inner"]: {"id": org["inner"], "members@delta": [user_ref(org["ann"], removed=True)]},
        new: {"id": new, "members@delta": [user_ref(org["ann"])]},
    }
    t.hard_delete(org["ann"])  # a hard delete ends the memberships
    groups, _ = scope.collect(link)
    assert {g["id"]: g["members@delta"] for g in groups} == {
        org["sales"]: [user_ref(org["ann"], removed=True)],
        new: [user_ref(org["ann"], removed=True)],
    }


def test_group_members_listing(scope: Scope, org: dict[str, str]) -> None:
    scope.tenant.add_member(org["sales"], org["cy"])
    scope.tenant.soft_delete(org["cy"])  # hidden from /members while in the bin
    members, _ = scope.collect(f"/groups/{org['sales']}/members", **{"$top": "2"})
    pages = [r for r in scope.emu.requests if r.kind == "groups/members"]
    assert [r.status for r in pages] == [200, 200]  # 3 members, 2 a page
    assert {m["id"] for m in members} == {org["ann"], org["bob"], org["inner"]}
    inner = by_id(members)[org["inner"]]
    assert inner == {
        "@odata.type": "#microsoft.graph.group",
        "id": org["inner"],
        "displayName": "Inner",
    }
    assert by_id(members)[org["ann"]]["displayName"] == "ann"
    missing = scope.get("/groups/00000000-0000-0000-0000-000000000000/members")
    assert missing.status_code == 404


def test_service_principal_and_assignments(scope: Scope, org: dict[str, str]) -> None:
    t = scope.tenant
    found = scope.get("/servicePrincipals", **{"$filter": f"appId eq '{scope.app.client_id}'"})
    sps = found.json()["value"]
    assert [(s["id"], s["appId"]) for s in sps] == [
        (scope.app.service_principal_id, scope.app.client_id)
    ]
    none = scope.get("/servicePrincipals", **{"$filter": "appId eq 'nope'"})
    assert none.json()["value"] == []
    assert (
        scope.get("/servicePrincipals", **{"$filter": "startswith(appId,'a')"}).status_code == 400
    )

    t.assign(scope.app, org["dee"])
    t.assign(scope.app, org["sales"])
    t.assign(scope.app, org["sales"])  # idempotent
    url = f"/servicePrincipals/{scope.app.service_principal_id}/appRoleAssignedTo"
    assigned, _ = scope.collect(url)
    assert [
        (a["principalId"], a["principalType"], a["principalDisplayName"]) for a in assigned
    ] == [
        (org["dee"], "User", "dee"),
        (org["sales"], "Group", "Sales"),
    ]
    assert all(a["resourceId"] == scope.app.service_principal_id for a in assigned)
    t.unassign(scope.app, org["sales"])
    t.hard_delete(org["dee"])  # a deleted principal loses its assignments
    assert scope.collect(url)[0] == []
    with pytest.raises(KeyError):
        t.unassign(scope.app, org["sales"])


def test_scope_routes_need_their_permissions(scope: Scope, org: dict[str, str]) -> None:
    users_only = login(scope.http, scope.server, scope.tenant, scope.tenant.apps()[0])
    auth = {"Authorization": f"Bearer {users_only}"}
    for path in ("/groups/delta", f"/groups/{org['sales']}/members", "/servicePrincipals"):
        response = scope.http.get(scope.server.graph_url + path, headers=auth)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "Authorization_RequestDenied"


def test_guest_users(scope: Scope) -> None:
    guest = scope.tenant.add_user(
        displayName="Gus Guest",
        userPrincipalName="gus_fabrikam.com#EXT#@contoso.onmicrosoft.com",
        mail="gus@fabrikam.com",
        userType="Guest",
    )
    users, _ = scope.collect("/users/delta", **{"$select": "displayName,userType"})
    assert by_id(users)[guest] == {"id": guest, "displayName": "Gus Guest", "userType": "Guest"}


def test_control_api_for_groups_and_assignments(scope: Scope, org: dict[str, str]) -> None:
    control = scope.server.url + "/_emulator"
    made = scope.http.post(f"{control}/groups", json={"displayName": "Remote"})
    assert made.status_code == 201
    gid = made.json()["id"]
    assert scope.http.put(f"{control}/groups/{gid}/members/{org['ann']}").status_code == 204
    assert scope.tenant.groups.record(gid).members == {org["ann"]}
    assert scope.http.delete(f"{control}/groups/{gid}/members/{org['ann']}").status_code == 204
    assert scope.http.delete(f"{control}/groups/{gid}/members/{org['ann']}").status_code == 404
    first_app = scope.tenant.apps()[0]  # the control API assigns to the tenant's first app
    assert scope.http.put(f"{control}/assignments/{gid}").status_code == 201
    assert [
        a.principal_id for a in scope.tenant.groups.assignments(first_app.service_principal_id)
    ] == [gid]
    assert scope.http.delete(f"{control}/assignments/{gid}").status_code == 204
