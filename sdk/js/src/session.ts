// A session: a browser tab, mobile app or device that joins an app of a
// commandcontrol fleet over NATS WebSocket and answers the workbench's
// calls of the functions it exposes.

import {
  headers as natsHeaders,
  nkeyAuthenticator,
  tokenAuthenticator,
  wsconnect,
} from "@nats-io/nats-core";
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import { createUser, fromSeed } from "@nats-io/nkeys";
import type { KeyPair } from "@nats-io/nkeys";

import { parseArgs } from "./args.js";
import type { ArgSpec } from "./args.js";
import {
  argsDigest,
  CallError,
  checkCallId,
  Codes,
  formatSeconds,
  headerSafe,
  Headers,
  MaxCallIDLen,
  MaxRequestSize,
  DefaultMaxAnswer,
  MaxSessionHello,
  parseSessionFnSubject,
  sessionFnWildcard,
  sessionId,
  sessionReply,
} from "./wire.js";

/**
 * Where a session keeps its key, so a reload keeps its id:
 * sessionStorage in a page (one key per tab), an AsyncStorage-like
 * object (React Native) or anything with these two methods. Not
 * localStorage: every tab of the browser would read the same key, and a
 * session id is one connection (see Session's superseded status).
 */
export interface SeedStorage {
  getItem(key: string): string | null | undefined | Promise<string | null | undefined>;
  setItem(key: string, value: string): void | Promise<void>;
}

/** memoryStorage keeps the key in memory only: each run is a new session. */
export function memoryStorage(): SeedStorage {
  const m = new Map<string, string>();
  return {
    getItem: (k) => m.get(k) ?? null,
    setItem: (k, v) => {
      m.set(k, v);
    },
  };
}

/** What a token function is told: whom the token is for. */
export interface TokenRequest {
  app: string;
  /** The session's public nkey (U…): a signed token may bind it (the "nkey" claim). */
  publicKey: string;
  /** The session id the control service will give the session. */
  id: string;
}

/**
 * A session token (signed apps): a string, or a function called before
 * the first connection and again whenever the session reconnects (the
 * token only admits; a reconnect needs a fresh one).
 */
export type TokenSource = string | ((req: TokenRequest) => string | Promise<string>);

/** A status event of a session. */
export interface SessionStatus {
  /**
   * "connected" (first connection), "disconnect", "reconnecting" (a dial
   * starts), "reconnect" (connected again, functions served again),
   * "error" (the broker's error, e.g. a refused subscription), "token"
   * (the token function failed), "storage" (the key could not be kept:
   * this run's id will not survive a reload), "superseded" (the last
   * SupersededAfter connections were each closed soon after being made:
   * another connection may be using this session's key, or the network
   * keeps dropping it; the session keeps reconnecting, further apart,
   * see SupersededAfter), "closed" (after close()).
   */
  type: string;
  server?: string;
  error?: Error;
}

/** What happened to one call (see SessionOptions.onCall). */
export interface CallRecord {
  function: string;
  /** The caller's public key. */
  caller: string;
  /** The call id (Cc-Call), "" for none. */
  call: string;
  /** 0 for a result, else the error code answered. */
  code: number;
  error?: string;
  /** How long the function ran, in milliseconds. */
  ms: number;
  /** Set when the call was not answered, saying why. */
  dropped?: string;
}

