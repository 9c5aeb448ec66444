-- 008_write_cost.sql: what a new or changed catalog row costs PostgreSQL (issue 16), with
-- every rule meaning what it meant. Figures: bench/RESULTS.md, "Issue 16: the database side".
--
-- Comments in this file contain no semicolon and no single-quote character (see 001 on
-- statement splitters).

-- ---------------------------------------------------------------------------------------
-- The trigram index: a pending list that holds a whole sync
-- ---------------------------------------------------------------------------------------
--
-- A GIN index with fastupdate (the default) first appends new entries to a pending list and
-- merges them into the index proper when the list outgrows gin_pending_list_limit (4 MB by
-- default) - inside the insert that crossed the limit. 10,000 new titles make about 17 MB of
-- pending entries, so a first sync into an empty catalog merged the list four times while
-- the user waited (a fifth of the catalog insert). At 32 MB one such sync fits, and the
-- merge happens after the sync commits: the enrichment thread cleans the list once no sync
-- of its process is running (lua/enrichment.lua, tidy), and autovacuum and autoanalyze of
-- title_catalog clean it too (the fallback where enrichment is off). A larger sync, or
-- several before a clean, still merges inline, as before.
--
-- Searches read the pending list as well as the index proper, so a title is found the moment
-- its sync commits, with the same results. Until the list is cleaned, a search over the
-- whole catalog reads the list too (about 0.4 s more with 10,000 titles pending, measured).
ALTER INDEX title_catalog_search_text_trgm_idx SET (gin_pending_list_limit = 32768);

-- ---------------------------------------------------------------------------------------
-- The name-list CHECKs without a PL/pgSQL call per list
-- ---------------------------------------------------------------------------------------
--
-- text_array_fits (001) is PL/pgSQL: three calls a row, about 5 microseconds each, which a
-- 10,000-title insert paid 50 to 90 ms for. text_array_fits_inline says the same thing with
-- built-in functions, and being a single SQL expression the planner inlines it into the
-- CHECK: no function call at all. The cases, in order (CASE evaluates them in order):
--   a NULL array                              NULL   (NULL-ness is NOT NULL business)
--   more than one dimension                   false  (array_position refuses those)
--   a NULL element                            false  (array_position finds NULL too)
--   no length limit, or the elements hold at most max_chars bytes between them
--                                             true   (a character is at least one byte,
--                                                     so no element has more characters)
--   otherwise (long lists, rare)              text_array_fits, the element-by-element test
-- The empty array gives true (no dimension, no element). STABLE, not IMMUTABLE, because
-- array_to_string is marked STABLE (it may call any output function, on text it depends on
-- its input alone, see 001): a SQL function is only inlined when its body is no more
-- volatile than its declaration.
CREATE FUNCTION text_array_fits_inline(arr text[], max_chars integer)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE
    WHEN arr IS NULL THEN NULL
    WHEN array_ndims(arr) > 1 THEN false
    WHEN array_position(arr, NULL) IS NOT NULL THEN false
    WHEN max_chars IS NULL OR octet_length(array_to_string(arr, '')) <= max_chars THEN true
    ELSE text_array_fits(arr, max_chars)
END;

-- Same names, same meaning: errors still name these constraints. Re-adding them checks the
-- stored rows once, under the lock of this migration.
ALTER TABLE title_catalog
    DROP CONSTRAINT title_catalog_authors_valid,
    DROP CONSTRAINT title_catalog_narrators_valid,
    DROP CONSTRAINT title_catalog_categories_valid,
    ADD CONSTRAINT title_catalog_authors_valid
        CHECK (text_array_fits_inline(authors, 200)),
    ADD CONSTRAINT title_catalog_narrators_valid
        CHECK (text_array_fits_inline(narrators, 200)),
    ADD CONSTRAINT title_catalog_categories_valid
        CHECK (text_array_fits_inline(categories, NULL));

-- ---------------------------------------------------------------------------------------
-- updated_at without two JSON copies of the row
-- ---------------------------------------------------------------------------------------
--
-- With arguments (title_catalog leaves out search_text), set_updated_at compared
-- to_jsonb(NEW) and to_jsonb(OLD) minus those columns: two JSON documents of the whole row,
-- summary included, for every UPDATE - about 70 microseconds a row, 0.7 s for 10,000 rows
-- of fills or enrichment. Now both records get those columns set to NULL
-- (jsonb_populate_record changes only the keys its JSON names) and are compared as records,
-- as the tables without arguments always were: about 10 microseconds a row. Record
-- comparison uses each column type equality where JSON compared JSON values: on the types
-- of title_catalog (text, arrays of text, numbers, dates, times, uuid) the two agree.
CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    changed boolean;
    skip    jsonb;
BEGIN
    NEW.updated_at := OLD.updated_at;
    IF TG_NARGS = 0 THEN
        changed := NEW IS DISTINCT FROM OLD;
    ELSE
        skip := jsonb_object(TG_ARGV, array_fill(NULL::text, ARRAY[TG_NARGS]));
        changed := jsonb_populate_record(NEW, skip) IS DISTINCT FROM jsonb_populate_record(OLD, skip);
    END IF;
    IF changed THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
