// latencyCheck: the built-in function a session exposes so the workbench
// can measure, from where the session is, how fast a URL answers.

import type { ArgSpec } from "./args.js";
import { CallError, Codes } from "./wire.js";

/** The arguments of latencyCheck. */
export interface LatencyCheckArgs {
  /** The http(s) URL to fetch. */
  url: string;
  /** How many fetches, one after the other (1..20, default 3). */
  count?: number;
  /** How long each fetch may take, in milliseconds (1..60000, default 5000). */
  timeout_ms?: number;
}

/** What latencyCheck answers. */
export interface LatencyCheckResult {
  url: string;
  /** How many fetches were made. */
  count: number;
  /** Time to the whole body, in milliseconds, of the fastest, median and slowest fetch. */
  min_ms: number;
  median_ms: number;
  max_ms: number;
  /** The HTTP status of the last fetch. */
  status: number;
  /** The body size of the last fetch, in bytes. */
  bytes: number;
}

/** Bounds of latencyCheck's arguments. */
export const LatencyCheckLimits = { maxCount: 20, maxTimeoutMs: 60_000 } as const;

/** Extra context an exposed function may take (see Session.expose). */
interface CallContext {
  signal?: AbortSignal;
}

/**
 * latencyCheck fetches url count times, one after the other (cache:
 * "no-store", so each one reaches the server), and reports the times to
 * the whole body. A fetch that fails (network error, timeout) fails the
 * call with a CallError naming it: 504 for a timeout, 503 for a network
 * error; bad arguments are a 400. An HTTP error status is a measurement,
 * not a failure: it is reported in status.
 *
 * Expose it with one line: `await session.expose("latencyCheck", latencyCheck)`.
 * A page can only fetch what its origin's CORS rules let it read: the
 * measured server must answer with Access-Control-Allow-Origin for the
 * page's origin (or *).
 */
export async function latencyCheck(args: LatencyCheckArgs, ctx: CallContext = {}): Promise<LatencyCheckResult> {
  const url = checkURL(args.url);
  const count = args.count ?? 3;
  const timeoutMs = args.timeout_ms ?? 5000;
  if (!Number.isInteger(count) || count < 1 || count > LatencyCheckLimits.maxCount) {
    throw new CallError(Codes.BadRequest, `latencyCheck: count is ${count}; give 1 to ${LatencyCheckLimits.maxCount}`);
  }
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > LatencyCheckLimits.maxTimeoutMs) {
    throw new CallError(Codes.BadRequest, `latencyCheck: timeout_ms is ${timeoutMs}; give 1 to ${LatencyCheckLimits.maxTimeoutMs}`);
  }
  const times: number[] = [];
  let status = 0;
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    if (ctx.signal?.aborted) {
      throw new CallError(Codes.Timeout, `latencyCheck: stopped before fetch ${i + 1} of ${count} of ${url}: the call's time ran out`);
    }
    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; ctl.abort(); }, timeoutMs);
    const onAbort = () => ctl.abort();
    ctx.signal?.addEventListener("abort", onAbort);
    const start = performance.now();
    try {
      const res = await fetch(url, { cache: "no-store", signal: ctl.signal, redirect: "follow" });
      const body = await res.arrayBuffer();
      times.push(performance.now() - start);
      status = res.status;
      bytes = body.byteLength;
    } catch (e) {
      if (timedOut) {
        throw new CallError(Codes.Timeout, `latencyCheck: fetch ${i + 1} of ${count} of ${url} took more than ${timeoutMs} ms`);
      }
      if (ctx.signal?.aborted) {
        throw new CallError(Codes.Timeout, `latencyCheck: stopped at fetch ${i + 1} of ${count} of ${url}: the call's time ran out`);
      }
      // In a page, a server that does not allow the page's origin (CORS)
      // fails like a network error: say so.
      const hint = typeof (globalThis as { document?: unknown }).document !== "undefined"
        ? " (a page can read only URLs whose server allows its origin: Access-Control-Allow-Origin)"
        : "";
      throw new CallError(Codes.Unavailable, `latencyCheck: fetch ${i + 1} of ${count} of ${url} failed: ${describe(e)}${hint}`);
    } finally {
      clearTimeout(timer);
      ctx.signal?.removeEventListener("abort", onAbort);
    }
  }
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return {
    url,
    count: times.length,
    min_ms: round(sorted[0]),
    median_ms: round(median),
    max_ms: round(sorted[sorted.length - 1]),
    status,
    bytes,
  };
}

/** latencyCheck's declared arguments: the workbench's `--arg count=5` arrives as a string. */
latencyCheck.args = [
  { name: "url", type: "string", required: true, help: "the http(s) URL to fetch" },
  { name: "count", type: "int", help: "how many fetches (1..20, default 3)" },
  { name: "timeout_ms", type: "int", help: "how long each fetch may take (default 5000)" },
] as const satisfies readonly ArgSpec[];

/**
 * latencyCheckOf is latencyCheck limited to URLs of the given origins
 * ("https://cdn.example.com"): a caller who names any other URL is
 * answered 403, and the session fetches nothing. Expose it instead of
 * latencyCheck when the sessions should only ever measure your own
 * servers, not whatever an operator names (an address on the user's own
 * network, say).
 */
export function latencyCheckOf(opts: { origins: readonly string[] }): typeof latencyCheck {
  const allowed = new Set(
    opts.origins.map((o) => {
      const u = new URL(o);
      if (u.protocol !== "http:" && u.protocol !== "https:") {
        throw new Error(`latencyCheckOf: origin ${JSON.stringify(o)} is not http(s)`);
      }
      return u.origin;
    }),
  );
  if (allowed.size === 0) throw new Error("latencyCheckOf: give the origins it may fetch");
  const limited = async (args: LatencyCheckArgs, ctx: CallContext = {}): Promise<LatencyCheckResult> => {
    const url = checkURL(args.url);
    if (!allowed.has(new URL(url).origin)) {
      throw new CallError(Codes.Forbidden, `latencyCheck: this session measures only ${[...allowed].join(", ")}; ${new URL(url).origin} is not one of them`);
    }
    return latencyCheck(args, ctx);
  };
  limited.args = latencyCheck.args;
  return limited;
}

function checkURL(raw: unknown): string {
  if (typeof raw !== "string" || raw === "") {
    throw new CallError(Codes.BadRequest, "latencyCheck: give the url to fetch (--arg url=https://…)");
  }
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new CallError(Codes.BadRequest, `latencyCheck: url ${JSON.stringify(raw)} is not an absolute URL: give one like https://example.com/`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new CallError(Codes.BadRequest, `latencyCheck: url ${JSON.stringify(raw)} is ${u.protocol}; only http: and https: URLs are fetched`);
  }
  return u.href;
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message}: ${cause.message}` : e.message;
  }
  return String(e);
}
