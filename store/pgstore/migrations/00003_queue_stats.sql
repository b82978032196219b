-- Postback's PostgreSQL schema, version 3: each destination's queue figures
-- (the gauges every replica exports), counted by one replica at a time and
-- read by the others while they are fresh. Counting a backlog reads every
-- queued delivery's row (160 ms for 111 000 queued), and every replica
-- used to count every destination every 5 seconds.

-- +goose Up
CREATE TABLE queue_stats (
    destination    text        PRIMARY KEY,
    depth          bigint      NOT NULL,
    waiting        bigint      NOT NULL,
    oldest_due_ms  bigint,
    oldest_created timestamptz,
    counted_at     timestamptz NOT NULL
);

-- +goose Down
DROP TABLE queue_stats;
