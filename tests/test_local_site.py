"""The local backend's site, checked through the bytes and files it writes."""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
import vobject
import zxingcpp
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from cardsync.backends.local import LocalBackend
from cardsync.backends.local import qr as local_qr
from cardsync.backends.local import vcard as local_vcard
from cardsync.backends.local.render import TemplateSet
from cardsync.backends.local.site import write_if_changed
from cardsync.backends.local.view import card_view, initials, org_view, tel_uri
from cardsync.errors import BackendError, ConfigError
from cardsync.models import Card, OrgProfile, Person, Photo
from cardsync.templates import builtin_templates

BASE_URL = "https://example.org/cards"
ACME = OrgProfile("acme", "Acme Inc.")

HOSTILE = [
    "<script>alert(1)</script>",
    "Robert'); DROP TABLE users;--",
    '"><img src=x onerror=alert(1)>',
    "../../etc/passwd",
    "\u202egnp.exe\u202c Moe",  # right-to-left override
    "Zoë 😀👩🏽‍💻",
    "山田 太郎",
    "e\u0301mile Zola\u0327",  # combining marks
    "Semi;colon, comma\\backslash: colon",
    "{{ 7*7 }} {% raw %}",
]


def person(name: str = "Adele Vance", **changes: object) -> Person:
    base = Person(
        display_name=name,
        given_name="Adele",
        surname="Vance",
        job_title="Retail Manager",
        department="Retail",
        company_name="Contoso",
        mail="adelev@example.org",
        business_phones=("+1 425 555 0109",),
        mobile_phone="+1 (206) 555-0142",
        office_location="Building 18",
        street_address="18 Market Street",
        city="Seattle",
        state="WA",
        postal_code="98101",
        country="United States",
    )
    return replace(base, **changes)


def card(card_id: str = "k3x9q2m7", **changes: object) -> Card:
    return replace(Card("acme", card_id, f"user-{card_id}", person()), **changes)


