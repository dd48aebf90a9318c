"""A tenant: its apps, users and photos, the change log users/delta reads, and its groups.

Every user change appends ``(user id, changed property names or None)`` to an append-only
log; a change's sequence number is its position + 1. users/delta fixes a round's bounds as
log positions, so the set of changed users between two bounds never changes afterwards.
``None`` marks a lifecycle change (create, delete, restore), which every ``$select`` sees.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .groups import GroupDirectory
from .users import (
    ACTIVE,
    HARD_DELETED,
    SOFT_DELETED,
    USER_DEFAULTS,
    UserRecord,
    clean_properties,
)
from .wire import utc_now

DEFAULT_ROLES = ("User.Read.All",)
_CHANGE_CACHE_SIZE = 16


@dataclass(frozen=True)
class App:
    """An app registration with its service principal. ``roles`` are the application
    permissions an admin consented to; ``()`` is an app nobody consented for.
    ``certificate`` is the PEM of a public certificate for certificate credentials."""

    client_id: str
    secret: str
    service_principal_id: str
    roles: tuple[str, ...]
    display_name: str
    certificate: bytes | None = None


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str
    etag: str
    width: int
    height: int


def read_photo(data: bytes) -> Photo:
    """Measure an image (Graph reports its size); anything Pillow cannot open is refused."""
    from PIL import Image, UnidentifiedImageError  # imported here: only photos need Pillow

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            content_type = Image.MIME.get(image.format or "", "image/jpeg")
    except UnidentifiedImageError as exc:
        raise ValueError("photo is not an image Pillow can read") from exc
    etag = hashlib.sha256(data).hexdigest()[:32]
    return Photo(data, content_type, etag, width, height)


class Tenant:
    """One Entra tenant. All methods are thread-safe; read methods are for the routes."""

    def __init__(self, tenant_id: str, name: str) -> None:
        self.id = tenant_id
        self.name = name
        slug = re.sub(r"[^a-z0-9]", "", name.lower()) or "tenant"
        self.domain = f"{slug}.onmicrosoft.com"
        # Reentrant so that delta paging can hold it across several reads.
        self.lock = threading.RLock()
        self._apps: dict[str, App] = {}
        self._users: dict[str, UserRecord] = {}
        self._by_upn: dict[str, str] = {}  # lower-cased UPN -> id, unless hard-deleted
        self._order: list[str] = []  # ids in creation order; hard-deleted ids stay
        self._log: list[tuple[str, frozenset[str] | None]] = []
        self._photos: dict[str, Photo] = {}
        self._changes: dict[tuple[int, int, frozenset[str]], tuple[str, ...]] = {}
        self.groups = GroupDirectory(self)

    @property
    def tenant_id(self) -> str:
        """The same as :attr:`id`, named like ``add_tenant(tenant_id=...)``."""
        return self.id

    # -- apps ---------------------------------------------------------------------------

    def add_app(
        self,
        client_id: str | None = None,
        secret: str | None = None,
        roles: Iterable[str] = DEFAULT_ROLES,
        display_name: str = "cardsync",
        certificate: bytes | None = None,
    ) -> App:
        app = App(
            client_id or str(uuid.uuid4()),
            secret or secrets.token_urlsafe(30),
            str(uuid.uuid4()),
            tuple(roles),
            display_name,
            certificate,
        )
        with self.lock:
            self._apps[app.client_id] = app
        return app

    def app(self, client_id: str) -> App | None:
        return self._apps.get(client_id)

    def app_by_service_principal(self, sp_id: str) -> App | None:
        return next((a for a in self._apps.values() if a.service_principal_id == sp_id), None)

    def apps(self) -> list[App]:
        with self.lock:
            return list(self._apps.values())

    # -- users: writes ------------------------------------------------------------------

    def add_user(self, **props: Any) -> str:
        return self.add_users([props])[0]

    def add_users(self, users: Iterable[Mapping[str, Any]]) -> list[str]:
        """Add users in one go (100,000 take one to two seconds). Returns their ids."""
        created = utc_now()
        cleaned = [clean_properties(u, creating=True) for u in users]
        with self.lock:
            self._check_new(cleaned)
            ids = []
            for props in cleaned:
                uid = str(props.pop("id", None) or uuid.uuid4())
                self._log.append((uid, None))
                self._users[uid] = UserRecord(uid, props, created, len(self._log))
                self._by_upn[props["userPrincipalName"].lower()] = uid
                self._order.append(uid)
                ids.append(uid)
        return ids

    def _check_new(self, users: list[dict[str, Any]]) -> None:
        upns = [u["userPrincipalName"].lower() for u in users]
        ids = [u["id"] for u in users if u.get("id")]
        if len(set(upns)) != len(upns) or not self._by_upn.keys().isdisjoint(upns):
            raise ValueError("userPrincipalName already in use")
        if len(set(ids)) != len(ids) or not self._users.keys().isdisjoint(ids):
            raise ValueError("user id already in use")

    def update_user(self, uid: str, **changes: Any) -> None:
        """Change properties; only those whose value differs count as changed."""
        cleaned = clean_properties(changes, creating=False)
        with self.lock:
            record = self._require(uid, ACTIVE)
            changed = {k: v for k, v in cleaned.items() if record.value(k) != v}
            if not changed:
                return
            new_upn = changed.get("userPrincipalName")
            if new_upn is not None:
                if self._by_upn.get(new_upn.lower(), uid) != uid:
                    raise ValueError("userPrincipalName already in use")
                del self._by_upn[record.upn.lower()]
                self._by_upn[new_upn.lower()] = uid
            self._log.append((uid, frozenset(changed)))
            self._users[uid] = record.updated(changed, len(self._log))

    def soft_delete(self, uid: str) -> None:
        """Move the user to deleted items (restorable; users/delta says ``changed``)."""
        with self.lock:
            record = self._require(uid, ACTIVE)
            self._lifecycle(record, SOFT_DELETED, utc_now())

    def restore(self, uid: str) -> None:
        with self.lock:
            record = self._require(uid, SOFT_DELETED)
            self._lifecycle(record, ACTIVE, None)

    def hard_delete(self, uid: str) -> None:
        """Delete permanently, from the active users or from deleted items."""
        with self.lock:
            record = self._require(uid, ACTIVE, SOFT_DELETED)
            self._lifecycle(record, HARD_DELETED, record.deleted or utc_now())
            del self._by_upn[record.upn.lower()]
            self._photos.pop(uid, None)
            self.groups.forget(uid)

    def _lifecycle(self, record: UserRecord, state: str, deleted: str | None) -> None:
        self._log.append((record.id, None))
        self._users[record.id] = replace(
            record, state=state, deleted=deleted, lifecycle_seq=len(self._log)
        )

    def _require(self, uid: str, *states: str) -> UserRecord:
        record = self._users.get(uid)
        if record is None or record.state not in states:
            where = "deleted items" if states == (SOFT_DELETED,) else "the directory"
            raise KeyError(f"user {uid} not found in {where}")
        return record

    def set_photo(self, uid: str, data: bytes | None) -> None:
        """Set or remove (``None``) a photo. Like Graph, this is not a users/delta change."""
        photo = read_photo(data) if data is not None else None
        with self.lock:
            self._require(uid, ACTIVE)
            if photo is None:
                self._photos.pop(uid, None)
            else:
                self._photos[uid] = photo

    # -- groups and assignments (the state lives in self.groups) ---------------------------

    def add_group(self, display_name: str) -> str:
        return self.groups.add(display_name)

    def add_member(self, gid: str, member_id: str) -> None:
        self.groups.add_member(gid, member_id)

    def remove_member(self, gid: str, member_id: str) -> None:
        self.groups.remove_member(gid, member_id)

    def assign(self, app: App, principal_id: str) -> str:
        return self.groups.assign(app, principal_id)

    def unassign(self, app: App, principal_id: str) -> None:
        self.groups.unassign(app, principal_id)

    # -- users: reads -------------------------------------------------------------------

    def user(self, uid: str) -> dict[str, Any] | None:
        """Every property of an active or soft-deleted user, or ``None``."""
        record = self._users.get(uid)
        if record is None or record.state == HARD_DELETED:
            return None
        return record.view(["createdDateTime", "deletedDateTime", *USER_DEFAULTS])

    def user_ids(self) -> list[str]:
        """Ids of the active users, in creation order."""
        with self.lock:
            return [u for u in self._order if self._users[u].state == ACTIVE]

    def record(self, key: str) -> UserRecord | None:
        """The record for an id or a userPrincipalName (any state)."""
        record = self._users.get(key)
        if record is None and "@" in key:
            record = self._users.get(self._by_upn.get(key.lower(), ""))
        return record

    def photo(self, uid: str) -> Photo | None:
        return self._photos.get(uid)

    @property
    def change_seq(self) -> int:
        """The sequence number of the latest user change."""
        return len(self._log)

    @property
    def creation_order(self) -> list[str]:
        """Ids in creation order. Append-only: callers index it, never modify it."""
        return self._order

    def changed_user_ids(self, since: int, until: int, tracked: frozenset[str]) -> tuple[str, ...]:
        """Ids with a lifecycle change or a change to a ``tracked`` property in
        ``(since, until]``, each once, in order of first change. Cached: paging a round of
        100,000 changes would otherwise rescan the log for every page."""
        key = (since, until, tracked)
        with self.lock:
            ids = self._changes.get(key)
            if ids is None:
                entries = self._log[since:until]
                ids = tuple(
                    dict.fromkeys(
                        uid for uid, what in entries if what is None or not what.isdisjoint(tracked)
                    )
                )
                if len(self._changes) >= _CHANGE_CACHE_SIZE:
                    del self._changes[next(iter(self._changes))]
                self._changes[key] = ids
        return ids
