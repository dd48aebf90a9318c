"""The product's lifecycle rules end to end: the scenario in (emulated) Entra ID, a
sync through the real SDK, then the resulting users, cards and seats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cardsync import admin, service
from cardsync.config import load
from cardsync.errors import CardsyncError
from e2e_support import Graph, start_graph

ORG = """
[[organizations]]
slug = "{slug}"
name = "{slug}"
{extra}
[organizations.entra]
tenant_id = "{tenant_id}"
client_id = "{client_id}"
client_secret = "${{{secret_var}}}"
authority_host = "{authority}"
graph_url = "{graph_url}"
{entra_extra}
"""

HEAD = """
{top}
[state]
path = "state.db"

[backend]
type = "local"
output = "site"
base_url = "https://cards.example.test"
"""


@pytest.fixture
def graph(tmp_path, monkeypatch):
    yield from start_graph(tmp_path, monkeypatch, page_size=50)


def configure(graph: Graph, *orgs: dict, top: str = "") -> object:
    """Write a config with one [[organizations]] per dict (slug, app, extra, entra_extra)."""
    text = HEAD.format(top=top)
    for i, org in enumerate(orgs):
        app = org.get("app", graph.app)
        var = f"LC_SECRET_{i}"
        os.environ[var] = app.secret
        text += ORG.format(
            slug=org["slug"], extra=org.get("extra", ""), entra_extra=org.get("entra_extra", ""),
            tenant_id=graph.tenant.id, client_id=app.client_id, secret_var=var,
            authority=graph.server.url, graph_url=graph.server.graph_url,
        )
    graph.config_path.write_text(text)
    return load(graph.config_path)


def user(graph: Graph, name: str, domain: str = "contoso.com", **props) -> str:
    local = name.lower().replace(" ", ".")
    return graph.tenant.add_user(
        displayName=name, userPrincipalName=f"{local}@{domain}", mail=f"{local}@{domain}",
        accountEnabled=True, **props,
    )


def users(config, org=None) -> dict[str, dict]:
    return {u["email"]: u for u in admin.list_users(config, org)}


def cards(config, org=None) -> dict[str, dict]:
    return {c["user_id"]: c for c in service.list_cards(config, org)}


def kinds(outcome) -> list[tuple[str, str]]:
    return sorted((a.kind, a.user_principal_name) for a in outcome.actions)


def test_soft_delete_then_restore_keeps_the_same_card(graph):
    config = configure(graph, {"slug": "acme"})
    uid = user(graph, "Sam Soft")
    service.run(config)
    url = cards(config)[uid]["url"]
    graph.tenant.soft_delete(uid)
    [out] = service.run(config)
    assert out.actions == [] and uid in cards(config)  # soft delete keeps the card
    graph.tenant.restore(uid)
    [out] = service.run(config)
    assert cards(config)[uid]["url"] == url and cards(config)[uid]["active"]


def test_soft_delete_then_permanent_delete_removes_user_card_and_seat(graph):
    config = configure(graph, {"slug": "acme", "extra": "seats = 5"})
    uid = user(graph, "Pat Perm")
    service.run(config)
    assert users(config)["pat.perm@contoso.com"]["origin"] == "entra"
    graph.tenant.soft_delete(uid)
    service.run(config)
    graph.tenant.hard_delete(uid)
    [out] = service.run(config)
    assert kinds(out) == [("delete_user", "pat.perm@contoso.com")]
    assert uid not in cards(config) and users(config) == {}
    status = service.status(config)["organizations"][0]
    assert (status["seats"], status["seats_used"]) == (5, 0)


def test_disable_then_reenable_with_deactivate(graph):
    config = configure(graph, {"slug": "acme", "extra": 'on_disable = "deactivate"'})
    uid = user(graph, "Dee Active")
    service.run(config)
    files = cards(config)[uid]["files"]
    graph.tenant.update_user(uid, accountEnabled=False)
    [out] = service.run(config)
    assert kinds(out) == [("deactivate_card", "dee.active@contoso.com")]
    page = Path(files["html"]).read_text(encoding="utf-8")
    assert "no longer active" in page
    assert not os.path.exists(files["vcard"]) and not os.path.exists(files["qr_png"])
    graph.tenant.update_user(uid, accountEnabled=True)
    [out] = service.run(config)
    assert kinds(out) == [("reactivate_card", "dee.active@contoso.com")]
    assert os.path.exists(files["vcard"]) and cards(config)[uid]["files"] == files


def test_disabled_when_first_seen_gets_no_card_and_no_seat(graph):
    config = configure(graph, {"slug": "acme", "extra": "seats = 2"})
    uid = user(graph, "Dora Disabled")
    graph.tenant.update_user(uid, accountEnabled=False)
    service.run(config)
    assert cards(config) == {} and users(config) == {}
    graph.tenant.update_user(uid, accountEnabled=True)
    service.run(config)
    assert uid in cards(config) and "dora.disabled@contoso.com" in users(config)


def test_guests_are_excluded_unless_included(graph):
    config = configure(graph, {"slug": "acme"})
    guest = user(graph, "Gus Guest", domain="partner.test", userType="Guest")
    member = user(graph, "Mia Member")
    service.run(config)
    assert set(cards(config)) == {member}
    config = configure(graph, {"slug": "acme", "entra_extra": "include_guests = true"})
    service.run(config)
    assert set(cards(config)) == {member, guest}


def test_invited_user_found_in_entra_then_deleted_in_entra(graph):
    config = configure(graph, {"slug": "acme", "extra": "seats = 3"})
    admin.invite(config, "acme", "Ivy.Invited@contoso.com")
    listed = users(config)["ivy.invited@contoso.com"]
    assert (listed["origin"], listed["user_id"], listed["card"]) == ("invited", None, None)
    assert service.status(config)["organizations"][0]["seats_used"] == 1

    uid = user(graph, "Ivy Invited")
    [out] = service.run(config)
    assert out.actions[0].kind == "create_card" and "invited user" in out.actions[0].reason
    listed = users(config)["ivy.invited@contoso.com"]
    assert listed["user_id"] == uid and listed["card"] and listed["origin"] == "invited"
    assert service.status(config)["organizations"][0]["seats_used"] == 1  # no second user

    with pytest.raises(CardsyncError, match="is not a user of acme"):
        admin.remove_user(config, "acme", "nobody@contoso.com")

    graph.tenant.hard_delete(uid)
    [out] = service.run(config)
    assert kinds(out) == [("delete_card", "ivy.invited@contoso.com")]
    listed = users(config)["ivy.invited@contoso.com"]
    assert listed["card"] is None and listed["origin"] == "invited"  # the user stays
    admin.remove_user(config, "acme", "ivy.invited@contoso.com")
    assert users(config) == {}


def test_seats_running_out_then_freed(graph):
    config = configure(graph, {"slug": "acme", "extra": "seats = 2"})
    a, b, c = (user(graph, n) for n in ("Ann One", "Ben Two", "Cat Three"))
    proc = graph.cli("run")
    assert proc.returncode == 4, proc.stderr
    assert "seat limit reached (2/2) in acme: 1 users waiting" in proc.stdout
    assert len(cards(config)) == 2
    waiting = ({a, b, c} - set(cards(config))).pop()
    assert graph.cli("run").returncode == 4  # retried every cycle, still waiting
    gone = next(iter(set(cards(config))))
    graph.tenant.hard_delete(gone)
    proc = graph.cli("run")
    assert proc.returncode == 0, proc.stdout
    assert set(cards(config)) == {a, b, c} - {gone}
    assert waiting in cards(config)


def test_owner_is_protected_until_ownership_is_transferred(graph):
    config = configure(graph, {"slug": "acme", "extra": (
        '[[organizations.people]]\nmail = "olga.owner@contoso.com"\nrole = "owner"\n'
    )})
    owner = user(graph, "Olga Owner")
    user(graph, "Nils Next")
    service.run(config)
    assert users(config)["olga.owner@contoso.com"]["role"] == "owner"
    graph.tenant.hard_delete(owner)
    proc = graph.cli("diff", "--json")
    [hold] = json.loads(proc.stdout)
    assert hold["action"] == "hold" and "transfer-ownership" in hold["reason"]
    [out] = service.run(config)
    assert owner in cards(config)  # held back
    status = service.status(config)["organizations"][0]
    assert "transfer ownership first" in status["holds"][0]["reason"]
    assert "held back" in graph.cli("status").stderr

    admin.transfer_ownership(config, "acme", "nils.next@contoso.com")
    listed = users(config)
    assert listed["nils.next@contoso.com"]["role"] == "owner"
    assert listed["olga.owner@contoso.com"]["role"] == "admin"  # admins are protected too
    [out] = service.run(config)
    assert kinds(out) == [("hold", "olga.owner@contoso.com")]


def test_entra_managed_cards_and_users_cannot_be_deleted_by_hand(graph):
    config = configure(graph, {"slug": "acme"})
    user(graph, "Eve Entra")
    service.run(config)
    proc = graph.cli("cards", "delete", "eve.entra@contoso.com", "--org", "acme")
    assert proc.returncode == 1
    assert "managed by Entra ID" in proc.stderr and "permanently delete" in proc.stderr
    proc = graph.cli("users", "remove", "eve.entra@contoso.com", "--org", "acme")
    assert proc.returncode == 1 and "cannot be removed by hand" in proc.stderr
    assert len(cards(config)) == 1


def test_invited_users_card_can_be_deleted_by_hand_and_stays_deleted(graph):
    config = configure(graph, {"slug": "acme"})
    admin.invite(config, "acme", "ian.invited@contoso.com")
    uid = user(graph, "Ian Invited")
    service.run(config)
    assert uid in cards(config)
    proc = graph.cli("cards", "delete", "ian.invited@contoso.com", "--org", "acme")
    assert proc.returncode == 0, proc.stderr
    assert uid not in cards(config)
    [out] = service.run(config)
    assert out.actions == [] and uid not in cards(config)
    admin.invite(config, "acme", "ian.invited@contoso.com")  # re-invite brings it back
    service.run(config)
    assert uid in cards(config)


def test_threshold_trips_then_allow_deletes(graph):
    config = configure(graph, {"slug": "acme", "extra": "max_deletes = 2"})
    ids = [user(graph, f"Del User{i}") for i in range(5)]
    service.run(config)
    for uid in ids[:3]:
        graph.tenant.hard_delete(uid)
    newcomer = user(graph, "New Comer")
    proc = graph.cli("run")
    assert proc.returncode == 3
    assert "exceed max_deletes (2)" in proc.stdout and "--allow-deletes" in proc.stdout
    assert set(ids) <= set(cards(config))  # nothing deleted...
    assert newcomer in cards(config)  # ...but the rest applied
    assert graph.cli("run").returncode == 3  # quarantined until allowed
    assert service.status(config)["organizations"][0]["quarantine"]
    proc = graph.cli("run", "--allow-deletes")
    assert proc.returncode == 0, proc.stdout
    assert set(cards(config)) == set(ids[3:]) | {newcomer}
    assert service.status(config)["organizations"][0]["quarantine"] is None


def test_an_empty_full_read_deletes_nothing(graph):
    config = configure(graph, {"slug": "acme"})
    ids = [user(graph, f"Keep Me{i}") for i in range(4)]
    service.run(config)
    for uid in ids:
        graph.tenant.hard_delete(uid)
    graph.emu.faults.expire_delta_links(mode="410")
    [out] = service.run(config)
    assert out.result == "refused" and "full read returned 0 users" in out.error.message
    assert set(cards(config)) == set(ids)


def test_domain_routing_across_two_organizations(graph):
    second = graph.tenant.add_app()
    config = configure(
        graph,
        {"slug": "contoso", "extra": 'domains = ["contoso.com"]'},
        {"slug": "fabrikam", "app": second, "extra": 'domains = ["fabrikam.com"]'},
        top="domain_assignment = true",
    )
    c = user(graph, "Cy Contoso")
    f = user(graph, "Fay Fabrikam", domain="fabrikam.com")
    sub = user(graph, "Sue Sub", domain="eu.fabrikam.com")  # subdomain not listed
    other = user(graph, "Otto Other", domain="other.test")  # matches neither
    service.run(config)
    placed = {(card["org"], card["user_id"]) for card in service.list_cards(config)}
    assert ("contoso", c) in placed and ("fabrikam", f) in placed
    assert ("fabrikam", c) not in placed and ("contoso", f) not in placed  # no duplicates
    # no matching domain: each integration keeps its own card
    assert ("contoso", sub) in placed and ("fabrikam", sub) in placed
    assert ("contoso", other) in placed and ("fabrikam", other) in placed
    assert sum(1 for org, uid in placed if uid == f) == 1


def test_user_moving_between_organizations_keeps_one_card(graph):
    config = configure(
        graph,
        {"slug": "contoso", "extra": 'domains = ["contoso.com"]'},
        {"slug": "fabrikam", "extra": 'domains = ["fabrikam.com"]',
         "app": graph.tenant.add_app()},
        top="domain_assignment = true",
    )
    uid = user(graph, "Max Mover")
    service.run(config)
    before = [c for c in service.list_cards(config) if c["user_id"] == uid]
    assert [c["org"] for c in before] == ["contoso"]
    graph.tenant.update_user(uid, mail="max.mover@fabrikam.com",
                             userPrincipalName="max.mover@fabrikam.com")
    outcomes = service.run(config)
    moves = [a for o in outcomes for a in o.actions if a.kind == "move_card"]
    assert [(m.from_org, m.org) for m in moves] == [("contoso", "fabrikam")]
    after = [c for c in service.list_cards(config) if c["user_id"] == uid]
    assert [(c["org"], c["card_id"]) for c in after] == [("fabrikam", before[0]["card_id"])]
    assert not os.path.exists(before[0]["files"]["html"])
    members = [u for u in admin.list_users(config) if u["user_id"] == uid]
    assert [(m["org"], m["origin"]) for m in members] == [("fabrikam", "entra")]


def test_provision_on_demand(graph):
    config = configure(graph, {"slug": "acme"})
    service.run(config)
    uid = user(graph, "Paula Prov")
    graph.emu.clear_requests()
    proc = graph.cli("provision", "paula.prov@contoso.com", "--org", "acme", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(a["action"], a["user_id"]) for a in data["actions"]] == [("create_card", uid)]
    assert uid in cards(config)
    assert not graph.graph_requests("/users/delta")  # one user, not a delta round
    proc = graph.cli("provision", uid, "--org", "acme")
    assert proc.returncode == 0 and "already up to date" in proc.stdout
    proc = graph.cli("provision", "nobody@contoso.com", "--org", "acme")
    assert proc.returncode == 1 and "no user" in proc.stderr


def test_users_list_json_shape(graph):
    config = configure(graph, {"slug": "acme", "extra": (
        '[[organizations.people]]\nmail = "ada.admin@contoso.com"\nrole = "admin"\n'
    )})
    uid = user(graph, "Ada Admin")
    admin.invite(config, "acme", "zed.invite@contoso.com")
    service.run(config)
    proc = graph.cli("users", "list", "--json")
    listed = {u["email"]: u for u in json.loads(proc.stdout)}
    assert listed["ada.admin@contoso.com"] == {
        "org": "acme", "user_id": uid, "email": "ada.admin@contoso.com", "origin": "entra",
        "role": "admin", "card": cards(config)[uid]["url"],
    }
    assert listed["zed.invite@contoso.com"]["user_id"] is None
    assert listed["zed.invite@contoso.com"]["card"] is None


def test_unassign_then_reassign_keeps_the_same_card(graph):
    graph.app = graph.tenant.add_app(
        roles=("User.Read.All", "Application.Read.All", "GroupMember.Read.All")
    )
    config = configure(graph, {"slug": "acme", "extra": 'on_disable = "deactivate"',
                               "entra_extra": 'scope = "assigned"'})
    direct = user(graph, "Dina Direct")
    via_group = user(graph, "Gil Group")
    nested = user(graph, "Ned Nested")
    outside = user(graph, "Oli Outside")
    team, inner = graph.tenant.add_group("Team"), graph.tenant.add_group("Inner")
    graph.tenant.add_member(team, via_group)
    graph.tenant.add_member(team, inner)  # nested groups are not expanded
    graph.tenant.add_member(inner, nested)
    graph.tenant.assign(graph.app, direct)
    graph.tenant.assign(graph.app, team)
    [out] = service.run(config)
    assert out.result == "success", out.error
    assert set(cards(config)) == {direct, via_group}
    assert outside not in cards(config) and nested not in cards(config)
    urls = {uid: cards(config)[uid]["url"] for uid in (direct, via_group)}

    graph.tenant.unassign(graph.app, direct)
    graph.tenant.remove_member(team, via_group)
    [out] = service.run(config)
    assert kinds(out) == [("deactivate_card", "dina.direct@contoso.com"),
                          ("deactivate_card", "gil.group@contoso.com")]
    assert "not in sync scope" in out.actions[0].reason

    graph.tenant.assign(graph.app, direct)
    graph.tenant.add_member(team, via_group)
    [out] = service.run(config)
    assert kinds(out) == [("reactivate_card", "dina.direct@contoso.com"),
                          ("reactivate_card", "gil.group@contoso.com")]
    assert {uid: cards(config)[uid]["url"] for uid in urls} == urls
    assert all(cards(config)[uid]["active"] for uid in urls)


def test_one_organization_failing_does_not_stop_the_others(graph):
    broken = graph.tenant.add_app()
    configure(graph, {"slug": "alpha", "app": broken}, {"slug": "beta"})
    os.environ["LC_SECRET_0"] = "not-the-secret"  # alpha's integration cannot sign in
    uid = user(graph, "Bea Beta")
    proc = graph.cli("run")
    assert proc.returncode == 1
    assert "[alpha] failed" in proc.stdout and "[beta] success" in proc.stdout
    env_config = load(graph.config_path)
    assert [c["org"] for c in service.list_cards(env_config) if c["user_id"] == uid] == ["beta"]
    status = {o["slug"]: o for o in service.status(env_config)["organizations"]}
    assert status["alpha"]["last_result"] == "failed" and status["beta"]["last_result"] == "success"
