"""Version rules of the compat tables: what a mode's `version` may be, what of it goes
into the mode's name, and how the versions of one lineage are ordered. A table names
its scheme (`version_scheme`, docs/tables.md "Versions"):

- ``natural`` (the default): letters and digits in parts joined by single '.', '-' or
  '_' (3.1.0, 3.1.0-tso); ordered by natural order (digit runs as numbers).
- ``debian``: a Debian package version, ``[epoch:]upstream_version[-debian_revision]``
  (Debian Policy 5.6.12): 3.1.0-2+deb12u1, 1:2.9.0-1~bpo9+1, 3.1.0~rc1; ordered as
  dpkg orders them.
- ``rpm``: an RPM ``[epoch:]version[-release]``: 3.1.0-65.el9, 1.0^git1; ordered as
  rpm orders them (rpmvercmp on the version, then on the release).

The epoch is never part of a mode's name, as it is not part of a .deb's or an .rpm's
file name: ':' cannot be in a name `ovs-vsctl` takes in a map literal, a `find` or a
`remove`. The mode's `version` keeps it (it orders the modes). Every character a name
may hold ('.', '-', '_', '+', '~', '^', letters, digits) survives
`ovs-vsctl ... options:vhost-compat=NAME` unquoted.

Pure. The comparison is written here from the documented rules (Debian Policy
5.6.12; rpm's rpmvercmp), as sort keys: tuples that order as the package manager
does. A sort key never raises, whatever the string (registry rows may hold
anything); `problem` is the validation.
"""

from __future__ import annotations

import re
from typing import Any

NATURAL, DEBIAN, RPM = "natural", "debian", "rpm"
#: the schemes a table may name in `version_scheme`; the first is the default
SCHEMES: tuple[str, ...] = (NATURAL, DEBIAN, RPM)
#: the longest version, as written (epoch included)
MAX_LENGTH = 64
#: the most digits in one number of a version (a date stamp such as 20240131 has 8)
MAX_DIGITS = 18
#: a version may not end so: `<mode>+recommended` is the name of a derived mode
RESERVED_SUFFIX = "+recommended"

_WHAT = {NATURAL: "the natural scheme (the default)", DEBIAN: "a Debian version", RPM: "an RPM version"}
_CHARS = {
    NATURAL: frozenset("._-"),
    DEBIAN: frozenset(".+~-"),  # Debian Policy 5.6.12 (and ':' after the epoch)
    RPM: frozenset("._+~^-"),  # rpmbuild's allowed characters in a version and a release, less macros
}
_ALLOWED_TEXT = {
    NATURAL: "letters and digits in parts joined by single '.', '-' or '_', e.g. 3.1.0 or 3.1.0-tso",
    DEBIAN: "letters, digits and . + ~ - (Debian Policy 5.6.12), e.g. 3.1.0-2+deb12u1",
    RPM: "letters, digits and . _ + ~ ^, one '-' before the release, e.g. 3.1.0-65.el9",
}
_DIGITS = re.compile(r"[0-9]+")
#: a valid natural version, but for the count of digits (the common case, checked at once)
_NATURAL_VERSION = re.compile(r"[0-9A-Za-z]+(?:[._-][0-9A-Za-z]+)*\Z")
_DIGIT_RUNS = re.compile(r"([0-9]+)")


def is_scheme(scheme: Any) -> bool:
    """Whether `scheme` is one of SCHEMES."""
    return isinstance(scheme, str) and scheme in SCHEMES


def name_part(version: str, scheme: str = NATURAL) -> str:
    """The part of `version` a mode's name holds: the version without a Debian or RPM
    epoch (`1:2.9.0-1` -> `2.9.0-1`)."""
    if scheme != NATURAL and ":" in version:
        epoch, rest = version.split(":", 1)
        if epoch.isascii() and epoch.isdigit():
            return rest
    return version


