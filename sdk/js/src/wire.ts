// The commandcontrol wire contract as a session needs it: its id, its
// subjects, the reply subjects it may answer on, the headers it echoes.
// Each function mirrors the Go function of package fleet it names, and the
// tests run them against the shared vectors in fleet/testdata/wire.

import { sha256 } from "./sha256.js";

/** Prefix of every commandcontrol subject (fleet.Prefix). */
export const Prefix = "sys.commandControl";
/** Root of calls to sessions (fleet.SessionFnRoot). */
export const SessionFnRoot = Prefix + ".sfn";
/** Root of every reply subject (fleet.InboxRoot). */
export const InboxRoot = "_INBOX_cc";
/** Target token of a broadcast's reply subject (fleet.ReplyToAll). */
export const ReplyToAll = "@all";
/** Every session id starts with it (fleet.SessionIDPrefix). */
export const SessionIDPrefix = "s+";

/** Header names (fleet.Header*). */
export const Headers = {
  Error: "Nats-Service-Error",
  ErrorCode: "Nats-Service-Error-Code",
  Function: "Cc-Function",
  Duration: "Cc-Duration",
  CallID: "Cc-Call",
  Args: "Cc-Args",
} as const;

/** Error codes, HTTP-like, carried in Nats-Service-Error-Code (fleet.Code*). */
export const Codes = {
  BadRequest: 400,
  Forbidden: 403,
  NotFound: 404,
  TooLarge: 413,
  Internal: 500,
  Unavailable: 503,
  Timeout: 504,
} as const;

/** The longest call id a session accepts (fleet.MaxCallIDLen). */
export const MaxCallIDLen = 64;
/** The largest request body a session accepts (functions.MaxRequestSize). */
export const MaxRequestSize = 64 * 1024;
/**
 * The largest answer a session sends by default: the control service's
 * default --session-max-payload (controlsvc.DefaultSessionMaxPayload). A
 * session answering with more is closed by the service, so a larger
 * result is answered 413 instead.
 */
export const DefaultMaxAnswer = 64 * 1024;
/** The largest SessionHello a session may send (fleet.MaxSessionHello). */
export const MaxSessionHello = 8 << 10;

/**
 * CallError is an error with a code, as sent to a caller. Throw one from an
 * exposed function to answer with that code; any other error answers 500.
 */
export class CallError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.name = "CallError";
    this.code = code;
  }
}

const te = new TextEncoder();

/** utf8 encodes s. */
export function utf8(s: string): Uint8Array {
  return te.encode(s);
}

const b32 = "abcdefghijklmnopqrstuvwxyz234567";

/** base32Lower encodes b in RFC 4648 base32, lower case, without padding. */
export function base32Lower(b: Uint8Array): string {
  let out = "";
  let acc = 0;
  let n = 0;
  for (const byte of b) {
    acc = (acc << 8) | byte;
    n += 8;
    while (n >= 5) {
      out += b32[(acc >>> (n - 5)) & 31];
      n -= 5;
    }
    acc &= (1 << n) - 1;
  }
  if (n > 0) out += b32[(acc << (5 - n)) & 31];
  return out;
}

/** hex encodes b in lower-case hexadecimal. */
export function hex(b: Uint8Array): string {
  let out = "";
  for (const byte of b) out += byte.toString(16).padStart(2, "0");
  return out;
}

/**
 * sessionId is the id the control service gives the session of app that
 * proved key (its public nkey), as fleet.SessionID: "s+" and the base32
 * (lower case) of the first 10 bytes of SHA-256(app, 0x00, key).
 */
export function sessionId(app: string, key: string): string {
  return SessionIDPrefix + base32Lower(sha256(utf8(app + "\x00" + key)).subarray(0, 10));
}

/** validateSessionId throws unless id is shaped like a session id (fleet.ValidateSessionID). */
export function validateSessionId(id: string): void {
  if (!/^s\+[a-z2-7]{16}$/.test(id)) {
    throw new Error(`session id ${JSON.stringify(boundText(id))}: want ${SessionIDPrefix} and 16 characters of a-z 2-7`);
  }
}

/** sessionFnSubject is the subject on which caller calls fn on session id (fleet.SessionFnSubject). */
export function sessionFnSubject(id: string, fn: string, caller: string): string {
  return `${SessionFnRoot}.${id}.${fn}.${caller}`;
}

/** sessionFnWildcard is what session id subscribes to for fn (fleet.SessionFnWildcard). */
export function sessionFnWildcard(id: string, fn: string): string {
  return `${SessionFnRoot}.${id}.${fn}.*`;
}

/** machineReplies is where a session (or machine) with token tok may publish (fleet.MachineReplies). */
export function machineReplies(tok: string): string {
  return `${InboxRoot}.*.${tok}.>`;
}

/** callReply is the reply subject of copy n of call on target for caller (fleet.CallReply). */
export function callReply(caller: string, target: string, call: string, n: number): string {
  return `${InboxRoot}.${caller}.${target}.${call}.${n}`;
}

/** A session call subject, split (fleet.Call of fleet.ParseSessionFnSubject). */
export interface SessionCall {
  /** The session id. */
  token: string;
  function: string;
  caller: string;
}

