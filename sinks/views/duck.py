"""DuckDB with its `delta` extension, loaded from the installed package, never downloaded.

DuckDB's `delta` extension (`delta_scan`, `ATTACH ... (TYPE delta)`) reads Delta tables with
deletion vectors applied, so merge-on-read tables read right. PyPI's `duckdb-ext-delta`
package ships the extension for exactly one DuckDB build (1.4.4), which is why Tidemark pins
`duckdb==1.4.4`. The extension is loaded from that package's directory with automatic
installation off: a machine without network access works, and no query ever fetches code.
"""

from __future__ import annotations

import logging
import os
import sysconfig
from collections.abc import Mapping

import duckdb

from tidemark.kernel.errors import TerminalError

log = logging.getLogger(__name__)


class DeltaExtensionMissing(TerminalError):
    """DuckDB's `delta` extension cannot be loaded (package missing or another DuckDB)."""

    exit_code = 2


def extension_directory() -> str:
    """Where the `duckdb-ext-*` packages put their extensions (site-packages)."""
    return os.path.join(sysconfig.get_paths()["purelib"], "duckdb_ext", "extensions")


def load_delta(con: duckdb.DuckDBPyConnection) -> None:
    """Load the `delta` extension into `con` from the installed package.

    Raises:
        DeltaExtensionMissing: the package is not installed or was built for another DuckDB.
    """
    directory = extension_directory().replace("'", "''")
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute(f"SET extension_directory = '{directory}'")
        con.execute("LOAD delta")
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise DeltaExtensionMissing(
            f"cannot load DuckDB's delta extension for DuckDB {duckdb.__version__}: {first}",
            hint="pip install 'duckdb==1.4.4' 'duckdb-ext-delta==1.4.4.20260205' "
            "(Tidemark's own pins; bootstrap installs them)",
        ) from exc


def connect(
    path: str | None = None, *, storage_options: Mapping[str, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (in memory, or the database file `path`) with `delta` loaded, the
    session time zone UTC (the lake's timestamps are UTC) and, for an object-store lake, a
    temporary S3 secret from the storage options (never stored in a database file)."""
    con = duckdb.connect(path or ":memory:")
    try:
        load_delta(con)
        con.execute("SET TimeZone = 'UTC'")
        if storage_options:
            s3_secret(con, storage_options)
    except BaseException:
        con.close()
        raise
    return con


def s3_secret(con: duckdb.DuckDBPyConnection, options: Mapping[str, str]) -> None:
    """A TEMPORARY S3 secret (this connection only) from delta-rs style storage options."""
    if "AWS_ACCESS_KEY_ID" not in options:
        return
    endpoint = options.get("AWS_ENDPOINT_URL", "")
    parts = {
        "KEY_ID": options["AWS_ACCESS_KEY_ID"],
        "SECRET": options.get("AWS_SECRET_ACCESS_KEY", ""),
        "REGION": options.get("AWS_REGION", "us-east-1"),
    }
    if "AWS_SESSION_TOKEN" in options:
        parts["SESSION_TOKEN"] = options["AWS_SESSION_TOKEN"]
    settings = [f"{k} {literal(v)}" for k, v in parts.items()]
    if endpoint:
        plain = endpoint.startswith("http://") or options.get("AWS_ALLOW_HTTP") in ("true", "1")
        host = endpoint.split("://", 1)[-1].rstrip("/")
        settings += [f"ENDPOINT {literal(host)}", "URL_STYLE 'path'", f"USE_SSL {not plain}"]
    con.execute(
        f"CREATE OR REPLACE TEMPORARY SECRET tidemark_lake (TYPE s3, {', '.join(settings)})"
    )


def quote(name: str) -> str:
    """A DuckDB identifier, quoted (lake table names hold dots)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"
