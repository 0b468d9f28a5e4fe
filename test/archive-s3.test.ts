// Archives in an S3-compatible bucket (issue 16, items 1 and 2), against a real S3 server (s3rver) that
// this file starts on loopback: multipart upload, resume after a killed upload, read back before the drop,
// restore and verify from the bucket, seal copies there too, and SQL over the Parquet copies.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
// @ts-expect-error s3rver ships no types
import S3rver from "s3rver";
import { archiveMonth, restoreMonth, verifyArchive } from "../src/archive/archive.ts";
import { archiveNames } from "../src/archive/files.ts";
import { queryArchive } from "../src/archive/parquet.ts";
import { openArchiveStore, type ArchiveStore } from "../src/archive/store.ts";
import { readConfig } from "../src/config.ts";
import { sealDays, verifySeals } from "../src/seals/seals.ts";
import { createTestDatabase, errorOf, monthsAgo, type TestDatabase } from "./helpers.ts";

const PORT = 3300;
const BUCKET = "audit-archive";
const env = {
  AUDIT_ARCHIVE_URL: `s3://${BUCKET}/prod/trail`, AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${PORT}`, AUDIT_S3_FORCE_PATH_STYLE: "1",
  AWS_REGION: "us-east-1",
};

let db: TestDatabase;
let base: string;
let server: { run(): Promise<unknown>; close(): Promise<void>; middleware: unknown[] };
const partsReceived: string[] = [];
let store: ArchiveStore;
let s3: S3Client;
let smallAsLogged: Record<string, unknown>[];

const big = monthsAgo(3);
const small = monthsAgo(2);

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "cartop-s3-"));
  // s3rver's built-in account; the SDK reads credentials from the usual variables.
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" });
  server = new S3rver({ address: "127.0.0.1", port: PORT, silent: true, directory: path.join(base, "s3"), configureBuckets: [{ name: BUCKET }] });
  // Counts, at the server, the parts of multipart uploads it receives (s3rver is a Koa app).
  server.middleware.unshift(async (ctx: { method: string; query: Record<string, string>; path: string }, next: () => Promise<void>) => {
    if (ctx.method === "PUT" && ctx.query.uploadId && ctx.query.partNumber) partsReceived.push(ctx.path);
    await next();
  });
  await server.run();
  s3 = new S3Client({ endpoint: env.AWS_ENDPOINT_URL_S3, region: "us-east-1", forcePathStyle: true });
  store = openArchiveStore(readConfig(env));
  db = await createTestDatabase();
  await db.pool.query(`create table public.products (id integer primary key, name text); select audit.enable_tracking('public.products');`);
  const { rows: [{ id: productsId }] } = await db.pool.query(
    `select id from audit_private.tables where schema_name = 'public' and table_name = 'products'`);
  // `big`: 130k rows of incompressible text (well over one 8 MB upload part once gzipped); `small`: awkward values.
  for (const month of [big, small]) await db.pool.query(`select audit.create_partition($1::date)`, [month]);
  await db.pool.query(
    `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, user_id, db_user)
     select $1::timestamptz + g * interval '15 seconds', 1000 + g, $2, 'I', g::text,
            jsonb_build_object('id', g, 'name', md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)), 'user-' || (g % 10), 'owner'
     from generate_series(1, 130000) g`, [big, productsId]);
  await db.pool.query(
    `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, delta, user_id, ip_address,
                                            metadata, db_user, application_name)
     select $1::timestamptz + g * interval '1 hour' + interval '0.123456 seconds', 5000 + g, $2, (array['I','U','D'])[1 + g % 3]::"char",
            g::text, jsonb_build_object('id', g, 'name', E'quote '' dq " back\\\\slash\\nnew line ünïcødé', 'n', g * 1.5),
            case when g % 3 = 1 then jsonb_build_object('name', 'renamed ' || g) end,
            case when g % 2 = 0 then 'user-' || g end, case when g % 5 = 0 then '10.0.0.1'::inet end,
            case when g % 7 = 0 then '{"k": [1, null]}'::jsonb end, 'owner', case when g % 4 = 0 then '' end
     from generate_series(1, 200) g`, [small, productsId]);
  await sealDays(db.pool, { store });
  // What audit.log shows for `small`, to compare with its Parquet copy once archived.
  ({ rows: smallAsLogged } = await db.pool.query(
    `select id::text, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') as created_at, entity_schema, entity_name,
            entity_id, action, old_value::text, new_value::text, changes::text, user_id, ip_address, metadata::text, application_name
       from audit.log where created_at >= $1::date and created_at < $1::date + interval '1 month' order by id`, [small]));
}, 300_000);
afterAll(async () => {
  await db?.drop();
  await server?.close();
  s3?.destroy();
  store?.close();
  await rm(base, { recursive: true, force: true });
});

/** Every stored column of every row of a month, as text, in id order. */
async function digestOfMonth(month: string): Promise<{ rows: number; md5: string }> {
  const { rows } = await db.pool.query(
    `select count(*)::int as rows, md5(coalesce(string_agg(e::text, E'\\n' order by id), '')) as md5
       from audit_private.log_entries e where created_at >= $1::date and created_at < $1::date + interval '1 month'`, [month]);
  return rows[0];
}
const key = (name: string) => `prod/trail/${name}`;

describe("archives in an S3 bucket", () => {
  test("a killed upload leaves no object; the next run uploads once (multipart), reads it back, drops the month; restore brings it back", async () => {
    const label = big.slice(0, 7);
    const before = await digestOfMonth(big);
    expect(before.rows).toBe(130000);
    const crash = await errorOf(archiveMonth(db.pool, big, { store, onRows: (rows) => { if (rows > 60000) throw new Error("killed mid-upload"); } }));
    expect(crash.message).toBe("killed mid-upload");
    const { rows: [{ status }] } = await db.pool.query(`select status from audit.archives where month = $1`, [big]);
    expect(status).toBe("exporting");
    expect(await store.list("")).not.toContain(archiveNames(label).data);

    const result = await archiveMonth(db.pool, big, { store });
    expect(result).toMatchObject({ month: label, rows: 130000, status: "archived", file: `s3://${BUCKET}/prod/trail/audit-${label}.copy.gz` });
    expect(result.bytes).toBeGreaterThan(8 * 2 ** 20);
    // Uploaded in parts (8 MB each) as the export streamed, not buffered whole.
    const dataPath = `/${BUCKET}/${key(archiveNames(label).data)}`;
    expect(partsReceived.filter((p) => p === dataPath).length).toBeGreaterThanOrEqual(2);
    const head = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key(archiveNames(label).data) }));
    expect(head.ContentLength).toBe(result.bytes);
    expect((await store.list("")).filter((n) => n.includes(label))).toEqual([
      `audit-${label}.copy.gz`, `audit-${label}.manifest.json`, `parquet/month=${label}/audit-${label}.parquet`, `seals/${label}.jsonl`]);
    const { rows: [recorded] } = await db.pool.query(`select location, parquet_sha256 is not null as parquet from audit.archives where month = $1`, [big]);
    expect(recorded).toEqual({ location: `s3://${BUCKET}/prod/trail`, parquet: true });
    expect((await db.pool.query(`select present from audit_private.partition_state($1::date)`, [big])).rows[0].present).toBe(false);

    expect(await verifyArchive(db.pool, big, { store })).toMatchObject({ ok: true, problem: null });
    expect(await restoreMonth(db.pool, big, { store })).toMatchObject({ rows: 130000 });
    expect(await digestOfMonth(big)).toEqual(before);
    // Seal copies live in the bucket too, and verify reads them there.
    expect((await store.list("seals/")).length).toBeGreaterThan(0);
    expect(await verifySeals(db.pool, { store })).toMatchObject({ problems: [] });
  }, 300_000);

  test("an object replaced in the bucket is refused by restore and verify; nothing changes", async () => {
    const label = small.slice(0, 7);
    await archiveMonth(db.pool, small, { store });
    const name = key(archiveNames(label).data);
    const genuine = await (await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: name }))).Body!.transformToByteArray();
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: name, Body: Buffer.from("forged") }));
    try {
      const error = await errorOf(restoreMonth(db.pool, small, { store }));
      expect(error.message).toMatch(new RegExp(`^refusing to restore ${label}: checksum mismatch: .* Nothing was changed\\.$`));
      expect(await verifyArchive(db.pool, small, { store })).toMatchObject({ ok: false, problem: expect.stringMatching(/^checksum mismatch/) });
      expect((await db.pool.query(`select present from audit_private.partition_state($1::date)`, [small])).rows[0].present).toBe(false);
    } finally {
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: name, Body: genuine }));
    }
    expect(await verifyArchive(db.pool, small, { store })).toMatchObject({ ok: true });
  });
});

