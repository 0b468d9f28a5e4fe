// The HTTP server: one middleware per concern, in order, then PostGraphile (grafserv) at /graphql.
import http from "node:http";
import type { AddressInfo } from "node:net";
import express, { type NextFunction, type Request, type Response } from "express";
import pg from "pg";
import { postgraphile } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/express/v4";
import type { Config } from "../config.ts";
import { makePreset } from "../graphql/preset.ts";
import { identity, requestId, sendError } from "./identity.ts";
import { documentChecks, MAX_DOCUMENT_BYTES, requestRate } from "./limits.ts";

export interface ServerOptions {
  /** Owner connection (introspection, health check). */
  databaseUrl: string;
  /** Connection for API queries; defaults to databaseUrl (queries still run as the role the JWT selects). */
  authenticatorUrl?: string;
  config: Pick<Config, "port" | "jwtSecret" | "trustProxy" | "rateLimitPerMinute">;
  production?: boolean;
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

  const healthPool = new pg.Pool({ connectionString: options.databaseUrl, max: 1 });
  healthPool.on("error", () => {});
  app.get("/healthz", async (_req, res) => {
    try {
      await healthPool.query("select 1");
      res.json({ status: "ok" });
    } catch (error) {
      res.status(503).json({ status: "unavailable", error: (error as Error).message });
    }
  });

  app.use(requestId);
  app.use("/graphql", requestRate(config.rateLimitPerMinute, options.rateLimitWindowMs));
  app.use("/graphql", express.json({ limit: MAX_DOCUMENT_BYTES }));
  app.use("/graphql", identity(config.jwtSecret));
  app.use("/graphql", documentChecks);
  app.use("/graphiql", identity(config.jwtSecret));

  // Our own pools, so that close() can wait until every connection is gone.
  const apiPool = new pg.Pool({ connectionString: options.authenticatorUrl ?? options.databaseUrl, max: 10 });
  const ownerPool = new pg.Pool({ connectionString: options.databaseUrl, max: 2 });
  for (const pool of [apiPool, ownerPool]) {
    pool.on("error", () => {}); // an idle connection closed by the server is replaced on next use
    pool.on("connect", (client) => client.on("error", () => {}));
  }
  const pgl = postgraphile(makePreset({
    connectionString: options.authenticatorUrl ?? options.databaseUrl,
    pool: apiPool,
    superuserPool: ownerPool,
    superuserConnectionString: options.databaseUrl,
    maskErrors: options.production,
  }));
  const serv = pgl.createServ(grafserv);
  const server = http.createServer(app);
  await serv.addTo(app, server);

  // Body-parser errors (too large, not JSON) are the client's: 413/400 with a message, not a 500.
  app.use((error: Error & { status?: number; type?: string }, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(error);
    if (error.type === "entity.too.large") return sendError(res, 413, `request body larger than ${MAX_DOCUMENT_BYTES} bytes`);
    if (error.status && error.status < 500) return sendError(res, error.status, `bad request: ${error.message}`);
    return sendError(res, 500, "internal error");
  });

  await new Promise<void>((resolve) => server.listen(config.port, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await pgl.release();
      await apiPool.end();
      await ownerPool.end();
      await healthPool.end();
    },
  };
}
