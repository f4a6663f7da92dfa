"""The control API (whoami, machines, operators, audit) as a mixin of
AsyncWorkbench, over ``ctl.<key>.<op>`` like bench/control.go.

Every method goes through ``self.request_control(op, body)``, which the
workbench provides: it sends body (a JSON-able object, or None for an empty
body) on the operator's own control subject and returns the raw reply, or
raises CCError for the error the control service answered (e.g. 403 for a
viewer attempting an admin operation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar

from ._wire import validate_machine_id
from .control_types import (
    AUDIT_LOGS,
    HISTORY_MAX_LIMIT,
    ZERO_TIME,
    AuditList,
    AuditRecord,
    AuditRequest,
    Denied,
    DeniedList,
    DenyRequest,
    DenyResult,
    HistoryEntry,
    HistoryPage,
    HistoryRequest,
    ImportResult,
    ListRequest,
    Machine,
    MachineChange,
    MachineImport,
    MachineList,
    MachineRequest,
    Operator,
    OperatorList,
    OperatorRequest,
    Pending,
    PendingList,
    RemoveResult,
    WhoAmI,
    _Wire,
)
from .selector import Selector, as_selector

__all__ = ["ControlMixin", "ControlReplyError", "History"]

# Control operations (fleet/types.go, fleet/audit.go).
OP_WHOAMI = "whoami"
OP_MACHINES_LIST = "machines.list"
OP_MACHINES_PENDING = "machines.pending"
OP_MACHINES_ACCEPT = "machines.accept"
OP_MACHINES_ADD = "machines.add"
OP_MACHINES_REMOVE = "machines.rm"
OP_MACHINES_LABEL = "machines.label"
OP_MACHINES_IMPORT = "machines.import"
OP_OPERATORS_LIST = "operators.list"
OP_OPERATORS_ADD = "operators.add"
OP_OPERATORS_REMOVE = "operators.rm"
OP_AUDIT = "audit"
OP_HISTORY = "history"
OP_MACHINES_REJECT = "machines.reject"
OP_MACHINES_DENY = "machines.deny"
OP_MACHINES_UNDENY = "machines.undeny"
OP_MACHINES_DENIED = "machines.denied"

ROLES = ("admin", "viewer")

# A listing never asks for more pages than this (a service that keeps
# answering "more" would otherwise hold the caller forever).
_MAX_PAGES = 100_000

W = TypeVar("W", bound=_Wire)
E = TypeVar("E")


class ControlReplyError(ValueError):
    """The control service answered something this SDK cannot read (is
    cc-control up to date?)."""


def _body(req: _Wire | None) -> object | None:
    return None if req is None else req.to_json()


def _decode(op: str, data: bytes, cls: type[W]) -> W:
    try:
        return cls.from_json(json.loads(data) if data else {}, where=op)
    except ValueError as e:
        raise ControlReplyError(f"{op}: malformed reply: {e}") from e


def _decode_optional(data: bytes, cls: type[W]) -> W | None:
    """cls from data, or None when data is empty, null or of another
    shape: the contract does not fix these replies' bodies."""
    if not data or data.strip() == b"null":
        return None
    try:
        return cls.from_json(json.loads(data))
    except ValueError:
        return None


