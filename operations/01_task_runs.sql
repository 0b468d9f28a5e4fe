-- What the worker's scheduled tasks did: one row per run, success or failure. /metrics reads it (the worker
-- may run in another process than the API), and so can an operator: "when did the archive last succeed?".
create table if not exists audit.task_runs (
  id          bigint      generated always as identity primary key,
  task        text        not null,
  started_at  timestamptz not null,
  finished_at timestamptz not null default clock_timestamp(),
  succeeded   boolean     not null,
  result      jsonb,
  error       text,
  constraint task_runs_failure_has_error check (succeeded or error is not null)
);

create index if not exists task_runs_task_idx on audit.task_runs (task, finished_at);

comment on table audit.task_runs is 'One row per run of a scheduled worker task (partitions, summary, seals, coverage check, archive)';
comment on column audit.task_runs.task is 'graphile-worker task identifier, e.g. audit__archive_partitions';
comment on column audit.task_runs.result is 'What the run did or found, e.g. the coverage problems of audit__check_coverage';
comment on column audit.task_runs.error is 'Why the run failed (the worker retries it with backoff)';

revoke all on audit.task_runs from public;
grant select on audit.task_runs to cartop_auditor;

-- Lock only: seal and archive runs (worker or CLI, any instance) take it for their whole run, so they never
-- interleave (src/db/locks.ts). A table lock, not an advisory key: only its owner can take it, so no other
-- role can stall sealing or archiving by holding the same key.
create table if not exists audit_private.seal_and_archive_runs ();
revoke all on audit_private.seal_and_archive_runs from public;
comment on table audit_private.seal_and_archive_runs is 'Lock only: serialises seal and archive runs (no rows)';
