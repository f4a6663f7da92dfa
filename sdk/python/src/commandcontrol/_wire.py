"""The commandcontrol wire contract (Go package fleet): subjects, reply
subject layout, headers, argument digests and error headers. Every function
here matches its Go namesake; tests/test_wire.py checks them against
fleet/testdata/wire/*.json."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Mapping, NamedTuple, Optional, Union

from .errors import CCError, cc_error

PREFIX = "sys.commandControl"
FN_ROOT = PREFIX + ".fn"
ALL_ROOT = PREFIX + ".all"
PRESENCE_SNAPSHOT_SUBJECT = PREFIX + ".presence.snapshot"
PRESENCE_EVENT_ROOT = PREFIX + ".presence.event"
PRESENCE_EVENTS_WILDCARD = PRESENCE_EVENT_ROOT + ".>"
CTL_ROOT = PREFIX + ".ctl"
AGENT_HINT_SUBJECT = PREFIX + ".agent.hint"
INBOX_ROOT = "_INBOX_cc"
SESSION_FN_ROOT = PREFIX + ".sfn"
SESSION_EVENT_ROOT = PREFIX + ".presence.session"
SESSION_EVENTS_WILDCARD = SESSION_EVENT_ROOT + ".>"
SESSION_ID_PREFIX = "s+"

AGENT_SERVICE_NAME = "cc-agent"
CONTROL_SERVICE_NAME = "cc-control"

REPLY_TO_ALL = "@all"
REPLY_TO_DISCOVERY = "@srv"
REPLY_TO_CONTROL = "@ctl"

EVENT_JOINED = "joined"
EVENT_LEFT = "left"
EVENT_UPDATED = "updated"

OP_PRESENCE_SNAPSHOT = "presence.snapshot"
OP_SESSIONS_SNAPSHOT = "sessions.snapshot"

# Headers.
HEADER_ERROR = "Nats-Service-Error"
HEADER_ERROR_CODE = "Nats-Service-Error-Code"
HEADER_MACHINE = "Cc-Machine"
HEADER_RETRY_AFTER = "Cc-Retry-After-Ms"
HEADER_FUNCTION = "Cc-Function"
HEADER_DURATION = "Cc-Duration"
HEADER_CALL_ID = "Cc-Call"
HEADER_ARGS = "Cc-Args"
HEADER_STATUS = "Status"
HEADER_DESCRIPTION = "Description"
STATUS_NO_RESPONDERS = "503"
DESCRIPTION_NO_RESPONDERS = "No Responders"

MAX_ID_LEN = 128
MAX_CALL_ID_LEN = 64

CODE_BAD_REQUEST = 400
CODE_FORBIDDEN = 403
CODE_NOT_FOUND = 404
CODE_CONFLICT = 409
CODE_TOO_LARGE = 413
CODE_TOO_MANY_REQUESTS = 429
CODE_INTERNAL = 500
CODE_UNAVAILABLE = 503
CODE_TIMEOUT = 504

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ID_CHARS = _ALNUM | frozenset("._:-")
_NAME_CHARS = _ALNUM | frozenset("-_")
_SESSION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")


# ---- ids ----

_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def validate_machine_id(id: str) -> None:
    """Raise ValueError unless id is 1–128 characters from A–Z a–z 0–9 . _ : -."""
    if _ID_RE.fullmatch(id) is not None and id.isascii():
        return
    if id == "":
        raise ValueError("machine id is empty")
    if len(id) > MAX_ID_LEN:
        raise ValueError(f"machine id {id[:20]!r}… is {len(id)} characters long; at most {MAX_ID_LEN} are allowed")
    for i, ch in enumerate(id):
        if ch not in _ID_CHARS:
            raise ValueError(f"machine id {id!r} has {ch!r} at position {i}; only letters, digits and . _ : - are allowed")


def validate_name(what: str, name: str) -> None:
    """Raise ValueError unless name (an operator or function name) is 1–128
    characters from A–Z a–z 0–9 - _."""
    if name == "":
        raise ValueError(f"{what} is empty")
    if len(name) > MAX_ID_LEN:
        raise ValueError(f"{what} {name[:20]!r}… is too long ({len(name)} > {MAX_ID_LEN} characters)")
    for i, ch in enumerate(name):
        if ch not in _NAME_CHARS:
            raise ValueError(f"{what} {name!r} has {ch!r} at position {i}; only letters, digits, - and _ are allowed")


def machine_token(id: str) -> str:
    """A machine id as one subject token: every "." becomes "~". ValueError
    when id is no valid machine id (so no subject is built from one)."""
    validate_machine_id(id)
    return id.replace(".", "~")


def machine_from_token(tok: str) -> str:
    """Reverse machine_token and validate; ValueError when it is no machine's."""
    id = tok.replace("~", ".")
    try:
        validate_machine_id(id)
    except ValueError as e:
        raise ValueError(f"bad machine token {tok!r}: {e}") from None
    return id


