-- name: applied_migrations
-- Readiness probe: the ids of the migrations yoyo recorded (fails with undefined_table before the first one).
SELECT migration_id FROM _yoyo_migration;
