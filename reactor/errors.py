"""The configuration errors every layer raises, in a module of their own so that `config` and the modules it
uses (`sinks.endpoint`) both import them without importing each other."""

from __future__ import annotations


class ConfigError(Exception):
    """Configuration that cannot work; the message says what to fix."""


class InvalidSetting(ConfigError):
    """A value the operator wrote wrong: retrying cannot help (the CLI exits 2, like a bad option)."""
