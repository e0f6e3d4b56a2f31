BEGIN TRANSACTION;
CREATE TABLE audit_records (
    seq            INTEGER PRIMARY KEY,  -- 1, 2, 3 ... assigned under the write lock
    id             TEXT NOT NULL UNIQUE,
    time           TEXT NOT NULL,
    event          TEXT NOT NULL,
    action         TEXT NOT NULL,
    target         TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    actor_name     TEXT NOT NULL,
    trigger        TEXT NOT NULL,
    channel_id     TEXT NOT NULL,
    post_id        TEXT NOT NULL,
    parameters     TEXT NOT NULL,        -- canonical JSON object
    outcome        TEXT NOT NULL,
    duration_ms    INTEGER,
    correlation_id TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
INSERT INTO "audit_records" VALUES(1,'A-000001','2026-12-02T13:59:08.916Z','requested','deploy','prod','u1','alice','chat','','','{"version":"1.0","ü":["é",1]}','',NULL,'C-1','0000000000000000000000000000000000000000000000000000000000000000','23b243b0cf70f9b2655c0fa5d23d6b6928a092d30fb254c55a6c548b4f6724b2');
INSERT INTO "audit_records" VALUES(2,'A-000002','2026-12-02T13:59:08.922Z','started','deploy','prod','u1','alice','chat','','','{"version":"1.0"}','',NULL,'C-1','23b243b0cf70f9b2655c0fa5d23d6b6928a092d30fb254c55a6c548b4f6724b2','6136e57d03571a930742cf146f553be1ccfe267822e9e5f089969998890dfa2d');
INSERT INTO "audit_records" VALUES(3,'A-000003','2026-12-02T13:59:08.928Z','succeeded','deploy','prod','','','chat','','','{}','ok',1200,'C-1','6136e57d03571a930742cf146f553be1ccfe267822e9e5f089969998890dfa2d','b489071a820f04c53e1b16575d55552bec98c6dcfb1d3dc879ff9edda22df54f');
CREATE INDEX audit_records_time ON audit_records (time);
CREATE INDEX audit_records_correlation ON audit_records (correlation_id, seq);
CREATE INDEX audit_records_started ON audit_records (seq)
    WHERE event = 'started';
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only: UPDATE refused');
END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only: DELETE refused');
END;
COMMIT;
