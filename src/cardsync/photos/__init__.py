"""Profile photos from Entra ID on cards and vCards (``[organizations.photos]``).

    refresh    PhotoSync, the sync cycle's photo step (cardsync.sync.PhotoRefresher)
    schedule   which users to check this cycle: the pull's, never checked, a rolling slice
    store      the ``photos`` table of the state database
    images     Pillow: one web JPEG and one ~150 px vCard JPEG per photo, metadata stripped

The Graph side (``$batch``, throttling, rate limits) is :mod:`cardsync.graph.photos`.
Nothing heavy is imported here: msgraph when the first photo client is built, Pillow
when the first photo is resized. See docs/photos.md.
"""

from __future__ import annotations

from .refresh import PERMISSION_HINT, PhotoReport, PhotoSync

__all__ = ["PERMISSION_HINT", "PhotoReport", "PhotoSync"]
