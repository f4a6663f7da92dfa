"""AsyncWorkbench: the asyncio client (mirrors Go bench.Client)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import ssl
import stat
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, Mapping, Optional, Sequence, Union
from urllib.parse import urlparse

import nats
import nkeys
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from . import _wire as w
from .control import ControlMixin
from .errors import CCError, ConnectError, NoKey, NoMatch, NoService, cc_error
from .selector import Selector, as_selector
from .sessions import SessionsMixin
from .types import (EVENT_PRESENT, EVENT_RESYNC, EVENT_STALE, EVENT_SYNCED, FOUND_BY_RESYNC, STATUS_ERROR,
                    STATUS_NO_RESPONSE, STATUS_OK, CallResult, PresenceEvent, PresenceSnapshot, Reply, Server)

DEFAULT_NAME = "cc-python (operator)"
DEFAULT_TIMEOUT = 5.0
# A refusal this long (seconds) after connecting is the broker's auth
# timeout on a callout nobody answers: cc-control is down (Go:
# bench.CalloutSilence).
CALLOUT_SILENCE = 1.0

# Re-send tuning, as bench/call_run.go.
RESEND_EVERY = 1.0
RESEND_QUIET = 0.1
RESEND_PER_TARGET = 25e-6
RESEND_FIRST_MAX = 0.25
MAX_RESENDS = 2

# Target states.
_PENDING, _UNREACHABLE, _UNREACHABLE_RESENT, _ANSWERED, _NO_RESPONDER = range(5)

Where = Union[str, Selector, Mapping[str, str], None]


def _read_seed_file(path: str) -> bytes:
    """Read an operator seed, refusing a file others can read, a symlink or
    another user's file (as internal/keyfile)."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ConnectError(f"read operator key: {e}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConnectError(f"operator key file {path} is a symbolic link: give the file itself")
    if st.st_mode & 0o077:
        raise ConnectError(f"operator key file {path} is readable by others (mode {oct(st.st_mode & 0o777)}): chmod 600 {path}")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConnectError(f"operator key file {path} is owned by another user: chown it or copy it")
    with open(path, "rb") as f:
        return f.read()


async def _close_quietly(nc: NATS) -> None:
    try:
        await nc.close()
    except Exception:
        pass


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_DOWNGRADE = ("the broker at {} did not offer TLS although TLS was asked for (tls_ca or a tls:// URL): "
              "refusing to authenticate in plain text; check the URL and the broker's TLS settings")


class _Conn(NATS):
    """nats-py's client, refusing to sign the broker's nonce (and so to
    authenticate) over plain text when TLS was asked for: nats-py upgrades
    to TLS only when the broker's INFO requires it, so a broker (or a
    man in the middle) that does not would otherwise get a signature it
    could relay."""

    _cc_require_tls = False
    _cc_server = ""

    def _cc_is_tls(self) -> bool:
        info = getattr(self, "_server_info", None) or {}
        return bool(info.get("tls_required")) or bool(self.options.get("tls_handshake_first"))

    def _setup_nkeys_seed_connect(self) -> None:
        super()._setup_nkeys_seed_connect()
        inner = self._signature_cb
        assert inner is not None

        def sig(nonce: str) -> bytes:
            if self._cc_require_tls and not self._cc_is_tls():
                raise ConnectError(_DOWNGRADE.format(self._cc_server))
            return inner(nonce)

        self._signature_cb = sig


