-- The name trigram index (FTS5) gets a new segment from every write that touches a
-- backup's name: every backup created, renamed or deleted. Every `name~` query pays a
-- fixed cost per segment and per trigram (about 25 us on this project's reference
-- machine), and FTS5's default lets 16 segments pile up before it merges them all,
-- the large one included (tens of ms on a large catalog, inside some user's write).
-- Merging once 4 segments share a level keeps the count at 2 to 4 and leaves the
-- large segment alone; the option is stored in the index's own config table.
INSERT INTO backups_name_fts (backups_name_fts, rank) VALUES ('crisismerge', 4);