def is_session_id(tok: str) -> bool:
    """Whether tok is a session id: "s+" and 16 base32 (lower-case) characters."""
    if not tok.startswith(SESSION_ID_PREFIX):
        return False
    rest = tok[len(SESSION_ID_PREFIX):]
    return len(rest) == 16 and all(c in _SESSION_CHARS for c in rest)


def session_id(app: str, key: str) -> str:
    """The id the control service gives a session of app that proved key:
    "s+" and base32 (lower case, unpadded) of SHA-256(app, 0, key)[:10]."""
    h = hashlib.sha256((app + "\x00" + key).encode()).digest()[:10]
    return SESSION_ID_PREFIX + base64.b32encode(h).decode().lower().rstrip("=")


# ---- subjects ----

def fn_subject(machine_id: str, fn: str, caller: str) -> str:
    return f"{FN_ROOT}.{machine_token(machine_id)}.{fn}.{caller}"


def all_subject(fn: str, caller: str) -> str:
    return f"{ALL_ROOT}.{fn}.{caller}"


def session_fn_subject(session_id: str, fn: str, caller: str) -> str:
    return f"{SESSION_FN_ROOT}.{session_id}.{fn}.{caller}"


def presence_event_subject(event: str, machine_id: str) -> str:
    return f"{PRESENCE_EVENT_ROOT}.{event}.{machine_token(machine_id)}"


def session_event_subject(event: str, session_id: str) -> str:
    return f"{SESSION_EVENT_ROOT}.{event}.{session_id}"


def ctl_subject(operator_key: str, op: str) -> str:
    return f"{CTL_ROOT}.{operator_key}.{op}"


def operator_inbox(operator_key: str) -> str:
    return f"{INBOX_ROOT}.{operator_key}"


def control_inbox(caller: str) -> str:
    """The inbox prefix for control and snapshot requests (nats-py inbox_prefix)."""
    return f"{INBOX_ROOT}.{caller}.{REPLY_TO_CONTROL}"


def discovery_inbox(caller: str) -> str:
    return f"{INBOX_ROOT}.{caller}.{REPLY_TO_DISCOVERY}"


def direct_inbox(caller: str, machine_id: str) -> str:
    return f"{INBOX_ROOT}.{caller}.{machine_token(machine_id)}"


def call_reply(caller: str, target: str, call: str, n: int) -> str:
    """Reply subject of copy n of call on target (a machine token or @all)."""
    return f"{INBOX_ROOT}.{caller}.{target}.{call}.{n}"


def call_replies(caller: str, call: str) -> str:
    """The wildcard matching every reply to call: one subscription per call."""
    return f"{INBOX_ROOT}.{caller}.*.{call}.>"


class Call(NamedTuple):
    """A parsed call subject; token is "" for a broadcast."""

    token: str
    function: str
    caller: str


