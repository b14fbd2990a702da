"""Pytest plugins (fixtures), registered by tests/conftest.py."""
