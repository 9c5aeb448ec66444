-- 005: the catalog takes the ids real exports carry: a 10-character ASIN (or ISBN-10) and
-- a 13-digit one (ISBN-13 / EAN), the same rule as lua/types.lua (issue 9).
ALTER TABLE title_catalog DROP CONSTRAINT title_catalog_asin_format;
ALTER TABLE title_catalog ADD CONSTRAINT title_catalog_asin_format
    CHECK (asin ~ '^[A-Z0-9]{10}$' OR asin ~ '^[0-9]{13}$');
