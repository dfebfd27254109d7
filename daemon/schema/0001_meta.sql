-- Key/value facts about this installation (first start, daemon version that last ran).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
