"""mamori.bounds: the nesting scan agrees with json.loads, and cuts exactly what is too deep."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mamori.bounds import TOO_DEEP, check_pattern, deep_line, load_json, prune_deep
from mamori.config import InputLimitsConfig

# strings full of what could fool a scan: brackets, quotes, backslashes, escapes
_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\,:ab\n\u00e9\u2028'), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=40,
)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@given(_JSON, st.sampled_from([None, 0, 2]))
def test_within_the_bound_nothing_changes(doc: Any, indent: int | None) -> None:
    text = json.dumps(doc, indent=indent)
    got, cut = load_json(text, max(_depth(doc), 1))
    assert got == doc
    assert cut == []


@given(_JSON, st.integers(min_value=1, max_value=4))
def test_past_the_bound_each_deep_subtree_is_cut_and_found(doc: Any, bound: int) -> None:
    text = json.dumps(doc, ensure_ascii=False)
    got, cut = load_json(text.encode(), bound)
    assert _depth(got) <= bound + 1  # a marker object sits where a subtree was cut
    assert (cut != []) == (_depth(doc) > bound)
    assert (deep_line(got) is not None) == (_depth(doc) > bound)


@pytest.mark.parametrize(
    ("text", "lines", "kept"),
    [
        ("[" * 100_000 + "]" * 100_000, [1], None),
        ('[1, "[[[[", [[["x"]]], 2]', [1], [1, "[[[[", [["MARK"]], 2]),
        ('{"a": "\\\\", "b": [[["\\"[[["]]]}', [1], {"a": "\\", "b": [["MARK"]]}),
        ("[[1],\n [[[2]]],\n [[[[3]]]]]", [2, 3], [[1], [["MARK"]], [["MARK"]]]),
    ],
)
def test_cuts(text: str, lines: list[int], kept: Any) -> None:
    got, cut = load_json(text, 3 if kept is not None else 10)
    assert cut == lines
    if kept is not None:
        assert _marked(got) == kept


def _marked(v: Any) -> Any:
    """``v`` with each cut shown as "MARK"."""
    if isinstance(v, dict):
        return "MARK" if TOO_DEEP in v else {k: _marked(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_marked(x) for x in v]
    return v


def test_unclosed_nesting_is_cut_to_the_end_and_does_not_recurse() -> None:
    pruned, cut = prune_deep(b'{"a": ' + b"[" * 50_000, 8)
    assert cut == [1] and len(pruned) < 200
    with pytest.raises(ValueError):
        json.loads(pruned)


def test_utf16_is_scanned_as_text() -> None:
    got, cut = load_json(('{"k": ' + "[" * 5000 + "]" * 5000 + "}").encode("utf-16"), 8)
    assert cut == [1] and deep_line(got) == 1


LIMITS = InputLimitsConfig()


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("[ipv4-addr:value = '10.0.0.1']", None),
        ("[a:b = '" + " OR " * 500 + "']", None),  # inside a quoted value: not operators
        ("[" + " OR ".join(["a:b = 1"] * 130) + "]", "129 operators"),
        ("[a:b = 1]" + " REPEATS 2 TIMES" * 200, "200 operators"),
        ("(" * 40 + "[a:b = 1]" + ")" * 40, "41 brackets"),
        ("[a:b = '" + "x" * 20_000 + "']", "characters"),
    ],
)
def test_pattern_bounds(pattern: str, why: str | None) -> None:
    if why is None:
        check_pattern(pattern, LIMITS)
    else:
        with pytest.raises(ValueError, match=why):
            check_pattern(pattern, LIMITS)
