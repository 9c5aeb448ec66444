-- The series position as the source wrote it ("1-3", "Book 2", "2, Dramatized Adaptation"):
-- series_position holds the number read from it, this keeps the text (issue 14).
ALTER TABLE title_catalog ADD COLUMN series_sequence text
    CONSTRAINT title_catalog_series_sequence_length CHECK (char_length(series_sequence) <= 100);
