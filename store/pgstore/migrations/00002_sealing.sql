-- Postback's PostgreSQL schema, version 2: personal fields are sealed with
-- per-subject data keys (see package store/vault). The keys live in
-- data_keys, wrapped with the key-encryption key (storage.encryption_key,
-- else a random one kept in the installation row); an erasure deletes a
-- subject's keys, which makes every copy of its personal fields (live rows,
-- dead tuples, WAL, backups, replicas) unreadable. App user ids are never
-- stored raw: the user_key columns hold keyed hashes (the installation
-- secret's), as do forwarder memory keys.

-- +goose Up
CREATE TABLE data_keys (
    kid     bytea PRIMARY KEY,
    wrapped bytea NOT NULL
);

-- One row: the installation secret of the keyed hashes (wrapped with the
-- key-encryption key, the same for every replica) and, when
-- storage.encryption_key is not set, that key itself.
CREATE TABLE installation (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    secret     bytea       NOT NULL,
    kek        bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE events RENAME COLUMN app_user_id TO user_key;
ALTER INDEX events_user RENAME TO events_user_key;
-- What the deliveries log searches besides the indexed columns: the
-- transaction id (clear) and the keyed hash of the purchase token (sealed
-- in the document).
ALTER TABLE events ADD COLUMN transaction_id text, ADD COLUMN token_key text;
ALTER TABLE states RENAME COLUMN app_user_id TO user_key;
ALTER INDEX states_user RENAME TO states_user_key;
ALTER TABLE deliveries RENAME COLUMN app_user_id TO user_key;
ALTER TABLE users RENAME COLUMN app_user_id TO user_key;

-- A database that already holds records from schema 1 (plain documents,
-- raw app user ids) is sealed at the next start (pgstore upgrade).
INSERT INTO meta (name, value)
SELECT 'seal_upgrade', 'pending'
WHERE EXISTS (SELECT 1 FROM inbox) OR EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM states)
   OR EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM deliveries) OR EXISTS (SELECT 1 FROM erasures)
   OR EXISTS (SELECT 1 FROM fwd_memory)
ON CONFLICT (name) DO NOTHING;

-- +goose Down
DELETE FROM meta WHERE name LIKE 'seal_upgrade%';
ALTER TABLE users RENAME COLUMN user_key TO app_user_id;
ALTER TABLE deliveries RENAME COLUMN user_key TO app_user_id;
ALTER INDEX states_user_key RENAME TO states_user;
ALTER TABLE states RENAME COLUMN user_key TO app_user_id;
ALTER TABLE events DROP COLUMN token_key, DROP COLUMN transaction_id;
ALTER INDEX events_user_key RENAME TO events_user;
ALTER TABLE events RENAME COLUMN user_key TO app_user_id;
DROP TABLE installation, data_keys;
