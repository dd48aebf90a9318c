"""The command line. It parses arguments, calls :mod:`cardsync.service` and renders
the result; errors become messages and exit codes in :func:`main`, one place.

Exit codes: 0 success; 1 error; 2 ``diff --exit-code`` found changes; 3 refused by a
safety limit; 4 finished, but some actions failed or wait (retried next run).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import __version__
from .errors import EXIT_CHANGES, CardsyncError, ConfigError

app = typer.Typer(
    help="Digital business cards for every employee, kept in step with Microsoft Entra ID.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    add_completion=False,
)
cards_app = typer.Typer(help="Inspect and manage the published cards.", no_args_is_help=True)
app.add_typer(cards_app, name="cards")
users_app = typer.Typer(help="The organizations' users: invite, remove, list.",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")
org_app = typer.Typer(help="Organization administration.", no_args_is_help=True)
app.add_typer(org_app, name="org")


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    def config(self) -> Any:
        from .config import load

        return load(self.config_path)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cardsync {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="Config file (default: $CARDSYNC_CONFIG, else ./cardsync.toml)."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log detail (-vv: debug).")
    ] = 0,
) -> None:
    _setup_logging(verbose)
    ctx.obj = Context(config)


def _setup_logging(verbose: int) -> None:
    """Warnings (and errors) from cardsync's loggers go to stderr; -v adds progress
    detail, -vv debug. The SDK's HTTP loggers stay quiet: they log every request."""
    import logging

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "httpx", "httpcore", "msal", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