/** parseSessionFnSubject splits a session call subject (fleet.ParseSessionFnSubject). */
export function parseSessionFnSubject(subject: string): SessionCall {
  if (!subject.startsWith(SessionFnRoot + ".")) {
    throw new Error(`subject ${JSON.stringify(subject)} is not a session call subject`);
  }
  const parts = subject.slice(SessionFnRoot.length + 1).split(".");
  if (parts.length !== 3 || parts.some((p) => p === "")) {
    throw new Error(`malformed session call subject ${JSON.stringify(subject)}: want ${SessionFnRoot}.<session id>.<function>.<caller key>`);
  }
  validateSessionId(parts[0]);
  return { token: parts[0], function: parts[1], caller: parts[2] };
}

/** A parsed reply subject (fleet.ReplySubject). */
export interface ReplySubject {
  caller: string;
  target: string;
  call: string;
  /** Everything after the call token, "" for none. */
  copy: string;
}

function cut(s: string, sep: string): [string, string, boolean] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, "", false] : [s.slice(0, i), s.slice(i + sep.length), true];
}

/** parseCallReply splits _INBOX_cc.<caller>.<target>.<call>[.<copy>…] (fleet.ParseCallReply). */
export function parseCallReply(subject: string): ReplySubject {
  if (!subject.startsWith(InboxRoot + ".")) {
    throw new Error(`reply subject ${JSON.stringify(subject)} is not under ${InboxRoot}`);
  }
  let rest = subject.slice(InboxRoot.length + 1);
  let caller: string, target: string, call: string, copy: string;
  let ok1: boolean, ok2: boolean, hasCopy: boolean;
  [caller, rest, ok1] = cut(rest, ".");
  [target, rest, ok2] = cut(rest, ".");
  [call, copy, hasCopy] = cut(rest, ".");
  if (!ok1 || !ok2 || caller === "" || target === "" || call === "" || (hasCopy && copy === "")) {
    throw new Error(`reply subject ${JSON.stringify(subject)}: want ${InboxRoot}.<caller key>.<machine token or ${ReplyToAll}>.<call>[.<copy>]`);
  }
  if (call.startsWith("@")) {
    // <caller>.<machine>.@srv.<nonce> is a machine's discovery inbox, no call's reply.
    throw new Error(`reply subject ${JSON.stringify(subject)} has the reserved token ${JSON.stringify(call)} as its call: no call's reply`);
  }
  return { caller, target, call, copy };
}

/**
 * agentReply is the subject an answerer with token tok answers a call from
 * caller on, as fleet.AgentReply: reply itself when it names tok, with tok
 * in place of @all for a broadcast; it throws for another caller's inbox
 * or another target.
 */
export function agentReply(reply: string, caller: string, tok: string): string {
  const r = parseCallReply(reply);
  if (r.caller !== caller) {
    throw new Error(`reply subject ${JSON.stringify(reply)} is not the caller's inbox ${InboxRoot}.${caller}`);
  }
  if (r.target === tok) return reply;
  if (r.target === ReplyToAll) {
    return `${InboxRoot}.${caller}.${tok}.${r.call}` + (r.copy !== "" ? "." + r.copy : "");
  }
  throw new Error(`reply subject ${JSON.stringify(reply)} names target ${JSON.stringify(r.target)}, not this machine (${tok}) or ${ReplyToAll}`);
}

/**
 * sessionReply is the subject session id answers a call from caller on:
 * reply itself, which must be in caller's inbox and name the session
 * (_INBOX_cc.<caller>.<id>.<call>[.<copy>]). Sessions are never called by
 * broadcast, so unlike agentReply it refuses @all.
 */
export function sessionReply(reply: string, caller: string, id: string): string {
  const r = parseCallReply(reply);
  if (r.caller !== caller) {
    throw new Error(`reply subject ${JSON.stringify(reply)} is not the caller's inbox ${InboxRoot}.${caller}`);
  }
  if (r.target !== id) {
    throw new Error(`reply subject ${JSON.stringify(reply)} names target ${JSON.stringify(r.target)}, not this session (${id})`);
  }
  return reply;
}

/**
 * checkCallId accepts a call id (the Cc-Call header) only when it is the
 * call token of the reply subject; "" is no id (fleet.CheckCallID).
 */
export function checkCallId(reply: string, id: string): void {
  if (id === "") return;
  const r = parseCallReply(reply);
  if (r.call !== id) {
    throw new Error(`the ${Headers.CallID} header ${JSON.stringify(id)} is not the call token ${JSON.stringify(r.call)} of the reply subject ${reply}: give each call its own token, and every copy of it the same ${Headers.CallID}`);
  }
}

/** argsDigest is the Cc-Args of a request body: hex(SHA-256(body)[:16]) ":" len (fleet.ArgsDigest). */
export function argsDigest(body: Uint8Array): string {
  return hex(sha256(body).subarray(0, 16)) + ":" + body.length;
}

/** formatSeconds writes ms as decimal seconds, as Cc-Duration carries them ("0.0012"). */
export function formatSeconds(ms: number): string {
  if (!(ms > 0)) return "0";
  return (ms / 1000).toFixed(9).replace(/\.?0+$/, "");
}

/** headerSafe makes s fit one header line of at most 4 KiB (the agent's headerSafe). */
export function headerSafe(s: string): string {
  // eslint-disable-next-line no-control-regex
  s = s.replace(/[\x00-\x1f\x7f]/g, " ");
  const b = utf8(s);
  if (b.length > 4096) {
    // Cut at 4096 bytes, dropping a character the cut split.
    s = new TextDecoder().decode(b.subarray(0, 4096)).replace(/\uFFFD$/, "") + "…";
  }
  return s;
}

function boundText(s: string): string {
  return s.length > 40 ? s.slice(0, 40) + "…" : s;
}
