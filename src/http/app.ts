// The HTTP server: one middleware per concern, in order, then PostGraphile (grafserv) at /graphql.
import { createHash, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import express, { type NextFunction, type Request, type Response } from "express";
import { pinoHttp } from "pino-http";
import { postgraphile } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/express/v4";
import { createPool } from "../db/pool.ts";
import type { Config } from "../config.ts";
import { makePreset } from "../graphql/preset.ts";
import { createLogger, withRequestContext, type Logger } from "../log.ts";
import { createMetrics } from "../metrics.ts";
import { explorer } from "./explorer.ts";
import { identity, requestId, sendError } from "./identity.ts";
import { documentChecks, MAX_DOCUMENT_BYTES, requestRate, responseSize } from "./limits.ts";
import { PostgresRateLimitStore } from "./rateLimitStore.ts";
import { routeTrailReads } from "./readRouting.ts";
import { ReadReplica } from "../db/readReplica.ts";

export interface ServerOptions {
  /** Owner connection (introspection, health check). */
  databaseUrl: string;
  /** Connection for API queries; defaults to databaseUrl (queries still run as the role the JWT selects). */
  authenticatorUrl?: string;
  config: Pick<Config, "port" | "jwtSecret" | "trustProxy" | "rateLimitPerMinute"> & Partial<Pick<Config, "metricsToken">>;
  /** Where request and error lines go; default: nothing is logged. */
  logger?: Logger;
  production?: boolean;
  /** `__schema`/`__type` queries and GraphiQL; default: on unless `production`. */
  introspection?: boolean;
  /** GET /metrics per client per window; METRICS_SCRAPES_PER_MINUTE unless a test lowers it. */
  metricsScrapesPerWindow?: number;
  /** statement_timeout of API transactions; API_STATEMENT_TIMEOUT_MS unless a test shortens it. */
  statementTimeoutMs?: number;
  /** A read replica (DATABASE_READ_URL) for audit-trail reads, and how far behind it may be (seconds). */
  readUrl?: string;
  readMaxLagSeconds?: number;
  /** Rate-limit window; a minute unless a test shortens it. */
  rateLimitWindowMs?: number;
}

export interface RunningServer {
  url: string;
  server: http.Server;
  close(): Promise<void>;
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const { config } = options;
  const app = express();
  app.disable("x-powered-by");
  app.set("trust proxy", config.trustProxy);

  const logger = options.logger ?? createLogger("silent");

  // Our own pools, so that close() can wait until every connection is gone.
  const apiPool = createPool(options.authenticatorUrl ?? options.databaseUrl, { max: 10 });
  const ownerPool = createPool(options.databaseUrl, { max: 2 });
  const healthPool = createPool(options.databaseUrl, { max: 1 });
  // One upsert per /graphql request (the shared rate limit); its own pool, so a slow scrape never delays it.
  const limitsPool = createPool(options.databaseUrl, { max: 2 });
  const replica = options.readUrl ? new ReadReplica(options.readUrl, ownerPool, options.readMaxLagSeconds ?? 5, logger) : undefined;
  // /metrics reads the trail where audit reads go: the replica while it is usable.
  const metrics = createMetrics(ownerPool, [{ name: "api", pool: apiPool }, { name: "owner", pool: ownerPool }], logger, replica);

  app.use(requestId);
  // Everything logged while handling the request, by any code, carries its request id.
  app.use((req, _res, next) => withRequestContext({ requestId: requestIdOf(req) }, next));
  app.use(pinoHttp({
    logger,
    genReqId: requestIdOf, // requestId itself reaches every line through the logger's mixin (src/log.ts)
    // Method, path and client only: no headers (Authorization), no query string, no body (passwords).
    serializers: {
      req: (req: { method: string; url: string; remoteAddress?: string }) =>
        ({ method: req.method, path: req.url.split("?")[0], remoteAddress: req.remoteAddress }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
    customLogLevel: (_req, res, error) => (error || res.statusCode >= 500 ? "error" : res.statusCode >= 400 ? "warn" : "info"),
    autoLogging: { ignore: (req) => req.url === "/healthz" || req.url === "/metrics" },
  }));
  app.use(timeRequests(metrics.observeRequest));

  app.get("/healthz", async (_req, res) => {
    try {
      await healthPool.query("select 1");
      res.json({ status: "ok" });
    } catch (error) {
      res.status(503).json({ status: "unavailable", error: (error as Error).message });
    }
  });
  // Each scrape costs a few queries: a client hammering /metrics must not load the database.
  app.use("/metrics", requestRate(options.metricsScrapesPerWindow ?? METRICS_SCRAPES_PER_MINUTE, options.rateLimitWindowMs));
  app.get("/metrics", async (req, res) => {
    if (config.metricsToken && !sameSecret(req.get("authorization") ?? "", `Bearer ${config.metricsToken}`)) {
      return sendError(res, 401, "GET /metrics needs 'Authorization: Bearer <METRICS_TOKEN>'");
    }
    res.type("text/plain; version=0.0.4; charset=utf-8").send(await metrics.render());
  });

  // The explorer is static; what it shows comes from /graphql with the user's own token.
  app.use("/explore", explorer());

  const introspection = options.introspection ?? !options.production;
  // Counted in the database, so that every instance of the API shares one limit per client (instances
  // configured with the same limit and window share counters).
  const windowMs = options.rateLimitWindowMs ?? 60_000;
  const rateLimitStore = new PostgresRateLimitStore(limitsPool, `graphql:${config.rateLimitPerMinute}/${windowMs}:`);
  const pgl = postgraphile(makePreset({
    connectionString: options.authenticatorUrl ?? options.databaseUrl,
    pool: apiPool,
    superuserPool: ownerPool,
    superuserConnectionString: options.databaseUrl,
    maskErrors: options.production,
    graphiql: introspection,
    statementTimeoutMs: options.statementTimeoutMs,
    readPool: replica?.pool,
    onError(kind, error, reference) {
      metrics.countGraphqlError(kind);
      if (kind === "internal") logger.error({ err: error, reference }, "GraphQL request failed");
      else logger.debug({ kind, message: (error as Error).message }, "GraphQL error returned to the client");
    },
  }));

  app.use("/graphql", countRefusedDocuments(() => metrics.countGraphqlError("request")));
  app.use("/graphql", requestRate(config.rateLimitPerMinute, windowMs, rateLimitStore));
  app.use("/graphql", express.json({ limit: MAX_DOCUMENT_BYTES }));
  app.use("/graphql", identity(config.jwtSecret));
  app.use("/graphql", documentChecks({ schema: async () => pgl.getSchema(), introspection }));
  app.use("/graphql", responseSize());
  if (replica) app.use("/graphql", routeTrailReads(replica, logger));
  app.use("/graphiql", identity(config.jwtSecret));

  const serv = pgl.createServ(grafserv);
  const server = http.createServer(app);
  await serv.addTo(app, server);

  // Body-parser errors (too large, not JSON) are the client's: 413/400 with a message, not a 500.
  app.use((error: Error & { status?: number; type?: string }, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(error);
    if (error.type === "entity.too.large") return sendError(res, 413, `request body larger than ${MAX_DOCUMENT_BYTES} bytes`);
    if (error.status && error.status < 500) return sendError(res, error.status, `bad request: ${error.message}`);
    logger.error({ err: error }, "request failed");
    return sendError(res, 500, "internal error");
  });

  // Build the schema before accepting requests: a broken schema fails the start, not the first request.
  await pgl.getSchema();
  await listen(server, config.port);
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await pgl.release();
      rateLimitStore.shutdown();
      await apiPool.end();
      await ownerPool.end();
      await healthPool.end();
      await limitsPool.end();
      await replica?.close();
    },
  };
}

/** Listens on `port`; a busy port is one sentence saying what to do, not an EADDRINUSE stack trace. */
function listen(server: http.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) => {
      reject(error.code === "EADDRINUSE"
        ? new Error(`port ${port} is already in use (another cartop-audit, or another program): stop it, or set PORT to a free port`)
        : error);
    });
    server.listen(port, () => resolve());
  });
}

