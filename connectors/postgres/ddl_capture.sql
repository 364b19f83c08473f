-- Tidemark's DDL capture for one Postgres database (docs/schema-changes.md).
--
-- Event triggers compare each captured table's catalog entry with the copy kept in
-- `_tidemark.ddl_columns` (by attnum, so a rename is a rename) and write every difference
-- as a transactional logical-decoding message (prefix `tidemark-ddl`): pgoutput carries it
-- in the transaction's place among the row changes, and Debezium hands it over on
-- `<source>.message`. Rows that change without a row event (a column added with a default
-- to existing rows, a partition detached or dropped) follow as `rows` messages in the same
-- transaction. Installed by `tidemark setup` (a superuser: event triggers need one);
-- idempotent, so running it again upgrades in place.

CREATE SCHEMA IF NOT EXISTS _tidemark;
COMMENT ON SCHEMA _tidemark IS 'tidemark ddl capture 2';

-- Which tables pipelines capture, per publication (`_tidemark.register` keeps it in sync).
CREATE TABLE IF NOT EXISTS _tidemark.captured (
    publication text NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    PRIMARY KEY (publication, schema_name, table_name)
);

-- The last catalog state seen of captured tables and of their partitions.
CREATE TABLE IF NOT EXISTS _tidemark.ddl_tables (
    relid oid PRIMARY KEY,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    parent oid
);
CREATE TABLE IF NOT EXISTS _tidemark.ddl_columns (
    relid oid NOT NULL,
    attnum int2 NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    PRIMARY KEY (relid, attnum)
);

CREATE OR REPLACE FUNCTION _tidemark._captured(p_schema text, p_table text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM _tidemark.captured c
                   WHERE c.schema_name = p_schema AND c.table_name = p_table)
$$;

-- One change, as a transactional message in the current transaction.
CREATE OR REPLACE FUNCTION _tidemark._emit(p_op jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'tidemark-ddl', jsonb_build_object(
        'v', 1, 'op', p_op, 'ddl', left(current_query(), 4000),
        'timezone', current_setting('TimeZone'))::text);
END $$;

-- The key the lake uses: the replica identity index, else the primary key, else every column.
CREATE OR REPLACE FUNCTION _tidemark._keys(p_relid oid) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT array_agg(a.attname ORDER BY k.ord)
         FROM (SELECT i.indkey, i.indrelid FROM pg_index i
               WHERE i.indrelid = p_relid AND (i.indisreplident OR i.indisprimary)
               ORDER BY i.indisreplident DESC LIMIT 1) i
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
        (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped))
$$;

-- How a value travels: JSON from `to_jsonb`, except text for json/jsonb (kept as Postgres
-- prints them) and base64 for bytea (independent of `bytea_output`).
CREATE OR REPLACE FUNCTION _tidemark._json_expr(p_column text, p_type oid) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN p_type IN ('json'::regtype, 'jsonb'::regtype) THEN format('to_jsonb(%I::text)', p_column)
        WHEN p_type = 'bytea'::regtype THEN format('to_jsonb(encode(%I, ''base64''))', p_column)
        ELSE format('to_jsonb(%I)', p_column)
    END
$$;

CREATE OR REPLACE FUNCTION _tidemark._columns(p_relid oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod))
             ORDER BY a.attnum), '[]'::jsonb)
    FROM pg_attribute a WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- Rows of `p_relid` (the given columns), 2,000 per message: `rows` ops for the lake.
CREATE OR REPLACE FUNCTION _tidemark._emit_rows(
    p_relid oid, p_schema text, p_table text, p_columns text[], p_purpose text,
    p_extra jsonb, p_where text
) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    exprs text;
    types jsonb;
    r record;
    buf jsonb := '[]';
    n int := 0;
    head jsonb;
