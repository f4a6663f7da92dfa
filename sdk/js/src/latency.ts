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
 * It fetches whatever http(s) URL the caller names, and follows its
 * redirects wherever they go (fetch's default), from the user's device
 * and network: expose latencyCheckOf instead to measure only your own
 * servers.
 *
 * Expose it with one line: `await session.expose("latencyCheck", latencyCheck)`.
 * A page can only fetch what its origin's CORS rules let it read: the
 * measured server must answer with Access-Control-Allow-Origin for the
 * page's origin (or *).
 */
export async function latencyCheck(args: LatencyCheckArgs, ctx: CallContext = {}): Promise<LatencyCheckResult> {
  return measure(args, ctx);
}

/** How many redirects latencyCheckOf follows, each to an allowed origin. */
export const MaxRedirects = 5;

/**
 * measure is latencyCheck; with allowed, only URLs of those origins are
 * fetched, redirects included: they are followed by hand, each hop's
 * origin checked, instead of by fetch.
 */
async function measure(args: LatencyCheckArgs, ctx: CallContext, allowed?: Set<string>): Promise<LatencyCheckResult> {
  const url = checkURL(args.url);
  if (allowed) checkOrigin(allowed, url);
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
      let target = url;
      for (let hop = 0; ; hop++) {
        const res = await fetch(target, { cache: "no-store", signal: ctl.signal, redirect: allowed ? "manual" : "follow" });
        const body = await res.arrayBuffer();
        if (allowed && res.url && !allowed.has(new URL(res.url).origin)) {
          // A runtime whose fetch follows redirects despite "manual"
          // (one built on XMLHttpRequest): what it reached is not told.
          throw new CallError(Codes.Forbidden, `latencyCheck: ${target} was redirected to ${new URL(res.url).origin} (this runtime's fetch follows redirects): not reported; this session measures only ${[...allowed].join(", ")}`);
        }
        const location = res.headers.get("location");
        if (allowed && res.status >= 300 && res.status < 400 && location !== null) {
          // Node.js and React Native hand over the redirect itself: follow
          // it only to an allowed origin. (A page gets an opaque redirect,
          // status 0 and no Location: it is reported as it is.)
          if (hop === MaxRedirects) {
            throw new CallError(Codes.Unavailable, `latencyCheck: ${url} redirects more than ${MaxRedirects} times`);
          }
          let next: URL;
          try {
            next = new URL(location, target);
          } catch {
            throw new CallError(Codes.Unavailable, `latencyCheck: ${target} redirects to ${JSON.stringify(location)}, not a URL`);
          }
          checkOrigin(allowed, next.href, target);
          target = next.href;
          continue;
        }
        times.push(performance.now() - start);
        status = res.status;
        bytes = body.byteLength;
        break;
      }
    } catch (e) {
      if (e instanceof CallError) throw e;
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

/**
 * checkOrigin refuses (403) url unless its origin is allowed; from names
 * the URL that redirected to it.
 */
function checkOrigin(allowed: Set<string>, url: string, from?: string): void {
  const origin = new URL(url).origin;
  if (allowed.has(origin)) return;
  const only = `this session measures only ${[...allowed].join(", ")}`;
  if (from !== undefined) {
    throw new CallError(Codes.Forbidden, `latencyCheck: ${from} redirects to ${origin}, which is not followed: ${only}`);
  }
  throw new CallError(Codes.Forbidden, `latencyCheck: ${only}; ${origin} is not one of them`);
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
 *
 * Redirects are followed by hand, at most MaxRedirects of them, each only
 * to one of the origins: a redirect elsewhere is answered 403 and not
 * fetched. In a page, fetch hides a redirect (an "opaque redirect"): the
 * answer is then the redirect's own, status 0 and 0 bytes, and the
 * redirect is not followed. A runtime whose fetch follows redirects anyway
 * gets a 403 when it ended on another origin: what it reached is not
 * reported.
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
  const limited = (args: LatencyCheckArgs, ctx: CallContext = {}): Promise<LatencyCheckResult> => measure(args, ctx, allowed);
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
