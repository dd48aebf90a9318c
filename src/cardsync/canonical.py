"""The canonical text of a person: what the cards ledger stores for each card, and
what mirror rows made from a Person (provisioning on demand) hold, with the content
hash taken over it.

One function of a :class:`~cardsync.models.Person`'s non-empty fields, in their
declared order (``CARD_FIELDS`` order), as compact JSON with tuples as lists.
(Mirror rows from users/delta hold Graph's own text instead: cardsync.graph.parse.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .models import Person

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def person_to_json(person: Person) -> str:
    """Canonical JSON of a person. Person's fields are CARD_FIELDS' values in the same
    order, so its ``__dict__`` has that order."""
    return _ENCODE({k: v for k, v in person.__dict__.items() if v})


def person_from_json(text: str) -> Person:
    return person_from_dict(json.loads(text))


def person_from_dict(data: dict[str, Any]) -> Person:
    """The Person of parsed canonical JSON."""
    if "business_phones" in data:
        data["business_phones"] = tuple(data["business_phones"])
    return Person(**data)


def content_hash(text: str | bytes) -> str:
    """The hash of a mirror row's or a card's text (given as UTF-8 bytes when the caller
    already has them): the cards ledger compares the two."""
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:20]


def canonical(person: Person) -> tuple[str, str]:
    """(canonical JSON, content hash) of a person."""
    text = person_to_json(person)
    return text, content_hash(text)