def problem(version: str, scheme: str = NATURAL) -> str | None:
    """What is wrong with `version` under `scheme`, as a sentence that says what to do;
    None when it is valid. (Its length, at most MAX_LENGTH, is the table schema's.)"""
    if not version:
        return "is empty: write the version, e.g. 3.1.0"
    if scheme == NATURAL and _NATURAL_VERSION.match(version) and len(version) <= MAX_DIGITS:
        return None
    allowed = _CHARS[scheme] | {":"}  # (":" only after an epoch; the natural scheme refuses it below)
    bad = next((c for c in version if not (c.isascii() and c.isalnum()) and c not in allowed), None)
    if bad is not None:
        return _bad_character(bad, version, scheme)
    longest = max((len(run) for run in _DIGITS.findall(version)), default=0)
    if longest > MAX_DIGITS:
        return (f"a number of {longest} digits in the version: at most {MAX_DIGITS} digits per number "
                f"(a version is e.g. 3.1.0 or 3.1.0-2)")
    if scheme == NATURAL:
        return _natural_problem(version)
    if version.count(":") > 1:
        return f"has more than one ':': only an epoch is followed by ':' ({'1:2.9.0-1' if scheme == DEBIAN else '1:3.1.0-65.el9'})"
    if ":" in version:
        epoch, rest = version.split(":", 1)
        if not (epoch.isascii() and epoch.isdigit()):
            return (f"the epoch {epoch!r} (before ':') is not a number: an epoch is an unsigned integer, "
                    f"e.g. 1:{rest or '2.9.0-1'}")
        if not rest:
            return f"has nothing after the epoch '{epoch}:': write the version after it, e.g. {epoch}:2.9.0-1"
    else:
        rest = version
    found = _debian_problem(rest) if scheme == DEBIAN else _rpm_problem(rest)
    if found:
        return found
    if not rest[-1].isalnum() and rest[-1] not in "~+^":
        ends = "a letter, a digit, '~', '+' or '^'" if scheme == RPM else "a letter, a digit, '~' or '+'"
        return f"ends with '{rest[-1]}': end the version with {ends}"
    if version.endswith(RESERVED_SUFFIX):
        return (f"ends with '{RESERVED_SUFFIX}', which names a derived mode (<mode>{RESERVED_SUFFIX}: the mode "
                "without its deprecated features): write the version otherwise")
    return None


def _bad_character(bad: str, version: str, scheme: str) -> str:
    shown = repr(bad) if not bad.isprintable() or bad.isspace() else f"'{bad}'"
    where = version.index(bad) + 1
    if scheme == NATURAL and bad in "+~^:":
        return (f"{shown} (character {where}) is not allowed in {_WHAT[NATURAL]}: for a Debian or RPM package "
                "version write version_scheme = \"debian\" or \"rpm\" at the top of the table (docs/tables.md, "
                "\"Versions\"); otherwise write '-' for it")
    if scheme == DEBIAN and bad in "_^":
        fix = "for an RPM version, use version_scheme = \"rpm\"" if bad == "^" else "write '.' or '+' for it"
        return (f"{shown} (character {where}) is not allowed in {_WHAT[DEBIAN]} (Debian Policy 5.6.12 allows "
                f"letters, digits and . + ~ -): {fix}")
    return f"{shown} (character {where}) is not allowed in {_WHAT[scheme]}: use {_ALLOWED_TEXT[scheme]}"


def _natural_problem(version: str) -> str | None:
    if ":" in version:  # (the other characters are refused above)
        return _bad_character(":", version, NATURAL)
    if not version[0].isalnum():
        return f"starts with '{version[0]}': a version starts with a letter or a digit, e.g. 3.1.0"
    if not version[-1].isalnum():
        return f"ends with '{version[-1]}': a version ends with a letter or a digit; remove it"
    pair = re.search(r"[._-]{2}", version)
    if pair:
        return (f"has two separators in a row ('{pair.group()}', character {pair.start() + 1}): join the parts "
                "with one '.', '-' or '_'")
    return None


def _debian_problem(rest: str) -> str | None:
    """Debian Policy 5.6.12: the upstream version starts with a digit; the revision is
    what follows the last '-', and is not empty when there is a '-'."""
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    if "-" in rest and not revision:
        return ("ends with '-': the Debian revision after the last '-' is empty: remove the '-' or write the "
                "revision, e.g. 3.1.0-1")
    if not upstream:
        return f"has no upstream version before the revision '-{revision}': e.g. 3.1.0-{revision}"
    if not upstream[0].isdigit():
        return (f"the upstream version {upstream!r} does not start with a digit (Debian Policy 5.6.12): e.g. "
                "3.1.0-2; for a version that is not a package's, leave version_scheme out (natural)")
    return None


def _rpm_problem(rest: str) -> str | None:
    """RPM: a version and a release, separated by the one '-' (rpm refuses '-' in either)."""
    if rest.count("-") > 1:
        return ("has more than one '-': an RPM version and release cannot contain '-' (rpm refuses it); the one "
                "'-' separates the version from the release, e.g. 3.1.0-65.el9")
    version, _, release = rest.partition("-")
    if "-" in rest and not release:
        return "ends with '-': the release after '-' is empty: remove the '-' or write the release, e.g. 3.1.0-1"
    if not version:
        return f"has no version before the release '-{release}': e.g. 3.1.0-{release}"
    if not version[0].isalnum():
        return f"starts with '{version[0]}': an RPM version starts with a letter or a digit, e.g. 3.1.0"
    return None


# -- ordering --

