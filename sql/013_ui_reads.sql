-- The web UI's reads (issue 11, bench/bench_ui.py): the runs list sums each shown run's cost
-- (without this, every run row scanned all of cost_jobs: minutes at 1,000,000 jobs).
CREATE INDEX cost_jobs_run ON cost_jobs (run_id) INCLUDE (bytes_billed);
