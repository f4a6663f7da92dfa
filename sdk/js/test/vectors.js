// Reads the shared wire vectors (fleet/testdata/wire) and this package's
// own test data.
import { readFileSync } from "node:fs";

const wire = new URL("../../../fleet/testdata/wire/", import.meta.url);

export function wireVectors(name) {
  return JSON.parse(readFileSync(new URL(name, wire), "utf8"));
}

export function testdata(name) {
  return JSON.parse(readFileSync(new URL("testdata/" + name, import.meta.url), "utf8"));
}