function requestIdOf(req: http.IncomingMessage): string {
  return (req as Request).requestId;
}

/** Scrapes per minute per client: Prometheus scrapes every 15-60 s. */
const METRICS_SCRAPES_PER_MINUTE = 60;

const knownRoutes = new Set(["/graphql", "/graphiql", "/healthz", "/metrics", "/explore"]);

/** Times every response by route (unknown paths are one label, so clients cannot create series at will). */
function timeRequests(observe: (route: string, method: string, status: number, seconds: number) => void) {
  return (req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    // Read now: a middleware mounted at /graphql that answers itself leaves req.path relative ("/").
    const route = knownRoutes.has(req.path) ? req.path : "other";
    res.on("finish", () => observe(route, req.method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9));
    next();
  };
}

/**
 * Counts documents refused before execution as GraphQL errors of kind "request": our own checks (not JSON,
 * malformed, too deep or costly, introspection off: 400/403/413, a response too large) and grafserv's
 * validation errors (400, or a 200 whose payload is only `errors` when the client accepts application/json).
 * Errors during execution reach maskError and are counted there. Bad tokens (401) and the rate limit (429)
 * are not document errors; they show in the request histogram's status label.
 */
function countRefusedDocuments(count: () => void) {
  return (_req: Request, res: Response, next: NextFunction) => {
    const end = res.end.bind(res) as (...args: unknown[]) => Response;
    res.end = ((...args: unknown[]) => {
      if (refusedDocument(res.statusCode, args[0])) count();
      return end(...args);
    }) as Response["end"];
    next();
  };
}

function refusedDocument(status: number, body: unknown): boolean {
  if (status === 400 || status === 403 || status === 413) return true;
  if (status !== 200) return false;
  const text = typeof body === "string" ? body : Buffer.isBuffer(body) ? body.toString("utf8", 0, Math.min(body.length, 4096)) : "";
  return text.startsWith('{"errors":') && !(Buffer.isBuffer(body) ? body.includes('"data":') : text.includes('"data":'));
}

/** Compares a presented secret in constant time (hashing first gives both sides the same length). */
function sameSecret(presented: string, expected: string): boolean {
  const digest = (text: string) => createHash("sha256").update(text).digest();
  return timingSafeEqual(digest(presented), digest(expected));
}
