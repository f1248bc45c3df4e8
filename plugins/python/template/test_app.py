"""Unit tests of the template filter, run natively with pytest (no WebAssembly)."""

import pytest

from app import Contains
from logfleet_filter import ConfigError, run


def test_keeps_only_lines_containing_the_text():
    out = run(Contains, {"contains": "timeout"}, ["ok", "db timeout", "fine", "timeout again"])
    assert out.indices == [1, 3]


def test_tags_kept_lines():
    out = run(Contains, {"contains": "slow", "tag": "[slow]"}, ["slow query", "fast"])
    assert out.messages == ["[slow] slow query"]


def test_refuses_a_config_without_text():
    with pytest.raises(ConfigError):
        run(Contains, None, ["x"])
