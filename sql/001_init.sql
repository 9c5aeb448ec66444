-- 001_init.sql: the shelfsync data model for PostgreSQL 15.
--
-- Translated from ../shared/seeds/000_fc9ebe9664b1ce94.txt (Prisma) and
-- ../shared/seeds/001_59df96af58c9c8f9.txt, with the changes DESIGN.md and issues 3 to 6
-- ask for: account status, profile visibility and username on users, soft removal
-- (removed_at) of library entries, hashed session tokens, search expressions.
--
-- The migration runner (core/migrate.c) wraps this file in its own transaction and owns
-- schema_migrations: no BEGIN or COMMIT here. pg_trgm and unaccent are trusted
-- extensions in PostgreSQL 15, so the database owner may create them.
--
-- Rules the database enforces (the Lua validators must be at least this strict, or an
-- item they accept would fail the whole statement instead of being skipped):
--   title_catalog.asin            ^[A-Z0-9]{10}$
--   title_catalog.title           1 to 500 characters
--   title_catalog.subtitle        at most 500 characters
--   title_catalog.authors         one-dimensional, no NULL element, each at most 200 characters
--   title_catalog.narrators       same as authors
--   title_catalog.categories      one-dimensional, no NULL element
--   title_catalog.series_position finite and >= 0
--   title_catalog.duration        > 0 (minutes)
--   title_catalog.rating          0 to 5 (NaN and infinities refused)
--   title_catalog.rating_count    >= 0
--   title_catalog.cover_image_url http:// or https:// (any case)
--   user_library.listening_progress 0 to 100
--   user_library.personal_rating  1 to 5 or NULL (the extension 0 means NULL)
--   users.email                   one @ with text on both sides, no whitespace, <= 254 chars
--   users.name                    at most 200 characters
--   users.image                   http:// or https://
--   users.username                ^[A-Za-z0-9_]{3,30}$, unique case-insensitively
--   sync_history counts           >= 0, and a failed sync carries an error_message
--   lists and tier lists          title 1 to 200 characters, description <= 2000,
--                                 item and assignment positions >= 1, note <= 2000
--   tier_lists.tier_labels        1 to 20 labels, each 1 to 50 characters with a
--                                 non-space character, no duplicates
-- Lengths are counted in characters (char_length), as utf8.len counts them in Lua.
--
-- Error codes: CHECK 23514, UNIQUE 23505, FOREIGN KEY 23503, NOT NULL 23502. Every
-- constraint has an explicit name, which the error message carries.
--
-- Note for statement splitters: function bodies below are dollar-quoted and contain
-- semicolons. Comments in this file contain neither semicolons nor single quotes.

DO $$
BEGIN
    -- Trigram search, unaccent and char_length all assume UTF-8. A SQL_ASCII database
    -- (what initdb --locale=C gives without -E UTF8) would silently break them.
    IF pg_encoding_to_char(
           (SELECT encoding FROM pg_database WHERE datname = current_database())) <> 'UTF8' THEN
        RAISE EXCEPTION 'shelfsync needs a UTF8 database, % is %', current_database(),
            pg_encoding_to_char(
                (SELECT encoding FROM pg_database WHERE datname = current_database()))
            USING HINT = 'initdb -E UTF8 --locale=C.UTF-8, or CREATE DATABASE ... ENCODING ''UTF8'' TEMPLATE template0';
    END IF;
END
$$;

CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;

-- ---------------------------------------------------------------------------------------
-- Types
-- ---------------------------------------------------------------------------------------

CREATE TYPE library_source AS ENUM ('LIBRARY', 'WISHLIST');
CREATE TYPE visibility_level AS ENUM ('PRIVATE', 'UNLISTED', 'PUBLIC');

-- ---------------------------------------------------------------------------------------
-- Helper functions
-- ---------------------------------------------------------------------------------------

