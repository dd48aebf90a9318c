"""The floor of an initial sync: its unavoidable work, straight-line, in one process.

    python benchmarks/floor.py EMULATOR_INFO_JSON OUTPUT_FOLDER

Pages through users/delta with a bare httpx client (one token request, then the
pages), parses each page with json.loads (cardsync.graph.parse: plain dataclasses),
and renders and writes every card as it goes, with the same libraries and functions
the local backend uses (jinja2 template, vobject vCard, zxing-cpp QR code): the page,
the vCard and both QR files of each card, then the organization's index and the
organizations page, and one syncfs at the end so that the site is durable, as
cardsync's is. Nothing else: no state, no planner, no ledger, no temp files and
renames, no worker processes. sync_bench.py / scale_bench.py compare `cardsync run`
against it, side by side. Prints one JSON line of figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

started = time.perf_counter()

import httpx  # noqa: E402
from _common import bare_token  # noqa: E402

from cardsync.backends.local import qr, site, vcard  # noqa: E402
from cardsync.backends.local.backend import IndexEntry  # noqa: E402
from cardsync.backends.local.render import TemplateSet  # noqa: E402
from cardsync.backends.local.text import one_line  # noqa: E402
from cardsync.backends.local.view import card_view, org_view  # noqa: E402
from cardsync.graph.parse import parse_delta_page  # noqa: E402
from cardsync.models import DELTA_SELECT, Card, DirectoryUser, OrgProfile  # noqa: E402
from cardsync.planner import card_id_for  # noqa: E402

BASE_URL = "https://cards.example.org"  # as in _common.CONFIG
ORG = OrgProfile("contoso", "Contoso")


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)


def main() -> int:
    info = json.loads(sys.argv[1])
    root = Path(sys.argv[2])
    imported = time.perf_counter()
    templates = TemplateSet(ORG.template, "floor")
    org = org_view(ORG)
    key = os.urandom(32)
    org_dir = root / ORG.slug
    org_dir.mkdir(parents=True)
    index: list[tuple[str, str]] = []
    users = 0
    with httpx.Client(verify=info["ca_path"], timeout=120) as client:
        token = bare_token(client, info)
        headers = {"Authorization": f"Bearer {token}"}
        url: str | None = f"{info['graph_url']}/users/delta?$select={','.join(DELTA_SELECT)}"
        while url:
            page = parse_delta_page(client.get(url, headers=headers).content)
            for entry in page.entries:
                if not isinstance(entry, DirectoryUser):
                    continue
                card_id = card_id_for(key, entry.id)
                card = Card(ORG.slug, card_id, entry.id, entry.person)
                folder = org_dir / card_id
                folder.mkdir()
                view = card_view(card, org, f"{BASE_URL}/{ORG.slug}/{card_id}/")
                write(folder / site.VCARD, vcard.build(card, view.url, view.company))
                svg, png = qr.make(view.url)
                write(folder / site.QR_PNG, png)
                write(folder / site.QR_SVG, svg)
                write(folder / site.PAGE, templates.render_card(card=view, org=org))
                index.append((card_id, entry.person.name))
                users += 1
            url = page.next_link
    index.sort(key=lambda item: (item[1].casefold(), item[0]))
    entries = [IndexEntry(f"{cid}/", one_line(name)) for cid, name in index]
    write(org_dir / site.PAGE, templates.render_index(title=org.name, org=org, entries=entries))
    root_entries = [IndexEntry(f"{ORG.slug}/", org.name)]
    write(root / site.PAGE,
          templates.render_index(title="Business cards", org=None, entries=root_entries))
    written = time.perf_counter()
    site.sync(root)
    done = time.perf_counter()
    print(json.dumps({
        "users": users,
        "imports": imported - started,
        "render_and_write": written - imported,
        "sync": done - written,
        "total": done - started,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
