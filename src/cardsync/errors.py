"""One error hierarchy for cardsync.

Every error a user can cause or fix is a :class:`CardsyncError`. It carries a
one-line ``message`` (what went wrong) and an optional ``hint`` (what to do).
The CLI turns these into output and exit codes in one place; anything else
that escapes is a bug and is reported as such.

    CardsyncError
    ├── ConfigError          bad or missing configuration (collects problems)
    ├── StateError           the state database is unusable
    │   └── LockedError      another run holds the lock
    ├── GraphError           Microsoft Graph / Entra ID failures
    │   ├── AuthError            wrong secret, unknown tenant, unknown client
    │   ├── ConsentError         permission (e.g. User.Read.All) not granted
    │   ├── UnreachableError     the host could not be reached
    │   ├── ThrottledError       throttling outlasted the retry budget
    │   └── DeltaExpiredError    the stored deltaLink is no longer valid (internal)
    ├── BackendError         a backend could not publish or remove a card
    ├── SafetyLimitError     a safety limit refused destructive changes (exit 3)
    └── UsageError           bad command-line arguments

Messages never contain secrets: code that builds them must not interpolate
credentials, and :func:`redact` is applied to text that comes from outside.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_REFUSED = 3
EXIT_PARTIAL = 4


class CardsyncError(Exception):
    """Base class. ``message`` says what went wrong, ``hint`` how to fix it."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(CardsyncError):
    """Configuration problems; ``problems`` lists each one with its key path."""

    def __init__(
        self, problems: list[str], path: str | None = None, hint: str | None = None
    ) -> None:
        where = f" in {path}" if path else ""
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(
            f"{count} configuration {noun}{where}",
            hint or "fix the keys listed above; config.example.toml documents every key",
        )
        self.problems = list(problems)
        self.path = path


class StateError(CardsyncError):
    pass


class LockedError(StateError):
    pass


class GraphError(CardsyncError):
    pass


class AuthError(GraphError):
    pass


class ConsentError(GraphError):
    pass


class UnreachableError(GraphError):
    pass


class ThrottledError(GraphError):
    pass


class DeltaExpiredError(GraphError):
    """The stored deltaLink was rejected; the caller runs a full sync instead."""


class BackendError(CardsyncError):
    pass


class SafetyLimitError(CardsyncError):
    exit_code = EXIT_REFUSED


class UsageError(CardsyncError):
    pass


_SECRET_PATTERNS = [
    re.compile(r"(client_secret=)[^&\s]+", re.I),
    re.compile(r"(client_assertion=)[^&\s]+", re.I),
    re.compile(r"(Bearer\s+)[A-Za-z0-9\-._~+/]+=*", re.I),
    re.compile(r"(\"access_token\"\s*:\s*\")[^\"]+", re.I),
]


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove credentials from text that may be shown to a user or logged."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text
