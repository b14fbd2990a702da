-- The schema and the two bookkeeping tables `reactor sql` needs before it can tell which migrations ran.
-- Idempotent: run by every `reactor sql`.
CREATE SCHEMA IF NOT EXISTS reactor;

CREATE TABLE IF NOT EXISTS reactor.schema_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Checksums of the idempotent objects (triggers.sql): re-created when the file changes.
CREATE TABLE IF NOT EXISTS reactor.installed (
    name          text PRIMARY KEY,
    checksum      text NOT NULL,
    installed_at  timestamptz NOT NULL DEFAULT now()
);
