"""A private PostgreSQL cluster with logical replication, run from a state directory.

`tidemark db` and the embedded runtime use it; tests start throwaway ones the same way.
The cluster listens on a free loopback port only, authenticates with a generated password
kept in the state directory (never in git, never printed), and works when run as root:
initdb and postgres refuse root, so the server runs as the `postgres` (else `nobody`) user.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tidemark.connectors.errors import SourceConfigError, SourceUnavailable
from tidemark.connectors.postgres.binaries import find_postgres_bin

log = logging.getLogger(__name__)

SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "wal_level": "logical",
    "track_commit_timestamp": "on",  # the ledger and Debezium then agree on commit times
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "wal_sender_timeout": "60s",
    "log_min_messages": "warning",
}
USER = "tidemark"
DATABASE = "tidemark"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise SourceConfigError(
        "running as root, but neither a `postgres` nor a `nobody` account exists",
        hint="create one: `useradd --system postgres`",
    )


def _drop_privileges(user: pwd.struct_passwd | None) -> Callable[[], None] | None:
    if user is None:
        return None

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setgroups([])
        os.setuid(user.pw_uid)

    return demote


@dataclass(frozen=True)
class ClusterStatus:
    """What `tidemark db status` reports."""

    initialized: bool
    running: bool
    port: int | None
    data_dir: Path


class LocalCluster:
    """A PostgreSQL cluster whose files live under `root` (e.g. `.tidemark/postgres`).

    Args:
        root: directory for the data, the log, the password and the port.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._meta_file = self.root / "cluster.json"
        self._password_file = self.root / "password"
        self._user = _server_user()

    # -- facts ---------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists() and self._meta_file.exists()

    @property
    def port(self) -> int | None:
        if not self._meta_file.exists():
            return None
        return int(json.loads(self._meta_file.read_text())["port"])

    @property
    def password(self) -> str:
        return self._password_file.read_text().strip()

    def url(self, database: str = DATABASE) -> str:
        """The connection URL, password included: pass it on, never print it."""
        if not self.initialized:
            raise SourceUnavailable(
                f"the local cluster at `{self.root}` is not initialized",
                hint="run `tidemark db start`",
            )
        return (
            f"postgresql://{USER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"
        )

    def is_running(self) -> bool:
        if not self.initialized:
            return False
        result = self._pg_ctl("status", check=False)
        return result.returncode == 0

    def status(self) -> ClusterStatus:
        return ClusterStatus(self.initialized, self.is_running(), self.port, self.data_dir)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, *, timeout: float = 60.0) -> str:
        """Initialize on first use, start if stopped, and return the connection URL."""
        if not self.initialized:
            self._init()
        if self.is_running():
            return self.url()
        port = self.port or free_port()
        if _port_in_use(port):
            port = free_port()
            log.info("port in use; moving the local cluster to port %d", port)
        self._write_meta(port)
        self._pg_ctl(
            "start", "-w", "-t", str(int(timeout)), "-l", str(self.log_file), "-o", f"-p {port}"
        )
        self._ensure_database()
        return self.url()

    def stop(self, *, mode: str = "fast") -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.is_running():
            return False
        self._pg_ctl("stop", "-w", "-m", mode)
        return True

    def restart(self) -> None:
        """Stop then start on the same port (used by the reliability tests)."""
        self.stop()
        self.start()

    # -- internals -----------------------------------------------------------------------
    def _init(self) -> None:
        bin_dir = find_postgres_bin()
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._password_file.exists():
            self._password_file.write_text(secrets.token_urlsafe(18))
        self._password_file.chmod(0o600)
        self._grant_traverse()
        self._chown(self.root, self.data_dir, self._password_file)
        log.info("initializing a PostgreSQL cluster in %s", self.data_dir)
        self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                f"--pwfile={self._password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ]
        )
        conf = "\n".join(f"{key} = {value}" for key, value in SETTINGS.items())
        with open(self.data_dir / "postgresql.conf", "a") as handle:
            handle.write(f"\n# Tidemark\n{conf}\n")
        self._write_meta(free_port())

    def _ensure_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.url("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            conn.close()

    def _write_meta(self, port: int) -> None:
        self._meta_file.write_text(json.dumps({"port": port}))

    def _grant_traverse(self) -> None:
        """Let the unprivileged server user reach the data directory.

        Adds only the search bit (o+x, no listing) to ancestors that lack it, such as a
        0700 home or temp directory, and says so in the log.
        """
        if self._user is None:
            return
        for parent in self.root.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                log.warning("adding o+x to %s so the postgres user can reach %s", parent, self.root)
                parent.chmod(mode | 0o001)

    def _chown(self, *paths: Path) -> None:
        if self._user is None:
            return
        for path in paths:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(find_postgres_bin() / "pg_ctl"), "-D", str(self.data_dir), *args]
        if self._user is not None and self.log_file.parent.exists():
            if not self.log_file.exists():
                self.log_file.touch()
            self._chown(self.log_file)
        return self._run(cmd, check=check)

    def _run(self, cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            preexec_fn=_drop_privileges(self._user),
            cwd=self.root if self.root.exists() else None,
            check=False,
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            tail = self._log_tail()
            raise SourceUnavailable(
                f"`{Path(cmd[0]).name} {cmd[3] if len(cmd) > 3 else ''}` failed: {detail[0]}"
                + (f" | log: {tail}" if tail else ""),
                hint=f"see {self.log_file}",
            )
        return result

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""


def wait_until_accepting(url: str, *, timeout: float = 30.0) -> None:
    """Block until the server at `url` accepts connections (after a restart)."""
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
