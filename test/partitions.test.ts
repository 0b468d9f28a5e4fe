// Monthly partitions: premade ahead, idempotent, race-safe, UTC months, and nothing lost outside them.
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "@jest/globals";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`create table public.things (id integer primary key, v text); select audit.enable_tracking('public.things');`);
});
afterAll(async () => db?.drop());

/** `log_YYYY_MM` for the UTC month `offset` months from now. */
function monthName(offset: number): string {
  const now = new Date();
  const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
  return `log_${d.getUTCFullYear()}_${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

async function monthlyPartitions(): Promise<string[]> {
  const { rows } = await db.pool.query<{ partition_name: string }>(
    `select partition_name from audit.partitions where not is_default order by range_start`,
  );
  return rows.map((r) => r.partition_name);
}

async function dropMonthlyPartitions(): Promise<void> {
  for (const name of await monthlyPartitions()) await db.pool.query(`drop table audit.${name}`);
}

describe("ensure_partitions", () => {
  beforeEach(dropMonthlyPartitions);

  test("creates the current month and N ahead, and is idempotent", async () => {
    const first = await db.pool.query(`select * from audit.ensure_partitions(2) as name`);
    expect(first.rows.map((r) => r.name)).toEqual([monthName(0), monthName(1), monthName(2)]);
    const second = await db.pool.query(`select * from audit.ensure_partitions(2) as name`);
    expect(second.rows).toEqual([]);
    const { rows } = await db.pool.query(
      `select partition_name, range_start, range_end, is_default from audit.partitions order by is_default, range_start`,
    );
    const now = new Date();
    expect(rows[0]).toEqual({
      partition_name: monthName(0),
      range_start: new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)),
      range_end: new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)),
      is_default: false,
    });
    expect(rows.map((r) => r.partition_name)).toEqual([monthName(0), monthName(1), monthName(2), "log_default"]);
  });

  test("two sessions racing both succeed and create each month once", async () => {
    const [a, b] = await Promise.all([
      db.pool.query(`select * from audit.ensure_partitions(5) as name`),
      db.pool.query(`select * from audit.ensure_partitions(5) as name`),
    ]);
    const created = [...a.rows, ...b.rows].map((r) => r.name).sort();
    expect(created).toEqual([0, 1, 2, 3, 4, 5].map(monthName));
    expect(await monthlyPartitions()).toEqual([0, 1, 2, 3, 4, 5].map(monthName));
  });

  test("gives up after its lock_timeout (2 s) when a transaction holds the trail, instead of stalling every audited write behind it", async () => {
    await db.pool.query(`select audit.ensure_partitions(0)`);
    const reader = await db.pool.connect();
    try {
      // An auditor's transaction left open after reading the trail.
      await reader.query(`begin; select count(*) from audit.log`);
      await expect(db.pool.query(`select * from audit.ensure_partitions(1)`)).rejects.toMatchObject({
        code: "55P03",
        // The month by pattern: the suite also runs a minute before a month turns.
        message: expect.stringMatching(/^audit\.ensure_partitions: could not add the partition for \d{4}-\d{2} within 2s: another transaction holds a lock on the audit trail$/),
      });
      // Audited writes go on (they waited at most those 2 s).
      await db.pool.query(`insert into public.things values (100, 'written after premake gave up')`);
    } finally {
      await reader.query(`commit`);
      reader.release();
    }
    const client = await db.pool.connect();
    try {
      await client.query(`begin; set local lock_timeout = '7s'`);
      const created = (await client.query<{ name: string }>(`select * from audit.ensure_partitions(1) as name`)).rows.map((r) => r.name);
      // Next month now exists (and, had the month turned meanwhile, the one after it as well).
      expect(created.length).toBeGreaterThan(0);
      expect(created.filter((name) => ![monthName(0), monthName(1)].includes(name))).toEqual([]);
      // The caller's own lock_timeout is back for the rest of its transaction.
      expect((await client.query(`show lock_timeout`)).rows).toEqual([{ lock_timeout: "7s" }]);
    } finally {
      await client.query(`commit`);
      client.release();
    }
  });

  test("refuses a negative horizon", async () => {
    await expect(db.pool.query(`select audit.ensure_partitions(-1)`)).rejects.toThrow(
      "audit.ensure_partitions: months_ahead must be >= 0, got -1",
    );
  });
});

describe("where rows land", () => {
  beforeAll(async () => {
    await dropMonthlyPartitions();
    await db.pool.query(`select audit.ensure_partitions(3)`);
  });

  test("a captured change lands in the current month's partition", async () => {
    await db.pool.query(`insert into public.things values (1, 'now')`);
    const { rows } = await db.pool.query(
      `select tableoid::regclass::text as part from audit_private.log_entries where entity_id = '1' and table_id =
         (select id from audit_private.tables where table_name = 'things')`,
    );
    expect(rows).toEqual([{ part: `audit.${monthName(0)}` }]);
  });

  test("months are UTC months whatever the session time zone", async () => {
    const { rows } = await db.pool.query(`
      set timezone = 'America/New_York';
      select audit.create_partition('2030-12-01');
      select audit.create_partition('2030-11-01');
      insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
      values ('2030-12-01 00:30:00+00', 1, 1, 'I', 'utc-edge', '{}', 'test');
      select tableoid::regclass::text as part, created_at at time zone 'UTC' as utc from audit_private.log_entries where entity_id = 'utc-edge';
    `).then((results) => (results as unknown as { rows: unknown[] }[]).at(-1)!);
    await db.pool.query(`reset timezone`);
    expect(rows).toEqual([{ part: "audit.log_2030_12", utc: new Date("2030-12-01T00:30:00") }]);
  });

  test("a row far outside the premade range is kept, then moved into its month when it is created", async () => {
    await db.pool.query(`
      insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
      values ('2041-05-10 12:00+00', 7, 1, 'I', 'far-future', '{"k": "v"}', 'test')`);
    const before = await db.pool.query(
      `select tableoid::regclass::text as part, to_jsonb(e) - 'tableoid' as row from audit_private.log_entries e where entity_id = 'far-future'`,
    );
    expect(before.rows[0].part).toBe("audit.log_default");
    await db.pool.query(`select audit.create_partition('2041-05-17')`);
    const after = await db.pool.query(
      `select tableoid::regclass::text as part, to_jsonb(e) - 'tableoid' as row from audit_private.log_entries e where entity_id = 'far-future'`,
    );
    expect(after.rows).toEqual([{ part: "audit.log_2041_05", row: before.rows[0].row }]);
    const { rows } = await db.pool.query(`select count(*)::int as n from audit.log_default`);
    expect(rows[0].n).toBe(0);
    // The re-created default partition is still append-only.
    await expect(db.pool.query(`truncate audit.log_default`)).rejects.toThrow(/append-only/);
  });

  test("when the current month has no partition, writes still succeed into the default, and ensure_partitions moves them", async () => {
    await db.pool.query(`drop table audit.${monthName(0)}`);
    await db.pool.query(`insert into public.things values (2, 'into default')`);
    const inDefault = await db.pool.query(`select count(*)::int as n from audit.log_default where entity_id = '2'`);
    expect(inDefault.rows[0].n).toBe(1);
    const created = await db.pool.query(`select * from audit.ensure_partitions(3) as name`);
    expect(created.rows.map((r) => r.name)).toEqual([monthName(0)]);
    const { rows } = await db.pool.query(
      `select tableoid::regclass::text as part from audit_private.log_entries where entity_id = '2'`,
    );
    expect(rows).toEqual([{ part: `audit.${monthName(0)}` }]);
  });

  test("create_partition refuses a null month", async () => {
    await expect(db.pool.query(`select audit.create_partition(null)`)).rejects.toThrow(
      "audit.create_partition: month must not be null",
    );
  });
});

describe("the default partition", () => {
  test("default_partition_months reports waiting rows; drain_default_partition moves them all", async () => {
    await db.pool.query(`
      insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
      values ('2039-01-05', 1, 1, 'I', 'a', '{}', 'test'), ('2039-01-20', 1, 1, 'I', 'b', '{}', 'test'),
             ('2039-03-01', 1, 1, 'I', 'c', '{}', 'test')`);
    const waiting = await db.pool.query(`select to_char(month, 'YYYY-MM') as month, rows::int from audit.default_partition_months()`);
    expect(waiting.rows).toEqual([{ month: "2039-01", rows: 2 }, { month: "2039-03", rows: 1 }]);
    const drained = await db.pool.query(`select * from audit.drain_default_partition() as name`);
    expect(drained.rows.map((r) => r.name)).toEqual(["log_2039_01", "log_2039_03"]);
    expect((await db.pool.query(`select * from audit.default_partition_months()`)).rows).toEqual([]);
    const { rows } = await db.pool.query(
      `select entity_id, tableoid::regclass::text as part from audit_private.log_entries where entity_id in ('a', 'b', 'c') order by 1`);
    expect(rows).toEqual([
      { entity_id: "a", part: "audit.log_2039_01" }, { entity_id: "b", part: "audit.log_2039_01" },
      { entity_id: "c", part: "audit.log_2039_03" },
    ]);
  });
});
