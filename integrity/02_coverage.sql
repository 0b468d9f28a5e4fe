-- Capture coverage: the silent failures of a trigger-based audit, as rows an operator (or
-- `cartop-audit doctor`) can see. Empty means healthy. months_ahead defaults to the horizon the deployment keeps
-- (audit_private.partition_horizon: what the worker last premade with AUDIT_PREMAKE_MONTHS).
-- capture_outdated regenerates every tracked table's capture to compare it (~7 ms a table): doctor and the worker
-- ask for it (check_capture); the view, which auditors and the explorer read, does not.
drop function if exists audit.coverage_problems(integer) cascade;
create or replace function audit.coverage_problems(months_ahead integer default null, check_capture boolean default false)
  returns table (check_name text, object text, problem text)
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  -- A tracked table that no longer exists.
  select 'tracked_table_missing', format('%I.%I', t.schema_name, t.table_name),
         format('tracked, but the table does not exist; to end its tracking: select audit.disable_tracking(%L, %L)', t.schema_name, t.table_name)
  from audit_private.tables t
  where t.enabled and audit_private.table_by_name(t.schema_name, t.table_name) is null
  union all
  -- A tracked table whose capture triggers were dropped or disabled.
  select case when tt.triggers_installed < tt.triggers_expected then 'capture_trigger_missing' else 'capture_trigger_disabled' end,
         format('%I.%I', tt.schema_name, tt.table_name),
         format('%s of %s capture triggers installed, %s enabled', tt.triggers_installed, tt.triggers_expected, tt.triggers_active)
  from audit.tracked_tables tt
  where tt.enabled and audit_private.table_by_name(tt.schema_name, tt.table_name) is not null
    and (tt.triggers_installed < tt.triggers_expected or tt.triggers_active < tt.triggers_expected)
  union all
  -- A capture function that is not what this version generates for its table: edited by hand (body,
  -- settings, owner) or left by another version (the stamp in its comment: audit_private.capture_stamp).
  select 'capture_outdated', format('audit_private.%I()', f.function_name),
         format('%s; regenerate with: select audit.enable_tracking(%L)', audit_private.capture_function_problem(f.function_name, f.create_sql),
                format('%I.%I', t.schema_name, t.table_name))
  from audit_private.tables t
  cross join lateral audit_private.capture_functions_sql(t, audit_private.table_by_name(t.schema_name, t.table_name)) f
  where check_capture and t.enabled and audit_private.table_by_name(t.schema_name, t.table_name) is not null
    and audit_private.capture_function_problem(f.function_name, f.create_sql) is not null
  union all
  -- A trigger that looks like ours but is not: a capture trigger's name or a capture function, anywhere,
  -- that is not exactly the capture trigger of the tracked table it is on (wrong function, events,
  -- transition tables or name; or a table that is not tracked).
  select 'foreign_capture_trigger', format('%s on %s', g.tgname, g.tgrelid::regclass),
         format('runs %s', g.tgfoid::regprocedure)
  from pg_trigger g
  join pg_class c on c.oid = g.tgrelid
  join pg_namespace n on n.oid = c.relnamespace
  -- (on a partition, the tracked table it belongs to)
  left join pg_class root on root.oid = coalesce(pg_partition_root(c.oid), c.oid)
  left join pg_namespace rn on rn.oid = root.relnamespace
  left join audit_private.tables t on t.enabled and t.schema_name = rn.nspname and t.table_name = root.relname
  where (g.tgname like '\_900\_audit\_%' or g.tgfoid::regproc::text like 'audit\_private.capture\_%')
    and not exists (select from audit_private.capture_trigger_state(t.id, g.tgrelid) s
                    where s.trigger_name = g.tgname and s.installed)
  union all
  -- Months that should already have a partition: the current one, and `months_ahead` after the month of an
  -- hour ago. The hourly premake needs that hour to move the horizon on when a month begins, so the first
  -- minutes of a month are not reported (the month that just began was premade months before).
  select 'partition_missing', 'audit.' || audit_private.partition_name(m::date),
         format('no partition for %s (keep %s month(s) ahead)', to_char(m, 'YYYY-MM'), h.months_ahead)
  from (select coalesce(coverage_problems.months_ahead, (select p.months_ahead from audit_private.partition_horizon p), 3) as months_ahead) h,
       generate_series(
         audit_private.current_month(),
         greatest(audit_private.current_month(),
                  date_trunc('month', (now() - interval '1 hour') at time zone 'UTC') + make_interval(months => greatest(h.months_ahead, 0))),
         interval '1 month') as m
  where not (audit_private.partition_state(m::date)).present
  union all
  -- Rows waiting in the default partition.
  select 'default_partition_rows', 'audit.log_default', format('%s row(s) of %s', d.rows, to_char(d.month, 'YYYY-MM'))
  from audit.default_partition_months() d
  union all
  -- Finished days left unsealed (the worker seals each day about an hour after it ends).
  select 'seal_overdue', 'audit.seals', format('finished days since %s are not sealed', s.first_unsealed)
  from (select audit_private.seal_chain_start() as first_unsealed) s
  where s.first_unsealed < (now() at time zone 'UTC')::date - 1
$$;

comment on function audit.coverage_problems(integer, boolean) is 'Problems in audit capture coverage (missing/disabled/foreign triggers, outdated capture functions, missing partitions, rows in the default partition, unsealed days); empty when healthy';

create or replace view audit.coverage as select * from audit.coverage_problems();
comment on view audit.coverage is 'Problems in audit capture coverage, against the premake horizon the deployment keeps; empty when healthy';
comment on column audit.coverage.check_name is 'Which check found the problem';
comment on column audit.coverage.object is 'The table, trigger or partition concerned';
comment on column audit.coverage.problem is 'What is wrong';

grant select on audit.coverage to cartop_auditor;
revoke all on function audit.coverage_problems(integer, boolean) from public;
grant execute on function audit.coverage_problems(integer, boolean) to cartop_auditor;
grant select on audit_private.partition_horizon to cartop_auditor;
