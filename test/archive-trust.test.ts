// Attacks on the archive path (issue 12, findings 6 and 7): whoever can write the archive directory must not
// be able to put forged rows back into the trail, nor make restore run SQL of their choosing. The database's
// record of the month (audit.archives) and the seals are the reference; the manifest beside the file is not.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { archiveMonth, restoreMonth, verifyArchive } from "../src/archive/archive.ts";
import { archivePaths, readManifest } from "../src/archive/files.ts";
import { sealDays, verifySeals } from "../src/seals/seals.ts";
import { createTestDatabase, errorOf, monthsAgo, type TestDatabase } from "./helpers.ts";
import { fileStore } from "../src/archive/store.ts";

let db: TestDatabase;
let base: string;
let dir: string;

const month = monthsAgo(2);
const label = month.slice(0, 7);

beforeAll(async () => {
  db = await createTestDatabase();
  base = await mkdtemp(path.join(os.tmpdir(), "cartop-archive-trust-"));
  dir = path.join(base, "archive");
  await db.pool.query(`create table public.orders (id serial primary key, total numeric); select audit.enable_tracking('public.orders');`);
  // A month of rows, then every finished day sealed (the chain starts at the oldest partition: this month).
  await db.pool.query(`select audit.create_partition($1::date)`, [month]);
  await db.pool.query(
    `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, user_id, db_user)
     select $1::timestamptz + g * interval '7 minutes', 1000 + g, 1, 'I', g::text, jsonb_build_object('id', g, 'total', g * 10),
            'user-' || (g % 10), 'owner'
     from generate_series(1, 2000) g`, [month]);
  await sealDays(db.pool, { store: fileStore(dir) });
  await archiveMonth(db.pool, month, { store: fileStore(dir) });
});
afterAll(async () => {
  await db?.drop();
  await rm(base, { recursive: true, force: true });
});

async function state() {
  const { rows: [row] } = await db.pool.query(
    `select (select present from audit_private.partition_state($1::date)) as partition_present,
            (select status from audit.archives where month = $1) as status,
            (select count(*)::int from audit.log where created_at >= $1::date and created_at < $1::date + interval '1 month') as rows`,
    [month]);
  return row;
}
const archivedUntouched = { partition_present: false, status: "archived", rows: 0 };

/** Keeps the genuine files aside and puts them back after each attack. */
async function withForgery(forge: (paths: ReturnType<typeof archivePaths>) => Promise<void>, check: () => Promise<void>) {
  const paths = archivePaths(dir, label);
  const data = await readFile(paths.data);
  const manifest = await readFile(paths.manifest);
  try {
    await forge(paths);
    await check();
  } finally {
    await writeFile(paths.data, data);
    await writeFile(paths.manifest, manifest);
  }
}

/** Rewrites the file with one row's content changed and updates the manifest to match it exactly. */
async function forgeConsistently(paths: ReturnType<typeof archivePaths>) {
  const text = gunzipSync(await readFile(paths.data)).toString("utf8");
  const forged = text.replace(/"total": 70\b/, `"total": 99`);
  expect(forged).not.toBe(text);
  const compressed = gzipSync(Buffer.from(forged, "utf8"));
  await writeFile(paths.data, compressed);
  const manifest = await readManifest(fileStore(dir), path.basename(paths.manifest));
  await writeFile(paths.manifest, JSON.stringify({
    ...manifest, sha256: createHash("sha256").update(compressed).digest("hex"), bytes: compressed.length,
  }));
}

