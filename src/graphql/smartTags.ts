// What the GraphQL schema shows. Only the application tables, the audit trail (read-only) and undo are exposed;
// partition and archive bookkeeping, the tracking API and every internal function stay SQL-only.
import { jsonPgSmartTags } from "postgraphile/utils";

export const smartTagsPlugin = jsonPgSmartTags({
  version: 1,
  config: {
    class: {
      // The audit trail: a read-only connection named auditLogs, keyed by id for cursors and nodes.
      "audit.log": { tags: { name: "audit_log", primaryKey: "id", behavior: ["-insert", "-update", "-delete"] } },
      "audit.partitions": { tags: { behavior: ["-*"] } },
      "audit.archives": { tags: { behavior: ["-*"] } },
      "audit.tracked_tables": { tags: { behavior: ["-*"] } },
      "audit.coverage": { tags: { behavior: ["-*"] } },
      "audit.seals": { tags: { behavior: ["-*"] } },
      "audit.task_runs": { tags: { behavior: ["-*"] } },
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
