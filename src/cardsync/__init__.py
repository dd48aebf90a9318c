"""cardsync: digital business cards for every employee, kept in step with Microsoft Entra ID.

The package is a small library with a thin CLI on top:

    config     load and validate cardsync.toml
    graph      pull users/delta from Microsoft Graph (the only async code)
    state      the SQLite mirror, card ledger, runs log and lock
    planner    pure: mirror + ledger -> ordered actions
    apply      run actions through a backend, record each success
    sync       one sync cycle per organization: wires the parts together
    backends   the pluggable card publishers (local site, memory, ...)
    emulator   a Microsoft Graph + Entra token emulator for tests and the demo
"""

__version__ = "0.1.0"
