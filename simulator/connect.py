"""Open a database connection from a URL and translate failures into clear errors.

`postgresql://user:pass@host:port/db` uses psycopg2; `mssql://user:pass@host:port/db` uses
pyodbc, imported only when needed. Every failure becomes one line that names the host and
database (never the password) plus a hint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tidemark.simulator.dialects import POSTGRES, SQLSERVER, Dialect
from tidemark.simulator.errors import DatabaseUnavailable, SimulatorConfigError

log = logging.getLogger(__name__)

_SCHEMES = {
    "postgresql": POSTGRES,
    "postgres": POSTGRES,
    "mssql": SQLSERVER,
    "sqlserver": SQLSERVER,
}
_URL_HINT = (
    "use postgresql://user:password@host:port/database or mssql://user:password@host:port/database"
)


@dataclass(frozen=True)
class Target:
    """A parsed database URL (the password stays out of repr)."""

    dialect: Dialect
    url: str
    host: str
    port: int
    database: str
    user: str
    options: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def __repr__(self) -> str:
        return f"Target({self.dialect.name}://{self.user}@{self.where})"


def parse_url(url: str) -> Target:
    """Check the URL's shape; raises `SimulatorConfigError` naming what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SimulatorConfigError(f"bad database URL: {exc}", hint=_URL_HINT) from None
    dialect = _SCHEMES.get(parts.scheme.lower())
    if dialect is None:
        raise SimulatorConfigError(
            f"unsupported database URL scheme `{parts.scheme or '(none)'}`", hint=_URL_HINT
        )
    if not parts.hostname:
        raise SimulatorConfigError("the database URL has no host", hint=_URL_HINT)
    database = parts.path.lstrip("/")
    if not database:
        raise SimulatorConfigError("the database URL names no database", hint=_URL_HINT)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    default_port = 5432 if dialect is POSTGRES else 1433
    return Target(
        dialect,
        url,
        parts.hostname,
        port or default_port,
        unquote(database),
        unquote(parts.username or ""),
        options,
    )


def connect(target: Target, *, connect_timeout: int = 5) -> Any:
    """A DB-API connection with autocommit off, or a clear `SimulatorError`."""
    if target.dialect is POSTGRES:
        return _connect_postgres(target, connect_timeout)
    return _connect_sqlserver(target, connect_timeout)


def _connect_postgres(target: Target, timeout: int) -> Any:
    import psycopg2

    try:
        conn = psycopg2.connect(
            target.url, connect_timeout=timeout, application_name="tidemark-simulator"
        )
    except psycopg2.OperationalError as exc:
        raise _postgres_error(target, str(exc)) from None
    except psycopg2.ProgrammingError as exc:  # malformed options in the URL
        detail = str(exc).strip()
        raise SimulatorConfigError(f"bad database URL: {detail}", hint=_URL_HINT) from None
    return conn


def _postgres_error(target: Target, detail: str) -> Exception:
    text = detail.lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return SimulatorConfigError(
            f"PostgreSQL rejected the login of user `{target.user}` at `{target.where}`",
            hint="check the user name and password in --db",
        )
    if "does not exist" in text and "database" in text:
        return SimulatorConfigError(
            f"database `{target.database}` does not exist on `{target.host}:{target.port}`",
            hint="create it first (CREATE DATABASE) or fix the name in --db",
        )
    if "translate host name" in text or "name or service not known" in text:
        return DatabaseUnavailable(
            f"unknown database host `{target.host}`", hint="check the host name in --db"
        )
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at `{target.host}:{target.port}`",
        hint="is the server running and the port right? "
        "for the local cluster run `tidemark db start`, or omit --db",
    )


def _connect_sqlserver(target: Target, timeout: int) -> Any:
    try:
        import pyodbc  # type: ignore[import-not-found]
    except ImportError:
        raise SimulatorConfigError(
            "SQL Server needs the `pyodbc` package, which is not installed",
            hint="pip install tidemark[sqlserver]; it also needs unixODBC and the "
            "Microsoft ODBC Driver 18 for SQL Server",
        ) from None
    driver = target.options.get("driver", "ODBC Driver 18 for SQL Server")
    # ODBC braces-quoted values escape `}` by doubling it
    password = unquote(urlsplit(target.url).password or "").replace("}", "}}")
    conn_str = (
        f"DRIVER={{{driver}}};SERVER={target.host},{target.port};DATABASE={target.database};"
        f"UID={target.user};PWD={{{password}}};"
        f"TrustServerCertificate={target.options.get('trust_server_certificate', 'yes')};"
        f"Encrypt={target.options.get('encrypt', 'yes')}"
    )
    try:
        return pyodbc.connect(conn_str, autocommit=False, timeout=timeout)
    except pyodbc.Error as exc:
        state = exc.args[0] if exc.args else ""
        if state == "28000":
            raise SimulatorConfigError(
                f"SQL Server rejected the login of user `{target.user}` at `{target.where}`",
                hint="check the user name and password in --db",
            ) from None
        if state == "IM002":
            raise SimulatorConfigError(
                f"ODBC driver `{driver}` is not installed",
                hint="install the Microsoft ODBC Driver 18 for SQL Server, or name yours "
                "with ?driver=... in --db",
            ) from None
        raise DatabaseUnavailable(
            f"cannot reach SQL Server at `{target.host}:{target.port}`",
            hint="is the server running and the port right?",
        ) from None
