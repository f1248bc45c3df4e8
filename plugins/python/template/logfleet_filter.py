"""LogFleet filter helper library for Python plugins (componentize-py).

Hides the columnar batch of the `logfleet:filter@1.0.0` world (`wit/filter.wit`), the way the
Rust SDK (`filters-wasm/sdk`) does: an author subclasses `Filter`, decides per `Record`
(return True to keep, False to drop, a str to keep it with a new message), and exports it:

    class Timeouts(Filter):
        fields = {"message"}
        def __init__(self, config):
            self.text = (config or {}).get("contains", "timeout")
        def record(self, record):
            return self.text in record.message

    WitWorld = export(Timeouts)

Only the columns named in `fields` are filled by the host; reading another raises
`MissingField`. Raise `ConfigError` from `__init__` to refuse a session's config; its text is
shown to the user. Everything here is plain Python: `run()` drives a filter in unit tests
without WebAssembly, through the same code the component runs.
"""

import json

FIELD_NAMES = ("message", "level", "source", "file", "line", "timestamp")
LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


class ConfigError(Exception):
    """Raised by a filter's __init__ to refuse its config; the text is shown to the user."""


class MissingField(AttributeError):
    """A record column was read that the filter did not ask for in `fields`."""


class Batch:
    """The columns of one batch, with the same names as the WIT `batch` record. Built by the
    host (through the bindings) or by `run()` in tests."""

    def __init__(self, len, messages="", message_ends=(), levels=b"", sources=(),
                 source_ids=(), files=(), file_ids=(), lines=(), timestamps=()):
        self.len = len
        self.messages = messages
        self.message_ends = message_ends
        self.levels = levels
        self.sources = sources
        self.source_ids = source_ids
        self.files = files
        self.file_ids = file_ids
        self.lines = lines
        self.timestamps = timestamps


class _Messages:
    """Slices messages out of the concatenated column. Offsets are UTF-8 byte offsets; an
    all-ASCII batch (the common case) is sliced as str without encoding."""

    def __init__(self, batch):
        self.ends = batch.message_ends
        text = batch.messages
        if text.isascii():
            self.text, self.encoded = text, None
        else:
            self.text, self.encoded = None, text.encode("utf-8")

    def get(self, i):
        start = self.ends[i - 1] if i > 0 else 0
        end = self.ends[i]
        if self.encoded is None:
            return self.text[start:end]
        return self.encoded[start:end].decode("utf-8")


class Record:
    """One record of a batch: read-only view of its columns."""

    __slots__ = ("index", "_batch", "_messages", "_fields")

    def __init__(self, batch, messages, fields, index):
        self.index = index
        self._batch = batch
        self._messages = messages
        self._fields = fields

    def _need(self, field):
        if field not in self._fields:
            raise MissingField(
                f"this filter reads '{field}' but did not list it in fields")

    @property
    def message(self):
        self._need("message")
        return self._messages.get(self.index)

    @property
    def level(self):
        """The level's name: TRACE, DEBUG, INFO, WARN, ERROR or FATAL."""
        self._need("level")
        return LEVELS[self._batch.levels[self.index]]

    @property
    def source(self):
        self._need("source")
        return self._batch.sources[self._batch.source_ids[self.index]]

    @property
    def file(self):
        self._need("file")
        return self._batch.files[self._batch.file_ids[self.index]]

    @property
    def line(self):
        self._need("line")
        return self._batch.lines[self.index]

    @property
    def timestamp(self):
        """When the agent read the line, milliseconds since the Unix epoch."""
        self._need("timestamp")
        return self._batch.timestamps[self.index]