-- True when arr is one-dimensional (or empty), holds no NULL, and every element has at
-- most max_chars characters (no length limit when max_chars is NULL). NULL for a NULL
-- array, so a CHECK leaves NULL-ness to NOT NULL. PL/pgSQL rather than SQL: a SQL
-- function with a subquery cannot be inlined, and the PL/pgSQL loop is cheaper per row
-- on the bulk catalog upsert.
CREATE FUNCTION text_array_fits(arr text[], max_chars integer)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    elem text;
BEGIN
    IF arr IS NULL THEN
        RETURN NULL;
    END IF;
    IF array_ndims(arr) > 1 THEN
        RETURN false;
    END IF;
    FOREACH elem IN ARRAY arr LOOP
        IF elem IS NULL OR char_length(elem) > max_chars THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- Tier labels: 1 to 20 of them, each 1 to 50 characters holding a non-space character,
-- no NULL, no duplicate (an assignment names its tier by label).
CREATE FUNCTION tier_labels_valid(labels text[])
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    label text;
    seen text[] := '{}';
BEGIN
    IF labels IS NULL THEN
        RETURN NULL;
    END IF;
    IF array_ndims(labels) IS DISTINCT FROM 1 OR cardinality(labels) > 20 THEN
        RETURN false;
    END IF;
    FOREACH label IN ARRAY labels LOOP
        IF label IS NULL OR char_length(label) > 50 OR label !~ '[^[:space:]]'
           OR label = ANY (seen) THEN
            RETURN false;
        END IF;
        seen := seen || label;
    END LOOP;
    RETURN true;
END
$$;

