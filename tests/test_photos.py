"""The pieces of photo sync on their own: resizing, the rolling schedule, the rate guard,
$batch answers and the [organizations.photos] configuration."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageCms, ImageDraw

from cardsync.config import load
from cardsync.errors import ConfigError
from cardsync.graph.photos import (
    Outcome,
    RateGuard,
    _fetched,
    _Item,
    _item_retry_after,
    _parse_batch,
)
from cardsync.photos import images, schedule
from cardsync.photos.store import Stored, unreadable_error

# -- images ---------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def portrait(size: tuple[int, int] = (600, 800)) -> Image.Image:
    image = Image.new("RGB", size, (30, 90, 160))
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, w * 3 // 4, h // 2), fill=(240, 200, 170))
    return image


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_photo_becomes_a_square_web_jpeg_and_a_150px_thumb() -> None:
    out = images.resize(encode(portrait()))
    web, thumb = decoded(out.web), decoded(out.thumb)
    assert (web.format, web.size, web.mode) == ("JPEG", (400, 400), "RGB")
    assert (thumb.format, thumb.size) == ("JPEG", (150, 150))


def test_small_photos_are_not_enlarged() -> None:
    out = images.resize(encode(portrait((120, 96))))
    assert decoded(out.web).size == (96, 96)
    assert decoded(out.thumb).size == (96, 96)


def test_same_bytes_give_the_same_output() -> None:
    data = encode(portrait())
    assert images.resize(data) == images.resize(data)


def test_exif_orientation_is_applied_and_metadata_stripped() -> None:
    # Stored sideways: top half red, bottom half blue; orientation 6 = rotate 90 degrees
    # clockwise to display, so the viewer sees blue on the left and red on the right.
    image = Image.new("RGB", (400, 400), (220, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 200, 400, 400), fill=(0, 0, 220))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "SpyCam"  # Make
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(image, exif=exif.tobytes(), icc_profile=srgb, comment=b"secret note")
    web = decoded(images.resize(data).web)
    left, right = web.getpixel((50, 200)), web.getpixel((350, 200))
    assert left[2] > 150 and left[0] < 80, left
    assert right[0] > 150 and right[2] < 80, right
    assert not web.getexif()
    assert "icc_profile" not in web.info and "comment" not in web.info and "exif" not in web.info


def test_transparency_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((50, 50, 150, 150), fill=(0, 128, 0, 255))
    web = decoded(images.resize(encode(image, "PNG")).web)
    assert web.mode == "RGB"
    assert min(web.getpixel((2, 2))) > 240  # the transparent corner is white
    assert web.getpixel((100, 100))[1] > 100  # the green disc stays green


def test_cmyk_and_grayscale_become_rgb() -> None:
    assert decoded(images.resize(encode(portrait().convert("CMYK"))).web).mode == "RGB"
    assert decoded(images.resize(encode(portrait().convert("L"))).thumb).mode == "RGB"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming huge dimensions: a few hundred bytes, gigabytes once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"GIF89a but not really an image at all", "not an image"),
        (b"<html>Access denied</html>", "not an image"),
        (encode(portrait())[:700], "cannot be decoded"),  # truncated
        (png_header_only(9000, 9000), "megapixels is refused"),  # 81 MP
        (png_header_only(60000, 60000), "too large"),  # past Pillow's own bomb limit
        (encode(portrait(), "PDF"), "not an image"),  # a format photos never come in
    ],
    ids=["empty", "gif-garbage", "html", "truncated", "81-megapixels", "bomb", "pdf"],
)
def test_unusable_bytes_raise_bad_image(data: bytes, reason: str) -> None:
    with pytest.raises(images.BadImage) as caught:
        images.resize(data)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


# -- the rolling schedule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "days", "interval", "size"),
    [
        (10_000, 7, 40, 40),  # 36 cycles a day: 252 cycles a week
        (100_000, 7, 40, 397),
        (7, 7, 40, 1),  # at least one
        (0, 7, 40, 0),
        (12, 1, 360, 3),
        (5, 1, 1440, 5),  # one cycle a day, refresh daily: everyone
        (5, 1, 1, 1),
    ],
)
def test_slice_size(users: int, days: int, interval: int, size: int) -> None:
    assert schedule.slice_size(users, days, interval) == size


def test_choose_never_checked_then_pulled_then_oldest() -> None:
    users = [
        Stored("a", "2024-01-03T00:00:00.000000+00:00"),
        Stored("b", None),
        Stored("c", "2024-01-01T00:00:00.000000+00:00"),
        Stored("d", "2024-01-02T00:00:00.000000+00:00"),
        Stored("e", "2024-01-01T00:00:00.000000+00:00"),
        Stored("f", None),
    ]
    choice = schedule.choose(users, changed={"c", "a"}, size=2)
    assert [u.user_id for u in choice.never] == ["b", "f"]
    assert [u.user_id for u in choice.changed] == ["a", "c"]
    assert [u.user_id for u in choice.rolling] == ["e", "d"]
    assert [u.user_id for u in choice.all()] == ["b", "f", "a", "c", "e", "d"]


def test_known_etags_include_an_unreadable_one() -> None:
    stored = Stored("u", "t", 'W/"good"', unreadable_error('W/"bad"', "truncated"))
    assert stored.bad_etag == 'W/"bad"'
    assert stored.known() == {'W/"good"', 'W/"bad"'}
    assert Stored("u", "t", None, "Microsoft Graph answered 500").known() == frozenset()


# -- the rate guard -------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_guard_waits_for_the_window_to_slide() -> None:
    time = FakeTime()
    guard = RateGuard(limit=100, window=600, clock=time.clock, sleep=time.sleep)

    async def scenario() -> list[float]:
        waits = []
        for _ in range(5):
            waits.append(await guard.acquire(20))  # 100: the whole budget, no wait
            time.now += 1
        waits.append(await guard.acquire(20))  # must wait until the first 20 expire
        waits.append(await guard.acquire(20))  # and the next 20
        return waits

    waits = asyncio.run(scenario())
    assert waits[:5] == [0.0] * 5
    assert waits[5] == pytest.approx(595)  # sent at t=1000, t is now 1005
    assert waits[6] == pytest.approx(1)
    with pytest.raises(ValueError):
        asyncio.run(guard.acquire(101))


# -- $batch answers -------------------------------------------------------------------------


def test_batch_answer_parsing() -> None:
    body = (
        b'{"responses": [{"id": "2", "status": 429, "headers": {"Retry-After": "7"}},'
        b'{"id": "1", "status": 200, "headers": {"Content-Type": "image/jpeg"}, "body": "/9j/"},'
        b' "junk", {"id": "3"}]}'
    )
    items = _parse_batch(body)
    assert items["1"].status == 200 and items["1"].body == "/9j/"
    assert _item_retry_after(items["2"]) == 7
    assert items["3"].status == 0
    assert (
        _item_retry_after(_Item(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None)) == 0
    )


def test_batch_answer_that_is_not_json_is_a_graph_error() -> None:
    from cardsync.errors import GraphError

    for body in (b"<html>", b"{}", b'{"responses": 3}', None):
        with pytest.raises(GraphError):
            _parse_batch(body)


def test_fetched_bytes_come_from_base64_and_get_an_etag_if_graph_gave_none() -> None:
    ok = _fetched("u", None, "aGVsbG8=")
    assert (ok.outcome, ok.data) == (Outcome.FETCHED, b"hello")
    assert ok.etag is not None and ok.etag.startswith("sha256:")
    assert _fetched("u", "e", "not base64!").outcome is Outcome.UNREADABLE
    assert _fetched("u", "e", {"error": {}}).outcome is Outcome.UNREADABLE


# -- configuration --------------------------------------------------------------------------

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
PHOTO_CLIENT = "66666666-7777-8888-9999-0000000000ff"
BASE = f"""
[backend]
output = "site"
base_url = "https://cards.example.org"

