"""Resizing a profile photo into the two JPEGs cards use, once per photo.

- ``web``: a square, centre-cropped JPEG of at most :data:`WEB_SIZE` px for the card page;
- ``thumb``: a square JPEG of at most :data:`THUMB_SIZE` px, embedded in the vCard.

Images are never enlarged. EXIF orientation is applied, colours are converted to sRGB
when the image carries an ICC profile, transparency is flattened onto white, and no
metadata (EXIF, GPS, ICC, comments) is copied into the output. The output depends on the
input bytes only, so re-processing an unchanged photo gives identical bytes.

Bytes from Graph are untrusted: the pixel count is checked before anything is decoded
(a small file can claim to be gigapixels), only common photo formats are opened, and
every decoder failure becomes :class:`BadImage`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

WEB_SIZE = 400
THUMB_SIZE = 150
WEB_QUALITY = 85
THUMB_QUALITY = 80
MAX_BYTES = 20 * 1024 * 1024  # Entra accepts uploads up to 4 MB; Graph serves less
MAX_PIXELS = 40_000_000  # decoded size limit (a 40 MP RGB image is 120 MB in memory)
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")  # camera MPO files open as JPEG
_CENTRE = (0.5, 0.4)  # crop a little above the middle: portraits have the face there


class BadImage(ValueError):
    """The bytes are not an image cardsync can use; ``str()`` says why, in one line."""


@dataclass(frozen=True)
class Resized:
    web: bytes
    thumb: bytes


def resize(data: bytes) -> Resized:
    """The card's JPEGs for the photo ``data``, or :class:`BadImage`."""
    if not data:
        raise BadImage("the photo is empty")
    if len(data) > MAX_BYTES:
        raise BadImage(f"the photo is {len(data) // 1024 // 1024} MB; the limit is 20 MB")
    from PIL import Image

    # No warnings.catch_warnings() here: it is not thread-safe, and photos are resized
    # on a thread pool. Pillow's own bomb warning (89-179 MP) never matters: our pixel
    # limit is lower and is checked before decoding.
    try:
        return _resize(data)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"the image is too large to decode safely ({exc})") from exc
    except MemoryError as exc:
        raise BadImage("the image is too large to decode") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure means bad bytes
        raise BadImage(_reason(exc)) from exc


def _resize(data: bytes) -> Resized:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data), formats=FORMATS) as image:
        width, height = image.size
        if width < 1 or height < 1:
            raise BadImage("the image has no pixels")
        if width * height > MAX_PIXELS:
            raise BadImage(
                f"the image is {width}x{height} px; more than {MAX_PIXELS // 1_000_000} "
                "megapixels is refused"
            )
        side = min(width, height)
        web_side = min(WEB_SIZE, side)
        if image.format in ("JPEG", "MPO"):
            # Decode at a reduced scale when the photo is much larger than needed.
            image.draft("RGB", (web_side, web_side))
        image.seek(0)  # animated GIF/WebP: the first frame
        image.load()
        try:
            upright = ImageOps.exif_transpose(image)
        except Exception:  # noqa: BLE001 - broken EXIF: keep the pixels as stored
            upright = image
        rgb = _to_srgb(upright)
    web = ImageOps.fit(rgb, (web_side, web_side), Image.Resampling.LANCZOS, centering=_CENTRE)
    thumb_side = min(THUMB_SIZE, web_side)
    thumb = web.resize((thumb_side, thumb_side), Image.Resampling.LANCZOS)
    return Resized(_jpeg(web, WEB_QUALITY), _jpeg(thumb, THUMB_QUALITY))


def _to_srgb(image: Any) -> Any:
    """An RGB image in sRGB, transparency flattened onto white."""
    from PIL import Image

    icc = image.info.get("icc_profile")
    if icc:
        image = _icc_to_srgb(image, icc)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _icc_to_srgb(image: Any, icc: bytes) -> Any:
    """Convert from the embedded profile to sRGB; on any failure keep the pixels as they are
    (a broken profile should not cost the user their photo)."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        target = ImageCms.createProfile("sRGB")
        mode = "RGBA" if "A" in image.mode else "RGB"
        if image.mode not in ("RGB", "RGBA", "CMYK", "L"):
            image = image.convert("RGBA" if mode == "RGBA" else "RGB")
        out_mode = mode if image.mode != "CMYK" else "RGB"
        converted = ImageCms.profileToProfile(image, source, target, outputMode=out_mode)
    except Exception:  # noqa: BLE001 - ImageCms raises PyCMSError, OSError, ValueError...
        return image
    return converted if converted is not None else image


def _jpeg(image: Any, quality: int) -> bytes:
    out = io.BytesIO()
    # No exif=, icc_profile= or comment=: Pillow then writes none of them.
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _reason(exc: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image in a supported format (" + ", ".join(FORMATS[:4]) + ", ...)"
    text = " ".join(str(exc).split())[:160]
    return f"the image cannot be decoded: {text or type(exc).__name__}"
