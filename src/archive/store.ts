// Where archives live: a local directory (file:///abs/path) or an S3-compatible bucket (s3://bucket/prefix).
// Archive files, manifests, Parquet copies and seal copies all go through this one interface, so the state
// machine in archive.ts and the seal copies in seals.ts never know which one they write to.
//
// Both stores make an object visible only once it is complete: the file store writes `<name>.partial`,
// fsyncs and renames; the S3 store uses a multipart upload, which S3 publishes only when it is completed.
// A process killed mid-write leaves no half object under the real name (S3 keeps the parts of an
// unfinished upload until a lifecycle rule aborts them: see docs/runbook.md).
import { S3Client, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, NoSuchKey } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { createReadStream, createWriteStream } from "node:fs";
import { appendFile, mkdir, open, readdir, readFile, rename } from "node:fs/promises";
import path from "node:path";
import { PassThrough, Readable, type Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Config } from "../config.ts";
import { ARCHIVE_ERRORS, ArchiveError } from "./errors.ts";

/** Archive files hold every audited value, masked columns aside: readable by the owning OS user only. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

export interface ArchiveStore {
  /** file:///abs/path or s3://bucket/prefix */
  readonly url: string;
  /** Where an object is, for people: a local path, or its s3:// URL. */
  locate(name: string): string;
  /** Writes an object from a stream (or a whole text), visible under its name only once complete. */
  put(name: string, body: Readable | string): Promise<void>;
  /** Streams an object; rejects with an ArchiveError naming it when it does not exist. */
  get(name: string): Promise<Readable>;
  /** An object whole, or null when it does not exist (manifests, seal copies). */
  read(name: string): Promise<Buffer | null>;
  /** Names of all objects under a folder (`seals/`, `parquet/`; "" for all), relative to the store, sorted. */
  list(folder: string): Promise<string[]>;
  /** Adds text to the end of an object, creating it (the seal copies, which only ever grow). */
  append(name: string, text: string): Promise<void>;
  /** A local directory holding the objects, when the store is one (DuckDB reads it in place). */
  readonly localRoot: string | null;
  /** Releases connections (the S3 client's sockets). */
  close(): void;
}

const notFound = (where: string) =>
  new ArchiveError(`archive: ${where} does not exist`, ARCHIVE_ERRORS.wrongState, "check AUDIT_ARCHIVE_URL (or AUDIT_ARCHIVE_DIR)");

export function fileStore(dir: string): ArchiveStore {
  const root = path.resolve(dir);
  const at = (name: string) => path.join(root, ...name.split("/").filter(Boolean));
  const ensureParent = (file: string) => mkdir(path.dirname(file), { recursive: true, mode: DIR_MODE });
  return {
    url: pathToFileURL(root).href,
    localRoot: root,
    close() {},
    locate: at,
    async put(name, body) {
      const file = at(name);
      const partial = `${file}.partial`;
      await ensureParent(file);
      await pipeline(typeof body === "string" ? Readable.from([body]) : body, createWriteStream(partial, { mode: FILE_MODE }));
      await fsyncFile(partial);
      await rename(partial, file);
    },
    async get(name) {
      const file = at(name);
      const stream = createReadStream(file);
      await new Promise<void>((resolve, reject) => {
        stream.once("open", () => resolve());
        stream.once("error", (error: NodeJS.ErrnoException) => reject(error.code === "ENOENT" ? notFound(file) : error));
      });
      return stream;
    },
    async read(name) {
      return readFile(at(name)).catch((error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return null;
        throw error;
      });
    },
    async list(folder) {
      const entries = await readdir(at(folder), { recursive: true, withFileTypes: true }).catch((error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return [];
        throw error;
      });
      return entries
        .filter((e) => e.isFile() && !e.name.endsWith(".partial"))
        .map((e) => path.relative(root, path.join(e.parentPath, e.name)).split(path.sep).join("/"))
        .sort();
    },
    async append(name, text) {
      const file = at(name);
      await ensureParent(file);
      await appendFile(file, text, { mode: FILE_MODE });
      await fsyncFile(file);
    },
  };
}