/** Options of connectSession. */
export interface SessionOptions {
  /** The broker's WebSocket URL(s): ws://host:port or wss://host. */
  servers: string | string[];
  /** The app the session joins, as registered by the operator. */
  app: string;
  /** A session token signed by the app's key (signed apps only). */
  token?: TokenSource;
  /** What the session says it is: "browser", "mobile" or "device" (guessed when not given). */
  platform?: string;
  /** The session's own version, shown as declared. */
  appVersion?: string;
  /** Shown as declared; navigator.userAgent when not given. */
  userAgent?: string;
  /** Where the session's key is kept (default: in memory, a new id each run). */
  seedStorage?: SeedStorage;
  /** The storage key (default "commandcontrol.session.<app>"). */
  storageKey?: string;
  /** Called for each status event. */
  onStatus?: (s: SessionStatus) => void;
  /** Called once per call, answered or not. */
  onCall?: (c: CallRecord) => void;
  /** Calls running at once; past it a call is answered 503 (default 8). */
  maxConcurrent?: number;
  /** How long a function may run before it is answered 504 (default 30000 ms). */
  callTimeoutMs?: number;
  /** How long the first connection may take (default 10000 ms). */
  connectTimeoutMs?: number;
  /** Longest wait between two reconnect attempts (default 30000 ms). */
  maxReconnectDelayMs?: number;
  /**
   * Longest wait between two reconnect attempts once the connections
   * keep being closed soon after being made (status "superseded"; default
   * 300000 ms, 5 minutes). Two sessions with one key then take turns at
   * most this often.
   */
  supersededMaxDelayMs?: number;
  /**
   * Largest answer in bytes, headers included (default DefaultMaxAnswer,
   * 64 KiB: the control service's default --session-max-payload; it
   * closes a session that answers with more). A larger result is
   * answered 413. Raise it only with the service's limit.
   */
  maxAnswerBytes?: number;
}

/** What an exposed function is told besides its arguments. */
export interface CallContext {
  function: string;
  /** The caller's public key (the broker checked it). */
  caller: string;
  /** The call id, "" for none. */
  callId: string;
  /** Aborted when the call's time runs out or the session closes. */
  signal: AbortSignal;
}

/**
 * An exposed function: it gets the decoded arguments and answers a
 * JSON-encodable result. Throw a CallError to answer with its code; any
 * other error answers 500. A function with an `args` property (an
 * ArgSpec list, as latencyCheck has) gets its arguments converted to the
 * declared types.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type SessionFunction = ((args: any, ctx: CallContext) => unknown) & { args?: readonly ArgSpec[] };

/** Options of Session.expose. */
export interface ExposeOptions {
  /** The function's declared arguments (default: the function's own `args`). */
  args?: readonly ArgSpec[];
  /** How long it may run (default: the session's callTimeoutMs). */
  timeoutMs?: number;
}

/**
 * A session id is one connection: the control service keeps the newest
 * connection of an id and closes the older. Two sessions with one key
 * (two tabs sharing localStorage, a duplicated tab's copied
 * sessionStorage, one device's key copied to another) would close each
 * other forever, each reconnect an admission charged to the address.
 * So a connection closed within ShortConnectionMs of being made counts
 * as short; each one in a row doubles the wait before the next dial.
 * After SupersededAfter of them in a row the session reports status
 * "superseded" (a possibility: another connection may be using its key,
 * or the network keeps dropping it) and keeps doubling the wait up to
 * SessionOptions.supersededMaxDelayMs (5 minutes) instead of
 * maxReconnectDelayMs; a connection that lasts ShortConnectionMs resets
 * it. Two sessions with one key then take turns at most every few
 * minutes; a lone session on a flaky network is never stopped by it.
 * Only close() stops a session.
 */
export const SupersededAfter = 3;
/** A connection closed sooner than this after being made is short (see SupersededAfter). */
export const ShortConnectionMs = 10_000;
/** The default of SessionOptions.supersededMaxDelayMs: 5 minutes. */
export const SupersededMaxDelayMs = 300_000;

/** What reconnectBackoff needs to know. */
export interface BackoffState {
  /** Dials failed since the last connection. */
  failures: number;
  /** Connections in a row closed within ShortConnectionMs. */
  short: number;
  /** The longest wait (SessionOptions.maxReconnectDelayMs, default 30000). */
  maxDelayMs?: number;
  /** The longest wait once superseded (SessionOptions.supersededMaxDelayMs, default 300000). */
  supersededMaxDelayMs?: number;
}

/**
 * reconnectBackoff is the wait before the next dial, before jitter:
 * 500 ms doubled for each failed dial and each short connection in a
 * row, at most maxDelayMs; after SupersededAfter short connections in a
 * row at most supersededMaxDelayMs (never less than maxDelayMs).
 */
