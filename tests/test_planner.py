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
    OrgRules,
    ReactivateCard,
    UpdateCard,
    card_id_for,
    plan,
    plan_user,
)
from cardsync.state import LedgerCard, MirrorUser, content_hash, person_to_json

KEY = b"k" * 32
RULES = OrgRules(org="acme", card_key=KEY, fingerprint="fp1")


def user(uid="u1", removed=None, enabled=True, **person) -> MirrorUser:
    p = Person(display_name=person.pop("display_name", "Ada Lovelace"),
               user_principal_name=f"{uid}@acme.test", **person)
    return MirrorUser("acme", uid, p, content_hash(person_to_json(p)), enabled, "Member", removed)


def published(u: MirrorUser, active=True, fingerprint="fp1") -> LedgerCard:
    return LedgerCard("acme", u.id, card_id_for(KEY, u.id), f"https://x/acme/{u.id}/",
                      u.hash, fingerprint, active, u.person, {})


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


def test_template_change_republishes():
    u = user()
    action = plan_user(RULES, u, published(u, fingerprint="old"))
    assert isinstance(action, UpdateCard)
    assert "template" in action.reason


def test_permanent_delete_removes_card_and_mirror_row():
    u = user(removed="deleted")
    action = plan_user(RULES, u, published(u))
    assert isinstance(action, DeleteCard)
    assert action.purge_user is True
    assert action.card_id == card_id_for(KEY, "u1")


def test_permanent_delete_without_card_plans_nothing():
    assert plan_user(RULES, user(removed="deleted"), None) is None


def test_soft_delete_and_disable_keep_the_card_by_default():
    for u in (user(removed="changed"), user(enabled=False)):
        assert plan_user(RULES, u, published(u)) is None


def test_disabled_when_first_seen_gets_no_card():
    assert plan_user(RULES, user(enabled=False), None) is None
    assert plan_user(RULES, user(removed="changed"), None) is None


def test_deactivate_when_configured():
    rules = dataclasses.replace(RULES, on_disable="deactivate")
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
    rules = dataclasses.replace(RULES, on_disable=on_disable)
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
