// Audit reads on a read replica (DATABASE_READ_URL): a GraphQL query whose top-level fields all read the
// audit trail runs on the replica; everything else (mutations, the example tables, node lookups) on the
// primary. The schema is one (built from the primary); only where PostGraphile gets its connection changes,
// per request, through the pg service's adaptor.
import { AsyncLocalStorage } from "node:async_hooks";
import { Kind, type DocumentNode, type OperationDefinitionNode, type SelectionSetNode } from "graphql";
import type pg from "pg";
import { createWithPgClient } from "postgraphile/adaptors/pg";
import { SQLSTATE, sqlstateOf } from "../db/sqlstate.ts";

/** Top-level Query fields that only read the audit trail (schema.graphql); their plans never write. */
export const TRAIL_READ_FIELDS: ReadonlySet<string> = new Set([
  "auditLogs", "auditLog", "auditLogById", "entityHistory", "userActivity", "rowAsOf", "auditChanges",
  "auditActivityDailies", "__typename",
]);

/** The operation a request runs: the one named, or the only one. */
function selectedOperation(document: DocumentNode, operationName: string | undefined): OperationDefinitionNode | undefined {
  const operations = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  return operationName ? operations.find((o) => o.name?.value === operationName) : operations.length === 1 ? operations[0] : undefined;
}

/** True when the selected operation is a query and every top-level field (through fragments) reads the trail. */
export function isTrailRead(document: DocumentNode, operationName?: string): boolean {
  const operation = selectedOperation(document, operationName);
  if (!operation || operation.operation !== "query") return false;
  const fragments = new Map<string, SelectionSetNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d.selectionSet);
  const onlyTrail = (set: SelectionSetNode, seen: Set<string>): boolean => set.selections.every((s) => {
    if (s.kind === Kind.FIELD) return TRAIL_READ_FIELDS.has(s.name.value);
    if (s.kind === Kind.INLINE_FRAGMENT) return onlyTrail(s.selectionSet, seen);
    const fragment = fragments.get(s.name.value);
    return fragment !== undefined && !seen.has(s.name.value) && onlyTrail(fragment, new Set([...seen, s.name.value]));
  });
  return onlyTrail(operation.selectionSet, new Set());
}

export interface ReadRoute {
  target: "replica" | "primary";
  /** Called when a read sent to the replica failed there and runs on the primary instead. */
  onFallback?: (error: unknown) => void;
}

/** Where the current request's database work goes; set by the HTTP layer around the request. */
export const readRoute = new AsyncLocalStorage<ReadRoute>();

/** Errors on the replica after which a read is run again on the primary. */
export function retryOnPrimary(error: unknown): boolean {
  const code = sqlstateOf(error);
  // 40001: cancelled by a recovery conflict (the standby replayed a change the read's snapshot or lock
  // conflicted with); 57P0x/08xxx and socket errors: the replica went away mid-request.
  return code === SQLSTATE.serializationFailure || (code !== undefined && /^(57P0|08)/.test(code)) ||
    (error instanceof Error && /Connection terminated|ECONNREFUSED|ECONNRESET/.test(error.message));
}

/**
 * Wraps a pg service so that requests running inside `readRoute.run({ target: "replica" }, …)` take their connection
 * from `replicaPool`. Each request's pgSettings (role, audit.* context) are applied there the same way,
 * so row-level security gives the same answer. A replica read that fails with a recovery conflict or a
 * lost connection is run once more on the primary: it is a read, so running it again is safe.
 */
export function routeReadsToReplica<S extends GraphileConfig.PgServiceConfiguration<"@dataplan/pg/adaptors/pg">>(
  service: S, replicaPool: pg.Pool,
): S {
  return {
    ...service,
    adaptor: {
      ...service.adaptor,
      createWithPgClient(settings, variant) {
        const primary = createWithPgClient(settings, variant);
        if (variant === "SUPERUSER") return primary;
        const replica = createWithPgClient({ pool: replicaPool });
        const withPgClient = (async (pgSettings, callback) => {
          const route = readRoute.getStore();
          if (route?.target !== "replica") return primary(pgSettings, callback);
          try {
            return await replica(pgSettings, callback);
          } catch (error) {
            if (!retryOnPrimary(error)) throw error;
            route.onFallback?.(error);
            return primary(pgSettings, callback);
          }
        }) as typeof primary;
        withPgClient.release = async () => {
          await replica.release?.();
          await primary.release?.();
        };
        return withPgClient;
      },
    },
  };
}