class Filter:
    """Base class of a filter. Subclasses set `fields`, take the parsed JSON config (None when
    the session gives none) in __init__, and override `record` (or `batch`)."""

    fields = frozenset(FIELD_NAMES)

    def __init__(self, config):
        self.config = config

    def record(self, record):
        """True keeps the record, False drops it, a str keeps it with that message."""
        return True

    def batch(self, records):
        """Yields (index, verdict) for records whose verdict is not a plain keep. The default
        asks `record` about each record in order."""
        for record in records:
            verdict = self.record(record)
            if verdict is not True:
                yield record.index, verdict


def configure(cls, config_text):
    """Builds a filter from the session's JSON config text; a ConfigError (or bad JSON) is a
    refusal with a message for the user."""
    try:
        config = json.loads(config_text)
    except ValueError as e:
        raise ConfigError(f"config is not JSON: {e}") from None
    unknown = set(cls.fields) - set(FIELD_NAMES)
    if unknown:
        raise ConfigError(f"unknown fields {sorted(unknown)}; known: {list(FIELD_NAMES)}")
    return cls(config)


def decide(filter, batch):
    """Runs `filter` over `batch`: returns (keep, rewrites) with keep a bytearray of 0/1 per
    record and rewrites a list of (index, message)."""
    keep = bytearray(b"\x01") * batch.len
    rewrites = []
    fields = frozenset(filter.fields)
    messages = _Messages(batch) if "message" in fields else None
    records = (Record(batch, messages, fields, i) for i in range(batch.len))
    for index, verdict in filter.batch(records):
        if verdict is False or verdict is None:
            keep[index] = 0
        elif isinstance(verdict, str):
            rewrites.append((index, verdict))
        elif verdict is not True:
            raise TypeError(f"record {index}: verdict must be True, False or str, not {verdict!r}")
    return keep, rewrites


def export(cls):
    """The `WitWorld` class componentize-py instantiates, running filters of class `cls`.
    The bindings are imported when first called, so app.py imports in plain Python tests."""

    class WitWorld:
        state = None

        def configure(self, config):
            from componentize_py_types import Err

            try:
                WitWorld.state = configure(cls, config)
            except ConfigError as e:
                raise Err(str(e))

        def required_fields(self):
            from wit_world.imports import types

            result = types.Fields(0)
            for name in WitWorld.state.fields:
                result |= getattr(types.Fields, name.upper())
            return result

        def filter_batch(self, batch):
            from wit_world.imports import types

            keep, rewrites = decide(WitWorld.state, batch)
            return types.Verdicts(
                bytes(keep), [types.Rewrite(i, m) for i, m in rewrites])

    return WitWorld


class Outcome:
    """What `run()` returns: the records kept, with their (possibly rewritten) messages."""

    def __init__(self, kept):
        self.kept = kept

    @property
    def messages(self):
        return [message for _, message in self.kept]

    @property
    def indices(self):
        return [index for index, _ in self.kept]


def run(cls, config, records, timestamps=None, levels=None, sources=None):
    """Runs a filter natively, as the host would: `config` is a Python value (serialised to
    JSON), `records` a list of messages; optional per-record timestamps (ms), level names and
    source names. Only the columns the filter asks for are filled, as the host does."""
    filter = configure(cls, json.dumps(config))
    fields = frozenset(filter.fields)
    n = len(records)
    ends, total = [], 0
    for message in records:
        total += len(message.encode("utf-8"))
        ends.append(total)
    batch = Batch(n)
    if "message" in fields:
        batch.messages, batch.message_ends = "".join(records), ends
    if "timestamp" in fields:
        batch.timestamps = list(timestamps or [0] * n)
    if "level" in fields:
        batch.levels = bytes(LEVELS.index(l) for l in (levels or ["INFO"] * n))
    if "source" in fields:
        names = list(sources or ["app"] * n)
        batch.sources = sorted(set(names))
        batch.source_ids = [batch.sources.index(s) for s in names]
    keep, rewrites = decide(filter, batch)
    rewritten = dict(rewrites)
    return Outcome([(i, rewritten.get(i, records[i])) for i in range(n) if keep[i]])
