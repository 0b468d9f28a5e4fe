// What the GraphQL schema shows: the application tables, the audit trail (read-only), undo, and read-only
// views of the trail's health (partitions, archives, seals, coverage, task runs; the database lets only
// auditors read them) for the explorer's dashboard. The tracking API and every internal function stay SQL-only.
import { jsonPgSmartTags } from "postgraphile/utils";

const readOnly = ["-insert", "-update", "-delete"];

export const smartTagsPlugin = jsonPgSmartTags({
  version: 1,
  config: {
    class: {
      // The audit trail: a read-only connection named auditLogs, keyed by id for cursors and nodes.
      "audit.log": { tags: { name: "audit_log", primaryKey: "id", behavior: readOnly } },
      "audit.partitions": { tags: { name: "audit_partition", behavior: readOnly } },
      "audit.archives": { tags: { name: "audit_archive", behavior: readOnly } },
      "audit.coverage": { tags: { name: "audit_coverage_problem", behavior: readOnly } },
      "audit.seals": { tags: { name: "audit_seal", behavior: readOnly } },
      "audit.task_runs": { tags: { name: "audit_task_run", behavior: readOnly } },
      "audit.tracked_tables": { tags: { behavior: ["-*"] } },
      // Users are created through app.create_user (which hashes the password), not a raw insert.
      "app.users": { tags: { behavior: ["-insert"] } },
    },
    attribute: {
      "app.users.password_hash": { tags: { behavior: ["-*"] } },
    },
    procedure: {
      // Query fields entityHistory and userActivity (without the schema prefix).
      "audit.entity_history": { tags: { name: "entity_history" } },
      "audit.user_activity": { tags: { name: "user_activity" } },
      "audit.row_as_of": { tags: { name: "row_as_of" } },
      // Mutation revert (dry run unless dryRun: false) and query field netChange; the database decides who
      // may (execute: users and auditors; the writes themselves need the caller's own grants).
      "audit.revert": { tags: { name: "revert" } },
      "audit.net_change": { tags: { name: "net_change" } },
      ...Object.fromEntries(
      [
        "audit.set_context", "audit.enable_tracking", "audit.disable_tracking", "audit.ensure_partitions",
        "audit.create_partition", "audit.archivable_months", "audit.default_partition_months",
        "audit.drain_default_partition", "audit.summarize_activity", "audit.coverage_problems", "audit.sealable_days", 
        "app.hash_password",
      ].map((name) => [name, { tags: { behavior: ["-*"] } }]),
      ),
    },
  },
});
