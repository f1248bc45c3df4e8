// Unit tests of the helper library: the columnar batch is hidden correctly.
import { test } from "node:test";
import assert from "node:assert/strict";

import { ConfigError, MissingField, configure, decide, exportFilter, run } from "./logfleet-filter.js";

class Everything {
  static fields = ["message", "level", "source", "timestamp"];
  record(r) {
    return `${r.message}|${r.level}|${r.source}|${r.timestamp}`;
  }
}

class MessageOnly {
  static fields = ["message"];
  record(r) {
    return r.level === "ERROR";
  }
}

test("non-ASCII messages are sliced on UTF-8 offsets", () => {
  const kept = run(Everything, null, ["héllo", "wörld ✓", "plain"], {
    timestamps: [1, 2, 3], levels: ["INFO", "ERROR", "WARN"], sources: ["a", "b", "a"],
  });
  assert.deepEqual(kept.map((r) => r.message), ["héllo|INFO|a|1", "wörld ✓|ERROR|b|2", "plain|WARN|a|3"]);
});

test("reading an unrequested column names it", () => {
  assert.throws(() => run(MessageOnly, null, ["x"]), MissingField);
});

test("false drops, true keeps, a string rewrites", () => {
  class Mixed {
    static fields = ["message"];
    record(r) {
      return { drop: false, keep: true }[r.message] ?? r.message.toUpperCase();
    }
  }
  const batch = { len: 3, messages: "dropkeepnew", messageEnds: Uint32Array.of(4, 8, 11) };
  const { keep, rewrites } = decide(configure(Mixed, "null"), batch);
  assert.deepEqual([...keep], [0, 1, 1]);
  assert.deepEqual(rewrites, [{ index: 2, message: "NEW" }]);
});

test("bad JSON and unknown fields refuse the config, as an error string for the host", () => {
  class Odd {
    static fields = ["colour"];
  }
  assert.throws(() => configure(MessageOnly, "{"), ConfigError);
  assert.throws(() => configure(Odd, "null"), /colour/);
  assert.throws(() => exportFilter(Odd).configure("null"), (e) => typeof e === "string" && e.includes("colour"));
});

test("required fields are the declared ones, as WIT flags", () => {
  const world = exportFilter(MessageOnly);
  world.configure("null");
  assert.deepEqual(world.requiredFields(), {
    message: true, level: false, source: false, file: false, line: false, timestamp: false,
  });
});
