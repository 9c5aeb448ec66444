-- 009_title_search.sql: a title's search text in a table of its own, so that a sync's new
-- titles are indexed for search just after the sync has answered, not while the user waits
-- (issue 16). Figures: bench/RESULTS.md, "Issue 16: the search text in its own table".
--
-- Comments in this file contain no semicolon and no single-quote character (see 001 on
-- statement splitters).
--
-- The trigram index was about half of what a new catalog title costs PostgreSQL: 10,000
-- titles took about 465 ms to insert with the generated search_text column and its index,
-- about 255 ms with the text written to an unindexed table instead (measured). The index
-- entries still have to be made, but after the answer, by the worker that sent it.
--
-- Every catalog title has exactly one search row, in one of two tables:
--   title_search          indexed (trigram GIN): where the search text of a title lives
--   title_search_pending  not indexed: the titles a sync inserted, until they are moved to
--                         title_search once its answer is sent (lua/title_search.lua)
-- title_search_all is the two together. Searches read it (lua/library_query.lua), so a
-- title is found the moment the transaction that inserted it commits, with the same text
-- and rank: only the way to its row differs for the few moments it is pending.
--
-- The triggers below keep the rows, for every writer (the sync, the enrichment, a manual
-- add, an operator with psql):
--   INSERT into title_catalog   a row in title_search, or in title_search_pending when the
--                               transaction set shelfsync.search_pending to on (the sync,
--                               for its new titles)
--   UPDATE of title, subtitle, authors, narrators or series_name
--                               the row is recomputed where it is
--   DELETE                      title_search by its foreign key, title_search_pending here
-- Statement triggers with transition tables: one INSERT ... SELECT a statement, where a row
-- trigger would call PL/pgSQL once a title (about 100 ms for 10,000 titles).
-- title_search_pending has no foreign key: its rows only come from the insert trigger, for
-- titles that exist then, and a key check for each of them would put back into the sync
-- part of what this file takes out of it.

CREATE TABLE title_search (
    title_id    uuid PRIMARY KEY
        CONSTRAINT title_search_title_id_fkey REFERENCES title_catalog (id) ON DELETE CASCADE,
    search_text text NOT NULL
);

CREATE TABLE title_search_pending (
    title_id    uuid PRIMARY KEY,
    search_text text NOT NULL
);

COMMENT ON TABLE title_search IS
    'title_search_text of each catalog title, indexed for search (009)';
COMMENT ON TABLE title_search_pending IS
    'search texts of titles a sync inserted, until lua/title_search.lua moves them to title_search (009)';

INSERT INTO title_search (title_id, search_text)
SELECT id, search_text FROM title_catalog;

-- The index 001 had on title_catalog.search_text, with the pending list of 008: a sync of
-- 10,000 titles fits in it, and the move after the sync merges it (lua/enrichment.lua, tidy).
CREATE INDEX title_search_text_trgm_idx
    ON title_search USING gin (search_text public.gin_trgm_ops)
    WITH (gin_pending_list_limit = 32768);

CREATE VIEW title_search_all AS
    SELECT title_id, search_text FROM title_search
    UNION ALL
    SELECT title_id, search_text FROM title_search_pending;

-- Drops the generated column and its index. updated_at no longer has a column to leave out.
DROP TRIGGER title_catalog_set_updated_at ON title_catalog;
ALTER TABLE title_catalog DROP COLUMN search_text;
CREATE TRIGGER title_catalog_set_updated_at
    BEFORE UPDATE ON title_catalog
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE FUNCTION title_search_insert()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('shelfsync.search_pending', true) = 'on' THEN
        INSERT INTO title_search_pending (title_id, search_text)
        SELECT n.id, title_search_text(n.title, n.subtitle, n.authors, n.narrators, n.series_name)
        FROM new_titles AS n;
    ELSE
        INSERT INTO title_search (title_id, search_text)
        SELECT n.id, title_search_text(n.title, n.subtitle, n.authors, n.narrators, n.series_name)
        FROM new_titles AS n;
    END IF;
    RETURN NULL;
END
$$;

-- A title still pending keeps its row there (the move takes the new text along), any other
-- one is rewritten in title_search. The insert is an upsert: a move running at the same time
-- may have just taken the row over (see lua/title_search.lua on why both orders end right).
CREATE FUNCTION title_search_update()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    WITH changed AS (
        SELECT n.id, title_search_text(n.title, n.subtitle, n.authors, n.narrators,
                                       n.series_name) AS search_text
        FROM new_titles AS n JOIN old_titles AS o ON o.id = n.id
        WHERE (n.title, n.subtitle, n.authors, n.narrators, n.series_name)
              IS DISTINCT FROM (o.title, o.subtitle, o.authors, o.narrators, o.series_name)
    ), pending AS (
        UPDATE title_search_pending AS p SET search_text = c.search_text
        FROM changed AS c WHERE p.title_id = c.id
        RETURNING p.title_id
    )
    INSERT INTO title_search (title_id, search_text)
    SELECT c.id, c.search_text FROM changed AS c
    WHERE NOT EXISTS (SELECT 1 FROM pending WHERE pending.title_id = c.id)
    ON CONFLICT (title_id) DO UPDATE SET search_text = EXCLUDED.search_text;
    RETURN NULL;
END
$$;

CREATE FUNCTION title_search_delete()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM title_search_pending AS p USING old_titles AS o WHERE p.title_id = o.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER title_catalog_search_insert
    AFTER INSERT ON title_catalog
    REFERENCING NEW TABLE AS new_titles
    FOR EACH STATEMENT EXECUTE FUNCTION title_search_insert();

CREATE TRIGGER title_catalog_search_update
    AFTER UPDATE ON title_catalog
    REFERENCING OLD TABLE AS old_titles NEW TABLE AS new_titles
    FOR EACH STATEMENT EXECUTE FUNCTION title_search_update();

CREATE TRIGGER title_catalog_search_delete
    AFTER DELETE ON title_catalog
    REFERENCING OLD TABLE AS old_titles
    FOR EACH STATEMENT EXECUTE FUNCTION title_search_delete();
