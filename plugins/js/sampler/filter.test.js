// Unit tests of the sampler, run natively with `node --test`.
import { test } from "node:test";
import assert from "node:assert/strict";

import { Sampler } from "./filter.js";
import { ConfigError, run } from "../template/logfleet-filter.js";

test("one_in keeps every Nth record, starting with the first", () => {
  const lines = Array.from({ length: 10 }, (_, i) => `line ${i}`);
  assert.deepEqual(run(Sampler, { one_in: 3 }, lines).map((r) => r.index), [0, 3, 6, 9]);
});

test("per_second keeps at most N records per second of record time", () => {
  const lines = ["a", "b", "c", "d", "e"];
  const timestamps = [1000, 1100, 1200, 2000, 2001];
  const kept = run(Sampler, { per_second: 2 }, lines, { timestamps });
  assert.deepEqual(kept.map((r) => r.message), ["a", "b", "d", "e"]);
});

test("a config with both, neither, or a bad rate is refused", () => {
  for (const config of [{}, { one_in: 2, per_second: 2 }, { one_in: 0 }, { one_in: 2, x: 1 }]) {
    assert.throws(() => run(Sampler, config, ["x"]), ConfigError, JSON.stringify(config));
  }
});
