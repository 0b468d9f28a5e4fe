// Configuration comes from the environment only (and an optional .env file); see .env.example.
import { existsSync } from "node:fs";
import path from "node:path";

export interface Config {
  /** Unset: an embedded PostgreSQL under `.data/` is started and used. */
  databaseUrl: string | undefined;
  /** The API's query connection (as cartop_authenticator); unset: the DATABASE_URL connection, switching role per request. */
  authenticatorUrl: string | undefined;
  port: number;
  jwtSecret: string | undefined;
  trustProxy: boolean;
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

function flag(env: NodeJS.ProcessEnv, name: string): boolean {
  return ["1", "true", "yes", "on"].includes((env[name] ?? "").toLowerCase());
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
    port: integer(env, "PORT", 3000, 1),
    jwtSecret: env.JWT_SECRET || undefined,
    trustProxy: flag(env, "TRUST_PROXY"),
    rateLimitPerMinute: integer(env, "RATE_LIMIT_PER_MINUTE", 300, 1),
    premakeMonths: integer(env, "AUDIT_PREMAKE_MONTHS", 3),
    retentionMonths: integer(env, "AUDIT_RETENTION_MONTHS", 12, 1),
    archiveDir: path.resolve(env.AUDIT_ARCHIVE_DIR || "./data/archive"),
    logLevel: env.LOG_LEVEL || "info",
    embeddedDataDir: path.resolve(env.EMBEDDED_PG_DIR || ".data/postgres"),
    embeddedPort: integer(env, "EMBEDDED_PG_PORT", 54329, 1),
  };
}
