"""Shared helpers for the benchmarks: an emulator process, a cardsync process with its
peak memory, and the emulator's request counts. Benchmarks print figures; they assert
nothing about time (machines are noisy: compare ratios taken in one run)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CONFIG = """\
[state]
path = "state.db"

[backend]
type = "local"
output = "site"
base_url = "https://cards.example.org"

[[organizations]]
slug = "contoso"
name = "Contoso"

[organizations.entra]
tenant_id = "{tenant_id}"
client_id = "{client_id}"
client_secret = "${{BENCH_SECRET}}"
authority_host = "{url}"
graph_url = "{graph_url}"
"""


@dataclass
class Emulator:
    proc: subprocess.Popen[str]
    info: dict[str, Any]
    client: httpx.Client

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, f"{self.info['url']}/_emulator{path}", **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def requests(self) -> list[dict[str, Any]]:
        return self.control("GET", "/requests")

    def request_kinds(self) -> Counter[str]:
        """The emulator's request log so far, counted by kind."""
        return request_kinds(self.requests())

    def clear_requests(self) -> None:
        self.control("DELETE", "/requests")

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def request_kinds(requests: list[dict[str, Any]]) -> Counter[str]:
    """Entries of the emulator's request log (``GET /_emulator/requests``) by kind."""
    kinds: Counter[str] = Counter()
    for r in requests:
        path = r["path"]
        if "/oauth2/" in path:
            kinds["token"] += 1
        elif path.endswith("openid-configuration"):
            kinds["openid"] += 1
        elif "/users/delta" in path:
            kinds["users/delta"] += 1
        elif path.endswith("/$batch"):
            kinds["$batch"] += 1
        else:
            kinds["other"] += 1
    return kinds


def start_emulator(
    users: int, workdir: Path, page_size: int = 200, gzip: bool = False
) -> Emulator:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cardsync.emulator", "--users", str(users), "--dir",
         str(workdir), "--page-size", str(page_size), *(["--gzip"] if gzip else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return Emulator(proc, info, httpx.Client(verify=info["ca_path"], timeout=120))


def bare_token(client: httpx.Client, info: dict[str, Any]) -> str:
    """A Graph token from the emulator with a plain client-credentials POST."""
    response = client.post(
        f"{info['url']}/{info['tenant_id']}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": info["client_id"],
              "client_secret": info["client_secret"],
              "scope": "https://graph.microsoft.com/.default"},
    )
    return str(response.json()["access_token"])


def write_config(workdir: Path, emu: Emulator) -> Path:
    path = workdir / "cardsync.toml"
    path.write_text(CONFIG.format(**emu.info))
    return path


@contextlib.contextmanager
def graph_source(users: int, workdir: Path) -> Iterator[tuple[Emulator, Any]]:
    """An emulator with ``users`` users and a cardsync GraphSource in this process that
    reads it (this process's environment then trusts the emulator's CA)."""
    emu = start_emulator(users, workdir / "emu")
    try:
        os.environ.update(env_for(emu))
        from cardsync.config import load
        from cardsync.graph.source import GraphSource

        source = GraphSource(load(write_config(workdir, emu)).organizations[0].entra)
        try:
            yield emu, source
        finally:
            source.close()
    finally:
        emu.stop()


def env_for(emu: Emulator) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SSL_CERT_FILE=emu.info["ca_path"],
        REQUESTS_CA_BUNDLE=emu.info["ca_path"],
        BENCH_SECRET=emu.info["client_secret"],
    )
    return env


@dataclass
class ProcessRun:
    seconds: float
    peak_rss_mb: float  # the process's own peak (os.wait4)
    returncode: int
    stdout: str
    stderr: str
    tree_rss_mb: float = 0.0  # peak of the RSS summed over the process and its children
    processes: int = 1  # most processes seen at once in its tree


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc (Linux)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as f:
                todo.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the RSS summed over a process tree every ``interval`` seconds and keeps
    the peak (shared pages count once per process: an upper bound)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.processes = 1
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = _tree(self.pid)
            self.processes = max(self.processes, len(pids))
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in pids))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_measured(args: list[str], env: dict[str, str], cwd: Path | None = None) -> ProcessRun:
    """Run a process to completion: its wall time, its own peak RSS (os.wait4) and the
    peak RSS summed over it and its children (sampled from /proc)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    sampler = TreeSampler(proc.pid)
    sampler.start()
    # Output is small (plain summary lines), so the pipes cannot fill before exit.
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()
    own = usage.ru_maxrss / 1024
    return ProcessRun(seconds, own, proc.returncode, out, err,
                      max(own, sampler.peak_kb / 1024), sampler.processes)


def cardsync(config: Path, *args: str, env: dict[str, str]) -> ProcessRun:
    return run_measured([sys.executable, "-m", "cardsync", "-c", str(config), *args], env)


def _spin(_: object = None) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


def parallel_capacity() -> str:
    """How much of a second core this machine gives right now: a pure-Python loop run
    alone, then in two processes at once (~2 s). On a shared virtual machine the second
    core is sometimes worth much less than the first, and everything that runs on both
    cores at once (the ingest, rendering) slows down with it: read the ratios with it."""
    alone = min(_spin() for _ in range(2))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        both = max(pool.map(_spin, [0, 1]))
    return (f"a loop alone {alone:.2f} s, two at once {both:.2f} s: the second core gives "
            f"{min(1.0, alone / both):.0%} of the first")
