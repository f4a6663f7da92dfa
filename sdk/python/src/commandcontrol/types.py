"""The SDK's data: presence (Server, PresenceSnapshot, PresenceEvent) and
calls (Reply, CallResult), read from the wire's JSON (fleet/types.go)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from .control_types import format_time
from .errors import CCError

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_NO_RESPONSE = "no-response"

# Watch events besides the wire's "joined" and "left".
EVENT_PRESENT = "present"
EVENT_SYNCED = "synced"
EVENT_STALE = "stale"
EVENT_RESYNC = "resync"
FOUND_BY_RESYNC = "found by resync"

_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)


def parse_time(v: Any) -> datetime:
    """An RFC 3339 time as Go writes it (nanoseconds, Z) → aware datetime."""
    if not isinstance(v, str) or not v:
        return _EPOCH
    s = v
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    # Python ≤3.10 takes at most 6 fraction digits.
    dot = s.find(".")
    if dot >= 0:
        end = dot + 1
        while end < len(s) and s[end].isdigit():
            end += 1
        s = s[:dot + 1] + (s[dot + 1:end] + "000000")[:6] + s[end:]
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        return _EPOCH



def _j(name: str, omit: bool = False, **kw: Any) -> Any:
    """A field with its Go JSON name and whether Go omits it when zero."""
    return field(metadata={"json": name, "omit": omit}, **kw)


@dataclass
class Location:
    """Where an address is (fleet.Location)."""

    site: str = _j("site", True, default="")
    city: str = _j("city", True, default="")
    region: str = _j("region", True, default="")
    country: str = _j("country", True, default="")
    country_code: str = _j("country_code", True, default="")
    latitude: float = _j("latitude", True, default=0.0)
    longitude: float = _j("longitude", True, default=0.0)
    source: str = _j("source", default="")

    @classmethod
    def from_json(cls, d: Optional[Mapping[str, Any]]) -> Optional["Location"]:
        if not d:
            return None
        return cls(site=d.get("site", ""), city=d.get("city", ""), region=d.get("region", ""),
                   country=d.get("country", ""), country_code=d.get("country_code", ""),
                   latitude=float(d.get("latitude", 0.0)), longitude=float(d.get("longitude", 0.0)),
                   source=d.get("source", ""))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in ("site", "city", "region", "country", "country_code", "latitude", "longitude"):
            v = getattr(self, k)
            if v:
                out[k] = v
        out["source"] = self.source
        return out


@dataclass
class Facts:
    """What a machine's agent reports about its host (fleet.Facts); every
    field is left out of the JSON when empty."""

    os: str = _j("os", True, default="")
    platform: str = _j("platform", True, default="")
    platform_version: str = _j("platform_version", True, default="")
    kernel: str = _j("kernel", True, default="")
    arch: str = _j("arch", True, default="")
    cpus: int = _j("cpus", True, default=0)
    memory_bytes: int = _j("memory_bytes", True, default=0)
    virtualization: str = _j("virtualization", True, default="")
    container: str = _j("container", True, default="")
    agent_version: str = _j("agent_version", True, default="")
    boot_time: datetime = _j("boot_time", True, default=_EPOCH)

    _TEXT = ("os", "platform", "platform_version", "kernel", "arch", "virtualization", "container", "agent_version")

    @classmethod
    def from_json(cls, d: Optional[Mapping[str, Any]]) -> Optional["Facts"]:
        if d is None:
            return None
        if not isinstance(d, Mapping):
            raise ValueError(f"facts: want an object, got {type(d).__name__}")
        kw: dict[str, Any] = {}
        for k in cls._TEXT:
            v = d.get(k, "")
            if not isinstance(v, str):
                raise ValueError(f"facts.{k}: want a string, got {type(v).__name__}")
            kw[k] = v
        for k in ("cpus", "memory_bytes"):
            v = d.get(k, 0)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"facts.{k}: want an integer, got {type(v).__name__}")
            kw[k] = v
        return cls(boot_time=parse_time(d.get("boot_time")), **kw)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self._TEXT[:5] + ("cpus", "memory_bytes") + self._TEXT[5:]:
            v = getattr(self, k)
            if v:
                out[k] = v
        if self.boot_time != _EPOCH:
            out["boot_time"] = format_time(self.boot_time)
        return out

    def fact(self, key: str) -> str:
        """A selector's fact key (fleet.FactKeys) as text; "" when not held."""
        if key == "memory":
            return str(self.memory_bytes) if self.memory_bytes > 0 else ""
        if key == "cpus":
            return str(self.cpus) if self.cpus > 0 else ""
        if key in self._TEXT:
            return str(getattr(self, key))
        return ""


FACT_KEYS = ("os", "platform", "platform_version", "kernel", "arch", "cpus", "memory", "virtualization",
             "container", "agent_version")