def jpeg(colour: tuple[int, int, int], size: int = 96) -> bytes:
    image = Image.new("RGB", (size, size), colour)
    ImageDraw.Draw(image).ellipse(
        (size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill="white"
    )
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def local(output: Path, base_url: str = BASE_URL, orgs: list[OrgProfile] | None = None, **opts):
    options = {"output": str(output), "base_url": base_url, **opts}
    return LocalBackend(options, orgs or [ACME])


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return tmp_path / "site"


@pytest.fixture
def backend(site: Path) -> LocalBackend:
    return local(site)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and mtime."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class Page(HTMLParser):
    """A parsed page: its elements with their attributes, and the text of each."""

    VOID = {"meta", "img", "br", "link", "input", "use", "path", "rect", "circle"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] != "style" and data.strip():
            self.texts.setdefault(self._open[-1], []).append(data.strip())

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    def text(self) -> str:
        return " ".join(t for texts in self.texts.values() for t in texts)


def page(site: Path, card_id: str = "k3x9q2m7") -> Page:
    return Page((site / "acme" / card_id / "index.html").read_text("utf-8"))


# The card page


def test_card_page_shows_every_field_with_working_links(backend: LocalBackend, site: Path) -> None:
    backend.publish(card())
    html = page(site)
    assert html.texts["h1"] == ["Adele Vance"]
    text = html.text()
    for value in (
        "Retail Manager",
        "Retail",
        "Contoso",
        "adelev@example.org",
        "+1 425 555 0109",
        "+1 (206) 555-0142",
        "Building 18",
        "18 Market Street",
        "Seattle, WA 98101",
        "United States",
        "Save contact",
    ):
        assert value in text
    hrefs = {a["href"] for a in html.tags("a")}
    assert {
        "card.vcf",
        "mailto:adelev@example.org",
        "tel:+14255550109",
        "tel:+12065550142",
        "qr.png",
    } <= hrefs
    assert {"qr.svg"} == {img["src"] for img in html.tags("img")}
    metas = {m.get("name"): m.get("content") for m in html.tags("meta")}
    assert metas["robots"] == "noindex"
    assert "width=device-width" in (metas["viewport"] or "")


def test_page_without_photo_shows_initials_not_an_image(backend: LocalBackend, site: Path) -> None:
    backend.publish(card())
    html = page(site)
    assert "AV" in html.texts["div"]
    assert all("photo" not in (img["src"] or "") for img in html.tags("img"))
    assert not (site / "acme" / "k3x9q2m7" / "photo.jpg").exists()


def test_photo_is_written_and_shown_then_dropped(backend: LocalBackend, site: Path) -> None:
    photo = Photo(web=jpeg((200, 40, 40), 400), thumb=jpeg((200, 40, 40)))
    published = backend.publish(card(photo=photo))
    folder = site / "acme" / "k3x9q2m7"
    assert (folder / "photo.jpg").read_bytes() == photo.web
    assert published.files["photo"] == str(folder / "photo.jpg")
    sources = [img["src"] or "" for img in page(site).tags("img")]
    assert any(src.startswith("photo.jpg?v=") for src in sources)
    parsed = vobject.readOne((folder / "card.vcf").read_text("utf-8"))
    assert parsed.photo.value == photo.thumb
    assert parsed.photo.params == {"ENCODING": ["b"], "TYPE": ["JPEG"]}

    backend.publish(card())
    assert not (folder / "photo.jpg").exists()
    assert "photo" not in vobject.readOne((folder / "card.vcf").read_text("utf-8")).contents


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_text_is_escaped_in_html(backend: LocalBackend, site: Path, hostile: str) -> None:
    backend.publish(
        card(
            person=person(
                hostile,
                job_title=hostile,
                department=hostile,
                company_name=hostile,
                office_location=hostile,
                city=hostile,
                mobile_phone=hostile,
            )
        )
    )
    raw = (site / "acme" / "k3x9q2m7" / "index.html").read_text("utf-8")
    html = Page(raw)
    assert html.texts["h1"] == [hostile.strip()]
    assert hostile.strip() in html.texts["p"]
    assert not html.tags("script")
    assert all(not name.startswith("on") for _, attrs in html.elements for name in attrs)
    if "<" in hostile:
        assert hostile not in raw
    assert "49" not in html.text()  # templates are not evaluated twice


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_are_escaped_in_the_index(
    backend: LocalBackend, site: Path, hostile: str
) -> None:
    backend.publish(card())
    backend.finish("acme", [("k3x9q2m7", hostile)])
    html = Page((site / "acme" / "index.html").read_text("utf-8"))
    assert hostile.strip() in html.text()
    assert not html.tags("script")
    assert [a["href"] for a in html.tags("a")] == ["k3x9q2m7/"]


def test_inactive_card_page_withdraws_contact_data(backend: LocalBackend, site: Path) -> None:
    backend.publish(card(photo=Photo(web=jpeg((1, 2, 3)), thumb=jpeg((1, 2, 3)))))
    published = backend.publish(card(active=False, photo=Photo(web=b"x", thumb=b"x")))
    folder = site / "acme" / "k3x9q2m7"
    assert sorted(p.name for p in folder.iterdir()) == ["index.html"]
    assert published.files == {"html": str(folder / "index.html")}
    html = page(site)
    text = html.text()
    assert "no longer active" in text and "Adele Vance" in text
    assert "adelev@example.org" not in text and "555" not in text
    assert not any((a["href"] or "").startswith(("mailto:", "tel:")) for a in html.tags("a"))
    assert not html.tags("img")


# The vCard


def read_vcard(site: Path, card_id: str = "k3x9q2m7") -> tuple[str, vobject.base.Component]:
    raw = (site / "acme" / card_id / "card.vcf").read_bytes().decode("utf-8")
    return raw, vobject.readOne(raw)


def test_vcard_has_every_field(backend: LocalBackend, site: Path) -> None:
    url = backend.publish(card()).url
    raw, parsed = read_vcard(site)
    assert raw.startswith("BEGIN:VCARD\r\nVERSION:3.0\r\n") and raw.endswith("END:VCARD\r\n")
    assert parsed.fn.value == "Adele Vance"
    assert (parsed.n.value.family, parsed.n.value.given) == ("Vance", "Adele")
    assert parsed.org.value == ["Contoso", "Retail"]
    assert parsed.title.value == "Retail Manager"
    assert parsed.email.value == "adelev@example.org"
    assert parsed.email.params["TYPE"] == ["INTERNET", "WORK"]
    tels = {tel.value: tel.params["TYPE"] for tel in parsed.contents["tel"]}
    assert tels == {"+1 425 555 0109": ["WORK", "VOICE"], "+1 (206) 555-0142": ["CELL"]}
    adr = parsed.adr.value
    assert (adr.extended, adr.street, adr.city, adr.region, adr.code, adr.country) == (
        "Building 18",
        "18 Market Street",
        "Seattle",
        "WA",
        "98101",
        "United States",
    )
    assert parsed.adr.params["TYPE"] == ["WORK"]
    assert parsed.url.value == url
    assert parsed.uid.value == local_vcard.uid("acme", "k3x9q2m7")


def test_vcard_lines_are_crlf_and_folded(backend: LocalBackend, site: Path) -> None:
    long = "Distinguished " * 12 + "Überingenieur 😀"
    backend.publish(
        card(
            person=person(job_title=long),
            photo=Photo(web=jpeg((9, 9, 9)), thumb=jpeg((9, 9, 9), 150)),
        )
    )
    data = (site / "acme" / "k3x9q2m7" / "card.vcf").read_bytes()
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 75
    assert read_vcard(site)[1].title.value == long


def test_vcard_newlines_cannot_inject_properties(backend: LocalBackend, site: Path) -> None:
    evil = "Eve\r\nTEL:+1666"
    backend.publish(
        card(
            person=Person(
                display_name=evil,
                job_title=evil,
                mail=evil,
                mobile_phone="+1 555 0100\nTEL:+1666",
                street_address=evil,
                city="x\u2028TEL:+1666",
            )
        )
    )
    raw, parsed = read_vcard(site)
    assert len(parsed.contents["tel"]) == 1
    assert parsed.tel.value == "+1 555 0100 TEL:+1666"
    assert not any(line.startswith("TEL:") for line in raw.split("\r\n"))
    assert parsed.fn.value == "Eve TEL:+1666"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_vcard_round_trips_hostile_values(backend: LocalBackend, site: Path, hostile: str) -> None:
    value = hostile.strip()
    backend.publish(
        card(
            person=Person(
                display_name=value,
                given_name=value,
                surname=value,
                job_title=value,
                department=value,
                company_name=value,
                mail=value,
                business_phones=(value,),
                office_location=value,
                street_address=value,
                city=value,
                country=value,
            )
        )
    )
    _, parsed = read_vcard(site)
    assert parsed.fn.value == value
    assert (parsed.n.value.family, parsed.n.value.given) == (value, value)
    assert parsed.org.value == [value, value]
    assert parsed.title.value == value
    assert parsed.email.value == value
    assert parsed.tel.value == value
    assert (parsed.adr.value.street, parsed.adr.value.city, parsed.adr.value.country) == (
        value,
        value,
        value,
    )


# Printable text as the directory could hold it: no control characters, and no
# surrounding whitespace (which cleaning strips, so it could not round-trip).
TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1).filter(
    lambda text: text.strip() == text
)


