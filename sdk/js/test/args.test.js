// Call arguments decode as the Go agent decodes them: one table
// (testdata/args.json), which e2e/sessions_sdk_test.go runs through
// functions.ParseArgs.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CallError, Codes, parseArgs } from "../dist/index.js";
import { testdata } from "./vectors.js";

const table = testdata("args.json");
const te = new TextEncoder();

function check(spec, c) {
  if (c.error !== undefined) {
    assert.throws(
      () => parseArgs("fn", spec, te.encode(c.body)),
      (e) => e instanceof CallError && e.code === Codes.BadRequest && e.message.includes(c.error),
      c.name,
    );
  } else {
    assert.deepEqual(parseArgs("fn", spec, te.encode(c.body)), c.want, c.name);
  }
}

test("arguments convert to the declared types as the agent converts them", () => {
  for (const c of table.cases) check(table.spec, c);
});

test("a function that declares no arguments takes none", () => {
  for (const c of table.no_args_spec) check([], c);
});

test("without a spec any JSON object passes as it is", () => {
  assert.deepEqual(parseArgs("fn", undefined, te.encode('{"a":"1","b":2}')), { a: "1", b: 2 });
  assert.deepEqual(parseArgs("fn", undefined, new Uint8Array()), {});
  assert.throws(() => parseArgs("fn", undefined, te.encode("[]")), /must be a JSON object of arguments, not an array/);
});

test("an int beyond 2^53 is refused, not rounded", () => {
  assert.throws(() => parseArgs("fn", [{ name: "n", type: "int" }], te.encode('{"n":"9007199254740993"}')), /within ±2\^53/);
});
