"""Alembic environment of the broker's tables (shared logic in styx.common.migrations)."""

from styx.common.migrations import run_env

run_env()
