-- Leases: short rows that give one holder a named thing across nodes (a
-- POP3 maildrop today; queue items and periodic jobs later). Taken and
-- refreshed in short transactions, never held as a session-long lock.
CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires BIGINT NOT NULL
);

-- Additive: binaries that know version 1 still work with this schema.
INSERT INTO schema_info (version, min_compatible) VALUES (2, 1);
