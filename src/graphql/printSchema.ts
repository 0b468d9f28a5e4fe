// The GraphQL schema as SDL, sorted so that diffs show real changes. `npm run schema:print` writes it to
// schema.graphql; test/graphql-schema.test.ts fails when the committed file and the live schema differ.
import { lexicographicSortSchema, printSchema } from "graphql";
import { makeSchema } from "postgraphile";
import { makePreset } from "./preset.ts";

export async function printedSchema(databaseUrl: string): Promise<string> {
  const { schema } = await makeSchema(makePreset({ connectionString: databaseUrl, superuserConnectionString: databaseUrl }));
  return `${printSchema(lexicographicSortSchema(schema))}\n`;
}