OrgOption = Annotated[
    list[str] | None, typer.Option("--org", help="Only this organization (repeatable).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


@app.command()
def run(
    ctx: typer.Context,
    org: OrgOption = None,
    daemon: Annotated[
        bool, typer.Option("--daemon", help="Keep running; sync every [schedule] interval.")
    ] = False,
    allow_deletes: Annotated[
        bool,
        typer.Option(
            "--allow-deletes",
            help="Apply deletions a safety limit held back (check `cardsync diff` first).",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Pull changes from Entra ID and apply them to the cards."""
    from . import output, service

    config = ctx.obj.config()
    if daemon:
        from .daemon import run_daemon

        run_daemon(config, orgs=org)
        return
    if output.is_terminal() and not json_out:
        with output.RichReporter() as reporter:
            outcomes = service.run(
                config, orgs=org, reporter=reporter, allow_deletes=allow_deletes
            )
    else:
        outcomes = service.run(
            config, orgs=org, reporter=output.PlainReporter(), allow_deletes=allow_deletes
        )
    from .sync import describe, exit_code

    if json_out:
        output.print_json(
            [
                {
                    "org": o.org,
                    "result": o.result,
                    "mode": o.mode,
                    "counts": o.counts(),
                    "error": o.error.message if o.error else None,
                    "notes": o.notes,
                    "actions": output.JsonArray(describe(a) for a in o.actions),
                }
                for o in outcomes
            ]
        )
    else:
        output.render_outcomes(outcomes)
    raise typer.Exit(exit_code(outcomes))


@app.command()
def diff(
    ctx: typer.Context,
    org: OrgOption = None,
    json_out: JsonOption = False,
    exit_code_flag: Annotated[
        bool, typer.Option("--exit-code", help="Exit 2 when there are changes.")
    ] = False,
) -> None:
    """Show what the next run would change, without changing anything."""
    from . import output, service
    from .actionlog import Chained
    from .sync import describe, exit_code

    config = ctx.obj.config()
    reporter = output.PlainReporter() if not output.is_terminal() else None
    outcomes = service.run(config, dry_run=True, orgs=org, reporter=reporter)
    actions = Chained(o.actions for o in outcomes)  # (read from disk past a few thousand)
    if json_out:
        output.print_json(output.JsonArray(describe(a) for a in actions))
    else:
        output.render_plan(actions)
    for o in outcomes:
        if o.error is not None:
            output.render_outcomes([o], stream=sys.stderr)
    code = exit_code(outcomes)
    if code == 0 and exit_code_flag and actions:
        code = EXIT_CHANGES
    raise typer.Exit(code)


@app.command()
def status(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Last sync time and result, users and cards, per organization."""
    from . import output, service

    data = service.status(ctx.obj.config())
    if json_out:
        output.print_json(data)
        return
    rows = [
        (o["slug"], o["last_sync"] or "never", o["last_result"] or "-", o["users"], o["cards"],
         f"{o['seats_used']}/{o['seats'] if o['seats'] is not None else '∞'}")
        for o in data["organizations"]
    ]
    output.render_table(
        "cardsync status", ("org", "last sync", "result", "users", "cards", "seats"), rows
    )
    for o in data["organizations"]:
        if o["last_error"]:
            typer.echo(f"[{o['slug']}] last error: {o['last_error']}", err=True)
        if o["quarantine"]:
            typer.echo(
                f"[{o['slug']}] deletions held back: {o['quarantine']}; check `cardsync diff`, "
                "then `cardsync run --allow-deletes`",
                err=True,
            )
        for hold in o["holds"]:
            typer.echo(f"[{o['slug']}] held back: {hold['reason']}", err=True)


@cards_app.command("list")
def cards_list(ctx: typer.Context, org: OrgOption = None, json_out: JsonOption = False) -> None:
    """List the published cards."""
    from . import output, service

    config = ctx.obj.config()
    cards = [c for slug in (org or [None]) for c in service.list_cards(config, slug)]
    if json_out:
        output.print_json(cards)
        return
    rows = [(c["org"], c["display_name"], c["user_principal_name"], c["url"]) for c in cards]
    output.render_table(f"{len(cards)} cards", ("org", "name", "user", "url"), rows)


OrgRequired = Annotated[str, typer.Option("--org", help="The organization's slug.")]
EmailArg = Annotated[str, typer.Argument(help="The user's mail address.")]


def _report(data: dict[str, Any], json_out: bool, text: str) -> None:
    from . import output

    if json_out:
        output.print_json(data)
    else:
        typer.echo(text)


@cards_app.command("delete")
def cards_delete(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Mail, UPN, object id or card id.")],
    org: OrgRequired,
    json_out: JsonOption = False,
) -> None:
    """Delete an invited user's card by hand (cards Entra ID manages are refused)."""
    from . import admin

    data = admin.delete_card(ctx.obj.config(), org, user)
    _report(data, json_out, f"deleted the card of {data['email']} in {org}; {data['note']}")


@users_app.command("invite")
def users_invite(
    ctx: typer.Context,
    email: EmailArg,
    org: OrgRequired,
    json_out: JsonOption = False,
) -> None:
    """Invite a user by hand: takes a seat now; the card comes once Entra ID knows them."""
    from . import admin

    data = admin.invite(ctx.obj.config(), org, email)
    _report(data, json_out, f"invited {data['email']} to {org}; {data['note']}")


@users_app.command("remove")
def users_remove(
    ctx: typer.Context,
    email: EmailArg,
    org: OrgRequired,
    json_out: JsonOption = False,
) -> None:
    """Remove an invited user and their card (Entra-managed users are refused)."""
    from . import admin

    data = admin.remove_user(ctx.obj.config(), org, email)
    _report(data, json_out, f"removed {data['email']} from {org}")


@users_app.command("list")
def users_list(ctx: typer.Context, org: OrgOption = None, json_out: JsonOption = False) -> None:
    """List the organizations' users with origin, role and card."""
    from . import admin, output

    config = ctx.obj.config()
    users = [u for slug in (org or [None]) for u in admin.list_users(config, slug)]
    if json_out:
        output.print_json(users)
        return
    rows = [(u["org"], u["email"], u["origin"], u["role"] or "", u["card"] or "")
            for u in users]
    output.render_table(f"{len(users)} users", ("org", "email", "origin", "role", "card"), rows)


@org_app.command("transfer-ownership")
def org_transfer(
    ctx: typer.Context,
    org: OrgRequired,
    to: Annotated[str, typer.Option("--to", help="Mail of the new owner (an existing user).")],
    json_out: JsonOption = False,
) -> None:
    """Make another user the organization's owner; the previous owner becomes an admin."""
    from . import admin

    data = admin.transfer_ownership(ctx.obj.config(), org, to)
    _report(data, json_out, f"{data['owner']} now owns {org}")


@app.command()
def provision(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Object id, userPrincipalName or mail.")],
    org: OrgRequired,
    json_out: JsonOption = False,
) -> None:
    """Provision one user on demand: read them from Entra ID now and apply every rule."""
    from . import output, service
    from .sync import describe, exit_code

    outcome = service.provision(ctx.obj.config(), org, user)
    if json_out:
        output.print_json({"org": outcome.org, "result": outcome.result,
                           "actions": [describe(a) for a in outcome.actions],
                           "notes": outcome.notes})
    else:
        if not outcome.actions:
            typer.echo(f"[{org}] {user}: already up to date, nothing to do")
        for a in outcome.actions:
            typer.echo(f"[{a.org}] {a.kind} {a.user_principal_name}: {a.reason}")
        output.render_outcomes([outcome])
    raise typer.Exit(exit_code([outcome]))


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the demo's config, state and card site.")
    ] = Path("cardsync-demo"),
    users: Annotated[int, typer.Option("--users", min=1, max=100_000)] = 24,
) -> None:
    """Run the whole product offline against the built-in Graph emulator."""
    from .demo import run_demo

    raise typer.Exit(run_demo(out, users=users))


def _print_error(exc: CardsyncError) -> None:
    err = sys.stderr
    err.write(f"error: {exc.message}\n")
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            err.write(f"  - {problem}\n")
    if exc.hint:
        err.write(f"hint: {exc.hint}\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map cardsync errors to messages and exit codes."""
    try:
        app(args=argv, prog_name="cardsync", standalone_mode=True)
    except CardsyncError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # typer's answer to a KeyboardInterrupt inside a command
            sys.stderr.write("interrupted\n")
        raise