class _CallState:
    """One call's collector (bench/call_run.go collector)."""

    __slots__ = ("fn", "targets", "by_token", "state", "remaining", "handled", "unexpected", "each", "start",
                 "result", "sessions", "done", "forbidden")

    def __init__(self, fn: str, targets: list[str], each: Callable[[Reply], None],
                 sessions: Optional[list[Any]]) -> None:
        self.fn = fn
        self.targets = targets
        # Targets are validated ids (from the snapshot or _targets): their
        # tokens need no second check.
        toks = targets if sessions is not None else [t.replace(".", "~") for t in targets]
        self.by_token = {t: i for i, t in enumerate(toks)}
        self.state = bytearray(len(targets))
        self.remaining = len(targets)
        self.handled = 0
        self.unexpected: set[str] = set()
        self.each = each
        self.start = time.monotonic()
        self.result = CallResult(function=fn, expected=list(targets), replies=[])
        self.sessions = sessions
        self.done = asyncio.Event()
        self.forbidden: Optional[CCError] = None

    def token(self, i: int) -> str:
        t = self.targets[i]
        return t if self.sessions is not None else t.replace(".", "~")

    def name(self, r: Reply, i: int) -> None:
        if self.sessions is None:
            r.machine = self.targets[i]
            return
        s = self.sessions[i]
        r.session = getattr(s, "id", self.targets[i])
        r.app = getattr(s, "app", "")
        r.location = getattr(s, "location", None)

    def handle(self, msg: Msg) -> None:
        subject = msg.subject
        parts = subject.split(".", 3)
        tok = parts[2] if len(parts) == 4 else ""
        if tok == w.REPLY_TO_ALL:
            target = -1
        else:
            target = self.by_token.get(tok, -2)
        headers = msg.headers
        data = msg.data
        if not data and headers is not None and headers.get(w.HEADER_STATUS) == w.STATUS_NO_RESPONDERS:
            if target == -2:
                return
            st = self.state
            rng = range(len(st)) if target == -1 else (target,)
            for i in rng:
                if st[i] == _PENDING:
                    st[i] = _UNREACHABLE
                elif st[i] == _UNREACHABLE_RESENT:
                    st[i] = _NO_RESPONDER
                    self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()
            return
        if target == -1:
            return
        if target == -2 and self.sessions is not None:
            return
        fnh = headers.get(w.HEADER_FUNCTION, "") if headers else ""
        if fnh != self.fn and not (fnh == "" and self.sessions is not None):
            return
        self.handled += 1
        r = Reply(machine="", status=STATUS_OK, duration_ms=(time.monotonic() - self.start) * 1000)
        if target >= 0:
            self.name(r, target)
        else:
            try:
                r.machine = w.machine_from_token(tok)
            except ValueError:
                return
        fe = w.error_from_headers(headers)
        if fe is not None:
            r.status, r.error = STATUS_ERROR, fe
        elif not data:
            r.result = None
        else:
            try:
                r.result = json.loads(data)
            except ValueError:
                r.status, r.error = STATUS_ERROR, cc_error(w.CODE_INTERNAL, f"the reply is not JSON: {data[:60]!r}")
        res = self.result
        if target < 0:
            if r.machine in self.unexpected:
                res.duplicates += 1
                return
            self.unexpected.add(r.machine)
            r.unexpected = True
            res.num_unexpected += 1
        else:
            cur = self.state[target]
            if cur == _ANSWERED:
                res.duplicates += 1
                return
            if cur < _ANSWERED:
                self.remaining -= 1
            self.state[target] = _ANSWERED
            if r.status == STATUS_OK:
                res.num_ok += 1
            else:
                res.num_error += 1
        self.each(r)
        if self.remaining <= 0:
            self.done.set()

    def finish(self) -> CallResult:
        res = self.result
        res.took_ms = (time.monotonic() - self.start) * 1000
        for i, st in enumerate(self.state):
            if st == _ANSWERED:
                continue
            r = Reply(machine="", status=STATUS_NO_RESPONSE, duration_ms=res.took_ms)
            self.name(r, i)
            if st != _PENDING:
                if self.sessions is not None:
                    r.error = cc_error(w.CODE_UNAVAILABLE, "the session is not listening (it left, or its app does not let it expose this function)")
                else:
                    r.error = cc_error(w.CODE_UNAVAILABLE, "no agent is listening (offline?)")
            res.no_response.append(self.targets[i])
            self.each(r)
        res.no_response.sort()
        return res


