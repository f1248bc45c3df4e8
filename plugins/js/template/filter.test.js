// Unit tests of the template filter, run natively with `node --test` (no WebAssembly).
import { test } from "node:test";
import assert from "node:assert/strict";

import { Contains } from "./filter.js";
import { ConfigError, run } from "./logfleet-filter.js";

test("keeps only lines containing the text", () => {
  const kept = run(Contains, { contains: "timeout" }, ["ok", "db timeout", "fine", "timeout again"]);
  assert.deepEqual(kept.map((r) => r.index), [1, 3]);
});

test("tags kept lines", () => {
  const kept = run(Contains, { contains: "slow", tag: "[slow]" }, ["slow query", "fast"]);
  assert.deepEqual(kept.map((r) => r.message), ["[slow] slow query"]);
});

test("refuses a config without text", () => {
  assert.throws(() => run(Contains, null, ["x"]), ConfigError);
});
