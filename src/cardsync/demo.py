"""``cardsync demo``: the whole product, offline, in one command.

Starts the built-in Graph emulator with a sample company, writes a config that
points the real msgraph-sdk and azure-identity clients at it, syncs, changes the
emulated directory (a promotion, a new hire, a leaver, a soft delete), syncs again
to show the incremental path, and tells the newcomer where to look.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .output import PlainReporter, outcome_summary

CONFIG_TEMPLATE = """\
# Written by `cardsync demo`: points cardsync at the built-in Graph emulator.
# The emulator stops when the demo ends; `status` and `cards list` still work.
[state]
path = "state.db"

[backend]
type = "local"
output = "site"
base_url = "http://127.0.0.1:8000"

[[organizations]]
slug = "contoso"
name = "Contoso (demo)"

[organizations.entra]
tenant_id = "{tenant_id}"
client_id = "{client_id}"
client_secret = "{client_secret}"   # a throwaway emulator secret
authority_host = "{authority}"
graph_url = "{graph_url}"
"""


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_demo(out: Path, users: int = 24) -> int:
    from . import service
    from .config import load
    from .emulator import GraphEmulator
    from .emulator.sample import sample_users
    from .sync import describe, exit_code

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    emu = GraphEmulator(page_size=10)
    tenant = emu.add_tenant(name="Contoso")
    app = tenant.add_app(roles=("User.Read.All",))
    ids = tenant.add_users(sample_users(users, seed=7, domain="contoso.com"))
    with emu.serve() as server:
        # Trust the emulator's throwaway CA, for httpx (kiota) and requests (MSAL).
        os.environ["SSL_CERT_FILE"] = str(server.ca_path)
        os.environ["REQUESTS_CA_BUNDLE"] = str(server.ca_path)
        config_path = out / "cardsync.toml"
        config_path.write_text(
            CONFIG_TEMPLATE.format(
                tenant_id=tenant.id,
                client_id=app.client_id,
                client_secret=app.secret,
                authority=server.url,
                graph_url=server.graph_url,
            )
        )
        config = load(config_path)
        reporter = PlainReporter(sys.stdout)
        _say(f"Graph emulator running at {server.url} with {users} users.")
        _say("1) Initial sync through the real msgraph-sdk and azure-identity clients:")
        first = service.run(config, reporter=reporter)
        for o in first:
            _say(f"   {outcome_summary(o)}")

        _say("2) Changes in the directory: a promotion, a new hire, a leaver (permanently")
        _say("   deleted: user and card go), and a soft delete (restorable for 30 days in")
        _say("   Entra ID: the card stays, as the product's rules say).")
        tenant.update_user(ids[0], jobTitle="Chief Technology Officer")
        tenant.add_user(
            displayName="Nova Newhire",
            givenName="Nova",
            surname="Newhire",
            userPrincipalName="nova.newhire@contoso.com",
            mail="nova.newhire@contoso.com",
            jobTitle="Designer",
            department="Product",
            accountEnabled=True,
        )
        tenant.hard_delete(ids[1])
        tenant.soft_delete(ids[2])
        _say("3) Incremental sync (only the changes travel):")
        second = service.run(config, reporter=reporter)
        for o in second:
            _say(f"   {outcome_summary(o)}")
            for action in o.actions:
                d = describe(action)
                _say(f"   - {d['action']:<16} {d['user_principal_name']:<36} {d['reason']}")
    site = out / "site"
    _say()
    _say(f"Card site:  {site / 'index.html'}")
    _say(f"Serve it:   python -m http.server --directory {site} 8000")
    _say(f"Inspect:    cardsync -c {config_path} status")
    _say(f"            cardsync -c {config_path} cards list")
    _say(f"            cardsync -c {config_path} users list")
    return exit_code(first + second)