def parse_fn_subject(subject: str) -> Call:
    """Split a direct or broadcast call subject; ValueError when malformed."""
    if subject.startswith(FN_ROOT + "."):
        parts = subject[len(FN_ROOT) + 1:].split(".")
        if len(parts) != 3 or "" in parts:
            raise ValueError(f"malformed call subject {subject!r}: want {FN_ROOT}.<machine>.<function>.<caller key>")
        return Call(parts[0], parts[1], parts[2])
    if subject.startswith(ALL_ROOT + "."):
        parts = subject[len(ALL_ROOT) + 1:].split(".")
        if len(parts) != 2 or "" in parts:
            raise ValueError(f"malformed call subject {subject!r}: want {ALL_ROOT}.<function>.<caller key>")
        return Call("", parts[0], parts[1])
    raise ValueError(f"subject {subject!r} is not a call subject")


def parse_session_fn_subject(subject: str) -> Call:
    """Split a session call subject sfn.<session>.<function>.<caller>."""
    if not subject.startswith(SESSION_FN_ROOT + "."):
        raise ValueError(f"subject {subject!r} is not a session call subject")
    parts = subject[len(SESSION_FN_ROOT) + 1:].split(".")
    if len(parts) != 3 or "" in parts:
        raise ValueError(f"malformed session call subject {subject!r}: want {SESSION_FN_ROOT}.<session>.<function>.<caller key>")
    if not is_session_id(parts[0]):
        raise ValueError(f"malformed session call subject {subject!r}: {parts[0]!r} is not a session id")
    return Call(parts[0], parts[1], parts[2])


def parse_ctl_subject(subject: str) -> tuple[str, str]:
    """Split a control subject into (operator key, op)."""
    if not subject.startswith(CTL_ROOT + "."):
        raise ValueError(f"subject {subject!r} is not a control subject")
    operator, sep, op = subject[len(CTL_ROOT) + 1:].partition(".")
    if not sep or not operator or not op:
        raise ValueError(f"malformed control subject {subject!r}: want {CTL_ROOT}.<operator>.<op>")
    return operator, op


class ReplySubject(NamedTuple):
    """A parsed reply subject _INBOX_cc.<caller>.<target>.<call>[.<copy>…]."""

    caller: str
    target: str
    call: str
    copy: str


_INBOX_DOT = INBOX_ROOT + "."
_INBOX_DOT_LEN = len(_INBOX_DOT)


def parse_call_reply(subject: str) -> ReplySubject:
    """Split a reply subject; ValueError when malformed."""
    if not subject.startswith(_INBOX_DOT):
        raise ValueError(f"reply subject {subject!r} is not under {INBOX_ROOT}")
    parts = subject[_INBOX_DOT_LEN:].split(".", 3)
    if len(parts) < 3 or not parts[0] or not parts[1] or not parts[2] or (len(parts) == 4 and not parts[3]):
        raise ValueError(
            f"reply subject {subject!r}: want {INBOX_ROOT}.<caller key>.<machine token or {REPLY_TO_ALL}>.<call>[.<copy>]")
    if parts[2].startswith("@"):
        # fleet.ParseCallReply: <caller>.<machine>.@srv.<nonce> is a
        # machine's discovery inbox, no call's reply.
        raise ValueError(f"reply subject {subject!r} has the reserved token {parts[2]!r} as its call: no call's reply")
    return ReplySubject(parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else "")


def reply_target(subject: str) -> str:
    """The target token of a well-formed reply subject, "" when there is
    none: the cheap parse the call engine makes per reply."""
    parts = subject.split(".", 3)
    return parts[2] if len(parts) >= 4 and parts[0] == INBOX_ROOT else ""


def inbox_owner(subject: str) -> str:
    """The operator key of an _INBOX_cc.<key>… subject; ValueError when
    subject is no operator's inbox."""
    if not subject.startswith(_INBOX_DOT):
        raise ValueError(f"subject {subject!r} is not under {INBOX_ROOT}: no inbox owner")
    key = subject[_INBOX_DOT_LEN:].split(".", 1)[0]
    if not key:
        raise ValueError(f"subject {subject!r} names no inbox owner: want {INBOX_ROOT}.<operator key>…")
    return key


def is_inbox_subject(subject: str) -> bool:
    return subject.startswith(_INBOX_DOT)