@given(name=TEXT, title=TEXT, phone=TEXT)
def test_vcard_round_trips_any_printable_text(name: str, title: str, phone: str) -> None:
    built = local_vcard.build(
        Card("acme", "a1", "u1", Person(display_name=name, job_title=title, mobile_phone=phone)),
        "https://example.org/acme/a1/",
        "Acme",
    )
    parsed = vobject.readOne(built.decode("utf-8"))
    assert (parsed.fn.value, parsed.title.value, parsed.tel.value) == (name, title, phone)


@functools.cache
def classic() -> TemplateSet:
    return TemplateSet("classic", "test")


@given(name=TEXT)
def test_any_name_is_shown_as_text(name: str) -> None:
    org = org_view(ACME)
    view = card_view(Card("acme", "a1", "u1", Person(display_name=name)), org, BASE_URL + "/x/")
    html = Page(classic().render_card(card=view, org=org).decode("utf-8"))
    assert html.texts["h1"] == [name]
    assert not html.tags("script")


# QR codes


def decode_png(path: Path) -> str:
    found = zxingcpp.read_barcode(Image.open(path))
    assert found is not None
    return found.text


def decode_svg(path: Path) -> str:
    """Draw the SVG's module rectangles with Pillow and decode the result."""
    svg = path.read_text("utf-8")
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))
    scale = 8
    image = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(image)
    for x, y, w, h in re.findall(r"M(\d+) (\d+)h(\d+)v(\d+)h-\d+Z", svg):
        x0, y0 = int(x) * scale, int(y) * scale
        draw.rectangle((x0, y0, x0 + int(w) * scale - 1, y0 + int(h) * scale - 1), fill=0)
    found = zxingcpp.read_barcode(image)
    assert found is not None
    return found.text


