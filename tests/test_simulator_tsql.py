"""The SQL Server dialect, checked without a SQL Server (none can run here).

Every T-SQL statement the dialect layer renders is parsed with sqlglot's `tsql` dialect
(strict: a parse error fails the test), and its shape is checked: types, identity key,
guards that make setup idempotent, OUTPUT clauses, lock hints, placeholder counts. The DML
shapes checked are exactly those the profiles' operations use: a real Postgres run records
every statement request, and the same requests are rendered as T-SQL.
This proves the SQL is well-formed T-SQL of the intended shape, not that SQL Server runs it.
"""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from tidemark.simulator import Simulator
from tidemark.simulator.dialects import POSTGRES, SQLSERVER
from tidemark.simulator.profiles import PROFILES, get_profile
from tidemark.simulator.setup import schema_statements

PROFILE_NAMES = list(PROFILES)


def parse_tsql(sql: str) -> exp.Expression:
    statements = sqlglot.parse(sql, read="tsql", error_level=sqlglot.ErrorLevel.RAISE)
    assert len(statements) == 1 and statements[0] is not None, sql
    return statements[0]


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_ddl_is_valid_idempotent_tsql(name):
    profile = get_profile(name)
    statements = schema_statements(SQLSERVER, profile)
    creates = {}
    for sql in statements:
        tree = parse_tsql(sql)
        assert isinstance(tree, exp.IfBlock), sql  # guarded: running setup twice is a no-op
        inner = tree.args["true"].find(exp.Create)
        assert inner is not None
        creates.setdefault(inner.kind, []).append(inner)
    assert len(creates["TABLE"]) == len(profile.tables)
    assert len(creates["INDEX"]) == sum(len(t.references) for t in profile.tables)
    for create, table in zip(creates["TABLE"], profile.tables, strict=True):
        assert create.this.this.name == table.name and create.this.this.db == "dbo"
        defs = {c.name: c for c in create.this.expressions if isinstance(c, exp.ColumnDef)}
        assert list(defs) == [c.name for c in table.columns]
        key = defs["id"]
        assert key.args["kind"].sql("tsql") == "BIGINT"
        kinds = {type(c.kind) for c in key.constraints}
        assert exp.PrimaryKeyColumnConstraint in kinds
        assert exp.GeneratedAsIdentityColumnConstraint in kinds
        assert defs["modified_at"].args["kind"].sql("tsql") == "DATETIMEOFFSET(6)"
        for col in table.columns:
            rendered = defs[col.name].args["kind"].sql("tsql")
            if col.type == "money":
                assert rendered in ("DECIMAL(18, 2)", "NUMERIC(18, 2)")  # sqlglot spells it NUMERIC
            if col.type == "text":
                assert rendered.startswith("NVARCHAR(")  # unicode text
        fks = [c for c in create.this.expressions if c.find(exp.ForeignKey)]
        assert len(fks) == len(table.references)


def test_reference_seed_is_a_merge_insert_if_absent():
    profile = get_profile("retail")
    for table_name, (unique, cols, _rows) in profile.reference().items():
        sql = SQLSERVER.seed_sql(profile.table(table_name), cols, 3, unique)
        tree = parse_tsql(sql)
        assert isinstance(tree, exp.Merge)
        assert len(list(tree.find_all(exp.Placeholder))) == 3 * len(cols)
        assert "WHEN NOT MATCHED THEN INSERT" in sql


@pytest.fixture(scope="module")
def used_statements(postgres):
    """Every statement request the operations make during short runs of each profile."""
    import psycopg2

    calls: list[tuple[str, tuple, dict]] = []
    names = (
        "insert_sql",
        "insert_children_sql",
        "update_sql",
        "delete_sql",
        "lock_sql",
        "count_children_sql",
    )
    mp = pytest.MonkeyPatch()
    for method in names:
        original = getattr(POSTGRES, method)

        def spy(*args, _m=method, _o=original, **kwargs):
            calls.append((_m, args, kwargs))
            return _o(*args, **kwargs)

        mp.setattr(POSTGRES, method, spy)
    try:
        for i, name in enumerate(PROFILE_NAMES):
            db = f"tsql_{i}"
            conn = psycopg2.connect(postgres.url)
            conn.autocommit = True
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {db}")
            conn.cursor().execute(f"CREATE DATABASE {db}")
            conn.close()
            sim = Simulator(postgres.url_for(db), profile=name, workers=2, max_changes=1500, seed=i)
            sim.setup()
            sim.run()
    finally:
        mp.undo()
    return calls


