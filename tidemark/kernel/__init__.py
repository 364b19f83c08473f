"""The kernel: the types every folder shares, importing nothing else of Tidemark's.

- `errors`: the error tree (`TidemarkError`, transient and terminal markers, `UsageError`);
- `columns`: the `_tm_` column names, `Op` and `Layer`;
- `model`: the milestoning core's input and output (`TableChanges`, `MilestonedTable`);
- `dead_letter`: `DeadLetter`, a record that could not be decoded or applied;
- `records`: `RawRecord`, what Debezium (embedded or through Kafka) hands over;
- `table_ops`: `TableOp`, a DDL or TRUNCATE applied to a whole table at its position;
- `secrets`: `mask`, which keeps passwords out of anything printed or logged.

Arrows point one way (DESIGN §2): `tidemark/` (CLI, wiring) -> runtimes in
`stream_processors/` -> `connectors/`, `sinks/` -> this kernel.
"""