def test_qr_codes_decode_to_the_card_url(backend: LocalBackend, site: Path) -> None:
    url = backend.publish(card()).url
    folder = site / "acme" / "k3x9q2m7"
    assert decode_png(folder / "qr.png") == url
    assert decode_svg(folder / "qr.svg") == url


def test_qr_png_has_a_quiet_zone(backend: LocalBackend, site: Path) -> None:
    backend.publish(card())
    image = Image.open(site / "acme" / "k3x9q2m7" / "qr.png").convert("L")
    border = local_qr.PNG_SCALE * 4  # four modules
    width, height = image.size
    assert image.crop((0, 0, width, border)).getextrema() == (255, 255)
    assert image.crop((0, 0, border, height)).getextrema() == (255, 255)


def test_qr_is_made_once_per_url(backend: LocalBackend, site: Path) -> None:
    backend.publish(card())
    folder = site / "acme" / "k3x9q2m7"
    before = {name: (folder / name).stat().st_mtime_ns for name in ("qr.svg", "qr.png")}
    # Different content, same URL: a new instance must not remake the codes.
    local(site).publish(card(person=person(job_title="Chief Retail Officer")))
    assert {name: (folder / name).stat().st_mtime_ns for name in before} == before
    assert "Chief Retail Officer" in page(site).text()


def test_qr_is_remade_when_the_base_url_changes(site: Path) -> None:
    local(site).publish(card())
    url = local(site, "https://cards.example.net/").publish(card()).url
    assert url == "https://cards.example.net/acme/k3x9q2m7/"
    folder = site / "acme" / "k3x9q2m7"
    assert decode_png(folder / "qr.png") == url
    assert decode_svg(folder / "qr.svg") == url
    assert read_vcard(site)[1].url.value == url


def test_a_missing_png_is_remade(backend: LocalBackend, site: Path) -> None:
    url = backend.publish(card()).url
    png = site / "acme" / "k3x9q2m7" / "qr.png"
    png.unlink()
    backend.publish(card())
    assert decode_png(png) == url


@pytest.mark.parametrize("name", ["qr.png", "qr.svg"])
@pytest.mark.parametrize("keep", [0, 40])
def test_a_qr_file_cut_short_by_a_power_loss_is_remade(
    backend: LocalBackend, site: Path, name: str, keep: int
) -> None:
    """Files become durable per batch (flush), so after a power loss one can be empty
    or cut short; the next publish must not take it for a finished code."""
    url = backend.publish(card()).url
    path = site / "acme" / "k3x9q2m7" / name
    path.write_bytes(path.read_bytes()[:keep])
    backend.publish(card())
    folder = path.parent
    assert decode_png(folder / "qr.png") == url
    assert decode_svg(folder / "qr.svg") == url


