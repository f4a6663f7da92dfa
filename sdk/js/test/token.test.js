// Session tokens a Node.js backend signs with this library are the ones
// fleet signs: the shared vector, byte for byte.
import assert from "node:assert/strict";
import { test } from "node:test";

import { base64url, signSessionToken } from "../dist/index.js";
import { wireVectors } from "./vectors.js";

const v = wireVectors("subjects.json").sessions.tokens;

test("signSessionToken makes the vector's token from its claims and seed", () => {
  assert.equal(signSessionToken(v.claims, v.app_seed), v.token);
});

test("claims' keys are sorted and empty optional fields left out, as Go encodes them", () => {
  const sign = (c) => JSON.parse(Buffer.from(signSessionToken(c, v.app_seed).split(".")[1], "base64url").toString());
  const c = sign({ app: "a", sub: "u", iat: 1, exp: 2, claims: { z: "1", a: "2" } });
  assert.deepEqual(Object.keys(c), ["app", "sub", "iat", "exp", "claims"]);
  assert.deepEqual(Object.keys(c.claims), ["a", "z"]);
  assert.deepEqual(Object.keys(sign({ app: "a", sub: "u", iat: 1, exp: 2, nkey: "", claims: {} })), ["app", "sub", "iat", "exp"]);
});

test("only an app's seed signs", () => {
  assert.throws(() => signSessionToken(v.claims, "SUAM..."), /the app's seed starts with SA/);
});

test("base64url agrees with Buffer for every tail length", () => {
  for (let n = 0; n < 40; n++) {
    const b = new Uint8Array(n).map((_, i) => (i * 97 + 13) & 255);
    assert.equal(base64url(b), Buffer.from(b).toString("base64url"), `${n} bytes`);
  }
});
