"""The stdlib-backed JSON parser handed to the ovs library's JSON-RPC."""

import json

from hypothesis import given, strategies as st

from vucompat.ovsdb.fastjson import StdlibJsonParser

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab"\\{}[]:, \n\u00e9\t'),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)


def parse_in_chunks(text: str, cut: int):
    parser, consumed = StdlibJsonParser(), 0
    for chunk in (text[:cut], text[cut:]):
        used = parser.feed(chunk)
        consumed += used
        if parser.is_done():
            return parser.finish(), consumed
    return None, consumed


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=5), st.data())
def test_any_message_split_anywhere_parses_like_the_stdlib(message, data):
    text = json.dumps(message)
    follower = json.dumps({"id": 2})
    cut = data.draw(st.integers(0, len(text) + len(follower)))
    value, consumed = parse_in_chunks(text + follower, cut)
    assert value == message
    assert consumed == len(text)  # the next message stays for the next parser


def test_escaped_quotes_and_brackets_in_strings():
    text = r'{"a": "x\"}]\\", "b": ["{", "]", "\\\\\""]}'
    for cut in range(len(text) + 1):
        value, _ = parse_in_chunks(text, cut)
        assert value == json.loads(text)


def test_incomplete_input_is_not_done():
    parser = StdlibJsonParser()
    assert parser.feed('{"a": [1, 2') == 11 and not parser.is_done()
    assert parser.finish() == "unexpected end of input"


def test_importing_vucompat_leaves_the_ovs_library_alone_until_a_connection_opens(tmp_path):
    """The parser is installed by what opens connections, not as a side effect of an import."""
    import subprocess
    import sys

    script = f"""
import ovs.json
import vucompat.api, vucompat.ovsdb.connection, vucompat.ovsdb.rpc as rpc
from vucompat.ovsdb.fastjson import StdlibJsonParser
assert ovs.json.Parser is not StdlibJsonParser, "installed by an import"
try:
    rpc.get_schema("unix:{tmp_path}/absent.sock", "VuCompat", timeout=1)
except rpc.OvsdbError:
    pass
assert ovs.json.Parser is StdlibJsonParser or ovs.json.PARSER != ovs.json.PARSER_PY
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
