"""Plain data shared by the parts of cardsync. Every type here is a frozen dataclass.

Directory side:  :class:`DirectoryUser` and :class:`Removal` come out of Graph delta pages.
Publishing side: :class:`Card` is what a backend publishes; :class:`Published` is what it answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Graph property name -> DirectoryUser attribute, for the card fields. The order is the
# order fields appear on a card and in the content hash: append, never reorder.
CARD_FIELDS: dict[str, str] = {
    "displayName": "display_name",
    "givenName": "given_name",
    "surname": "surname",
    "jobTitle": "job_title",
    "department": "department",
    "companyName": "company_name",
    "mail": "mail",
    "userPrincipalName": "user_principal_name",
    "businessPhones": "business_phones",
    "mobilePhone": "mobile_phone",
    "officeLocation": "office_location",
    "streetAddress": "street_address",
    "city": "city",
    "state": "state",
    "postalCode": "postal_code",
    "country": "country",
}

# Properties that decide lifecycle, not card content.
LIFECYCLE_FIELDS: dict[str, str] = {
    "accountEnabled": "account_enabled",
    "userType": "user_type",
}

# The $select sent on the first users/delta request. Only selected properties are
# tracked by Graph, so accountEnabled must be here or disabling would go unseen.
DELTA_SELECT: tuple[str, ...] = ("id", *CARD_FIELDS, *LIFECYCLE_FIELDS)


@dataclass(frozen=True)
class Person:
    """What a card shows about a person. All text is untrusted directory data."""

    display_name: str = ""
    given_name: str = ""
    surname: str = ""
    job_title: str = ""
    department: str = ""
    company_name: str = ""
    mail: str = ""
    user_principal_name: str = ""
    business_phones: tuple[str, ...] = ()
    mobile_phone: str = ""
    office_location: str = ""
    street_address: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country: str = ""

    @property
    def name(self) -> str:
        """The best available name: displayName, else given + surname, else the UPN."""
        full = " ".join(p for p in (self.given_name, self.surname) if p)
        return self.display_name or full or self.user_principal_name

    @property
    def email(self) -> str:
        return self.mail or self.user_principal_name


@dataclass(frozen=True)
class DirectoryUser:
    """One user object from a users/delta page."""

    id: str
    person: Person
    account_enabled: bool = True
    user_type: str = "Member"


@dataclass(frozen=True)
class GraphUser:
    """A users/delta user object kept as Graph sent it: its JSON ``text`` (what the
    directory mirror stores; ``hash`` is taken over it) and the few values sync keys
    and filters on. Its :attr:`person` is read from the text when something needs it,
    so a full round of unchanged users never builds one (cardsync.graph.parse has
    the rules; they are the same as for :class:`DirectoryUser`)."""

    id: str
    text: str
    hash: str
    user_principal_name: str = ""
    mail: str = ""
    display_name: str = ""
    account_enabled: bool = True
    user_type: str = "Member"

    @property
    def person(self) -> Person:
        from .graph.parse import person_from_graph

        return person_from_graph(self.text)


@dataclass(frozen=True)
class Removal:
    """An ``@removed`` entry: ``reason`` is ``changed`` (soft delete) or ``deleted``."""

    id: str
    reason: str

    @property
    def permanent(self) -> bool:
        return self.reason == "deleted"


# What a users/delta page holds: users (parsed, or kept as Graph's text) and removals.
DeltaEntry = DirectoryUser | GraphUser | Removal


@dataclass(frozen=True)
class DeltaPage:
    """One page of users/delta, in the order Graph sent its entries."""

    entries: tuple[DeltaEntry, ...]
    next_link: str | None = None
    delta_link: str | None = None


@dataclass(frozen=True)
class OrgProfile:
    """What a backend needs to know about an organization to publish its cards."""

    slug: str
    name: str
    template: str = "classic"


@dataclass(frozen=True)
class Photo:
    """A user's photo, already resized: ``web`` for pages, ``thumb`` (JPEG ~150px) for vCards."""

    web: bytes
    thumb: bytes
    etag: str = ""


@dataclass(frozen=True)
class Card:
    """A card to publish. ``card_id`` is stable for the user and opaque (not derived
    from any name), so URLs cannot be guessed or enumerated."""

    org: str
    card_id: str
    user_id: str
    person: Person
    active: bool = True
    photo: Photo | None = None


@dataclass(frozen=True)
class Published:
    """A backend's answer to publishing a card: its public URL and the files it wrote
    (kind -> absolute path; empty for backends that write no files)."""

    url: str
    files: dict[str, str] = field(default_factory=dict)
