"""The pure planner: one small test per rule (ported from ssosync's getUserOperations
cases), plus a property test that applying a plan converges."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from cardsync.models import Person
from cardsync.planner import (
    CreateCard,
    DeactivateCard,
    DeleteCard,
    DeleteUser,
    Hold,
    MoveCard,
    PlanContext,
    ReactivateCard,
    UpdateCard,
    Wait,
    card_id_for,
    plan,
    plan_user,
)
from cardsync.state import LedgerCard, Member, MirrorUser, content_hash, person_to_json

KEY = b"k" * 32
RULES = PlanContext(source="acme", card_key=KEY, fingerprints={"acme": "fp1", "beta": "fp2"})


def user(uid="u1", removed=None, enabled=True, in_scope=True, user_type="Member", **person):
    p = Person(display_name=person.pop("display_name", "Ada Lovelace"),
               user_principal_name=person.pop("upn", f"{uid}@acme.test"), **person)
    return MirrorUser("acme", uid, p, content_hash(person_to_json(p)), enabled, user_type,
                      removed, in_scope=in_scope)


def published(u: MirrorUser, active=True, fingerprint="fp1", org="acme") -> LedgerCard:
    return LedgerCard(org, u.id, card_id_for(KEY, u.id), f"https://x/{org}/{u.id}/",
                      u.hash, fingerprint, active, u.person, {})


def with_member(ctx: PlanContext, *members: Member, **changes) -> PlanContext:
    return dataclasses.replace(
        ctx,
        members_by_user={(m.org, m.user_id): m for m in members if m.user_id},
        members_by_email={(m.org, m.email): m for m in members},
        **changes,
    )


def test_new_user_gets_a_card():
    u = user()
    action = plan_user(RULES, u, None)
    assert isinstance(action, CreateCard)
    assert action.card.card_id == card_id_for(KEY, "u1")
    assert action.card.person.display_name == "Ada Lovelace"
    assert action.reason == "new user in Entra ID"


def test_no_change_plans_nothing():
    u = user()
    assert plan_user(RULES, u, published(u)) is None


def test_attribute_change_updates_and_names_the_fields():
    old = user(job_title="Engineer")
    new = user(job_title="CTO")
    action = plan_user(RULES, new, published(old))
    assert isinstance(action, UpdateCard)
    assert action.changed == ("job_title",)
    assert "job_title" in action.reason


def test_a_new_record_hash_with_the_same_card_fields_refreshes_the_card_once():
    # e.g. a user provisioned on demand (canonical row), then read by a full round (Graph's
    # text): the hash differs, no card field does.
    u = user()
    card = dataclasses.replace(published(u), hash="from-an-older-record")
    action = plan_user(RULES, u, card)
    assert isinstance(action, UpdateCard)
    assert (action.reason, action.changed) == ("directory record changed", ())


def test_template_change_republishes():
    u = user()
    action = plan_user(RULES, u, published(u, fingerprint="old"))
    assert isinstance(action, UpdateCard)
    assert "template" in action.reason


def test_permanent_delete_without_member_removes_card_and_mirror_row():
    u = user(removed="deleted")
    action = plan_user(RULES, u, published(u))
    assert isinstance(action, DeleteCard)
    assert action.purge_user is True
    assert action.card_id == card_id_for(KEY, "u1")


def test_permanent_delete_of_entra_user_removes_user_and_card():
    u = user(removed="deleted")
    ctx = with_member(RULES, Member("acme", "u1@acme.test", "u1", "entra"))
    action = plan_user(ctx, u, published(u))
    assert isinstance(action, DeleteUser)
    assert (action.email, action.card_id) == ("u1@acme.test", card_id_for(KEY, "u1"))


def test_permanent_delete_of_invited_user_removes_only_the_card():
    u = user(removed="deleted")
    ctx = with_member(RULES, Member("acme", "u1@acme.test", "u1", "invited"))
    action = plan_user(ctx, u, published(u))
    assert isinstance(action, DeleteCard)
    assert "invited user stays" in action.reason


def test_owner_and_admin_are_never_deleted_by_sync():
    u = user(removed="deleted")
    for role in ("owner", "admin"):
        ctx = with_member(RULES, Member("acme", "u1@acme.test", "u1", "entra"),
                          roles={("acme", "u1@acme.test"): role})
        action = plan_user(ctx, u, published(u))
        assert isinstance(action, Hold)
        assert "transfer-ownership" in action.reason and role in action.reason
    ctx = with_member(RULES, Member("acme", "u1@acme.test", "u1", "entra"),
                      roles={("acme", "u1@acme.test"): "editor"})
    assert isinstance(plan_user(ctx, u, published(u)), DeleteUser)


def test_invited_user_found_in_entra_is_linked_not_duplicated():
    u = user(mail="Ada@Acme.test")
    ctx = with_member(RULES, Member("acme", "ada@acme.test", None, "invited"))
    action = plan_user(ctx, u, None)
    assert isinstance(action, CreateCard)
    assert action.link_member == "ada@acme.test" and action.new_member is None


def test_new_entra_user_takes_a_seat_until_seats_run_out():
    rows = [(user(f"u{i}"), None) for i in range(4)]
    ctx = dataclasses.replace(RULES, seats={"acme": 3}, seats_used={"acme": 1})
    actions = plan(ctx, rows)
    assert [a.kind for a in actions] == ["create_card", "create_card", "wait", "wait"]
    assert "seat limit reached (3/3)" in actions[-1].reason
    assert all(a.new_member for a in actions[:2])


def test_deletions_free_seats_in_the_same_cycle():
    gone = user("gone", removed="deleted")
    ctx = with_member(RULES, Member("acme", "gone@acme.test", "gone", "entra"),
                      seats={"acme": 1}, seats_used={"acme": 1})
    actions = plan(ctx, [(gone, published(gone)), (user("new"), None)])
    assert [a.kind for a in actions] == ["delete_user", "create_card"]


def test_out_of_scope_and_guests_are_inactive():
    for u in (user(in_scope=False), user(in_scope=False, user_type="Guest")):
        assert plan_user(RULES, u, None) is None  # no card, no seat
        assert plan_user(RULES, u, published(u)) is None  # kept (on_disable = keep)
        ctx = dataclasses.replace(RULES, on_disable={"acme": "deactivate"})
        action = plan_user(ctx, u, published(u))
        assert isinstance(action, DeactivateCard) and "scope" in action.reason


def test_domain_assignment_routes_new_users_and_moves_cards():
    ctx = dataclasses.replace(RULES, routes={"beta.test": "beta"})
    u = user(mail="bo@beta.test")
    create = plan_user(ctx, u, None)
    assert isinstance(create, CreateCard) and create.org == "beta"
    move = plan_user(ctx, u, published(u, org="acme"))
    assert isinstance(move, MoveCard) and (move.from_org, move.org) == ("acme", "beta")
    assert move.card.card_id == card_id_for(KEY, "u1")  # same card, new place
    sub = user(mail="bo@sub.beta.test")  # subdomains match only when listed
    assert plan_user(ctx, sub, None).org == "acme"


def test_user_from_two_integrations_gets_one_card_in_the_routed_org():
    ctx = dataclasses.replace(RULES, routes={"beta.test": "beta"},
                              other_cards=frozenset({("beta", "u1")}))
    assert plan_user(ctx, user(mail="bo@beta.test"), None) is None


def test_permanent_delete_without_card_plans_nothing():
    assert plan_user(RULES, user(removed="deleted"), None) is None


def test_soft_delete_and_disable_keep_the_card_by_default():
    for u in (user(removed="changed"), user(enabled=False)):
        assert plan_user(RULES, u, published(u)) is None


def test_disabled_when_first_seen_gets_no_card():
    assert plan_user(RULES, user(enabled=False), None) is None
    assert plan_user(RULES, user(removed="changed"), None) is None


def test_deactivate_when_configured():
    rules = dataclasses.replace(RULES, on_disable={"acme": "deactivate"})
    u = user(enabled=False)
    action = plan_user(rules, u, published(u))
    assert isinstance(action, DeactivateCard)
    assert action.card.active is False
    assert plan_user(rules, u, published(u, active=False)) is None


def test_reenabled_user_gets_the_same_card_back():
    u = user()
    action = plan_user(RULES, u, published(u, active=False))
    assert isinstance(action, ReactivateCard)
    assert action.card.card_id == card_id_for(KEY, "u1")


def test_orphan_ledger_row_is_deleted():
    u = user()
    action = plan_user(RULES, None, published(u))
    assert isinstance(action, DeleteCard)
    assert action.purge_user is False


def test_wait_and_hold_are_never_applied():
    assert not Wait.applied and not Hold.applied and DeleteUser.destructive


def test_actions_are_ordered_delete_update_create():
    a, b, c = user("a"), user("b", job_title="new"), user("c", removed="deleted")
    rows = [(a, None), (b, published(user("b"))), (c, published(c))]
    kinds = [x.kind for x in plan(RULES, rows)]
    assert kinds == ["delete_card", "update_card", "create_card"]


def test_card_ids_are_opaque_stable_and_keyed():
    cid = card_id_for(KEY, "u1")
    assert cid == card_id_for(KEY, "u1")
    assert cid != card_id_for(b"other-key".ljust(32), "u1")
    assert len(cid) == 16 and cid.isalnum() and cid.islower()


names = st.text(min_size=0, max_size=8)
user_states = st.fixed_dictionaries(
    {
        "title": names,
        "removed": st.sampled_from([None, "changed", "deleted"]),
        "enabled": st.booleans(),
        "card": st.sampled_from([None, "same", "stale", "inactive"]),
    }
)


@given(st.lists(user_states, max_size=12), st.sampled_from(["keep", "deactivate"]))
def test_applying_a_plan_converges(states, on_disable):
    """Whatever the starting point, applying the plan to the ledger leaves nothing to do."""
    rules = dataclasses.replace(RULES, on_disable={"acme": on_disable})
    mirror, ledger = {}, {}
    for i, s in enumerate(states):
        u = user(f"u{i}", removed=s["removed"], enabled=s["enabled"], job_title=s["title"])
        mirror[u.id] = u
        if s["card"] == "same":
            ledger[u.id] = published(u)
        elif s["card"] == "stale":
            ledger[u.id] = published(user(f"u{i}", job_title=s["title"] + "x"))
        elif s["card"] == "inactive":
            ledger[u.id] = published(u, active=False)
    for action in plan(rules, [(u, ledger.get(uid)) for uid, u in mirror.items()]):
        if isinstance(action, DeleteCard):
            ledger.pop(action.user_id)
            if action.purge_user:
                mirror.pop(action.user_id)
        else:
            u = mirror[action.user_id]
            ledger[u.id] = published(u, active=action.card.active)
    assert plan(rules, [(u, ledger.get(uid)) for uid, u in mirror.items()]) == []


def test_photo_change_republishes_with_the_photo():
    from cardsync.models import Photo

    u = user()
    with_photo = dataclasses.replace(u, photo=Photo(web=b"w", thumb=b"t", etag="e1"))
    action = plan_user(RULES, with_photo, published(u))
    assert isinstance(action, UpdateCard) and action.reason == "profile photo added"
    assert action.card.photo.etag == "e1"
    card = dataclasses.replace(published(u), photo_etag="e1")
    assert plan_user(RULES, with_photo, card) is None
    changed = dataclasses.replace(u, photo=Photo(web=b"w2", thumb=b"t2", etag="e2"))
    assert plan_user(RULES, changed, card).reason == "profile photo changed"
    assert plan_user(RULES, u, card).reason == "profile photo removed"
