-- Feed content is stored as the feed gave it and sanitised when served
-- (see serve). Relative URLs in it resolve against this base when it is not
-- the entry's link. Rows stored before hold sanitised, absolute HTML, which
-- sanitising again leaves as it is.
ALTER TABLE entry ADD COLUMN content_base TEXT;
