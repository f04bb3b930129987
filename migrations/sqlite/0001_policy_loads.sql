-- Every policy set the engine has loaded: which exact files (by hash) were in force when.
CREATE TABLE policy_loads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    policy_hash TEXT NOT NULL,
    file_count BIGINT NOT NULL,
    loaded_by TEXT NOT NULL,
    loaded_at TEXT NOT NULL
);
CREATE INDEX policy_loads_loaded_at ON policy_loads (loaded_at);
