"""Sync a synthetic tenant with profile photos through the Graph emulator; print the figures.

    python benchmarks/photos_bench.py --users 10000
    python benchmarks/photos_bench.py --users 2000 --with-photo 0.7 --changes 100

Three processes, as in sync_bench.py: this driver, the emulator and `cardsync run`.
Photos are small varied JPEGs (Pillow), uploaded through the emulator's control API
(PUT /_emulator/users/{id}/photo) to a share of the users. Measured:

- initial `cardsync run` with `[organizations.photos] enabled = true`: wall time, peak
  RSS, Graph requests (the emulator's log: token, users/delta, $batch) and the photo
  requests inside the batches (cardsync's own photos summary line: Graph counts every
  batch item as a request);
- a run with nothing changed;
- an incremental run after --changes users changed a profile field, some of them also
  their photo, and --photo-changes other users changed or removed only their photo
  (invisible to users/delta: found by the rolling refresh, a slice per cycle).
"""

from __future__ import annotations

import argparse
import io
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import (
    Emulator,
    ProcessRun,
    cardsync,
    env_for,
    run_measured,
    start_emulator,
    write_config,
)

PHOTOS = "\n[organizations.photos]\nenabled = true\n"
# `cardsync run` with another app-wide photo rate limit, to measure what the guard costs.
_WITH_LIMIT = (
    "import sys, cardsync.graph.photos as photos; photos.APP_WIDE_GUARD = True; "
    "photos.RATE_LIMIT = int(sys.argv[1]); "
    "from cardsync.cli import main; main(sys.argv[2:])"
)
_SUMMARY = re.compile(r"\[contoso\] (photos: .*)")


def jpeg(rng: random.Random) -> bytes:
    """A small portrait-like JPEG: a coloured background, a face and shoulders."""
    from PIL import Image, ImageDraw

    side = rng.choice((240, 320, 360, 432))
    image = Image.new("RGB", (side, side), tuple(rng.randrange(40, 220) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    skin = tuple(rng.randrange(120, 255) for _ in range(3))
    draw.ellipse((side * 0.3, side * 0.15, side * 0.7, side * 0.6), fill=skin)
    cloth = tuple(rng.randrange(0, 200) for _ in range(3))
    draw.ellipse((side * 0.1, side * 0.62, side * 0.9, side * 1.3), fill=cloth)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def upload(emu: Emulator, ids: list[str], rng: random.Random) -> int:
    total = 0
    for uid in ids:
        data = jpeg(rng)
        total += len(data)
        emu.control("PUT", f"/users/{uid}/photo", content=data)
    return total


def graph_requests(emu: Emulator) -> Counter[str]:
    return emu.request_kinds()


def summary(run: ProcessRun) -> str:
    found = _SUMMARY.findall(run.stderr)
    return found[-1] if found else "(no photos summary)"


def row(label: str, run: ProcessRun, kinds: Counter[str]) -> None:
    req = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "-"
    print(f"{label:<34} {run.seconds:8.2f} s  {run.peak_rss_mb:6.0f} MB   {req}")
    print(f"{'':<34} {summary(run)}")


def measured(
    emu: Emulator, config: Path, env: dict[str, str], label: str, rate_limit: int | None
) -> ProcessRun:
    emu.clear_requests()
    if rate_limit is None:
        run = cardsync(config, "run", env=env)
    else:
        args = ["-c", _WITH_LIMIT, str(rate_limit), "-c", str(config), "run"]
        run = run_measured([sys.executable, *args], env)
    assert run.returncode == 0, run.stderr[-2000:]
    row(label, run, graph_requests(emu))
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--with-photo", type=float, default=0.7, help="share of users")
    parser.add_argument("--changes", type=int, default=100, help="users with a profile change")
    parser.add_argument("--photo-changes", type=int, default=50, help="photo-only changes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="apply an app-wide window of this many photo requests per 10 minutes (off by "
        "default: Graph counts its limit per mailbox)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="cardsync-photos-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        emu = start_emulator(args.users, work)
        try:
            ids = emu.control("GET", "/users")
            with_photo = rng.sample(ids, int(len(ids) * args.with_photo))
            size = upload(emu, with_photo, rng)
            print(
                f"emulator: {len(ids)} users, {len(with_photo)} photos "
                f"({size / len(with_photo) / 1024:.1f} KiB average), "
                f"ready in {time.perf_counter() - t0:.1f} s"
            )
            config = write_config(work, emu)
            config.write_text(config.read_text() + PHOTOS)
            env = env_for(emu)
            print(f"{'phase':<34} {'wall':>10}  {'peak RSS':>8}   requests (emulator log)")

            limit = args.rate_limit
            measured(emu, config, env, "cardsync run (initial)", limit)
            measured(emu, config, env, "cardsync run (nothing changed)", limit)

            # Profile changes (users/delta returns them), some with a new photo too,
            # and photo-only changes that users/delta never shows.
            changed = rng.sample(ids, args.changes)
            for i, uid in enumerate(changed):
                emu.control("PATCH", f"/users/{uid}", json={"jobTitle": f"Benchmark {i}"})
            upload(emu, changed[: args.changes // 5], rng)
            others = [uid for uid in with_photo if uid not in set(changed)]
            photo_only = rng.sample(others, args.photo_changes)
            removed = photo_only[: args.photo_changes // 5]
            upload(emu, photo_only[len(removed) :], rng)
            for uid in removed:
                emu.control("DELETE", f"/users/{uid}/photo")
            label = f"cardsync run ({args.changes} changed)"
            incremental = measured(emu, config, env, label, limit)
            print(
                f"{'':<34} ({args.changes // 5} of the changed users also changed their photo; "
                f"{len(photo_only)} others changed or removed only their photo)"
            )
            print(incremental.stdout.strip())
        finally:
            emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