export function reconnectBackoff(b: BackoffState): number {
  const max = b.maxDelayMs ?? 30_000;
  const n = Math.max(0, b.failures) + Math.max(0, b.short);
  if (b.short < SupersededAfter) return Math.min(max, 500 * 2 ** Math.min(n, 6));
  const cap = Math.max(max, b.supersededMaxDelayMs ?? SupersededMaxDelayMs);
  return Math.min(cap, 500 * 2 ** Math.min(n, 30));
}

/** How many call ids a session remembers, to run each call once. */
const rememberedCalls = 4096;
/** What a reply's headers and protocol line may take of the broker's max payload. */
const replyHeadroom = 1024;

/**
 * connectSession joins app as a session: it loads (or creates and keeps)
 * the session's key, connects to the broker over WebSocket with it and
 * the SessionHello, and resolves once connected. Expose functions with
 * session.expose. It rejects with an error saying what to fix when the
 * broker refuses the session.
 */
export async function connectSession(opts: SessionOptions): Promise<Session> {
  if (typeof opts.app !== "string" || opts.app === "") {
    throw new Error("connectSession: give the app to join ({ app: \"demo\" })");
  }
  const servers = typeof opts.servers === "string" ? [opts.servers] : opts.servers;
  if (!Array.isArray(servers) || servers.length === 0 || servers.some((s) => !/^wss?:\/\//.test(s))) {
    throw new Error(`connectSession: servers must be the broker's WebSocket URLs (ws://host:port or wss://host), got ${JSON.stringify(opts.servers)}`);
  }
  if (typeof (globalThis as { WebSocket?: unknown }).WebSocket !== "function") {
    throw new Error(
      "connectSession: this runtime has no WebSocket. In Node.js 20 set one first: " +
        "`import { WebSocket } from \"ws\"; globalThis.WebSocket = WebSocket;` " +
        "(or run node --experimental-websocket; Node.js 22 has it built in)",
    );
  }
  const status = opts.onStatus ?? (() => {});
  const kp = await loadKey(opts, status);
  const s = new Session(opts, kp, servers);
  await s.start();
  return s;
}

async function loadKey(opts: SessionOptions, status: (s: SessionStatus) => void): Promise<KeyPair> {
  const storage = opts.seedStorage ?? memoryStorage();
  const key = opts.storageKey ?? `commandcontrol.session.${opts.app}`;
  try {
    const seed = await storage.getItem(key);
    if (typeof seed === "string" && seed.startsWith("SU")) {
      try {
        return fromSeed(new TextEncoder().encode(seed));
      } catch {
        // A damaged seed: replaced below by a new key.
      }
    }
  } catch (e) {
    status({ type: "storage", error: asError(e, "cannot read the session key from storage") });
  }
  const kp = createUser();
  try {
    await storage.setItem(key, new TextDecoder().decode(kp.getSeed()));
  } catch (e) {
    status({ type: "storage", error: asError(e, "cannot keep the session key in storage; this session's id will not survive a reload") });
  }
  return kp;
}

interface Exposed {
  fn: SessionFunction;
  spec?: readonly ArgSpec[];
  timeoutMs: number;
  sub?: Subscription;
  refused?: Error;
}

/** A joined session. */
export class Session {
  /** The session id ("s+…"), as the control service computes it. */
  readonly id: string;
  readonly app: string;
  /** The session's public nkey (U…). */
  readonly publicKey: string;

  private readonly opts: SessionOptions;
  private readonly kp: KeyPair;
  private readonly servers: string[];
  private nc?: NatsConnection;
  private readonly fns = new Map<string, Exposed>();
  private readonly calls = new Set<string>();
  private running = 0;
  private hello = "";
  private refreshing?: Promise<void>;
  private lastRefresh = 0;
  private failures = 0;
  /** How long the token function took last time. */
  private tokenFetchMs = 0;
  private jitter = 1;
  private jitterFor = -1;
  /** When the current connection was made; undefined while disconnected. */
  private upSince?: number;
  /** Connections in a row closed within ShortConnectionMs. */
  private short = 0;
  private readonly aborts = new Set<AbortController>();

  /** @internal Use connectSession. */
  constructor(opts: SessionOptions, kp: KeyPair, servers: string[]) {
    this.opts = opts;
    this.kp = kp;
    this.servers = servers;
    this.app = opts.app;
    this.publicKey = kp.getPublicKey();
    this.id = sessionId(opts.app, this.publicKey);
  }

  /** @internal */
  async start(): Promise<void> {
    await this.refreshHello(true);
    const seed = this.kp.getSeed();
    try {
      this.nc = await wsconnect({
        servers: this.servers,
        authenticator: [nkeyAuthenticator(seed), tokenAuthenticator(() => this.hello)],
        timeout: this.opts.connectTimeoutMs ?? 10_000,
        maxReconnectAttempts: -1,
        // A refused reconnect (the per-address admission rate, an expired
        // token being replaced) is retried, with the backoff below.
        ignoreAuthErrorAbort: true,
        reconnectDelayHandler: () => this.reconnectDelay(),
        // While a fresh token is being fetched, hold the dial for about as
        // long as fetching one took: dialing with the old one would likely
        // be refused (and count against the admission rate).
        reconnectToServer: (pool) =>
          this.refreshing && pool.length > 0 ? { server: pool[0], delay: Math.min(5000, 50 + 2 * this.tokenFetchMs) } : null,
        pingInterval: 20_000,
        maxPingOut: 3,
      });
    } catch (e) {
      throw joinError(this.app, this.servers, e);
    }
    this.upSince = Date.now();
    void this.watch(this.nc);
    this.emit({ type: "connected", server: this.nc.getServer() });
  }

  /**
   * expose serves fn as function name of this session until the session
   * closes. It resolves once the broker accepted the subscription, and
   * rejects when it refused it (the app does not have that function).
   */
  async expose(name: string, fn: SessionFunction, opts: ExposeOptions = {}): Promise<void> {
    const nc = this.conn();
    // fleet.ValidateName: a function name is one subject token.
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(name)) {
      throw new Error(`expose: function name ${JSON.stringify(name)}: use 1 to 128 letters, digits, - and _`);
    }
    if (typeof fn !== "function") throw new Error(`expose ${name}: give a function`);
    if (this.fns.has(name)) throw new Error(`expose ${name}: this session already exposes it`);
    const e: Exposed = { fn, spec: opts.args ?? fn.args, timeoutMs: opts.timeoutMs ?? this.opts.callTimeoutMs ?? 30_000 };
    this.fns.set(name, e);
    e.sub = nc.subscribe(sessionFnWildcard(this.id, name), {
      callback: (err, m) => {
        if (err) {
          e.refused = err;
          this.emit({ type: "error", error: err });
          return;
        }
        this.handle(name, e, m).catch((err: unknown) =>
          this.emit({ type: "error", error: asError(err, `a call of ${name} failed unanswered`) }),
        );
      },
    });
    await nc.flush();
    if (e.refused) {
      this.fns.delete(name);
      throw new Error(`expose ${name}: the broker refused it (${e.refused.message}); the operator must give app "${this.app}" the function ${name} (cc-bench apps add ${this.app} --functions …)`);
    }
  }

  /** close leaves: the broker ends the session's subscriptions at once. */
  async close(): Promise<void> {
    for (const a of this.aborts) a.abort();
    await this.nc?.close();
  }

  /** closed resolves when the session is closed, with the error that closed it if any. */
  closed(): Promise<void | Error> {
    return this.conn().closed();
  }

  /** isClosed reports whether the session is closed. */
  isClosed(): boolean {
    return this.nc?.isClosed() ?? true;
  }

  private conn(): NatsConnection {
    if (!this.nc) throw new Error("session not connected: use connectSession");
    return this.nc;
  }

  private emit(s: SessionStatus): void {
    try {
      this.opts.onStatus?.(s);
    } catch {
      // A callback's error is the application's, not the session's.
    }
  }

  private record(c: CallRecord): void {
    try {
      this.opts.onCall?.(c);
    } catch {
      // As emit.
    }
  }

  private async watch(nc: NatsConnection): Promise<void> {
    void nc.closed().then((err) => this.emit({ type: "closed", error: err ?? undefined }));
    for await (const s of nc.status()) {
      switch (s.type) {
        case "disconnect":
          this.emit({ type: "disconnect", server: s.server });
          void this.refreshHello(false);
          break;
        case "reconnecting":
          this.failures++;
          this.emit({ type: "reconnecting" });
          break;
        case "reconnect":
          this.failures = 0;
          this.upSince = Date.now();
          this.emit({ type: "reconnect", server: s.server });
          break;
        case "error":
          this.emit({ type: "error", error: s.error });
          break;
        case "staleConnection":
          this.emit({ type: "stale" });
          break;
      }
    }
  }

  /**
   * refreshHello builds the SessionHello, calling the token function
   * when there is one. The first time a failure is thrown; on reconnects
   * it is reported (status "token") and the last hello kept.
   */
  private refreshHello(first: boolean): Promise<void> {
    if (!first && typeof this.opts.token !== "function") return Promise.resolve();
    if (this.refreshing) return this.refreshing;
    this.refreshing = this.buildHelloNow()
      .catch((e: unknown) => {
        const err = asError(e, "the token function failed");
        if (first) throw new Error(`cannot join app "${this.app}": ${err.message}`);
        this.emit({ type: "token", error: err });
      })
      .finally(() => {
        this.refreshing = undefined;
        this.lastRefresh = Date.now();
      });
    return this.refreshing;
  }

  private async buildHelloNow(): Promise<void> {
    const src = this.opts.token;
    let token = "";
    if (typeof src === "function") {
      const start = Date.now();
      try {
        token = await src({ app: this.app, publicKey: this.publicKey, id: this.id });
      } catch (e) {
        throw new Error(`the token function failed: ${asError(e, "no reason given").message}`);
      }
      this.tokenFetchMs = Date.now() - start;
      if (typeof token !== "string" || token === "") {
        throw new Error(`the token function returned ${JSON.stringify(token)}, not a session token`);
      }
    } else if (typeof src === "string") {
      token = src;
    } else if (src !== undefined) {
      throw new Error("token must be a string or a function returning one");
    }
    this.hello = buildHello(this.opts, token);
  }

  private reconnectDelay(): number {
    // The first delay after a disconnect: was the connection short?
    // (This runs as the client starts redialing, before the disconnect's
    // status event is handled.)
    if (this.upSince !== undefined) {
      this.short = Date.now() - this.upSince < ShortConnectionMs ? this.short + 1 : 0;
      this.upSince = undefined;
      if (this.short === SupersededAfter) {
        // Reported once a streak; the session keeps redialing, further
        // apart (reconnectBackoff): only close() stops it.
        this.emit({
          type: "superseded",
          error: new Error(
            `session ${this.id}: its last ${this.short} connections were closed within ${ShortConnectionMs / 1000} s of being made: ` +
              "another connection may be using this session's key, or the network keeps dropping it " +
              "(a session id is one connection; the newest wins). Reconnecting less often, up to every " +
              `${Math.round((this.opts.supersededMaxDelayMs ?? SupersededMaxDelayMs) / 1000)} s. ` +
              "If another tab shares the key (localStorage), keep it in sessionStorage (one per tab) or give each its own key",
          ),
        });
      }
    }
    // A token function is asked again before a redial (not before the
    // first dial: its token is fresh), at most once a second.
    if (this.nc && typeof this.opts.token === "function" && !this.refreshing && Date.now() - this.lastRefresh > 1000) {
      void this.refreshHello(false);
    }
    // Short connections in a row grow the delay as failed dials do.
    const n = this.failures + this.short;
    if (n !== this.jitterFor) {
      this.jitterFor = n;
      this.jitter = 0.75 + Math.random() * 0.5;
    }
    return (
      reconnectBackoff({
        failures: this.failures,
        short: this.short,
        maxDelayMs: this.opts.maxReconnectDelayMs,
        supersededMaxDelayMs: this.opts.supersededMaxDelayMs,
      }) * this.jitter
    );
  }

  private async handle(name: string, e: Exposed, m: Msg): Promise<void> {
    let caller = "";
    const drop = (why: string, call = "") =>
      this.record({ function: name, caller, call, code: 0, ms: 0, dropped: why });
    try {
      const c = parseSessionFnSubject(m.subject);
      caller = c.caller;
      if (c.token !== this.id || c.function !== name) {
        return drop(`call on ${m.subject} is not for ${name} of this session`);
      }
    } catch (err) {
      return drop(asError(err, "bad subject").message);
    }
    if (!m.reply) return drop(`call on ${m.subject} has no reply subject`);
    let reply: string;
    try {
      reply = sessionReply(m.reply, caller, this.id);
    } catch (err) {
      // Nowhere this session may answer: the broker would refuse it.
      return drop(asError(err, "bad reply subject").message);
    }
    const id = m.headers?.get(Headers.CallID) ?? "";
    const body = m.data ?? new Uint8Array();
    const ans: Answer = { reply, fn: name, caller, call: id.length <= MaxCallIDLen ? id : "", args: argsDigest(body) };
    if (id.length > MaxCallIDLen) {
      return this.fail(ans, 0, new CallError(Codes.BadRequest, `the ${Headers.CallID} header is ${id.length} bytes; at most ${MaxCallIDLen} are allowed`));
    }
    try {
      checkCallId(reply, id);
    } catch (err) {
      return this.fail(ans, 0, new CallError(Codes.BadRequest, asError(err, "bad call id").message));
    }
    const key = caller + " " + id;
    if (id !== "") {
      if (this.calls.has(key)) return drop(`repeat of call ${id}: answered once already`, id);
      this.calls.add(key);
      if (this.calls.size > rememberedCalls) this.calls.delete(this.calls.values().next().value as string);
    }
    if (body.length > MaxRequestSize) {
      return this.fail(ans, 0, new CallError(Codes.TooLarge, `request is ${body.length} bytes; at most ${MaxRequestSize} are allowed`));
    }
    const max = this.opts.maxConcurrent ?? 8;
    if (this.running >= max) {
      return this.fail(ans, 0, new CallError(Codes.Unavailable, `session ${this.id} is busy: all ${max} call slots are taken; retry later`));
    }
    let args: unknown;
    try {
      args = parseArgs(name, e.spec, body);
    } catch (err) {
      return this.fail(ans, 0, err);
    }
    this.running++;
    const ctl = new AbortController();
    this.aborts.add(ctl);
    const start = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          ctl.abort();
          reject(new CallError(Codes.Timeout, `${name} did not finish within ${e.timeoutMs} ms`));
        }, e.timeoutMs);
      });
      const res = await Promise.race([
        Promise.resolve().then(() => e.fn(args, { function: name, caller, callId: id, signal: ctl.signal })),
        timeout,
      ]);
      this.answer(ans, performance.now() - start, true, res);
    } catch (err) {
      this.fail(ans, performance.now() - start, err);
    } finally {
      clearTimeout(timer);
      this.aborts.delete(ctl);
      this.running--;
    }
  }

  /** fail answers the error err. */
  private fail(a: Answer, ms: number, err: unknown): void {
    this.answer(a, ms, false, undefined, err);
  }

  /**
   * answer sends the result res (ok), or err as the micro-style error
   * headers.
   */
  private answer(a: Answer, ms: number, ok: boolean, res: unknown, err?: unknown): void {
    const nc = this.nc;
    if (!nc || nc.isClosed()) {
      return this.record({ function: a.fn, caller: a.caller, call: a.call, code: 0, ms, dropped: "the session is closed" });
    }
    const h = natsHeaders();
    if (a.call !== "") h.set(Headers.CallID, a.call);
    h.set(Headers.Args, a.args);
    h.set(Headers.Function, a.fn);
    h.set(Headers.Duration, formatSeconds(ms));
    let data: Uint8Array | undefined;
    if (ok) {
      try {
        const json: string | undefined = JSON.stringify(res === undefined ? null : res);
        if (json === undefined) throw new Error(`a ${typeof res} is not JSON`);
        data = new TextEncoder().encode(json);
        const limit = Math.min(nc.info ? nc.info.max_payload : Infinity, this.opts.maxAnswerBytes ?? DefaultMaxAnswer) - replyHeadroom;
        if (data.length > limit) {
          ok = false;
          err = new CallError(Codes.TooLarge, `the result is ${data.length} bytes, more than the ${limit + replyHeadroom}-byte answer limit; narrow the call with its arguments`);
          data = undefined;
        }
      } catch (e) {
        ok = false;
        err = new CallError(Codes.Internal, `cannot encode the result: ${asError(e, "not JSON").message}`);
        data = undefined;
      }
    }
    let code = 0;
    let desc: string | undefined;
    if (!ok) {
      code = err instanceof CallError ? err.code : Codes.Internal;
      desc = headerSafe(asError(err, "the function failed").message);
      h.set(Headers.ErrorCode, String(code));
      h.set(Headers.Error, desc);
    }
    try {
      nc.publish(a.reply, data ?? new Uint8Array(), { headers: h });
    } catch (e) {
      return this.record({ function: a.fn, caller: a.caller, call: a.call, code, error: desc, ms, dropped: `the reply could not be sent: ${asError(e, "").message}` });
    }
    this.record({ function: a.fn, caller: a.caller, call: a.call, code, error: desc, ms });
  }
}

