-- What the BBS reads at scale, made indexable: the auction's UNCLAIMED
-- instances and unplaced tasks (by state), a cell's work (by cell and
-- state), and a DesiredLrp's modification tag, which tells the decoded
-- DesiredLrp cache whether its copy is current.
ALTER TABLE desired_lrps ADD COLUMN modification_tag INTEGER NOT NULL DEFAULT 0;
DROP INDEX actual_lrps_by_cell;
CREATE INDEX actual_lrps_by_cell ON actual_lrps (cell_id, state);
CREATE INDEX actual_lrps_by_state ON actual_lrps (state);
CREATE INDEX actual_lrps_by_domain ON actual_lrps (domain);
CREATE INDEX tasks_by_state ON tasks (state);
