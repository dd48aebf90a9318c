"""cardsync.graph.parse: Graph JSON bytes -> DeltaPage / DirectoryUser, no SDK involved."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardsync.errors import GraphError
from cardsync.graph import parse_delta_page, parse_delta_page_counted, parse_user
from cardsync.graph.parse import PageReader, parse_delta_page_raw, person_from_graph
from cardsync.models import CARD_FIELDS, DeltaPage, DirectoryUser, GraphUser, Person, Removal

NEXT = "https://graph.microsoft.com/v1.0/users/delta?$skiptoken=abc"
DELTA = "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=xyz"
ID1 = "11111111-1111-1111-1111-111111111111"
ID2 = "22222222-2222-2222-2222-222222222222"
ID3 = "33333333-3333-3333-3333-333333333333"

# Both readers of a users/delta page: the one that builds DirectoryUsers, and the one
# that keeps each user's JSON text for the mirror (GraphUser). Every check applies to both.
PARSERS = [parse_delta_page, lambda raw: parse_delta_page_raw(raw)[0]]
PARSER_IDS = ["objects", "raw"]


def page(*values: Any, next_link: str | None = None, delta_link: str | None = DELTA) -> bytes:
    doc: dict[str, Any] = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users"}
    if next_link:
        doc["@odata.nextLink"] = next_link
    if delta_link and not next_link:
        doc["@odata.deltaLink"] = delta_link
    doc["value"] = list(values)
    return json.dumps(doc, ensure_ascii=False).encode()


def full_user(uid: str = ID1, **extra: Any) -> dict[str, Any]:
    user = {
        "id": uid,
        "displayName": "Ada Lovelace",
        "givenName": "Ada",
        "surname": "Lovelace",
        "jobTitle": "Analyst",
        "department": "Engines",
        "companyName": "Contoso",
        "mail": "ada@contoso.com",
        "userPrincipalName": "ada@contoso.com",
        "businessPhones": ["+44 20 7946 0000"],
        "mobilePhone": "+44 7700 900000",
        "officeLocation": "B1",
        "streetAddress": "1 Engine Way",
        "city": "London",
        "state": "Greater London",
        "postalCode": "W1 1AA",
        "country": "UK",
        "accountEnabled": True,
        "userType": "Member",
    }
    user.update(extra)
    return user


def test_users_and_removals_keep_graph_order() -> None:
    raw = page(
        full_user(ID1),
        {"id": ID2, "@removed": {"reason": "changed"}},
        full_user(ID3, displayName="Grace"),
        {"id": ID1, "@removed": {"reason": "deleted"}},
    )
    result = parse_delta_page(raw)
    assert [type(e) for e in result.entries] == [DirectoryUser, Removal, DirectoryUser, Removal]
    assert [e.id for e in result.entries] == [ID1, ID2, ID3, ID1]
    assert result.entries[1] == Removal(ID2, "changed")
    assert not result.entries[1].permanent
    assert result.entries[3] == Removal(ID1, "deleted")
    assert result.entries[3].permanent
    assert result.delta_link == DELTA
    assert result.next_link is None


def test_full_user_maps_every_card_field() -> None:
    (user,) = parse_delta_page(page(full_user())).entries
    assert isinstance(user, DirectoryUser)
    assert user.person == Person(
        display_name="Ada Lovelace",
        given_name="Ada",
        surname="Lovelace",
        job_title="Analyst",
        department="Engines",
        company_name="Contoso",
        mail="ada@contoso.com",
        user_principal_name="ada@contoso.com",
        business_phones=("+44 20 7946 0000",),
        mobile_phone="+44 7700 900000",
        office_location="B1",
        street_address="1 Engine Way",
        city="London",
        state="Greater London",
        postal_code="W1 1AA",
        country="UK",
    )
    assert user.account_enabled is True
    assert user.user_type == "Member"
    # Every card field is read: none is left at its default by a typo in the mapping.
    assert all(getattr(user.person, attr) for attr in CARD_FIELDS.values())


def test_nulls_become_empty() -> None:
    nulls = {key: None for key in CARD_FIELDS}
    (user,) = parse_delta_page(
        page({"id": ID1, **nulls, "accountEnabled": None, "userType": None})
    ).entries
    assert user == DirectoryUser(ID1, Person(), account_enabled=True, user_type="Member")


def test_missing_fields_take_defaults() -> None:
    (user,) = parse_delta_page(page({"id": ID1})).entries
    assert user == DirectoryUser(ID1, Person(), account_enabled=True, user_type="Member")


def test_disabled_guest() -> None:
    (user,) = parse_delta_page(page(full_user(accountEnabled=False, userType="Guest"))).entries
    assert user.account_enabled is False
    assert user.user_type == "Guest"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(False, False), (True, True), ("false", False), ("False", False), (0, False), (1, True)],
)
def test_account_enabled_coercion(value: Any, expected: bool) -> None:
    (user,) = parse_delta_page(page({"id": ID1, "accountEnabled": value})).entries
    assert user.account_enabled is expected


def test_junk_types_are_coerced_safely() -> None:
    junk = {
        "id": ID1,
        "displayName": {"nested": "object"},
        "givenName": ["a", "list"],
        "surname": True,
        "postalCode": 98052,
        "jobTitle": 1.5,
        "businessPhones": ["+1 555 0100", None, 42, {"x": 1}, ["y"], ""],
        "mobilePhone": False,
        "userType": 7,
        "accountEnabled": {"weird": True},
    }
    (user,) = parse_delta_page(page(junk)).entries
    person = user.person
    assert person.display_name == ""
    assert person.given_name == ""
    assert person.surname == ""
    assert person.postal_code == "98052"
    assert person.job_title == "1.5"
    assert person.business_phones == ("+1 555 0100", "42")
    assert person.mobile_phone == ""
    assert user.user_type == "Member"
    assert user.account_enabled is True
    # Every text field is a str, whatever came in.
    for attr in CARD_FIELDS.values():
        value = getattr(person, attr)
        assert isinstance(value, tuple if attr == "business_phones" else str)


def test_business_phones_shapes() -> None:
    raw = page(
        {"id": ID1, "businessPhones": "+1 555 0100"},
        {"id": ID2, "businessPhones": []},
        {"id": ID3, "businessPhones": None},
    )
    phones = [e.person.business_phones for e in parse_delta_page(raw).entries]
    assert phones == [("+1 555 0100",), (), ()]


HOSTILE = [
    "<script>alert(1)</script>",
    "\"'><img src=x onerror=alert(1)>",
    "Robert'); DROP TABLE users;--",
    "{{ 7*7 }} {% raw %}",
    "BEGIN:VCARD\r\nFN:Mallory\r\nEND:VCARD",
    "../../etc/passwd",
    "‮gnp.exe",
    "Zoë 🦄 Ünïcødé 山田",
    "nul\x00byte",
    "x" * 5000,
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_kept_verbatim(text: str) -> None:
    (user,) = parse_delta_page(
        page({"id": ID1, "displayName": text, "businessPhones": [text], "userType": "Member"})
    ).entries
    assert user.person.display_name == text
    assert user.person.business_phones == (text,)


def test_lone_surrogates_become_replacement_characters() -> None:
    # Valid JSON, but "\ud800" alone is not text: it cannot be encoded as UTF-8.
    raw = (
        b'{"@odata.deltaLink":"' + DELTA.encode() + b'","value":['
        b'{"id":"' + ID1.encode() + b'","displayName":"a\\ud800b",'
        b'"surname":"\\ud83e\\udd84","businessPhones":["\\udfff"]}]}'
    )
    (user,) = parse_delta_page(raw).entries
    assert user.person.display_name == "a\ufffdb"
    assert user.person.surname == "🦄"  # a proper pair is a real character
    assert user.person.business_phones == ("\ufffd",)
    user.person.display_name.encode("utf-8")


def test_removal_reasons() -> None:
    raw = page(
        {"id": ID1, "@removed": {"reason": "deleted"}},
        {"id": ID2, "@removed": {"reason": "somethingNew"}},
        {"id": ID3, "@removed": {}},
        {"id": "44444444-4444-4444-4444-444444444444", "@removed": True},
    )
    reasons = [e.reason for e in parse_delta_page(raw).entries]
    assert reasons == ["deleted", "changed", "changed", "changed"]


def test_removal_ignores_other_properties() -> None:
    raw = page({"id": ID1, "displayName": "Gone", "@removed": {"reason": "changed"}})
    assert parse_delta_page(raw).entries == (Removal(ID1, "changed"),)


def test_entries_without_a_valid_id_are_skipped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = page(
        {"displayName": "no id"},
        {"id": None},
        {"id": 12345},
        {"id": ""},
        {"id": "../../etc/passwd"},
        {"@removed": {"reason": "deleted"}},
        "not an object",
        None,
        full_user(ID1),
    )
    with caplog.at_level(logging.WARNING, logger="cardsync.graph"):
        result, skipped = parse_delta_page_counted(raw)
    assert [e.id for e in result.entries] == [ID1]
    assert skipped == 8
    assert "skipped 8" in caplog.text


def test_uppercase_guid_ids_are_accepted_verbatim() -> None:
    upper = ID1.replace("1", "A")
    (user,) = parse_delta_page(page({"id": upper})).entries
    assert user.id == upper


def test_empty_page_with_next_link() -> None:
    result = parse_delta_page(page(next_link=NEXT))
    assert result.entries == ()
    assert result.next_link == NEXT
    assert result.delta_link is None


def test_empty_last_page_with_delta_link() -> None:
    result = parse_delta_page(page())
    assert result.entries == ()
    assert result.delta_link == DELTA


def test_page_without_value_is_empty() -> None:
    result = parse_delta_page(json.dumps({"@odata.deltaLink": DELTA}).encode())
    assert result.entries == ()


def test_both_links_follow_next(caplog: pytest.LogCaptureFixture) -> None:
    raw = json.dumps({"@odata.nextLink": NEXT, "@odata.deltaLink": DELTA, "value": []})
    with caplog.at_level(logging.WARNING, logger="cardsync.graph"):
        result = parse_delta_page(raw.encode())
    assert (result.next_link, result.delta_link) == (NEXT, None)
    assert "both" in caplog.text


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"<html><body>502 Bad Gateway</body></html>",
        b"\xff\xfe garbage",
        b"[]",
        b"null",
        b'"just a string"',
    ],
)
@pytest.mark.parametrize("parser", PARSERS, ids=PARSER_IDS)
def test_malformed_json_is_a_graph_error(raw: bytes, parser: Any) -> None:
    with pytest.raises(GraphError, match="users/delta page"):
        parser(raw)


def test_a_page_with_two_value_lists_keeps_the_last_as_json_loads_does() -> None:
    # Graph never sends one. msgspec decodes the whole page before any entry is
    # handed on, so, like json.loads, the last list counts.
    first = json.dumps({"id": ID1}).encode()
    last = json.dumps({"id": ID2}).encode()
    raw = (b'{"value":[' + first + b'],"value":[' + last + b'],"@odata.deltaLink":"'
           + DELTA.encode() + b'"}')
    for parser in PARSERS:
        assert [e.id for e in parser(raw).entries] == [ID2]


def test_a_page_with_two_value_lists_is_refused_by_the_scanner() -> None:
    # A page holding an escaped surrogate is read object by object with the json
    # module's scanner, which hands entries on as it reads them: it refuses the page.
    odd = b'{"id":"' + ID1.encode() + b'","displayName":"\\ud800"}'
    raw = (b'{"value":[' + odd + b'],"value":[],"@odata.deltaLink":"'
           + DELTA.encode() + b'"}')
    with pytest.raises(GraphError, match="two 'value' lists"):
        parse_delta_page_raw(raw)


@pytest.mark.parametrize("parser", PARSERS, ids=PARSER_IDS)
def test_missing_both_links_is_a_graph_error(parser: Any) -> None:
    with pytest.raises(GraphError, match="neither @odata.nextLink nor @odata.deltaLink"):
        parser(json.dumps({"value": [full_user()]}).encode())


@pytest.mark.parametrize("link", [42, "", "javascript:alert(1)", ["x"]])
@pytest.mark.parametrize("parser", PARSERS, ids=PARSER_IDS)
def test_link_that_is_not_a_url_is_a_graph_error(link: Any, parser: Any) -> None:
    with pytest.raises(GraphError, match="not a URL"):
        parser(json.dumps({"@odata.deltaLink": link, "value": []}).encode())


@pytest.mark.parametrize("parser", PARSERS, ids=PARSER_IDS)
def test_value_not_a_list_is_a_graph_error(parser: Any) -> None:
    with pytest.raises(GraphError, match="'value' is not a list"):
        parser(json.dumps({"@odata.deltaLink": DELTA, "value": {}}).encode())


def test_parse_user() -> None:
    user = parse_user(full_user(ID2, jobTitle=None, businessPhones=[]))
    assert user.id == ID2
    assert user.person.job_title == ""
    assert user.person.business_phones == ()
    assert user.person.name == "Ada Lovelace"


def test_parse_user_fixes_lone_surrogates() -> None:
    user = parse_user({"id": ID1, "displayName": "x\udc00"})
    assert user.person.display_name == "x\ufffd"


@pytest.mark.parametrize("obj", [{}, {"id": "nope"}, {"id": ID1, "@removed": {}}, [], None])
def test_parse_user_without_valid_id_is_a_graph_error(obj: Any) -> None:
    with pytest.raises(GraphError):
        parse_user(obj)


def test_str_input_is_accepted() -> None:
    result = parse_delta_page(page(full_user()).decode())
    assert result.entries[0].person.mail == "ada@contoso.com"


# Values a Graph property can hold on a hostile or odd tenant: text of any kind
# (surrogate escapes included), numbers, booleans, nulls, lists and objects.
_ANY_VALUE = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["", " ", "\ud800", "<b>&amp;", "a\r\nb", "ü"]),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.one_of(st.text(max_size=6), st.integers(), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


_LONE = re.compile("[\ud800-\udfff]")
_ENTRY = st.one_of(
    st.dictionaries(st.sampled_from([*CARD_FIELDS, "accountEnabled", "userType"]), _ANY_VALUE)
    .map(lambda props: {"id": ID1, **props}),
    st.sampled_from([
        {"id": ID2, "@removed": {"reason": "deleted"}},
        {"id": ID3, "@removed": {"reason": "changed"}, "displayName": "x"},
        {"id": "not-a-guid", "displayName": "x"},
        {"displayName": "no id"},
        "a string",
        None,
        [1, 2],
    ]),
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(_ENTRY, max_size=4),
    link_first=st.booleans(),
    indent=st.sampled_from([None, 1]),
    next_page=st.booleans(),
    scanner=st.booleans(),
    escaped=st.booleans(),
)
def test_the_raw_reader_agrees_with_the_object_reader(
    values: list[Any],
    link_first: bool,
    indent: int | None,
    next_page: bool,
    scanner: bool,
    escaped: bool,
) -> None:
    # The mirror is filled by the raw reader, which keeps each user's JSON text and
    # reads the Person from it later; it must see exactly what the object reader sees,
    # both when msgspec splits the page and when the json module's scanner reads it.
    link = {"@odata.nextLink": NEXT} if next_page else {"@odata.deltaLink": DELTA}
    doc = {**link, "value": values} if link_first else {"value": values, **link}
    text = json.dumps(doc, indent=indent, ensure_ascii=escaped)  # "\u00e9" or "é"
    if _LONE.search(text):
        text = json.dumps(doc, indent=indent)  # Graph escapes what UTF-8 cannot carry
    body = text.encode()
    expected, expected_skipped = parse_delta_page_counted(body)
    if scanner:
        reader = PageReader(body)
        entries = tuple(reader._scanned())
        page = DeltaPage(entries, next_link=reader.next_link, delta_link=reader.delta_link)
        skipped = reader.skipped
    else:
        page, skipped = parse_delta_page_raw(body)
    assert (page.next_link, page.delta_link, skipped) == (
        expected.next_link, expected.delta_link, expected_skipped
    )
    assert len(page.entries) == len(expected.entries)
    for got, want in zip(page.entries, expected.entries, strict=True):
        if isinstance(want, Removal):
            assert got == want
            continue
        assert isinstance(got, GraphUser)
        assert (got.id, got.account_enabled, got.user_type) == (
            want.id, want.account_enabled, want.user_type
        )
        assert got.person == want.person == person_from_graph(got.text)
        assert (got.user_principal_name, got.mail, got.display_name) == (
            want.person.user_principal_name, want.person.mail, want.person.display_name
        )
        assert json.loads(got.text) in values  # the object's own text, verbatim
        assert got.hash == hashlib.sha256(got.text.encode()).hexdigest()[:20]


@pytest.mark.parametrize("parse", PARSERS, ids=PARSER_IDS)
def test_a_lone_surrogate_after_other_escapes_is_still_found(parse: Any) -> None:
    # The page-level check looks for a backslash first; escapes that are not
    # surrogates (a quote, a backslash, a newline, an accented letter) come before one
    # that is, in another user.
    raw = (
        b'{"@odata.deltaLink":"' + DELTA.encode() + b'","value":['
        b'{"id":"' + ID1.encode() + b'","displayName":"say \\"hi\\" \\\\ \\n \\u00e9"},'
        b'{"id":"' + ID2.encode() + b'","displayName":"x\\udc00y"}]}'
    )
    first, second = parse(raw).entries
    assert first.person.display_name == 'say "hi" \\ \n é'
    assert second.person.display_name == "x\ufffdy"


@pytest.mark.parametrize("surrogate", [False, True], ids=["msgspec", "scanner"])
def test_the_last_of_two_equal_keys_wins_in_both_readers(surrogate: bool) -> None:
    # As json.loads has it, so the mirror's columns and the Person read later from the
    # same text agree.
    odd = ',"department":"\\ud800"' if surrogate else ""
    text = (
        '{"id":"' + ID2 + '","id":"' + ID1 + '","mail":"a@x.com","mail":"b@x.com",'
        '"accountEnabled":false,"accountEnabled":true' + odd + "}"
    )
    raw = b'{"@odata.deltaLink":"' + DELTA.encode() + b'","value":[' + text.encode() + b"]}"
    (user,) = parse_delta_page_raw(raw)[0].entries
    assert isinstance(user, GraphUser)
    assert (user.id, user.mail, user.account_enabled) == (ID1, "b@x.com", True)
    assert user.person.mail == "b@x.com"
    assert user.text == text


def test_invalid_utf8_is_refused_in_a_user_but_not_in_unread_properties() -> None:
    user = b'{"id":"' + ID1.encode() + b'","displayName":"Jos\xc3\xa9"}'
    tail = b'"@odata.deltaLink":"' + DELTA.encode() + b'"}'
    page, _ = parse_delta_page_raw(b'{"@odata.context":"\xff","value":[' + user + b"]," + tail)
    assert [e.person.display_name for e in page.entries] == ["José"]
    bad = user.replace(b"\xc3\xa9", b"\xff")
    with pytest.raises(GraphError, match="not valid JSON"):
        parse_delta_page_raw(b'{"value":[' + bad + b"]," + tail)


def test_a_page_msgspec_refuses_is_read_by_the_scanner() -> None:
    # json reads NaN (and a BOM); msgspec does not, so the scanner reads the page.
    raw = (b'{"@odata.deltaLink":"' + DELTA.encode() + b'","value":['
           b'{"id":"' + ID1.encode() + b'","displayName":"Ann","jobTitle":NaN}]}')
    (user,) = parse_delta_page_raw(raw)[0].entries
    assert isinstance(user, GraphUser)
    assert (user.id, user.display_name) == (ID1, "Ann")


def test_pages_without_a_backslash_are_read_as_sent() -> None:
    raw = page({"id": ID1, "displayName": "José Müller 🦄"})
    (user,) = parse_delta_page_raw(raw)[0].entries
    assert isinstance(user, GraphUser)
    assert user.display_name == "José Müller 🦄"
    assert user.person.display_name == "José Müller 🦄"


@pytest.mark.parametrize("parser", PARSERS, ids=PARSER_IDS)
def test_a_page_nested_too_deeply_is_a_graph_error(parser: Any) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    raw = (b'{"@odata.deltaLink":"' + DELTA.encode() + b'","value":[{"id":"'
           + ID1.encode() + b'","x":' + deep + b"}]}")
    with pytest.raises(GraphError, match="not valid JSON"):
        parser(raw)


def test_invalid_utf8_in_a_link_is_a_graph_error() -> None:
    raw = b'{"@odata.nextLink":"https://graph.microsoft.com/v1.0/users/delta?x=\xff","value":[]}'
    with pytest.raises(GraphError, match="not valid JSON"):
        parse_delta_page_raw(raw)


def _read(raw: bytes, scanner: bool) -> tuple[Any, ...]:
    reader = PageReader(raw)
    entries = tuple(reader._scanned() if scanner else reader.entries())
    return entries, reader.next_link, reader.delta_link, reader.skipped


def test_garbled_pages_are_a_graph_error_or_read_as_the_scanner_reads_them() -> None:
    # Bytes flipped, dropped and inserted at random in a real-looking page: the reader
    # raises nothing but GraphError, and whatever it reads, the scanner reads the same.
    # (It may read a page the scanner refuses only for invalid UTF-8 outside the users
    # and links, which it does not read: see PageReader.)
    users = [
        {"id": ID1, "displayName": "José Müller", "mail": "jose@x.com", "accountEnabled": True,
         "businessPhones": ["+1 555"], "userType": "Member"},
        {"id": ID2, "displayName": "Ann", "userPrincipalName": "ann@x.com"},
        {"id": ID3, "@removed": {"reason": "deleted"}},
    ]
    base = page(*users, next_link=NEXT)
    alphabet = b'{}[]",:\\0123456789aeflnrstu \x00\xff\xc3-'
    rnd = random.Random(5)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(3000):
        garbled = bytearray(base)
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randrange(len(garbled))
            op = rnd.random()
            if op < 0.4:
                garbled[at] = rnd.choice(alphabet)
            elif op < 0.7:
                del garbled[at]
            else:
                garbled.insert(at, rnd.choice(alphabet))
        raw = bytes(garbled)
        try:
            got = _read(raw, scanner=False)
        except GraphError:
            outcomes["refused"] += 1
            with pytest.raises(GraphError):
                _read(raw, scanner=True)
            continue
        outcomes["read"] += 1
        try:
            want = _read(raw, scanner=True)
        except GraphError:
            with pytest.raises(UnicodeDecodeError):
                raw.decode()
            continue
        assert got == want, raw
    assert min(outcomes.values()) > 500  # both kinds of page were tried
