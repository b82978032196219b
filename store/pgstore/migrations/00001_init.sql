-- Postback's PostgreSQL schema, version 1. Records are stored as the same
-- JSON documents the BoltDB store keeps (doc, bytea: one encoding, never
-- re-encoded); the fields that queries filter or sort on are columns.

-- +goose Up
CREATE TABLE inbox (
    source      text        NOT NULL,
    key         text        NOT NULL,
    received_at timestamptz NOT NULL,
    status      text        NOT NULL,
    doc         bytea       NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX inbox_received ON inbox (received_at);
CREATE INDEX inbox_enriching ON inbox (source, received_at) WHERE status = 'enriching';

-- Other ids of one notification (Apple's notificationUUID and
-- transaction id, Shopify's webhook id and resource): a retry under
-- another id is still the same notification.
CREATE TABLE inbox_alt (
    source  text NOT NULL,
    alt_key text NOT NULL,
    key     text NOT NULL,
    PRIMARY KEY (source, alt_key),
    FOREIGN KEY (source, key) REFERENCES inbox (source, key) ON DELETE CASCADE
);
CREATE INDEX inbox_alt_key ON inbox_alt (source, key);

CREATE TABLE events (
    id              text        PRIMARY KEY,
    seq             bigserial   NOT NULL,
    received_at     timestamptz NOT NULL,
    source          text        NOT NULL,
    type            text        NOT NULL,
    app_id          text        NOT NULL,
    environment     text        NOT NULL,
    app_user_id     text,
    subscription_id text,
    source_event_id text        NOT NULL,
    doc             bytea       NOT NULL
);
CREATE INDEX events_received ON events (received_at, id);
CREATE INDEX events_user ON events (app_user_id) WHERE app_user_id IS NOT NULL;

CREATE TABLE states (
    key         text   PRIMARY KEY,
    version     bigint NOT NULL DEFAULT 1,
    app_user_id text,
    doc         bytea  NOT NULL
);
CREATE INDEX states_user ON states (app_user_id) WHERE app_user_id IS NOT NULL;

-- One row per (event, destination). next_at_ms is the due time while the
-- delivery is unfinished and NULL once it is final; leased_until is the
-- claim of the replica sending it.
CREATE TABLE deliveries (
    key          text        PRIMARY KEY,
    event_id     text        NOT NULL,
    destination  text        NOT NULL,
    state        text        NOT NULL,
    next_at_ms   bigint,
    leased_until timestamptz,
    lease_owner  text,
    order_key    text,
    order_at_ms  bigint,
    app_user_id  text,
    created_at   timestamptz NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    doc          bytea       NOT NULL
);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_due ON deliveries (destination, next_at_ms) WHERE next_at_ms IS NOT NULL;
CREATE INDEX deliveries_leased ON deliveries (destination, leased_until) WHERE leased_until IS NOT NULL;
CREATE INDEX deliveries_order ON deliveries (destination, order_key, order_at_ms, key)
    WHERE order_key IS NOT NULL AND next_at_ms IS NOT NULL;
CREATE INDEX deliveries_waiting ON deliveries (app_user_id) WHERE state = 'waiting';
CREATE INDEX deliveries_dead ON deliveries (destination) WHERE state = 'dead';

CREATE TABLE attempts (
    delivery_key text    NOT NULL,
    n            integer NOT NULL,
    doc          bytea   NOT NULL,
    PRIMARY KEY (delivery_key, n)
);

CREATE TABLE users (
    app_user_id text  PRIMARY KEY,
    doc         bytea NOT NULL
);

CREATE TABLE erasures (
    inbox_source text        NOT NULL,
    inbox_key    text        NOT NULL,
    queued_at    timestamptz NOT NULL,
    doc          bytea       NOT NULL,
    PRIMARY KEY (inbox_source, inbox_key)
);

CREATE TABLE fwd_memory (
    destination text   NOT NULL,
    key         text   NOT NULL,
    at_ms       bigint NOT NULL,
    PRIMARY KEY (destination, key)
);

-- Cluster-wide delivery control: one token bucket and one health row per
-- destination, read and written by every replica.
CREATE TABLE rate_buckets (
    destination text             PRIMARY KEY,
    tokens      double precision NOT NULL,
    at          timestamptz      NOT NULL
);

CREATE TABLE destination_health (
    destination text        PRIMARY KEY,
    hold_until  timestamptz,
    circuit     text        NOT NULL DEFAULT 'closed',
    cooldown_ms bigint      NOT NULL DEFAULT 0,
    paused      boolean     NOT NULL DEFAULT false,
    paused_why  text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- +goose Down
DROP TABLE meta, destination_health, rate_buckets, fwd_memory, erasures, users, attempts,
    deliveries, states, events, inbox_alt, inbox;
