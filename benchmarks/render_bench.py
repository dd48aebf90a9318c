"""What one card costs the local backend, part by part, in one process.

    python benchmarks/render_bench.py --cards 2000

Renders the emulator's sample users (the same ones the sync benchmarks use) and times
each step of LocalBackend.publish separately: the page's view, the jinja2 page, the
vobject vCard, the zxing-cpp QR code (SVG and PNG), then whole publishes into a new
folder (files written atomically, one syncfs at the end). No Graph, no state.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from cardsync.backends.local import LocalBackend, qr, vcard
from cardsync.backends.local.view import card_view
from cardsync.emulator.sample import sample_users
from cardsync.graph.parse import parse_user
from cardsync.models import Card, OrgProfile
from cardsync.planner import card_id_for


def per_card(label: str, items: list[Any], step: Callable[[Any], object]) -> float:
    started = time.process_time()
    for item in items:
        step(item)
    cost = (time.process_time() - started) / len(items) * 1e6
    print(f"  {label:<40} {cost:8.0f} µs CPU a card")
    return cost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=2000)
    args = parser.parse_args()
    users = [parse_user({**u, "id": f"00000000-0000-4000-8000-{i:012d}"})
             for i, u in enumerate(sample_users(args.cards))]
    with tempfile.TemporaryDirectory(prefix="cardsync-render-") as tmp:
        backend = LocalBackend({"output": tmp, "base_url": "https://cards.example.org"},
                               [OrgProfile("contoso", "Contoso")])
        org = backend._org("contoso")
        cards = [Card("contoso", card_id_for(b"k" * 32, u.id), u.id, u.person) for u in users]
        views = {c.card_id: card_view(c, org.view, backend.url(c.org, c.card_id))
                 for c in cards}
        print(f"{args.cards} sample cards")
        parts = [
            per_card("view (cleaned text, links)",
                     cards, lambda c: card_view(c, org.view, views[c.card_id].url)),
            per_card("page (jinja2)",
                     cards, lambda c: org.templates.render_card(card=views[c.card_id],
                                                                org=org.view)),
            per_card("vCard (vobject)",
                     cards, lambda c: vcard.build(c, views[c.card_id].url, "Contoso")),
            per_card("QR code, SVG and PNG (zxing-cpp)",
                     cards, lambda c: qr.make(views[c.card_id].url)),
        ]
        print(f"  {'sum of the parts':<40} {sum(parts):8.0f} µs CPU a card")
        started, cpu = time.perf_counter(), time.process_time()
        for card in cards:
            backend.publish(card)
        backend.flush()
        wall = (time.perf_counter() - started) / len(cards) * 1e6
        cpu_cost = (time.process_time() - cpu) / len(cards) * 1e6
        print(f"  {'publish into a new folder, then flush':<40} {cpu_cost:8.0f} µs CPU a card, "
              f"{wall:.0f} µs wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