[[organizations]]
slug = "contoso"

[organizations.entra]
tenant_id = "{TENANT}"
client_id = "{CLIENT}"
client_secret = "${{MAIN_SECRET}}"
cloud = "usgov"
"""
ENV = {"MAIN_SECRET": "main-secret-value", "PHOTO_SECRET": "photo-secret-value"}


def config_with(tmp_path: Path, photos: str, env: dict[str, str] = ENV):  # noqa: ANN201
    path = tmp_path / "cardsync.toml"
    path.write_text(BASE + "\n[organizations.photos]\n" + photos)
    return load(path, env=env)


def test_photos_are_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "cardsync.toml"
    path.write_text(BASE)
    photos = load(path, env=ENV).organizations[0].photos
    assert (photos.enabled, photos.entra, photos.refresh_days) == (False, None, 7)


def test_photos_use_the_main_credentials_unless_given_their_own(tmp_path: Path) -> None:
    photos = config_with(tmp_path, "enabled = true\nrefresh_days = 3\n").organizations[0].photos
    assert (photos.enabled, photos.entra, photos.refresh_days) == (True, None, 3)

    own = f'enabled = true\nclient_id = "{PHOTO_CLIENT}"\nclient_secret = "${{PHOTO_SECRET}}"\n'
    config = config_with(tmp_path, own)
    entra = config.organizations[0].photos.entra
    assert entra is not None
    assert (entra.tenant_id, entra.client_id, entra.client_secret) == (
        TENANT,
        PHOTO_CLIENT,
        "photo-secret-value",
    )
    assert entra.cloud == "usgov" and entra.graph_url == "https://graph.microsoft.us/v1.0"
    assert "photo-secret-value" in config.secrets()
    assert "photo-secret-value" not in repr(config)


@pytest.mark.parametrize(
    ("photos", "problem"),
    [
        ('client_secret = "${PHOTO_SECRET}"', "client_secret set without client_id"),
        (f'tenant_id = "{TENANT}"', "tenant_id set without client_id"),
        (f'client_id = "{PHOTO_CLIENT}"', "set exactly one of client_secret and certificate_path"),
        ("refresh_days = 0", "refresh_days: must be between 1 and 365"),
        ('enabled = "yes"', "enabled: expected a boolean"),
        ("enable = true", "did you mean 'enabled'"),
    ],
)
def test_photo_settings_problems(tmp_path: Path, photos: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_with(tmp_path, photos)
    assert any(
        problem in p and p.startswith("organizations[0].photos") for p in caught.value.problems
    ), caught.value.problems
    assert "photo-secret-value" not in str(caught.value)


# -- the batcher, against canned $batch answers ---------------------------------------------


class CannedGraph:
    """Stands in for GraphClient: answers each POST /$batch with ``answer(item url)``."""

    def __init__(self, answer) -> None:  # noqa: ANN001
        from cardsync.config import EntraConfig

        self.entra = EntraConfig(TENANT, CLIENT, "s", graph_url="https://graph.example/v1.0")
        self.answer = answer
        self.sent: list[list[str]] = []

    async def get(self, build, what):  # noqa: ANN001, ANN201
        import json

        request = build()
        assert str(request.url) == "https://graph.example/v1.0/$batch"
        items = json.loads(request.content)["requests"]
        self.sent.append([i["url"] for i in items])
        responses = [{"id": i["id"], **self.answer(i["url"])} for i in items]
        return json.dumps({"responses": responses}).encode()


def check(graph: CannedGraph, users: list[str], **kwargs: object) -> list:
    from cardsync.graph.photos import PhotoBatcher, PhotoCheck

    batcher = PhotoBatcher(graph, **kwargs)  # type: ignore[arg-type]
    return asyncio.run(batcher.check([PhotoCheck(u, frozenset({'W/"old"'})) for u in users]))


def test_batcher_downloads_only_new_etags_and_gives_up_on_endless_throttling() -> None:
    def answer(url: str) -> dict:
        user = url.split("/")[2]
        if user == "busy":
            return {"status": 429, "headers": {"Retry-After": "30"}}
        if url.endswith("$value"):
            return {"status": 200, "headers": {"Content-Type": "image/jpeg"}, "body": "AQID"}
        etag = 'W/"old"' if user == "same" else 'W/"new"'
        return {"status": 200, "body": {"@odata.mediaEtag": etag}}

    graph = CannedGraph(answer)
    results = check(graph, ["same", "fresh", "busy"], item_retry_budget=5)
    by_user = {r.user_id: r for r in results}
    assert by_user["same"].outcome is Outcome.KNOWN
    assert (by_user["fresh"].outcome, by_user["fresh"].data) == (Outcome.FETCHED, b"\x01\x02\x03")
    assert by_user["busy"].outcome is Outcome.FAILED and "429" in by_user["busy"].error
    # one metadata batch of three, one download batch with only the new photo
    assert graph.sent == [
        ["/users/same/photo", "/users/fresh/photo", "/users/busy/photo"],
        ["/users/fresh/photo/$value"],
    ]


def test_batcher_stops_at_the_first_403() -> None:
    from cardsync.graph.photos import PhotoAccessDenied

    graph = CannedGraph(
        lambda url: {"status": 403, "body": {"error": {"code": "Authorization_RequestDenied"}}}
    )
    with pytest.raises(PhotoAccessDenied) as caught:
        check(graph, [f"u{i}" for i in range(45)])
    assert "Authorization_RequestDenied" in caught.value.message
    assert "ProfilePhoto.Read.All" in (caught.value.hint or "")
