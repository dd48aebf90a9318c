"""ActionLog: a cycle's actions in order, the first few in memory, the rest on disk."""

from __future__ import annotations

import gc
import os
import tempfile

import pytest

from cardsync.actionlog import ActionLog, Chained
from cardsync.models import Card, Person, Photo
from cardsync.planner import ActionRecord, CreateCard, Hold


def rec(i: int, kind: str = "create_card") -> ActionRecord:
    return ActionRecord(kind, "acme", f"u{i}", f"u{i}@acme.test", f"reason {i}",
                        display_name=f"Zoë <{i}>", changed=("job_title",))


def deleted_temp_files() -> set[str]:
    """Files this process has open in the temp folder that have no name (any more)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
            found.add(f"{fd}:{target}")
    return found


def test_order_len_index_and_equality_across_the_spill():
    log = ActionLog(spill_at=3)
    items = [rec(i, "hold" if i % 4 == 0 else "create_card") for i in range(10)]
    for item in items:
        log.append(item)
    assert len(log) == 10 and bool(log)
    assert list(log) == items and list(log) == items  # read again: the same
    assert log == items and log != items[:-1] and log == ActionLog(items)
    assert log[0] == items[0] and log[5] == items[5] and log[-1] == items[9]
    with pytest.raises(IndexError):
        log[10]
    assert (log.count("hold"), log.count("create_card"), log.count("wait")) == (3, 7, 0)
    assert len(log._head) == 3  # only the first few are held in memory


def test_appending_while_a_reader_is_part_way_keeps_both_right():
    log = ActionLog([rec(i) for i in range(6)], spill_at=2)
    reader = iter(log)
    first = [next(reader) for _ in range(4)]
    log.append(rec(6))
    assert first + list(reader) == [rec(i) for i in range(6)]  # what was there when it began
    assert list(log) == [rec(i) for i in range(7)]


def test_dry_run_actions_with_cards_and_photos_survive_the_disk():
    card = Card("acme", "c1", "u1", Person(display_name="Ada", business_phones=("+1",)),
                photo=Photo(b"\xff\xd8web", b"\xff\xd8thumb", "etag"))
    actions = [CreateCard("acme", "u1", "ada@acme.test", "new user", card, new_member="ada@x"),
               Hold("acme", "u2", "bob@acme.test", "owner")]
    log = ActionLog(actions, spill_at=0)
    assert list(log) == actions
    assert list(log)[0].card.photo.thumb == b"\xff\xd8thumb"


def test_the_spill_file_is_unnamed_and_goes_with_the_log():
    before = deleted_temp_files()
    log = ActionLog([rec(i) for i in range(5)], spill_at=1)
    assert len(deleted_temp_files() - before) == 1  # one file, with no name to leave behind
    small = ActionLog([rec(0)], spill_at=1)
    assert len(deleted_temp_files() - before) == 1  # nothing spilled: no file
    del log, small
    gc.collect()
    assert deleted_temp_files() - before == set()


def test_chained_logs_read_as_one():
    a, b = ActionLog([rec(0), rec(1)], spill_at=1), ActionLog([rec(2)])
    both = Chained([a, b, ActionLog()])
    assert len(both) == 3 and list(both) == [rec(0), rec(1), rec(2)]
    assert not Chained([ActionLog()])
