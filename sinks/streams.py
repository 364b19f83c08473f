"""What a lake offers writers of several streams (the distributed runtime's partitions).

A Kafka partition of a table's topic is a stream of the replay guard with a writer of its
own; several workers write one table. These methods let the runtime read each stream's txn
version, catch up with the other writers, and pin the buckets that follow a partition,
without touching a sink's state (`sinks/writer.py`, `StreamWriter`). `Lake` mixes them in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

from tidemark.kernel.columns import Layer
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.changelog import ChangelogSink
from tidemark.sinks.delta.forensic import ForensicSink
from tidemark.sinks.delta.live import LiveSink
from tidemark.sinks.errors import SinkError
from tidemark.sinks.layout import Bucketing

ALL_LAYERS = frozenset(Layer)
LayerSink: TypeAlias = ChangelogSink | LiveSink | ForensicSink


class StreamLayers:
    """Per-stream views of a lake's layer writers (mixed into `Lake`)."""

    range_size: int | None
    _sinks: dict[tuple[str, Layer], LayerSink]

    def sink(self, table: str, layer: Layer) -> LayerSink:
        raise NotImplementedError

    def _layer_position(self, table: str, layer: Layer, stream: str | None) -> str | None:
        handle = self.sink(table, layer).handle
        app = None if stream is None else f"{stream}:{table}:{layer.value}"
        return handle.applied_position(app)

    def check_streams_agree(
        self, table: str, layers: frozenset[Layer], streams: Sequence[StreamCommit]
    ) -> None:
        """Raise when a commit of several streams holds one whose layers a crash left at
        different positions: the layers' own guard needs each row's stream, which such a
        commit does not carry, so that stream must be replayed alone first.

        Raises:
            SinkError: a stream's layers are apart (a runtime bug).
        """
        if len(streams) < 2:
            return
        for stream in streams:
            marks = {self._layer_position(table, layer, stream.app) for layer in layers}
            if len(marks) > 1:
                raise SinkError(
                    f"stream `{stream.app}` of `{table}` has layers at different "
                    f"positions {sorted(map(str, marks))}; commit it alone first",
                    hint="a runtime bug: lanes whose layers are apart replay alone",
                    table=table,
                    batch_id=stream.batch_id,
                )

    def applied_batch(self, table: str, layer: Layer, stream: str) -> int:
        """The txn version `stream` last committed to `layer` of `table` (0: none)."""
        return self.sink(table, layer).handle.applied_batch(f"{stream}:{table}:{layer.value}")

    def refresh(self, table: str, layers: frozenset[Layer] = ALL_LAYERS) -> None:
        """Catch up with other writers of `table`; cached rows of buckets they may have
        written are dropped."""
        for layer in sorted(layers):
            sink = self.sink(table, layer)
            if isinstance(sink, ChangelogSink):
                sink.handle.refresh()
            else:
                sink.refresh()

    def forget_cache(self, table: str) -> None:
        """Drop `table`'s cached bucket rows."""
        for layer in (Layer.LIVE, Layer.FORENSIC):
            sink = self._sinks.get((table, layer))
            if isinstance(sink, LiveSink | ForensicSink):
                sink.rows.clear()

    def shares_buckets(self, table: str, layers: frozenset[Layer] = ALL_LAYERS) -> bool:
        """True when other writers may write the same buckets of `table` (key buckets);
        False when every layer's buckets follow one Kafka partition each, or it has none."""
        return any(
            sink.shares_buckets
            for layer in layers
            if isinstance(sink := self.sink(table, layer), LiveSink | ForensicSink)
        )

    def pin_buckets(
        self,
        table: str,
        layers: frozenset[Layer],
        tables: Sequence[MilestonedTable],
        *,
        partition_buckets: bool,
        pin: Callable[[Bucketing], Bucketing],
    ) -> None:
        """Give the live and forensic writers of `table` its bucketing, with `pin` applied
        to buckets that follow the Kafka partition (each writer pins its own); a table not
        created yet gets such buckets when `partition_buckets`, laid out from `tables`."""
        for layer in (Layer.LIVE, Layer.FORENSIC):  # both: lookups read either
            sink = self.sink(table, layer)
            assert isinstance(sink, LiveSink | ForensicSink)
            bucketing = sink.bucketing or Bucketing.from_json(sink.handle.description)
            if bucketing is None and tables and partition_buckets and layer in layers:
                sample = (
                    tables[0].live_upserts if layer is Layer.LIVE else tables[0].forensic_inserts
                )
                extra = {"range_size": self.range_size} if self.range_size else {}
                bucketing = pin(Bucketing.for_keys(sample.schema, tables[0].key_columns, **extra))
            if bucketing is not None and bucketing.kind == "partition":
                bucketing = pin(bucketing)
            sink.bucketing = bucketing
