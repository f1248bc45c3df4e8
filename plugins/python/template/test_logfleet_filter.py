"""Unit tests of the helper library: the columnar batch is hidden correctly."""

import pytest

from logfleet_filter import Batch, ConfigError, Filter, MissingField, decide, run, configure


class Everything(Filter):
    """Rewrites each record to a description of all its columns."""

    def record(self, r):
        return f"{r.message}|{r.level}|{r.source}|{r.timestamp}"


class MessageOnly(Filter):
    fields = {"message"}

    def record(self, r):
        return r.level == "ERROR"


def test_non_ascii_messages_are_sliced_on_utf8_offsets():
    out = run(Everything, None, ["héllo", "wörld ✓", "plain"],
              timestamps=[1, 2, 3], levels=["INFO", "ERROR", "WARN"], sources=["a", "b", "a"])
    assert out.messages == ["héllo|INFO|a|1", "wörld ✓|ERROR|b|2", "plain|WARN|a|3"]


def test_reading_an_unrequested_column_names_it():
    with pytest.raises(MissingField, match="level"):
        run(MessageOnly, None, ["x"])


def test_false_drops_true_keeps_str_rewrites():
    class Mixed(Filter):
        fields = {"message"}

        def record(self, r):
            return {"drop": False, "keep": True}.get(r.message, r.message.upper())

    keep, rewrites = decide(configure(Mixed, "null"),
                            Batch(3, "dropkeepnew", [4, 8, 11]))
    assert list(keep) == [0, 1, 1]
    assert rewrites == [(2, "NEW")]


def test_bad_json_and_unknown_fields_refuse_the_config():
    with pytest.raises(ConfigError, match="JSON"):
        configure(Filter, "{")

    class Odd(Filter):
        fields = {"colour"}

    with pytest.raises(ConfigError, match="colour"):
        configure(Odd, "null")


def test_an_empty_batch_has_no_verdicts():
    keep, rewrites = decide(configure(Filter, "null"), Batch(0))
    assert (bytes(keep), rewrites) == (b"", [])
