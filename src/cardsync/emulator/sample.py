"""A deterministic sample company: realistic, Unicode-rich users for tests and the demo.

Names come from many scripts and conventions (accents, CJK surname-first, RTL, apostrophes,
hyphens), because card rendering and vCards must survive them. Some properties are left out
on purpose, as in real directories: not everyone has a mobile phone or a job title.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Culture:
    given: tuple[tuple[str, str], ...]  # (as written, Latin spelling for the mailbox)
    surnames: tuple[tuple[str, str], ...]
    surname_first: bool = False  # displayName "王小明", not "小明 王"


_CULTURES = (
    _Culture(
        (
            ("Ada", "Ada"),
            ("Grace", "Grace"),
            ("Emily", "Emily"),
            ("John", "John"),
            ("Liam", "Liam"),
        ),
        (("Lovelace", "Lovelace"), ("Hopper", "Hopper"), ("O'Brien", "OBrien"), ("Smith", "Smith")),
    ),
    _Culture(
        (("José", "Jose"), ("María", "Maria"), ("Lucía", "Lucia"), ("Andrés", "Andres")),
        (("García Márquez", "Garcia"), ("Núñez", "Nunez"), ("Peña", "Pena"), ("Müller", "Muller")),
    ),
    _Culture(
        (
            ("Jürgen", "Juergen"),
            ("Anne-Marie", "Anne-Marie"),
            ("Klaus", "Klaus"),
            ("Jörg", "Joerg"),
        ),
        (
            ("Müller", "Mueller"),
            ("Weiß", "Weiss"),
            ("Schäfer", "Schaefer"),
            ("von Bülow", "Buelow"),
        ),
    ),
    _Culture(
        (("Søren", "Soren"), ("Åsa", "Asa"), ("Bjørn", "Bjorn"), ("Sigríður", "Sigridur")),
        (
            ("Ørsted", "Orsted"),
            ("Åberg", "Aberg"),
            ("Lindqvist", "Lindqvist"),
            ("Þórsson", "Thorsson"),
        ),
    ),
    _Culture(
        (("Zoë", "Zoe"), ("Chloé", "Chloe"), ("François", "Francois"), ("Hélène", "Helene")),
        (("Lefèvre", "Lefevre"), ("Dubois", "Dubois"), ("Œuvray", "Oeuvray"), ("Gagné", "Gagne")),
    ),
    _Culture(
        (("小明", "Xiaoming"), ("丽", "Li"), ("伟", "Wei"), ("静", "Jing")),
        (("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("陈", "Chen")),
        surname_first=True,
    ),
    _Culture(
        (("花子", "Hanako"), ("健", "Ken"), ("さくら", "Sakura"), ("翔太", "Shota")),
        (("佐藤", "Sato"), ("鈴木", "Suzuki"), ("高橋", "Takahashi"), ("渡辺", "Watanabe")),
        surname_first=True,
    ),
    _Culture(
        (("Łukasz", "Lukasz"), ("Zofia", "Zofia"), ("Ayşe", "Ayse"), ("Çağan", "Cagan")),
        (
            ("Wałęsa", "Walesa"),
            ("Kowalski", "Kowalski"),
            ("Yılmaz", "Yilmaz"),
            ("Öztürk", "Ozturk"),
        ),
    ),
    _Culture((("ليلى", "Layla"), ("عمر", "Omar")), (("حداد", "Haddad"), ("الفارسي", "Alfarsi"))),
    _Culture((("Νίκος", "Nikos"), ("Ελένη", "Eleni")), (("Παπαδόπουλος", "Papadopoulos"),)),
    _Culture((("प्रिया", "Priya"), ("Arjun", "Arjun")), (("शर्मा", "Sharma"), ("Iyer", "Iyer"))),
)

# The first users are always these, so the demo shows the hard cases on its first screen.
_FEATURED = (
    ("José", "Müller", "Jose", "Muller", False),
    ("Zoë", "Lefèvre", "Zoe", "Lefevre", False),
    ("小明", "王", "Xiaoming", "Wang", True),
    ("Søren", "Ørsted", "Soren", "Orsted", False),
)


@dataclass(frozen=True)
class _Office:
    name: str
    street: str
    city: str
    state: str | None
    postal_code: str
    country: str
    usage_location: str
    phone_prefix: str
    language: str


_OFFICES = (
    _Office(
        "Redmond B4",
        "1 Microsoft Way",
        "Redmond",
        "WA",
        "98052",
        "United States",
        "US",
        "+1 425 555",
        "en-US",
    ),
    _Office(
        "München Parkstadt",
        "Walter-Gropius-Straße 5",
        "München",
        "Bayern",
        "80807",
        "Germany",
        "DE",
        "+49 89 3176",
        "de-DE",
    ),
    _Office(
        "Issy 3",
        "39 Quai du Président Roosevelt",
        "Issy-les-Moulineaux",
        "Île-de-France",
        "92130",
        "France",
        "FR",
        "+33 1 5700",
        "fr-FR",
    ),
    _Office(
        "Lyngby",
        "Kanalvej 7",
        "Kongens Lyngby",
        None,
        "2800",
        "Denmark",
        "DK",
        "+45 4489",
        "da-DK",
    ),
    _Office(
        "上海紫竹",
        "丹桂路999号",
        "上海市",
        "上海",
        "200241",
        "China",
        "CN",
        "+86 21 6188",
        "zh-CN",
    ),
    _Office(
        "品川",
        "港南2-16-3",
        "港区",
        "東京都",
        "108-0075",
        "Japan",
        "JP",
        "+81 3 4332",
        "ja-JP",
    ),
    _Office(
        "Vila Olímpia",
        "Av. Pres. Juscelino Kubitschek, 1909",
        "São Paulo",
        "SP",
        "04543-907",
        "Brazil",
        "BR",
        "+55 11 5504",
        "pt-BR",
    ),
)

_DEPARTMENTS = {
    "Engineering": (
        "Software Engineer",
        "Senior Software Engineer",
        "Principal Engineer",
        "Engineering Manager",
        "Site Reliability Engineer",
    ),
    "Sales": ("Account Executive", "Sales Manager", "Sales Development Representative"),
    "Marketing": ("Marketing Specialist", "Content Strategist", "Head of Brand"),
    "Finance": ("Accountant", "Financial Analyst", "Controller"),
    "Human Resources": ("HR Business Partner", "Recruiter", "People Operations Lead"),
    "Customer Success": ("Customer Success Manager", "Support Engineer"),
    "Research & Development": ("Research Scientist", "Data Scientist", "Lab Technician"),
    "Legal": ("Counsel", "Paralegal"),
}
_DEPARTMENT_NAMES = tuple(_DEPARTMENTS)

# Letters NFKD does not split into a base letter and an accent.
_FOLD = str.maketrans(
    {"ø": "o", "æ": "ae", "ß": "ss", "ł": "l", "đ": "d", "ı": "i", "œ": "oe", "þ": "th"}
)


def _mailbox(given: str, surname: str) -> str:
    """``josé müller`` -> ``jose.muller``: ASCII for the local part of a UPN."""
    text = f"{given}.{surname}".lower().translate(_FOLD)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9.-]", "", text)


def _name(i: int, rng: random.Random) -> tuple[str, str, str, str, bool]:
    if i < len(_FEATURED):
        return _FEATURED[i]
    culture = rng.choice(_CULTURES)
    (given, given_latin), (surname, surname_latin) = (
        rng.choice(culture.given),
        rng.choice(culture.surnames),
    )
    return given, surname, given_latin, surname_latin, culture.surname_first


def sample_users(n: int, seed: int = 0, domain: str = "contoso.com") -> list[dict[str, Any]]:
    """``n`` users as Graph camelCase property dicts, the same for the same arguments."""
    rng = random.Random(seed)
    company = domain.split(".")[0].capitalize()
    taken: dict[str, int] = {}
    users = []
    for i in range(n):
        given, surname, given_latin, surname_latin, surname_first = _name(i, rng)
        display = f"{surname}{given}" if surname_first else f"{given} {surname}"
        box = _mailbox(given_latin, surname_latin)
        taken[box] = taken.get(box, 0) + 1
        if taken[box] > 1:
            box = f"{box}{taken[box]}"
        office = rng.choice(_OFFICES)
        department = rng.choice(_DEPARTMENT_NAMES)
        user: dict[str, Any] = {
            "displayName": display,
            "givenName": given,
            "surname": surname,
            "userPrincipalName": f"{box}@{domain}",
            "mail": f"{box}@{domain}",
            "mailNickname": box,
            "companyName": company,
            "department": department,
            "employeeId": f"E{100000 + i}",
            "officeLocation": office.name,
            "streetAddress": office.street,
            "city": office.city,
            "state": office.state,
            "postalCode": office.postal_code,
            "country": office.country,
            "usageLocation": office.usage_location,
            "preferredLanguage": office.language,
            "businessPhones": [f"{office.phone_prefix} {i % 10000:04d}"],
            "accountEnabled": True,
            "userType": "Member",
        }
        roll = rng.random()
        if roll < 0.97:
            user["jobTitle"] = rng.choice(_DEPARTMENTS[department])
        if roll < 0.8:
            country_code = office.phone_prefix.split()[0]
            user["mobilePhone"] = f"{country_code} {rng.randrange(10**8, 10**9)}"
        users.append(user)
    return users
