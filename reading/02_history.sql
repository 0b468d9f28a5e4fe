-- Reading the trail: one entity's history and one user's activity, newest first. The GraphQL API exposes
-- both (entityHistory, userActivity); analysts can call them from SQL. security invoker: the caller's
-- row-level security applies (a user sees only their own rows). No `set search_path` (every name is
-- qualified): user_activity, a SQL function without SET clauses, is inlined, so the caller's time range
-- prunes partitions; entity_history's own arguments already name what its query reads.

-- entity_name is a table name (`products`) or schema-qualified (`app.products`).
-- PL/pgSQL, not SQL: a SQL function is inlined into the statement that calls it and planned again with it
-- every time (~1.5-5 ms over a year of partitions); a PL/pgSQL function's query is planned once per session.
create or replace function audit.entity_history(entity_name text, entity_id text)
  returns setof audit.log
  language plpgsql
  stable
as $$
begin
  return query
  select l.*
  from audit.log l
  where l.entity_id = entity_history.entity_id
    and (l.entity_name = entity_history.entity_name
         or l.entity_schema || '.' || l.entity_name = entity_history.entity_name)
  order by l.id desc;
end
$$;

comment on function audit.entity_history(text, text) is 'Audit rows of one entity (table name or schema.table, and primary key as text), newest first';

create or replace function audit.user_activity(user_id text, since timestamptz default null, until timestamptz default null)
  returns setof audit.log
  language sql
  stable
as $$
  select l.*
  from audit.log l
  where l.user_id = user_activity.user_id
    and (since is null or l.created_at >= since)
    and (until is null or l.created_at < until)
  order by l.id desc
$$;

comment on function audit.user_activity(text, timestamptz, timestamptz) is 'Audit rows written with the given audit.user_id, newest first, optionally within [since, until)';

grant execute on function audit.entity_history(text, text), audit.user_activity(text, timestamptz, timestamptz)
  to cartop_user, cartop_auditor;