def sort_key(version: str, scheme: str = NATURAL) -> tuple[Any, ...]:
    """A key that orders versions of `scheme` as its package manager does (natural:
    natural order). Total and never raises; a scheme it does not know orders naturally."""
    if scheme == DEBIAN:
        epoch, upstream, revision = _split(version, debian=True)
        return (epoch, _dpkg_key(upstream), _dpkg_key(revision))
    if scheme == RPM:
        epoch, upstream, release = _split(version, debian=False)
        return (epoch, _rpm_key(upstream), _rpm_key(release) if release is not None else (_RPM_END,))
    return natural_key(version)


def compare(a: str, b: str, scheme: str = NATURAL) -> int:
    """-1, 0 or 1 as `a` is older than, the same version as, or newer than `b`."""
    ka, kb = sort_key(a, scheme), sort_key(b, scheme)
    return (ka > kb) - (ka < kb)


def natural_key(text: str) -> tuple[Any, ...]:
    """Return a key that orders 'v2.9' before 'v2.10'.

    A run of digits compares as a number without converting it (int() refuses over
    4300 digits): by its count of significant digits, then the digits."""
    parts = _DIGIT_RUNS.split(text)
    return tuple(part if i % 2 == 0 else _number(part) for i, part in enumerate(parts))


def _number(digits: str) -> tuple[int, str]:
    """A run of ASCII digits as a key that orders numerically (leading zeros ignored)."""
    significant = digits.lstrip("0")
    return (len(significant), significant)


def _split(version: str, debian: bool) -> tuple[tuple[int, str], str, str | None]:
    """(epoch, version, revision or release): the epoch before the first ':' when it is
    a number (else 0, and the whole string is the version); the revision (Debian) or
    release (RPM) after the last '-' (Debian: "" when there is none; RPM: None)."""
    epoch = _number("0")
    if ":" in version:
        head, rest = version.split(":", 1)
        if head.isascii() and head.isdigit():
            epoch, version = _number(head), rest
    if "-" in version:
        head, _, tail = version.rpartition("-")
        return epoch, head, tail
    return epoch, version, "" if debian else None


def _dpkg_order(c: str) -> int:
    """dpkg's weight of a character outside a number: '~' before everything, even the end
    of the part (0); then letters; then every other character (after all letters)."""
    if c == "~":
        return -1
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _dpkg_key(text: str) -> tuple[Any, ...]:
    """The dpkg order of an upstream version or a revision (Debian Policy 5.6.12): the
    string is split into a non-digit run and a digit run, alternately, from the start;
    non-digit runs compare character by character by _dpkg_order, the end of a run
    weighing 0 (so '~' sorts before it, letters and others after); digit runs compare
    as numbers (an empty run is 0).

    As a key: the first pair (whose non-digit run may be empty), then each further pair
    (whose non-digit run never is), then an end marker that weighs what a missing pair
    does (an empty run and 0): where one string has ended and the other goes on, the
    marker meets a non-empty run and the first character decides, as in dpkg."""
    pairs: list[tuple[tuple[int, ...], tuple[int, str]]] = []
    i, n = 0, len(text)
    while True:
        j = i
        while j < n and not ("0" <= text[j] <= "9"):
            j += 1
        k = j
        while k < n and "0" <= text[k] <= "9":
            k += 1
        pairs.append((tuple(_dpkg_order(c) for c in text[i:j]) + (0,), _number(text[j:k])))
        i = k
        if i >= n:
            break
    return tuple(pairs) + (_DPKG_END,)


_DPKG_END = ((0,), _number(""))

#: rpmvercmp's order of what can follow: '~' before the end, the end before '^', '^'
#: before any segment; a letter segment before a number segment
_RPM_TILDE, _RPM_END, _RPM_CARET, _RPM_ALPHA, _RPM_NUMBER = (0,), (1,), (2,), 3, 4
_RPM_TOKENS = re.compile(r"~|\^|[0-9]+|[A-Za-z]+")


def _rpm_key(text: str) -> tuple[Any, ...]:
    """rpm's order of a version or a release (rpmvercmp): every character but a letter,
    a digit, '~' and '^' separates and is otherwise ignored (1.0 and 1_0 are the same);
    the segments (letters, or digits) and the '~' and '^' that remain compare one by
    one: '~' sorts before anything, even the end; '^' after the end but before any
    segment; a number segment after a letter one; numbers as numbers, letters as ASCII."""
    out: list[Any] = []
    for token in _RPM_TOKENS.findall(text):
        if token == "~":
            out.append(_RPM_TILDE)
        elif token == "^":
            out.append(_RPM_CARET)
        elif token[0].isdigit():
            out.append((_RPM_NUMBER, _number(token)))
        else:
            out.append((_RPM_ALPHA, token))
    return tuple(out) + (_RPM_END,)