describe("archive query over the Parquet copies", () => {
  test("audit_log has audit.log's columns and exactly its rows and values", async () => {
    // `small` is archived (previous test): only its Parquet copy holds it now.
    expect((await db.pool.query(`select present from audit_private.partition_state($1::date)`, [small])).rows[0].present).toBe(false);
    const result = await queryArchive(store,
      `select id::varchar as id, strftime(created_at at time zone 'UTC', '%Y-%m-%d %H:%M:%S.%f') as created_at, entity_schema,
              entity_name, entity_id, action, old_value::varchar as old_value, new_value::varchar as new_value,
              changes::varchar as changes, user_id, ip_address, metadata::varchar as metadata, application_name
         from audit_log where created_at >= '${small}' and created_at < '${monthsAgo(1)}' order by id`);
    expect(result.rows).toEqual(smallAsLogged);
    expect(smallAsLogged).toHaveLength(200);

    const { columns } = await queryArchive(store, "select * from audit_log limit 1");
    const { rows: logColumns } = await db.pool.query(
      `select attname::text as name from pg_attribute where attrelid = 'audit.log'::regclass and attnum > 0 order by attnum`);
    expect(columns).toEqual(logColumns.map((c) => c.name));
  });

  test("who changed product 42, over every archived month, without a restore", async () => {
    const result = await queryArchive(store,
      "select user_id, action, count(*)::int as n from audit_log where entity_name = 'products' and entity_id = '42' group by all order by all");
    expect(result.rows).toEqual([{ user_id: "user-2", action: "INSERT", n: 1 }, { user_id: "user-42", action: "INSERT", n: 1 }]);
  });

  test("only one SELECT runs, and it cannot touch other files", async () => {
    const marker = path.join(base, "written-by-query");
    for (const [sql, message] of [
      ["create table copied as select * from audit_log", "archive query: only SELECT (or EXPLAIN) statements are run over archives"],
      [`select 1; select 2`, "archive query: expected one SQL statement, got 2"],
    ] as const) {
      expect((await errorOf(queryArchive(store, sql))).message).toBe(message);
    }
    // Refused when prepared (no file access) or by the SELECT-only rule, whichever DuckDB reaches first.
    for (const sql of [`copy (select * from audit_log) to '${marker}'`, "select * from read_csv('/etc/passwd')", "install httpfs"]) {
      expect((await errorOf(queryArchive(store, sql))).message).toMatch(
        /^(Permission Error: Cannot access (file|directory) .* file system operations are disabled by configuration|archive query: only SELECT)/);
    }
    expect(existsSync(marker)).toBe(false);
  });
});

test("AUDIT_ARCHIVE_URL: unset is the archive directory; anything but file:///abs or s3://bucket is refused", () => {
  expect(readConfig({ AUDIT_ARCHIVE_DIR: "/srv/archive" }).archiveUrl).toBe("file:///srv/archive");
  expect(readConfig({ AUDIT_ARCHIVE_URL: "s3://b/p/" }).archiveUrl).toBe("s3://b/p");
  for (const bad of ["/srv/archive", "file://host/x", "s3://", "http://x/y"]) {
    expect(() => readConfig({ AUDIT_ARCHIVE_URL: bad })).toThrow(`AUDIT_ARCHIVE_URL must be file:///absolute/path or s3://bucket/prefix, got "${bad}"`);
  }
  // Credentials in the URL are refused, and the refusal does not print them.
  for (const bad of ["s3://:s3cret@bucket/p", "s3://AKIA:s3cret@bucket", "s3://AKIA@bucket"]) {
    expect(() => readConfig({ AUDIT_ARCHIVE_URL: bad })).toThrow(`AUDIT_ARCHIVE_URL must be file:///absolute/path or s3://bucket/prefix, got "s3://…@${bad.split("@")[1]}"`);
  }
});
