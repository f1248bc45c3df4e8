"""Example: keeps JSON lines whose field matches. Config:
{"field": "status", "equals": 500}, {"field": "req.user", "startswith": "adm"} or
{"field": "trace_id", "exists": true}; "keep_non_json": true keeps lines that are not JSON
objects (dropped by default). A dotted field walks into nested objects."""

import json

from logfleet_filter import ConfigError, Filter, export

TESTS = ("equals", "startswith", "exists")


class JsonField(Filter):
    fields = {"message"}

    def __init__(self, config):
        if not isinstance(config, dict):
            raise ConfigError('config must be an object like {"field": "status", "equals": 500}')
        unknown = set(config) - {"field", "keep_non_json", *TESTS}
        if unknown:
            raise ConfigError(f"unknown keys: {sorted(unknown)}")
        field = config.get("field")
        if not isinstance(field, str) or not field:
            raise ConfigError('"field" must be a non-empty string')
        tests = [t for t in TESTS if t in config]
        if len(tests) != 1:
            raise ConfigError(f"give exactly one of {list(TESTS)}")
        self.path = field.split(".")
        self.test, self.value = tests[0], config[tests[0]]
        if self.test == "startswith" and not isinstance(self.value, str):
            raise ConfigError('"startswith" must be a string')
        self.keep_non_json = bool(config.get("keep_non_json", False))

    def record(self, record):
        try:
            value = json.loads(record.message)
        except ValueError:
            return self.keep_non_json
        if not isinstance(value, dict):
            return self.keep_non_json
        for key in self.path:
            if not isinstance(value, dict) or key not in value:
                return self.test == "exists" and self.value is False
            value = value[key]
        if self.test == "exists":
            return self.value is not False
        if self.test == "startswith":
            return isinstance(value, str) and value.startswith(self.value)
        return value == self.value


WitWorld = export(JsonField)
