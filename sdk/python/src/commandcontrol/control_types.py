"""Dataclasses of the control API, the audit log and sessions.

Each mirrors a Go type of package fleet (fleet/types.go, fleet/audit.go,
fleet/sessions.go, fleet/sessiontoken.go, fleet/errors.go) field for field,
under the same JSON names. Decode a reply with ``Type.from_json(obj)`` and
encode a request with ``obj.to_json()``; both follow Go's encoding/json:
a field tagged ``omitempty`` (or ``omitzero``) is left out when it holds its
zero value, times are RFC 3339 in UTC, and raw JSON (an audit record's
``args`` and ``request``) is kept as the parsed value.

Decoding ignores fields it does not know (a newer control service may add
some) unless ``strict=True``, which refuses them with an error naming them.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar, Union

__all__ = [
    "ZERO_TIME",
    "parse_time",
    "format_time",
    "Machine",
    "PendingKey",
    "Pending",
    "Operator",
    "WhoAmI",
    "MachineRequest",
    "MachineChange",
    "ListRequest",
    "ListPage",
    "MachineList",
    "PendingList",
    "RemoveResult",
    "OperatorRequest",
    "OperatorList",
    "MachineImport",
    "ImportResult",
    "AgentHint",
    "AuditRequest",
    "AuditCut",
    "AuditOutcome",
    "AuditRecord",
    "AuditList",
    "ErrorBody",
    "App",
    "AppRequest",
    "AppCreated",
    "AppRemoved",
    "SessionHello",
    "Location",
    "SessionDeclared",
    "Session",
    "SessionQuery",
    "SessionSnapshot",
    "SessionEvent",
    "SessionTokenClaims",
    "SESSION_WHERE_KEYS",
    "AUDIT_LOGS",
    "RegistryPart",
    "RegistryExportRequest",
    "RegistryExportPage",
    "RegistryImportResult",
    "Denied",
    "DenyRequest",
    "DenyResult",
    "DeniedList",
    "ControlVersion",
    "FunctionArg",
    "FunctionInfo",
]

# Go's zero time.Time, what an unset time decodes to (and is omitted as,
# for a field tagged omitzero).
ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)

_FRACTION = re.compile(r"(\.\d+)")


def parse_time(s: str) -> datetime:
    """Parses an RFC 3339 time as Go writes it (nanoseconds are cut to
    microseconds, Python's precision)."""
    if not isinstance(s, str):
        raise ValueError(f"time {s!r}: want an RFC 3339 string")
    t = s.replace("z", "Z")
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"

    def cut(m: re.Match[str]) -> str:
        return m.group(1)[:7]

    t = _FRACTION.sub(cut, t, count=1)
    try:
        d = datetime.fromisoformat(t)
    except ValueError as e:
        raise ValueError(f"time {s!r}: want RFC 3339, e.g. 2031-01-02T03:04:05Z") from e
    if d.tzinfo is None:
        raise ValueError(f"time {s!r}: has no time zone; want RFC 3339 with Z or an offset")
    return d.astimezone(timezone.utc)


def format_time(d: datetime) -> str:
    """Formats d as Go's RFC 3339 with the fewest fraction digits, in UTC."""
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    d = d.astimezone(timezone.utc)
    s = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    if d.microsecond:
        s += ("." + f"{d.microsecond:06d}").rstrip("0")
    return s + "Z"


def _f(name: str | None = None, *, omit: bool = False, default: Any = dataclasses.MISSING,
       factory: Any = dataclasses.MISSING) -> Any:
    """A field with its JSON name (default: the Python name) and whether
    Go omits it when zero (omitempty / omitzero)."""
    md = {"json": name, "omit": omit}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=md)
    if default is dataclasses.MISSING:
        default = ""
    return field(default=default, metadata=md)


T = TypeVar("T", bound="_Wire")

_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _hints_cache.get(cls)
    if h is None:
        h = typing.get_type_hints(cls)
        _hints_cache[cls] = h
    return h


def _is_zero(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, bool):
        return v is False
    if isinstance(v, (int, float)):
        return v == 0
    if isinstance(v, (str, list, dict, tuple)):
        return len(v) == 0
    if isinstance(v, datetime):
        return v == ZERO_TIME
    return False


