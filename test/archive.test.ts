// Archive and restore of whole months: exact content back, checksums enforced, resumable after a crash.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { archiveMonth, restoreMonth, verifyArchive, type ArchiveStep } from "../src/archive/archive.ts";
import { archivePaths, readManifest } from "../src/archive/files.ts";
import { createTestDatabase, errorOf, type TestDatabase } from "./helpers.ts";
import { fileStore } from "../src/archive/store.ts";

let db: TestDatabase;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-archive-test-"));
  await db.pool.query(`create table public.orders (id serial primary key, total numeric); select audit.enable_tracking('public.orders');`);
});
afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

/** Fills an old month with `n` audit rows of awkward content (quotes, backslashes, newlines, NULLs, unicode). */
async function fillMonth(month: string, n: number): Promise<void> {
  await db.pool.query(`select audit.create_partition($1::date)`, [month]);
  await db.pool.query(
    `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, delta, user_id,
                                            ip_address, metadata, db_user, application_name)
     select $1::timestamptz + g * interval '37 seconds', 1000 + g / 10, 1,
            (array['I','U','D'])[1 + g % 3]::"char", g::text,
            jsonb_build_object('id', g, 'text', E'quote '' dq " back\\\\slash\\nnew line\\ttab ünïcødé', 'n', g * 1.5),
            case when g % 3 = 1 then jsonb_build_object('total', g) end,
            case when g % 2 = 0 then 'user-' || g end, case when g % 5 = 0 then '10.0.0.1'::inet end,
            case when g % 7 = 0 then '{"k": [1, null]}'::jsonb end, 'owner', null
     from generate_series(1, $2::int) g`,
    [month, n],
  );
}

/** A digest of every stored column of every row of a month, independent of physical order. */
async function digestOfMonth(month: string): Promise<{ rows: number; md5: string }> {
  const { rows } = await db.pool.query(
    `select count(*)::int as rows, md5(coalesce(string_agg(e::text, E'\\n' order by id), '')) as md5
       from audit_private.log_entries e
      where created_at >= $1::date and created_at < $1::date + interval '1 month'`,
    [month],
  );
  return rows[0];
}

async function partitionExists(month: string): Promise<boolean> {
  const { rows } = await db.pool.query(`select present from audit_private.partition_state($1::date)`, [month]);
  return rows[0].present;
}

async function archiveStatus(month: string): Promise<string | undefined> {
  const { rows } = await db.pool.query(`select status from audit.archives where month = $1`, [month]);
  return rows[0]?.status;
}

