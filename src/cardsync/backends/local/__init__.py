"""The local backend: a static site of card pages, one folder per card.

backend.py   the Backend: what is written when
options.py   the [backend] options
site.py      layout on disk, atomic writes, id checks
render.py    jinja2 template sets and their fingerprint
view.py      what a page shows, cleaned and ready to lay out
text.py      cleaning untrusted directory text
vcard.py     the vCard 3.0
qr.py        the QR codes
"""

from .backend import RENDER_VERSION, LocalBackend

__all__ = ["RENDER_VERSION", "LocalBackend"]