def _decode(tp: Any, v: Any, where: str, strict: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if v is None:
            return None
        return _decode(args[0], v, where, strict)
    if tp is Any:
        return v
    if origin is list:
        if v is None:
            return []
        if not isinstance(v, list):
            raise ValueError(f"{where}: want a JSON array, got {type(v).__name__}")
        (et,) = typing.get_args(tp)
        return [_decode(et, x, f"{where}[{i}]", strict) for i, x in enumerate(v)]
    if origin is dict:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError(f"{where}: want a JSON object, got {type(v).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _decode(vt, x, f"{where}.{k}", strict) for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, _Wire):
        if v is None:
            return tp()
        return tp.from_json(v, strict=strict, where=where)
    if tp is datetime:
        if v is None:
            return ZERO_TIME
        try:
            return parse_time(v)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    if tp is bool:
        if v is None:
            return False
        if not isinstance(v, bool):
            raise ValueError(f"{where}: want true or false, got {v!r}")
        return v
    if tp is int:
        if v is None:
            return 0
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise ValueError(f"{where}: want an integer, got {v!r}")
        return v
    if tp is float:
        if v is None:
            return 0.0
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{where}: want a number, got {v!r}")
        return float(v)
    if tp is str:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ValueError(f"{where}: want a string, got {v!r}")
        return v
    raise TypeError(f"{where}: no decoder for {tp!r}")


def _encode(v: Any) -> Any:
    if isinstance(v, _Wire):
        return v.to_json()
    if isinstance(v, datetime):
        return format_time(v)
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    return v


class _Wire:
    """Base of the wire dataclasses: JSON decoding and encoding."""

    # Fields that always appear in the JSON even when empty (Go writes
    # null for a nil slice there; this SDK writes []).
    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def from_json(cls: type[T], obj: Any, *, strict: bool = False, where: str = "") -> T:
        """Decodes a parsed JSON object. strict refuses fields this SDK
        does not know."""
        where = where or cls.__name__
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: want a JSON object, got {type(obj).__name__}")
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        known: set[str] = set()
        for f in dataclasses.fields(cls):
            name = f.metadata.get("json") or f.name
            known.add(name)
            if name in obj:
                kwargs[f.name] = _decode(hints[f.name], obj[name], f"{where}.{name}", strict)
        if strict:
            unknown = sorted(set(obj) - known)
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}: "
                                 f"known are {', '.join(sorted(known))}")
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        """Encodes as Go would: omitempty fields left out when zero."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            name = f.metadata.get("json") or f.name
            v = getattr(self, f.name)
            if f.metadata.get("omit") and _is_zero(v):
                continue
            out[name] = _encode(v)
        return out


# ---- registry and operators (fleet/types.go) ----

@dataclass
class Location(_Wire):
    """Where an address is (--sites CIDR map or --geoip)."""
    site: str = _f(omit=True)
    city: str = _f(omit=True)
    region: str = _f(omit=True)
    country: str = _f(omit=True)
    country_code: str = _f(omit=True)
    latitude: float = _f(omit=True, default=0.0)
    longitude: float = _f(omit=True, default=0.0)
    source: str = _f()


@dataclass
class Seen(_Wire):
    """What the control service remembers of a machine's presence, across
    its restarts: ONLINE or not, since when (joined or left), when it was
    last seen, and why its last connection closed (the broker's reason:
    Client Closed, Stale Connection, …)."""
    online: bool = _f(default=False)
    since: datetime = _f(default=ZERO_TIME)
    last_seen: datetime = _f(default=ZERO_TIME)
    reason: str = _f(omit=True)


@dataclass
class Machine(_Wire):
    """A registered machine; online and seen are set when listing (seen is
    None for a machine not seen since it was registered)."""
    id: str = _f()
    key: str = _f()
    labels: dict[str, str] = _f(omit=True, factory=dict)
    site: str = _f(omit=True)
    added_at: datetime = _f(default=ZERO_TIME)
    added_by: str = _f(omit=True)
    online: bool = _f(default=False)
    seen: Seen | None = _f(omit=True, default=None)


@dataclass
class MachineChange(Machine):
    """The answer of accept and add: the entry, and the key it replaced
    (whose live connections, closed of them, were closed)."""
    replaced_key: str = _f(omit=True)
    closed: int = _f(omit=True, default=0)

    def machine(self) -> Machine:
        """The registry entry alone."""
        return Machine(id=self.id, key=self.key, labels=dict(self.labels), site=self.site,
                       added_at=self.added_at, added_by=self.added_by, online=self.online, seen=self.seen)


@dataclass
class PendingKey(_Wire):
    """One key that tried a pending id."""
    key: str = _f()
    ip: str = _f(omit=True)
    first_seen: datetime = _f(default=ZERO_TIME)
    last_seen: datetime = _f(default=ZERO_TIME)
    attempts: int = _f(default=0)
    reason: str = _f(omit=True)
    site: str = _f(omit=True)


@dataclass
class Pending(_Wire):
    """A machine id that tried to connect but is not in the registry (or
    presented another key). multiple_keys: accepting needs the key."""
    id: str = _f()
    key: str = _f()
    ip: str = _f(omit=True)
    first_seen: datetime = _f(default=ZERO_TIME)
    last_seen: datetime = _f(default=ZERO_TIME)
    attempts: int = _f(default=0)
    reason: str = _f(omit=True)
    site: str = _f(omit=True)
    keys: list[PendingKey] = _f(omit=True, factory=list)
    multiple_keys: bool = _f(omit=True, default=False)
    keys_dropped: int = _f(omit=True, default=0)


@dataclass
class Operator(_Wire):
    """An operator: name, public key, role (admin or viewer)."""
    name: str = _f()
    key: str = _f()
    role: str = _f()
    added_at: datetime = _f(default=ZERO_TIME)
    sessions: bool = _f(omit=True, default=False)


@dataclass
class WhoAmI(_Wire):
    """Who this connection is to the control service."""
    operator: str = _f()
    role: str = _f()
    key: str = _f()


@dataclass
class MachineRequest(_Wire):
    """Body of machines.accept/add/rm/label (and an import's entries)."""
    id: str = _f()
    key: str = _f(omit=True)
    labels: dict[str, str] = _f(omit=True, factory=dict)
    remove: list[str] = _f(omit=True, factory=list)
    replace: bool = _f(omit=True, default=False)
    site: str = _f(omit=True)
    no_replace: bool = _f(omit=True, default=False)


@dataclass
class SnapshotRequest(_Wire):
    """The body of a presence snapshot request: ids asks for the machine
    ids alone (PresenceSnapshot.machines); empty asks for everything."""
    ids: bool = _f(omit=True, default=False)


@dataclass
class ListRequest(_Wire):
    """One page of a list: entries after `after`, at most `limit`."""
    after: str = _f(omit=True)
    limit: int = _f(omit=True, default=0)


@dataclass
class ListPage(_Wire):
    """Paging part of a list reply: total entries, next page's after."""
    total: int = _f(default=0)
    next: str = _f(omit=True)


@dataclass
class MachineList(ListPage):
    """A page of machines.list."""
    machines: list[Machine] = _f(factory=list)


@dataclass
class PendingList(ListPage):
    """A page of machines.pending."""
    pending: list[Pending] = _f(factory=list)


@dataclass
class OperatorList(ListPage):
    """A page of operators.list."""
    operators: list[Operator] = _f(factory=list)


@dataclass
class RemoveResult(_Wire):
    """Answer of machines.rm and operators.rm: closed live connections."""
    id: str = _f()
    closed: int = _f(default=0)


@dataclass
class OperatorRequest(_Wire):
    """Body of operators.add and operators.rm."""
    name: str = _f()
    key: str = _f(omit=True)
    role: str = _f(omit=True)
    sessions: bool = _f(omit=True, default=False)


@dataclass
class MachineImport(_Wire):
    """Body of machines.import."""
    machines: list[MachineRequest] = _f(factory=list)


@dataclass
class ImportResult(_Wire):
    """Answer of machines.import."""
    added: int = _f(default=0)
    replaced: int = _f(omit=True, default=0)
    closed: int = _f(omit=True, default=0)


@dataclass
class AgentHint(_Wire):
    """What the control service tells every agent."""
    reconnect_window_ms: int = _f(default=0)
    online: int = _f(default=0)


# ---- audit (fleet/audit.go) ----

AUDIT_LOGS = ("changes", "refused", "calls")


@dataclass
class AuditRequest(_Wire):
    """Body of the audit operation."""
    since: datetime = _f(omit=True, default=ZERO_TIME)
    logs: list[str] = _f(omit=True, factory=list)
    after: dict[str, int] = _f(omit=True, factory=dict)
    limit: int = _f(omit=True, default=0)
    newest: bool = _f(omit=True, default=False)


@dataclass
class AuditCut(_Wire):
    """A body the record holds only the start of: its size and SHA-256."""
    size: int = _f(default=0)
    sha256: str = _f()


@dataclass
class AuditOutcome(_Wire):
    """What one target of an audited call answered."""
    machine: str = _f()
    status: str = _f()
    code: int = _f(omit=True, default=0)
    error: str = _f(omit=True)
    duration_ms: int = _f(omit=True, default=0)


@dataclass
class AuditRecord(_Wire):
    """One audit record (kind call, registry, refused or dropped)."""
    log: str = _f(omit=True)
    seq: int = _f(omit=True, default=0)
    time: datetime = _f(default=ZERO_TIME)
    kind: str = _f()
    operator: str = _f(omit=True)
    operator_key: str = _f(omit=True)
    function: str = _f(omit=True)
    subject: str = _f(omit=True)
    args: Any = _f(omit=True, default=None)
    broadcast: bool = _f(omit=True, default=False)
    part: int = _f(omit=True, default=0)
    parts: int = _f(omit=True, default=0)
    targets: int = _f(omit=True, default=0)
    ok: int = _f(omit=True, default=0)
    errors: int = _f(omit=True, default=0)
    no_response: int = _f(omit=True, default=0)
    outcomes: list[AuditOutcome] = _f(omit=True, factory=list)
    op: str = _f(omit=True)
    request: Any = _f(omit=True, default=None)
    note: str = _f(omit=True)
    name: str = _f(omit=True)
    key: str = _f(omit=True)
    ip: str = _f(omit=True)
    reason: str = _f(omit=True)
    site: str = _f(omit=True)
    count: int = _f(omit=True, default=0)
    first_at: datetime = _f(omit=True, default=ZERO_TIME)
    cut: AuditCut | None = _f(omit=True, default=None)
    error: str = _f(omit=True)
    dropped: int = _f(omit=True, default=0)
    dropped_kind: str = _f(omit=True)
    dropped_since: datetime = _f(omit=True, default=ZERO_TIME)


@dataclass
class AuditList(_Wire):
    """One page of audit records; more: ask again with after=next."""
    records: list[AuditRecord] = _f(factory=list)
    more: bool = _f(omit=True, default=False)
    next: dict[str, int] = _f(omit=True, factory=dict)


@dataclass
class Denied(_Wire):
    """A deny list entry (fleet/deny.go): a machine id or a key."""
    id: str = _f(omit=True)
    key: str = _f(omit=True)
    added_at: datetime = _f(default=ZERO_TIME)
    added_by: str = _f(omit=True)


@dataclass
class DenyRequest(_Wire):
    """Body of machines.deny and machines.undeny: an id or a key."""
    id: str = _f(omit=True)
    key: str = _f(omit=True)


@dataclass
class DenyResult(Denied):
    """Answer of machines.deny: the entry and the pending ids it dropped."""
    dropped_pending: list[str] = _f(omit=True, factory=list)


@dataclass
class DeniedList(ListPage):
    """A page of machines.denied."""
    denied: list[Denied] = _f(factory=list)


HISTORY_MAX_LIMIT = 10_000


@dataclass
class HistoryRequest(_Wire):
    """Body of the history operation: entries in [since, until) (zero:
    unbounded), of machine only when set, oldest first (newest: newest
    first), at most limit (0: the service's default); cursor, from the
    previous page, continues after it."""
    since: datetime = _f(omit=True, default=ZERO_TIME)
    until: datetime = _f(omit=True, default=ZERO_TIME)
    machine: str = _f(omit=True)
    limit: int = _f(omit=True, default=0)
    newest: bool = _f(omit=True, default=False)
    cursor: int = _f(omit=True, default=0)


@dataclass
class HistoryEntry(_Wire):
    """One join or leave of a machine, with the labels it had then and,
    for a leave, the broker's reason."""
    seq: int = _f(default=0)
    event: str = _f()
    machine: str = _f()
    time: datetime = _f(default=ZERO_TIME)
    reason: str = _f(omit=True)
    labels: dict[str, str] = _f(omit=True, factory=dict)


@dataclass
class HistoryPage(_Wire):
    """One page of history; more: ask again with cursor. oldest is the
    oldest entry still kept, retention_seconds how long entries are kept,
    trimmed whether older ones have been deleted."""
    entries: list[HistoryEntry] = _f(factory=list)
    more: bool = _f(omit=True, default=False)
    cursor: int = _f(omit=True, default=0)
    oldest: datetime = _f(omit=True, default=ZERO_TIME)
    retention_seconds: int = _f(default=0)
    trimmed: bool = _f(omit=True, default=False)
    per_machine: int = _f(omit=True, default=0)
    machine_trimmed: bool = _f(omit=True, default=False)


@dataclass
class ErrorBody(_Wire):
    """fleet.Error as a JSON body: a code and its description."""
    code: int = _f(default=0)
    description: str = _f()


# ---- apps and sessions (fleet/sessions.go, fleet/sessiontoken.go) ----

@dataclass
class App(_Wire):
    """A registered app whose sessions may join."""
    name: str = _f()
    functions: list[str] = _f(factory=list)
    admission: str = _f()
    max_sessions: int = _f(omit=True, default=0)
    origins: list[str] = _f(omit=True, factory=list)
    key: str = _f(omit=True)
    added_at: datetime = _f(default=ZERO_TIME)
    added_by: str = _f(omit=True)
    online: int = _f(omit=True, default=0)


@dataclass
class AppRequest(_Wire):
    """Body of apps.add (every field) and apps.rm (name only)."""
    name: str = _f()
    functions: list[str] = _f(omit=True, factory=list)
    public: bool = _f(omit=True, default=False)
    max_sessions: int = _f(omit=True, default=0)
    origins: list[str] = _f(omit=True, factory=list)


@dataclass
class AppCreated(_Wire):
    """Answer of apps.add: seed is a signed app's signing key, shown once."""
    app: App = _f(factory=App)
    seed: str = _f(omit=True)


@dataclass
class AppRemoved(_Wire):
    """Answer of apps.rm: closed sessions were disconnected."""
    name: str = _f()
    closed: int = _f(default=0)


@dataclass
class SessionHello(_Wire):
    """What a session sends as its CONNECT auth_token."""
    app: str = _f()
    token: str = _f(omit=True)
    platform: str = _f(omit=True)
    user_agent: str = _f(omit=True)
    app_version: str = _f(omit=True)


@dataclass
class SessionDeclared(_Wire):
    """What a session says of itself: shown, never trusted."""
    platform: str = _f(omit=True)
    user_agent: str = _f(omit=True)
    app_version: str = _f(omit=True)


@dataclass
class Session(_Wire):
    """An ONLINE session as the control service knows it."""
    id: str = _f()
    app: str = _f()
    admission: str = _f()
    user: str = _f(omit=True)
    claims: dict[str, str] = _f(omit=True, factory=dict)
    ip: str = _f()
    location: Location | None = _f(omit=True, default=None)
    since: datetime = _f(default=ZERO_TIME)
    functions: list[str] = _f(factory=list)
    declared: SessionDeclared = _f(factory=SessionDeclared)

    def attr(self, key: str) -> str:
        """The session's attribute key (one of SESSION_WHERE_KEYS); a
        KeyError names the keys for any other."""
        loc = self.location or Location()
        values = {
            "app": self.app, "admission": self.admission, "user": self.user, "ip": self.ip,
            "platform": self.declared.platform, "site": loc.site, "city": loc.city,
            "region": loc.region, "country": loc.country, "country_code": loc.country_code,
        }
        if key not in values:
            raise KeyError(f"unknown session attribute {key[:40]!r}: use one of {', '.join(SESSION_WHERE_KEYS)}")
        return values[key]

    def matches(self, where: dict[str, str] | None) -> bool:
        """Whether the session has every attribute of where
        (case-insensitive equality), as fleet.MatchSession."""
        for k, want in (where or {}).items():
            if self.attr(k).casefold() != want.casefold():
                return False
        return True


SESSION_WHERE_KEYS = ("app", "admission", "user", "ip", "platform", "site", "city", "region",
                      "country", "country_code")


@dataclass
class SessionQuery(_Wire):
    """Selects sessions: where (attribute → value), limit (0: all)."""
    where: dict[str, str] = _f(omit=True, factory=dict)
    limit: int = _f(omit=True, default=0)


@dataclass
class SessionSnapshot(_Wire):
    """The matching ONLINE sessions as of session event seq of epoch."""
    seq: int = _f(default=0)
    epoch: str = _f(omit=True)
    sessions: list[Session] = _f(factory=list)
    total: int = _f(default=0)
    time: datetime = _f(default=ZERO_TIME)
    part: int = _f(omit=True, default=0)
    parts: int = _f(omit=True, default=0)


@dataclass
class SessionEvent(_Wire):
    """A session joined or left."""
    event: str = _f()
    session: Session = _f(factory=Session)
    time: datetime = _f(default=ZERO_TIME)
    seq: int = _f(default=0)
    epoch: str = _f(omit=True)
    reason: str = _f(omit=True)


@dataclass
class SessionTokenClaims(_Wire):
    """The claims of a session token an app's backend signs."""
    app: str = _f()
    sub: str = _f()
    iat: int = _f(default=0)
    exp: int = _f(default=0)
    nkey: str = _f(omit=True)
    claims: dict[str, str] = _f(omit=True, factory=dict)


# ---- registry backups (fleet/registry.go) ----

@dataclass
class RegistryPart(_Wire):
    """Part of a registry file (registry.json's layout): registry.import's
    body, and what a registry.export page holds."""
    machines: dict[str, Machine] = _f(omit=True, factory=dict)
    pending: dict[str, Pending] = _f(omit=True, factory=dict)
    operators: dict[str, Operator] = _f(omit=True, factory=dict)
    apps: dict[str, App] = _f(omit=True, factory=dict)
    denied: dict[str, Denied] = _f(omit=True, factory=dict)


@dataclass
class RegistryExportRequest(_Wire):
    """Asks for the registry's entries after a cursor, at most limit."""
    after: str = _f(omit=True)
    limit: int = _f(omit=True, default=0)


@dataclass
class RegistryExportPage(RegistryPart):
    """A page of registry.export: entries, how many in all, and the cursor
    of the next page ("" at the end)."""
    total: int = _f(default=0)
    next: str = _f(omit=True)


@dataclass
class RegistryImportResult(_Wire):
    """What registry.import did, per kind of entry."""
    added: dict[str, int] = _f(factory=dict)
    changed: dict[str, int] = _f(factory=dict)
    skipped: dict[str, int] = _f(factory=dict)
    closed: int = _f(omit=True, default=0)


# ---- versions and functions (fleet/version.go, fleet/functioninfo.go) ----

@dataclass
class ControlVersion(_Wire):
    """The version operation's answer: the control service's build (module
    version, commit, whether the tree was modified, Go toolchain), the
    answering replica's name and when it started serving."""
    version: str = _f()
    commit: str = _f(omit=True)
    modified: bool = _f(omit=True, default=False)
    go: str = _f()
    replica: str = _f(omit=True)
    started: datetime = _f(default=ZERO_TIME)


@dataclass
class FunctionArg(_Wire):
    """One typed argument (string, int, float, bool) of a function an
    agent describes."""
    name: str = _f()
    type: str = _f()
    help: str = _f(omit=True)
    required: bool = _f(omit=True, default=False)


@dataclass
class FunctionInfo(_Wire):
    """A function an agent serves, as its micro discovery INFO describes it
    (metadata function_specs): name, whether it only reads, help, args."""
    name: str = _f()
    read_only: bool = _f(default=False)
    help: str = _f(omit=True)
    args: list[FunctionArg] = _f(omit=True, factory=list)
