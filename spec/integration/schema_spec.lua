-- The schema of sql/001_init.sql, exercised directly through host.pg on the run's migrated
-- database: every CHECK refuses what the data model forbids and takes its boundary values,
-- the unique and foreign keys hold (an entry of another user never enters a list), tier
-- labels are enforced, updated_at follows real changes, search folds case and accents,
-- and list positions can be reordered inside one transaction.
local h = require("spec.support.helpers")

local CHECK, UNIQUE, FOREIGN_KEY, NOT_NULL = "23514", "23505", "23503", "23502"
local BAD_INPUT = "22P02"   -- invalid_text_representation: unknown enum label, malformed uuid

local pg

-- Runs one statement that must succeed; returns its rows.
local function q(sql, ...)
  local rows, err = pg.query(sql, ...)
  if not rows then
    error(("statement failed: %s\n%s"):format(tostring(err), sql), 2)
  end
  return rows
end

-- The rows of a result as a plain list (without the result's `affected` count).
local function list(rows)
  local out = {}
  for i, r in ipairs(rows) do out[i] = r end
  return out
end

-- The first row of a statement that must succeed.
local function one(sql, ...)
  return q(sql, ...)[1]
end

-- Runs one statement that must be refused with sqlstate, by the named constraint.
local function refuses(state, constraint, sql, ...)
  local rows, err = pg.query(sql, ...)
  assert(rows == nil, ("expected %s from %s, the statement succeeded:\n%s"):format(
    state, constraint or "the database", sql))
  assert.same({ state = state, kind = "query" }, { state = err.sqlstate, kind = err.kind }, tostring(err))
  if constraint then
    assert(tostring(err):find(constraint, 1, true),
      ("expected constraint %s, got: %s"):format(constraint, tostring(err)))
  end
  return err
end

local function rollback()
  pg.query("ROLLBACK")
end

-- Opens a transaction that is rolled back when the test ends, whatever happens in it
-- (a ROLLBACK after COMMIT only draws a warning).
local function begin()
  q("BEGIN")
  finally(rollback)
end

local seq = 0
local function next_n()
  seq = seq + 1
  return seq
end

local function new_user(email)
  return one("INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id",
    email or ("user" .. next_n() .. "@example.com"), "Test User").id
end

local function new_asin()
  return string.format("B%09d", next_n())
end

local function new_title(asin)
  return one("INSERT INTO title_catalog (asin, title) VALUES ($1, $2) RETURNING id",
    asin or new_asin(), "Some Title").id
end

local function new_entry(user_id, title_id)
  return one([[INSERT INTO user_library (user_id, title_id, source)
               VALUES ($1, $2, 'LIBRARY') RETURNING id]], user_id, title_id or new_title()).id
end

local function new_list(user_id)
  return one("INSERT INTO recommendation_lists (user_id, title) VALUES ($1, $2) RETURNING id",
    user_id, "Best of").id
end

local function new_tier_list(user_id, labels)
  if labels then
    return one([[INSERT INTO tier_lists (user_id, title, tier_labels)
                 VALUES ($1, 'Ranked', $2) RETURNING id]], user_id, labels).id
  end
  return one("INSERT INTO tier_lists (user_id, title) VALUES ($1, 'Ranked') RETURNING id",
    user_id).id
end

local rep = string.rep

describe("schema", function()
  setup(function()
    pg = h.db()
  end)

  before_each(function()
    h.reset_db()
  end)

  describe("title_catalog checks", function()
    -- Each case: a column, values the schema refuses (CHECK), values it takes.
    -- Values travel as parameters; the server casts them to the column type.
    local cases = {
      { col = "asin", constraint = "title_catalog_asin_format",
        bad = { "B00000000", "B0000000001", "b000000001", "B00000000-", "B00000000\u{c9}",
                "B00000000 ", "978014312854", "97801431285400", "978014312854X", "B0000000000AB" },
        good = { "0123456789", "ZZZZZZZZZZ", "014312854X", "9780143128540" } },
      { col = "title", constraint = "title_catalog_title_length",
        bad = { "", rep("x", 501), rep("\u{e9}", 501) },
        good = { "x", rep("x", 500), rep("\u{e9}", 500) } },
      { col = "subtitle", constraint = "title_catalog_subtitle_length",
        bad = { rep("x", 501) },
        good = { "", rep("\u{fc}", 500) } },
      { col = "authors", constraint = "title_catalog_authors_valid",
        bad = { { rep("a", 201) }, { "Brandon Sanderson", rep("\u{e9}", 201) } },
        good = { {}, { rep("a", 200) }, { "Brandon Sanderson", rep("\u{e9}", 200) } } },
      { col = "narrators", constraint = "title_catalog_narrators_valid",
        bad = { { rep("n", 201) } },
        good = { {}, { rep("n", 200), "Kate Reading" } } },
      { col = "duration", constraint = "title_catalog_duration_positive",
        bad = { 0, -1 },
        good = { 1, 100000 } },
      { col = "rating", constraint = "title_catalog_rating_range",
        bad = { -0.01, 5.01, "NaN", "Infinity" },
        good = { 0, 5, 4.5 } },
      { col = "rating_count", constraint = "title_catalog_rating_count_nonnegative",
        bad = { -1 },
        good = { 0, 2147483647 } },
      { col = "series_position", constraint = "title_catalog_series_position_range",
        bad = { -0.5, "Infinity", "NaN" },
        good = { 0, 2.5 } },
      { col = "cover_image_url", constraint = "title_catalog_cover_image_url_format",
        bad = { "ftp://example.com/a.jpg", "javascript:alert(1)", "//example.com/a.jpg",
                "https://" },
        good = { "https://m.media-amazon.com/images/I/51.jpg", "HTTP://EXAMPLE.COM/a" } },
    }

    for _, case in ipairs(cases) do
      it("refuses a bad " .. case.col .. " with " .. case.constraint .. " and takes its boundary values", function()
        local sql = ("INSERT INTO title_catalog (asin, title, %s) VALUES ($1, $2, $3)"):format(case.col)
        if case.col == "asin" then
          sql = "INSERT INTO title_catalog (asin, title) VALUES ($1, 'T')"
          for _, v in ipairs(case.bad) do refuses(CHECK, case.constraint, sql, v) end
          for _, v in ipairs(case.good) do q(sql, v) end
        elseif case.col == "title" then
          sql = "INSERT INTO title_catalog (asin, title) VALUES ($1, $2)"
          for _, v in ipairs(case.bad) do refuses(CHECK, case.constraint, sql, new_asin(), v) end
          for _, v in ipairs(case.good) do q(sql, new_asin(), v) end
        else
          for _, v in ipairs(case.bad) do refuses(CHECK, case.constraint, sql, new_asin(), "T", v) end
          for _, v in ipairs(case.good) do q(sql, new_asin(), "T", v) end
        end
      end)
    end

    it("refuses NULL elements and nested arrays in authors, narrators and categories", function()
      refuses(CHECK, "title_catalog_authors_valid",
        "INSERT INTO title_catalog (asin, title, authors) VALUES ($1, 'T', ARRAY['A', NULL])", new_asin())
      refuses(CHECK, "title_catalog_narrators_valid",
        "INSERT INTO title_catalog (asin, title, narrators) VALUES ($1, 'T', ARRAY[NULL]::text[])", new_asin())
      refuses(CHECK, "title_catalog_categories_valid",
        "INSERT INTO title_catalog (asin, title, categories) VALUES ($1, 'T', ARRAY['Fantasy', NULL])", new_asin())
      refuses(CHECK, "title_catalog_authors_valid",
        "INSERT INTO title_catalog (asin, title, authors) VALUES ($1, 'T', ARRAY[['A'], ['B']])", new_asin())
      q("INSERT INTO title_catalog (asin, title, categories) VALUES ($1, 'T', $2)",
        new_asin(), { rep("c", 1000), "Science Fiction & Fantasy" })
    end)

    it("refuses a missing title, NULL arrays and a second row for one ASIN", function()
      refuses(NOT_NULL, "title", "INSERT INTO title_catalog (asin) VALUES ($1)", new_asin())
      refuses(NOT_NULL, "authors",
        "INSERT INTO title_catalog (asin, title, authors) VALUES ($1, 'T', NULL)", new_asin())
      local asin = new_asin()
      new_title(asin)
      refuses(UNIQUE, "title_catalog_asin_key", "INSERT INTO title_catalog (asin, title) VALUES ($1, 'T')", asin)
    end)

    it("defaults authors, narrators and categories to empty arrays", function()
      local asin = new_asin()
      new_title(asin)
      assert.same({ a = 0, n = 0, c = 0 }, one([[
        SELECT cardinality(authors) AS a, cardinality(narrators) AS n, cardinality(categories) AS c
        FROM title_catalog WHERE asin = $1]], asin))
    end)

    it("stores release_date as a calendar day, whatever time or zone the input carries", function()
      local asin = new_asin()
      q("INSERT INTO title_catalog (asin, title, release_date) VALUES ($1, 'T', $2)",
        asin, "2015-03-03T23:30:00-05:00")
      assert.same({ d = "2015-03-03" },
        one("SELECT release_date::text AS d FROM title_catalog WHERE asin = $1", asin))
    end)
  end)

  describe("user_library checks", function()
    local user_id, sql
    before_each(function()
      user_id = new_user()
      sql = [[INSERT INTO user_library (user_id, title_id, source, listening_progress, personal_rating)
              VALUES ($1, $2, 'LIBRARY', $3, $4)]]
    end)

    it("keeps listening_progress within 0..100", function()
      refuses(CHECK, "user_library_listening_progress_range", sql, user_id, new_title(), -1, nil)
      refuses(CHECK, "user_library_listening_progress_range", sql, user_id, new_title(), 101, nil)
      q(sql, user_id, new_title(), 0, nil)
      q(sql, user_id, new_title(), 100, nil)
    end)

    it("keeps personal_rating within 1..5 or NULL (0 is not a rating)", function()
      refuses(CHECK, "user_library_personal_rating_range", sql, user_id, new_title(), 0, 0)
      refuses(CHECK, "user_library_personal_rating_range", sql, user_id, new_title(), 0, 6)
      q(sql, user_id, new_title(), 0, 1)
      q(sql, user_id, new_title(), 0, 5)
      q(sql, user_id, new_title(), 0, nil)
    end)

    it("takes only LIBRARY and WISHLIST as source", function()
      refuses(BAD_INPUT, nil, [[INSERT INTO user_library (user_id, title_id, source)
                               VALUES ($1, $2, $3)]], user_id, new_title(), "AUDIBLE")
      q("INSERT INTO user_library (user_id, title_id, source) VALUES ($1, $2, $3)",
        user_id, new_title(), "WISHLIST")
    end)

    it("holds one entry per user and title, and refuses unknown users and titles", function()
      local title_id = new_title()
      new_entry(user_id, title_id)
      refuses(UNIQUE, "user_library_user_id_title_id_key",
        "INSERT INTO user_library (user_id, title_id, source) VALUES ($1, $2, 'WISHLIST')",
        user_id, title_id)
      new_entry(new_user(), title_id)
      refuses(FOREIGN_KEY, "user_library_title_id_fkey",
        "INSERT INTO user_library (user_id, title_id, source) VALUES ($1, gen_random_uuid(), 'LIBRARY')",
        user_id)
      refuses(FOREIGN_KEY, "user_library_user_id_fkey",
        "INSERT INTO user_library (user_id, title_id, source) VALUES (gen_random_uuid(), $1, 'LIBRARY')",
        new_title())
    end)
  end)

  describe("users checks", function()
    it("refuses malformed and over-long emails, and takes 254 characters", function()
      local sql = "INSERT INTO users (email) VALUES ($1)"
      for _, bad in ipairs({ "no-at-sign", "a@b@c.example", " ada@example.com", "ada\t@example.com",
                             "ada@", "@example.com", rep("a", 243) .. "@example.com" }) do
        refuses(CHECK, "users_email_format", sql, bad)
      end
      q(sql, rep("a", 242) .. "@example.com")
    end)

    it("keeps emails unique whatever their case", function()
      new_user("Ada@Example.com")
      refuses(UNIQUE, "users_email_lower_key", "INSERT INTO users (email) VALUES ($1)", "ada@example.COM")
    end)

    it("lets any number of users have no google_id, but never two the same one", function()
      new_user()
      new_user()
      local sql = "INSERT INTO users (email, google_id) VALUES ($1, $2)"
      q(sql, "g1@example.com", "109876543210")
      refuses(UNIQUE, "users_google_id_key", sql, "g2@example.com", "109876543210")
      refuses(CHECK, "users_google_id_format", sql, "g3@example.com", "")
    end)

    it("limits name to 200 characters and image to http(s) URLs", function()
      refuses(CHECK, "users_name_length", "INSERT INTO users (email, name) VALUES ($1, $2)",
        "n1@example.com", rep("\u{e9}", 201))
      q("INSERT INTO users (email, name) VALUES ($1, $2)", "n2@example.com", rep("\u{e9}", 200))
      refuses(CHECK, "users_image_url", "INSERT INTO users (email, image) VALUES ($1, $2)",
        "i1@example.com", "data:image/png;base64,AAAA")
      q("INSERT INTO users (email, image) VALUES ($1, $2)", "i2@example.com",
        "https://lh3.googleusercontent.com/a/photo")
    end)

    it("knows only active and deactivated users, and a deactivated one carries the time", function()
      local id = new_user()
      assert.same({ status = "active", v = "PRIVATE", d = true },
        one("SELECT status, profile_visibility::text AS v, deactivated_at IS NULL AS d FROM users WHERE id = $1", id))
      refuses(CHECK, "users_status_valid", "UPDATE users SET status = 'banned' WHERE id = $1", id)
      refuses(CHECK, "users_deactivated_at_matches_status",
        "UPDATE users SET status = 'deactivated' WHERE id = $1", id)
      refuses(CHECK, "users_deactivated_at_matches_status",
        "UPDATE users SET deactivated_at = now() WHERE id = $1", id)
      q("UPDATE users SET status = 'deactivated', deactivated_at = now() WHERE id = $1", id)
    end)

    it("keeps profiles PRIVATE or PUBLIC, never UNLISTED", function()
      local id = new_user()
      refuses(CHECK, "users_profile_visibility_valid",
        "UPDATE users SET profile_visibility = 'UNLISTED' WHERE id = $1", id)
      q("UPDATE users SET profile_visibility = 'PUBLIC' WHERE id = $1", id)
    end)

    it("takes usernames of 3 to 30 ASCII letters, digits and underscores, unique in any case", function()
      local sql = "UPDATE users SET username = $2 WHERE id = $1"
      local id = new_user()
      for _, bad in ipairs({ "ab", rep("a", 31), "bad-name", "na\u{ef}ve", "ada lovelace",
                             "\u{212a}elvin", "" }) do
        refuses(CHECK, "users_username_format", sql, id, bad)
      end
      for _, good in ipairs({ "abc", rep("z", 30), "Ada_Lovelace_1815" }) do
        q(sql, id, good)
      end
      refuses(UNIQUE, "users_username_lower_key", sql, new_user(), "ada_lovelace_1815")
      q(sql, id, nil)
      q(sql, new_user(), nil)
    end)
  end)

  describe("sync_tokens and sync_history checks", function()
    local user_id
    before_each(function() user_id = new_user() end)

    it("ties used to used_at, keeps jti unique and expiry after creation", function()
      local jti = one("SELECT gen_random_uuid()::text AS u").u
      local ins = "INSERT INTO sync_tokens (jti, user_id, expires_at) VALUES ($1, $2, now() + interval '15 minutes')"
      q(ins, jti, user_id)
      refuses(UNIQUE, "sync_tokens_jti_key", ins, jti, user_id)
      refuses(BAD_INPUT, nil, ins, "not-a-uuid", user_id)
      refuses(CHECK, "sync_tokens_used_at_matches_used",
        "UPDATE sync_tokens SET used = true WHERE jti = $1", jti)
      refuses(CHECK, "sync_tokens_used_at_matches_used",
        "UPDATE sync_tokens SET used_at = now() WHERE jti = $1", jti)
      q("UPDATE sync_tokens SET used = true, used_at = now() WHERE jti = $1", jti)
      refuses(CHECK, "sync_tokens_expires_after_creation",
        "INSERT INTO sync_tokens (jti, user_id, expires_at) VALUES (gen_random_uuid(), $1, now())", user_id)
    end)

    it("refuses negative counts and a failed sync without an error message", function()
      local sql = [[INSERT INTO sync_history (user_id, titles_imported, new_to_catalog, library_count,
                      wishlist_count, success, error_message) VALUES ($1, $2, $3, $4, $5, $6, $7)]]
      refuses(CHECK, "sync_history_counts_nonnegative", sql, user_id, -1, 0, 0, 0, true, nil)
      refuses(CHECK, "sync_history_counts_nonnegative", sql, user_id, 0, -1, 0, 0, true, nil)
      refuses(CHECK, "sync_history_counts_nonnegative", sql, user_id, 0, 0, -1, 0, true, nil)
      refuses(CHECK, "sync_history_counts_nonnegative", sql, user_id, 0, 0, 0, -1, true, nil)
      refuses(CHECK, "sync_history_failure_has_message", sql, user_id, 0, 0, 0, 0, false, nil)
      q(sql, user_id, 0, 0, 0, 0, true, nil)
      q(sql, user_id, 0, 0, 0, 0, false, "no_valid_titles")
      refuses(CHECK, "sync_history_warnings_valid",
        "INSERT INTO sync_history (user_id, success, warnings) VALUES ($1, true, ARRAY['a', NULL])", user_id)
    end)
  end)

  describe("sign-in tables", function()
    local user_id
    before_each(function() user_id = new_user() end)

    it("stores 32-byte session token hashes, once each", function()
      local sql = "INSERT INTO sessions (session_token_hash, user_id, expires)"
        .. " VALUES (decode($1, 'hex'), $2, $3::timestamptz)"
      local hash = rep("ab", 32)
      q(sql, hash, user_id, "2099-01-01T00:00:00Z")
      refuses(UNIQUE, "sessions_session_token_hash_key", sql, hash, user_id, "2099-01-01T00:00:00Z")
      refuses(CHECK, "sessions_session_token_hash_length", sql, rep("ab", 31), user_id, "2099-01-01T00:00:00Z")
      -- The server-side hash of a raw cookie value fits the column as well.
      q([[INSERT INTO sessions (session_token_hash, user_id, expires)
          VALUES (sha256(convert_to($1, 'UTF8')), $2, now() + interval '30 days')]], "cookie-value", user_id)
      assert.same({ n = 1 }, one([[SELECT count(*)::int AS n FROM sessions
        WHERE session_token_hash = sha256(convert_to($1, 'UTF8'))]], "cookie-value"))
    end)

    it("links one account per provider identity and one verification token per value", function()
      local sql = [[INSERT INTO accounts (user_id, type, provider, provider_account_id)
                    VALUES ($1, 'oauth', 'google', $2)]]
      q(sql, user_id, "1234")
      refuses(UNIQUE, "accounts_provider_provider_account_id_key", sql, new_user(), "1234")
      local vt = "INSERT INTO verification_tokens (identifier, token, expires) VALUES ($1, $2, now())"
      q(vt, "ada@example.com", "tok")
      refuses(UNIQUE, "verification_tokens_token_key", vt, "bob@example.com", "tok")
    end)
  end)

  describe("lists and tier lists checks", function()
    local user_id
    before_each(function() user_id = new_user() end)

    it("limits list titles to 1..200 characters and descriptions to 2000", function()
      for _, t in ipairs({ "recommendation_lists", "tier_lists" }) do
        local sql = ("INSERT INTO %s (user_id, title, description) VALUES ($1, $2, $3)"):format(t)
        refuses(CHECK, t .. "_title_length", sql, user_id, "", nil)
        refuses(CHECK, t .. "_title_length", sql, user_id, rep("t", 201), nil)
        refuses(CHECK, t .. "_description_length", sql, user_id, "x", rep("d", 2001))
        q(sql, user_id, "x", nil)
        q(sql, user_id, rep("\u{e9}", 200), rep("\u{e9}", 2000))
      end
    end)

    it("defaults visibility to PRIVATE and knows no other level than the three", function()
      local id = new_list(user_id)
      assert.same({ v = "PRIVATE" }, one("SELECT visibility::text AS v FROM recommendation_lists WHERE id = $1", id))
      refuses(BAD_INPUT, nil, "UPDATE recommendation_lists SET visibility = $2 WHERE id = $1", id, "SECRET")
      q("UPDATE recommendation_lists SET visibility = 'UNLISTED' WHERE id = $1", id)
    end)

    it("takes 1 to 20 distinct, non-blank tier labels of at most 50 characters", function()
      local sql = "INSERT INTO tier_lists (user_id, title, tier_labels) VALUES ($1, 'T', $2)"
      local twenty, twenty_one = {}, {}
      for i = 1, 21 do
        twenty_one[i] = "L" .. i
        if i <= 20 then twenty[i] = "L" .. i end
      end
      for _, bad in ipairs({ {}, { "S", "" }, { "S", "S" }, { "  " }, twenty_one, { rep("x", 51) } }) do
        refuses(CHECK, "tier_lists_tier_labels_valid", sql, user_id, bad)
      end
      refuses(CHECK, "tier_lists_tier_labels_valid",
        "INSERT INTO tier_lists (user_id, title, tier_labels) VALUES ($1, 'T', ARRAY['S', NULL])", user_id)
      for _, good in ipairs({ { "S" }, twenty, { rep("\u{e9}", 50), "Must read" } }) do
        q(sql, user_id, good)
      end
      assert.same({ labels = "{S,A,B,C,D,F}" },
        one("SELECT tier_labels::text AS labels FROM tier_lists WHERE id = $1", new_tier_list(user_id)))
    end)

    it("keeps positions at 1 or more and notes within 2000 characters", function()
      local list_id, tier_id = new_list(user_id), new_tier_list(user_id)
      local li = "INSERT INTO list_items (list_id, user_id, user_library_id, position, note)"
        .. " VALUES ($1, $2, $3, $4, $5)"
      refuses(CHECK, "list_items_position_positive", li, list_id, user_id, new_entry(user_id), 0, nil)
      refuses(CHECK, "list_items_note_length", li, list_id, user_id, new_entry(user_id), 1, rep("n", 2001))
      q(li, list_id, user_id, new_entry(user_id), 1, rep("n", 2000))
      local ta = "INSERT INTO tier_assignments (tier_list_id, user_id, user_library_id, tier, position)"
        .. " VALUES ($1, $2, $3, 'S', $4)"
      refuses(CHECK, "tier_assignments_position_positive", ta, tier_id, user_id, new_entry(user_id), 0)
      q(ta, tier_id, user_id, new_entry(user_id), 1)
    end)

    it("holds an entry once per list and one item per position", function()
      local list_id, entry = new_list(user_id), new_entry(user_id)
      local li = "INSERT INTO list_items (list_id, user_id, user_library_id, position) VALUES ($1, $2, $3, $4)"
      q(li, list_id, user_id, entry, 1)
      refuses(UNIQUE, "list_items_list_id_user_library_id_key", li, list_id, user_id, entry, 2)
      refuses(UNIQUE, "list_items_list_id_position_key", li, list_id, user_id, new_entry(user_id), 1)
      local tier_id = new_tier_list(user_id)
      local ta = "INSERT INTO tier_assignments (tier_list_id, user_id, user_library_id, tier, position)"
        .. " VALUES ($1, $2, $3, 'A', 1)"
      q(ta, tier_id, user_id, entry)
      refuses(UNIQUE, "tier_assignments_tier_list_id_user_library_id_key", ta, tier_id, user_id, entry)
    end)
  end)

  describe("a list holds only titles of its owner library", function()
    local alice, bob, alice_entry, bob_entry
    before_each(function()
      alice, bob = new_user("alice@example.com"), new_user("bob@example.com")
      local shared = new_title()
      alice_entry, bob_entry = new_entry(alice, shared), new_entry(bob, shared)
    end)

    it("refuses another user entry in a recommendation list", function()
      local list_id = new_list(alice)
      local li = "INSERT INTO list_items (list_id, user_id, user_library_id, position) VALUES ($1, $2, $3, 1)"
      refuses(FOREIGN_KEY, "list_items_entry_owner_fkey", li, list_id, alice, bob_entry)
      -- Claiming to be the entry owner does not help: the list is not theirs.
      refuses(FOREIGN_KEY, "list_items_list_fkey", li, list_id, bob, bob_entry)
      -- Leaving user_id out: it is taken from the list, and the entry is still checked.
      refuses(FOREIGN_KEY, "list_items_entry_owner_fkey",
        "INSERT INTO list_items (list_id, user_library_id, position) VALUES ($1, $2, 1)", list_id, bob_entry)
      q(li, list_id, alice, alice_entry)
      assert.same({ n = 1 }, one("SELECT count(*)::int AS n FROM list_items WHERE list_id = $1", list_id))
    end)

    it("refuses another user entry in a tier list", function()
      local tier_id = new_tier_list(alice)
      local ta = "INSERT INTO tier_assignments (tier_list_id, user_id, user_library_id, tier, position)"
        .. " VALUES ($1, $2, $3, 'S', 1)"
      refuses(FOREIGN_KEY, "tier_assignments_entry_owner_fkey", ta, tier_id, alice, bob_entry)
      refuses(FOREIGN_KEY, "tier_assignments_tier_list_fkey", ta, tier_id, bob, bob_entry)
      refuses(FOREIGN_KEY, "tier_assignments_entry_owner_fkey",
        "INSERT INTO tier_assignments (tier_list_id, user_library_id, tier, position) VALUES ($1, $2, 'S', 1)",
        tier_id, bob_entry)
      q("INSERT INTO tier_assignments (tier_list_id, user_library_id, tier, position) VALUES ($1, $2, 'S', 1)",
        tier_id, alice_entry)
      assert.same({ owner = alice },
        one("SELECT user_id::text AS owner FROM tier_assignments WHERE tier_list_id = $1", tier_id))
    end)

    it("refuses moving an item onto another user entry", function()
      local list_id = new_list(alice)
      q("INSERT INTO list_items (list_id, user_library_id, position) VALUES ($1, $2, 1)", list_id, alice_entry)
      refuses(FOREIGN_KEY, "list_items_entry_owner_fkey",
        "UPDATE list_items SET user_library_id = $2 WHERE list_id = $1", list_id, bob_entry)
    end)

    it("keeps a removed entry in its lists, and deletes items with their entry or list", function()
      local list_id = new_list(alice)
      q("INSERT INTO list_items (list_id, user_library_id, position) VALUES ($1, $2, 1)", list_id, alice_entry)
      q("UPDATE user_library SET removed_at = now() WHERE id = $1", alice_entry)
      assert.same({ n = 1 }, one("SELECT count(*)::int AS n FROM list_items WHERE list_id = $1", list_id))
      q("DELETE FROM user_library WHERE id = $1", alice_entry)
      assert.same({ n = 0 }, one("SELECT count(*)::int AS n FROM list_items WHERE list_id = $1", list_id))
    end)

    it("deletes everything a user owns with the user", function()
      local list_id, tier_id = new_list(alice), new_tier_list(alice)
      q("INSERT INTO list_items (list_id, user_library_id, position) VALUES ($1, $2, 1)", list_id, alice_entry)
      q("INSERT INTO tier_assignments (tier_list_id, user_library_id, tier, position) VALUES ($1, $2, 'S', 1)",
        tier_id, alice_entry)
      q("INSERT INTO sessions (session_token_hash, user_id, expires)"
        .. " VALUES (sha256('x'), $1, now() + interval '1 day')", alice)
      q("INSERT INTO sync_tokens (jti, user_id, expires_at)"
        .. " VALUES (gen_random_uuid(), $1, now() + interval '1 hour')", alice)
      q("INSERT INTO sync_history (user_id, success) VALUES ($1, true)", alice)
      q("INSERT INTO accounts (user_id, type, provider, provider_account_id)"
        .. " VALUES ($1, 'oauth', 'google', 'a')", alice)
      q("DELETE FROM users WHERE id = $1", alice)
      assert.same({ n = 0 }, one([[SELECT ((SELECT count(*) FROM user_library WHERE user_id = $1)
        + (SELECT count(*) FROM recommendation_lists WHERE user_id = $1)
        + (SELECT count(*) FROM list_items WHERE user_id = $1)
        + (SELECT count(*) FROM tier_lists WHERE user_id = $1)
        + (SELECT count(*) FROM tier_assignments WHERE user_id = $1)
        + (SELECT count(*) FROM sessions WHERE user_id = $1)
        + (SELECT count(*) FROM sync_tokens WHERE user_id = $1)
        + (SELECT count(*) FROM sync_history WHERE user_id = $1)
        + (SELECT count(*) FROM accounts WHERE user_id = $1))::int AS n]], alice))
      assert.same({ n = 1 }, one("SELECT count(*)::int AS n FROM user_library WHERE id = $1", bob_entry))
    end)
  end)

  describe("tier labels", function()
    local user_id, tier_id, entry
    local ins = "INSERT INTO tier_assignments (tier_list_id, user_library_id, tier, position) VALUES ($1, $2, $3, 1)"
    before_each(function()
      user_id = new_user()
      tier_id = new_tier_list(user_id, { "S", "A", "B" })
      entry = new_entry(user_id)
    end)

    it("refuses an assignment to a tier the list does not have", function()
      refuses(CHECK, "tier_assignments_tier_in_labels", ins, tier_id, entry, "Z")
      refuses(CHECK, "tier_assignments_tier_in_labels", ins, tier_id, entry, "s")
      q(ins, tier_id, entry, "B")
      refuses(CHECK, "tier_assignments_tier_in_labels",
        "UPDATE tier_assignments SET tier = 'F' WHERE tier_list_id = $1", tier_id)
    end)

    it("refuses dropping a label that assignments still use", function()
      q(ins, tier_id, entry, "A")
      refuses(CHECK, "tier_assignments_tier_in_labels",
        "UPDATE tier_lists SET tier_labels = '{S,B}' WHERE id = $1", tier_id)
      q("UPDATE tier_lists SET tier_labels = '{S,A}' WHERE id = $1", tier_id)
    end)

    it("lets one transaction rename a label and move its assignments, in either order", function()
      q(ins, tier_id, entry, "A")
      begin()
      q("UPDATE tier_lists SET tier_labels = '{S,A+,B}' WHERE id = $1", tier_id)
      q("UPDATE tier_assignments SET tier = 'A+' WHERE tier_list_id = $1", tier_id)
      q("COMMIT")
      q("BEGIN")
      q("UPDATE tier_assignments SET tier = 'Top' WHERE tier_list_id = $1", tier_id)
      q("UPDATE tier_lists SET tier_labels = '{Top,B}' WHERE id = $1", tier_id)
      q("COMMIT")
      assert.same({ tier = "Top", labels = "{Top,B}" }, one([[SELECT a.tier, l.tier_labels::text AS labels
        FROM tier_assignments a JOIN tier_lists l ON l.id = a.tier_list_id WHERE l.id = $1]], tier_id))
    end)

    it("refuses at commit a transaction that leaves an assignment without its label", function()
      q(ins, tier_id, entry, "A")
      begin()
      q("UPDATE tier_lists SET tier_labels = '{S,B}' WHERE id = $1", tier_id)
      refuses(CHECK, "tier_assignments_tier_in_labels", "COMMIT")
      assert.same({ labels = "{S,A,B}" },
        one("SELECT tier_labels::text AS labels FROM tier_lists WHERE id = $1", tier_id))
    end)
  end)

  describe("list positions", function()
    local user_id, list_id, items
    before_each(function()
      user_id = new_user()
      list_id = new_list(user_id)
      items = {}
      for pos = 1, 3 do
        items[pos] = one([[INSERT INTO list_items (list_id, user_library_id, position)
                           VALUES ($1, $2, $3) RETURNING id]], list_id, new_entry(user_id), pos).id
      end
    end)

    local function order()
      local ids = {}
      for _, r in ipairs(q("SELECT id FROM list_items WHERE list_id = $1 ORDER BY position", list_id)) do
        ids[#ids + 1] = r.id
      end
      return ids
    end

    it("can be reordered one row at a time inside a transaction", function()
      local set = "UPDATE list_items SET position = $2 WHERE id = $1"
      begin()
      q(set, items[3], 1)                -- two items at position 1 until the next statements
      q(set, items[1], 2)
      q(set, items[2], 3)
      q("COMMIT")
      assert.same({ items[3], items[1], items[2] }, order())
    end)

    it("can be shifted in one statement", function()
      q("UPDATE list_items SET position = position + 1 WHERE list_id = $1", list_id)
      assert.same({ { p = 2 }, { p = 3 }, { p = 4 } },
        list(q("SELECT position AS p FROM list_items WHERE list_id = $1 ORDER BY position", list_id)))
    end)

    it("refuses at commit a transaction that leaves two items at one position", function()
      begin()
      q("UPDATE list_items SET position = 1 WHERE id = $1", items[2])
      refuses(UNIQUE, "list_items_list_id_position_key", "COMMIT")
      assert.same(items, order())
    end)
  end)

  describe("updated_at", function()
    -- One row in every table with updated_at, stamped a day ago, and a statement that
    -- changes it.
    local function fixtures()
      local day_ago = "now() - interval '1 day'"
      local function stamped(sql, ...)
        return one((sql:gsub("DAY_AGO", day_ago)), ...).id
      end
      local user_id = stamped([[INSERT INTO users (email, created_at, updated_at)
        VALUES ('stamped@example.com', DAY_AGO, DAY_AGO) RETURNING id]])
      local title_id = stamped([[INSERT INTO title_catalog (asin, title, created_at, updated_at)
        VALUES ($1, 'T', DAY_AGO, DAY_AGO) RETURNING id]], new_asin())
      return {
        users = { user_id, "UPDATE users SET name = 'Renamed' WHERE id = $1" },
        title_catalog = { title_id, "UPDATE title_catalog SET rating = 4.5 WHERE id = $1" },
        user_library = {
          stamped([[INSERT INTO user_library (user_id, title_id, source, created_at, updated_at)
            VALUES ($1, $2, 'LIBRARY', DAY_AGO, DAY_AGO) RETURNING id]], user_id, title_id),
          "UPDATE user_library SET listening_progress = 42 WHERE id = $1" },
        accounts = {
          stamped([[INSERT INTO accounts (user_id, type, provider, provider_account_id, created_at, updated_at)
            VALUES ($1, 'oauth', 'google', 'sub-1', DAY_AGO, DAY_AGO) RETURNING id]], user_id),
          "UPDATE accounts SET scope = 'openid email' WHERE id = $1" },
        recommendation_lists = {
          stamped([[INSERT INTO recommendation_lists (user_id, title, created_at, updated_at)
            VALUES ($1, 'L', DAY_AGO, DAY_AGO) RETURNING id]], user_id),
          "UPDATE recommendation_lists SET title = 'New' WHERE id = $1" },
        tier_lists = {
          stamped([[INSERT INTO tier_lists (user_id, title, created_at, updated_at)
            VALUES ($1, 'T', DAY_AGO, DAY_AGO) RETURNING id]], user_id),
          "UPDATE tier_lists SET description = 'New' WHERE id = $1" },
      }
    end

    it("has the trigger on every table with the column", function()
      local rows = q([[
        SELECT c.table_name::text AS t,
               EXISTS (SELECT 1 FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
                        WHERE tg.tgrelid = format('%I.%I', c.table_schema, c.table_name)::regclass
                          AND p.proname = 'set_updated_at' AND NOT tg.tgisinternal) AS has_trigger
          FROM information_schema.columns c
         WHERE c.table_schema = 'public' AND c.column_name = 'updated_at'
         ORDER BY 1]])
      local got = {}
      for _, r in ipairs(rows) do got[r.t] = r.has_trigger end
      assert.same({ accounts = true, recommendation_lists = true, tier_lists = true,
                    title_catalog = true, user_library = true, users = true }, got)
    end)

    it("moves on a real change and stays on an update that changes nothing", function()
      for table_name, f in pairs(fixtures()) do
        local id, change = f[1], f[2]
        local probe = ("SELECT updated_at > now() - interval '1 hour' AS fresh, "
          .. "created_at < now() - interval '1 hour' AS created_kept FROM %s WHERE id = $1"):format(table_name)
        assert.same({ fresh = false, created_kept = true }, one(probe, id), table_name)
        q(("UPDATE %s SET id = id WHERE id = $1"):format(table_name), id)
        assert.same({ fresh = false, created_kept = true }, one(probe, id), table_name .. " after a no-op update")
        q(change, id)
        assert.same({ fresh = true, created_kept = true }, one(probe, id), table_name .. " after a change")
      end
    end)
  end)

  describe("search expressions", function()
    -- (title_search: these titles were inserted outside a sync, so none of them is pending)
    local search = [[
      SELECT c.asin FROM title_catalog AS c JOIN title_search AS s ON s.title_id = c.id
       WHERE search_norm($1) <% s.search_text
       ORDER BY word_similarity(search_norm($1), s.search_text) DESC, c.asin]]
    local TEXT_OF = [[SELECT s.search_text FROM title_search_all AS s
                      JOIN title_catalog AS c ON c.id = s.title_id WHERE c.asin = 'B000000001']]

    local function asins(sql, ...)
      local out = {}
      for _, r in ipairs(q(sql, ...)) do out[#out + 1] = r.asin end
      return out
    end

    before_each(function()
      q([[INSERT INTO title_catalog (asin, title, authors, narrators, series_name, categories) VALUES
          ('B000000001', 'Die Physiker', ARRAY['Friedrich Dürrenmatt'], ARRAY['Hans Korte'], NULL, ARRAY['Drama']),
          ('B000000002', 'The Way of Kings', ARRAY['Brandon Sanderson'], ARRAY['Michael Kramer', 'Kate Reading'],
           'The Stormlight Archive', ARRAY['Fantasy', 'Epic']),
          ('B000000003', 'Der Richter und sein Henker', ARRAY['Friedrich Dürrenmatt'], ARRAY['Gert Westphal'], NULL,
           ARRAY['Krimi']),
          ('B000000004', 'Project Hail Mary', ARRAY['Andy Weir'], ARRAY['Ray Porter'], NULL,
           ARRAY['Science Fiction & Fantasy'])]])
    end)

    it("finds Dürrenmatt when searching durrenmatt, in any case", function()
      assert.same({ q = "durrenmatt" }, one("SELECT search_norm($1) AS q", "DÜRRENMATT"))
      assert.same({ "B000000001", "B000000003" }, asins(search, "durrenmatt"))
      assert.same({ "B000000001", "B000000003" }, asins(search, "DÜRRENMATT"))
    end)

    it("finds Sanderson when searching sandersen, and narrators and series too", function()
      assert.same({ "B000000002" }, asins(search, "sandersen"))
      assert.same({ "B000000002" }, asins(search, "Kramer"))
      assert.same({ "B000000002" }, asins(search, "stormlight"))
      assert.same({}, asins(search, "zzzzqqq"))
    end)

    it("keeps one normalised search text per title, recomputed on change", function()
      assert.same({ { search_text = "die physiker friedrich durrenmatt hans korte" } }, list(q(TEXT_OF)))
      q("UPDATE title_catalog SET subtitle = 'Eine Komödie' WHERE asin = 'B000000001'")
      assert.same({ { search_text = "die physiker eine komodie friedrich durrenmatt hans korte" } },
        list(q(TEXT_OF)))
    end)

    it("matches a filter value to a whole array element, ignoring case", function()
      local filter = "SELECT asin FROM title_catalog WHERE lower_array(%s) @> ARRAY[lower($1)] ORDER BY asin"
      assert.same({ "B000000001", "B000000003" }, asins(filter:format("authors"), "friedrich dürrenmatt"))
      assert.same({}, asins(filter:format("authors"), "Dürrenmatt"))
      assert.same({ "B000000002" }, asins(filter:format("narrators"), "KATE READING"))
      assert.same({ "B000000004" }, asins(filter:format("categories"), "science fiction & fantasy"))
    end)

    it("answers searches through the trigram index", function()
      q("SET enable_seqscan = off")
      local ok, plan = pcall(q, "EXPLAIN " .. search, "durrenmatt")
      q("RESET enable_seqscan")
      assert(ok, plan)
      local lines = {}
      for _, r in ipairs(plan) do lines[#lines + 1] = r["QUERY PLAN"] end
      local text = table.concat(lines, "\n")
      assert(text:find("title_search_text_trgm_idx", 1, true), text)
    end)

    it("declares the search functions IMMUTABLE, as indexes require", function()
      assert.same({ { proname = "f_unaccent", provolatile = "i" },
                    { proname = "lower_array", provolatile = "i" },
                    { proname = "search_norm", provolatile = "i" },
                    { proname = "title_search_text", provolatile = "i" } },
        list(q([[SELECT proname::text, provolatile::text FROM pg_proc
             WHERE proname IN ('f_unaccent', 'search_norm', 'title_search_text', 'lower_array')
             ORDER BY proname]])))
    end)
  end)
end)