BEGIN
    SELECT string_agg(_tidemark._json_expr(a.attname, a.atttypid), ', ' ORDER BY c.ord),
           jsonb_agg(format_type(a.atttypid, a.atttypmod) ORDER BY c.ord)
      INTO exprs, types
      FROM unnest(p_columns) WITH ORDINALITY c(name, ord)
      JOIN pg_attribute a ON a.attrelid = p_relid AND a.attname = c.name;
    head := jsonb_build_object('kind', 'rows', 'schema', p_schema, 'table', p_table,
                               'purpose', p_purpose, 'columns', to_jsonb(p_columns),
                               'types', types) || coalesce(p_extra, '{}');
    FOR r IN EXECUTE format('SELECT jsonb_build_array(%s) AS v FROM %s %s',
                            exprs, p_relid::regclass, coalesce(p_where, '')) LOOP
        buf := buf || jsonb_build_array(r.v);
        n := n + 1;
        IF n >= 2000 THEN
            PERFORM _tidemark._emit(head || jsonb_build_object('rows', buf));
            buf := '[]';
            n := 0;
        END IF;
    END LOOP;
    IF n > 0 THEN
        PERFORM _tidemark._emit(head || jsonb_build_object('rows', buf));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION _tidemark._remember(p_relid oid, p_columns boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO _tidemark.ddl_tables (relid, schema_name, table_name, parent)
    SELECT c.oid, n.nspname, c.relname,
           CASE WHEN c.relispartition THEN
               (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid LIMIT 1) END
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_relid
    ON CONFLICT (relid) DO UPDATE SET schema_name = EXCLUDED.schema_name,
        table_name = EXCLUDED.table_name, parent = EXCLUDED.parent;
    DELETE FROM _tidemark.ddl_columns WHERE relid = p_relid;
    IF p_columns THEN
        INSERT INTO _tidemark.ddl_columns (relid, attnum, name, type)
        SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod)
          FROM pg_attribute a
         WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped;
    END IF;
END $$;

