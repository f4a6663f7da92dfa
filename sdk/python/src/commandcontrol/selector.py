"""The CLI's machine selector (bench/selector.go): comma-separated terms, all
of which must hold: key=value, key!=value, key=glob (* ? [a-z]). A key is a
label or one of the facts machine, ip, hostname; a missing label is ""."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, TypeVar

MAX_SELECTOR_LEN = 4096
FACT_MACHINE = "machine"
FACT_IP = "ip"
FACT_HOSTNAME = "hostname"


@dataclass(frozen=True)
class _Term:
    key: str
    pattern: str
    negate: bool
    glob: Optional["re.Pattern[str]"]


def _glob_regex(pattern: str) -> "re.Pattern[str]":
    """path.Match semantics: * and ? never match "/"; [..] classes with ^ or !
    negation; \\ escapes. Raise ValueError on a malformed pattern."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError("syntax error in pattern")
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = i + 1
            neg = j < n and pattern[j] == "^"
            if neg:
                j += 1
            cls = []
            first = True
            while True:
                if j >= n:
                    raise ValueError("syntax error in pattern")
                ch = pattern[j]
                if ch == "]" and not first:
                    break
                first = False
                if ch == "\\":
                    j += 1
                    if j >= n:
                        raise ValueError("syntax error in pattern")
                    ch = pattern[j]
                lo = ch
                j += 1
                if j < n and pattern[j] == "-":
                    j += 1
                    if j >= n or pattern[j] == "]":
                        raise ValueError("syntax error in pattern")
                    hi = pattern[j]
                    if hi == "\\":
                        j += 1
                        if j >= n:
                            raise ValueError("syntax error in pattern")
                        hi = pattern[j]
                    j += 1
                    cls.append(re.escape(lo) + "-" + re.escape(hi))
                else:
                    cls.append(re.escape(lo))
            out.append(("[^" if neg else "[") + "".join(cls) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _fact(key: str, machine: str, labels: Optional[Mapping[str, str]]) -> str:
    if key == FACT_MACHINE:
        return machine
    if key == FACT_IP:
        return machine.split("_", 1)[0]
    if key == FACT_HOSTNAME:
        parts = machine.split("_", 1)
        return parts[1] if len(parts) == 2 else ""
    return labels.get(key, "") if labels else ""


_BAD_KEY = re.compile(r"[\x00-\x20*?\[\]\\]")

T = TypeVar("T")


class Selector:
    """A parsed selector; Selector("") selects every machine."""

    __slots__ = ("_terms", "text")

    def __init__(self, text: str = "") -> None:
        if len(text) > MAX_SELECTOR_LEN:
            raise ValueError(f"selector is {len(text)} characters long; at most {MAX_SELECTOR_LEN} are allowed")
        self._terms: list[_Term] = []
        if text.strip():
            self._terms = [_parse_term(raw.strip()) for raw in text.split(",")]
        self.text = str(self)

    @classmethod
    def parse(cls, text: str) -> "Selector":
        return cls(text)

    @property
    def terms(self) -> int:
        """How many terms; 0 selects every machine."""
        return len(self._terms)

    def empty(self) -> bool:
        return not self._terms

    def __str__(self) -> str:
        return ",".join(t.key + ("!=" if t.negate else "=") + t.pattern for t in self._terms)

    def __repr__(self) -> str:
        return f"Selector({str(self)!r})"

    def match(self, machine: str, labels: Optional[Mapping[str, str]] = None) -> bool:
        for t in self._terms:
            v = _fact(t.key, machine, labels)
            ok = t.glob.fullmatch(v) is not None if t.glob is not None else v == t.pattern
            if ok == t.negate:
                return False
        return True

    def filter(self, servers: Iterable[T]) -> list[T]:
        """The servers (anything with .machine and .labels) selected, sorted by machine."""
        out = [s for s in servers if self.match(getattr(s, "machine"), getattr(s, "labels"))]
        out.sort(key=lambda s: str(getattr(s, "machine")))
        return out


def _parse_term(s: str) -> _Term:
    if s == "":
        raise ValueError("selector has an empty term: remove the extra comma")
    m = re.search(r"[!=]", s)
    if m is None:
        raise ValueError(f"selector term {s!r}: want key=value or key!=value")
    i = m.start()
    key = s[:i].strip()
    rest = s[i:]
    if rest.startswith("!="):
        negate, pattern = True, rest[2:]
    elif rest[0] == "=":
        negate, pattern = False, rest[1:]
    else:
        raise ValueError(f"selector term {s!r}: want key=value or key!=value")
    pattern = pattern.strip()
    if key == "":
        op = "!=" if negate else "="
        raise ValueError(f"selector term {s!r}: the key before {op!r} is empty; want key=value")
    bad = _BAD_KEY.search(key)
    if bad is not None:
        raise ValueError(f"selector term {s!r}: key {key!r} has {bad.group()!r}, which a key may not contain")
    glob = None
    if any(c in pattern for c in "*?[\\"):
        try:
            glob = _glob_regex(pattern)
        except (ValueError, re.error) as e:
            raise ValueError(f"selector term {s!r}: bad pattern {pattern!r}: {e}") from None
    return _Term(key, pattern, negate, glob)


def as_selector(where: "str | Selector | Mapping[str, str] | None") -> Selector:
    """A selector from its text, a Selector, or a mapping of key → value
    (each must equal, literally: no wildcards)."""
    if where is None:
        return Selector()
    if isinstance(where, Selector):
        return where
    if isinstance(where, str):
        return Selector(where)
    if isinstance(where, Mapping):
        sel = Selector()
        for k, v in where.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"selector mapping: want str keys and values, got {k!r}: {v!r}")
            if not k.strip() or _BAD_KEY.search(k):
                raise ValueError(f"selector mapping: key {k!r} is empty or has a character a key may not contain")
            sel._terms.append(_Term(k, v, False, None))
        sel.text = str(sel)
        return sel
    raise ValueError(f"where: want a selector string, a Selector or a mapping of label to value, not {type(where).__name__}")


__all__ = ["Selector", "as_selector"]