def is_control_reply(reply: str, caller: str) -> bool:
    return reply.startswith(control_inbox(caller) + ".")


def agent_reply(reply: str, caller: str, tok: str) -> str:
    """The subject on which machine tok answers a call from caller that asked
    for replies on reply (see fleet.AgentReply)."""
    r = parse_call_reply(reply)
    if r.caller != caller:
        raise ValueError(f"reply subject {reply!r} is not the caller's inbox {operator_inbox(caller)}")
    if r.target == tok:
        return reply
    if r.target == REPLY_TO_ALL:
        out = f"{INBOX_ROOT}.{caller}.{tok}.{r.call}"
        return out + "." + r.copy if r.copy else out
    raise ValueError(f"reply subject {reply!r} names target {r.target!r}, not this machine ({tok}) or {REPLY_TO_ALL}")


def call_reply_for(c: Call, reply: str) -> ReplySubject:
    """Parse the reply subject of call c as the control service reads it."""
    r = parse_call_reply(reply)
    if r.caller != c.caller:
        raise ValueError(f"reply subject {reply!r} is not the caller's inbox {operator_inbox(c.caller)}")
    if is_session_id(c.token):
        if r.target == c.token:
            return r
        raise ValueError(f"reply subject {reply!r} names target {r.target!r}, not the call's session {c.token}")
    if r.target == REPLY_TO_ALL or r.target == c.token:
        return r
    if c.token == "":
        try:
            machine_from_token(r.target)
        except ValueError:
            raise ValueError(f"reply subject {reply!r} names target {r.target!r}, which is no machine token nor {REPLY_TO_ALL}") from None
        return r
    raise ValueError(f"reply subject {reply!r} names target {r.target!r}, not the call's machine or {REPLY_TO_ALL}")


def check_call_id(reply: str, id: str) -> None:
    """ValueError unless id ("" is none) is the call token of reply."""
    if id == "":
        return
    r = parse_call_reply(reply)
    if r.call != id:
        raise ValueError(f"the {HEADER_CALL_ID} header {id!r} is not the call token {r.call!r} of the reply subject {reply}")


# ---- headers ----

def args_digest(body: bytes) -> str:
    """Half a SHA-256 in hex and the length: the Cc-Args header."""
    return hashlib.sha256(body).hexdigest()[:32] + ":" + str(len(body))


def error_from_headers(headers_or_code: Union[Mapping[str, str], str, None],
                       description: Optional[str] = None) -> Optional[CCError]:
    """The CCError the micro error headers carry, or None (fleet.ErrorFromHeader).

    Give the message's headers (a mapping, or None), or the two header
    values: error_from_headers(code, description). A code that is no number
    is 500; a 429's Cc-Retry-After-Ms (from the headers) is kept as
    retry_after_ms."""
    if isinstance(headers_or_code, str) or description is not None:
        code = headers_or_code if isinstance(headers_or_code, str) else ""
        desc = description or ""
        headers: Optional[Mapping[str, str]] = None
    else:
        headers = headers_or_code
        if not headers:
            return None
        code = headers.get(HEADER_ERROR_CODE, "")
        desc = headers.get(HEADER_ERROR, "")
    if code == "" and desc == "":
        return None
    try:
        n = int(code)
    except ValueError:
        n = CODE_INTERNAL
    retry: Optional[int] = None
    if n == CODE_TOO_MANY_REQUESTS and headers is not None:
        try:
            ms = int(headers.get(HEADER_RETRY_AFTER, ""))
            retry = ms if ms > 0 else None
        except ValueError:
            retry = None
    return cc_error(n, desc, retry)


def is_no_responders(headers: Optional[Mapping[str, str]], body: Union[int, bytes, bytearray]) -> bool:
    """Whether a message is the broker's "no responders" status (503, empty
    body); body is the message's body or its length."""
    n = body if isinstance(body, int) else len(body)
    return n == 0 and headers is not None and headers.get(HEADER_STATUS) == STATUS_NO_RESPONDERS
