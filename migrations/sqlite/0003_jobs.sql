-- Runs of scheduled and manual jobs. A scheduled run is identified by its job and the
-- schedule tick it serves: several instances firing the same tick insert one row only.
CREATE TABLE job_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    tick TEXT,
    holder TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX job_runs_tick ON job_runs (job, tick);
CREATE INDEX job_runs_started ON job_runs (started_at);
