"""What a source table looks like to capture: its key, and the columns capture cannot carry.

One query per table, shared by the start-up checks (`setup.py`) and by `tidemark verify`,
so both agree on the key:
- a primary key is the key (`REPLICA IDENTITY DEFAULT` or `FULL`);
- `REPLICA IDENTITY USING INDEX` makes that unique index's columns the key: they are what
  Postgres logs for an update or a delete, whatever the primary key;
- `REPLICA IDENTITY FULL` without a primary key has no key: every row image is its own
  identity, identical rows counted (docs/milestoning.md, "Tables without a key");
- no primary key and `DEFAULT`, or `NOTHING`: updates and deletes cannot be captured.
Generated columns are not sent by pgoutput before Postgres 18 (they would arrive NULL), and
Debezium delivers an array of more than one dimension as NULL elements: a table declaring
either is refused at start, with what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tidemark.kernel.names import config_name, shown_sql_name

Fetch = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
PUBLISHES_GENERATED = 180000  # Postgres 18: publications can send stored generated columns

_SHAPE = """
SELECT c.relreplident,
       has_table_privilege(c.oid, 'SELECT'),
       ARRAY(SELECT a.attname::text
             FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num
             WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.ord),
       ARRAY(SELECT a.attname::text
             FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num
             WHERE i.indrelid = c.oid AND i.indisreplident ORDER BY k.ord),
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated <> '' ORDER BY a.attnum),
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attndims > 1 ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""


@dataclass(frozen=True)
class TableShape:
    """One source table's identity and the columns that matter to capture.

    Attributes:
        schema, name: the table.
        identity: `pg_class.relreplident`: d(efault), f(ull), i(ndex), n(othing).
        can_select: the capture role may read it (the snapshot needs to).
        primary_key: primary key columns, in key order (empty without one).
        identity_index: the columns of the `REPLICA IDENTITY USING INDEX` index.
        generated: stored generated columns.
        multidimensional: array columns declared with more than one dimension.
    """

    schema: str
    name: str
    identity: str
    can_select: bool
    primary_key: tuple[str, ...]
    identity_index: tuple[str, ...]
    generated: tuple[str, ...]
    multidimensional: tuple[str, ...]

    @property
    def table(self) -> str:
        """The config spelling of the table."""
        return config_name(self.schema, self.name)

    @property
    def key(self) -> tuple[str, ...]:
        """The key capture uses; empty for a table without one (every row is its identity)."""
        if self.identity == "i":
            return self.identity_index
        return self.primary_key

    def problems(self, server_version: int) -> list[tuple[str, str]]:
        """(what is wrong, what to do) for each reason the table cannot be captured exactly."""
        table, sql = self.table, shown_sql_name(self.schema, self.name)
        found = []
        if not self.can_select:
            found.append(
                (
                    f"the capture role cannot SELECT from `{table}` (needed for the snapshot)",
                    f"GRANT SELECT ON {sql} TO <capture role>;",
                )
            )
        if self.identity == "n" or (self.identity == "d" and not self.primary_key):
            why = "has no primary key" if self.identity == "d" else "has replica identity NOTHING"
            found.append(
                (
                    f"table `{table}` {why}, so updates and deletes cannot be captured with keys",
                    f"add a primary key, or run: ALTER TABLE {sql} REPLICA IDENTITY FULL;",
                )
            )
        if self.generated and server_version < PUBLISHES_GENERATED:
            names = ", ".join(self.generated)
            found.append(
                (
                    f"table `{table}` has generated column(s) `{names}`, which logical replication"
                    " before Postgres 18 does not send: they would arrive NULL",
                    "upgrade the source to Postgres 18 (Tidemark then publishes them), or "
                    "compute them downstream from a view and leave this table out",
                )
            )
        if self.multidimensional:
            names = ", ".join(self.multidimensional)
            found.append(
                (
                    f"table `{table}` declares multi-dimensional array column(s) `{names}`, which"
                    " Debezium delivers as NULL elements",
                    "store them as jsonb or as one-dimensional arrays, or leave this table out",
                )
            )
        return found


def describe(fetch: Fetch, schema: str, name: str) -> TableShape | None:
    """The shape of `schema.name`, or None when no such table exists."""
    rows = fetch(_SHAPE, (schema, name))
    if not rows:
        return None
    identity, can_select, primary, index, generated, multi = rows[0]
    return TableShape(
        schema,
        name,
        identity,
        bool(can_select),
        tuple(primary or ()),
        tuple(index or ()),
        tuple(generated or ()),
        tuple(multi or ()),
    )
