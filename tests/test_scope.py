"""Sync scope end to end: ScopeSync and GraphSource's scope reads (the real msgraph-sdk and
azure-identity) against the Graph emulator over HTTPS, asserting the scope_members rows
and the requests Graph saw; plus in_scope_sql and a few cases the emulator cannot play
(a deleted group) with a scripted source."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from cardsync.config import EntraConfig, OrgConfig
from cardsync.emulator import GraphEmulator
from cardsync.errors import ConsentError, GraphError
from cardsync.graph import GraphSource
from cardsync.graph.scope import GroupChange, MembershipRound, parse_group_delta_page
from cardsync.scope import ScopeSync, _plan_rounds, _Round, in_scope_sql
from cardsync.state import State, open_state

ROLES = ("User.Read.All", "Application.Read.All", "GroupMember.Read.All")


@dataclass
class World:
    emu: Any
    tenant: Any
    app: Any
    server: Any
    state: State
    people: dict[str, str]  # ann, bob, cy, dee, eve -> user id
    sales: str  # group: ann, bob and the group inner
    inner: str  # group: cy (nested in sales)
    org: OrgConfig
    sources: list[GraphSource]
    sync: ScopeSync

    def configure(self, **entra: Any) -> None:
        self.org = replace(self.org, entra=replace(self.org.entra, **entra))

    def refresh(self, app: Any = None, clear: bool = True) -> GraphSource:
        """One refresh through a new source (as a new `cardsync run` would)."""
        if clear:
            self.emu.clear_requests()
        org = self.org
        if app is not None:
            org = replace(
                org, entra=replace(org.entra, client_id=app.client_id, client_secret=app.secret)
            )
        source = GraphSource(org.entra, retry_budget=20.0)
        self.sources.append(source)
        self.sync.refresh(org, self.state, source, False)
        return source

    def rows(self) -> set[tuple[str, str]]:
        """scope_members as (name or id, via name or id)."""
        names = {v: k for k, v in self.people.items()}
        names.update({self.sales: "sales", self.inner: "inner"})
        cursor = self.state.db.execute(
            "SELECT user_id, via FROM scope_members WHERE org = ?", [self.org.slug]
        )
        return {(names.get(u, u), names.get(v, v)) for u, v in cursor}

    def stored(self) -> dict[str, Any]:
        row = self.state.db.execute(
            "SELECT service_principal_id, groups, groups_delta_link FROM scope_state WHERE org = ?",
            [self.org.slug],
        ).fetchone()
        return {"sp": row[0], "groups": json.loads(row[1]), "rounds": json.loads(row[2])}

    def requests(self, kind: str) -> list[Any]:
        return [r for r in self.emu.requests if r.kind == kind]


@pytest.fixture
def world(emulator: GraphEmulator, emulator_server: Any, tmp_path: Path) -> Iterator[World]:
    tenant = emulator.default_tenant
    app = tenant.add_app(roles=ROLES)
    names = ("ann", "bob", "cy", "dee", "eve")
    ids = tenant.add_users(
        [{"displayName": n, "userPrincipalName": f"{n}@contoso.com"} for n in names]
    )
    people = dict(zip(names, ids, strict=True))
    sales, inner = tenant.add_group("Sales"), tenant.add_group("Inner")
    for member in (people["ann"], people["bob"], inner):
        tenant.add_member(sales, member)
    tenant.add_member(inner, people["cy"])
    entra = EntraConfig(
        tenant_id=tenant.id,
        client_id=app.client_id,
        client_secret=app.secret,
        authority=emulator_server.url,
        graph_url=emulator_server.graph_url,
        custom_authority=True,
        scope="assigned",
    )
    state = open_state(tmp_path / "state.db")
    w = World(
        emulator,
        tenant,
        app,
        emulator_server,
        state,
        people,
        sales,
        inner,
        OrgConfig("contoso", "Contoso", entra),
        [],
        ScopeSync(),
    )
    try:
        yield w
    finally:
        for source in w.sources:
            source.close()
        state.close()


def test_direct_assignment_and_service_principal_looked_up_once(world: World) -> None:
    world.tenant.assign(world.app, world.people["ann"])
    world.refresh()
    assert world.rows() == {("ann", "direct")}
    [lookup] = world.requests("servicePrincipals")
    assert lookup.params["$filter"] == f"appId eq '{world.app.client_id}'"
    [assigned] = world.requests("appRoleAssignedTo")
    assert world.app.service_principal_id in assigned.path
    assert world.requests("groups/delta") == []  # no group assigned: nothing to follow
    assert world.stored()["sp"] == world.app.service_principal_id

    world.tenant.assign(world.app, world.people["bob"])
    world.refresh()
    assert world.rows() == {("ann", "direct"), ("bob", "direct")}
    assert world.requests("servicePrincipals") == []  # remembered
    assert len(world.requests("appRoleAssignedTo")) == 1  # polled every cycle


def test_configured_service_principal_is_used_directly(world: World) -> None:
    world.configure(service_principal_id=world.app.service_principal_id)
    world.tenant.assign(world.app, world.people["eve"])
    world.refresh()
    assert world.rows() == {("eve", "direct")}
    assert world.requests("servicePrincipals") == []
    assert world.stored()["sp"] is None  # only looked-up ids are remembered


def test_assigned_group_gives_its_immediate_user_members(world: World) -> None:
    world.tenant.assign(world.app, world.sales)
    world.refresh()
    # cy is in the nested group "inner": not expanded; groups are never member rows
    assert world.rows() == {("ann", "sales"), ("bob", "sales")}
    [delta] = world.requests("groups/delta")
    assert delta.params["$select"] == "members"
    assert delta.params["$filter"] == f"id eq '{world.sales}'"
    assert world.requests("groups/members") == []
    stored = world.stored()
    assert stored["groups"] == [world.sales]
    assert [r["groups"] for r in stored["rounds"]] == [[world.sales]]
    assert "$deltatoken=" in stored["rounds"][0]["link"]


def test_membership_changes_follow_the_stored_delta_link(world: World) -> None:
    t, p = world.tenant, world.people
    t.assign(world.app, world.sales)
    world.refresh()
    link = world.stored()["rounds"][0]["link"]

    t.add_member(world.sales, p["dee"])
    t.remove_member(world.sales, p["bob"])
    t.add_member(world.inner, p["eve"])  # nested: still not in scope
    t.soft_delete(p["ann"])  # soft-deleted users keep their memberships
    world.refresh()
    assert world.rows() == {("ann", "sales"), ("dee", "sales")}
    [delta] = world.requests("groups/delta")
    assert "$filter" not in delta.params and "$select" not in delta.params
    assert world.server.graph_url + delta.path.removeprefix("/v1.0") + "?" + delta.query == link
    assert world.requests("groups/members") == []  # no re-listing
    assert world.sync.reports["contoso"].incremental_rounds == 1

    t.hard_delete(p["ann"])  # a hard delete ends the membership
    world.refresh()
    assert world.rows() == {("dee", "sales")}
    report = world.sync.reports["contoso"]
    assert (report.users, report.entered, report.left, report.full_rounds) == (1, 0, 1, 0)


def test_unassign_and_reassign(world: World) -> None:
    t, p = world.tenant, world.people
    t.assign(world.app, world.sales)
    t.assign(world.app, p["ann"])  # also a member of sales: two rows
    t.assign(world.app, p["eve"])
    world.refresh()
    assert world.rows() == {
        ("ann", "sales"),
        ("bob", "sales"),
        ("ann", "direct"),
        ("eve", "direct"),
    }

    t.unassign(world.app, p["ann"])
    t.unassign(world.app, world.sales)
    world.refresh()
    assert world.rows() == {("eve", "direct")}
    assert world.requests("groups/delta") == []
    assert world.stored()["groups"] == [] and world.stored()["rounds"] == []

    t.add_member(world.sales, p["dee"])  # while unassigned
    t.assign(world.app, world.sales)
    t.assign(world.app, p["ann"])
    world.refresh()
    assert world.rows() == {
        ("ann", "sales"),
        ("bob", "sales"),
        ("dee", "sales"),
        ("ann", "direct"),
        ("eve", "direct"),
    }
    [delta] = world.requests("groups/delta")  # a fresh, full round for the group
    assert delta.params["$filter"] == f"id eq '{world.sales}'"


def test_a_newly_assigned_group_gets_its_own_round(world: World) -> None:
    t, p = world.tenant, world.people
    t.assign(world.app, world.sales)
    world.refresh()
    sales_link = world.stored()["rounds"][0]["link"]
    team = t.add_group("Team")
    t.add_member(team, p["eve"])
    t.add_member(team, p["bob"])
    t.assign(world.app, team)
    world.refresh()
    assert world.rows() == {("ann", "sales"), ("bob", "sales"), ("eve", team), ("bob", team)}
    deltas = world.requests("groups/delta")
    assert len(deltas) == 2
    assert {d.params.get("$filter") for d in deltas} == {None, f"id eq '{team}'"}
    assert any(sales_link.endswith(d.query) for d in deltas)  # sales was not listed again

    t.unassign(world.app, world.sales)  # its round ends; team's goes on
    t.remove_member(team, p["bob"])
    world.refresh()
    assert world.rows() == {("eve", team)}
    [delta] = world.requests("groups/delta")
    assert "$deltatoken" in delta.params
    assert [r["groups"] for r in world.stored()["rounds"]] == [[team]]


def test_scope_groups(world: World) -> None:
    t, p = world.tenant, world.people
    other = t.add_group("Other")
    t.add_member(other, p["eve"])
    t.assign(world.app, p["dee"])  # assignments do not matter for scope = "groups"
    world.configure(scope="groups", group_ids=(world.sales, other))
    world.refresh()
    assert world.rows() == {("ann", "sales"), ("bob", "sales"), ("eve", other)}
    assert world.requests("servicePrincipals") == world.requests("appRoleAssignedTo") == []
    [delta] = world.requests("groups/delta")
    wanted = {f"id eq '{world.sales}'", f"id eq '{other}'"}
    assert set(delta.params["$filter"].split(" or ")) == wanted

    t.add_member(other, p["cy"])
    world.configure(group_ids=(other,))
    world.refresh()
    assert world.rows() == {("eve", other), ("cy", other)}
    [delta] = world.requests("groups/delta")
    assert "$deltatoken" in delta.params  # the round of both groups goes on, for one


def test_more_than_50_groups_take_several_rounds(world: World) -> None:
    t, p = world.tenant, world.people
    groups = [t.add_group(f"G{i}") for i in range(53)]
    for i, gid in enumerate(groups):
        t.add_member(gid, p[("ann", "bob", "cy", "dee", "eve")[i % 5]])
    world.configure(scope="groups", group_ids=tuple(groups))
    world.refresh()
    assert len(world.rows()) == 53
    firsts = [d for d in world.requests("groups/delta") if "$filter" in d.params]
    assert sorted(len(d.params["$filter"].split(" or ")) for d in firsts) == [3, 50]
    world.refresh()  # 5 groups a page here: nextLinks, then two deltaLinks
    deltas = world.requests("groups/delta")
    assert len(deltas) == 2 and all("$deltatoken" in d.params for d in deltas)


@pytest.mark.parametrize("mode", ["410", "syncStateNotFound"])
def test_expired_delta_link_restarts_in_full(world: World, mode: str) -> None:
    t, p = world.tenant, world.people
    t.assign(world.app, world.sales)
    world.refresh()
    t.remove_member(world.sales, p["ann"])
    t.add_member(world.sales, p["eve"])
    world.emu.faults.expire_delta_links(mode=mode)
    world.refresh()
    assert world.rows() == {("bob", "sales"), ("eve", "sales")}
    first, second = world.requests("groups/delta")
    assert first.status == (410 if mode == "410" else 400)
    assert second.status == 200 and second.params["$filter"] == f"id eq '{world.sales}'"
    assert world.sync.reports["contoso"].full_rounds == 1
    world.refresh()  # and the new link works
    assert [r.status for r in world.requests("groups/delta")] == [200]


def test_assignments_are_paged(world: World) -> None:
    for name in ("ann", "bob", "cy", "dee", "eve"):
        world.tenant.assign(world.app, world.people[name])
    source = GraphSource(world.org.entra, retry_budget=20.0)
    world.sources.append(source)
    source._scope().page_size = 2
    found = source.app_assignments(world.app.service_principal_id)
    assert found is not None
    assert {a.principal_id for a in found} == set(world.people.values())
    assert {a.principal_type for a in found} == {"User"}
    assert len(world.requests("appRoleAssignedTo")) == 3
    assert source.app_assignments("00000000-0000-0000-0000-000000000001") is None


def test_throttling_is_waited_out(world: World) -> None:
    world.tenant.assign(world.app, world.sales)
    world.emu.faults.fail_next(n=1, status=429, retry_after=1, path_contains="appRoleAssignedTo")
    world.emu.faults.fail_next(n=1, status=503, retry_after=1, path_contains="groups/delta")
    world.refresh()
    assert world.rows() == {("ann", "sales"), ("bob", "sales")}


def test_missing_application_permission(world: World) -> None:
    bare = world.tenant.add_app(roles=("User.Read.All", "GroupMember.Read.All"))
    with pytest.raises(ConsentError) as caught:
        world.refresh(app=bare)
    error = caught.value
    assert "Application.Read.All" in (error.hint or "") and "admin consent" in (error.hint or "")
    assert "servicePrincipals" in error.message and bare.client_id in error.message
    assert "Authorization_RequestDenied" in error.message  # Graph's own words are kept
    assert error.__cause__ is not None and bare.secret not in str(error)
    assert world.state.db.execute("SELECT count(*) FROM scope_state").fetchone()[0] == 0


def test_missing_application_permission_with_configured_service_principal(
    world: World,
) -> None:
    bare = world.tenant.add_app(roles=("User.Read.All",))
    world.configure(service_principal_id=world.app.service_principal_id)
    with pytest.raises(ConsentError, match="appRoleAssignedTo") as caught:
        world.refresh(app=bare)
    assert "Application.Read.All" in (caught.value.hint or "")


@pytest.mark.parametrize("scope", ["assigned", "groups"])
def test_missing_group_permission(world: World, scope: str) -> None:
    bare = world.tenant.add_app(roles=("User.Read.All", "Application.Read.All"))
    world.tenant.assign(bare, world.sales)
    world.tenant.assign(bare, world.people["eve"])
    world.configure(scope=scope, group_ids=(world.sales,) if scope == "groups" else ())
    with pytest.raises(ConsentError, match="groups/delta") as caught:
        world.refresh(app=bare)
    assert "GroupMember.Read.All" in (caught.value.hint or "")
    assert world.rows() == set()  # nothing half-written


def test_no_enterprise_application(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GraphSource, "service_principal_id", lambda self, app_id: None)
    with pytest.raises(GraphError, match="no enterprise application") as caught:
        world.refresh()
    assert 'scope = "groups"' in (caught.value.hint or "")


def test_scope_all_clears_what_was_tracked(world: World) -> None:
    world.tenant.assign(world.app, world.sales)
    world.refresh()
    assert world.rows()
    world.configure(scope="all")
    world.refresh()
    assert world.rows() == set() and world.emu.requests == []
    assert world.state.db.execute("SELECT count(*) FROM scope_state").fetchone()[0] == 0


def test_dry_run_transaction_is_rolled_back(world: World) -> None:
    world.tenant.assign(world.app, world.sales)
    world.state.db.begin()  # what the Syncer does for a dry run
    world.refresh()
    assert world.rows() == {("ann", "sales"), ("bob", "sales")}
    world.state.db.rollback()
    assert world.rows() == set()
    assert world.state.db.execute("SELECT count(*) FROM scope_state").fetchone()[0] == 0


# -- without the emulator ---------------------------------------------------------------------


class ScriptedSource:
    """Plays prepared groups/delta rounds; records the calls."""

    def __init__(self) -> None:
        self.rounds: list[MembershipRound] = []
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def service_principal_id(self, app_id: str) -> str | None:
        raise AssertionError("not used with scope = 'groups'")

    def app_assignments(self, sp_id: str) -> list[Any] | None:
        raise AssertionError("not used with scope = 'groups'")

    def group_members_delta(self, group_ids: Any, link: str | None) -> MembershipRound:
        self.calls.append((tuple(group_ids), link))
        return self.rounds.pop(0)


G1, G2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
U1, U2, U3 = (f"{i}0000000-0000-0000-0000-000000000000" for i in "abc")


def test_a_deleted_group_loses_its_rows_and_is_listed_again(tmp_path: Path) -> None:
    state = open_state(tmp_path / "state.db")
    entra = EntraConfig(tenant_id="t", client_id="c", scope="groups", group_ids=(G1, G2))
    org = OrgConfig("o", "O", entra)
    source = ScriptedSource()
    sync = ScopeSync()

    def rows() -> set[tuple[str, str]]:
        return set(state.db.execute("SELECT user_id, via FROM scope_members").fetchall())

    source.rounds.append(
        MembershipRound(
            (GroupChange(G1, (U1,)), GroupChange(G2, (U2,)), GroupChange(G1, (U3,))),
            "https://g/v1.0/groups/delta?$deltatoken=1",
            full=True,
        )
    )
    sync.refresh(org, state, source, False)  # type: ignore[arg-type]
    assert rows() == {(U1, G1), (U3, G1), (U2, G2)}  # a group may come in several entries

    source.rounds.append(
        MembershipRound(
            (GroupChange(G1, deleted="changed"),),
            "https://g/v1.0/groups/delta?$deltatoken=2",
            full=False,
        )
    )
    sync.refresh(org, state, source, False)  # type: ignore[arg-type]
    assert rows() == {(U2, G2)}

    source.rounds += [
        MembershipRound((), "https://g/v1.0/groups/delta?$deltatoken=3", full=False),
        MembershipRound(
            (GroupChange(G1, (U1,)),), "https://g/v1.0/groups/delta?$deltatoken=4", full=True
        ),
    ]
    sync.refresh(org, state, source, False)  # type: ignore[arg-type]
    assert source.calls[-2:] == [
        ((G2,), "https://g/v1.0/groups/delta?$deltatoken=2"),
        ((G1,), None),
    ]
    assert rows() == {(U1, G1), (U2, G2)}  # restored: its members are back
    state.close()


def test_plan_rounds_restarts_when_fragmented() -> None:
    stored = [_Round([f"g{i}"], f"link{i}") for i in range(4)]
    assert len(_plan_rounds(stored, {"g0", "g1", "g2", "g3"})) == 4  # 1 + 3 extra: kept
    rounds = _plan_rounds(stored, {"g0", "g1", "g2", "g3", "g4"})
    assert [(r.groups, r.link) for r in rounds] == [(["g0", "g1", "g2", "g3", "g4"], None)]
    # a group two stored rounds answer for stays with the first
    both = [_Round(["a", "b"], "l1"), _Round(["b", "c"], "l2")]
    assert [(r.groups, r.link) for r in _plan_rounds(both, {"a", "b", "c"})] == [
        (["a", "b"], "l1"),
        (["c"], "l2"),
    ]


def test_parse_group_delta_page_keeps_users_only() -> None:
    page = {
        "value": [
            {
                "id": G1,
                "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": U1},
                    {"@odata.type": "#microsoft.graph.group", "id": G2},
                    {"@odata.type": "#microsoft.graph.orgContact", "id": U3},
                    {
                        "@odata.type": "#microsoft.graph.user",
                        "id": U2,
                        "@removed": {"reason": "deleted"},
                    },
                    {"@odata.type": "#microsoft.graph.user", "id": "not-an-id"},
                ],
            },
            {"id": G2, "@removed": {"reason": "deleted"}},
            {"id": "bogus"},
        ],
        "@odata.deltaLink": "https://g/v1.0/groups/delta?$deltatoken=x",
    }
    changes, next_link, delta_link = parse_group_delta_page(json.dumps(page).encode())
    assert changes == [GroupChange(G1, (U1,), (U2,)), GroupChange(G2, deleted="deleted")]
    assert next_link is None and delta_link is not None
    with pytest.raises(GraphError, match="neither"):
        parse_group_delta_page(b'{"value": []}')


@pytest.mark.parametrize(
    ("scope", "guests", "expected"),
    [
        ("all", True, {"m1", "m2", "g1", "g2"}),
        ("all", False, {"m1", "m2"}),
        ("assigned", True, {"m1", "g1"}),
        ("groups", False, {"m1"}),
    ],
)
def test_in_scope_sql(tmp_path: Path, scope: str, guests: bool, expected: set[str]) -> None:
    state = open_state(tmp_path / "state.db")
    users = [("m1", "Member"), ("m2", "Member"), ("g1", "Guest"), ("g2", "guest")]
    for uid, user_type in users:
        state.db.execute(
            "INSERT INTO users (org, id, person, hash, user_type, updated_at) "
            "VALUES ('o', ?, '{}', '', ?, '')",
            [uid, user_type],
        )
    for uid in ("m1", "g1", "nobody"):
        state.db.execute(
            "INSERT INTO scope_members (org, user_id, via) VALUES ('o', ?, 'direct')", [uid]
        )
    state.db.execute("INSERT INTO scope_members VALUES ('other', 'm2', 'direct')")
    entra = EntraConfig(tenant_id="t", client_id="c", scope=scope, include_guests=guests)
    sql = in_scope_sql(entra)
    found = {r[0] for r in state.db.execute(f"SELECT id FROM users u WHERE u.org = 'o' AND {sql}")}
    assert found == expected
    assert in_scope_sql(replace(entra, scope="all", include_guests=True)) == "1"
    state.close()


def test_in_a_sync_cycle_and_its_dry_run(world: World, tmp_path: Path) -> None:
    from cardsync import service
    from cardsync.config import from_dict
    from cardsync.sync import Syncer

    world.tenant.assign(world.app, world.sales)
    entra = world.org.entra
    config = from_dict(
        {
            "state": {"path": "cycle.db"},
            "backend": {"type": "memory"},
            "organizations": [
                {
                    "slug": "contoso",
                    "entra": {
                        "tenant_id": entra.tenant_id,
                        "client_id": entra.client_id,
                        "client_secret": entra.client_secret,
                        "authority_host": entra.authority,
                        "graph_url": entra.graph_url,
                        "scope": "assigned",
                    },
                }
            ],
        },
        base_dir=tmp_path,
    )
    state = open_state(config.state.path)
    sync = Syncer(
        config, state, service.make_backend(config), service.graph_source, scope=ScopeSync()
    )
    try:
        [dry] = sync.cycle(dry_run=True)
        assert dry.result == "success", dry.error
        assert state.db.execute("SELECT count(*) FROM scope_members").fetchone()[0] == 0
        [real] = sync.cycle()
        assert real.result == "success", real.error
        members = state.db.execute("SELECT user_id, via FROM scope_members").fetchall()
        assert set(members) == {
            (world.people["ann"], world.sales),
            (world.people["bob"], world.sales),
        }
    finally:
        sync.close()
        state.close()
