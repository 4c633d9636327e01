-- Traits learned from identify calls (Segment protocol), so later events from the same user can
-- carry them. Keys are SHA-256 of "user:<userId>" / "anon:<anonymousId>"; the fields are relay's
-- canonical user fields, already normalized and hashed. Purged after identity_retention.
CREATE TABLE identities (
    key_hash        BLOB    PRIMARY KEY,
    user_fields     BLOB    NOT NULL,
    updated_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX identities_updated ON identities (updated_at_ms);
