// Session tokens: what a signed app's backend gives each of its users'
// sessions (fleet/sessiontoken.go). A JWT signed with the app's key, the
// nkeys account key pair `cc-bench apps add` created:
//
//   base64url({"typ":"JWT","alg":"ed25519-nkey"}) "." base64url(claims) "." base64url(Ed25519 signature)

import { fromSeed } from "@nats-io/nkeys";

import { utf8 } from "./wire.js";

/** What a session token says (fleet.SessionTokenClaims). */
export interface SessionTokenClaims {
  /** The app the token admits to. */
  app: string;
  /** The app's user (its own id for them). */
  sub: string;
  /** Issued at and expires, in Unix seconds; exp - iat at most 24 h. */
  iat: number;
  exp: number;
  /** Binds the token to one session key (the session's publicKey, U…). */
  nkey?: string;
  /** The app's own attributes of the user, shown with the session (at most 16). */
  claims?: Record<string, string>;
}

const header = '{"typ":"JWT","alg":"ed25519-nkey"}';

/**
 * encodeSessionToken signs c with sign (an Ed25519 signer of the app's
 * key). The claims are encoded in the Go type's field order, claims'
 * keys sorted, as fleet.EncodeSessionToken does.
 */
export function encodeSessionToken(c: SessionTokenClaims, sign: (data: Uint8Array) => Uint8Array): string {
  const body: Record<string, unknown> = { app: c.app, sub: c.sub, iat: c.iat, exp: c.exp };
  if (c.nkey) body.nkey = c.nkey;
  if (c.claims && Object.keys(c.claims).length > 0) {
    body.claims = Object.fromEntries(Object.entries(c.claims).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
  const signed = base64url(utf8(header)) + "." + base64url(utf8(JSON.stringify(body)));
  return signed + "." + base64url(sign(utf8(signed)));
}

/**
 * signSessionToken signs c with the app's seed (SA…, as `cc-bench apps
 * add` printed it). For an app's backend (Node.js): never ship the seed
 * to a page or an app.
 */
export function signSessionToken(c: SessionTokenClaims, seed: string): string {
  if (!seed.startsWith("SA")) {
    throw new Error("signSessionToken: the app's seed starts with SA (cc-bench apps add printed it)");
  }
  const kp = fromSeed(utf8(seed));
  try {
    return encodeSessionToken(c, (d) => kp.sign(d));
  } finally {
    kp.clear();
  }
}

const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** base64url encodes b without padding (RFC 4648 §5). */
export function base64url(b: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < b.length; i += 3) {
    const n = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    out += b64[n >>> 18] + b64[(n >>> 12) & 63] + b64[(n >>> 6) & 63] + b64[n & 63];
  }
  if (i < b.length) {
    const n = (b[i] << 16) | ((b[i + 1] ?? 0) << 8);
    out += b64[n >>> 18] + b64[(n >>> 12) & 63];
    if (i + 1 < b.length) out += b64[(n >>> 6) & 63];
  }
  return out;
}