describe("archive and restore", () => {
  test("archive removes the partition and leaves a verified file; restore brings every row back unchanged", async () => {
    const month = "2024-01-01";
    await fillMonth(month, 5000);
    const before = await digestOfMonth(month);
    expect(before.rows).toBe(5000);

    const result = await archiveMonth(db.pool, month, { store: fileStore(dir) });
    expect(result).toMatchObject({ month: "2024-01", rows: 5000, status: "archived" });
    expect(await partitionExists(month)).toBe(false);
    expect((await digestOfMonth(month)).rows).toBe(0);

    const paths = archivePaths(dir, "2024-01");
    const manifest = await readManifest(fileStore(dir), path.basename(paths.manifest));
    const fileHash = createHash("sha256").update(await readFile(paths.data)).digest("hex");
    expect(manifest).toMatchObject({
      month: "2024-01", partition: "audit.log_2024_01", rows: 5000, sha256: fileHash, schemaVersion: 2,
      firstCreatedAt: "2024-01-01T00:00:37.000Z", lastCreatedAt: new Date(Date.UTC(2024, 0, 1) + 5000 * 37_000).toISOString(),
    });
    const { rows: [recorded] } = await db.pool.query(`select status, rows, sha256 from audit.archives where month = $1`, [month]);
    expect(recorded).toEqual({ status: "archived", rows: "5000", sha256: fileHash });
    expect(await verifyArchive(db.pool, month, { store: fileStore(dir) })).toMatchObject({ ok: true, problem: null });

    expect(await restoreMonth(db.pool, month, { store: fileStore(dir) })).toEqual({ month: "2024-01", rows: 5000, partition: "audit.log_2024_01" });
    expect(await digestOfMonth(month)).toEqual(before);
    const { rows } = await db.pool.query(`select count(*)::int as n from audit.log where created_at >= '2024-01-01' and created_at < '2024-02-01'`);
    expect(rows[0].n).toBe(5000);
    expect(await archiveStatus(month)).toBe("restored");
    // The restored partition is append-only like any other.
    await expect(db.pool.query(`delete from audit.log_2024_01`)).rejects.toThrow(/append-only/);

    // A restored month can be archived again.
    expect(await archiveMonth(db.pool, month, { store: fileStore(dir) })).toMatchObject({ rows: 5000, status: "archived", sha256: fileHash });
  });

  test("a truncated or altered file is refused by restore and verify, and nothing changes", async () => {
    const month = "2024-02-01";
    await fillMonth(month, 2000);
    await archiveMonth(db.pool, month, { store: fileStore(dir) });
    const paths = archivePaths(dir, "2024-02");
    const original = await readFile(paths.data);

    await truncate(paths.data, original.length - 100);
    const truncated = await errorOf(restoreMonth(db.pool, month, { store: fileStore(dir) }));
    expect(truncated.message).toMatch(/^refusing to restore 2024-02: checksum mismatch: .* Nothing was changed\.$/);
    expect(await verifyArchive(db.pool, month, { store: fileStore(dir) })).toMatchObject({ ok: false, problem: expect.stringMatching(/^checksum mismatch/) });

    const altered = Buffer.from(original);
    altered[altered.length >> 1] = altered[altered.length >> 1]! ^ 0xff;
    await writeFile(paths.data, altered);
    expect((await errorOf(restoreMonth(db.pool, month, { store: fileStore(dir) }))).message).toMatch(/checksum mismatch/);
    expect(await verifyArchive(db.pool, month, { store: fileStore(dir) })).toMatchObject({ ok: false });

    expect(await partitionExists(month)).toBe(false);
    expect(await archiveStatus(month)).toBe("archived");
    await writeFile(paths.data, original);
    expect(await verifyArchive(db.pool, month, { store: fileStore(dir) })).toMatchObject({ ok: true });
  });

  test("an empty month archives (with an empty Parquet copy) and restores", async () => {
    const month = "2024-04-01";
    await db.pool.query(`select audit.create_partition($1::date)`, [month]);
    expect(await archiveMonth(db.pool, month, { store: fileStore(dir) })).toMatchObject({ rows: 0, status: "archived" });
    expect(existsSync(archivePaths(dir, "2024-04").parquet)).toBe(true);
    expect(await verifyArchive(db.pool, month, { store: fileStore(dir) })).toMatchObject({ ok: true });
    expect(await restoreMonth(db.pool, month, { store: fileStore(dir) })).toMatchObject({ rows: 0 });
  });

  test("restore refuses a month whose partition already holds rows", async () => {
    const month = "2024-03-01";
    await fillMonth(month, 10);
    await archiveMonth(db.pool, month, { store: fileStore(dir) });
    await restoreMonth(db.pool, month, { store: fileStore(dir) });
    const error = await errorOf(restoreMonth(db.pool, month, { store: fileStore(dir) }));
    expect(error.message).toBe("refusing to restore 2024-03: audit.log_2024_03 already holds 10 rows. Nothing was changed.");
    expect((await digestOfMonth(month)).rows).toBe(10);
  });
});

