"""The CLI's machine selector (bench/selector.go): comma-separated terms, all
of which must hold: key=value, key!=value, key=glob (* ? [a-z]),
key in (a,b), key not in (a,b); groups of them separated by " or " (or ";")
are alternatives. A key is one of machine, ip, hostname, a label, or a fact
the machine's agent reports (os, platform, platform_version, kernel, arch,
cpus, memory, virtualization, container, agent_version), in that order of
precedence; a missing key is ""."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, TypeVar

MAX_SELECTOR_LEN = 4096
FACT_MACHINE = "machine"
FACT_IP = "ip"
FACT_HOSTNAME = "hostname"


@dataclass(frozen=True)
class _Term:
    key: str
    values: tuple[str, ...]
    negate: bool
    globs: tuple[Optional["re.Pattern[str]"], ...]
    is_list: bool = False

    def text(self) -> str:
        if self.is_list:
            return self.key + (" not in (" if self.negate else " in (") + ",".join(self.values) + ")"
        return self.key + ("!=" if self.negate else "=") + self.values[0]


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


def _lookup(key: str, machine: str, labels: Optional[Mapping[str, str]], facts: Any) -> str:
    if key == FACT_MACHINE:
        return machine
    if key == FACT_IP:
        return machine.split("_", 1)[0]
    if key == FACT_HOSTNAME:
        parts = machine.split("_", 1)
        return parts[1] if len(parts) == 2 else ""
    if labels and key in labels:
        return labels[key]
    if facts is not None:
        return str(facts.fact(key))
    return ""


_BAD_KEY = re.compile(r"[\x00-\x20*?\[\]\\(),;]")
_TERM_FORMS = "want key=value, key!=value, key in (a,b) or key not in (a,b)"

T = TypeVar("T")


def _split_top(s: str, sep: str) -> list[str]:
    """Cut s at each separator outside parentheses: sep "," or "or" (the
    word "or" between white space, or ";")."""
    out: list[str] = []
    depth, start, i = 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            n = 0
            if sep == ",":
                n = 1 if c == "," else 0
            elif c == ";":
                n = 1
            elif c in " \t":
                j = i + 1
                while j < len(s) and s[j] in " \t":
                    j += 1
                if j + 2 < len(s) and s[j:j + 2].lower() == "or" and s[j + 2] in " \t":
                    n = j + 3 - i
            if n:
                out.append(s[start:i])
                start = i + n
                i = start
                continue
        i += 1
    out.append(s[start:])
    return out


class Selector:
    """A parsed selector; Selector("") selects every machine."""

    __slots__ = ("_groups", "text")

    def __init__(self, text: str = "") -> None:
        if len(text) > MAX_SELECTOR_LEN:
            raise ValueError(f"selector is {len(text)} characters long; at most {MAX_SELECTOR_LEN} are allowed")
        self._groups: list[list[_Term]] = []
        if text.strip():
            for alt in _split_top(text, "or"):
                if not alt.strip():
                    raise ValueError(f"selector {text!r} has an empty alternative: remove the extra \"or\" or \";\"")
                self._groups.append([_parse_term(raw.strip()) for raw in _split_top(alt, ",")])
        self.text = str(self)

    @classmethod
    def parse(cls, text: str) -> "Selector":
        return cls(text)

    @property
    def terms(self) -> int:
        """How many terms in all; 0 selects every machine."""
        return sum(len(g) for g in self._groups)

    def empty(self) -> bool:
        return not self._groups

    def keys(self) -> list[str]:
        """The keys the selector names, sorted, each once."""
        return sorted({t.key for g in self._groups for t in g})

    def __str__(self) -> str:
        return " or ".join(",".join(t.text() for t in g) for g in self._groups)

    def __repr__(self) -> str:
        return f"Selector({str(self)!r})"

    def match(self, machine: str, labels: Optional[Mapping[str, str]] = None, facts: Any = None) -> bool:
        """Whether the machine (its id, labels and agent facts, a
        types.Facts or None) is selected."""
        if not self._groups:
            return True
        return any(self._match_group(g, machine, labels, facts) for g in self._groups)

    @staticmethod
    def _match_group(group: list[_Term], machine: str, labels: Optional[Mapping[str, str]], facts: Any) -> bool:
        for t in group:
            v = _lookup(t.key, machine, labels, facts)
            ok = any(g.fullmatch(v) is not None if g is not None else v == want for want, g in zip(t.values, t.globs))
            if ok == t.negate:
                return False
        return True

    def filter(self, servers: Iterable[T]) -> list[T]:
        """The servers (anything with .machine and .labels, and .facts if
        it has them) selected, sorted by machine."""
        out = [s for s in servers
               if self.match(getattr(s, "machine"), getattr(s, "labels"), getattr(s, "facts", None))]
        out.sort(key=lambda s: str(getattr(s, "machine")))
        return out


def _value(term: str, value: str) -> Optional["re.Pattern[str]"]:
    if any(c in value for c in "*?[\\"):
        try:
            return _glob_regex(value)
        except (ValueError, re.error) as e:
            raise ValueError(f"selector term {term!r}: bad pattern {value!r}: {e}") from None
    return None


def _check_key(term: str, key: str) -> None:
    bad = _BAD_KEY.search(key)
    if bad is not None:
        raise ValueError(f"selector term {term!r}: key {key!r} has {bad.group()!r}, which a key may not contain")


def _parse_list_term(s: str) -> Optional[_Term]:
    opening = s.find("(")
    if opening < 0 or "=" in s[:opening] or "!" in s[:opening]:
        return None
    words = s[:opening].split()
    if len(words) == 2 and words[1].lower() == "in":
        negate = False
    elif len(words) == 3 and words[1].lower() == "not" and words[2].lower() == "in":
        negate = True
    else:
        raise ValueError(f"selector term {s!r}: {_TERM_FORMS}")
    key = words[0]
    _check_key(s, key)
    body = s[opening + 1:].strip()
    if not body.endswith(")") or "(" in body[:-1] or ")" in body[:-1]:
        raise ValueError(f"selector term {s!r}: the list must end with one \")\": key in (a,b)")
    body = body[:-1].strip()
    if not body:
        raise ValueError(f"selector term {s!r}: the list is empty; name at least one value")
    values = [v.strip() for v in body.split(",")]
    if any(v == "" for v in values):
        raise ValueError(f"selector term {s!r}: the list has an empty value: remove the extra comma")
    return _Term(key, tuple(values), negate, tuple(_value(s, v) for v in values), True)


def _parse_term(s: str) -> _Term:
    if s == "":
        raise ValueError("selector has an empty term: remove the extra comma")
    lt = _parse_list_term(s)
    if lt is not None:
        return lt
    m = re.search(r"[!=]", s)
    if m is None:
        raise ValueError(f"selector term {s!r}: {_TERM_FORMS}")
    i = m.start()
    key = s[:i].strip()
    rest = s[i:]
    if rest.startswith("!="):
        negate, op = True, "!="
    elif rest[0] == "=":
        negate, op = False, "="
    else:
        raise ValueError(f"selector term {s!r}: {_TERM_FORMS}")
    pattern = rest[len(op):].strip()
    if key == "":
        raise ValueError(f"selector term {s!r}: the key before {op!r} is empty; want key=value")
    _check_key(s, key)
    if "(" in pattern or ")" in pattern:
        raise ValueError(f"selector term {s!r}: a value may not contain ( or ); for a list write key in (a,b)")
    return _Term(key, (pattern,), negate, (_value(s, pattern),))


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
            if sel._groups == []:
                sel._groups.append([])
            sel._groups[0].append(_Term(k, (v,), False, (None,)))
        sel.text = str(sel)
        return sel
    raise ValueError(f"where: want a selector string, a Selector or a mapping of label to value, not {type(where).__name__}")


__all__ = ["Selector", "as_selector"]
