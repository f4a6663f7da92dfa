"""Sessions and apps as a mixin of AsyncWorkbench, like bench/sessions.go
and bench/apps.go.

sessions() asks the control service for its session snapshot on the
operator's own control subject (ctl.<key>.sessions.snapshot), with the
reply inbox under the operator's control inbox (_INBOX_cc.<key>.@ctl.…),
gathers the parts of a large answer, and checks the answer again (shape of
each id, the query) so an older service that ignored the query never
widens a listing or a call.

The mixin uses the workbench's ``_nc`` (a nats-py connection),
``key`` (the operator's public key) and ``request_control``.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .control_types import (
    SESSION_WHERE_KEYS,
    App,
    AppCreated,
    AppRemoved,
    AppRequest,
    Session,
    SessionQuery,
    SessionSnapshot,
)
from .errors import CCError

__all__ = ["SessionsMixin", "check_session_query", "valid_session_id", "session_query",
           "session_call_targets", "DEFAULT_TIMEOUT"]

PREFIX = "sys.commandControl"
OP_SESSIONS_SNAPSHOT = "sessions.snapshot"
OP_APPS_LIST = "apps.list"
OP_APPS_ADD = "apps.add"
OP_APPS_REMOVE = "apps.rm"
SESSION_FN_ROOT = PREFIX + ".sfn"

HEADER_ERROR = "Nats-Service-Error"
HEADER_ERROR_CODE = "Nats-Service-Error-Code"
HEADER_RETRY_AFTER = "Cc-Retry-After-Ms"

DEFAULT_TIMEOUT = 10.0

_SESSION_ID = re.compile(r"s\+[a-z2-7]{16}")
_APP_FUNCTION = re.compile(r"[A-Za-z0-9_-]+")


def valid_session_id(s: str) -> bool:
    """Whether s is shaped like a session id: s+ and 16 of a-z 2-7."""
    return isinstance(s, str) and _SESSION_ID.fullmatch(s) is not None


def check_session_query(q: SessionQuery) -> None:
    """Refuses a query naming a key that is not a session attribute, or
    with a negative limit, with an error that lists the keys."""
    for k in sorted(q.where):
        if k not in SESSION_WHERE_KEYS:
            raise ValueError(f"unknown session attribute {k[:40]!r}: use one of {', '.join(SESSION_WHERE_KEYS)}")
        if not isinstance(q.where[k], str):
            raise ValueError(f"session attribute {k}: value {q.where[k]!r}: want a string")
    if q.limit < 0:
        raise ValueError(f"session query limit {q.limit}: want 0 (all) or more")


def session_query(where: Mapping[str, str] | SessionQuery | None = None, app: str = "",
                  limit: int = 0) -> SessionQuery:
    """The SessionQuery for where (attribute → value, or a query), app and
    limit, checked."""
    if isinstance(where, SessionQuery):
        q = SessionQuery(where=dict(where.where), limit=where.limit or limit)
    elif where is None:
        q = SessionQuery(limit=limit)
    elif isinstance(where, Mapping):
        q = SessionQuery(where=dict(where), limit=limit)
    else:
        raise ValueError(f"sessions: where {where!r}: want a mapping of session attributes "
                         f"({', '.join(SESSION_WHERE_KEYS)}) to values")
    if app:
        if q.where.get("app", app).casefold() != app.casefold():
            raise ValueError(f"sessions: app {app!r} and where app={q.where['app']!r} disagree: give one")
        q.where["app"] = app
    check_session_query(q)
    return q


def session_fn_subject(id: str, fn: str, caller: str) -> str:
    """The subject on which caller calls fn on session id."""
    return f"{SESSION_FN_ROOT}.{id}.{fn}.{caller}"


def session_call_targets(sessions: Iterable[Session], fn: str, caller: str) -> list[tuple[str, str]]:
    """For P1's call engine: each session's (id, call subject), in order.
    Every id was checked by sessions(); checked again here, since an id
    becomes a subject token."""
    if not fn or "." in fn or "*" in fn or ">" in fn or any(c.isspace() for c in fn):
        raise ValueError(f"function {fn!r}: want a function name without '.', '*', '>' or spaces")
    out = []
    for s in sessions:
        if not valid_session_id(s.id):
            raise ValueError(f"session id {s.id[:40]!r}: want s+ and 16 characters of a-z 2-7")
        out.append((s.id, session_fn_subject(s.id, fn, caller)))
    return out


def select_sessions(snap: SessionSnapshot, q: SessionQuery) -> SessionSnapshot:
    """Keeps the sessions of snap that q selects (a well-formed id, once),
    sorted by id, at most q.limit of them."""
    seen: set[str] = set()
    out: list[Session] = []
    for s in snap.sessions:
        if not valid_session_id(s.id) or s.id in seen:
            continue  # not a session id, or twice: never a target
        if s.matches(q.where):
            seen.add(s.id)
            out.append(s)
    out.sort(key=lambda s: s.id)
    if q.limit > 0:
        out = out[:q.limit]
    snap.sessions = out
    return snap


def _header(msg: Any, name: str) -> str:
    h = getattr(msg, "headers", None) or {}
    v = h.get(name, "")
    return v if isinstance(v, str) else ""


def _reply_error(msg: Any) -> tuple[CCError, float] | None:
    """The CCError a reply carries in its micro error headers (a code that
    is not a number reads as 500), with the retry wait (seconds) of a 429."""
    code, desc = _header(msg, HEADER_ERROR_CODE), _header(msg, HEADER_ERROR)
    if not code and not desc:
        return None
    try:
        n = int(code)
    except ValueError:
        n = 500
    after = 0.0
    if n == 429:
        try:
            after = max(0, int(_header(msg, HEADER_RETRY_AFTER))) / 1000
        except ValueError:
            after = 0.0
    return CCError(n, desc), after


def _is_no_responders(msg: Any) -> bool:
    return _header(msg, "Status") == "503" and not getattr(msg, "data", b"")


class _Retry(Exception):
    def __init__(self, err: CCError, after: float):
        super().__init__(str(err))
        self.err, self.after = err, after


class SessionsMixin:
    """sessions, apps, add_app, remove_app for AsyncWorkbench (which
    provides _nc, key and request_control)."""

    _nc: Any
    key: str

    if TYPE_CHECKING:
        # Provided by AsyncWorkbench; declared for the type checker only,
        # so that this mixin never shadows it, wherever it sits in the MRO.
        async def request_control(self, op: str, body: object | None) -> bytes: ...

    async def sessions(self, where: Mapping[str, str] | SessionQuery | None = None, app: str = "", *,
                       limit: int = 0, timeout: float = DEFAULT_TIMEOUT) -> list[Session]:
        """The ONLINE sessions where selects (attribute → value, matched
        case-insensitively: app, admission, user, ip, platform, site, city,
        region, country, country_code), of app when given, sorted by id, at
        most limit (0: all). Needs an admin, or a viewer added with
        sessions=True."""
        return (await self.session_snapshot(where, app, limit=limit, timeout=timeout)).sessions

    async def session_snapshot(self, where: Mapping[str, str] | SessionQuery | None = None,
                               app: str = "", *, limit: int = 0,
                               timeout: float = DEFAULT_TIMEOUT) -> SessionSnapshot:
        """sessions() with the snapshot's seq, epoch and time (what a
        watch needs)."""
        q = session_query(where, app, limit)
        if not getattr(self, "key", ""):
            raise ValueError("sessions: the session snapshot is asked on the operator's own control "
                             "subject, named by its key: connect with key_file or seed")
        body = json.dumps(q.to_json(), separators=(",", ":")).encode()
        deadline = time.monotonic() + timeout
        while True:
            try:
                snap = await self._session_snapshot_once(body, deadline)
            except _Retry as r:
                # Past the operator's limit: wait as the service says, when
                # the deadline leaves room for that.
                if time.monotonic() + r.after >= deadline or r.after <= 0:
                    raise r.err from None
                await asyncio.sleep(r.after)
                continue
            return select_sessions(snap, q)

    async def _session_snapshot_once(self, body: bytes, deadline: float) -> SessionSnapshot:
        subject = f"{PREFIX}.ctl.{self.key}.{OP_SESSIONS_SNAPSHOT}"
        # The service answers only under the operator's control inbox.
        inbox = f"_INBOX_cc.{self.key}.@ctl.{secrets.token_hex(11)}"
        sub = await self._nc.subscribe(inbox)
        try:
            await self._nc.publish(subject, body, reply=inbox)
            snap: SessionSnapshot | None = None
            got = 0
            while snap is None or got < snap.parts:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _timeout(subject, snap, got)
                try:
                    msg = await sub.next_msg(timeout=left)
                except asyncio.TimeoutError:
                    raise _timeout(subject, snap, got) from None
                except Exception as e:  # nats-py's own TimeoutError
                    if type(e).__name__ == "TimeoutError":
                        raise _timeout(subject, snap, got) from None
                    raise
                got += 1
                if _is_no_responders(msg):
                    raise CCError(503, f"no responders on {subject}: is cc-control running "
                                       "(and does it know sessions)?")
                fe = _reply_error(msg)
                if fe is not None:
                    err, after = fe
                    if err.code == 429 and after > 0 and snap is None:
                        raise _Retry(err, after)
                    raise err
                try:
                    part = SessionSnapshot.from_json(json.loads(msg.data), where="sessions")
                except ValueError as e:
                    raise ValueError(f"sessions: malformed reply: {e}") from e
                if snap is None:
                    snap = part
                    continue
                if part.seq != snap.seq or part.epoch != snap.epoch:
                    raise ValueError(f"sessions: parts of different snapshots (seq {snap.seq} and {part.seq})")
                snap.sessions.extend(part.sessions)
            snap.part = snap.parts = 0
            return snap
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may be closed already
                pass

    async def apps(self) -> list[App]:
        """The registered apps, each with how many of its sessions are
        ONLINE (admin)."""
        data = (await self.request_control(OP_APPS_LIST, None)).strip()
        if not data or data == b"null":
            return []
        try:
            v = json.loads(data)
            if isinstance(v, dict):  # the contract fixes the entries, not the envelope
                v = v.get("apps") or []
            if not isinstance(v, list):
                raise ValueError("want an array of apps")
            return [App.from_json(a, where=f"apps[{i}]") for i, a in enumerate(v)]
        except ValueError as e:
            raise ValueError(f"{OP_APPS_LIST}: malformed reply: {e}") from e

    async def add_app(self, name: str, functions: Iterable[str], *, public: bool = False,
                      max_sessions: int = 0, origins: Iterable[str] = ()) -> AppCreated:
        """Registers an app whose sessions may expose functions (admin).
        public: anyone loading its page joins; else signed: the reply's
        seed is the app's signing key, shown this once — keep it where the
        app's backend signs session tokens."""
        if not name:
            raise ValueError("add_app: name is empty: give the app's name")
        fns = [functions] if isinstance(functions, str) else list(functions)
        if not fns:
            raise ValueError("add_app: no functions: give the functions its sessions may expose")
        for f in fns:
            if not isinstance(f, str) or not _APP_FUNCTION.fullmatch(f):
                raise ValueError(f"add_app: function {f!r}: want letters, digits, '-' and '_'")
        if max_sessions < 0:
            raise ValueError(f"add_app: max_sessions {max_sessions}: want 0 (the service's default) or more")
        req = AppRequest(name=name, functions=fns, public=public, max_sessions=max_sessions,
                         origins=[origins] if isinstance(origins, str) else list(origins))
        data = await self.request_control(OP_APPS_ADD, req.to_json())
        try:
            return AppCreated.from_json(json.loads(data) if data else {}, where=OP_APPS_ADD)
        except ValueError as e:
            raise ValueError(f"{OP_APPS_ADD}: malformed reply: {e}") from e

    async def remove_app(self, name: str) -> AppRemoved:
        """Deletes app name (admin); the broker closes its sessions at once
        and the reply says how many."""
        if not name:
            raise ValueError("remove_app: name is empty: give the app's name")
        data = await self.request_control(OP_APPS_REMOVE, AppRequest(name=name).to_json())
        try:
            return AppRemoved.from_json(json.loads(data) if data else {}, where=OP_APPS_REMOVE)
        except ValueError as e:
            raise ValueError(f"{OP_APPS_REMOVE}: malformed reply: {e}") from e


def _timeout(subject: str, snap: SessionSnapshot | None, got: int) -> TimeoutError:
    have = f" ({got} of {snap.parts} parts)" if snap is not None else ""
    return TimeoutError(f"sessions: no complete reply in time on {subject}{have}: is cc-control running, "
                        "and may this operator see sessions (an admin, or a viewer added with sessions)?")
