"""A JSON parser for the ovs library's JSON-RPC, built on the stdlib's C json.

The PyPI `ovs` package parses incoming JSON in pure Python when its C extension is
not built (it needs OVS's C library headers, which Debian bookworm does not package).
That parser dominates every read of a few hundred rows. This class has the same
interface (`feed`, `is_done`, `finish`) and finds the end of a message with a regex
scan of brackets and strings, then decodes it in one `json.loads`.

`install()` puts it in place only when the ovs library would use its Python parser;
the modules that open connections (rpc.connect, connection.Connection) call it
before they do (it is idempotent), so importing vucompat changes nothing by itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

import ovs.json

#: outside a string, the characters that matter
_SPECIAL = re.compile(r'["{}\[\]]')
#: a whole string without escapes, quotes included
_PLAIN_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r'[^{}\[\]]+')
#: the rest of a string after its opening quote, up to and including the closing one
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class StdlibJsonParser:
    """Incremental parser of one JSON object or array, as ovs.json.Parser."""

    def __init__(self, check_trailer: bool = False) -> None:
        self._chunks: list[str] = []  # scanned text (joined once, at the end: no quadratic copying)
        self._tail = ""  # not scanned yet: at most an unfinished string from the previous chunk
        self._depth = 0
        self._text: str | None = None

    def feed(self, data: str) -> int:
        """Take `data`; return how many of its characters belong to this value."""
        if self._text is not None:
            return 0
        carried = len(self._tail)
        text = self._tail + data
        # most chunks do not end the value: follow only their brackets, found outside
        # strings by two regex subs in C, not one token at a time. Without a backslash
        # every quote delimits a string: an odd count means the last string goes on in the
        # next chunk, and waits there as the tail. (Otherwise: the scan below.)
        if "\\" not in text:
            cut = text.rfind('"') if text.count('"') % 2 else len(text)
            depth = self._depth
            for char in _NOT_BRACKET.sub("", _PLAIN_STRING.sub("", text[:cut])):
                depth += 1 if char in "{[" else -1
                if depth == 0:
                    break  # the value ends in this chunk: find where, below
            else:
                self._chunks.append(text[:cut])
                self._tail, self._depth = text[cut:], depth
                return len(data)
        position = 0
        while True:
            match = _SPECIAL.search(text, position)
            if match is None:
                self._chunks.append(text)
                self._tail = ""
                return len(data)
            char = match.group()
            if char == '"':
                rest = _STRING_REST.match(text, match.end())
                if rest is None:  # the string goes on in the next chunk: scan it then
                    self._chunks.append(text[:match.start()])
                    self._tail = text[match.start():]
                    return len(data)
                position = rest.end()
                continue
            self._depth += 1 if char in "{[" else -1
            position = match.end()
            if self._depth == 0:
                self._chunks.append(text[:position])
                self._text = "".join(self._chunks)
                self._chunks, self._tail = [], ""
                return position - carried

    def is_done(self) -> bool:
        return self._text is not None

    def finish(self) -> Any:
        """Return the value, or an error message (a str), as ovs.json.Parser does."""
        if self._text is None:
            return "unexpected end of input"
        try:
            return json.loads(self._text)
        except ValueError as err:
            return f"syntax error: {err}"


def install() -> None:
    """Use StdlibJsonParser in the ovs library when it would parse in pure Python."""
    if ovs.json.PARSER == ovs.json.PARSER_PY and ovs.json.Parser is not StdlibJsonParser:
        ovs.json.Parser = StdlibJsonParser  # type: ignore[misc, assignment]
