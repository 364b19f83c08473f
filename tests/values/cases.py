"""The adversarial tables: every type and key shape the issue names, and what each must do.

Each `Case` is one source table with statements for four moments of one shared pipeline run
(tests/values/harness.py): rows present before the pipeline starts (the snapshot), rows
inserted while it streams, updates and deletes in a later batch (after those inserts were
committed), and more changes after a restart. `{t}` in a statement is the table's quoted
name. Every case ends in a state the lake can hold, so `verify` must come out clean; values
that cannot be stored are replaced or deleted at the source before the end, and `dead`
counts the events that must have become dead letters on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    """One adversarial table.

    Attributes:
        name: table name (and test id); `schema` its schema.
        columns: the column definitions of CREATE TABLE.
        snapshot: VALUES rows present before the pipeline starts.
        inserts: VALUES rows inserted while the pipeline streams (one transaction).
        changes: statements run in a later batch (each its own transaction).
        later: statements run after the pipeline restarted.
        prepare: SQL run before CREATE TABLE (types, domains, extensions).
        after_create: SQL run after CREATE TABLE (replica identity, indexes).
        dead: how many events must have gone to the dead letters.
        expect: spot checks of live rows: {key value(s): {column: value as Python reads it}}.
        key: the key column(s) the lake must use (None: every column, with a count).
    """

    name: str
    columns: str
    snapshot: tuple[str, ...] = ()
    inserts: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    later: tuple[str, ...] = ()
    prepare: str = ""
    after_create: str = ""
    schema: str = "public"
    dead: int = 0
    expect: dict[Any, dict[str, Any]] = field(default_factory=dict)
    key: tuple[str, ...] | None = ("id",)

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.name}"'


ARRAY_COLUMNS = """id int PRIMARY KEY, ai int[], ab bigint[], asm smallint[], at text[],
    av varchar(5)[], an numeric(6,2)[], af float8[], ar real[], abo boolean[], ad date[],
    ats timestamp[], atz timestamptz[], au uuid[], aj jsonb[], aby bytea[], ach char(2)[],
    ai2 interval[], atm time[]"""

ARRAY_ROW = """({id}, '{{1,NULL,-3}}', '{{9223372036854775807}}', '{{-32768}}',
    '{{"a b","",NULL,"q\\"uote","ü"}}', '{{abc}}', '{{1.10,NULL,-2.50}}', '{{1.5,NaN,Infinity}}',
    '{{-Infinity}}', '{{true,NULL,false}}', '{{2024-02-29,NULL}}',
    '{{"2024-01-01 10:00:00.000001"}}',
    '{{"2024-01-01 10:00:00+02"}}', '{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}',
    ARRAY['{{"k": [1, 2]}}'::jsonb, NULL], '{{"\\\\x00ff"}}', '{{ab,c}}',
    '{{"1 day","-1 mon 2 days 00:00:00.5"}}', '{{"23:59:59.999999"}}')"""


def _arrays(ids: list[int]) -> tuple[str, ...]:
    return tuple(ARRAY_ROW.format(id=i) for i in ids)


CASES: tuple[Case, ...] = (
    Case(
        "ints",
        "id int PRIMARY KEY, s smallint, i int, b bigint, o oid",
        snapshot=("(1, -32768, -2147483648, -9223372036854775808, 0)",),
        inserts=("(2, 32767, 2147483647, 9223372036854775807, 4294967295)", "(3, 0, 0, 0, 1)"),
        changes=(
            "UPDATE {t} SET b = b - 1 WHERE id = 2",
            "UPDATE {t} SET s = s WHERE id = 1",  # changes nothing: no version
            "DELETE FROM {t} WHERE id = 3",
        ),
        later=("UPDATE {t} SET s = 7 WHERE id = 1",),
        expect={2: {"b": 9223372036854775806, "o": 4294967295}},
    ),
    Case(
        "numerics",
        "id int PRIMARY KEY, n10 numeric(10,2), n38 numeric(38,10), n50 numeric(50,20),"
        " n100 numeric(100,2), nv numeric, m money",
        snapshot=(
            "(1, 99999999.99, 1234567890123456789012345678.0123456789,"
            " 123456789012345678901234567890.12345678901234567890, 1.5,"
            " 3.14159265358979323846264338327950288419716939937510, '-92233720368547758.08')",
        ),
        inserts=(
            "(2, -0.01, 0, -0.00000000000000000001, -1e90, 'NaN', '92233720368547758.07')",
            "(3, NULL, NULL, NULL, NULL, 'Infinity', NULL)",
            "(4, 1, 1, 1, 1, '-Infinity', 0)",
        ),
        changes=(
            "UPDATE {t} SET nv = 12.500 WHERE id = 2",
            "UPDATE {t} SET n10 = 0.10, m = 1.23 WHERE id = 1",
            "DELETE FROM {t} WHERE id = 4",
        ),
        later=("UPDATE {t} SET nv = 'NaN' WHERE id = 1",),
        expect={2: {"nv": "12.500", "m": __import__("decimal").Decimal("92233720368547758.07")}},
    ),
    Case(
        "numeric_nan",
        "id int PRIMARY KEY, n numeric(10,2)",
        snapshot=("(1, 1.00)",),
        inserts=("(2, 'NaN')", "(3, 2.00)"),
        changes=("UPDATE {t} SET n = 'NaN' WHERE id = 3", "UPDATE {t} SET n = 5 WHERE id = 1"),
        later=("UPDATE {t} SET n = 2.50 WHERE id IN (2, 3)",),
        dead=2,
    ),
    Case(
        "floats",
        "id int PRIMARY KEY, r real, d double precision",
        snapshot=("(1, 'NaN', 'NaN')", "(2, 'Infinity', '-Infinity')"),
        inserts=("(3, -0.0, -0.0)", "(4, 3.4e38, 1.7976931348623157e308)", "(5, 1.5, 0.1)"),
        changes=(
            "UPDATE {t} SET d = 'Infinity' WHERE id = 5",
            "UPDATE {t} SET r = 'NaN' WHERE id = 4",
            "DELETE FROM {t} WHERE id = 3",
        ),
        later=("UPDATE {t} SET d = 'NaN' WHERE id = 2",),
    ),
    Case(
        "texts",
        'id int PRIMARY KEY, c char(5), v varchar(10), t text, ch "char", nm name',
        snapshot=("(1, 'ab', 'x|y', E'multi\\nline \\t tab \\\\ back', 'a', 'pg_class')",),
        inserts=(
            "(2, '', '', '', ' ', '')",
            "(3, 'ünï', '☃', E'🐘 \\u00e9 \\'q\\' \"dq\"', 'z', 'x')",
            "(4, NULL, NULL, NULL, NULL, NULL)",
        ),
        changes=(
            "UPDATE {t} SET t = NULL, c = 'zz' WHERE id = 3",
            "UPDATE {t} SET t = '' WHERE id = 4",
            "DELETE FROM {t} WHERE id = 2",
        ),
        later=("UPDATE {t} SET v = 'after' WHERE id = 1",),
        expect={1: {"c": "ab   "}},
    ),
    Case(
        "documents",
        "id int PRIMARY KEY, u uuid, j json, jb jsonb, x xml, e text",
        snapshot=(
            "(1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"b\": 1,  \"a\": [1, 2.50]}',"
            ' \'{"b": null, "n": 1.10}\', \'<a x="1">t &amp; u</a>\', NULL)',
        ),
        inserts=(
            "(2, '00000000-0000-0000-0000-000000000000', 'null', 'null', '<b/>', NULL)",
            "(3, NULL, '[]', '{}', NULL, NULL)",
            "(4, NULL, '\"ü\"', '\"\\\\u0000x\"', NULL, NULL)",
        ),
        changes=(
            'UPDATE {t} SET jb = \'{"deep": {"a": [1, {"b": null}]}}\' WHERE id = 2',
            "DELETE FROM {t} WHERE id = 3",
        ),
        later=("UPDATE {t} SET j = '{}' WHERE id = 1",),
    ),
    Case(
        "binary",
        "id int PRIMARY KEY, b bytea",
        snapshot=("(1, '\\xdeadbeef00')", "(2, '\\x')"),
        inserts=("(3, NULL)", "(4, decode(repeat('ab', 5000), 'hex'))"),
        changes=("UPDATE {t} SET b = '\\x00' WHERE id = 3", "DELETE FROM {t} WHERE id = 2"),
        later=("UPDATE {t} SET b = NULL WHERE id = 1",),
        expect={1: {"b": None}, 3: {"b": b"\x00"}},
    ),
    Case(
        "temporal",
        "id int PRIMARY KEY, d date, t time, t3 time(3), tz timetz, ts timestamp,"
        " ts3 timestamp(3), tstz timestamptz, tstz3 timestamptz(3), iv interval",
        snapshot=(
            "(1, '2024-02-29', '23:59:59.999999', '12:00:00.123', '10:11:12.5+05:30',"
            " '2024-01-02 03:04:05.678901', '1999-12-31 23:59:59.999',"
            " '2024-06-01 12:00:00.000001+02', '2024-06-01 12:00:00.123+02',"
            " '-1 year -2 months 3 days -04:05:06.789')",
        ),
        inserts=(
            "(2, '0001-01-01', '00:00:00', '24:00:00', '00:00:00+00', '0001-01-01 00:00:00',"
            " '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999+00', now(), '0 seconds')",
            "(3, '9999-12-31', '24:00:00', NULL, '23:59:59.999999-01', '1970-01-01',"
            " NULL, '1969-12-31 23:59:59.999999+00', NULL, '178000000 years')",
        ),
        changes=(
            "UPDATE {t} SET iv = '1 mon 1 day 00:00:00.000001' WHERE id = 1",
            "UPDATE {t} SET tz = '00:00:01+14' WHERE id = 3",
            "DELETE FROM {t} WHERE id = 2",
        ),
        later=("UPDATE {t} SET iv = '-1 day' WHERE id = 3",),
        expect={1: {"iv": {"months": 1, "days": 1, "nanoseconds": 1000}}},
    ),
    Case(
        "infinities",
        "id int PRIMARY KEY, d date, ts timestamp, ts3 timestamp(3), tz timestamptz, note text",
        snapshot=(
            "(1, 'infinity', 'infinity', 'infinity', 'infinity', 'a')",
            "(2, '-infinity', '-infinity', '-infinity', '-infinity', 'b')",
            "(3, '2024-01-01', '2024-01-01', '2024-01-01', '2024-01-01', 'c')",
        ),
        inserts=(
            "(4, 'infinity', 'infinity', 'infinity', 'infinity', 'd')",
            "(5, '-infinity', '-infinity', '-infinity', '-infinity', 'e')",
        ),
        changes=(
            "UPDATE {t} SET note = 'changed' WHERE id = 3",
            "UPDATE {t} SET note = 'changed' WHERE id = 1",
            "UPDATE {t} SET d = 'infinity' WHERE id = 3",
            "DELETE FROM {t} WHERE id = 5",
        ),
        later=("UPDATE {t} SET tz = '-infinity', note = 'x' WHERE id = 4",),
    ),
    Case(
        "out_of_range",
        "id int PRIMARY KEY, d date, ts timestamp, tz timestamptz",
        snapshot=("(1, '2024-01-01', '2024-01-01', '2024-01-01')",),
        inserts=(
            "(2, '10000-01-01', NULL, NULL)",
            "(3, NULL, '294276-12-31 23:59:59.999999', NULL)",
            "(4, NULL, NULL, '0100-06-15 12:00:00+00 BC')",
            "(5, '4714-11-24 BC', NULL, NULL)",
            "(6, '5874897-12-31', '10000-01-01', '294276-12-31 23:59:59.999999+00')",
        ),
        changes=(
            "UPDATE {t} SET d = '2025-01-01' WHERE id = 1",
            "UPDATE {t} SET ts = '4713-01-01 BC' WHERE id = 1",
        ),
        later=(
            "UPDATE {t} SET d = NULL, ts = NULL, tz = NULL WHERE id IN (1, 2, 3, 4)",
            "DELETE FROM {t} WHERE id IN (5, 6)",
        ),
        dead=6,
    ),
    Case(
        "arrays",
        ARRAY_COLUMNS,
        snapshot=_arrays([1]),
        inserts=(
            *_arrays([2, 3]),
            "(4, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',"
            " '{}', '{}', '{}', '{}', '{}')",
            "(5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
            " NULL, NULL, NULL, NULL, NULL)",
            "(6, '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}',"
            " '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}', '{NULL}',"
            " '{NULL}', '{NULL}')",
        ),
        changes=(
            "UPDATE {t} SET ai = '{7}', an = '{0.01}', ai2 = '{\"2 hours\"}' WHERE id = 1",
            "UPDATE {t} SET at = NULL WHERE id = 2",
            "UPDATE {t} SET ai = array_append(ai, 4) WHERE id = 6",
            "DELETE FROM {t} WHERE id = 3",
        ),
        later=("UPDATE {t} SET atz = '{infinity}' WHERE id = 4",),
        expect={1: {"ai": [7]}, 6: {"ai": [None, 4]}},
    ),
    Case(
        "arrays_more",
        "id int PRIMARY KEY, am money[], ax xml[], ab bit(3)[], avb varbit[], ap point[],"
        " abx box[], atz timetz[], anv numeric[], an numeric(6,2)[], ae mood2[], ac pair2[],"
        " ai int[], ahs hstore[], adom posint2[]",
        prepare="CREATE TYPE mood2 AS ENUM ('sad', 'ok'); CREATE TYPE pair2 AS (x int, y text);"
        " CREATE DOMAIN posint2 AS int CHECK (VALUE > 0);"
        " CREATE EXTENSION IF NOT EXISTS hstore;",
        snapshot=(
            "(1, '{1.50,NULL,-1234.5}', ARRAY['<a x=\"1\"/>'::xml, NULL], '{101,NULL}',"
            ' \'{1,0011,""}\', \'{"(1,2)",NULL}\', \'{"(1,2),(3,4)";"(5,6),(7,8)"}\','
            " '{\"10:00:00.123456+02\",NULL}', '{NaN,1.5,-Infinity,NULL}', '{1.10,NULL}',"
            " '{sad,NULL}', ARRAY['(1,\"a b\")'::pair2, NULL], '{1,NULL}',"
            " ARRAY['a=>1'::hstore, NULL], '{5,NULL}')",
        ),
        inserts=(
            "(2, " + ", ".join(["'{}'"] * 14) + ")",
            # a second dimension cannot be a list: a dead letter, never NULLs
            "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
            " '{{1,2},{3,4}}', NULL, NULL)",
            # NaN has no decimal(6,2): a dead letter, never a NULL array
            "(4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{NaN}', NULL, NULL, NULL,"
            " NULL, NULL)",
        ),
        changes=(
            "UPDATE {t} SET ae = '{ok,NULL,sad}', atz = '{\"23:59:59.999999-01\"}' WHERE id = 1",
            "UPDATE {t} SET am = '{0.01}' WHERE id = 2",
        ),
        later=(
            "UPDATE {t} SET ai = '{5}' WHERE id = 3",
            "UPDATE {t} SET an = '{2.5}' WHERE id = 4",
        ),
        dead=2,
        expect={1: {"ae": ["ok", None, "sad"], "avb": ["1", "0011", ""]}},
    ),
    Case(
        "emptied",
        "id int PRIMARY KEY, v text",
        snapshot=("(1, 'a')",),
        inserts=("(2, 'b')",),
        changes=("DELETE FROM {t}",),
    ),
    Case(
        "geometry",
        "id int PRIMARY KEY, p point, note text",
        snapshot=("(1, '(1,2)', 'a')",),
        inserts=("(2, '(-1.5,1e300)', 'b')", "(3, NULL, 'c')"),
        changes=("UPDATE {t} SET note = 'changed' WHERE id = 1", "DELETE FROM {t} WHERE id = 2"),
        later=("UPDATE {t} SET p = '(0,0)' WHERE id = 3",),
    ),
    Case(
        "ranges",
        "id int PRIMARY KEY, i4 int4range, i8 int8range, nr numrange, tr tsrange,"
        " tzr tstzrange, dr daterange",
        snapshot=(
            "(1, '[1,5)', '(,)', '[1.5,2.25]', '[2024-01-01,2024-02-01)',"
            " '[2024-01-01 00:00+00,infinity)', 'empty')",
        ),
        inserts=("(2, 'empty', '[-9,9]', NULL, NULL, NULL, '[2024-01-01,)')",),
        changes=(
            "UPDATE {t} SET i4 = '[2,3]' WHERE id = 1",
            "UPDATE {t} SET nr = 'empty' WHERE id = 2",
        ),
        later=("DELETE FROM {t} WHERE id = 2",),
    ),
    Case(
        "enums_domains",
        "id int PRIMARY KEY, m mood, ms mood[], pi posint, em email",
        prepare="CREATE TYPE mood AS ENUM ('sad', 'ok', 'très bien', 'with space');"
        " CREATE DOMAIN posint AS int CHECK (VALUE > 0);"
        " CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');",
        snapshot=("(1, 'sad', '{ok,\"with space\"}', 5, 'a@b')",),
        inserts=("(2, 'très bien', '{}', NULL, NULL)",),
        changes=("UPDATE {t} SET m = 'with space', pi = 7 WHERE id = 1",),
        later=("UPDATE {t} SET ms = '{sad,NULL}' WHERE id = 2",),
    ),
    Case(
        "network_bits",
        "id int PRIMARY KEY, ip inet, cn cidr, mac macaddr, mac8 macaddr8, b1 bit(1),"
        " b3 bit(3), vb varbit, vb0 varbit(70)",
        snapshot=(
            "(1, '10.0.0.1/8', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',"
            " B'1', B'101', B'1', B'1011001110001111000011111000001111110000001111111000000011')",
        ),
        inserts=("(2, '::1', '2001:db8::/32', NULL, NULL, B'0', B'000', B'', B'0')",),
        changes=("UPDATE {t} SET vb = B'000111000', b3 = B'111' WHERE id = 2",),
        later=("UPDATE {t} SET ip = '192.168.0.1' WHERE id = 1",),
    ),
    Case(
        "extensions",
        "id int PRIMARY KEY, ci citext, hs hstore, lt ltree",
        prepare="CREATE EXTENSION IF NOT EXISTS citext; CREATE EXTENSION IF NOT EXISTS hstore;"
        " CREATE EXTENSION IF NOT EXISTS ltree;",
        snapshot=("(1, 'MiXeD', 'a=>1, \"b c\"=>NULL', 'top.sub')",),
        inserts=("(2, 'ü', '', 'x')",),
        changes=("UPDATE {t} SET ci = 'other' WHERE id = 2",),
        later=("UPDATE {t} SET hs = 'k=>v' WHERE id = 1",),
    ),
    Case(
        "composite",
        "id int PRIMARY KEY, c pair, note text",
        prepare="CREATE TYPE pair AS (x int, y text);",
        snapshot=("(1, '(1,\"a b\")', 'a')",),
        inserts=("(2, '(,)', 'b')", "(3, NULL, 'c')"),
        changes=(
            "UPDATE {t} SET note = 'changed' WHERE id = 1",
            "UPDATE {t} SET c = '(5,x)' WHERE id = 3",
        ),
        later=("DELETE FROM {t} WHERE id = 2",),
        expect={1: {"c": '(1,"a b")'}},
    ),
    Case(
        "toast",
        "id int PRIMARY KEY, small int, big text, bb bytea, ab text[], jb jsonb",
        after_create="ALTER TABLE {t} ALTER COLUMN big SET STORAGE EXTERNAL,"
        " ALTER COLUMN bb SET STORAGE EXTERNAL, ALTER COLUMN ab SET STORAGE EXTERNAL,"
        " ALTER COLUMN jb SET STORAGE EXTERNAL",
        snapshot=(
            "(1, 0, repeat('x', 10000), decode(repeat('ab', 6000), 'hex'),"
            " ARRAY[repeat('y', 9000)], jsonb_build_object('k', repeat('z', 9000)))",
        ),
        inserts=("(2, 0, repeat('q', 10000), NULL, ARRAY[repeat('y', 9000)], NULL)",),
        changes=("UPDATE {t} SET small = 1 WHERE id IN (1, 2)",),
        later=("UPDATE {t} SET small = 2 WHERE id = 1",),
    ),
    # -- key shapes -------------------------------------------------------------------------
    Case(
        "key_mixed",
        "a int, b text, c date, d numeric(10,3), v text, PRIMARY KEY (a, b, c, d)",
        snapshot=("(1, 'x y', '2024-01-01', 1.5, 'a')", "(1, 'x y', '2024-01-02', 1.5, 'b')"),
        inserts=("(1, 'X Y', '2024-01-01', 1.5, 'c')", "(2, '', '0001-01-01', -0.001, 'd')"),
        changes=(
            "UPDATE {t} SET v = 'changed' WHERE a = 1 AND c = '2024-01-02'",
            "UPDATE {t} SET b = 'moved' WHERE b = 'X Y'",
            "DELETE FROM {t} WHERE a = 2",
        ),
        later=("UPDATE {t} SET d = 2 WHERE v = 'a'",),
        key=("a", "b", "c", "d"),
    ),
    Case(
        "key_numeric",
        "id numeric(20,5) PRIMARY KEY, v text",
        snapshot=("(1.5, 'a')", "(-99999999999999.99999, 'b')"),
        inserts=("(0, 'c')", "(1.50001, 'd')"),
        changes=("UPDATE {t} SET v = 'x' WHERE id = 1.5", "UPDATE {t} SET id = 2 WHERE id = 0"),
        later=("DELETE FROM {t} WHERE id = 1.50001",),
    ),
    Case(
        "key_numeric_free",
        "id numeric PRIMARY KEY, v text",
        snapshot=("(1.50, 'a')", "(3.14159265358979323846264338327950288419716939937510, 'b')"),
        inserts=("(1e-30, 'c')",),
        changes=("UPDATE {t} SET v = 'x' WHERE id = 1.5", "DELETE FROM {t} WHERE id = 1e-30"),
        later=("UPDATE {t} SET v = 'y' WHERE v = 'b'",),
    ),
    Case(
        "key_text",
        "id text PRIMARY KEY, v int",
        snapshot=("('a b', 1)", "('', 2)", "('ü☃🐘', 3)"),
        inserts=("('A B', 4)", "(E'tab\\there', 5)", "('''quote\"', 6)"),
        changes=(
            "UPDATE {t} SET v = v + 10 WHERE id IN ('', 'A B')",
            "UPDATE {t} SET id = 'new' WHERE v = 3",
        ),
        later=("DELETE FROM {t} WHERE id = 'a b'",),
    ),
    Case(
        "key_uuid",
        "id uuid PRIMARY KEY, v int",
        snapshot=("('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1)",),
        inserts=(
            "('00000000-0000-0000-0000-000000000000', 2)",
            "('ffffffff-ffff-ffff-ffff-ffffffffffff', 3)",
        ),
        changes=("UPDATE {t} SET v = 9 WHERE v = 1", "DELETE FROM {t} WHERE v = 2"),
        later=("UPDATE {t} SET v = 10 WHERE v = 3",),
    ),
    Case(
        "key_timestamps",
        "ts timestamp, tz timestamptz, d date, v int, PRIMARY KEY (ts, tz, d)",
        snapshot=(
            "('2024-01-01 00:00:00.000001', '2024-01-01 00:00:00+00', '2024-01-01', 1)",
            "('infinity', 'infinity', 'infinity', 2)",
        ),
        inserts=(
            "('-infinity', '-infinity', '-infinity', 3)",
            "('0001-01-01 00:00:00', '1970-01-01 00:00:00+00', '1970-01-01', 4)",
        ),
        changes=("UPDATE {t} SET v = v + 10", "DELETE FROM {t} WHERE v = 14"),
        later=("UPDATE {t} SET v = 99 WHERE ts = 'infinity'",),
        key=("ts", "tz", "d"),
    ),
    Case(
        "key_bytes_bool",
        "id bytea, flag boolean, v int, PRIMARY KEY (id, flag)",
        snapshot=("('\\x00', true, 1)", "('\\x', false, 2)"),
        inserts=("('\\x00ff', true, 3)",),
        changes=("UPDATE {t} SET v = 7 WHERE v = 1", "DELETE FROM {t} WHERE v = 2"),
        later=("UPDATE {t} SET flag = false WHERE v = 3",),
        key=("id", "flag"),
    ),
    Case(
        "pk_full_identity",
        "id int PRIMARY KEY, v text, a int[]",
        after_create="ALTER TABLE {t} REPLICA IDENTITY FULL",
        snapshot=("(1, 'a', '{1}')",),
        inserts=("(2, NULL, NULL)",),
        changes=("UPDATE {t} SET id = 3 WHERE id = 2", "UPDATE {t} SET a = '{1,2}' WHERE id = 1"),
        later=("DELETE FROM {t} WHERE id = 1",),
    ),
    Case(
        "keyless",
        "a int, b text, c int[], d jsonb, e float8, f text",
        after_create="ALTER TABLE {t} REPLICA IDENTITY FULL;"
        " ALTER TABLE {t} ALTER COLUMN f SET STORAGE EXTERNAL",
        snapshot=(
            "(1, 'x', '{1}', '{\"k\": 1}', 1.5, NULL)",
            "(1, 'x', '{1}', '{\"k\": 1}', 1.5, NULL)",
            "(2, NULL, NULL, NULL, NULL, NULL)",
        ),
        inserts=(
            "(1, 'x', '{1}', '{\"k\": 1}', 1.5, NULL)",
            "(2, NULL, NULL, NULL, NULL, NULL)",
            "(3, 'y', '{}', 'null', 'NaN', repeat('t', 9000))",  # a TOASTed value
            "(4, 'gone', NULL, NULL, NULL, NULL)",
        ),
        changes=(
            # one of three identical rows changes; one of two identical NULL-ish rows goes
            "UPDATE {t} SET b = 'z' WHERE ctid = (SELECT ctid FROM {t} WHERE a = 1 LIMIT 1)",
            "DELETE FROM {t} WHERE ctid = (SELECT ctid FROM {t} WHERE a = 2 LIMIT 1)",
            "UPDATE {t} SET e = 'Infinity' WHERE a = 3",
            "DELETE FROM {t} WHERE a = 4",
        ),
        later=(
            "UPDATE {t} SET b = 'x' WHERE b = 'z'",
            "UPDATE {t} SET b = 'w' WHERE a = 3",  # f is TOASTed and unchanged
            "INSERT INTO {t} VALUES (2, NULL, NULL, NULL, NULL, NULL)",
        ),
        key=None,
        expect={},
    ),
    Case(
        "identity_index",
        "code text NOT NULL, region int NOT NULL, v text",
        after_create="CREATE UNIQUE INDEX {name}_ux ON {t} (region, code);"
        " ALTER TABLE {t} REPLICA IDENTITY USING INDEX {name}_ux",
        snapshot=("('a', 1, 'one')", "('b', 1, 'two')"),
        inserts=("('a', 2, 'three')",),
        changes=(
            "UPDATE {t} SET v = 'changed' WHERE code = 'a' AND region = 1",
            "UPDATE {t} SET code = 'c' WHERE code = 'b'",
            "DELETE FROM {t} WHERE region = 2",
        ),
        later=("INSERT INTO {t} VALUES ('a', 2, 'again')",),
        key=("region", "code"),
    ),
    Case(
        "Order Items",
        '"Item No" int PRIMARY KEY, "Qty" int, "we""ird.col" text',
        schema="Sales",
        snapshot=("(1, 2, 'a')",),
        inserts=("(2, 3, 'b')",),
        changes=(
            'UPDATE {t} SET "Qty" = 9 WHERE "Item No" = 1',
            'DELETE FROM {t} WHERE "Item No" = 2',
        ),
        later=("INSERT INTO {t} VALUES (3, 4, 'c')",),
        key=("Item No",),
    ),
)

BY_NAME = {case.name: case for case in CASES}