interface Answer {
  reply: string;
  fn: string;
  caller: string;
  /** The call id echoed, "" for none. */
  call: string;
  /** Cc-Args of the request. */
  args: string;
}

/** buildHello is the SessionHello JSON the session sends as its auth_token. */
export function buildHello(opts: Pick<SessionOptions, "app" | "platform" | "userAgent" | "appVersion">, token: string): string {
  const nav = (globalThis as { navigator?: { userAgent?: string; product?: string } }).navigator;
  const hello: Record<string, string> = { app: opts.app };
  if (token !== "") hello.token = token;
  const platform = opts.platform ?? guessPlatform(nav);
  if (platform) hello.platform = platform;
  const ua = (opts.userAgent ?? nav?.userAgent ?? "").slice(0, 512);
  if (ua) hello.user_agent = ua;
  if (opts.appVersion) hello.app_version = opts.appVersion.slice(0, 128);
  const json = JSON.stringify(hello);
  const size = new TextEncoder().encode(json).length;
  if (size > MaxSessionHello) {
    throw new Error(`the session hello is ${size} bytes; at most ${MaxSessionHello} are allowed: use a shorter token`);
  }
  return json;
}

function guessPlatform(nav?: { product?: string }): string {
  if (nav?.product === "ReactNative") return "mobile";
  if (typeof (globalThis as { document?: unknown }).document !== "undefined") return "browser";
  return "device";
}

function joinError(app: string, servers: string[], e: unknown): Error {
  const err = asError(e, "connection failed");
  let hint = "";
  if (/authoriz|authentication/i.test(err.message)) {
    hint = `: the broker refused the session. Check that app "${app}" is registered (cc-bench apps ls), and for a signed app that the token is valid and unexpired`;
  } else {
    hint = ": check the URL, that the broker's WebSocket listener is on, and that this page's origin is allowed";
  }
  const out = new Error(`cannot join app "${app}" at ${servers.join(", ")}: ${err.message}${hint}`);
  (out as { cause?: unknown }).cause = e;
  return out;
}

function asError(e: unknown, fallback: string): Error {
  if (e instanceof Error) return e;
  return new Error(e === undefined || e === null || e === "" ? fallback : String(e));
}
