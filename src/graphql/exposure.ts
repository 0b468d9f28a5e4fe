// What the GraphQL schema shows, as an allow-list. From the `audit` schema only the trail (read-only), the
// history and reporting functions, undo, and read-only views of the trail's health for the explorer's
// dashboard (partitions, archives, seals, coverage, task runs: the database lets only auditors read them)
// are exposed; anything else there (the tracking API, every function added later) stays SQL-only until it
// is named here. The
// application schema `app` is exposed as PostgreSQL's grants allow, with the smart tags below.
import { jsonPgSmartTags } from "postgraphile/utils";

/** The `audit` relations, types and functions GraphQL may show. */
export const EXPOSED_AUDIT_OBJECTS = new Set([
  "log", "changes", "activity_daily",
  "entity_history", "user_activity", "row_as_of", "net_change", "revert", "revert_step",
  "partitions", "archives", "seals", "coverage", "task_runs",
]);

const readOnly = ["-insert", "-update", "-delete"];

/**
 * Applies the allow-list before anything is built, and drops the monthly partitions: they live in `audit`
 * (their names are part of the SQL contract) but their parent is in `audit_private`, so PostGraphile would try
 * to expose them and fail to find the parent.
 */
export const AuditAllowListPlugin: GraphileConfig.Plugin = {
  name: "CartopAuditAllowListPlugin",
  version: "1.0.0",
  gather: {
    hooks: {
      pgIntrospection_introspection(_info, event) {
        const { namespaces, classes, procs } = event.introspection;
        const audit = namespaces.find((n) => n.nspname === "audit")?._id;
        const hidden = (namespace: string, name: string) => namespace === audit && !EXPOSED_AUDIT_OBJECTS.has(name);
        for (let i = classes.length - 1; i >= 0; i--) {
          const c = classes[i]!;
          if (c.relispartition || hidden(c.relnamespace, c.relname)) classes.splice(i, 1);
        }
        for (let i = procs.length - 1; i >= 0; i--) {
          if (hidden(procs[i]!.pronamespace, procs[i]!.proname)) procs.splice(i, 1);
        }
      },
    },
  },
};

export const smartTagsPlugin = jsonPgSmartTags({
  version: 1,
  config: {
    class: {
      // The audit trail: a read-only connection named auditLogs, keyed by id for cursors and nodes.
      "audit.log": { tags: { name: "audit_log", primaryKey: "id", behavior: readOnly } },
      // The explorer's dashboard (GET /explore).
      "audit.partitions": { tags: { name: "audit_partition", behavior: readOnly } },
      "audit.archives": { tags: { name: "audit_archive", behavior: readOnly } },
      "audit.coverage": { tags: { name: "audit_coverage_problem", behavior: readOnly } },
      "audit.seals": { tags: { name: "audit_seal", behavior: readOnly } },
      "audit.task_runs": { tags: { name: "audit_task_run", behavior: readOnly } },
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
      "app.hash_password": { tags: { behavior: ["-*"] } },
    },
  },
});
