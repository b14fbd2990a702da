"""Sinks that copy committed analysis results out of Postgres (OpenSearch, via the outbox)."""
