"""QR codes of card URLs, as SVG (for the page) and PNG (for sharing and printing).

A card's URL never changes, so its code is made once: the SVG carries the URL it
encodes in its <title>, and :func:`encodes` checks that instead of regenerating.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from xml.sax.saxutils import escape

import zxingcpp
from PIL import Image

# Pixels per module in the PNG: about 300 px for a typical card URL.
PNG_SCALE = 8

_SVG_ROOT = re.compile(r'<svg width="(\d+)" height="(\d+)"')
_SVG_DESC = re.compile(r"<desc>[^<]*</desc>")


def title(url: str) -> str:
    return f"<title>{escape(url)}</title>"


def make(url: str) -> tuple[bytes, bytes]:
    """The (SVG, PNG) bytes of the QR code of ``url``, each with its quiet zone."""
    code = zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode)
    return _svg(code.to_svg(add_quiet_zones=True), url), _png(code)


def encodes(svg: Path, png: Path, url: str) -> bool:
    """Whether both files exist and were made for ``url``."""
    try:
        text = svg.read_text("utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return title(url) in text and png.is_file()


def _svg(svg: str, url: str) -> bytes:
    # zxing-cpp sizes the SVG in modules without a viewBox, so browsers would draw
    # it tiny whatever size the page asks for; a viewBox makes it scale crisply.
    svg, roots = _SVG_ROOT.subn(
        r'<svg width="\1" height="\2" viewBox="0 0 \1 \2" shape-rendering="crispEdges"', svg, 1
    )
    svg, descs = _SVG_DESC.subn(title(url), svg, 1)
    if roots != 1 or descs != 1:
        raise RuntimeError("zxing-cpp's SVG output changed; update cardsync.backends.local.qr")
    return svg.encode("utf-8")


def _png(code: zxingcpp.Barcode) -> bytes:
    # zxing-cpp's image has the numpy array interface: one 8-bit grey byte per pixel.
    image = Image.fromarray(code.to_image(scale=PNG_SCALE, add_quiet_zones=True))
    out = io.BytesIO()
    image.convert("1", dither=Image.Dither.NONE).save(out, "PNG")
    return out.getvalue()
