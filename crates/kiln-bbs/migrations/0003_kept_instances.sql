-- Suspect and evacuating instances: RUNNING instances kept routable beside
-- their record while a replacement is placed (the record holds the
-- replacement). They were held only in memory, so a BBS restart in that
-- window dropped their routes until the replacements ran. One row per kept
-- instance, written in the transaction that sends its record back to the
-- auction; `record` is the ActualLrp as the BBS lists it.
CREATE TABLE kept_actual_lrps (
    instance_guid  TEXT PRIMARY KEY NOT NULL,
    process_guid   TEXT NOT NULL,
    instance_index INTEGER NOT NULL,
    presence       TEXT NOT NULL,
    cell_id        TEXT NOT NULL,
    record         TEXT NOT NULL
);
CREATE INDEX kept_actual_lrps_by_slot ON kept_actual_lrps (process_guid, instance_index);

-- Cells being evacuated: nothing new is placed on them.
CREATE TABLE evacuating_cells (
    cell_id TEXT PRIMARY KEY NOT NULL
);
