"""Consumer views of a lake: DuckDB views per table and layer, time-travel macros, masking.

One catalog (`catalog.py`) defines the views that `tidemark views` writes into a DuckDB
file, that `tidemark query` opens in memory and that gold models read: the same names and
SQL everywhere. Delta tables are read through DuckDB's `delta` extension (`duck.py`), which
applies deletion vectors and always shows a table's latest commit.
"""
