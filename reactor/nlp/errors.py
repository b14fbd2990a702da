"""The exporter's error, in a module of its own so that export, parity and quantize share it without importing
each other (export imports parity and quantize; they raise it too)."""


class ExportError(Exception):
    """Export can't proceed; the message says why and what to do (shown without a traceback)."""
