// The GraphQL schema as SDL, sorted so that diffs show real changes. `npm run schema:print` writes it to
// schema.graphql; test/graphql.test.ts fails when the committed file and the live schema differ.
import { lexicographicSortSchema, printSchema } from "graphql";
import { makeSchema } from "postgraphile";
import { createPool } from "../db/pool.ts";
import { makePreset } from "./preset.ts";

export async function printedSchema(databaseUrl: string): Promise<string> {
  // Our own pool, ended here: building the schema must leave no connection behind.
  const pool = createPool(databaseUrl, { max: 2 });
  try {
    const { schema } = await makeSchema(makePreset({
      connectionString: databaseUrl, superuserConnectionString: databaseUrl, pool, superuserPool: pool,
    }));
    return `${printSchema(lexicographicSortSchema(schema))}\n`;
  } finally {
    await pool.end();
  }
}