def test_every_dml_shape_the_operations_use_renders_valid_tsql(used_statements):
    seen = set()
    for method, args, kwargs in used_statements:
        key = (method, args, tuple(sorted(kwargs.items())))
        if key in seen:
            continue
        seen.add(key)
        sql = getattr(SQLSERVER, method)(*args, **kwargs)
        tree = parse_tsql(sql)
        assert "%s" not in sql and "RETURNING" not in sql
        placeholders = len(list(tree.find_all(exp.Placeholder)))
        if method == "insert_sql":
            _, cols, n_rows = args
            assert isinstance(tree, exp.Insert) and "OUTPUT inserted.id" in sql
            assert placeholders == len(cols) * n_rows
        elif method == "insert_children_sql":
            _, cols, n_rows = args
            assert isinstance(tree, exp.Insert) and "OUTPUT inserted.id" in sql
            assert isinstance(tree.expression, exp.Select) and "HOLDLOCK" in sql
            assert placeholders == len(cols) * n_rows + bool(kwargs.get("parent_not"))
        elif method == "update_sql":
            _, set_cols, add_cols, n_rows = args
            assert isinstance(tree, exp.Update) and "OUTPUT inserted.id" in sql
            assert placeholders == (1 + len(set_cols) + len(add_cols)) * n_rows
            assert "modified_at = SYSDATETIMEOFFSET()" in sql
        elif method == "delete_sql":
            assert isinstance(tree, exp.Delete) and "OUTPUT deleted.id" in sql
            assert placeholders == args[1] + len(kwargs.get("match", ()))
        elif method == "lock_sql":
            assert isinstance(tree, exp.Select) and "HOLDLOCK" in sql
            assert ("UPDLOCK" in sql) == (args[3] == "update")
            assert placeholders == args[1]
        else:
            assert isinstance(tree, exp.Select) and placeholders == args[2]
    methods = {m for m, _, _ in used_statements}
    assert methods == {
        "insert_sql",
        "insert_children_sql",
        "update_sql",
        "delete_sql",
        "lock_sql",
        "count_children_sql",
    }
    assert len(seen) > 50


def test_ledger_and_range_queries_are_valid_tsql():
    assert isinstance(parse_tsql(SQLSERVER.tx_info_sql()), exp.Select)
    assert isinstance(parse_tsql(SQLSERVER.key_range_sql("accounts")), exp.Select)


def test_postgres_statements_parse_too():
    for name in PROFILE_NAMES:
        for sql in schema_statements(POSTGRES, get_profile(name)):
            sqlglot.parse_one(sql, read="postgres", error_level=sqlglot.ErrorLevel.RAISE)


def test_sqlserver_urls_and_error_classes():
    from tidemark.simulator.connect import parse_url

    target = parse_url(
        "mssql://sa:p%40ss@db.example:14330/shop?driver=ODBC+Driver+17+for+SQL+Server"
    )
    assert target.dialect is SQLSERVER and target.port == 14330 and target.database == "shop"
    assert target.options["driver"] == "ODBC Driver 17 for SQL Server"
    assert "p@ss" not in repr(target) and parse_url("mssql://sa:x@h/db").port == 1433
    # pyodbc errors carry (SQLSTATE, message with the native error number); message texts as
    # SQL Server words them
    deadlock = Exception(
        "40001",
        "[40001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
        "Transaction (Process ID 52) was deadlocked on lock resources with "
        "another process and has been chosen as the deadlock victim. Rerun the "
        "transaction. (1205) (SQLExecDirectW)",
    )
    fk = Exception(
        "23000",
        "[23000] ... The INSERT statement conflicted with the FOREIGN KEY "
        'constraint "fk_addresses_customer_id". (547) (SQLExecDirectW)',
    )
    link = Exception(
        "08S01",
        "[08S01] [Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: "
        "Error code 0x68 (104) (SQLExecDirectW)",
    )
    assert SQLSERVER.classify(deadlock) == "retry"
    assert SQLSERVER.classify(fk) == "retry"
    assert SQLSERVER.classify(link) == "connection"
    assert SQLSERVER.classify(ValueError("bug")) == "other"
