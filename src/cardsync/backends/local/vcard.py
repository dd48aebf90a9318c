"""The vCard 3.0 a visitor saves to their phone.

vobject escapes ``\\ ; ,`` and line breaks in every value; :mod:`.text` has
already removed control characters, so no value can start a property of its own.
"""

from __future__ import annotations

import base64
import uuid

import vobject

from ...models import Card, Person
from .text import lines, one_line

# Phones split lines longer than this many octets (RFC 2425, section 5.8.1).
LINE_OCTETS = 75

# UIDs are derived from (org, card id), not the URL, so a new base_url does not make
# phones that re-import the card see a different contact.
_UID_NAMESPACE = uuid.UUID("5f1f2a3c-7c2e-4b8e-9d55-2b0f6c9a4e11")


def build(card: Card, url: str, company: str) -> bytes:
    """The vCard of an active card, UTF-8 with CRLF line endings."""
    person = card.person
    vcard = vobject.vCard()
    name = one_line(person.name)
    vcard.add("fn").value = name
    given, family = one_line(person.given_name), one_line(person.surname)
    # N is mandatory in 3.0; a name without parts goes in "given" so phones show it.
    vcard.add("n").value = vobject.vcard.Name(
        family=family, given=given or ("" if family else name)
    )
    department = one_line(person.department)
    if company or department:
        vcard.add("org").value = [company, department] if department else [company]
    _add_text(vcard, "title", one_line(person.job_title))
    email = one_line(person.email)
    if email:
        _add_text(vcard, "email", email, ("INTERNET", "WORK"))
    for number in person.business_phones:
        _add_text(vcard, "tel", one_line(number), ("WORK", "VOICE"))
    _add_text(vcard, "tel", one_line(person.mobile_phone), ("CELL",))
    _add_address(vcard, person)
    vcard.add("url").value = url
    vcard.add("uid").value = uid(card.org, card.card_id)
    text = vcard.serialize()
    if card.photo:
        text = text.removesuffix("END:VCARD\r\n") + _photo_line(card.photo.thumb) + "END:VCARD\r\n"
    return text.encode("utf-8")


def uid(org: str, card_id: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_UID_NAMESPACE, f'{org}/{card_id}')}"


def _add_text(
    vcard: vobject.base.Component, prop: str, value: str, types: tuple[str, ...] = ()
) -> None:
    if value:
        line = vcard.add(prop)
        line.value = value
        if types:
            line.type_param = list(types)


def _add_address(vcard: vobject.base.Component, person: Person) -> None:
    parts = {
        "extended": one_line(person.office_location),
        "street": "\n".join(lines(person.street_address)),
        "city": one_line(person.city),
        "region": one_line(person.state),
        "code": one_line(person.postal_code),
        "country": one_line(person.country),
    }
    if any(parts.values()):
        adr = vcard.add("adr")
        adr.value = vobject.vcard.Address(**parts)
        adr.type_param = "WORK"


def _photo_line(jpeg: bytes) -> str:
    """The PHOTO property, folded by hand: vobject leaves it one long line (a
    workaround for an old Mac Address Book) that some phones refuse."""
    line = "PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(jpeg).decode("ascii")
    # Base64 is ASCII, so octets are characters; continuation lines start with a space.
    step = LINE_OCTETS - 1
    chunks = [
        line[:LINE_OCTETS],
        *(line[i : i + step] for i in range(LINE_OCTETS, len(line), step)),
    ]
    return "\r\n ".join(chunks) + "\r\n"
