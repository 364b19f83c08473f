"""What each source needs before `tidemark run`: shown, applied on request, checked on start.

`tidemark setup` prints the statements for every Postgres source of a config (the DDL
capture in schema `_tidemark`, the capture role's rights, the signal table, the publication
and the captured-table list) and applies them once asked; `tidemark run` checks that the DDL
capture is there and otherwise stops with what is missing and this command
(docs/schema-changes.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.connectors.errors import SourceConfigError
from tidemark.connectors.postgres import objects
from tidemark.connectors.postgres.capture import signal_table_name
from tidemark.connectors.postgres.settings import parse_postgres_dsn, replication_name
from tidemark.connectors.postgres.setup import connect
from tidemark.kernel.names import split_table
from tidemark.kernel.secrets import mask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcePlan:
    """The statements one source needs, and whether the connecting role may run them all."""

    source: str
    dsn: str
    statements: tuple[objects.Statement, ...]
    superuser: bool

    @property
    def allowed(self) -> bool:
        return self.superuser or not any(s.superuser for s in self.statements)


def _postgres(config: PipelineConfig) -> list[SourceConfig]:
    return [s for s in config.sources if s.kind == "postgres"]


def plan(config: PipelineConfig, *, admin_dsn: str | None = None) -> list[SourcePlan]:
    """The setup statements of every Postgres source (read-only: nothing is changed).

    `admin_dsn` connects in place of the sources' own DSN (a superuser for the triggers);
    the rights are still granted to each source's own role.
    """
    plans = []
    for source in _postgres(config):
        dsn = admin_dsn or source.dsn
        conn = connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                row = cur.fetchone()
                superuser = bool(row and row[0])
                slot = replication_name(config.pipeline, source.name)
                statements = objects.setup_statements(
                    cur,
                    role=parse_postgres_dsn(source.dsn)["user"],
                    publication=slot,
                    tables=[split_table(t) for t in source.tables],
                    signal_table=split_table(signal_table_name(config.pipeline, source.name)),
                )
        finally:
            conn.close()
        plans.append(SourcePlan(source.name, dsn, tuple(statements), superuser))
    return plans


def apply(plans: Sequence[SourcePlan]) -> None:
    """Run every plan's statements, each source in one transaction.

    Raises:
        SourceConfigError: the connecting role may not run them (not a superuser).
    """
    for source_plan in plans:
        if not source_plan.allowed:
            raise SourceConfigError(
                f"source `{source_plan.source}`: event triggers need a superuser, and the role "
                f"of `{mask(source_plan.dsn)}` is not one",
                hint="run `tidemark setup --config FILE --admin-dsn postgresql://<superuser>@...` "
                "or have a superuser run the statements `tidemark setup --dry-run` prints",
            )
        conn = connect(source_plan.dsn)
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                for statement in source_plan.statements:
                    cur.execute(statement.sql)
            conn.commit()
        finally:
            conn.close()
        logger.info("source %s: set up (%d steps)", source_plan.source, len(source_plan.statements))


def install(config: PipelineConfig, *, admin_dsn: str | None = None) -> None:
    """Plan and apply at once (`tidemark up` on its own cluster; tests)."""
    apply(plan(config, admin_dsn=admin_dsn))


def check(source: SourceConfig) -> None:
    """Stop before capturing when a Postgres source needs the DDL capture and lacks it.

    Raises:
        SourceConfigError: naming the source, what is missing and the command that fixes it.
    """
    if source.kind != "postgres" or not source.ddl_capture:
        return
    conn = connect(source.dsn)
    try:
        with conn.cursor() as cur:
            missing = objects.ddl_capture_missing(cur)
    finally:
        conn.close()
    if missing:
        raise SourceConfigError(
            f"source `{source.name}`: schema changes cannot be captured exactly, missing: "
            + "; ".join(missing),
            hint="run `tidemark setup --config FILE` (it shows every statement first), or "
            f"set `ddl_capture: false` on source `{source.name}` to run without it",
        )
