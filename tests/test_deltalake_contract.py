"""What Tidemark relies on in `deltalake` beyond its public API, checked loudly.

`pyproject.toml` pins deltalake to the range these were tested with. When an upgrade breaks
one of them, this file fails first, naming the call and the module that uses it, instead of
a lake write failing somewhere deep in a run.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.fs import DeltaStorageHandler

from tidemark.sinks.delta.files import table_filesystem


def test_a_table_exposes_its_native_handle_for_the_object_store(tmp_path):
    """sinks/delta/files.py: `DeltaStorageHandler.from_table(dt._table)` gives the table's
    object store (with its credentials) as a pyarrow filesystem, for S3 lakes."""
    write_deltalake(str(tmp_path), pa.table({"x": [1]}))
    dt = DeltaTable(str(tmp_path))
    if not hasattr(dt, "_table"):
        pytest.fail(
            "deltalake.DeltaTable has no `_table` any more: sinks/delta/files.py "
            "table_filesystem() must find the table's object store another way"
        )
    DeltaStorageHandler.from_table(dt._table)
    filesystem = table_filesystem(dt, native=False)
    pq.write_table(pa.table({"y": [7]}), "probe.parquet", filesystem=filesystem)
    assert pq.read_table(tmp_path / "probe.parquet").column("y").to_pylist() == [7]


def test_write_transactions_take_add_actions_with_partition_filters():
    """sinks/delta/table.py: `create_write_transaction(actions, "overwrite", schema,
    partition_filters=...)` replaces the files of chosen partitions in one commit."""
    import inspect

    parameters = inspect.signature(DeltaTable.create_write_transaction).parameters
    assert {
        "actions",
        "mode",
        "schema",
        "partition_by",
        "partition_filters",
        "commit_properties",
    } <= set(parameters), sorted(parameters)
