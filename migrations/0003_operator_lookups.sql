-- Operator lookups (relay status, relay events show, relay dead ..., the admin API) without
-- scanning tables that hold millions of rows.

-- "What happened to event X?": an operator knows the id, not the name, and the dedup key is a
-- hash of both. Rather than a second random-key index on every insert (the cost the hashed dedup
-- key was chosen to avoid), relay keeps the few distinct event names it has seen: a lookup tries
-- the dedup key of each.
CREATE TABLE event_names (name TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO event_names (name) SELECT DISTINCT event_name FROM events;

-- Finished deliveries by state, destination and when they finished: per-destination counts of
-- the last hour and day read only the index entries of that window, and dead letters are found
-- without touching delivered rows. Partial, so ingest (which inserts 'pending' rows) never
-- writes it: each delivery enters it once, when it reaches its final state. Queries repeat the
-- IN (...) term verbatim, which is how SQLite knows it may use a partial index.
CREATE INDEX deliveries_finished ON deliveries (state, destination, updated_at_ms)
    WHERE state IN ('delivered', 'dead', 'expired');

-- Failed attempts, newest first (last error per destination, recent failures on /admin). Only
-- failures are indexed, so a healthy relay pays nothing for it.
CREATE INDEX attempts_failed ON attempts (started_at_ms) WHERE outcome <> 'delivered';
