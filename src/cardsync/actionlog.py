"""The actions a cycle reports, in order, without holding a whole tenant's worth.

A run over a new 100,000-user tenant applies 100,000 actions, and `cardsync run`
reports each one (`--json` lists them all, holds are printed, counts are kept). An
:class:`ActionLog` keeps the first :data:`SPILL_AT` in memory and the rest in an
unnamed temporary file, so what a run holds does not grow with the tenant.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO, Any

SPILL_AT = 2_000  # records kept in memory; the rest go to disk
_LENGTH = 4  # bytes of the length prefix of each spilled record


class ActionLog:
    """An append-only, ordered list of actions (or their records) that spills to disk.

    Iterate it any number of times; it also has ``len``, ``[i]`` and ``==`` with a
    list, and :meth:`count` by kind without reading the spilled part. Spilled items
    are pickled: the file is private to this process and deleted with it.
    """

    def __init__(self, items: Iterable[Any] = (), *, spill_at: int | None = None) -> None:
        self._spill_at = SPILL_AT if spill_at is None else spill_at
        self._head: list[Any] = []
        self._file: IO[bytes] | None = None
        self._spilled = 0
        self._kinds: Counter[str] = Counter()
        for item in items:
            self.append(item)

    def append(self, item: Any) -> None:
        self._kinds[item.kind] += 1
        if len(self._head) < self._spill_at:
            self._head.append(item)
            return
        if self._file is None:
            # Unnamed, closed (and gone) with this log.
            self._file = tempfile.TemporaryFile(prefix="cardsync-actions-")  # noqa: SIM115
        data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        self._file.write(len(data).to_bytes(_LENGTH, "big") + data)
        self._spilled += 1

    def count(self, kind: str) -> int:
        """How many items of this kind (``create_card``, ``hold``, …) were appended."""
        return self._kinds[kind]

    def __len__(self) -> int:
        return len(self._head) + self._spilled

    def __iter__(self) -> Iterator[Any]:
        head, spilled = list(self._head), self._spilled
        yield from head
        if not spilled or self._file is None:
            return
        self._file.flush()
        # Positioned reads: appends after this point do not disturb the reading.
        fd, offset = self._file.fileno(), 0
        for _ in range(spilled):
            size = int.from_bytes(os.pread(fd, _LENGTH, offset), "big")
            yield pickle.loads(os.pread(fd, size, offset + _LENGTH))  # noqa: S301 - our own file
            offset += _LENGTH + size

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("ActionLog index out of range")
        if index < len(self._head):
            return self._head[index]
        for i, item in enumerate(self):
            if i == index:
                return item
        raise IndexError("ActionLog index out of range")  # pragma: no cover - len checked

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ActionLog | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ActionLog({len(self)} items, {self._spilled} on disk)"


class Chained:
    """Several logs read as one, in order (``diff`` over every organization)."""

    def __init__(self, logs: Iterable[ActionLog]) -> None:
        self._logs = list(logs)

    def __len__(self) -> int:
        return sum(len(log) for log in self._logs)

    def __iter__(self) -> Iterator[Any]:
        for log in self._logs:
            yield from log