def test_flush_syncs_once_per_batch_and_only_after_writes(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cardsync.backends.local import site as local_site

    synced: list[Path] = []
    monkeypatch.setattr(local_site, "sync", synced.append)
    backend = local(site)
    backend.flush()
    assert synced == []  # nothing written yet
    backend.publish(card("a1"))
    backend.publish(card("b2"))
    backend.flush()
    backend.flush()
    assert synced == [site]
    backend.remove("acme", "a1")
    backend.close()
    assert synced == [site, site]


def test_sync_makes_a_folder_durable(tmp_path: Path) -> None:
    from cardsync.backends.local.site import sync

    write_if_changed(tmp_path / "page.html", b"<html>")
    sync(tmp_path)  # syncfs on Linux, os.sync elsewhere: must not fail


# Files on disk


def test_layout_and_urls_with_a_base_path(site: Path) -> None:
    backend = local(site, "https://example.org/cards/")
    published = backend.publish(card())
    assert published.url == "https://example.org/cards/acme/k3x9q2m7/"
    assert backend.url("acme", "k3x9q2m7") == published.url
    folder = site / "acme" / "k3x9q2m7"
    assert published.files == {
        "vcard": str(folder / "card.vcf"),
        "qr_svg": str(folder / "qr.svg"),
        "qr_png": str(folder / "qr.png"),
        "html": str(folder / "index.html"),
    }
    assert all(Path(path).is_file() for path in published.files.values())


def test_republishing_leaves_every_byte_and_mtime_alone(site: Path) -> None:
    photo = Photo(web=jpeg((5, 80, 160), 300), thumb=jpeg((5, 80, 160)))
    cards = [card(photo=photo), card("b2"), card("c3", active=False)]
    first = local(site)
    for each in cards:
        first.publish(each)
    first.finish("acme", [("k3x9q2m7", "Adele"), ("b2", "Adele"), ("c3", "Adele")])
    before = snapshot(site)
    again = local(site)
    for each in cards:
        again.publish(each)
    again.finish("acme", [("k3x9q2m7", "Adele"), ("b2", "Adele"), ("c3", "Adele")])
    assert snapshot(site) == before


def test_output_has_nothing_that_varies_between_runs(tmp_path: Path) -> None:
    """Two separate sites built from the same cards are byte-identical."""
    for name in ("one", "two"):
        backend = local(tmp_path / name)
        backend.publish(card(photo=Photo(web=jpeg((1, 1, 1)), thumb=jpeg((1, 1, 1)))))
        backend.finish("acme", [("k3x9q2m7", "Adele Vance")])
    one = {k: v[0] for k, v in snapshot(tmp_path / "one").items()}
    two = {k: v[0] for k, v in snapshot(tmp_path / "two").items()}
    assert one == two


def test_files_are_world_readable_and_no_temp_files_remain(
    backend: LocalBackend, site: Path
) -> None:
    backend.publish(card(photo=Photo(web=jpeg((1, 1, 1)), thumb=jpeg((1, 1, 1)))))
    backend.publish(card(person=person(job_title="Changed")))
    backend.publish(card("b2"))
    backend.publish(card("b2", active=False))
    backend.remove("acme", "k3x9q2m7")
    backend.finish("acme", [("b2", "Adele")])
    files = [p for p in site.rglob("*") if p.is_file()]
    assert sorted(str(p.relative_to(site)) for p in files) == [
        "acme/b2/index.html",
        "acme/index.html",
        "index.html",
    ]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in files)


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "page.html"
    target.mkdir()
    (target / "keep").write_text("a non-empty folder cannot be replaced by a file")
    with pytest.raises(OSError):
        write_if_changed(target, b"<html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]


def test_remove_deletes_the_folder(backend: LocalBackend, site: Path) -> None:
    backend.publish(card())
    backend.remove("acme", "k3x9q2m7")
    assert not (site / "acme" / "k3x9q2m7").exists()
    backend.remove("acme", "k3x9q2m7")


def test_card_ids_ignore_strays_and_unfinished_cards(backend: LocalBackend, site: Path) -> None:
    backend.publish(card())
    (site / "acme" / "unfinished").mkdir()  # a first publish that died before its page
    (site / "acme" / "Not-An-Id").mkdir()
    (site / "acme" / "notes.txt").write_text("")
    assert backend.card_ids("acme") == {"k3x9q2m7"}


@pytest.mark.parametrize("bad", ["../../etc", "..", "a/b", "ABC", "-lead", "x" * 64, "", "a\n"])
def test_unsafe_card_ids_are_refused(backend: LocalBackend, site: Path, bad: str) -> None:
    with pytest.raises(BackendError):
        backend.publish(card(bad))
    with pytest.raises(BackendError):
        backend.remove("acme", bad)
    with pytest.raises(BackendError):
        backend.url("acme", bad)
    with pytest.raises(BackendError):
        backend.finish("acme", [(bad, "Eve")])
    assert not site.exists() or not any(p.is_file() for p in site.rglob("*"))


def test_unsafe_org_slugs_are_refused(site: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        local(site, orgs=[OrgProfile("../evil", "Evil")])
    assert caught.value.problems[0].startswith("organizations[0].slug:")
    with pytest.raises(BackendError):
        local(site).remove("../evil", "a1")


# Index pages


def test_finish_writes_the_org_and_root_indexes(site: Path) -> None:
    orgs = [ACME, OrgProfile("globex", "Globex <Corp>", "minimal")]
    backend = local(site, orgs=orgs)
    backend.finish("acme", [("b2", "Zed"), ("a1", "Amy")])
    html = Page((site / "acme" / "index.html").read_text("utf-8"))
    assert [a["href"] for a in html.tags("a")] == ["b2/", "a1/"]  # in the order given
    assert html.texts["span"][:2] == ["Zed", "Amy"]
    assert {m.get("name"): m.get("content") for m in html.tags("meta")}["robots"] == "noindex"
    root = Page((site / "index.html").read_text("utf-8"))
    assert [a["href"] for a in root.tags("a")] == ["acme/", "globex/"]
    assert "Globex <Corp>" in root.text()


def test_index_off_writes_no_index_and_removes_old_ones(site: Path) -> None:
    local(site).finish("acme", [("a1", "Amy")])
    assert (site / "acme" / "index.html").exists()
    local(site, index=False).finish("acme", [("a1", "Amy")])
    assert not (site / "acme" / "index.html").exists()
    assert not (site / "index.html").exists()


# Templates and fingerprints


def test_builtin_templates_are_listed_without_heavy_imports() -> None:
    assert builtin_templates() == ["classic", "minimal"]
    code = "import sys, cardsync.templates as t; t.builtin_templates(); print(sorted(sys.modules))"
    modules = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert "jinja2" not in modules.stdout and "vobject" not in modules.stdout


@pytest.mark.parametrize("template", ["classic", "minimal"])
def test_each_builtin_template_renders_a_full_card(site: Path, template: str) -> None:
    backend = local(site, orgs=[replace(ACME, template=template)])
    backend.publish(card())
    backend.finish("acme", [("k3x9q2m7", "Adele Vance")])
    html = page(site)
    assert "Adele Vance" in html.texts["h1"]
    assert {"card.vcf", "mailto:adelev@example.org"} <= {a["href"] for a in html.tags("a")}


def test_custom_template_folder_overrides_one_file(tmp_path: Path, site: Path) -> None:
    folder = tmp_path / "brand"
    folder.mkdir()
    (folder / "card.html.j2").write_text(
        "<h1>{{ card.name }}</h1><p>{{ org.name }}</p><a href='{{ card.vcard }}'>v</a>\n"
    )
    backend = local(site, orgs=[replace(ACME, template=str(folder))])
    backend.publish(card(person=person("<b>Bold</b>")))
    backend.finish("acme", [("k3x9q2m7", "Adele Vance")])
    raw = (site / "acme" / "k3x9q2m7" / "index.html").read_text("utf-8")
    assert raw == "<h1>&lt;b&gt;Bold&lt;/b&gt;</h1><p>Acme Inc.</p><a href='card.vcf'>v</a>\n"
    index = Page((site / "acme" / "index.html").read_text("utf-8"))  # classic's index
    assert [a["href"] for a in index.tags("a")] == ["k3x9q2m7/"]


def test_custom_template_errors(tmp_path: Path, site: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.html.j2").write_text("{% if %}")
    (tmp_path / "empty").mkdir()
    cases = {
        str(broken): "card.html.j2:1",
        str(tmp_path / "empty"): "neither",
        str(tmp_path / "missing"): "neither a built-in",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            local(site, orgs=[replace(ACME, template=spec)])
        assert caught.value.problems[0].startswith("organizations[0].template:")
        assert message in caught.value.problems[0]


def test_an_undefined_variable_fails_the_publish(tmp_path: Path, site: Path) -> None:
    folder = tmp_path / "typo"
    folder.mkdir()
    (folder / "card.html.j2").write_text("{{ card.nmae }}")
    backend = local(site, orgs=[replace(ACME, template=str(folder))])
    with pytest.raises(BackendError, match="template"):
        backend.publish(card())


def test_fingerprint_follows_everything_that_changes_rendering(tmp_path: Path, site: Path) -> None:
    folder = tmp_path / "brand"
    shutil.copytree(classic().folders[0], folder)
    custom = [replace(ACME, template=str(folder))]
    base = local(site, orgs=custom).fingerprint("acme")
    assert local(site, orgs=custom).fingerprint("acme") == base
    assert local(site, "https://other.example", orgs=custom).fingerprint("acme") != base
    assert local(site, orgs=[replace(custom[0], name="Acme GmbH")]).fingerprint("acme") != base
    assert local(site, orgs=custom, index=False).fingerprint("acme") == base
    (folder / ".card.html.j2.swp").write_bytes(b"editor noise")
    assert local(site, orgs=custom).fingerprint("acme") == base
    (folder / "style.css").write_text("body { color: red; }")
    assert local(site, orgs=custom).fingerprint("acme") != base


# Options


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        LocalBackend({"base_url": "ftp://x", "index": "yes", "colour": 1}, [ACME])
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "backend.colour",
        "backend.output",
        "backend.base_url",
        "backend.index",
    ]
    for url in ("https://x.example/?q=1", "https://x.example/#top", "example.org", "https:// x"):
        with pytest.raises(ConfigError):
            local(tmp_path, url)


# Small pure helpers


@pytest.mark.parametrize(
    ("number", "uri"),
    [
        ("+1 (206) 555-0142", "tel:+12065550142"),
        ("0711 123 456 ext. 12", "tel:0711123456"),
        ("+49 30 1234-0 x7", "tel:+493012340"),
        ("n/a", ""),
        ("<script>", ""),
    ],
)
def test_tel_uri(number: str, uri: str) -> None:
    assert tel_uri(number) == uri


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"given_name": "adele", "surname": "vance"}, "AV"),
        ({"display_name": "Madonna"}, "M"),
        ({"display_name": "Jean-Luc de la Picard"}, "JP"),
        ({"display_name": "山田 太郎"}, "山太"),
        ({"display_name": "e\u0301mile zola"}, "E\u0301Z"),
        ({"display_name": "😀 <script>"}, "S"),
        ({}, "?"),
    ],
)
def test_initials(kwargs: dict[str, str], expected: str) -> None:
    assert initials(Person(**kwargs)) == expected


