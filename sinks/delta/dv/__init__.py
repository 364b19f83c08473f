"""Merge-on-read for live and forensic: Delta deletion vectors written by Tidemark.

delta-rs reads deletion vectors (DVs) but never writes them (delta-rs issue #4512), so this
package does, from the protocol (delta-io/delta PROTOCOL.md, "Deletion Vectors") as
delta-kernel-rs reads it:

- `format`: the bitmap blob, the DV file and the descriptor an `add` carries;
- `store`: the table's files as bytes, with put-if-absent for commits (local and S3);
- `log`: the table's state replayed from checkpoints and JSON commits, with each live
  file's current DV, statistics and tags (delta-rs does not expose DVs);
- `commit`: one DV commit (remove with the old DV + add with the new, appended files, txn),
  rebased after a concurrent append and refused after a concurrent compaction;
- `index`: where each key lives (file, row) among rows not yet deleted;
- `layer`: one merge-on-read table as the live and forensic writers use it;
- `compaction`: folds DVs back into files and collects unreferenced DV files.
"""
