"""The local cluster: logical replication on, restartable, password never shown."""

from __future__ import annotations

import psycopg2
import pytest

from tidemark.connectors.postgres.cluster import LocalCluster
from tidemark.kernel.secrets import mask

pytestmark = pytest.mark.postgres


def test_cluster_has_logical_replication(postgres):
    conn = psycopg2.connect(postgres.url)
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('wal_level'), current_setting('max_replication_slots')")
        wal_level, slots = cur.fetchone()
    conn.close()
    assert wal_level == "logical"
    assert int(slots) >= 10


def test_start_stop_start_keeps_data(tmp_path):
    tmp_path.chmod(0o755)
    cluster = LocalCluster(tmp_path / "c")
    url = cluster.start()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (id int primary key); INSERT INTO kept VALUES (7)")
    conn.close()
    assert cluster.stop() is True
    assert cluster.status().running is False
    assert cluster.stop() is False
    url = cluster.start()
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM kept")
        assert cur.fetchall() == [(7,)]
    conn.close()
    cluster.stop(mode="immediate")


def test_url_password_is_masked(postgres):
    masked = mask(postgres.url)
    assert postgres.cluster.password not in masked
    assert ":***@127.0.0.1:" in masked
