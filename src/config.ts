// Configuration comes from the environment only (and an optional .env file); see .env.example.
import { existsSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { LOG_FORMATS, LOG_LEVELS } from "./log.ts";

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
  /** HS256 secret for API tokens; at least MIN_JWT_SECRET_LENGTH characters. */
  jwtSecret: string | undefined;
  /** NODE_ENV=production: unexpected errors are masked, introspection is off unless GRAPHQL_INTROSPECTION=on. */
  production: boolean;
  /** `__schema`/`__type` queries and GraphiQL at /graphiql. */
  introspection: boolean;
  /** When set, GET /metrics requires `Authorization: Bearer <METRICS_TOKEN>`. */
  metricsToken: string | undefined;
  /** Express "trust proxy": false, a number of proxy hops, or addresses/subnets of trusted proxies. */
  trustProxy: boolean | number | string;
  rateLimitPerMinute: number;
  premakeMonths: number;
  retentionMonths: number;
  archiveDir: string;
  /** Where archives and seal copies go: file:///abs/path or s3://bucket/prefix (AUDIT_ARCHIVE_URL; unset: file:// + archiveDir). */
  archiveUrl: string;
  /** S3-compatible endpoint and addressing; credentials come from the AWS SDK's usual chain. */
  s3: { endpoint: string | undefined; region: string | undefined; forcePathStyle: boolean };
  /** Also write each archived month as Parquet (queryable in place); AUDIT_ARCHIVE_PARQUET=0 turns it off. */
  archiveParquet: boolean;
  logLevel: string;
  /** json or pretty; unset: pretty on a terminal, JSON otherwise. */
  logFormat: (typeof LOG_FORMATS)[number] | undefined;
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

export const MIN_JWT_SECRET_LENGTH = 32;

function jwtSecret(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  if (raw.length < MIN_JWT_SECRET_LENGTH) {
    throw new Error(`JWT_SECRET is ${raw.length} characters, at least ${MIN_JWT_SECRET_LENGTH} are needed (a short HS256 secret can be guessed offline from one token): generate one with openssl rand -hex 32`);
  }
  return raw;
}

/** GRAPHQL_INTROSPECTION: on/off; unset → on, except with NODE_ENV=production. */
function introspection(raw: string | undefined, production: boolean): boolean {
  const value = (raw ?? "").trim().toLowerCase();
  if (value === "") return !production;
  if (["1", "true", "yes", "on"].includes(value)) return true;
  if (["0", "false", "no", "off"].includes(value)) return false;
  throw new Error(`GRAPHQL_INTROSPECTION must be on or off, got "${raw}"`);
}

function logLevel(raw: string | undefined): string {
  const value = (raw || "info").trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(value)) {
    throw new Error(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got "${raw}"`);
  }
  return value;
}

function logFormat(raw: string | undefined): (typeof LOG_FORMATS)[number] | undefined {
  const value = (raw ?? "").trim().toLowerCase();
  if (value === "") return undefined;
  if (!(LOG_FORMATS as readonly string[]).includes(value)) throw new Error(`LOG_FORMAT must be json or pretty, got "${raw}"`);
  return value as (typeof LOG_FORMATS)[number];
}

/** AUDIT_ARCHIVE_URL: file:///absolute/path or s3://bucket[/prefix]; unset, the archive directory. */
function archiveUrl(raw: string | undefined, archiveDir: string): string {
  const value = (raw ?? "").trim();
  if (!value) return pathToFileURL(archiveDir).href;
  // Credentials belong in the AWS variables, never in the URL; a refusal does not repeat them.
  const refused = new Error(`AUDIT_ARCHIVE_URL must be file:///absolute/path or s3://bucket/prefix, got "${value.replace(/\/\/[^/]*@/, "//…@")}"`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw refused;
  }
  if (url.protocol === "file:" && !url.host && url.pathname.startsWith("/")) return url.href;
  if (url.protocol === "s3:" && url.hostname && !url.search && !url.username && !url.password) return value.replace(/\/+$/, "");
  throw refused;
}

function flag(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const value = (env[name] ?? "").trim().toLowerCase();
  if (value === "") return fallback;
  if (["1", "true", "yes", "on"].includes(value)) return true;
  if (["0", "false", "no", "off"].includes(value)) return false;
  throw new Error(`${name} must be 1 or 0, got "${env[name]}"`);
}

/** Loads `.env` from the working directory (if present) into process.env, without overriding. */
export function loadDotEnv(cwd = process.cwd()): void {
  const file = path.join(cwd, ".env");
  if (existsSync(file)) process.loadEnvFile(file);
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const archiveDir = path.resolve(env.AUDIT_ARCHIVE_DIR || "./data/archive");
  return {
    databaseUrl: env.DATABASE_URL || undefined,
    authenticatorUrl: env.AUTHENTICATOR_DATABASE_URL || undefined,
    readUrl: env.DATABASE_READ_URL || undefined,
    readMaxLagSeconds: integer(env, "DATABASE_READ_MAX_LAG_SECONDS", 5, 0),
    port: integer(env, "PORT", 3000, 1),
    jwtSecret: jwtSecret(env.JWT_SECRET),
    production: env.NODE_ENV === "production",
    introspection: introspection(env.GRAPHQL_INTROSPECTION, env.NODE_ENV === "production"),
    metricsToken: env.METRICS_TOKEN || undefined,
    trustProxy: trustProxy(env.TRUST_PROXY),
    rateLimitPerMinute: integer(env, "RATE_LIMIT_PER_MINUTE", 300, 1),
    premakeMonths: integer(env, "AUDIT_PREMAKE_MONTHS", 3),
    retentionMonths: integer(env, "AUDIT_RETENTION_MONTHS", 12, 1),
    archiveDir,
    archiveUrl: archiveUrl(env.AUDIT_ARCHIVE_URL, archiveDir),
    s3: {
      endpoint: env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined,
      region: env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined,
      forcePathStyle: flag(env, "AUDIT_S3_FORCE_PATH_STYLE", false),
    },
    archiveParquet: flag(env, "AUDIT_ARCHIVE_PARQUET", true),
    logLevel: logLevel(env.LOG_LEVEL),
    logFormat: logFormat(env.LOG_FORMAT),
    embeddedDataDir: path.resolve(env.EMBEDDED_PG_DIR || ".data/postgres"),
    embeddedPort: integer(env, "EMBEDDED_PG_PORT", 54329, 1),
  };
}
