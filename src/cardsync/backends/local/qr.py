"""QR codes of card URLs, as SVG (for the page) and PNG (for sharing and printing).

A card's URL never changes, so its code is made once: the SVG carries the URL it
encodes in its <title>, and :func:`encodes` checks that instead of regenerating.

zxing-cpp makes the code and its SVG. The PNG is written here, straight from the
module matrix: at 8 pixels a module and one bit a pixel, a module is exactly one
byte, so each pixel row is the matrix row as zxing-cpp gives it (0 dark, 255
light), and the 7 repeats of a row are PNG "Up" filter rows of zeros. That takes
~50 µs where scaling the image and encoding it with Pillow took ~600 µs.
"""

from __future__ import annotations

import re
import struct
import zlib
from html import escape
from pathlib import Path

import zxingcpp

# Pixels per module in the PNG: about 300 px for a typical card URL. A multiple of 8,
# so that a module is whole bytes of a 1-bit PNG row (what keeps the encoder simple).
PNG_SCALE = 8

_SVG_ROOT = re.compile(r'<svg width="(\d+)" height="(\d+)"')
_SVG_DESC = re.compile(r"<desc>[^<]*</desc>")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_SVG_END = b"</svg>"


def title(url: str) -> str:
    return f"<title>{escape(url, quote=False)}</title>"


def make(url: str) -> tuple[bytes, bytes]:
    """The (SVG, PNG) bytes of the QR code of ``url``, each with its quiet zone."""
    code = zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode)
    return _svg(code.to_svg(add_quiet_zones=True), url), _png(code)


def encodes(svg: Path, png: Path, url: str) -> bool:
    """Whether both files exist, are complete, and were made for ``url``.

    Complete matters: files are made durable per batch (see :func:`.site.sync`), so
    after a power loss a file can be empty or cut short; such a code is made again."""
    try:
        data = svg.read_bytes()
        with png.open("rb") as f:
            head = f.read(len(_PNG_SIGNATURE))
            f.seek(max(0, png.stat().st_size - len(_PNG_END)))
            tail = f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    return (
        head == _PNG_SIGNATURE
        and tail == _PNG_END
        and data.rstrip().endswith(_SVG_END)
        and title(url).encode("utf-8") in data
    )


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
    """A 1-bit greyscale PNG of ``code`` at :data:`PNG_SCALE` pixels a module."""
    image = code.to_image(scale=1, add_quiet_zones=True)
    height, width = image.shape
    modules = bytes(image)  # type: ignore[call-overload]  # a buffer: 0 dark, 255 light
    per = PNG_SCALE // 8  # bytes a module takes in a pixel row
    rows = []
    for y in range(height):
        line = modules[y * width : (y + 1) * width]
        rows.append(b"\x00" + (line if per == 1 else bytes(v for v in line for _ in range(per))))
    repeat = b"\x02" + bytes(width * per)  # filter "Up" with zero differences: the row above
    raw = b"".join(row + repeat * (PNG_SCALE - 1) for row in rows)
    # Run-length deflate: rows are long runs of 0x00/0xFF; ~5x faster than the
    # default strategy, for a few hundred bytes more.
    deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    header = struct.pack(">IIBBBBB", width * PNG_SCALE, height * PNG_SCALE, 1, 0, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", deflate.compress(raw) + deflate.flush()),
            _PNG_END,
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