class AsyncWorkbench(ControlMixin, SessionsMixin):
    """One operator connection. Create with ``await AsyncWorkbench.connect(...)``."""

    def __init__(self, nc: NATS, key: str) -> None:
        self._nc = nc
        self.key = key
        self._listeners: set[Callable[[str, Any], None]] = set()

    # ---- connection ----

    @classmethod
    async def connect(cls, server: str, key_file: Optional[str] = None, seed: Optional[Union[bytes, str]] = None,
                      tls_ca: Optional[str] = None, allow_plaintext: bool = False, name: str = DEFAULT_NAME,
                      connect_timeout: float = DEFAULT_TIMEOUT, **nats_options: Any) -> "AsyncWorkbench":
        """Connect as the operator whose nkey seed ("SU…") is in key_file or
        seed. Plain text goes only to loopback unless allow_plaintext; give
        tls_ca (a PEM file) or a tls:// URL for TLS."""
        if key_file is not None and seed is not None:
            raise ConnectError("give key_file or seed, not both")
        if key_file is not None:
            seed = _read_seed_file(key_file)
        key = ""
        opts: dict[str, Any] = dict(name=name, connect_timeout=connect_timeout)
        if seed is not None:
            raw = seed.encode() if isinstance(seed, str) else bytes(seed)
            raw = raw.strip()
            try:
                kp = nkeys.from_seed(bytearray(raw))
                key = kp.public_key.decode()
            except Exception as e:  # nkeys raises several kinds
                raise ConnectError(f"not an operator nkey seed: {e}") from None
            if not key.startswith("U"):
                raise ConnectError("not an operator nkey seed: the seed is not a user seed (it should start with SU)")
            opts["nkeys_seed_str"] = raw.decode()
            opts["inbox_prefix"] = w.control_inbox(key)
        urls = [u.strip() for u in server.split(",") if u.strip()]
        if not urls:
            raise ConnectError("no server URL given: want e.g. nats://127.0.0.1:4222")
        use_tls = tls_ca is not None or any(u.startswith("tls://") for u in urls)
        if use_tls:
            ctx = ssl.create_default_context(cafile=tls_ca)
            opts["tls"] = ctx
        elif not allow_plaintext:
            for u in urls:
                host = urlparse(u if "://" in u else "nats://" + u).hostname or ""
                if not _is_loopback(host):
                    raise ConnectError(
                        f"refusing plain text to {u}, which is not on this host: give tls_ca=<CA file> "
                        "(or a tls:// URL), or allow_plaintext=True for a network you trust")
        wb: Optional[AsyncWorkbench] = None

        async def error_cb(e: Exception) -> None:
            if wb is not None:
                wb._emit("error", e)

        async def disconnected_cb() -> None:
            if wb is not None:
                wb._emit("disconnected", None)

        async def reconnected_cb() -> None:
            if wb is not None:
                wb._emit("reconnected", None)

        async def closed_cb() -> None:
            if wb is not None:
                wb._emit("closed", None)

        opts.update(error_cb=error_cb, disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb,
                    closed_cb=closed_cb)
        opts.update(nats_options)
        nc = _Conn()
        nc._cc_require_tls = use_tls
        nc._cc_server = server
        started = time.monotonic()
        try:
            # The first connect fails at once on an unreachable broker;
            # reconnects after it never give up.
            # (nats-py tries each URL max_reconnect_attempts + 1 times.)
            await nc.connect(servers=urls, **{"allow_reconnect": False, "max_reconnect_attempts": 1,
                                              "reconnect_time_wait": 0.1, **opts})
        except ConnectError:
            await _close_quietly(nc)
            raise
        except ssl.SSLError as e:
            raise ConnectError(f"TLS handshake with {server} failed: {e}: is tls_ca the broker's CA, and does its certificate name the host?") from None
        except Exception as e:
            msg = str(e) or type(e).__name__
            if isinstance(e, nats.errors.AuthorizationError) or "uthorization" in msg:
                if time.monotonic() - started >= CALLOUT_SILENCE:
                    # The broker refuses at its auth timeout a connection
                    # whose callout nobody answers; a control service
                    # refuses a key in milliseconds (Go: bench.CalloutSilence).
                    raise ConnectError(f"the broker at {server} is up but no control service answered: "
                                       "cc-control is down or not connected to this broker") from None
                raise ConnectError(f"the broker refused this key ({key or 'no key'} at {server}): is it registered as an operator, and is cc-control running?") from None
            if isinstance(e, (OSError, nats.errors.NoServersError, asyncio.TimeoutError)):
                raise ConnectError(f"broker unreachable at {server} ({msg}): is it running, and is the URL right?") from None
            raise ConnectError(f"connect to {server}: {msg}") from None
        if use_tls and not nc._cc_is_tls():
            await _close_quietly(nc)
            raise ConnectError(_DOWNGRADE.format(server))
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 2.0
        wb = cls(nc, key)
        return wb

    async def close(self) -> None:
        await self._nc.close()

    async def __aenter__(self) -> "AsyncWorkbench":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def nc(self) -> NATS:
        """The underlying nats-py connection."""
        nc: NATS = self._nc
        return nc

    def _emit(self, kind: str, arg: Any) -> None:
        for fn in list(self._listeners):
            fn(kind, arg)

    def _need_key(self, what: str) -> None:
        if not self.key:
            raise NoKey(f"{what} needs the operator's key: connect with key_file or seed")

    # ---- requests ----

    async def request_control(self, op: str, body: Any = None, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Send a control API request ctl.<key>.<op> and return the reply body.
        body may be bytes, str or a JSON-able object. Raises CCError (its
        subclasses by code) for an error reply, NoService when cc-control
        does not answer. A 429 that says when to retry is waited out when
        the timeout leaves room."""
        self._need_key(f"control request {op}")
        if body is None:
            data = b""
        elif isinstance(body, str):
            data = body.encode()
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        else:
            data = json.dumps(body).encode()
        return await self._request(w.ctl_subject(self.key, op), data, timeout)

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                msg = await self._nc.request(subject, data, timeout=max(left, 0.001))
            except nats.errors.NoRespondersError:
                raise NoService(f"no control service answered on {subject}: is cc-control running?") from None
            except nats.errors.TimeoutError:
                raise TimeoutError(f"no reply on {subject} in time ({timeout}s)") from None
            fe = w.error_from_headers(msg.headers)
            if fe is None:
                return bytes(msg.data)
            if fe.code == w.CODE_TOO_MANY_REQUESTS and fe.retry_after_ms and \
                    time.monotonic() + fe.retry_after_ms / 1000 < deadline:
                await asyncio.sleep(fe.retry_after_ms / 1000)
                continue
            raise fe

    # ---- presence ----

    async def snapshot(self, timeout: float = DEFAULT_TIMEOUT) -> PresenceSnapshot:
        """Who is ONLINE now, gathered from every part, sorted by machine."""
        first, servers = await self._snapshot_raw(timeout)
        first["servers"] = []
        snap = PresenceSnapshot.from_json(first)
        snap.servers = [Server.from_json(s) for s in servers]
        snap.servers.sort(key=lambda s: s.machine)
        snap.part = snap.parts = 0
        return snap

    async def _snapshot_raw(self, timeout: float = DEFAULT_TIMEOUT,
                            ids: bool = False) -> tuple[dict[str, Any], list[Any]]:
        """The snapshot's first part and every part's servers, as JSON: a
        call needs only ids and labels, not a Server each. With ids, the
        machine ids alone (a call to every machine needs no more); an
        older control service answers servers, whose ids are taken."""
        subject = w.ctl_subject(self.key, w.OP_PRESENCE_SNAPSHOT) if self.key else w.PRESENCE_SNAPSHOT_SUBJECT
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self._snapshot(subject, deadline, ids)
            except NoService:
                if subject == w.PRESENCE_SNAPSHOT_SUBJECT:
                    raise
                subject = w.PRESENCE_SNAPSHOT_SUBJECT  # an older control service
            except CCError as fe:
                if fe.code == w.CODE_TOO_MANY_REQUESTS and fe.retry_after_ms and \
                        time.monotonic() + fe.retry_after_ms / 1000 < deadline:
                    await asyncio.sleep(fe.retry_after_ms / 1000)
                    continue
                raise

    async def _snapshot(self, subject: str, deadline: float, ids: bool = False) -> tuple[dict[str, Any], list[Any]]:
        inbox = self._nc.new_inbox()
        q: asyncio.Queue[Msg] = asyncio.Queue()

        async def cb(m: Msg) -> None:
            q.put_nowait(m)

        sub = await self._nc.subscribe(inbox, cb=cb, pending_msgs_limit=-1, pending_bytes_limit=0)
        try:
            await self._nc.publish(subject, b'{"ids":true}' if ids else b"", reply=inbox)
            first: Optional[dict[str, Any]] = None
            servers: list[Any] = []
            got = 0
            while first is None or got < int(first.get("parts") or 0):
                left = deadline - time.monotonic()
                try:
                    msg = await asyncio.wait_for(q.get(), timeout=max(left, 0.001))
                except asyncio.TimeoutError:
                    raise TimeoutError("presence snapshot: no complete reply in time") from None
                if w.is_no_responders(msg.headers, len(msg.data)):
                    raise NoService(f"no control service answered on {subject}: is cc-control running?")
                fe = w.error_from_headers(msg.headers)
                if fe is not None:
                    raise fe
                try:
                    part = json.loads(msg.data)
                except ValueError as e:
                    raise ValueError(f"presence snapshot: malformed reply: {e}") from None
                got += 1
                if first is None:
                    first = part
                elif part.get("seq") != first.get("seq") or part.get("epoch") != first.get("epoch"):
                    raise ValueError(f"presence snapshot: parts of different snapshots (seq {first.get('seq')} and {part.get('seq')})")
                if ids and isinstance(part, dict) and not part.get("servers"):
                    servers.extend(part.get("machines") or [])
                else:
                    servers.extend(part.get("servers") or [])
            if not isinstance(first, dict):
                raise ValueError("presence snapshot: malformed reply: want an object with a list of servers")
            if ids:
                out = [x.get("machine") if isinstance(x, dict) else x for x in servers]
                if not all(isinstance(x, str) and x for x in out):
                    raise ValueError("presence snapshot: malformed reply: want a list of machine ids")
                return first, out
            if not all(isinstance(x, dict) for x in servers):
                raise ValueError("presence snapshot: malformed reply: want an object with a list of servers")
            return first, servers
        finally:
            await sub.unsubscribe()

    async def servers(self, where: Where = None) -> list[Server]:
        """The ONLINE machines where selects (a selector string), sorted by id."""
        sel = as_selector(where)
        snap = await self.snapshot()
        return sel.filter(snap.servers)

    async def watch(self) -> AsyncIterator[PresenceEvent]:
        """Yield one "present" per ONLINE machine, "synced", then live
        "joined"/"left"/"updated" (an agent reported new facts) in order,
        gap-free; present, joined and updated carry the machine's facts,
        left the facts the watch knew: a sequence gap, changed epoch,
        reconnect or dropped events yield "resync", the differences
        (reason "found by resync") and "synced"; a lost connection yields
        "stale" once. Raises ConnectError when the connection closes for good."""
        nc = self._nc
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        sub_ref: list[Any] = []

        async def cb(m: Msg) -> None:
            q.put_nowait(("msg", m))

        def listener(kind: str, arg: Any) -> None:
            if kind == "error":
                if isinstance(arg, nats.errors.SlowConsumerError) and sub_ref and arg.sub is sub_ref[0]:
                    q.put_nowait(("dropped", None))
                return
            q.put_nowait((kind, arg))

        self._listeners.add(listener)
        sub = await nc.subscribe(w.PRESENCE_EVENTS_WILDCARD, cb=cb, pending_bytes_limit=256 << 20,
                                 pending_msgs_limit=-1)
        sub_ref.append(sub)
        try:
            await nc.flush(timeout=int(DEFAULT_TIMEOUT))
            snap = await self.snapshot()
            online: dict[str, Server] = {}
            for s in snap.servers:
                online[s.machine] = s
                yield PresenceEvent(EVENT_PRESENT, s.machine, s.labels, s.since, snap.seq, snap.epoch, facts=s.facts)
            last, epoch = snap.seq, snap.epoch
            yield PresenceEvent(EVENT_SYNCED, time=snap.time, seq=snap.seq, epoch=snap.epoch)
            stale = False
            while True:
                kind, arg = await q.get()
                reason = ""
                if kind == "closed":
                    raise ConnectError("watch: the connection to the broker closed: connect and start the watch again")
                if kind == "disconnected":
                    if not stale:
                        stale = True
                        yield PresenceEvent(EVENT_STALE, time=_now(), seq=last, reason="connection to the broker lost; reconnecting")
                    continue
                if kind == "reconnected":
                    reason = "reconnected to the broker"
                elif kind == "dropped":
                    reason = "events dropped: the watcher fell behind"
                elif kind == "msg":
                    try:
                        d = json.loads(arg.data)
                        ev = PresenceEvent.from_json(d)
                    except (ValueError, TypeError, AttributeError):
                        continue
                    if not ev.machine:
                        continue
                    if ev.epoch != epoch:
                        reason = "the control service's event numbering changed (restarted or replaced)"
                    elif ev.seq <= last:
                        continue
                    elif ev.seq != last + 1:
                        reason = f"sequence gap {last}→{ev.seq}"
                    else:
                        last = ev.seq
                        if ev.event == w.EVENT_JOINED:
                            online[ev.machine] = Server(ev.machine, ev.labels, facts=ev.facts)
                        elif ev.event == w.EVENT_UPDATED and ev.machine in online:
                            online[ev.machine] = Server(ev.machine, ev.labels, facts=ev.facts)
                        elif ev.event == w.EVENT_LEFT:
                            was = online.pop(ev.machine, None)
                            if was is not None and ev.facts is None:
                                ev.facts = was.facts
                        yield ev
                        continue
                else:
                    continue
                # resync
                yield PresenceEvent(EVENT_RESYNC, time=_now(), seq=last, reason=reason)
                wait = 0.25
                while True:
                    if nc.is_closed:
                        raise ConnectError("watch: the connection to the broker closed: connect and start the watch again")
                    try:
                        snap = await self.snapshot()
                        break
                    except Exception as e:  # keep trying, saying so
                        stale = True
                        yield PresenceEvent(EVENT_STALE, time=_now(), seq=last, reason=f"resync failed ({e}); retrying in {wait}s")
                        await asyncio.sleep(wait)
                        wait = min(2 * wait, 10.0)
                stale = False
                now = {s.machine for s in snap.servers}
                for mid in sorted(m for m in online if m not in now):
                    s = online.pop(mid)
                    yield PresenceEvent(w.EVENT_LEFT, mid, s.labels, snap.time, snap.seq, snap.epoch, FOUND_BY_RESYNC,
                                        facts=s.facts)
                for s in snap.servers:
                    was = online.get(s.machine)
                    online[s.machine] = s
                    if was is None:
                        yield PresenceEvent(w.EVENT_JOINED, s.machine, s.labels, s.since, snap.seq, snap.epoch, FOUND_BY_RESYNC,
                                            facts=s.facts)
                    elif was.facts != s.facts:
                        yield PresenceEvent(w.EVENT_UPDATED, s.machine, s.labels, snap.time, snap.seq, snap.epoch,
                                            FOUND_BY_RESYNC, facts=s.facts)
                last, epoch = snap.seq, snap.epoch
                yield PresenceEvent(EVENT_SYNCED, time=snap.time, seq=snap.seq, epoch=snap.epoch)
        finally:
            self._listeners.discard(listener)
            try:
                await sub.unsubscribe()
            except Exception:
                pass

    # ---- calls ----

    async def _targets(self, where: Where, machines: Optional[Sequence[str]]) -> tuple[list[str], bool]:
        sel = as_selector(where)
        if machines is not None:
            if not sel.empty():
                raise ValueError("give either machines or where, not both")
            given: set[str] = set()
            for m in machines:
                w.validate_machine_id(m)
                given.add(m)
            return sorted(given), False
        if sel.empty():
            # Every ONLINE machine: their ids alone will do.
            _, every = await self._snapshot_raw(ids=True)
            return sorted(every), True
        _, servers = await self._snapshot_raw()
        ids: list[str] = []
        match = sel.match
        for d in servers:
            mid = d.get("machine")
            if isinstance(mid, str) and mid and (not sel.terms or match(mid, d.get("labels") or None)):
                ids.append(mid)
        ids.sort()
        return ids, len(ids) == len(servers)

    async def _session_targets(self, sessions: Any) -> tuple[list[str], list[Any]]:
        """The sessions a call to sessions expects, sorted by id: those the
        sessions API (commandcontrol.sessions) selects. sessions is its
        where (a mapping of attribute → value, or a SessionQuery); True or
        {} means every ONLINE session."""
        fn = getattr(self, "sessions", None)
        if fn is None:
            raise NotImplementedError("calls to sessions need the sessions API (commandcontrol.sessions)")
        items = list(await fn(None if sessions is True else sessions))
        items.sort(key=lambda s: s.id)
        return [s.id for s in items], items

    async def _run(self, fn: str, args: Any, where: Where, machines: Optional[Sequence[str]], sessions: Any,
                   timeout: float, each: Callable[[Reply], None]) -> CallResult:
        w.validate_name("function name", fn)
        self._need_key(f"call {fn}")
        body = json.dumps(args).encode() if args else b"{}"
        sess_items: Optional[list[Any]] = None
        if sessions is not None:
            if machines is not None or not as_selector(where).empty():
                raise ValueError("a call to sessions selects them with its session query: give no machines nor where")
            targets, sess_items = await self._session_targets(sessions)
            broadcast = False
        else:
            targets, broadcast = await self._targets(where, machines)
        if timeout <= 0:
            timeout = DEFAULT_TIMEOUT
        cl = _CallState(fn, targets, each, sess_items)
        if not targets:
            raise NoMatch(f"call {fn}: " + _no_match_text(where, sessions), cl.finish())
        nc = self._nc
        key = self.key
        call_id = secrets.token_hex(13)
        n = len(targets)

        async def cb(m: Msg) -> None:
            cl.handle(m)

        sub = await nc.subscribe(w.call_replies(key, call_id), cb=cb, pending_msgs_limit=-1, pending_bytes_limit=0)
        to_sessions = sess_items is not None
        # nats-py reports a permissions violation in lower case: compare so.
        denied_inbox = f'subscription to "{w.call_replies(key, call_id)}'.lower()
        fn_l, key_l = fn.lower(), key.lower()
        all_l = w.all_subject(fn, key).lower()
        root_l = (w.SESSION_FN_ROOT if to_sessions else w.FN_ROOT).lower() + "."

        def is_call(subject_l: str) -> bool:
            if not to_sessions and broadcast:
                return subject_l == all_l
            if not subject_l.startswith(root_l):
                return False
            parts = subject_l[len(root_l):].split(".")
            return len(parts) == 3 and parts[1] == fn_l and parts[2] == key_l

        def listener(kind: str, arg: Any) -> None:
            if kind != "error":
                return
            msg = str(arg)
            low = msg.lower()
            if "permissions violation" not in low:
                return
            hit = denied_inbox in low
            if not hit and 'publish to "' in low:
                hit = is_call(low.split('publish to "', 1)[1].split('"', 1)[0])
            if hit:
                why = "calling sessions needs an admin, or a viewer added with --sessions" if to_sessions \
                    else f"does your operator role allow {fn}?"
                cl.forbidden = cc_error(w.CODE_FORBIDDEN, f"the broker denied this call ({msg}): {why}")
                cl.done.set()

        self._listeners.add(listener)
        hdr = {w.HEADER_CALL_ID: call_id}

        def subject(i: int) -> str:
            t = targets[i]
            return w.session_fn_subject(t, fn, key) if to_sessions else w.fn_subject(t, fn, key)

        try:
            cl.start = time.monotonic()
            deadline = cl.start + timeout
            if broadcast:
                await nc.publish(w.all_subject(fn, key), body, reply=w.call_reply(key, w.REPLY_TO_ALL, call_id, 0), headers=hdr)
            else:
                for i in range(n):
                    await nc.publish(subject(i), body, reply=w.call_reply(key, cl.token(i), call_id, 0), headers=hdr)
            retry_at = cl.start + min(timeout / 4, RESEND_FIRST_MAX + n * RESEND_PER_TARGET)
            seen = 0
            resends = 0
            while cl.remaining > 0 and cl.forbidden is None:
                now = time.monotonic()
                if now >= deadline:
                    cl.result.timed_out = True
                    break
                wake = min(deadline, retry_at)
                try:
                    await asyncio.wait_for(cl.done.wait(), timeout=max(wake - now, 0))
                    break
                except asyncio.TimeoutError:
                    pass
                now = time.monotonic()
                if now < retry_at or now >= deadline:
                    continue
                if cl.handled != seen:
                    seen = cl.handled
                    retry_at = now + RESEND_QUIET + n * RESEND_PER_TARGET
                    continue
                if deadline - now < timeout / 4:
                    retry_at = deadline
                    continue
                resends += 1
                for i in range(n):
                    st = cl.state[i]
                    if st == _PENDING:
                        pass
                    elif st == _UNREACHABLE:
                        cl.state[i] = _UNREACHABLE_RESENT
                    else:
                        continue
                    cl.result.resent += 1
                    await nc.publish(subject(i), body, reply=w.call_reply(key, cl.token(i), call_id, resends), headers=hdr)
                retry_at = now + RESEND_EVERY if resends < MAX_RESENDS else deadline
            # Handle the replies already received (bench's drain): the
            # subscription's queue holds them; its callback is synchronous,
            # so none is half-handled.
            pq = getattr(sub, "_pending_queue", None)
            while pq is not None and not pq.empty():
                cl.handle(pq.get_nowait())
        finally:
            self._listeners.discard(listener)
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        res = cl.finish()
        if cl.forbidden is not None:
            raise cl.forbidden
        return res

    async def call(self, fn: str, args: Optional[dict[str, Any]] = None, *, where: Where = None,
                   machines: Optional[Sequence[str]] = None, sessions: Any = None, timeout: float = 10.0,
                   keep: Optional[Callable[[Reply], bool]] = None) -> CallResult:
        """Call fn with args on the machines where (a selector) or machines
        (ids, online or not) choose — every ONLINE machine by default — and
        collect the answers. Ends when every expected machine answered, or at
        timeout (partial results are results; the rest are no-response).
        keep, when given, decides which replies are kept in .replies (the
        counts cover all). A selection that chooses nobody raises NoMatch
        (its .result is the empty result): nothing was called."""
        res_replies: list[Reply] = []
        if keep is None:
            each: Callable[[Reply], None] = res_replies.append
        else:
            def each(r: Reply) -> None:
                if keep(r):
                    res_replies.append(r)
        res = await self._run(fn, args, where, machines, sessions, timeout, each)
        res.replies = res_replies
        return res

    async def stream(self, fn: str, args: Optional[dict[str, Any]] = None, *, where: Where = None,
                     machines: Optional[Sequence[str]] = None, sessions: Any = None,
                     timeout: float = 10.0) -> AsyncIterator[Reply]:
        """Like call, but yield each reply as it arrives, then one no-response
        reply per expected machine that did not answer."""
        q: asyncio.Queue[Optional[Reply]] = asyncio.Queue()
        task = asyncio.ensure_future(self._run(fn, args, where, machines, sessions, timeout, q.put_nowait))
        task.add_done_callback(lambda _t: q.put_nowait(None))
        try:
            while True:
                r = await q.get()
                if r is None:
                    break
                yield r
            task.result()  # raise its error, if any
        finally:
            if not task.done():
                task.cancel()


def _no_match_text(where: Where, sessions: Any) -> str:
    """What a call whose selection chose nobody says, as Go's bench does."""
    if sessions is not None:
        q = getattr(sessions, "where", sessions)
        if isinstance(q, Mapping) and q:
            return "no ONLINE session matches " + ",".join(f"{k}={q[k]}" for k in sorted(q))
        return "no session is ONLINE"
    sel = str(as_selector(where))
    return f"no ONLINE machine matches {sel}" if sel else "no machine is ONLINE"
