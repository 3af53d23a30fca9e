-- The index on actual_lrps.state goes: the BBS reads instances by state
-- from memory (mirror.rs), never through it, while every state change
-- rewrote two of its entries (three changes per instance re-placed after
-- its cell is lost). Counts by state for tools and the scheduler benchmark
-- are answered from actual_lrps_by_cell (cell_id, state): UNCLAIMED rows
-- have cell_id '', and a count of one state is a scan of that index alone.
DROP INDEX actual_lrps_by_state;
