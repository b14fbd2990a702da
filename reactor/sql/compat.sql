-- The original worker's tables, created only when absent; when they exist the reactor attaches to them.
-- Idempotent: run on every `reactor sql`.

CREATE TABLE IF NOT EXISTS users (
    id          bigserial PRIMARY KEY,
    email       text UNIQUE,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS feedbacks (
    id            bigserial PRIMARY KEY,
    text          text,
    product_name  text,
    sender        text,
    media_urls    jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS topics (
    id           bigserial PRIMARY KEY,
    label        text NOT NULL UNIQUE,
    description  text,
    is_active    boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS jobs (
    id                 bigserial PRIMARY KEY,
    job_name           text NOT NULL,
    status             text NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    last_processed_id  bigint,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS job_configs (
    id          bigserial PRIMARY KEY,
    key         text NOT NULL UNIQUE,
    config      jsonb NOT NULL DEFAULT '{"batch_size": 10, "run_next_job": true}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
