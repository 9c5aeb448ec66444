-- 003_library_search.sql: what the library reads (lua/library_query.lua) need beyond the
-- search expressions of 001_init.sql.
--
-- Comments in this file contain no single-quote characters (see 001 on statement splitters).

-- The order text sorts use (title, author, series): the ICU root collation. Letters compare
-- before case and accents are looked at, so "Élan" sorts between "Eagle" and "Empire" and
-- "über" next to "Uber", not after "Zürich" as a byte order would put them. Measured on a
-- 5,000-title library: a title sort in this collation costs 4.4 ms, the same as a byte
-- order sort, where ordering by search_norm(title) costs 16 ms (unaccent on every row).
-- Deterministic: strings equal under ICU still differ by their bytes, so keyset
-- pagination sees a total order. Creating it here makes a PostgreSQL built without ICU
-- fail at migration time, not on the first sorted request.
CREATE COLLATION library_order (provider = icu, locale = 'und');

-- The LIKE pattern that finds s literally inside title_catalog.search_text: s normalised
-- as search_text is (search_norm), with the LIKE metacharacters (backslash, percent,
-- underscore) escaped for the default escape character, inside percent signs. Used for q
-- (a literal substring match beside the trigram match) and as the index-served prefilter
-- of the author and narrator filters. Inlined by the planner; on a query parameter it is
-- evaluated once, at plan time.
CREATE FUNCTION search_like(s text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN '%' || replace(replace(replace(search_norm(s), E'\\', E'\\\\'), '%', E'\\%'), '_', E'\\_') || '%';

-- Planner costs of the trigram word-similarity functions. pg_trgm declares them COST 1,
-- the price of an integer comparison; measured here, one call on a title search text
-- (about 60 characters) takes about 12 microseconds, two orders of magnitude more. With
-- COST 1 the planner reads a whole library and tests every row (60 ms for a search in
-- 5,000 titles) rather than let the trigram index pick the few candidates (5 ms): the
-- costs it compares are only right when this one is. Only the owner of the functions may
-- change them; where the migration runs as another role (a managed database installs
-- trusted extensions as its bootstrap superuser), searches still work, with the slower
-- plans, and a notice says so. ALTER FUNCTION on extension members is not kept by
-- pg_dump: after a restore, run these three statements again.
DO $$
BEGIN
    ALTER FUNCTION public.word_similarity(text, text) COST 100;
    ALTER FUNCTION public.word_similarity_op(text, text) COST 100;
    ALTER FUNCTION public.word_similarity_commutator_op(text, text) COST 100;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_trgm word similarity costs left at their defaults: %', SQLERRM;
END
$$;
