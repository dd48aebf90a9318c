"""What a card page shows, computed once in Python so templates stay simple.

A :class:`CardView` holds cleaned text (see :mod:`.text`) and ready-made links;
templates only lay it out. For an inactive card every piece of contact data is
left empty, so that even a custom template cannot show what was withdrawn.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from ...models import Card, OrgProfile, Person
from . import site
from .text import lines, one_line

# Where the dialable part of a phone number ends: "ext. 12", "x12", "#12", "; ...".
_EXTENSION = re.compile(r"[A-Za-z#;,]")


@dataclass(frozen=True)
class Phone:
    kind: str  # "work" or "mobile"
    number: str
    href: str  # a tel: URI, or "" when the number has no digits to dial


@dataclass(frozen=True)
class OrgView:
    slug: str
    name: str
    hue: int  # 0-359, the accent colour of the organization's pages


@dataclass(frozen=True)
class CardView:
    """A card page's content. The contact fields default to empty: an inactive card
    has none."""

    id: str
    url: str
    active: bool
    name: str
    initials: str
    company: str
    job_title: str = ""
    department: str = ""
    email: str = ""
    email_href: str = ""
    phones: tuple[Phone, ...] = ()
    office_location: str = ""
    address: tuple[str, ...] = ()
    photo: str = ""  # relative URL of the photo, or ""
    vcard: str = ""  # relative URL of the vCard, or ""
    qr_svg: str = ""
    qr_png: str = ""


def org_view(org: OrgProfile) -> OrgView:
    return OrgView(slug=org.slug, name=one_line(org.name), hue=hue(org.slug))


def hue(key: str) -> int:
    """A stable colour per organization, so its cards look alike without configuration."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:2], "big") % 360


def card_view(card: Card, org: OrgView, url: str, photo_version: str = "") -> CardView:
    """The view of ``card``. ``photo_version`` (a hash of the photo) busts browser caches."""
    person = card.person
    name = one_line(person.name)
    company = one_line(person.company_name) or org.name
    if not card.active:
        return CardView(card.card_id, url, False, name, initials(person), company)
    email = one_line(person.email)
    return CardView(
        id=card.card_id,
        url=url,
        active=True,
        name=name,
        initials=initials(person),
        company=company,
        job_title=one_line(person.job_title),
        department=one_line(person.department),
        email=email,
        email_href="mailto:" + quote(email, safe="@+._-") if email else "",
        phones=phones(person),
        office_location=one_line(person.office_location),
        address=address(person),
        photo=f"{site.PHOTO}?v={photo_version}" if card.photo else "",
        vcard=site.VCARD,
        qr_svg=site.QR_SVG,
        qr_png=site.QR_PNG,
    )


def phones(person: Person) -> tuple[Phone, ...]:
    found = [("work", one_line(n)) for n in person.business_phones]
    found.append(("mobile", one_line(person.mobile_phone)))
    return tuple(Phone(kind, number, tel_uri(number)) for kind, number in found if number)


def tel_uri(number: str) -> str:
    """A dialable ``tel:`` URI: the leading ``+`` and the digits, nothing a phone
    could misread (extensions and punctuation are shown, not dialled)."""
    dialled = _EXTENSION.split(number, maxsplit=1)[0]
    digits = "".join(ch for ch in dialled if ch.isascii() and ch.isdigit())
    if not digits:
        return ""
    return f"tel:{'+' if number.lstrip().startswith('+') else ''}{digits}"


def address(person: Person) -> tuple[str, ...]:
    region = " ".join(p for p in (one_line(person.state), one_line(person.postal_code)) if p)
    locality = ", ".join(p for p in (one_line(person.city), region) if p)
    return tuple(
        line for line in (*lines(person.street_address), locality, one_line(person.country)) if line
    )


def initials(person: Person) -> str:
    """Up to two initials for the avatar: from given name and surname when both
    are known, else from the first and last words of the name."""
    if person.given_name.strip() and person.surname.strip():
        words = [person.given_name, person.surname]
    else:
        words = one_line(person.name).split()
    letters = [first_letter(w) for w in (words[:1] + words[1:][-1:])]
    return "".join(letters).upper() or "?"


def first_letter(word: str) -> str:
    """The first letter or digit of ``word`` with the combining marks that follow it."""
    for i, ch in enumerate(word):
        if ch.isalnum():
            end = i + 1
            while end < len(word) and unicodedata.combining(word[end]):
                end += 1
            return word[i:end]
    return ""
