"""Public helpers for tests of every layer (assertions, data, processes, in-process reactors)."""
