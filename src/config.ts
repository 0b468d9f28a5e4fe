// Configuration comes from the environment only (and an optional .env file); see .env.example.
import { existsSync } from "node:fs";
import path from "node:path";
import { LOG_LEVELS } from "./log.ts";

export interface Config {
  /** Unset: an embedded PostgreSQL under `.data/` is started and used. */
  databaseUrl: string | undefined;
  /** The API's query connection (as cartop_authenticator); unset: the DATABASE_URL connection, switching role per request. */
  authenticatorUrl: string | undefined;
  /** A read replica for audit-trail reads (GraphQL trail queries, /metrics); unset: everything on the primary. */
  readUrl: string | undefined;
  /** How far behind the primary the replica may be before reads fall back to the primary. */
  readMaxLagSeconds: number;
  port: number;
  jwtSecret: string | undefined;
  /** When set, GET /metrics requires `Authorization: Bearer <METRICS_TOKEN>`. */
  metricsToken: string | undefined;
  /** Express "trust proxy": false, a number of proxy hops, or addresses/subnets of trusted proxies. */
  trustProxy: boolean | number | string;
  rateLimitPerMinute: number;
  premakeMonths: number;
  retentionMonths: number;
  archiveDir: string;
  logLevel: string;
  /** Where the embedded PostgreSQL keeps its cluster. */
  embeddedDataDir: string;
  embeddedPort: number;
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`${name} must be an integer >= ${min}, got "${raw}"`);
  }
  return value;
}

/**
 * TRUST_PROXY: unset/false → X-Forwarded-For is ignored; true → one proxy hop (the client address is the
 * one your proxy appended, so clients cannot spoof it); a number → that many hops; anything else →
 * addresses or subnets of trusted proxies, e.g. "loopback, 10.0.0.0/8".
 */
function trustProxy(raw: string | undefined): boolean | number | string {
  const value = (raw ?? "").trim().toLowerCase();
  if (["", "0", "false", "no", "off"].includes(value)) return false;
  if (["1", "true", "yes", "on"].includes(value)) return 1;
  if (/^\d+$/.test(value)) return Number(value);
  return raw!.trim();
}

function logLevel(raw: string | undefined): string {
  const value = (raw || "info").trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(value)) {
    throw new Error(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got "${raw}"`);
  }
  return value;
}

/** Loads `.env` from the working directory (if present) into process.env, without overriding. */
export function loadDotEnv(cwd = process.cwd()): void {
  const file = path.join(cwd, ".env");
  if (existsSync(file)) process.loadEnvFile(file);
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    databaseUrl: env.DATABASE_URL || undefined,
    authenticatorUrl: env.AUTHENTICATOR_DATABASE_URL || undefined,
    readUrl: env.DATABASE_READ_URL || undefined,
    readMaxLagSeconds: integer(env, "DATABASE_READ_MAX_LAG_SECONDS", 5, 0),
    port: integer(env, "PORT", 3000, 1),
    jwtSecret: env.JWT_SECRET || undefined,
    metricsToken: env.METRICS_TOKEN || undefined,
    trustProxy: trustProxy(env.TRUST_PROXY),
    rateLimitPerMinute: integer(env, "RATE_LIMIT_PER_MINUTE", 300, 1),
    premakeMonths: integer(env, "AUDIT_PREMAKE_MONTHS", 3),
    retentionMonths: integer(env, "AUDIT_RETENTION_MONTHS", 12, 1),
    archiveDir: path.resolve(env.AUDIT_ARCHIVE_DIR || "./data/archive"),
    logLevel: logLevel(env.LOG_LEVEL),
    embeddedDataDir: path.resolve(env.EMBEDDED_PG_DIR || ".data/postgres"),
    embeddedPort: integer(env, "EMBEDDED_PG_PORT", 54329, 1),
  };
}