# In a real browser

BROWSER_HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)> \u202eevil 山田 😀"


def chromium() -> str:
    """The Chromium binary: CI installs it, so there a missing one is a failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: CI must install it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium runs these tests)")


def run_chromium(tmp_path: Path, *args: str) -> str:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_browser_dom_shows_hostile_name_as_text(
    backend: LocalBackend, site: Path, tmp_path: Path
) -> None:
    backend.publish(card(person=person(BROWSER_HOSTILE, job_title=BROWSER_HOSTILE)))
    page_path = site / "acme" / "k3x9q2m7" / "index.html"
    dom = Page(run_chromium(tmp_path, "--dump-dom", page_path.as_uri()))
    assert dom.texts["h1"] == [BROWSER_HOSTILE]
    assert BROWSER_HOSTILE in dom.texts["p"]
    assert not dom.tags("script")
    assert [img["src"] for img in dom.tags("img")] == ["qr.svg"]
    assert all(not name.startswith("on") for _, attrs in dom.elements for name in attrs)


@pytest.mark.parametrize("template", ["classic", "minimal"])
def test_browser_renders_the_card_on_a_phone(site: Path, tmp_path: Path, template: str) -> None:
    backend = local(site, orgs=[replace(ACME, template=template)])
    url = backend.publish(card()).url
    page_path = site / "acme" / "k3x9q2m7" / "index.html"
    shot = tmp_path / "phone.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=390,844", page_path.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (390, 844)
    assert len(image.getcolors(1 << 16) or ()) > 50, "the page rendered (nearly) blank"
    # Taller, so the QR code is in view: it must render large and crisp enough to scan.
    tall = tmp_path / "tall.png"
    run_chromium(tmp_path, f"--screenshot={tall}", "--window-size=390,1400", page_path.as_uri())
    found = zxingcpp.read_barcode(Image.open(tall))
    assert found is not None and found.text == url
