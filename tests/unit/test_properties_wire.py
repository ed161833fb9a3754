"""Property-based tests of every wire parser and writer (Hypothesis, profile
"ci" from conftest.py: derandomized, fixed budget).

Properties: a parser raises nothing but its documented error type; its work
is bounded by the input size; what we write is always well-formed and parses
back.  A regression corpus holds each input issue 8 named.
"""

import json

from hypothesis import given, strategies as st

from azure_firstboot import protocol as p

# ------------------------------------------------------------------- JSON

_JSON_SCALARS = (st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30)
                 | st.floats(allow_nan=False, allow_infinity=False) | st.text())
JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30)


@given(JSON_VALUES, st.booleans())
def test_json_round_trips_what_json_writes(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only, indent=None if ascii_only else 1)
    assert p.parse_json(text.encode("utf-8")) == value


@given(st.binary(max_size=300) | st.text(alphabet='{}[]",:0123456789.eE+-\\u tfrnalsx\x00\ud800',
                                         max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_json_garbage_gives_protocol_error_or_what_json_gives(data):
    try:
        value = p.parse_json(data)
    except p.ProtocolError as exc:
        assert "\n" not in str(exc)
        return
    assert value == json.loads(data.decode("utf-8"))


@given(st.integers(1, 5000), st.sampled_from("[{"))
def test_json_depth_is_a_protocol_error_never_recursion(depth, opener):
    doc = (opener + ('"k":' if opener == "{" else "")) * depth
    try:
        p.parse_json(doc)
    except p.ProtocolError as exc:
        assert ("nested deeper" in str(exc)) == (depth > p.JSON_MAX_DEPTH)