def _check_labels(what: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (labels or {}).items():
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            raise ValueError(f"{what}: label {k!r}={v!r}: want non-empty string keys and string values")
        out[k] = v
    return out


class ControlMixin:
    """Control API methods for AsyncWorkbench (which provides
    request_control)."""

    if TYPE_CHECKING:
        # Provided by AsyncWorkbench; declared for the type checker only,
        # so that this mixin never shadows it, wherever it sits in the MRO.
        async def request_control(self, op: str, body: object | None) -> bytes: ...

    async def _control(self, op: str, req: _Wire | None, reply: type[W]) -> W:
        return _decode(op, await self.request_control(op, _body(req)), reply)

    async def _list_all(self, op: str, reply: type[W], items: Callable[[W], list[E]],
                        limit: int = 0) -> list[E]:
        """Requests op's pages one after the other (after → next) and
        returns every entry. A service that predates pages answers
        everything at once, with no next."""
        out: list[E] = []
        after = ""
        for _ in range(_MAX_PAGES):
            page = await self._control(op, ListRequest(after=after, limit=limit), reply)
            out.extend(items(page))
            nxt: str = getattr(page, "next", "")
            if not nxt:
                return out
            if nxt <= after:
                raise ControlReplyError(
                    f"{op}: the service sent the page cursor {nxt!r} after {after!r}; "
                    "it must advance (is cc-control up to date?)")
            after = nxt
        raise ControlReplyError(f"{op}: more than {_MAX_PAGES} pages; is cc-control up to date?")

    async def whoami(self) -> WhoAmI:
        """The operator this connection is, with its role and key."""
        return await self._control(OP_WHOAMI, None, WhoAmI)

    async def machines(self, *, page_size: int = 0) -> list[Machine]:
        """The registry, each machine marked online or not, following the
        service's pages to the last (page_size 0: the service's default)."""
        _check_page_size(page_size)
        return await self._list_all(OP_MACHINES_LIST, MachineList, lambda p: p.machines, page_size)

    async def pending(self, *, page_size: int = 0) -> list[Pending]:
        """The machine ids that tried to connect but are not registered (or
        presented another key), with every key that tried each;
        multiple_keys flags an id tried with several."""
        _check_page_size(page_size)
        return await self._list_all(OP_MACHINES_PENDING, PendingList, lambda p: p.pending, page_size)

    async def accept(self, id: str, key: str = "", *, site: str = "") -> MachineChange | None:
        """Registers pending machine id with key, the public key checked on
        the host (cc-agent --print-key) or a unique prefix of a key that
        tried the id. key may be "" only when one key tried the id; the
        service refuses otherwise (409) and lists the keys."""
        _need("accept", "id", id)
        req = MachineRequest(id=id, key=key, site=site)
        return _decode_optional(await self.request_control(OP_MACHINES_ACCEPT, _body(req)), MachineChange)

    async def add_machine(self, id: str, key: str, labels: Mapping[str, str] | None = None, *,
                          site: str = "", replace: bool = False) -> MachineChange | None:
        """Registers machine id with its public nkey and labels (at remote
        site, "" for the hub). An id registered already is refused (409)
        unless replace: then the old key's live connections are closed and
        the reply's replaced_key names it."""
        _need("add_machine", "id", id)
        _need("add_machine", "key", key)
        req = MachineRequest(id=id, key=key, labels=_check_labels("add_machine", labels), site=site,
                             replace=replace)
        return _decode_optional(await self.request_control(OP_MACHINES_ADD, _body(req)), MachineChange)

    async def import_machines(self, machines: Iterable[MachineRequest]) -> ImportResult:
        """Registers many machines in one registry write (admin)."""
        req = MachineImport(machines=list(machines))
        return await self._control(OP_MACHINES_IMPORT, req, ImportResult)

    async def remove_machine(self, id: str) -> RemoveResult:
        """Deletes machine id; the broker closes its live connections."""
        _need("remove_machine", "id", id)
        return await self._control(OP_MACHINES_REMOVE, MachineRequest(id=id), RemoveResult)

    async def label(self, id: str, set: Mapping[str, str] | None = None,
                    remove: Sequence[str] = ()) -> Machine | None:
        """Sets the labels set and drops the label keys remove of machine id."""
        _need("label", "id", id)
        if isinstance(remove, str):
            raise ValueError("label: remove is a list of label keys, not one string")
        req = MachineRequest(id=id, labels=_check_labels("label", set), remove=list(remove))
        return _decode_optional(await self.request_control(OP_MACHINES_LABEL, _body(req)), Machine)

    async def reject(self, id: str) -> None:
        """Drops the pending machine id (never a registered one)."""
        _need("reject", "id", id)
        await self.request_control(OP_MACHINES_REJECT, _body(MachineRequest(id=id)))

    async def deny(self, id: str = "", key: str = "") -> DenyResult:
        """Puts a machine id or a public key (exactly one) on the deny list:
        the callout refuses it at once and never records it as pending."""
        if bool(id) == bool(key):
            raise ValueError("deny: give a machine id or a key, exactly one")
        return await self._control(OP_MACHINES_DENY, DenyRequest(id=id, key=key), DenyResult)

    async def undeny(self, id: str = "", key: str = "") -> Denied:
        """Takes a machine id or a public key off the deny list."""
        if bool(id) == bool(key):
            raise ValueError("undeny: give a machine id or a key, exactly one")
        return await self._control(OP_MACHINES_UNDENY, DenyRequest(id=id, key=key), Denied)

    async def denied(self, *, page_size: int = 0) -> list[Denied]:
        """The deny list, sorted by entry."""
        _check_page_size(page_size)
        return await self._list_all(OP_MACHINES_DENIED, DeniedList, lambda p: p.denied, page_size)

    async def audit_newest(self, since: datetime | None = None, limit: int = 1000,
                           logs: Sequence[str] = ()) -> tuple[list[AuditRecord], bool]:
        """The newest limit audit records (1 to 10,000) of the logs named
        (none: all) from since, oldest first, and whether older ones match."""
        if isinstance(logs, str):
            logs = [logs]
        for lg in logs:
            if lg not in AUDIT_LOGS:
                raise ValueError(f"audit_newest: log {lg!r}: use one of {', '.join(AUDIT_LOGS)}")
        if not 0 < limit <= 10_000:
            raise ValueError(f"audit_newest: limit {limit}: want 1 to 10000")
        req = AuditRequest(since=since or ZERO_TIME, logs=list(logs), limit=limit, newest=True)
        page = await self._control(OP_AUDIT, req, AuditList)
        return list(page.records), page.more

    async def operators(self, *, page_size: int = 0) -> list[Operator]:
        """The operators and their roles."""
        _check_page_size(page_size)
        return await self._list_all(OP_OPERATORS_LIST, OperatorList, lambda p: p.operators, page_size)

    async def add_operator(self, name: str, key: str, role: str, *,
                           sessions: bool = False) -> Operator | None:
        """Registers an operator: a name, its public nkey and a role (admin
        or viewer); sessions lets a viewer list, watch and call sessions."""
        _need("add_operator", "name", name)
        _need("add_operator", "key", key)
        if role not in ROLES:
            raise ValueError(f"add_operator: role {role!r}: use one of {', '.join(ROLES)}")
        req = OperatorRequest(name=name, key=key, role=role, sessions=sessions)
        return _decode_optional(await self.request_control(OP_OPERATORS_ADD, _body(req)), Operator)

    async def remove_operator(self, name: str) -> RemoveResult:
        """Deletes operator name; its live connections are closed."""
        _need("remove_operator", "name", name)
        return await self._control(OP_OPERATORS_REMOVE, OperatorRequest(name=name), RemoveResult)

    async def audit(self, since: datetime | None = None, limit: int = 0,
                    logs: Sequence[str] = ()) -> list[AuditRecord]:
        """The audit log (admin only), oldest first: records at or after
        since (None: from the start), at most limit (0: all, paging through
        as many replies as that takes), of the logs named (changes,
        refused, calls; none: all)."""
        if isinstance(logs, str):
            logs = [logs]
        for lg in logs:
            if lg not in AUDIT_LOGS:
                raise ValueError(f"audit: log {lg!r}: use one of {', '.join(AUDIT_LOGS)}")
        if limit < 0:
            raise ValueError(f"audit: limit {limit}: want 0 (all) or more")
        out: list[AuditRecord] = []
        req = AuditRequest(since=since or ZERO_TIME, logs=list(logs))
        for _ in range(_MAX_PAGES):
            req.limit = limit - len(out) if limit > 0 else 0
            page = await self._control(OP_AUDIT, req, AuditList)
            out.extend(page.records)
            # A page may hold no record but move on (records before since).
            if (not page.more or (not page.records and page.next == req.after)
                    or (limit > 0 and len(out) >= limit)):
                return out
            req.after = dict(page.next)
        return out


    async def history(self, since: datetime | None = None, until: datetime | None = None, *,
                      machine: str = "", where: str | Selector | Mapping[str, str] | None = None, limit: int = 0,
                      newest: bool = False) -> History:
        """When machines joined and left (any operator, a viewer too), with
        the broker's reason for each leave and the labels of the time:
        entries at or after since and before until (None: unbounded), of
        machine only when given, whose machine where selects by those
        labels, oldest first (newest: newest first), at most limit (0: all,
        paging through as many replies as that takes)."""
        if limit < 0:
            raise ValueError(f"history: limit {limit}: want 0 (all) or more")
        if machine:
            validate_machine_id(machine)
        if since is not None and until is not None and until <= since:
            raise ValueError(f"history: until ({until.isoformat()}) must be after since ({since.isoformat()})")
        sel = as_selector(where)
        out = History()
        req = HistoryRequest(since=since or ZERO_TIME, until=until or ZERO_TIME, machine=machine, newest=newest)
        for _ in range(_MAX_PAGES):
            req.limit = HISTORY_MAX_LIMIT
            if limit > 0 and sel.empty():
                req.limit = min(limit - len(out.entries), HISTORY_MAX_LIMIT)
            page = await self._control(OP_HISTORY, req, HistoryPage)
            out.oldest, out.retention_seconds, out.trimmed = page.oldest, page.retention_seconds, page.trimmed
            for e in page.entries:
                if not sel.match(e.machine, e.labels):
                    continue
                if limit > 0 and len(out.entries) == limit:
                    out.more = True
                    return out
                out.entries.append(e)
            if not page.more or page.cursor in (0, req.cursor):
                return out
            if limit > 0 and len(out.entries) >= limit:
                out.more = True
                return out
            req.cursor = page.cursor
        return out


@dataclass
class History:
    """What history read: the entries; more when limit cut them short;
    the oldest entry the service still keeps, how long it keeps them, and
    whether older ones have been deleted (then, before oldest, entries are
    gone, not missing)."""
    entries: list[HistoryEntry] = field(default_factory=list)
    more: bool = False
    oldest: datetime = ZERO_TIME
    retention_seconds: int = 0
    trimmed: bool = False


def _need(what: str, name: str, v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise ValueError(f"{what}: {name} is empty: give the {name}")


def _check_page_size(n: int) -> None:
    if n < 0 or n > 10_000:
        raise ValueError(f"page_size {n}: want 0 (the service's default) to 10000")
