// The PostGraphile v5 preset: Amber + aggregates + connection filter + simplified inflection, over the
// `app` and `audit` schemas, with each request's identity handed to PostgreSQL as settings.
import { randomUUID } from "node:crypto";
import { isIP } from "node:net";
import { PgAggregatesPreset } from "@graphile/pg-aggregates";
import { GraphQLError } from "graphql";
import type pg from "pg";
import { PgSimplifyInflectionPreset } from "@graphile/simplify-inflection";
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { PostGraphileConnectionFilterPreset } from "postgraphile-plugin-connection-filter";
import type { Request } from "express";
import type { RequestIdentity } from "./identity.ts";
import { routeReadsToReplica } from "./readRouting.ts";
import { AuditAllowListPlugin, smartTagsPlugin } from "./exposure.ts";
import { SQLSTATE, sqlstateOf } from "../db/sqlstate.ts";

export interface PresetOptions {
  /** Connection the API runs queries on (cartop_authenticator in production). */
  connectionString: string;
  /** Pools for the two connections, owned (and ended) by the caller. */
  pool?: pg.Pool;
  superuserPool?: pg.Pool;
  /** Owner connection, for introspection and watch fixtures. */
  superuserConnectionString?: string;
  /** Serve GraphiQL at /graphiql (only where introspection is allowed: it needs it). */
  graphiql?: boolean;
  /** statement_timeout of API transactions; API_STATEMENT_TIMEOUT_MS unless a test shortens it. */
  statementTimeoutMs?: number;
  /** Hide internals of errors (production). */
  maskErrors?: boolean;
  /** Told of every error returned to a client (for metrics and the log). */
  onError?: ErrorReporter;
  /** A read replica's pool: requests the HTTP layer routes there (src/graphql/readRouting.ts) read from it. */
  readPool?: pg.Pool;
}

/** request: the document was invalid; rejected: the database refused (permission, constraint, raise); internal: a bug or outage. */
type ErrorReporter = (kind: "request" | "rejected" | "internal", error: unknown, reference?: string) => void;

/** The JWT `role` claim selects the database role; no token: cartop_anonymous. */
const roles = { user: "cartop_user", auditor: "cartop_auditor", admin: "cartop_admin" } as const;

/** statement_timeout of every API transaction (set in pgSettings: role settings do not apply after SET ROLE). */
export const API_STATEMENT_TIMEOUT_MS = 15_000;

/**
 * An address PostgreSQL's inet reads for certain: what net.isIP accepts, minus IPv6 zone ids ("fe80::1%eth0").
 * An X-Forwarded-For behind TRUST_PROXY can carry anything; anything else travels unchecked and capture keeps it
 * under metadata.invalid_context.
 */
function isInetText(ip: string): boolean {
  return isIP(ip) !== 0 && /^[0-9a-fA-F:.]+$/.test(ip);
}

/** The transaction-local settings for one request: the role to act as and who is acting. */
export function pgSettingsFor(identity: RequestIdentity, statementTimeoutMs = API_STATEMENT_TIMEOUT_MS): Record<string, string> {
  const claims = identity.claims;
  const settings: Record<string, string> = {
    role: claims ? roles[claims.role] : "cartop_anonymous",
    "audit.request_id": identity.requestId,
    // Role settings do not apply after SET ROLE, so the API's time limit travels with each transaction.
    statement_timeout: String(statementTimeoutMs),
  };
  if (claims?.sub) settings["audit.user_id"] = claims.sub;
  if (claims?.email) settings["audit.user_email"] = claims.email;
  if (identity.ip) settings["audit.ip_address"] = identity.ip;
  if (identity.userAgent) settings["audit.user_agent"] = identity.userAgent;
  // Checked here, so capture casts it without a subtransaction (audit_private.context_checked_marker:
  // "<length of ip>:ip|metadata"; the API sets no metadata; an address is ASCII, so lengths agree).
  if (identity.ip && isInetText(identity.ip)) settings["audit_private.context_checked"] = `${identity.ip.length}:${identity.ip}|`;
  return settings;
}

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
    plugins: [smartTagsPlugin, AuditAllowListPlugin],
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
        const identity = (req as Request | undefined)?.identity;
        if (!identity) throw new Error("request identity missing: the identity middleware must run before GraphQL");
        return { pgSettings: pgSettingsFor(identity, options.statementTimeoutMs) };
      },
    },
    grafserv: {
      graphqlPath: "/graphql",
      graphiqlPath: "/graphiql",
      graphiql: options.graphiql ?? true,
      watch: false,
      maskError: (error) => maskError(error, options.maskErrors ?? false, options.onError ?? (() => {}), options.statementTimeoutMs ?? API_STATEMENT_TIMEOUT_MS),
    },
  };
}

/**
 * Errors the client caused or may know about (a PostgreSQL permission, check or data error, or an
 * exception we raise on purpose) pass through with their message. Anything else, in production, becomes
 * a reference the operator can find in the log; no stack traces or internals reach the client.
 */
function maskError(error: GraphQLError, production: boolean, report: ErrorReporter, statementTimeoutMs: number): GraphQLError {
  const original = error.originalError as { code?: unknown } | undefined;
  if (!original || original instanceof GraphQLError) {
    report("request", error);
    return error;
  }
  // 57014: statement_timeout (the API's time limit) — the client can act on it by asking for less.
  if (typeof original.code === "string" && /^(22|23|42501|P0001|28|57014)/.test(original.code)) {
    report("rejected", original);
    const message = original instanceof Error ? original.message : error.message;
    const hint = sqlstateOf(original) === SQLSTATE.queryCanceled ? ` (the API allows ${statementTimeoutMs / 1000} s per statement): ask for smaller pages or narrower filters` : "";
    return new GraphQLError(message + hint, {
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
