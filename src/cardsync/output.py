"""Rendering for the CLI: rich tables and progress on a terminal, plain lines for
cron and logs, JSON for scripts. Nothing here decides anything."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from .planner import Action, ActionRecord
from .sync import OrgOutcome, Reporter, describe


def is_terminal() -> bool:
    return sys.stdout.isatty()


class JsonArray:
    """A JSON array that :func:`print_json` writes item by item as ``items`` yields
    them: a run's list of every action is never built whole."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


def print_json(data: Any, stream: Any = None) -> None:
    """``data`` as ``json.dumps(data, indent=2, ensure_ascii=False)`` would write it,
    piece by piece; :class:`JsonArray` values are streamed."""
    stream = stream or sys.stdout
    _write_json(stream, data, "")
    stream.write("\n")


def _write_json(stream: Any, value: Any, pad: str) -> None:
    if isinstance(value, dict):
        items: Iterable[tuple[str | None, Any]] = value.items()
        opening, closing = "{", "}"
    elif isinstance(value, list | tuple | JsonArray):
        items = ((None, v) for v in (value.items if isinstance(value, JsonArray) else value))
        opening, closing = "[", "]"
    else:
        stream.write(json.dumps(value, ensure_ascii=False))
        return
    inner = pad + "  "
    empty = True
    for key, item in items:
        stream.write(f"{opening}\n{inner}" if empty else f",\n{inner}")
        empty = False
        if key is not None:
            name = key if isinstance(key, str) else json.dumps(key)  # as json.dumps does
            stream.write(json.dumps(name, ensure_ascii=False) + ": ")
        _write_json(stream, item, inner)
    stream.write(opening + closing if empty else f"\n{pad}{closing}")


class PlainReporter(Reporter):
    """One line per noteworthy event; suitable for cron mail and log files."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self._pages = 0

    def _line(self, org: str, text: str) -> None:
        self.stream.write(f"[{org}] {text}\n")
        self.stream.flush()

    def event(self, org: str, message: str) -> None:
        self._line(org, message)

    def pulled(self, org: str, users: int, removals: int) -> None:
        self._pages += 1
        if self._pages % 50 == 0:
            self._line(org, f"pulled {users} users, {removals} removals so far")

    def applying(self, org: str, total: int) -> None:
        if total:
            self._line(org, f"applying {total} actions")


class RichReporter(Reporter):
    """A live progress bar while pulling and applying."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=self.console,
            transient=True,
        )
        self._pull: dict[str, Any] = {}
        self._apply: dict[str, Any] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def event(self, org: str, message: str) -> None:
        self.console.print(f"[cyan]{org}[/]: {message}", markup=True, highlight=False)

    def pulled(self, org: str, users: int, removals: int) -> None:
        if org not in self._pull:
            self._pull[org] = self.progress.add_task(f"{org}: pulling", total=None)
        self.progress.update(self._pull[org], completed=users + removals)

    def applying(self, org: str, total: int) -> None:
        if org in self._pull:
            self.progress.remove_task(self._pull.pop(org))
        if total:
            self._apply[org] = self.progress.add_task(f"{org}: applying", total=total)

    def applied(self, org: str, action: Action) -> None:
        if org in self._apply:
            self.progress.advance(self._apply[org])


def outcome_summary(outcome: OrgOutcome) -> str:
    counts = outcome.counts()
    parts = [f"{outcome.result} ({outcome.mode})", f"pulled {counts['pulled']} users"]
    if counts.get("removals"):
        parts.append(f"{counts['removals']} removals")
    for kind in ("create_card", "update_card", "move_card", "reactivate_card",
                 "deactivate_card", "delete_card", "delete_user", "hold", "wait", "refused"):
        if counts.get(kind):
            parts.append(f"{kind} {counts[kind]}")
    if counts.get("failed"):
        parts.append(f"failed {counts['failed']}")
    return ", ".join(parts)


def render_outcomes(outcomes: Sequence[OrgOutcome], stream: Any = None) -> None:
    stream = stream or sys.stdout
    for outcome in outcomes:
        stream.write(f"[{outcome.org}] {outcome_summary(outcome)}\n")
        if outcome.error is not None:
            stream.write(f"[{outcome.org}] error: {outcome.error.message}\n")
            if outcome.error.hint:
                stream.write(f"[{outcome.org}] hint: {outcome.error.hint}\n")
        for note in outcome.notes:
            stream.write(f"[{outcome.org}] {note}\n")
        if outcome.actions.count("hold"):
            for action in outcome.actions:
                if action.kind == "hold":
                    stream.write(f"[{outcome.org}] held back: {action.reason}\n")
        if outcome.report is not None:
            for action, message in outcome.report.failures:
                stream.write(
                    f"[{outcome.org}] failed {action.kind} {action.user_principal_name}: "
                    f"{message} (retried next run)\n"
                )


def render_plan(actions: Collection[Action | ActionRecord]) -> None:
    if not actions:
        sys.stdout.write("No changes.\n")
        return
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{len(actions)} planned changes")
        for col in ("org", "action", "user", "reason"):
            table.add_column(col)
        for a in actions:
            table.add_row(a.org, a.kind, a.user_principal_name or a.user_id, a.reason)
        Console().print(table)
        return
    for a in actions:
        d = describe(a)
        sys.stdout.write(
            f"{d['org']}\t{d['action']}\t{d['user_principal_name'] or d['user_id']}\t"
            f"{d['reason']}\n"
        )


def render_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*["" if v is None else str(v) for v in row])
        Console().print(table)
        return
    for row in rows:
        sys.stdout.write("\t".join("" if v is None else str(v) for v in row) + "\n")