export interface S3Settings {
  /** AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; unset: AWS itself. */
  endpoint: string | undefined;
  region: string | undefined;
  forcePathStyle: boolean;
}

/** Part size of multipart uploads; with QUEUE_SIZE parts in flight, memory stays flat at about 16 MB. */
const PART_SIZE = 8 * 2 ** 20;
const QUEUE_SIZE = 2;

export function s3Store(url: string, settings: S3Settings): ArchiveStore {
  const parsed = new URL(url);
  const bucket = parsed.hostname;
  const prefix = parsed.pathname.replace(/^\/+|\/+$/g, "");
  const key = (name: string) => (prefix ? `${prefix}/${name}` : name);
  const client = new S3Client({
    endpoint: settings.endpoint,
    region: settings.region ?? "us-east-1",
    forcePathStyle: settings.forcePathStyle,
    // Our own SHA-256 covers every object and is checked by reading it back; the SDK's default extra
    // checksums (aws-chunked trailers) are not understood by every S3-compatible server.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    // Credentials: the SDK's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles).
  });
  const located = (name: string) => `s3://${bucket}/${key(name)}`;
  const read = async (name: string): Promise<Buffer | null> => {
    try {
      const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key(name) }));
      return Buffer.from(await response.Body!.transformToByteArray());
    } catch (error) {
      if (error instanceof NoSuchKey || (error as { name?: string }).name === "NoSuchKey") return null;
      throw error;
    }
  };
  return {
    url: `s3://${bucket}${prefix ? `/${prefix}` : ""}`,
    localRoot: null,
    close: () => client.destroy(),
    locate: located,
    async put(name, body) {
      if (typeof body === "string") {
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: key(name), Body: body }));
        return;
      }
      // Parts are uploaded as the stream produces them; a failed upload is aborted (its parts deleted).
      await new Upload({ client, params: { Bucket: bucket, Key: key(name), Body: body }, partSize: PART_SIZE, queueSize: QUEUE_SIZE }).done();
    },
    async get(name) {
      try {
        const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key(name) }));
        return response.Body as Readable;
      } catch (error) {
        if (error instanceof NoSuchKey || (error as { name?: string }).name === "NoSuchKey") throw notFound(located(name));
        throw error;
      }
    },
    read,
    async list(folder) {
      const names: string[] = [];
      const start = folder ? key(folder.replace(/\/?$/, "/")) : prefix ? `${prefix}/` : "";
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: start, ContinuationToken: token }));
        for (const object of page.Contents ?? []) if (object.Key) names.push(object.Key.slice(prefix ? prefix.length + 1 : 0));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return names.sort();
    },
    async append(name, text) {
      // Objects cannot grow in place: write the old content plus the new lines as a new version. With
      // versioning and object lock on the bucket, every earlier version stays as it was (see docs/runbook.md).
      const existing = (await read(name)) ?? Buffer.alloc(0);
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key(name), Body: Buffer.concat([existing, Buffer.from(text)]) }));
    },
  };
}

/** Writes `source` through `transforms` (counting, compressing, hashing) into an object; errors anywhere fail the put. */
export async function putThrough(store: ArchiveStore, name: string, source: Readable, ...transforms: Transform[]): Promise<void> {
  const body = new PassThrough();
  const flowing = pipeline([source, ...transforms, body]);
  try {
    await Promise.all([store.put(name, body), flowing]);
  } catch (error) {
    source.destroy();
    body.destroy();
    throw error;
  }
}

/** The store AUDIT_ARCHIVE_URL names (unset: file:// + AUDIT_ARCHIVE_DIR). */
export function openArchiveStore(config: Pick<Config, "archiveUrl" | "s3">): ArchiveStore {
  const url = config.archiveUrl;
  if (url.startsWith("file://")) return fileStore(fileURLToPath(url));
  if (url.startsWith("s3://")) return s3Store(url, config.s3);
  throw new ArchiveError(`archive: AUDIT_ARCHIVE_URL "${url}" is neither file:///absolute/path nor s3://bucket/prefix`,
    ARCHIVE_ERRORS.invalidValue, "e.g. AUDIT_ARCHIVE_URL=s3://audit-archive/prod");
}

export async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
