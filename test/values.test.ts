// Every value reaches the trail exactly (README "Values in the trail"): the recorded JSON for each kind of
// value, and the round trip through audit.log and audit.row_as_of back to the very row (audit_private.row_from_trail).
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;

// One column per case. The text form (format('%s', row)) of a decoded row must equal the original's.
const columns = `
  id int primary key, jb jsonb, j json, arr int[], txt text[], f8 float8, f4 float4, n numeric, ts timestamp,
  tstz timestamptz, d date, by bytea, bi bit(3), vb varbit, r int4range, tr tstzrange, e v.mood, c v.pair,
  dom v.positive, moods v.mood[], jbs jsonb[], t text, iv interval, m money, x xml, pt point, ch char(3), b boolean`;

const rows = [
  `(1, 'null', '{"b":1,  "a":2, "a":3}', '[0:1]={1,2}', '{"a b",NULL,"NULL"}', '-0', 'NaN', 'NaN', 'infinity', '-infinity',
    '0044-03-15 BC', '\\x00ff', B'101', B'1', '[1,5)', '[2026-01-01,infinity)', 'b c', '(1,"x,y")', 5, '{ok,"b c"}',
    '{null,"\\"null\\""}', E'tab\\there "q" \\\\ \\u00e9 \\\\u0000', '1 day -02:00', 12.34, '<a>x</a>', '(1.5,2)', 'ab', true)`,
  `(2, '"null"', 'null', '{}', '{}', 'Infinity', '-0', 1e-300, '2026-01-01 12:00:00.123456', '2026-01-01 12:00+02', 'infinity',
    '', B'000', B'', 'empty', null, 'ok', '(,)', null, '{}', '{}', '', '-3 years', 0, '', '(0,-0)', ' ', false)`,
  `(3, '{"k": null, "n": 1.50}', '[]', '{{1,2},{3,4}}', null, 1e300, 3.4e38, 123456789012345678901234567890.12345678901234567890,
    null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null)`,
  `(4, '[null]', null, '{1,NULL}', '{"\\\\"}', '-Infinity', 1.17549435e-38, '-Infinity', null, null, null, null, null, null,
    null, null, null, null, null, null, null, null, null, null, null, null, null, null)`,
  `(5, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null,
    null, null, null, null, null, null, null, null)`,
];

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    create schema v;
    create type v.mood as enum ('ok', 'b c');
    create type v.pair as (a int, b text);
    create domain v.positive as integer check (value > 0);
    create table v.kinds (${columns});
    select audit.enable_tracking('v.kinds');
    -- The writing session's settings must not change what is recorded.
    set extra_float_digits = -15; set datestyle = 'SQL, DMY'; set intervalstyle = 'sql_standard'; set bytea_output = 'escape';
    insert into v.kinds values ${rows.join(", ")};
    reset extra_float_digits; reset datestyle; reset intervalstyle; reset bytea_output;
  `);
});
afterAll(async () => db?.drop());

describe("values in the trail", () => {
  test("each kind of value is recorded as documented", async () => {
    const { rows: [{ one, two, three, four, five }] } = await db.pool.query(`
      select max(new_value::text) filter (where entity_id = '1')::jsonb as one, max(new_value::text) filter (where entity_id = '2')::jsonb as two,
             max(new_value::text) filter (where entity_id = '3')::jsonb as three, max(new_value::text) filter (where entity_id = '4')::jsonb as four,
             max(new_value::text) filter (where entity_id = '5')::jsonb as five
      from audit.log where entity_name = 'kinds' and action = 'INSERT'`);
    expect(one).toEqual({
      id: 1, jb: "null", j: '{"b":1,  "a":2, "a":3}', arr: "[0:1]={1,2}", txt: ["a b", null, "NULL"], f8: "-0", f4: "NaN", n: "NaN",
      ts: "infinity", tstz: "-infinity", d: "0044-03-15 BC", by: "\\x00ff", bi: "101", vb: "1", r: "[1,5)",
      tr: '["2026-01-01 00:00:00+00",infinity)', e: "b c", c: '(1,"x,y")', dom: 5, moods: '{ok,"b c"}', jbs: '{NULL,"\\"null\\""}',
      t: 'tab\there "q" \\ é \\u0000', iv: "1 day -02:00:00", m: "$12.34", x: "<a>x</a>", pt: "(1.5,2)", ch: "ab ", b: true,
    });
    expect(two).toMatchObject({ jb: '"null"', j: "null", arr: [], f8: "Infinity", f4: "-0", n: 1e-300, c: "(,)", pt: "(0,-0)", iv: "-3 years", by: "\\x" });
    expect(three).toMatchObject({ jb: { k: null, n: 1.5 }, j: "[]", arr: "{{1,2},{3,4}}", txt: null, f8: 1e300, f4: 3.4e38 });
    expect(four).toMatchObject({ jb: [null], arr: [1, null], txt: ["\\"], f8: "-Infinity", n: "-Infinity" });
    expect(Object.values(five).filter((value) => value !== null)).toEqual([5]);
  });

  test("every row comes back exactly from audit.log and from audit.row_as_of", async () => {
    const { rows: checks } = await db.pool.query(`
      select k.id,
             format('%s', k) as original,
             format('%s', audit_private.row_from_trail(null::v.kinds, l.new_value)) as from_log,
             format('%s', audit_private.row_from_trail(null::v.kinds, audit.row_as_of('v.kinds', k.id::text, now()))) as from_row_as_of
      from v.kinds k join audit.log l on l.entity_name = 'kinds' and l.entity_id = k.id::text and l.action = 'INSERT'
      order by k.id`);
    expect(checks).toHaveLength(5);
    for (const check of checks) {
      expect(check.from_log).toBe(check.original);
      expect(check.from_row_as_of).toBe(check.original);
    }
  });

  test("an UPDATE between JSON null and SQL NULL, -0 and 0, 1.5 and 1.50 is a change, recorded exactly", async () => {
    await db.pool.query(`update v.kinds set jb = null, f8 = 0, n = 1.50, t = t where id = 1;
                         update v.kinds set jb = 'null', n = 1.5 where id = 1;
                         update v.kinds set n = 1.50 where id = 1;
                         update v.kinds set f8 = '-0' where id = 1`);
    const { rows } = await db.pool.query(
      `select changes from audit.log where entity_name = 'kinds' and entity_id = '1' and action = 'UPDATE' order by id`);
    expect(rows.map((r) => r.changes)).toEqual([
      { jb: { old: "null", new: null }, f8: { old: "-0", new: 0 }, n: { old: "NaN", new: 1.5 } },
      { jb: { old: null, new: "null" }, n: { old: 1.5, new: 1.5 } },
      { n: { old: 1.5, new: 1.5 } },
      { f8: { old: 0, new: "-0" } },
    ]);
    // JSON numbers show 1.50 and 1.5 alike in JavaScript; the stored text tells them apart.
    const { rows: texts } = await db.pool.query(
      `select changes -> 'n' ->> 'new' as n from audit.log where entity_name = 'kinds' and entity_id = '1' and changes ? 'n' order by id`);
    expect(texts.map((r) => r.n)).toEqual(["1.50", "1.5", "1.50"]);
    const { rows: [now] } = await db.pool.query(`
      select format('%s', k) = format('%s', audit_private.row_from_trail(null::v.kinds, audit.row_as_of('v.kinds', '1', now()))) as same
      from v.kinds k where id = 1`);
    expect(now.same).toBe(true);
  });

  test("a change is a change of the text form: bytes that print the same are no change, equal values that print differently are", async () => {
    await db.pool.query(`
      create collation v.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
      create domain v.amount as numeric;
      create table v.compare (id int primary key, t text collate v.ci, a v.amount, f float4, n numeric, jb jsonb);
      select audit.enable_tracking('v.compare');
      insert into v.compare values (1, 'a', 1.5, 'NaN', 1.50, '{"n": 1.50}');
      update v.compare set t = 'A';
      update v.compare set a = 1.50;
      -- Infinity minus infinity is a NaN of other bits than 'NaN'; numeric and jsonb results are rebuilt.
      update v.compare set f = 'infinity'::float4 - 'infinity'::float4, n = n + 0, jb = jb || '{}';`);
    const { rows } = await db.pool.query(`
      select changes, changes -> 'a' ->> 'new' as a from audit.log where entity_name = 'compare' and action = 'UPDATE' order by id`);
    expect(rows).toEqual([
      { changes: { t: { old: "a", new: "A" } }, a: null },
      { changes: { a: { old: 1.5, new: 1.5 } }, a: "1.50" },
    ]);
  });

  test("an UPDATE that sets a value to what it was writes no row", async () => {
    await db.pool.query(`update v.kinds set jb = jb, j = j, arr = arr, c = c, moods = moods, f8 = f8, m = m where id in (2, 3, 4, 5)`);
    const { rows } = await db.pool.query(
      `select count(*)::int as n from audit.log where entity_name = 'kinds' and action = 'UPDATE' and entity_id <> '1'`);
    expect(rows[0].n).toBe(0);
  });
});
