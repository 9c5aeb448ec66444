-- 004_lists.sql: what the list routes (routes/lists.lua, routes/tierlists.lua) need beyond
-- 001_init.sql.
--
-- items_revision counts the replacements of the items of a list (the assignments of a
-- tier list). The set_updated_at trigger of 001 moves updated_at only when a column other
-- than updated_at changes, so a write that replaces only the members (rows of another
-- table) could not mark the list as changed. Bumping this counter in the same transaction
-- is that change: updatedAt then follows every edit of a list, its members included, and
-- the index of lists (most recent change first) orders by it.
--
-- Comments in this file contain no semicolon and no single-quote character (see 001 on
-- statement splitters).

ALTER TABLE recommendation_lists
    ADD COLUMN items_revision bigint NOT NULL DEFAULT 0;

ALTER TABLE tier_lists
    ADD COLUMN items_revision bigint NOT NULL DEFAULT 0;