describe("restore trusts the database's record, not the manifest", () => {
  test("a file and manifest edited to agree with each other are refused by restore and verify; nothing changes", async () => {
    await withForgery(forgeConsistently, async () => {
      const error = await errorOf(restoreMonth(db.pool, month, { store: fileStore(dir) }));
      expect(error.message).toMatch(new RegExp(
        `^refusing to restore ${label}: checksum mismatch: the file's SHA-256 is [0-9a-f]{64}, audit\\.archives records [0-9a-f]{64}\\. Nothing was changed\\.$`));
      expect(error).toMatchObject({ code: "XX001", hint: expect.stringMatching(/altered or replaced/) });
      expect(await verifyArchive(db.pool, month, { store: fileStore(dir) })).toMatchObject({ ok: false, problem: expect.stringMatching(/^checksum mismatch/) });
      expect(await state()).toEqual(archivedUntouched);
    });
  });

  test("with audit.archives forged too, the seals refuse the restore; nothing changes", async () => {
    const { rows: [{ sha256 }] } = await db.pool.query(`select sha256 from audit.archives where month = $1`, [month]);
    await withForgery(async (paths) => {
      await forgeConsistently(paths);
      const forged = await readManifest(fileStore(dir), path.basename(paths.manifest));
      await db.pool.query(`update audit.archives set sha256 = $2, bytes = $3 where month = $1`, [month, forged.sha256, forged.bytes]);
    }, async () => {
      const error = await errorOf(restoreMonth(db.pool, month, { store: fileStore(dir) }));
      expect(error.message).toMatch(new RegExp(
        `^refusing to restore ${label}: its rows do not match their seals \\(\\d{4}-\\d{2}-\\d{2}: rows differ from what was sealed \\(same count, \\d+\\)\\)\\. Nothing was changed\\.$`));
      expect(error.code).toBe("XX001");
      expect(await state()).toEqual(archivedUntouched);
    }).finally(() => db.pool.query(`update audit.archives set sha256 = $2 where month = $1`, [month, sha256]));
  });

  test("a manifest whose columns smuggle COPY … FROM PROGRAM is refused, and the command never runs", async () => {
    const marker = path.join(os.tmpdir(), `cartop-pwned-${process.pid}-${Date.now()}`);
    await withForgery(async (paths) => {
      const manifest = await readManifest(fileStore(dir), path.basename(paths.manifest));
      // Old restore code pasted this list into `copy … (<columns>) from stdin`.
      const columns = [...manifest.columns.slice(0, -1), `application_name) from program 'touch ${marker}' --`];
      await writeFile(paths.manifest, JSON.stringify({ ...manifest, columns }));
    }, async () => {
      const error = await errorOf(restoreMonth(db.pool, month, { store: fileStore(dir) }));
      expect(error.message).toMatch(new RegExp(`^refusing to restore ${label}: the manifest lists columns .*from program.*, archive format \\d+ has .*\\. Nothing was changed\\.$`));
      expect(error.code).toBe("XX001");
      expect(existsSync(marker)).toBe(false);
      expect(await state()).toEqual(archivedUntouched);
    });
  });

  test("a month the database has no record of is refused (a file brought from elsewhere)", async () => {
    const other = monthsAgo(30);
    const error = await errorOf(restoreMonth(db.pool, other, { store: fileStore(dir) }));
    expect(error.message).toBe(`refusing to restore ${other.slice(0, 7)}: audit.archives has no record of it, so there is nothing to check ` +
      "the file against. Nothing was changed.");
    expect(error).toMatchObject({ code: "55000", hint: expect.stringMatching(/database that archived the month/) });
  });
});

test("a restored month whose rows no longer match their seals is never archived again", async () => {
  // The old hole: a forged month restored (here: written straight into the partition by a superuser) was
  // re-archived with a fresh checksum, after which every check passed.
  await db.pool.query(`select audit.create_partition($1::date)`, [month]);
  await db.pool.query(
    `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
     select $1::timestamptz + g * interval '7 minutes', 1000 + g, 1, 'I', g::text, jsonb_build_object('id', g, 'total', 0), 'owner'
     from generate_series(1, 2000) g`, [month]);
  await db.pool.query(`update audit.archives set status = 'restored' where month = $1`, [month]);
  const { rows: [{ sha256 }] } = await db.pool.query(`select sha256 from audit.archives where month = $1`, [month]);

  const error = await errorOf(archiveMonth(db.pool, month, { store: fileStore(dir) }));
  expect(error.message).toMatch(new RegExp(`^refusing to archive ${label}: its rows do not match their seals \\(${label}-01: rows differ`));
  expect(error).toMatchObject({ code: "XX001", hint: expect.stringMatching(/stays in the database/) });
  expect(await state()).toEqual({ partition_present: true, status: "exporting", rows: 2000 });
  const { rows: [after] } = await db.pool.query(`select sha256, last_error from audit.archives where month = $1`, [month]);
  expect(after.last_error).toMatch(/do not match their seals/);
  // The genuine archive is still what the database records, and `verify` names the forged days.
  expect(after.sha256).toBe(sha256);
  expect((await verifySeals(db.pool, { store: fileStore(dir) })).firstBadDay).toBe(month);
});

test("archive files and seal copies are readable by their owner only", async () => {
  const paths = archivePaths(dir, label);
  const mode = async (file: string) => (await stat(file)).mode & 0o777;
  expect(await mode(paths.data)).toBe(0o600);
  expect(await mode(paths.manifest)).toBe(0o600);
  expect(await mode(path.join(dir, "seals", `${label}.jsonl`))).toBe(0o600);
  expect(await mode(path.join(dir, "seals"))).toBe(0o700);
  expect(await mode(dir)).toBe(0o700);
});