@dataclass
class Server:
    """One ONLINE machine (fleet.Server)."""

    machine: str = _j("machine")
    labels: dict[str, str] = _j("labels", True, default_factory=dict)
    since: datetime = _j("since", default=_EPOCH)
    connections: int = _j("connections", default=0)
    ip: str = _j("ip", True, default="")
    location: Optional[Location] = _j("location", True, default=None)
    facts: Optional[Facts] = _j("facts", True, default=None)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Server":
        return cls(machine=d.get("machine", ""), labels=dict(d.get("labels") or {}), since=parse_time(d.get("since")),
                   connections=int(d.get("connections", 0)), ip=d.get("ip", ""),
                   location=Location.from_json(d.get("location")), facts=Facts.from_json(d.get("facts")))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"machine": self.machine}
        if self.labels:
            out["labels"] = dict(self.labels)
        out["since"] = format_time(self.since)
        out["connections"] = self.connections
        if self.ip:
            out["ip"] = self.ip
        if self.location is not None:
            out["location"] = self.location.to_json()
        if self.facts is not None:
            out["facts"] = self.facts.to_json()
        return out


@dataclass
class PresenceSnapshot:
    """Who is ONLINE; seq is the last event folded in, epoch its numbering.
    part/parts number the replies of a snapshot sent in parts (0 once
    gathered). machines lists the ids alone, instead of servers, when
    the request asked for ids (control_types.SnapshotRequest)."""

    seq: int = _j("seq", default=0)
    epoch: str = _j("epoch", True, default="")
    servers: list[Server] = _j("servers", default_factory=list)
    machines: list[str] = _j("machines", True, default_factory=list)
    time: datetime = _j("time", default=_EPOCH)
    part: int = _j("part", True, default=0)
    parts: int = _j("parts", True, default=0)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PresenceSnapshot":
        return cls(seq=int(d.get("seq", 0)), epoch=d.get("epoch", ""),
                   servers=[Server.from_json(s) for s in d.get("servers") or []],
                   machines=[str(m) for m in d.get("machines") or []], time=parse_time(d.get("time")),
                   part=int(d.get("part", 0)), parts=int(d.get("parts", 0)))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq}
        if self.epoch:
            out["epoch"] = self.epoch
        out["servers"] = [s.to_json() for s in self.servers]
        if self.machines:
            out["machines"] = list(self.machines)
        out["time"] = format_time(self.time)
        if self.part:
            out["part"] = self.part
        if self.parts:
            out["parts"] = self.parts
        return out


@dataclass
class PresenceEvent:
    """A watch event: present, synced, joined, left, stale or resync (the
    last three name no machine: machine is "")."""

    event: str = _j("event")
    machine: str = _j("machine", default="")
    labels: dict[str, str] = _j("labels", True, default_factory=dict)
    time: datetime = _j("time", default=_EPOCH)
    seq: int = _j("seq", default=0)
    epoch: str = _j("epoch", True, default="")
    reason: str = _j("reason", True, default="")
    facts: Optional[Facts] = _j("facts", True, default=None)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PresenceEvent":
        return cls(event=d.get("event", ""), machine=d.get("machine", ""), labels=dict(d.get("labels") or {}),
                   time=parse_time(d.get("time")), seq=int(d.get("seq", 0)), epoch=d.get("epoch", ""),
                   reason=d.get("reason", ""), facts=Facts.from_json(d.get("facts")))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event, "machine": self.machine}
        if self.labels:
            out["labels"] = dict(self.labels)
        out["time"] = format_time(self.time)
        out["seq"] = self.seq
        if self.epoch:
            out["epoch"] = self.epoch
        if self.reason:
            out["reason"] = self.reason
        if self.facts is not None:
            out["facts"] = self.facts.to_json()
        return out


@dataclass
class Reply:
    """One machine's (or session's) answer. status is "ok" (result holds the
    parsed JSON), "error" (error holds the CCError) or "no-response"
    (expected, no answer before the deadline; error says why when the broker
    reported nobody listening)."""

    machine: str
    status: str
    result: Any = None
    error: Optional[CCError] = None
    duration_ms: float = 0.0
    unexpected: bool = False
    session: str = ""
    app: str = ""
    location: Optional[Location] = None

    @property
    def target(self) -> str:
        """The session id in a call to sessions, else the machine id."""
        return self.session or self.machine

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


@dataclass
class CallResult:
    """A call's outcome. expected lists the targets (sorted); replies every
    answer kept (expected or not, in arrival order), then one no-response
    reply per expected target that did not answer."""

    function: str
    expected: list[str]
    replies: list[Reply]
    num_ok: int = 0
    num_error: int = 0
    num_unexpected: int = 0
    no_response: list[str] = field(default_factory=list)
    duplicates: int = 0
    resent: int = 0
    took_ms: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> list[Reply]:
        return [r for r in self.replies if r.status == STATUS_OK and not r.unexpected]

    @property
    def errors(self) -> list[Reply]:
        return [r for r in self.replies if r.status == STATUS_ERROR and not r.unexpected]

    @property
    def unexpected(self) -> list[Reply]:
        return [r for r in self.replies if r.unexpected]

    @property
    def all_ok(self) -> bool:
        return self.num_ok == len(self.expected)

    @property
    def summary(self) -> str:
        """E.g. "3 expected: 2 ok, 1 error, 0 no response" (bench.Summary.String)."""
        out = f"{len(self.expected)} expected: {self.num_ok} ok, {self.num_error} error, {len(self.no_response)} no response"
        if self.num_unexpected:
            out += f", {self.num_unexpected} unexpected"
        return out

    def __str__(self) -> str:
        return self.summary
