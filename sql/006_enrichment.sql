-- 006_enrichment.sql: title metadata from an Audnexus-compatible provider (issue 12), manual
-- and hidden library entries, the user marketplace.
--
-- enrich_queue holds the titles waiting for the provider, one row per ASIN. Instances claim
-- due rows with FOR UPDATE SKIP LOCKED and a lease (leased_until, leased_by): the row lock
-- lasts only the claiming statement, the lease keeps other instances off the row while its
-- fetch runs, and a lease left by an instance that died runs out by itself. A fetched title
-- leaves the queue in the transaction that writes its metadata, so it is fetched once.
--
-- title_catalog.metadata_checked_at is when the provider last answered for the title (or
-- when the worker gave up on it): a title is queued again only when that is NULL or older
-- than metadata_refresh_days. metadata_region is the region its metadata came from.
--
-- ALTER TYPE ADD VALUE runs inside the migration transaction (PostgreSQL 12 and later) as
-- long as nothing in the same transaction uses the new value, and nothing here does.
--
-- Comments in this file contain no semicolon and no single-quote character (see 001 on
-- statement splitters).

ALTER TYPE library_source ADD VALUE IF NOT EXISTS 'MANUAL';

ALTER TABLE user_library
    ADD COLUMN hidden boolean NOT NULL DEFAULT false;

ALTER TABLE users
    ADD COLUMN marketplace text,
    ADD CONSTRAINT users_marketplace_valid
        CHECK (marketplace IN ('us', 'uk', 'de', 'fr', 'ca', 'au', 'it', 'es', 'jp', 'in'));

ALTER TABLE title_catalog
    ADD COLUMN metadata_region text,
    ADD COLUMN metadata_checked_at timestamptz,
    ADD COLUMN metadata_status text,
    ADD CONSTRAINT title_catalog_metadata_region_valid
        CHECK (metadata_region IN ('us', 'uk', 'de', 'fr', 'ca', 'au', 'it', 'es', 'jp', 'in')),
    ADD CONSTRAINT title_catalog_metadata_status_valid
        CHECK (metadata_status IN ('ok', 'not_found', 'failed'));

-- No foreign key to title_catalog: its check is a query per queued row, which a
-- 10,000-title sync pays while the user waits (about a third of the queueing), and catalog
-- rows are never deleted. A queue row whose title is gone costs one fetch, then leaves.
CREATE TABLE enrich_queue (
    asin            text PRIMARY KEY,
    region          text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    leased_by       text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT enrich_queue_region_valid
        CHECK (region IN ('us', 'uk', 'de', 'fr', 'ca', 'au', 'it', 'es', 'jp', 'in')),
    CONSTRAINT enrich_queue_attempts_nonnegative
        CHECK (attempts >= 0)
);

-- The claim: due rows, oldest first.
CREATE INDEX enrich_queue_due_idx ON enrich_queue (next_attempt_at, asin);
