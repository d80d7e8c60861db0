-- The durable outbound queue (DESIGN.md §Mail flow, §Scale-out): one row
-- per queued message holding one blob reference (counted in blobs.refcount
-- like a mailbox entry), one row per recipient with its RFC 3461 DSN
-- parameters. Claimed by lease columns in a short transaction; delivery
-- runs outside any transaction.
CREATE TABLE queue_messages (
    id           TEXT PRIMARY KEY,
    kind         INTEGER NOT NULL,
    sender       TEXT NOT NULL,
    destination  TEXT NOT NULL,
    envid        TEXT NOT NULL DEFAULT '',
    ret          TEXT NOT NULL DEFAULT '',
    smtputf8     INTEGER NOT NULL DEFAULT 0,
    eightbit     INTEGER NOT NULL DEFAULT 0,
    prefix       BLOB NOT NULL,
    blob_hash    TEXT NOT NULL,
    blob_size    INTEGER NOT NULL,
    created      INTEGER NOT NULL,
    next_attempt INTEGER NOT NULL,
    expires      INTEGER NOT NULL,
    lease_holder TEXT,
    lease_until  INTEGER
);
CREATE INDEX queue_messages_next ON queue_messages (next_attempt);
CREATE INDEX queue_messages_blob ON queue_messages (blob_hash);

CREATE TABLE queue_recipients (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id     TEXT NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
    address      TEXT NOT NULL,
    orcpt        TEXT NOT NULL DEFAULT '',
    notify       TEXT NOT NULL DEFAULT '',
    status       INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_reply   TEXT NOT NULL DEFAULT '',
    last_attempt INTEGER NOT NULL DEFAULT 0,
    owner        INTEGER NOT NULL DEFAULT 0,
    mailbox_id   INTEGER NOT NULL DEFAULT 0,
    prefix       BLOB NOT NULL,
    dsn_sent     INTEGER NOT NULL DEFAULT 0,
    delay_warned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queue_recipients_queue ON queue_recipients (queue_id);

-- Keys shared by every node (DESIGN.md §Configuration).
CREATE TABLE dkim_keys (
    domain      TEXT NOT NULL,
    selector    TEXT NOT NULL,
    algorithm   TEXT NOT NULL,
    private_pem BLOB NOT NULL,
    created     INTEGER NOT NULL,
    PRIMARY KEY (domain, selector)
);

CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

-- Sliding-window event counters (submission limits).
CREATE TABLE events (
    key TEXT NOT NULL,
    at  INTEGER NOT NULL,
    n   INTEGER NOT NULL
);
CREATE INDEX events_key_at ON events (key, at);

-- Additive: binaries that know version 1 still work with this schema.
INSERT INTO schema_info (version, min_compatible) VALUES (3, 1);