describe("crash at each step, then run again", () => {
  const steps: ArchiveStep[] = ["exported", "verified", "detached", "archived"];

  test.each(steps.map((step, i) => [step, `2023-0${i + 1}-01`]))("killed after %s", async (step, month) => {
    await fillMonth(month, 3000);
    const before = await digestOfMonth(month);
    const crash = await errorOf(archiveMonth(db.pool, month, {
      store: fileStore(dir), afterStep: (done) => { if (done === step) throw new Error(`simulated crash after ${step}`); },
    }));
    expect(crash.message).toBe(`simulated crash after ${step}`);
    expect(await archiveStatus(month)).toBe(step);

    const result = await archiveMonth(db.pool, month, { store: fileStore(dir) });
    expect(result).toMatchObject({ rows: 3000, status: "archived" });
    expect(await partitionExists(month)).toBe(false);
    const label = month.slice(0, 7);
    expect((await readdir(dir)).filter((f) => f.includes(label)).sort()).toEqual(
      [`audit-${label}.copy.gz`, `audit-${label}.manifest.json`]);

    await restoreMonth(db.pool, month, { store: fileStore(dir) });
    expect(await digestOfMonth(month)).toEqual(before);
  });

  test("killed in the middle of the export: the partial file is replaced, nothing is lost", async () => {
    const month = "2023-06-01";
    await fillMonth(month, 20000);
    const before = await digestOfMonth(month);
    const crash = await errorOf(archiveMonth(db.pool, month, {
      store: fileStore(dir), onRows: (rows) => { if (rows > 5000) throw new Error("simulated crash during export"); },
    }));
    expect(crash.message).toBe("simulated crash during export");
    expect(await archiveStatus(month)).toBe("exporting");
    expect(await partitionExists(month)).toBe(true);

    await archiveMonth(db.pool, month, { store: fileStore(dir) });
    expect(existsSync(archivePaths(dir, "2023-06").partial)).toBe(false);
    await restoreMonth(db.pool, month, { store: fileStore(dir) });
    expect(await digestOfMonth(month)).toEqual(before);
  });

  test("rows written to the month after its export send it back to export instead of being dropped", async () => {
    const month = "2023-07-01";
    await fillMonth(month, 100);
    await errorOf(archiveMonth(db.pool, month, {
      store: fileStore(dir), afterStep: async (done) => {
        if (done !== "verified") return;
        await db.pool.query(`insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
                             values ('2023-07-15', 1, 1, 'I', 'late', '{}', 'owner')`);
        throw new Error("stop after verify");
      },
    }));
    const error = await errorOf(archiveMonth(db.pool, month, { store: fileStore(dir) }));
    expect(error.message).toBe("audit: partition audit.log_2023_07 holds 101 rows but its archive has 100; export it again");
    expect(await archiveStatus(month)).toBe("exporting");
    expect(await archiveMonth(db.pool, month, { store: fileStore(dir) })).toMatchObject({ rows: 101, status: "archived" });
  });
});

test("archiving while another connection keeps writing: no failed write, no lost audit row", async () => {
  const month = "2022-12-01";
  await fillMonth(month, 50000);
  const writer = new pg.Client({ connectionString: db.url });
  await writer.connect();
  let writes = 0;
  let failures = 0;
  let archiving = true;
  const writing = (async () => {
    while (archiving) {
      try {
        await writer.query(`insert into public.orders (total) values (1)`);
        writes++;
      } catch {
        failures++;
      }
    }
  })();
  try {
    await archiveMonth(db.pool, month, { store: fileStore(dir), lockTimeoutMs: 200 });
  } finally {
    archiving = false;
    await writing;
    await writer.end();
  }
  expect(failures).toBe(0);
  expect(writes).toBeGreaterThan(0);
  const { rows } = await db.pool.query(
    `select (select count(*)::int from public.orders) as orders,
            (select count(*)::int from audit.log where entity_name = 'orders' and action = 'INSERT') as audited`);
  expect(rows[0].audited).toBe(rows[0].orders);
  expect(await partitionExists(month)).toBe(false);
});
