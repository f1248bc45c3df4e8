"""Unit tests of the json-field example, run natively with pytest."""

import pytest

from app import JsonField
from logfleet_filter import ConfigError, run

LINES = [
    '{"status": 500, "req": {"user": "admin"}}',
    '{"status": 200, "req": {"user": "bob"}}',
    "not json",
    '{"status": 500, "trace_id": "t1"}',
]


def test_equals_keeps_matching_lines_only():
    assert run(JsonField, {"field": "status", "equals": 500}, LINES).indices == [0, 3]


def test_dotted_fields_walk_nested_objects():
    out = run(JsonField, {"field": "req.user", "startswith": "adm"}, LINES)
    assert out.indices == [0]


def test_exists_and_keep_non_json():
    out = run(JsonField, {"field": "trace_id", "exists": True, "keep_non_json": True}, LINES)
    assert out.indices == [2, 3]


@pytest.mark.parametrize("config", [None, {}, {"field": "a"}, {"field": "a", "equals": 1, "exists": True},
                                    {"field": "a", "startswith": 3}, {"field": "a", "equals": 1, "x": 0}])
def test_bad_configs_are_refused(config):
    with pytest.raises(ConfigError):
        run(JsonField, config, ["{}"])
