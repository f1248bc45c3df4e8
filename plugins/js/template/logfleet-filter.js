// LogFleet filter helper library for JavaScript plugins (componentize-js).
//
// Hides the columnar batch of the `logfleet:filter@1.0.0` world (wit/filter.wit), the way the
// Rust SDK (filters-wasm/sdk) does: an author writes a class with `static fields`, a
// constructor taking the parsed JSON config (null when none), and `record(r)` returning true
// (keep), false (drop) or a string (keep with that message); then exports it:
//
//   class Timeouts {
//     static fields = ["message"];
//     constructor(config) { this.text = config?.contains ?? "timeout"; }
//     record(r) { return r.message.includes(this.text); }
//   }
//   export const { configure, requiredFields, filterBatch } = exportFilter(Timeouts);
//
// Only the columns named in `fields` are filled by the host; reading another throws
// MissingField. Throw ConfigError from the constructor to refuse a session's config; its text
// is shown to the user. `run()` drives a filter in `node --test` through the same code the
// component runs.

export const FIELD_NAMES = ["message", "level", "source", "file", "line", "timestamp"];
export const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/** Thrown by a filter's constructor to refuse its config; the text is shown to the user. */
export class ConfigError extends Error {}

/** A record column was read that the filter did not list in `fields`. */
export class MissingField extends Error {}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Slices messages out of the concatenated column. Offsets are UTF-8 byte offsets; an
 * all-ASCII batch (the common case) is sliced as a string without encoding. */
class Messages {
  constructor(batch) {
    this.ends = batch.messageEnds;
    const text = batch.messages;
    // eslint-disable-next-line no-control-regex
    if (/^[\x00-\x7f]*$/.test(text)) {
      this.text = text;
      this.bytes = null;
    } else {
      this.text = null;
      this.bytes = encoder.encode(text);
    }
  }

  get(i) {
    const start = i > 0 ? this.ends[i - 1] : 0;
    const end = this.ends[i];
    return this.bytes === null
      ? this.text.slice(start, end)
      : decoder.decode(this.bytes.subarray(start, end));
  }
}

/** One record of a batch: a read-only view of its columns. */
export class Record {
  constructor(batch, messages, fields, index) {
    this.index = index;
    this._batch = batch;
    this._messages = messages;
    this._fields = fields;
  }

  _need(field) {
    if (!this._fields.has(field)) {
      throw new MissingField(`this filter reads '${field}' but did not list it in fields`);
    }
  }

  get message() {
    this._need("message");
    return this._messages.get(this.index);
  }

  /** The level's name: TRACE, DEBUG, INFO, WARN, ERROR or FATAL. */
  get level() {
    this._need("level");
    return LEVELS[this._batch.levels[this.index]];
  }

  get source() {
    this._need("source");
    return this._batch.sources[this._batch.sourceIds[this.index]];
  }

  get file() {
    this._need("file");
    return this._batch.files[this._batch.fileIds[this.index]];
  }

  get line() {
    this._need("line");
    return Number(this._batch.lines[this.index]);
  }

  /** When the agent read the line, milliseconds since the Unix epoch. */
  get timestamp() {
    this._need("timestamp");
    return Number(this._batch.timestamps[this.index]);
  }
}

/** Builds a filter of class `Cls` from the session's JSON config text. */
export function configure(Cls, configText) {
  let config;
  try {
    config = JSON.parse(configText);
  } catch (e) {
    throw new ConfigError(`config is not JSON: ${e.message}`);
  }
  const fields = Cls.fields ?? FIELD_NAMES;
  const unknown = fields.filter((f) => !FIELD_NAMES.includes(f));
  if (unknown.length > 0) {
    throw new ConfigError(`unknown fields ${JSON.stringify(unknown)}; known: ${JSON.stringify(FIELD_NAMES)}`);
  }
  const filter = new Cls(config);
  return { filter, fields: new Set(fields) };
}

/** Runs a configured filter over a batch: `{ keep: Uint8Array, rewrites: [{index, message}] }`. */
export function decide({ filter, fields }, batch) {
  const keep = new Uint8Array(batch.len).fill(1);
  const rewrites = [];
  const messages = fields.has("message") ? new Messages(batch) : null;
  const verdict = (index, v) => {
    if (v === false || v === null || v === undefined) keep[index] = 0;
    else if (typeof v === "string") rewrites.push({ index, message: v });
    else if (v !== true) throw new TypeError(`record ${index}: verdict must be true, false or a string`);
  };
  if (typeof filter.batch === "function") {
    const records = [];
    for (let i = 0; i < batch.len; i++) records.push(new Record(batch, messages, fields, i));
    for (const [index, v] of filter.batch(records)) verdict(index, v);
  } else {
    for (let i = 0; i < batch.len; i++) {
      verdict(i, filter.record(new Record(batch, messages, fields, i)));
    }
  }
  return { keep, rewrites };
}

/** The world's exports for filters of class `Cls`. */
export function exportFilter(Cls) {
  let state = null;
  return {
    configure(configText) {
      try {
        state = configure(Cls, configText);
      } catch (e) {
        // componentize-js maps a thrown value to result's `err` payload.
        throw e instanceof ConfigError ? e.message : String(e);
      }
    },
    requiredFields() {
      const flags = {};
      for (const name of FIELD_NAMES) flags[name] = state.fields.has(name);
      return flags;
    },
    filterBatch(batch) {
      return decide(state, batch);
    },
  };
}

/** Runs a filter natively, as the host would: `config` a JS value (serialised to JSON),
 * `messages` a list of strings; optional per-record `timestamps` (ms), `levels` (names) and
 * `sources`. Only the columns the filter asks for are filled. Returns the kept records as
 * `[{ index, message }]` with rewritten messages. */
export function run(Cls, config, messages, { timestamps, levels, sources } = {}) {
  const state = configure(Cls, JSON.stringify(config ?? null));
  const n = messages.length;
  const batch = {
    len: n, messages: "", messageEnds: new Uint32Array(0), levels: new Uint8Array(0),
    sources: [], sourceIds: new Uint16Array(0), files: [], fileIds: new Uint16Array(0),
    lines: new BigUint64Array(0), timestamps: new BigInt64Array(0),
  };
  if (state.fields.has("message")) {
    batch.messages = messages.join("");
    let total = 0;
    batch.messageEnds = Uint32Array.from(messages, (m) => (total += encoder.encode(m).length));
  }
  if (state.fields.has("timestamp")) {
    batch.timestamps = BigInt64Array.from(timestamps ?? messages.map(() => 0), (t) => BigInt(t));
  }
  if (state.fields.has("level")) {
    batch.levels = Uint8Array.from(levels ?? messages.map(() => "INFO"), (l) => LEVELS.indexOf(l));
  }
  if (state.fields.has("source")) {
    const names = sources ?? messages.map(() => "app");
    batch.sources = [...new Set(names)].sort();
    batch.sourceIds = Uint16Array.from(names, (s) => batch.sources.indexOf(s));
  }
  const { keep, rewrites } = decide(state, batch);
  const rewritten = new Map(rewrites.map((r) => [r.index, r.message]));
  const kept = [];
  for (let i = 0; i < n; i++) {
    if (keep[i]) kept.push({ index: i, message: rewritten.get(i) ?? messages[i] });
  }
  return kept;
}
