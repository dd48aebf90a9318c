"""output.print_json: json.dumps(indent=2) text, written piece by piece."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cardsync.output import JsonArray, print_json

_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                    st.floats(allow_nan=False, allow_infinity=False))
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=4),
    max_leaves=20,
)


def written(data: Any) -> str:
    buf = io.StringIO()
    print_json(data, buf)
    return buf.getvalue()


@given(_JSON)
def test_the_text_is_json_dumps_with_indent_2(data: Any) -> None:
    assert written(data) == json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def test_arrays_are_streamed_from_their_iterable():
    taken: list[int] = []

    def rows():
        for i in range(3):
            taken.append(i)
            yield {"n": i, "name": f"Zoë {i}"}

    array = JsonArray(rows())
    assert taken == []  # nothing is read before writing starts
    text = written({"org": "acme", "actions": array, "empty": JsonArray(iter(()))})
    assert taken == [0, 1, 2]
    assert json.loads(text) == {
        "org": "acme", "actions": [{"n": i, "name": f"Zoë {i}"} for i in range(3)], "empty": []
    }
    expected = {"org": "acme", "actions": [{"n": i, "name": f"Zoë {i}"} for i in range(3)],
                "empty": []}
    assert text == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