-- unaccent() is STABLE because its one-argument form looks the dictionary up through
-- search_path. Naming the dictionary by schema makes the result depend on its input
-- alone, so this wrapper may be IMMUTABLE and used in indexes and generated columns.
-- The SQL-standard body is bound at creation time: no search_path lookup at run time.
CREATE FUNCTION f_unaccent(text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN public.unaccent('public.unaccent'::regdictionary, $1);

-- The one normal form searches compare in: accents removed, lower case.
-- search_norm(q) on the query side matches title_catalog.search_text on the data side.
CREATE FUNCTION search_norm(text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
RETURN lower(f_unaccent($1));

-- One search text per title: title, subtitle, authors, narrators and series name,
-- in the normal form of search_norm (keep the two in step). Stored in title_catalog.search_text (a generated column)
-- and indexed with gin_trgm_ops, so q searches (%, <%, LIKE) never recompute it per row.
-- array_to_string and concat_ws are marked STABLE in the catalog because they may call
-- any output function. On text they depend on their input alone, so calling them here
-- keeps the IMMUTABLE promise. PL/pgSQL: unaccent is STABLE, so no SQL wrapper of it can
-- be inlined, and a PL/pgSQL simple expression is the cheaper call (about 4 microseconds
-- a title against 25 for a SQL body with subqueries), which the bulk upsert pays per row.
CREATE FUNCTION title_search_text(title text, subtitle text, authors text[],
                                  narrators text[], series_name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN lower(public.unaccent('public.unaccent'::regdictionary,
        concat_ws(' ', title, subtitle, array_to_string(authors, ' '),
                  array_to_string(narrators, ' '), series_name)));
END
$$;

-- The array with every element in lower case, for exact case-insensitive element
-- filters: lower_array(authors) @> ARRAY[lower($1)]. A GIN index on the expression
-- would serve it, see title_catalog below for why there is none.
CREATE FUNCTION lower_array(arr text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
AS $$
DECLARE
    elem   text;
    result text[] := '{}';
BEGIN
    FOREACH elem IN ARRAY arr LOOP
        result := result || lower(elem);
    END LOOP;
    RETURN result;
END
$$;

-- updated_at trigger, shared by every table that has the column. An UPDATE that
-- changes nothing keeps the old time, so updated_at means "last real change" (the
-- batched upsert may rewrite unchanged rows). Trigger arguments name columns to leave
-- out of the comparison: generated columns, which read as NULL in a BEFORE trigger.
CREATE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    changed boolean;
BEGIN
    NEW.updated_at := OLD.updated_at;
    IF TG_NARGS = 0 THEN
        changed := NEW IS DISTINCT FROM OLD;
    ELSE
        changed := (to_jsonb(NEW) - TG_ARGV) IS DISTINCT FROM (to_jsonb(OLD) - TG_ARGV);
    END IF;
    IF changed THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------
-- users
-- ---------------------------------------------------------------------------------------

CREATE TABLE users (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- OpenID sub of the Google account. NULL for dev-login users.
    google_id          text CONSTRAINT users_google_id_key UNIQUE,
    email              text NOT NULL,
    name               text,
    image              text,
    status             text NOT NULL DEFAULT 'active',
    deactivated_at     timestamptz,
    profile_visibility visibility_level NOT NULL DEFAULT 'PRIVATE',
    username           text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT users_google_id_format
        CHECK (char_length(google_id) BETWEEN 1 AND 255),
    CONSTRAINT users_email_format
        CHECK (char_length(email) <= 254 AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    CONSTRAINT users_name_length
        CHECK (char_length(name) <= 200),
    CONSTRAINT users_image_url
        CHECK (image ~* '^https?://.'),
    CONSTRAINT users_status_valid
        CHECK (status IN ('active', 'deactivated')),
    CONSTRAINT users_deactivated_at_matches_status
        CHECK ((status = 'deactivated') = (deactivated_at IS NOT NULL)),
    CONSTRAINT users_profile_visibility_valid
        CHECK (profile_visibility IN ('PRIVATE', 'PUBLIC')),
    -- ASCII only on the stored form: lower() maps a few non-ASCII letters (the Kelvin
    -- sign) to ASCII ones, so checking lower(username) would let them in.
    CONSTRAINT users_username_format
        CHECK (username ~ '^[A-Za-z0-9_]{3,30}$')
);

-- Look users up by email with lower(email) = lower($1) to use this index.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
-- And by handle with lower(username) = lower($1).
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

CREATE TRIGGER users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------
-- title_catalog: one row per ASIN, shared by every user
-- ---------------------------------------------------------------------------------------

CREATE TABLE title_catalog (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    asin            text NOT NULL CONSTRAINT title_catalog_asin_key UNIQUE,
    title           text NOT NULL,
    subtitle        text,
    authors         text[] NOT NULL DEFAULT '{}',
    narrators       text[] NOT NULL DEFAULT '{}',
    series_name     text,
    series_position double precision,
    duration        integer,
    cover_image_url text,
    summary         text,
    rating          double precision,
    rating_count    integer,
    publisher       text,
    -- A calendar day: Audible publishes release dates as days, with no time of day and
    -- no zone. A timestamptz would invent a midnight in some zone and show the previous
    -- day to readers west of it. Sorting and JSON (YYYY-MM-DD) need nothing more.
    release_date    date,
    language        text,
    categories      text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Maintained by PostgreSQL: never written by the application.
    search_text     text NOT NULL GENERATED ALWAYS AS
        (title_search_text(title, subtitle, authors, narrators, series_name)) STORED,

    CONSTRAINT title_catalog_asin_format
        CHECK (asin ~ '^[A-Z0-9]{10}$'),
    CONSTRAINT title_catalog_title_length
        CHECK (char_length(title) BETWEEN 1 AND 500),
    CONSTRAINT title_catalog_subtitle_length
        CHECK (char_length(subtitle) <= 500),
    CONSTRAINT title_catalog_authors_valid
        CHECK (text_array_fits(authors, 200)),
    CONSTRAINT title_catalog_narrators_valid
        CHECK (text_array_fits(narrators, 200)),
    CONSTRAINT title_catalog_categories_valid
        CHECK (text_array_fits(categories, NULL)),
    CONSTRAINT title_catalog_series_position_range
        CHECK (series_position >= 0 AND series_position < 'Infinity'),
    CONSTRAINT title_catalog_duration_positive
        CHECK (duration > 0),
    -- NaN sorts above every number in PostgreSQL, so BETWEEN refuses it too.
    CONSTRAINT title_catalog_rating_range
        CHECK (rating BETWEEN 0 AND 5),
    CONSTRAINT title_catalog_rating_count_nonnegative
        CHECK (rating_count >= 0),
    CONSTRAINT title_catalog_cover_image_url_format
        CHECK (cover_image_url ~* '^https?://.')
);

-- Search (issue 6). q: search_norm($q) <% search_text (word similarity, finds a word
-- inside the whole text: "sandersen" finds "Sanderson", "durrenmatt" finds
-- "Dürrenmatt"), search_text % search_norm($q) (similarity), or search_text LIKE a
-- pattern with %, _ and backslash escaped for literal substrings. All three use this
-- index. Rank with word_similarity(search_norm($q), search_text).
--
-- Exact case-insensitive filters on an array element are
-- lower_array(authors) @> ARRAY[lower($1)] (same for narrators and categories).
-- Evaluated on the rows of one library they need no index. Where the catalog side
-- should drive instead, add search_text LIKE the escaped search_norm($1) inside
-- percent signs: it selects through this index, and the exact test rechecks.
--
-- Measured on 10,000 new catalog rows (PostgreSQL 15, this machine): 110 ms for the
-- bare table, 260 ms with the generated column, checks and series index, 700 ms with
-- this index. Each further GIN on lower_array of one array column added about 60 ms,
-- and a trigram GIN per array column about 300 ms, for filters this index and the
-- per-library scan already serve, so they are left out. Re-syncs of unchanged rows
-- write no index at all (the batched upsert updates changed rows only).
CREATE INDEX title_catalog_search_text_trgm_idx
    ON title_catalog USING gin (search_text public.gin_trgm_ops);
-- Series filter, lower(series_name) = lower($1), and series order.
CREATE INDEX title_catalog_series_idx
    ON title_catalog (lower(series_name), series_position)
    WHERE series_name IS NOT NULL;

CREATE TRIGGER title_catalog_set_updated_at
    BEFORE UPDATE ON title_catalog
    FOR EACH ROW EXECUTE FUNCTION set_updated_at('search_text');

-- ---------------------------------------------------------------------------------------
-- user_library: a user reference to a catalog title, with the personal fields
-- ---------------------------------------------------------------------------------------

CREATE TABLE user_library (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid NOT NULL
        CONSTRAINT user_library_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    title_id           uuid NOT NULL
        CONSTRAINT user_library_title_id_fkey REFERENCES title_catalog (id) ON DELETE CASCADE,
    source             library_source NOT NULL,
    listening_progress integer NOT NULL DEFAULT 0,
    personal_rating    integer,
    date_added         timestamptz NOT NULL DEFAULT now(),
    -- Set when a sync no longer lists the title: the entry leaves library reads and
    -- counts (filter removed_at IS NULL) but stays in lists, and a later sync that
    -- brings the title back clears it, keeping the same id.
    removed_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT user_library_user_id_title_id_key UNIQUE (user_id, title_id),
    -- Target of the composite foreign keys of list_items and tier_assignments, which
    -- is how the database keeps lists to titles of their owner library.
    CONSTRAINT user_library_user_id_id_key UNIQUE (user_id, id),
    CONSTRAINT user_library_listening_progress_range
        CHECK (listening_progress BETWEEN 0 AND 100),
    CONSTRAINT user_library_personal_rating_range
        CHECK (personal_rating BETWEEN 1 AND 5)
);

CREATE INDEX user_library_title_id_idx ON user_library (title_id);
-- Default library page (newest first) and keyset pagination on (date_added, id).
CREATE INDEX user_library_user_date_added_idx
    ON user_library (user_id, date_added DESC, id DESC)
    WHERE removed_at IS NULL;
-- The same for one source (LIBRARY or WISHLIST), and counts per source.
CREATE INDEX user_library_user_source_date_added_idx
    ON user_library (user_id, source, date_added DESC, id DESC)
    WHERE removed_at IS NULL;

CREATE TRIGGER user_library_set_updated_at
    BEFORE UPDATE ON user_library
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------
-- sync_tokens and sync_history
-- ---------------------------------------------------------------------------------------

CREATE TABLE sync_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    jti        uuid NOT NULL CONSTRAINT sync_tokens_jti_key UNIQUE,
    user_id    uuid NOT NULL
        CONSTRAINT sync_tokens_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    used       boolean NOT NULL DEFAULT false,
    used_at    timestamptz,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),

    -- Mark a token used with SET used = true, used_at = now().
    CONSTRAINT sync_tokens_used_at_matches_used
        CHECK (used = (used_at IS NOT NULL)),
    CONSTRAINT sync_tokens_expires_after_creation
        CHECK (expires_at > created_at)
);

-- Unused, unexpired tokens of a user (at most 10): user_id = $1 AND NOT used AND
-- expires_at > now(). Also serves the cascade from users.
CREATE INDEX sync_tokens_user_used_expires_idx ON sync_tokens (user_id, used, expires_at);
-- Cleanup of tokens expired for more than 24 hours.
CREATE INDEX sync_tokens_expires_at_idx ON sync_tokens (expires_at);

CREATE TABLE sync_history (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL
        CONSTRAINT sync_history_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    titles_imported integer NOT NULL DEFAULT 0,
    new_to_catalog  integer NOT NULL DEFAULT 0,
    library_count   integer NOT NULL DEFAULT 0,
    wishlist_count  integer NOT NULL DEFAULT 0,
    warnings        text[] NOT NULL DEFAULT '{}',
    success         boolean NOT NULL,
    error_message   text,

    CONSTRAINT sync_history_counts_nonnegative
        CHECK (titles_imported >= 0 AND new_to_catalog >= 0
               AND library_count >= 0 AND wishlist_count >= 0),
    CONSTRAINT sync_history_warnings_valid
        CHECK (text_array_fits(warnings, NULL)),
    CONSTRAINT sync_history_failure_has_message
        CHECK (success OR error_message IS NOT NULL)
);

-- Last syncs of a user, newest first.
CREATE INDEX sync_history_user_synced_at_idx ON sync_history (user_id, synced_at DESC);
CREATE INDEX sync_history_synced_at_idx ON sync_history (synced_at);

-- ---------------------------------------------------------------------------------------
-- Sign-in: accounts, sessions, verification_tokens
-- ---------------------------------------------------------------------------------------

CREATE TABLE accounts (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid NOT NULL
        CONSTRAINT accounts_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    type                text NOT NULL,
    provider            text NOT NULL,
    provider_account_id text NOT NULL,
    refresh_token       text,
    access_token        text,
    expires_at          bigint,           -- Unix time, as the OAuth token response gives it
    token_type          text,
    scope               text,
    id_token            text,
    session_state       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT accounts_provider_provider_account_id_key
        UNIQUE (provider, provider_account_id)
);

CREATE INDEX accounts_user_id_idx ON accounts (user_id);

CREATE TRIGGER accounts_set_updated_at
    BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE sessions (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- SHA-256 of the cookie token (32 bytes). The token itself is never stored.
    -- From Lua: compare with decode($1, hex) given a hex digest, or with
    -- sha256(convert_to($1, UTF8)) given the raw cookie value (both names quoted).
    session_token_hash bytea NOT NULL CONSTRAINT sessions_session_token_hash_key UNIQUE,
    user_id            uuid NOT NULL
        CONSTRAINT sessions_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    expires            timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT sessions_session_token_hash_length
        CHECK (octet_length(session_token_hash) = 32)
);

CREATE INDEX sessions_expires_idx ON sessions (expires);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

CREATE TABLE verification_tokens (
    identifier text NOT NULL,
    token      text NOT NULL CONSTRAINT verification_tokens_token_key UNIQUE,
    expires    timestamptz NOT NULL,

    CONSTRAINT verification_tokens_pkey PRIMARY KEY (identifier, token)
);

-- ---------------------------------------------------------------------------------------
-- Recommendation lists and tier lists
--
-- "A list only holds titles from its owner library" is declarative: list_items and
-- tier_assignments carry user_id, tied to the list owner by a composite foreign key
-- to (user_id, id) of the list, and to the entry owner by a composite foreign key to
-- (user_id, id) of user_library. Another user entry fails with 23503. No trigger is
-- needed, so there is no race with concurrent writers. When an insert leaves user_id
-- NULL, a trigger fills it from the list, and the foreign keys still check the entry.
-- Removed entries (removed_at set) may stay in lists: that is the point of soft removal.
-- ---------------------------------------------------------------------------------------

CREATE TABLE recommendation_lists (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL
        CONSTRAINT recommendation_lists_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    title       text NOT NULL,
    description text,
    visibility  visibility_level NOT NULL DEFAULT 'PRIVATE',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),

    -- Composite foreign key target. Leading user_id also serves "lists of a user".
    CONSTRAINT recommendation_lists_user_id_id_key UNIQUE (user_id, id),
    CONSTRAINT recommendation_lists_title_length
        CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT recommendation_lists_description_length
        CHECK (char_length(description) <= 2000)
);

CREATE TRIGGER recommendation_lists_set_updated_at
    BEFORE UPDATE ON recommendation_lists
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE list_items (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    list_id         uuid NOT NULL,
    user_id         uuid NOT NULL,
    user_library_id uuid NOT NULL,
    position        integer NOT NULL,
    note            text,

    CONSTRAINT list_items_list_fkey FOREIGN KEY (user_id, list_id)
        REFERENCES recommendation_lists (user_id, id) ON DELETE CASCADE,
    CONSTRAINT list_items_entry_owner_fkey FOREIGN KEY (user_id, user_library_id)
        REFERENCES user_library (user_id, id) ON DELETE CASCADE,
    CONSTRAINT list_items_list_id_user_library_id_key UNIQUE (list_id, user_library_id),
    -- Deferred to commit, so a reorder may pass through duplicate positions.
    CONSTRAINT list_items_list_id_position_key UNIQUE (list_id, position)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT list_items_position_positive
        CHECK (position >= 1),
    CONSTRAINT list_items_note_length
        CHECK (char_length(note) <= 2000)
);

-- The cascade from user_library, and "which lists hold this entry".
CREATE INDEX list_items_user_library_id_idx ON list_items (user_library_id);

CREATE TABLE tier_lists (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL
        CONSTRAINT tier_lists_user_id_fkey REFERENCES users (id) ON DELETE CASCADE,
    title       text NOT NULL,
    description text,
    tier_labels text[] NOT NULL DEFAULT '{S,A,B,C,D,F}',
    visibility  visibility_level NOT NULL DEFAULT 'PRIVATE',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT tier_lists_user_id_id_key UNIQUE (user_id, id),
    CONSTRAINT tier_lists_title_length
        CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT tier_lists_description_length
        CHECK (char_length(description) <= 2000),
    CONSTRAINT tier_lists_tier_labels_valid
        CHECK (tier_labels_valid(tier_labels))
);

CREATE TRIGGER tier_lists_set_updated_at
    BEFORE UPDATE ON tier_lists
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE tier_assignments (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tier_list_id    uuid NOT NULL,
    user_id         uuid NOT NULL,
    user_library_id uuid NOT NULL,
    tier            text NOT NULL,
    position        integer NOT NULL,

    CONSTRAINT tier_assignments_tier_list_fkey FOREIGN KEY (user_id, tier_list_id)
        REFERENCES tier_lists (user_id, id) ON DELETE CASCADE,
    CONSTRAINT tier_assignments_entry_owner_fkey FOREIGN KEY (user_id, user_library_id)
        REFERENCES user_library (user_id, id) ON DELETE CASCADE,
    CONSTRAINT tier_assignments_tier_list_id_user_library_id_key
        UNIQUE (tier_list_id, user_library_id),
    CONSTRAINT tier_assignments_position_positive
        CHECK (position >= 1)
);

CREATE INDEX tier_assignments_user_library_id_idx ON tier_assignments (user_library_id);
CREATE INDEX tier_assignments_tier_list_tier_idx
    ON tier_assignments (tier_list_id, tier, position);

-- Fills user_id of a new list item or tier assignment from its list when the insert
-- leaves it NULL. The composite foreign keys check the result either way.
CREATE FUNCTION fill_owner_from_list()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.user_id IS NULL THEN
        IF TG_TABLE_NAME = 'list_items' THEN
            SELECT l.user_id INTO NEW.user_id
              FROM recommendation_lists AS l WHERE l.id = NEW.list_id;
        ELSE
            SELECT l.user_id INTO NEW.user_id
              FROM tier_lists AS l WHERE l.id = NEW.tier_list_id;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER list_items_fill_owner
    BEFORE INSERT ON list_items
    FOR EACH ROW EXECUTE FUNCTION fill_owner_from_list();
CREATE TRIGGER tier_assignments_fill_owner
    BEFORE INSERT ON tier_assignments
    FOR EACH ROW EXECUTE FUNCTION fill_owner_from_list();

-- A tier assignment names one of its tier list labels. Checked by two constraint
-- triggers deferred to commit, so that one transaction may rename or drop labels and
-- move the assignments in either order. Both re-read current rows at commit. The
-- assignment side locks its tier list row FOR SHARE, which conflicts with a concurrent
-- label update, so two transactions cannot each pass the check against the other
-- uncommitted state. Violations raise 23514 naming the constraint.
CREATE FUNCTION tier_assignment_tier_check()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    cur_tier   text;
    cur_list   uuid;
    labels     text[];
BEGIN
    SELECT a.tier, a.tier_list_id INTO cur_tier, cur_list
      FROM tier_assignments AS a WHERE a.id = NEW.id;
    IF NOT FOUND THEN
        RETURN NULL;                      -- deleted later in the same transaction
    END IF;
    SELECT l.tier_labels INTO labels
      FROM tier_lists AS l WHERE l.id = cur_list FOR SHARE;
    IF NOT FOUND THEN
        RETURN NULL;                      -- list deleted, the cascade removes the row
    END IF;
    IF NOT (cur_tier = ANY (labels)) THEN
        RAISE EXCEPTION 'new row for relation "tier_assignments" violates constraint "tier_assignments_tier_in_labels"'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'tier_assignments_tier_in_labels',
                  TABLE = 'tier_assignments', COLUMN = 'tier',
                  DETAIL = format('Tier %L is not one of the labels %s of tier list %s.',
                                  cur_tier, labels, cur_list);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION tier_list_labels_check()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    labels   text[];
    orphan   text;
BEGIN
    SELECT l.tier_labels INTO labels FROM tier_lists AS l WHERE l.id = NEW.id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT a.tier INTO orphan
      FROM tier_assignments AS a
     WHERE a.tier_list_id = NEW.id AND NOT (a.tier = ANY (labels))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'update of relation "tier_lists" violates constraint "tier_assignments_tier_in_labels"'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'tier_assignments_tier_in_labels',
                  TABLE = 'tier_lists', COLUMN = 'tier_labels',
                  DETAIL = format('Tier list %s drops the label %L, which assignments still use.',
                                  NEW.id, orphan);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER tier_assignments_tier_in_labels
    AFTER INSERT OR UPDATE OF tier, tier_list_id ON tier_assignments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tier_assignment_tier_check();

CREATE CONSTRAINT TRIGGER tier_lists_labels_cover_assignments
    AFTER UPDATE OF tier_labels ON tier_lists
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tier_list_labels_check();
