// The PostGraphile v5 preset: Amber + aggregates + connection filter + simplified inflection, over the
// `app` and `audit` schemas, with each request's identity handed to PostgreSQL as settings.
import { randomUUID } from "node:crypto";
import { PgAggregatesPreset } from "@graphile/pg-aggregates";
import { GraphQLError } from "graphql";
import type pg from "pg";
import { PgSimplifyInflectionPreset } from "@graphile/simplify-inflection";
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { PostGraphileConnectionFilterPreset } from "postgraphile-plugin-connection-filter";
import type { RequestIdentity } from "../http/identity.ts";
import { routeReadsToReplica } from "./readRouting.ts";
import { smartTagsPlugin } from "./smartTags.ts";

export interface PresetOptions {
  /** Connection the API runs queries on (cartop_authenticator in production). */
  connectionString: string;
  /** Pools for the two connections, owned (and ended) by the caller. */
  pool?: pg.Pool;
  superuserPool?: pg.Pool;
  /** Owner connection, for introspection and watch fixtures. */
  superuserConnectionString?: string;
  /** Hide internals of errors (production). */
  maskErrors?: boolean;
  /** Told of every error returned to a client (for metrics and the log). */
  onError?: ErrorReporter;
  /** A read replica's pool: requests the HTTP layer routes there (src/graphql/readRouting.ts) read from it. */
  readPool?: pg.Pool;
}

/** request: the document was invalid; rejected: the database refused (permission, constraint, raise); internal: a bug or outage. */
type ErrorReporter = (kind: "request" | "rejected" | "internal", error: unknown, reference?: string) => void;

const roles = { user: "cartop_user", auditor: "cartop_auditor" } as const;

/** The transaction-local settings for one request: the role to act as and who is acting. */
export function pgSettingsFor(identity: RequestIdentity): Record<string, string> {
  const claims = identity.claims;
  const settings: Record<string, string> = {
    role: claims?.role === "auditor" ? roles.auditor : claims ? roles.user : "cartop_anonymous",
    "audit.request_id": identity.requestId,
  };
  if (claims?.sub) settings["audit.user_id"] = claims.sub;
  if (claims?.email) settings["audit.user_email"] = claims.email;
  if (identity.ip) settings["audit.ip_address"] = identity.ip;
  if (identity.userAgent) settings["audit.user_agent"] = identity.userAgent;
  return settings;
}

/**
 * The monthly partitions live in the exposed `audit` schema (their names are part of the SQL contract)
 * but their parent is in `audit_private`; PostGraphile would try to expose them and fail to find the
 * parent. They are storage, not API: drop them from the introspection before anything is built.
 */
const HidePartitionsPlugin: GraphileConfig.Plugin = {
  name: "CartopHidePartitionsPlugin",
  version: "1.0.0",
  gather: {
    hooks: {
      pgIntrospection_introspection(_info, event) {
        const classes = event.introspection.classes;
        for (let i = classes.length - 1; i >= 0; i--) {
          if (classes[i]!.relispartition) classes.splice(i, 1);
        }
      },
    },
  },
};

export function makePreset(options: PresetOptions): GraphileConfig.Preset {
  const service = makePgService({
    connectionString: options.connectionString,
    pool: options.pool,
    superuserPool: options.superuserPool,
    superuserConnectionString: options.superuserConnectionString,
    schemas: ["app", "audit"],
  });
  return {
    extends: [PostGraphileAmberPreset, PgSimplifyInflectionPreset, PgAggregatesPreset, PostGraphileConnectionFilterPreset],
    plugins: [smartTagsPlugin, HidePartitionsPlugin],
    pgServices: [options.readPool ? routeReadsToReplica(service, options.readPool) : service],
    gather: { installWatchFixtures: false },
    schema: {
      // Filters only where they can use an index or are cheap; no filtering on computed JSON.
      connectionFilterAllowNullInput: false,
      connectionFilterAllowEmptyObjectInput: false,
      pgForbidSetofFunctionsToReturnNull: true,
    },
    grafast: {
      explain: false,
      context(requestContext) {
        const req = requestContext.expressv4?.req;
        const identity = (req as { identity?: RequestIdentity } | undefined)?.identity;
        if (!identity) throw new Error("request identity missing: the identity middleware must run before GraphQL");
        return { pgSettings: pgSettingsFor(identity) };
      },
    },
    grafserv: {
      graphqlPath: "/graphql",
      graphiqlPath: "/graphiql",
      graphiql: true,
      watch: false,
      maskError: (error) => maskError(error, options.maskErrors ?? false, options.onError ?? (() => {})),
    },
  };
}

/**
 * Errors the client caused or may know about (a PostgreSQL permission, check or data error, or an
 * exception we raise on purpose) pass through with their message. Anything else, in production, becomes
 * a reference the operator can find in the log; no stack traces or internals reach the client.
 */
function maskError(error: GraphQLError, production: boolean, report: ErrorReporter): GraphQLError {
  const original = error.originalError as { code?: unknown } | undefined;
  if (!original || original instanceof GraphQLError) {
    report("request", error);
    return error;
  }
  if (typeof original.code === "string" && /^(22|23|42501|P0001|28)/.test(original.code)) {
    report("rejected", original);
    return new GraphQLError(original instanceof Error ? original.message : error.message, {
      nodes: error.nodes, source: error.source, positions: error.positions, path: error.path,
      extensions: { code: original.code },
    });
  }
  const reference = randomUUID();
  report("internal", original, reference);
  if (!production) return error;
  return new GraphQLError(`An unexpected error occurred (reference ${reference})`, {
    nodes: error.nodes, source: error.source, positions: error.positions, path: error.path,
  });
}
