"""A LogFleet filter in Python: keeps lines containing a text and optionally tags them.
Copy this directory to start. Config: {"contains": "timeout", "tag": "[slow]"}."""

from logfleet_filter import ConfigError, Filter, export


class Contains(Filter):
    fields = {"message"}

    def __init__(self, config):
        config = config or {}
        self.text = config.get("contains")
        if not isinstance(self.text, str) or not self.text:
            raise ConfigError('config needs "contains": a non-empty string')
        self.tag = config.get("tag")

    def record(self, record):
        message = record.message
        if self.text not in message:
            return False
        return f"{self.tag} {message}" if self.tag else True


WitWorld = export(Contains)
