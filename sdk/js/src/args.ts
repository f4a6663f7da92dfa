// Call arguments, decoded as the Go agent decodes them
// (agent/functions.ParseArgs): the request body is a JSON object of
// arguments, or empty for none. The workbench sends every `--arg k=v` as a
// string, so a function that declares its arguments gets each converted to
// the declared type: "10" is the int 10, "true" the bool true.

import { CallError, Codes } from "./wire.js";

/** The types an argument may be declared with. */
export type ArgType = "string" | "int" | "float" | "bool";

/** One declared argument of an exposed function (functions.Arg). */
export interface ArgSpec {
  name: string;
  type: ArgType;
  help?: string;
  required?: boolean;
}

/** The value of an argument of each type. */
export type ArgValue = string | number | boolean;

/** Decoded arguments: declared names to converted values. */
export type Args = Record<string, ArgValue>;

// Invalid UTF-8 becomes U+FFFD, as Go's encoding/json reads it.
const td = new TextDecoder("utf-8");

/**
 * parseArgs decodes a request body for function fn. With spec (the
 * declared arguments), as ParseArgs does: unknown names, wrong types and
 * missing required arguments are a 400 CallError, and string values are
 * converted to the declared type. Without spec, any JSON object is
 * accepted and returned as it is (values not converted).
 */
export function parseArgs(fn: string, spec: readonly ArgSpec[] | undefined, body: Uint8Array): Record<string, unknown> {
  let text = td.decode(body);
  if (text.replace(/^[ \n\t\r]+/, "") === "") text = "{}";
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CallError(Codes.BadRequest, `request to ${fn} must be a JSON object of arguments: ${(e as Error).message}`);
  }
  if (raw === null) raw = {}; // Go decodes null into no arguments
  if (typeof raw !== "object" || Array.isArray(raw)) {
    const got = Array.isArray(raw) ? "an array" : typeof raw;
    throw new CallError(Codes.BadRequest, `request to ${fn} must be a JSON object of arguments, not ${got}`);
  }
  const obj = raw as Record<string, unknown>;
  if (spec === undefined) return obj;
  const declared = new Map(spec.map((a) => [a.name, a]));
  const args: Args = {};
  for (const [name, v] of Object.entries(obj)) {
    const a = declared.get(name);
    if (a === undefined) {
      throw new CallError(Codes.BadRequest, `${fn} has no argument ${JSON.stringify(name)}${argList(spec)}`);
    }
    try {
      args[name] = convertArg(a, v);
    } catch (e) {
      throw new CallError(Codes.BadRequest, `${fn}: argument ${JSON.stringify(name)}: ${(e as Error).message}`);
    }
  }
  for (const a of spec) {
    if (a.required && !(a.name in args)) {
      throw new CallError(Codes.BadRequest, `${fn}: argument ${JSON.stringify(a.name)} (${a.type}) is required`);
    }
  }
  return args;
}

function argList(spec: readonly ArgSpec[]): string {
  if (spec.length === 0) return " (it takes no arguments)";
  return " (it takes:" + spec.map((a) => ` ${a.name}:${a.type}`).join("") + ")";
}

// A decimal number as Go's strconv.ParseFloat reads it (hexadecimal
// floats, "inf" and "nan" aside: those are refused either way).
const decimal = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
// The strings Go's strconv.ParseBool reads.
const goBool = new Map<string, boolean>([
  ["1", true], ["t", true], ["T", true], ["TRUE", true], ["true", true], ["True", true],
  ["0", false], ["f", false], ["F", false], ["FALSE", false], ["false", false], ["False", false],
]);

function convertArg(a: ArgSpec, v: unknown): ArgValue {
  const shown = JSON.stringify(v);
  const isStr = typeof v === "string";
  const isNum = typeof v === "number";
  switch (a.type) {
    case "string":
      if (!isStr) throw new Error(`want a string, got ${shown}`);
      return v;
    case "int": {
      const n = isNum ? v : isStr && decimal.test(v) ? Number(v) : NaN;
      // Integers beyond 2^53 would not survive a JavaScript number.
      if (Number.isSafeInteger(n)) return n;
      throw new Error(`want an integer${Number.isInteger(n) ? " within ±2^53" : ""}, got ${shown}`);
    }
    case "float": {
      const f = isNum ? v : isStr && decimal.test(v) ? Number(v) : NaN;
      if (Number.isFinite(f)) return f;
      throw new Error(`want a number, got ${shown}`);
    }
    case "bool":
      if (typeof v === "boolean") return v;
      if (isStr && goBool.has(v)) return goBool.get(v)!;
      throw new Error(`want true or false, got ${shown}`);
  }
  throw new Error(`declared with unknown type ${JSON.stringify(a.type)}`);
}
