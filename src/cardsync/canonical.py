"""The canonical text of a person: what the directory mirror and the cards ledger
store, and what content hashes are taken over.

One function of a :class:`~cardsync.models.Person`'s non-empty fields, in their
declared order (``CARD_FIELDS`` order), as compact JSON with tuples as lists. The
Graph parser builds the same text straight from a page's field values
(:func:`encode_fields`), so an initial sync encodes each user once, off the thread
that writes the state; :func:`person_to_json` gives the identical text for a Person.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .models import Person

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_fields(fields: dict[str, Any]) -> str:
    """Canonical JSON of a Person's fields given as a dict: attribute -> non-empty value,
    in Person's field order (the caller's responsibility; :func:`person_to_json`
    guarantees it)."""
    return _ENCODE(fields)


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


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def canonical(person: Person) -> tuple[str, str]:
    """(canonical JSON, content hash) of a person."""
    text = person_to_json(person)
    return text, content_hash(text)
