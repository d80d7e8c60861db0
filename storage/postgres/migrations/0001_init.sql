-- Tidings schema, version 1 (PostgreSQL).
-- Booleans are SMALLINT 0/1 and times are int64 microseconds so that one SQL
-- text (storage/sqlstore) serves both drivers.

CREATE TABLE schema_info (
    version        BIGINT NOT NULL,
    min_compatible BIGINT NOT NULL
);

-- Store-wide counters (uidvalidity).
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('uidvalidity', 0);

CREATE TABLE domains (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    display    TEXT NOT NULL,
    kind       SMALLINT NOT NULL,
    relay_host TEXT NOT NULL DEFAULT '',
    catch_all  TEXT NOT NULL DEFAULT '',
    created    BIGINT NOT NULL
);

CREATE TABLE accounts (
    id             BIGSERIAL PRIMARY KEY,
    domain_id      BIGINT NOT NULL REFERENCES domains (id),
    address        TEXT NOT NULL,
    key            TEXT NOT NULL UNIQUE,
    kind           SMALLINT NOT NULL,
    display_name   TEXT NOT NULL DEFAULT '',
    password_hash  TEXT NOT NULL DEFAULT '',
    cred_gen       BIGINT NOT NULL DEFAULT 1,
    enabled        SMALLINT NOT NULL DEFAULT 1,
    quota_bytes    BIGINT NOT NULL DEFAULT 0,
    quota_messages BIGINT NOT NULL DEFAULT 0,
    policy         TEXT NOT NULL DEFAULT '{}',
    created        BIGINT NOT NULL,
    account_modseq BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX accounts_domain ON accounts (domain_id);

-- The hot quota row, narrow so that appends lock little. quota_* mirror the
-- accounts row so the quota check is one conditional UPDATE.
CREATE TABLE account_usage (
    account_id     BIGINT PRIMARY KEY REFERENCES accounts (id),
    used_bytes     BIGINT NOT NULL DEFAULT 0,
    used_messages  BIGINT NOT NULL DEFAULT 0,
    quota_bytes    BIGINT NOT NULL DEFAULT 0,
    quota_messages BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE aliases (
    id        BIGSERIAL PRIMARY KEY,
    domain_id BIGINT NOT NULL REFERENCES domains (id),
    address   TEXT NOT NULL,
    key       TEXT NOT NULL UNIQUE,
    targets   TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX aliases_domain ON aliases (domain_id);

CREATE TABLE alias_senders (
    alias_id   BIGINT NOT NULL REFERENCES aliases (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL,
    PRIMARY KEY (alias_id, account_id)
);

CREATE TABLE mailgroups (
    id        BIGSERIAL PRIMARY KEY,
    domain_id BIGINT NOT NULL REFERENCES domains (id),
    address   TEXT NOT NULL,
    key       TEXT NOT NULL UNIQUE
);
CREATE INDEX mailgroups_domain ON mailgroups (domain_id);

CREATE TABLE group_members (
    group_id BIGINT NOT NULL REFERENCES mailgroups (id) ON DELETE CASCADE,
    seq      BIGINT NOT NULL,
    member   TEXT NOT NULL,
    PRIMARY KEY (group_id, seq)
);

-- RFC 4314 rights. Owners hold all rights implicitly; rows are grants to
-- others (shared mailboxes), present from the first migration.
CREATE TABLE acl (
    object_kind TEXT NOT NULL,
    object_id   BIGINT NOT NULL,
    grantee     BIGINT NOT NULL,
    rights      TEXT NOT NULL,
    PRIMARY KEY (object_kind, object_id, grantee)
);

CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at  BIGINT NOT NULL
);
CREATE INDEX login_failures_key_at ON login_failures (key, at);

CREATE TABLE mailboxes (
    id          BIGSERIAL PRIMARY KEY,
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    name        TEXT NOT NULL,
    name_key    TEXT NOT NULL,
    special_use TEXT NOT NULL DEFAULT '',
    subscribed  SMALLINT NOT NULL DEFAULT 0,
    uidvalidity BIGINT NOT NULL,
    object_id   TEXT NOT NULL,
    created     BIGINT NOT NULL,
    modseq      BIGINT NOT NULL,
    UNIQUE (account_id, name_key)
);

-- Account-level tombstones of deleted mailboxes (AccountChangesSince).
CREATE TABLE mailbox_tombstones (
    account_id BIGINT NOT NULL,
    mailbox_id BIGINT NOT NULL,
    modseq     BIGINT NOT NULL,
    PRIMARY KEY (account_id, mailbox_id)
);

-- The hot counter row of a mailbox, updated last in each transaction.
CREATE TABLE mailbox_counters (
    mailbox_id      BIGINT PRIMARY KEY REFERENCES mailboxes (id),
    account_id      BIGINT NOT NULL,
    uid_next        BIGINT NOT NULL DEFAULT 1,
    highest_modseq  BIGINT NOT NULL DEFAULT 1,
    messages        BIGINT NOT NULL DEFAULT 0,
    unseen          BIGINT NOT NULL DEFAULT 0,
    deleted         BIGINT NOT NULL DEFAULT 0,
    size            BIGINT NOT NULL DEFAULT 0,
    recent_uid      BIGINT NOT NULL DEFAULT 1,
    tombstone_floor BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX mailbox_counters_account ON mailbox_counters (account_id);

CREATE TABLE blobs (
    hash       TEXT PRIMARY KEY,
    size       BIGINT NOT NULL,
    refcount   BIGINT NOT NULL DEFAULT 0,
    zero_since BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX blobs_zero ON blobs (zero_since) WHERE refcount <= 0;

-- In-database BlobStore: 256 KiB chunks; seq -1 is the completion marker
-- holding the size.
CREATE TABLE blob_chunks (
    hash TEXT NOT NULL,
    seq  BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (hash, seq)
);

CREATE TABLE messages (
    mailbox_id       BIGINT NOT NULL REFERENCES mailboxes (id),
    uid              BIGINT NOT NULL,
    account_id       BIGINT NOT NULL,
    modseq           BIGINT NOT NULL,
    seen             SMALLINT NOT NULL DEFAULT 0,
    answered         SMALLINT NOT NULL DEFAULT 0,
    flagged          SMALLINT NOT NULL DEFAULT 0,
    deleted          SMALLINT NOT NULL DEFAULT 0,
    draft            SMALLINT NOT NULL DEFAULT 0,
    internal_date    BIGINT NOT NULL,
    internal_zone    BIGINT NOT NULL DEFAULT 0,
    blob_hash        TEXT NOT NULL,
    blob_size        BIGINT NOT NULL,
    prefix           BYTEA NOT NULL,
    prefix_len       BIGINT NOT NULL,
    size             BIGINT NOT NULL,
    email_id         TEXT NOT NULL,
    thread_id        TEXT NOT NULL DEFAULT '',
    import_uidl      TEXT NOT NULL DEFAULT '',
    metadata         TEXT NOT NULL DEFAULT '{}',
    metadata_version BIGINT NOT NULL DEFAULT 0,
    sent_date        BIGINT NOT NULL DEFAULT 0,
    text_indexed     SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
CREATE INDEX messages_unseen ON messages (mailbox_id, uid) WHERE seen = 0;
CREATE INDEX messages_deleted ON messages (mailbox_id, uid) WHERE deleted = 1;
CREATE INDEX messages_blob ON messages (blob_hash);
CREATE INDEX messages_unindexed ON messages (mailbox_id, uid) WHERE text_indexed = 0;

CREATE TABLE keywords (
    id         BIGSERIAL PRIMARY KEY,
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id),
    key        TEXT NOT NULL,
    display    TEXT NOT NULL,
    UNIQUE (mailbox_id, key)
);

CREATE TABLE message_keywords (
    mailbox_id BIGINT NOT NULL,
    uid        BIGINT NOT NULL,
    keyword_id BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, uid, keyword_id)
);

-- Per-user flag overlay for shared mailboxes (unused until sharing lands).
CREATE TABLE user_flags (
    principal  BIGINT NOT NULL,
    mailbox_id BIGINT NOT NULL,
    uid        BIGINT NOT NULL,
    seen       SMALLINT NOT NULL DEFAULT 0,
    keywords   TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (principal, mailbox_id, uid)
);

CREATE TABLE tombstones (
    mailbox_id BIGINT NOT NULL,
    uid        BIGINT NOT NULL,
    modseq     BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX tombstones_modseq ON tombstones (mailbox_id, modseq);
CREATE INDEX tombstones_at ON tombstones (at);

-- Decoded, folded search text, written by the indexer after commit. The
-- trigram index is created outside the migration when pg_trgm is available.
CREATE TABLE message_text (
    account_id BIGINT NOT NULL,
    mailbox_id BIGINT NOT NULL,
    uid        BIGINT NOT NULL,
    text       TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);

-- Top-level header fields of each message, name lower-case and value
-- unfolded, RFC 2047-decoded and folded, for SEARCH HEADER; written by the
-- indexer with the text.
CREATE TABLE message_headers (
    mailbox_id BIGINT NOT NULL,
    uid        BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid, seq)
);

INSERT INTO schema_info (version, min_compatible) VALUES (1, 1);
