-- The publication of a reader on pgoutput (src/publication.c says what it
-- is for).  CREATE PUBLICATION ... FOR TABLE and ALTER and DROP of one take
-- ownership of the tables, which a consumer (walq_consumer) need not have:
-- these functions do it with the rights of walq's owner (SECURITY DEFINER,
-- search_path fixed to pg_catalog), for a publication named as walq names
-- a reader's slot and nothing else, with every name and value quoted.
-- Applied by `walq init` on every run, after the numbered migrations.

-- What a publication is, as one line: its tables with their filters as the
-- server prints them, and what it publishes.  Filters, and schemas in a
-- publication, are PostgreSQL 15's; a statement is planned when first run,
-- so the other branch does not fail on PostgreSQL 14.  NULL when there is
-- no such publication.
CREATE OR REPLACE FUNCTION walq.publication_fingerprint(name text)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p pg_catalog.pg_publication;
    tables text;
    schemas text := '';
BEGIN
    SELECT * INTO p FROM pg_catalog.pg_publication x WHERE x.pubname = publication_fingerprint.name;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF current_setting('server_version_num')::integer >= 150000 THEN
        SELECT coalesce(string_agg(r.prrelid::regclass::text
                                   || coalesce(' WHERE ' || pg_get_expr(r.prqual, r.prrelid), ''),
                                   '; ' ORDER BY r.prrelid::regclass::text), '')
          INTO tables FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = p.oid;
        SELECT coalesce('; schemas ' || string_agg(n.pnnspid::regnamespace::text, ', '), '')
          INTO schemas FROM pg_catalog.pg_publication_namespace n WHERE n.pnpubid = p.oid;
    ELSE
        SELECT coalesce(string_agg(r.prrelid::regclass::text, '; '
                                   ORDER BY r.prrelid::regclass::text), '')
          INTO tables FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = p.oid;
    END IF;
    RETURN tables || schemas
           || format(' (all tables %s, insert %s, update %s, delete %s, truncate %s, via root %s)',
                     p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
                     p.pubviaroot);
END
$$;

-- Whether name is what walq calls the slot of a reader of group_name
-- (partition part of partitions): walq_<group>, or walq_<group>_<k>of<n>.
CREATE OR REPLACE FUNCTION walq.reader_slot_name(name text, group_name text, partitions integer,
                                                 part integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT $2 ~ '^[a-z0-9_]{1,58}$' AND $3 BETWEEN 1 AND 1024 AND $4 >= 0 AND $4 < $3
           AND $1 = CASE WHEN $3 = 1 THEN 'walq_' || $2
                         ELSE format('walq_%s_%sof%s', $2, $4, $3) END
$$;

-- Makes the publication of a reader's slot, or redefines the one there:
-- the inserts into walq.jobs of the reader's queues (and partition), and
-- into walq.commands of its group.  Its comment records what the server
-- made of it (walq.publication_fingerprint), so that a change by hand is
-- seen.  Returns that.
CREATE OR REPLACE FUNCTION walq.define_publication(name text, group_name text, queues text[],
                                                   partitions integer DEFAULT 1,
                                                   part integer DEFAULT 0)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner name;
    tables text;
    fp text;
BEGIN
    IF NOT coalesce(walq.reader_slot_name(define_publication.name, define_publication.group_name,
                                          define_publication.partitions, define_publication.part),
                    false) THEN
        RAISE EXCEPTION 'publication name "%" is not the slot of partition % of % of consumer group "%"',
                        define_publication.name, define_publication.part,
                        define_publication.partitions, define_publication.group_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'walq consume names a reader''s publication like its slot: walq_GROUP, '
                         'or walq_GROUP_KofN for partition K of N.';
    END IF;
    IF coalesce(cardinality(define_publication.queues), 0) = 0
       OR EXISTS (SELECT 1 FROM unnest(define_publication.queues) q WHERE q IS NULL OR q = '') THEN
        RAISE EXCEPTION 'the publication of consumer group "%" needs at least one queue, none empty',
                        define_publication.group_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_get_userbyid(p.pubowner) INTO owner FROM pg_catalog.pg_publication p
     WHERE p.pubname = define_publication.name;
    IF FOUND AND owner <> current_user
       AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'publication "%" is owned by role "%", not by "%", which owns the walq schema',
                        define_publication.name, owner, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Give it to walq''s owner (ALTER PUBLICATION %I OWNER TO %I), or '
                                'drop it (DROP PUBLICATION %I): the next walq consume makes it '
                                'anew and reads the group''s unfinished jobs from walq.jobs.',
                                define_publication.name, current_user, define_publication.name);
    END IF;
    tables := 'TABLE walq.jobs';
    IF current_setting('server_version_num')::integer >= 150000 THEN
        tables := tables || ' WHERE (queue IN ('
                  || (SELECT string_agg(format('%L', q), ', ')
                        FROM unnest(define_publication.queues) q)
                  || ')'
                  || CASE WHEN define_publication.partitions > 1
                          THEN format(' AND (hashint8(id)::bigint & 4294967295) %% %s = %s',
                                      define_publication.partitions, define_publication.part)
                          ELSE '' END
                  || ')';
    END IF;
    tables := tables || ', walq.commands';
    IF current_setting('server_version_num')::integer >= 150000 THEN
        tables := tables || format(' WHERE (group_name = %L)', define_publication.group_name);
    END IF;
    -- The options first: a partitioned table takes a filter only when its
    -- changes are published as the root's.
    IF owner IS NOT NULL THEN
        EXECUTE format('ALTER PUBLICATION %I SET (publish = ''insert'','
                       ' publish_via_partition_root = true)', define_publication.name);
        EXECUTE format('ALTER PUBLICATION %I SET %s', define_publication.name, tables);
    ELSE
        EXECUTE format('CREATE PUBLICATION %I FOR %s'
                       ' WITH (publish = ''insert'', publish_via_partition_root = true)',
                       define_publication.name, tables);
    END IF;
    fp := walq.publication_fingerprint(define_publication.name);
    EXECUTE format('COMMENT ON PUBLICATION %I IS %L', define_publication.name,
                   'walq consume keeps this publication: ' || fp);
    RETURN fp;
END
$$;

-- Drops the publication of a reader's slot, if it is there: a reader of
-- the group's previous partitioning, or a group that is dropped.  Only a
-- publication that walq made (its comment says so) is dropped.
CREATE OR REPLACE FUNCTION walq.drop_publication(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF drop_publication.name !~ '^walq_[a-z0-9_]{1,70}$' THEN
        RAISE EXCEPTION 'publication name "%" is not the slot of a walq reader',
                        drop_publication.name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p
                    WHERE p.pubname = drop_publication.name
                      AND obj_description(p.oid, 'pg_publication')
                          LIKE 'walq consume keeps this publication: %') THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP PUBLICATION %I', drop_publication.name);
    RETURN true;
END
$$;