-- A re-created table leaves no trace in the publications that captured the old one: put it
-- back at once, in the same transaction, so its first rows are published.
CREATE OR REPLACE FUNCTION _tidemark._publish(p_relid oid, p_schema text, p_table text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pub text;
BEGIN
    FOR pub IN
        SELECT c.publication FROM _tidemark.captured c
          JOIN pg_publication p ON p.pubname = c.publication AND NOT p.puballtables
         WHERE c.schema_name = p_schema AND c.table_name = p_table
           AND NOT EXISTS (SELECT 1 FROM pg_publication_rel r
                           WHERE r.prpubid = p.oid AND r.prrelid = p_relid)
    LOOP
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', pub, p_schema, p_table);
    END LOOP;
END $$;

-- pgoutput does not publish a partition's TRUNCATE when partitions are published as their
-- parent: a statement trigger on each partition of a captured table sends its keys instead.
CREATE OR REPLACE FUNCTION _tidemark.on_partition_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    par record;
BEGIN
    SELECT p.relid, p.schema_name, p.table_name INTO par
      FROM pg_inherits i JOIN _tidemark.ddl_tables p ON p.relid = i.inhparent
     WHERE i.inhrelid = TG_RELID AND _tidemark._captured(p.schema_name, p.table_name);
    IF FOUND THEN
        PERFORM _tidemark._emit_rows(TG_RELID, par.schema_name, par.table_name,
                                     _tidemark._keys(par.relid), 'delete',
                                     jsonb_build_object('partition', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME),
                                     NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION _tidemark._watch_partition(p_relid oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = p_relid AND tgname = 'tidemark_partition_truncate') THEN
        EXECUTE format('CREATE TRIGGER tidemark_partition_truncate BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION _tidemark.on_partition_truncate()',
                       p_relid::regclass);
    END IF;
END $$;

-- `ALTER [COLUMN] <name> [SET DATA] TYPE` names this column in the statement: with USING it
-- may rewrite the values even when the type stays the same.
CREATE OR REPLACE FUNCTION _tidemark._retyped(p_query text, p_column text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_query ~* ('alter\s+(column\s+)?('
                       || regexp_replace(p_column, '([^A-Za-z0-9_])', '\\\1', 'g') || '|'
                       || regexp_replace(quote_ident(p_column), '([^A-Za-z0-9_])', '\\\1', 'g')
                       || ')\s+(set\s+data\s+)?type\M')
$$;

CREATE OR REPLACE FUNCTION _tidemark._diff(p_relid oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel record;
    old record;
    known boolean;
    captured boolean;
    parent_captured boolean := false;
    col record;
    child record;
    op jsonb;
    v jsonb;
    total bigint;
    nonnull bigint;
    distinct_values bigint;
    per_row boolean;
    keys text[];
    rewrites boolean := current_query() ~* '\musing\M';
BEGIN
    SELECT c.oid, n.nspname AS schema_name, c.relname AS table_name, c.relkind,
           c.relispartition,
           (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid LIMIT 1) AS parent
      INTO rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_relid;
    IF NOT FOUND OR rel.relkind NOT IN ('r', 'p') THEN
        RETURN;
    END IF;
    SELECT * INTO old FROM _tidemark.ddl_tables WHERE relid = p_relid;
    known := FOUND;
    captured := _tidemark._captured(rel.schema_name, rel.table_name);
    IF rel.relispartition AND rel.parent IS NOT NULL THEN
        parent_captured := EXISTS (SELECT 1 FROM _tidemark.ddl_tables p WHERE p.relid = rel.parent
                                   AND _tidemark._captured(p.schema_name, p.table_name));
    END IF;

    IF NOT known THEN
        IF captured THEN  -- created (again) under a captured name, or renamed to one
            PERFORM _tidemark._emit(jsonb_build_object(
                'kind', 'create_table', 'schema', rel.schema_name, 'table', rel.table_name,
                'columns', _tidemark._columns(p_relid), 'keys', to_jsonb(_tidemark._keys(p_relid))));
            PERFORM _tidemark._publish(p_relid, rel.schema_name, rel.table_name);
            PERFORM _tidemark._remember(p_relid, true);
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', p_relid::regclass) INTO per_row;
            IF per_row THEN  -- rows that were there before it was captured (a rename)
                PERFORM _tidemark._emit(jsonb_build_object(
                    'kind', 'snapshot', 'schema', rel.schema_name, 'table', rel.table_name));
            END IF;
        ELSIF parent_captured THEN
            PERFORM _tidemark._remember(p_relid, false);
            PERFORM _tidemark._watch_partition(p_relid);
        END IF;
        RETURN;
    END IF;

    IF (old.schema_name, old.table_name) IS DISTINCT FROM (rel.schema_name, rel.table_name)
       AND _tidemark._captured(old.schema_name, old.table_name) THEN
        PERFORM _tidemark._emit(jsonb_build_object(
            'kind', 'rename_table', 'schema', old.schema_name, 'table', old.table_name,
            'to_schema', rel.schema_name, 'to_table', rel.table_name));
    END IF;
    IF NOT captured THEN
        PERFORM _tidemark._remember(p_relid, false);
        RETURN;
    END IF;

    keys := _tidemark._keys(p_relid);
    FOR col IN
        SELECT s.attnum AS old_num, s.name AS old_name, s.type AS old_type,
               a.attnum AS new_num, a.attname AS new_name,
               format_type(a.atttypid, a.atttypmod) AS new_type, a.atttypid AS type_oid,
               a.atthasmissing
          FROM (SELECT * FROM _tidemark.ddl_columns WHERE relid = p_relid) s
          FULL JOIN (SELECT * FROM pg_attribute WHERE attrelid = p_relid AND attnum > 0
                     AND NOT attisdropped) a ON a.attnum = s.attnum
         ORDER BY coalesce(s.attnum, a.attnum)
    LOOP
        IF col.new_num IS NULL THEN
            PERFORM _tidemark._emit(jsonb_build_object(
                'kind', 'drop_column', 'schema', rel.schema_name, 'table', rel.table_name,
                'column', col.old_name, 'type', col.old_type));
        ELSIF col.old_num IS NULL THEN
            op := jsonb_build_object('kind', 'add_column', 'schema', rel.schema_name,
                                     'table', rel.table_name, 'column', col.new_name,
                                     'type', col.new_type);
            per_row := false;
            IF col.atthasmissing THEN  -- a constant default: every existing row reads it
                EXECUTE format('SELECT %s FROM %s LIMIT 1',
                               _tidemark._json_expr(col.new_name, col.type_oid), p_relid::regclass)
                   INTO v;
                IF v IS NOT NULL AND v <> 'null'::jsonb THEN
                    op := op || jsonb_build_object('fill', 'value', 'value', v);
                END IF;
            ELSE  -- rewritten (a volatile default, identity, a partitioned table): read it
                EXECUTE format('SELECT count(*), count(%1$I), count(DISTINCT %1$I::text) FROM %2$s',
                               col.new_name, p_relid::regclass)
                   INTO total, nonnull, distinct_values;
                IF nonnull > 0 AND nonnull = total AND distinct_values = 1 THEN
                    EXECUTE format('SELECT %s FROM %s LIMIT 1',
                                   _tidemark._json_expr(col.new_name, col.type_oid),
                                   p_relid::regclass) INTO v;
                    op := op || jsonb_build_object('fill', 'value', 'value', v);
                ELSIF nonnull > 0 THEN
                    op := op || jsonb_build_object('fill', 'rows');
                    per_row := true;
                END IF;
            END IF;
            PERFORM _tidemark._emit(op);
            IF per_row THEN
                PERFORM _tidemark._emit_rows(
                    p_relid, rel.schema_name, rel.table_name,
                    array_remove(keys, col.new_name::text) || col.new_name::text, 'fill',
                    jsonb_build_object('column', col.new_name),
                    format('WHERE %I IS NOT NULL', col.new_name));
            END IF;
        ELSE
            IF col.old_name <> col.new_name THEN
                PERFORM _tidemark._emit(jsonb_build_object(
                    'kind', 'rename_column', 'schema', rel.schema_name, 'table', rel.table_name,
                    'column', col.old_name, 'to', col.new_name));
            END IF;
            IF col.old_type <> col.new_type
               OR (rewrites AND _tidemark._retyped(current_query(), col.new_name)) THEN
                PERFORM _tidemark._emit(jsonb_build_object(
                    'kind', 'alter_type', 'schema', rel.schema_name, 'table', rel.table_name,
                    'column', col.new_name, 'from_type', col.old_type, 'to_type', col.new_type,
                    'rewrites', rewrites));
                IF rewrites THEN  -- USING may change values: send the new ones
                    PERFORM _tidemark._emit_rows(
                        p_relid, rel.schema_name, rel.table_name,
                        array_remove(keys, col.new_name::text) || col.new_name::text, 'fill',
                        jsonb_build_object('column', col.new_name), NULL);
                END IF;
            END IF;
        END IF;
    END LOOP;

    IF rel.relkind = 'p' THEN
        FOR child IN
            SELECT i.inhrelid AS relid, n.nspname AS schema_name, c.relname AS table_name
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE i.inhparent = p_relid
               AND NOT EXISTS (SELECT 1 FROM _tidemark.ddl_tables t
                               WHERE t.relid = i.inhrelid AND t.parent = p_relid)
        LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', child.relid::regclass) INTO per_row;
            PERFORM _tidemark._emit(jsonb_build_object(
                'kind', 'attach_partition', 'schema', rel.schema_name, 'table', rel.table_name,
                'partition', child.schema_name || '.' || child.table_name,
                'filter', pg_get_partition_constraintdef(child.relid), 'has_rows', per_row));
            PERFORM _tidemark._remember(child.relid, false);
            PERFORM _tidemark._watch_partition(child.relid);
        END LOOP;
        FOR child IN
            SELECT t.relid, t.schema_name, t.table_name FROM _tidemark.ddl_tables t
             WHERE t.parent = p_relid
               AND NOT EXISTS (SELECT 1 FROM pg_inherits i
                               WHERE i.inhrelid = t.relid AND i.inhparent = p_relid)
        LOOP
            PERFORM _tidemark._emit(jsonb_build_object(
                'kind', 'detach_partition', 'schema', rel.schema_name, 'table', rel.table_name,
                'partition', child.schema_name || '.' || child.table_name));
            PERFORM _tidemark._emit_rows(child.relid, rel.schema_name, rel.table_name, keys,
                                        'delete', '{}'::jsonb, NULL);
            UPDATE _tidemark.ddl_tables SET parent = NULL WHERE relid = child.relid;
        END LOOP;
    END IF;
    PERFORM _tidemark._remember(p_relid, true);
END $$;

CREATE OR REPLACE FUNCTION _tidemark.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd record;
BEGIN
    FOR cmd IN
        SELECT objid, min(ordinality) AS first
          FROM pg_event_trigger_ddl_commands() WITH ORDINALITY
         WHERE classid = 'pg_class'::regclass AND object_type IN ('table', 'table column')
         GROUP BY objid ORDER BY first
    LOOP
        PERFORM _tidemark._diff(cmd.objid);
    END LOOP;
END $$;

-- Before a DROP TABLE: the rows of a captured table's partition named in the statement, so
-- the lake can delete them if the partition is really dropped (`drop_partition` confirms).
CREATE OR REPLACE FUNCTION _tidemark.on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part record;
    q text := lower(current_query());
BEGIN
    FOR part IN
        SELECT t.relid, p.relid AS parent, p.schema_name, p.table_name
          FROM _tidemark.ddl_tables t JOIN _tidemark.ddl_tables p ON p.relid = t.parent
         WHERE _tidemark._captured(p.schema_name, p.table_name)
           AND position(lower(t.table_name) IN q) > 0
           AND to_regclass(format('%I.%I', t.schema_name, t.table_name)) = t.relid
    LOOP
        PERFORM _tidemark._emit_rows(part.relid, part.schema_name, part.table_name,
                                    _tidemark._keys(part.parent), 'delete',
                                    jsonb_build_object('pending_drop', part.relid::bigint), NULL);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION _tidemark.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    obj record;
    old record;
    par record;
BEGIN
    FOR obj IN
        SELECT * FROM pg_event_trigger_dropped_objects()
         WHERE classid = 'pg_class'::regclass AND objsubid = 0
    LOOP
        SELECT * INTO old FROM _tidemark.ddl_tables WHERE relid = obj.objid;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        IF _tidemark._captured(old.schema_name, old.table_name) THEN
            PERFORM _tidemark._emit(jsonb_build_object(
                'kind', 'drop_table', 'schema', old.schema_name, 'table', old.table_name));
        ELSIF old.parent IS NOT NULL THEN
            SELECT * INTO par FROM _tidemark.ddl_tables WHERE relid = old.parent;
            IF FOUND AND _tidemark._captured(par.schema_name, par.table_name) THEN
                PERFORM _tidemark._emit(jsonb_build_object(
                    'kind', 'drop_partition', 'schema', par.schema_name,
                    'table', par.table_name,
                    'partition', old.schema_name || '.' || old.table_name,
                    'pending_drop', obj.objid::bigint));
            END IF;
        END IF;
        DELETE FROM _tidemark.ddl_columns WHERE relid = obj.objid;
        DELETE FROM _tidemark.ddl_tables WHERE relid = obj.objid;
    END LOOP;
END $$;

-- Called by every pipeline on start (and by `tidemark setup`): the tables it captures, as
-- parallel arrays of schema and table names (names may hold dots, spaces, quotes).
DROP FUNCTION IF EXISTS _tidemark.register(text, text[]);
CREATE OR REPLACE FUNCTION _tidemark.register(
    p_publication text, p_schemas text[], p_tables text[]
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i int;
    rel oid;
    child oid;
BEGIN
    DELETE FROM _tidemark.captured c
     WHERE c.publication = p_publication
       AND NOT EXISTS (SELECT 1 FROM unnest(p_schemas, p_tables) AS t(s, n)
                       WHERE t.s = c.schema_name AND t.n = c.table_name);
    FOR i IN 1 .. coalesce(array_length(p_tables, 1), 0) LOOP
        INSERT INTO _tidemark.captured (publication, schema_name, table_name)
        VALUES (p_publication, p_schemas[i], p_tables[i])
        ON CONFLICT DO NOTHING;
        rel := to_regclass(format('%I.%I', p_schemas[i], p_tables[i]));
        CONTINUE WHEN rel IS NULL;
        IF NOT EXISTS (SELECT 1 FROM _tidemark.ddl_columns WHERE relid = rel) THEN
            PERFORM _tidemark._remember(rel, true);
        END IF;
        FOR child IN SELECT inhrelid FROM pg_inherits WHERE inhparent = rel LOOP
            IF NOT EXISTS (SELECT 1 FROM _tidemark.ddl_tables WHERE relid = child) THEN
                PERFORM _tidemark._remember(child, false);
            END IF;
            PERFORM _tidemark._watch_partition(child);
        END LOOP;
    END LOOP;
END $$;

DROP EVENT TRIGGER IF EXISTS tidemark_ddl_end;
CREATE EVENT TRIGGER tidemark_ddl_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
    EXECUTE FUNCTION _tidemark.on_ddl_end();
DROP EVENT TRIGGER IF EXISTS tidemark_ddl_start;
CREATE EVENT TRIGGER tidemark_ddl_start ON ddl_command_start
    WHEN TAG IN ('DROP TABLE')
    EXECUTE FUNCTION _tidemark.on_ddl_start();
DROP EVENT TRIGGER IF EXISTS tidemark_drop;
CREATE EVENT TRIGGER tidemark_drop ON sql_drop
    EXECUTE FUNCTION _tidemark.on_drop();
