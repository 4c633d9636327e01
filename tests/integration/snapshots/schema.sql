-- user_version 5
CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    delivery_id     INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    http_status     INTEGER,
    outcome         TEXT    NOT NULL
        CHECK (outcome IN ('delivered', 'retry', 'dead', 'expired')),
    -- the platform's message, redacted of personal data
    detail          TEXT
, trace_id TEXT);
CREATE TABLE deliveries (
    id                  INTEGER PRIMARY KEY,
    event_rowid         INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    destination         TEXT    NOT NULL,
    state               TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'leased', 'delivered', 'dead', 'expired')),
    -- attempts are counted when a row is claimed, so a crash mid-send still counts
    attempts            INTEGER NOT NULL DEFAULT 0,
    -- for 'pending': when the row is next due; for 'leased': when the lease expires. Both make
    -- the row claimable once passed, so an expired lease needs no separate recovery pass.
    next_attempt_at_ms  INTEGER NOT NULL,
    lease_token         INTEGER,
    -- platform window: past this the delivery is expired, never sent
    deadline_ms         INTEGER NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    last_error          TEXT,
    CHECK ((state = 'leased') = (lease_token IS NOT NULL))
);
CREATE TABLE event_names (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    -- 63-bit hash of (event_name, event_id). A small integer key keeps the unique index compact
    -- (about 4x smaller than a text index), which is what keeps inserts fast with millions of
    -- rows stored. A true hash collision is resolved by probing key+1 (see store.py).
    dedup_key       INTEGER NOT NULL,
    event_name      TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    event_time_ms   INTEGER NOT NULL,
    -- which time rule set event_time_ms: server | corrected | client | clamped_future | ...
    time_rule       TEXT    NOT NULL,
    -- hash of the fields that must agree between copies (value, currency): a duplicate whose
    -- fingerprint differs is a conflict.
    fingerprint     INTEGER NOT NULL,
    -- canonical event as JSON (identifiers already hashed)
    payload         BLOB    NOT NULL
);
CREATE TABLE identities (
    key_hash        BLOB    PRIMARY KEY,
    user_fields     BLOB    NOT NULL,
    updated_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX attempts_delivery ON attempts (delivery_id);
CREATE INDEX attempts_failed ON attempts (started_at_ms) WHERE outcome <> 'delivered';
CREATE INDEX attempts_started ON attempts (started_at_ms);
CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at_ms)
    WHERE state IN ('pending', 'leased');
CREATE INDEX deliveries_event ON deliveries (event_rowid);
CREATE INDEX deliveries_finished ON deliveries (state, destination, updated_at_ms)
    WHERE state IN ('delivered', 'dead', 'expired');
CREATE UNIQUE INDEX events_dedup_key ON events (dedup_key);
CREATE INDEX events_received_at ON events (received_at_ms);
CREATE INDEX identities_updated ON identities (updated_at_ms);
