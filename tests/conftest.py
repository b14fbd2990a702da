"""The test layers share their fixtures as plugins (tests/plugins) and their helpers as a package (tests/support).

Layers: tests/unit (no server, milliseconds), tests/integration (real PostgreSQL, OpenSearch, onnxruntime,
in-process), tests/acceptance (what spawns `reactor listen` and waits on it). Component folders inside each.
"""

pytest_plugins = [
    "tests.plugins.postgres",
    "tests.plugins.reactor",
    "tests.plugins.pgbouncer",
    "tests.plugins.private_postgres",
    "tests.plugins.opensearch",
    "tests.plugins.models",
]
