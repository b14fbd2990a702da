"""Feedback Reactor: analyses every committed feedback row, right beside PostgreSQL."""

__version__ = "0.1.0"
