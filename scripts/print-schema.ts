// Writes schema.graphql from a migrated database (DATABASE_URL, or the embedded one).
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { loadDotEnv, readConfig } from "../src/config.ts";
import { openDatabase } from "../src/db/database.ts";
import { runMigrations } from "../src/db/migrate.ts";
import { projectRoot } from "../src/db/sourceSql.ts";
import { printedSchema } from "../src/graphql/printSchema.ts";

loadDotEnv();
const database = await openDatabase(readConfig(), (line) => console.error(line));
try {
  await runMigrations(database.url);
  await writeFile(path.join(projectRoot, "schema.graphql"), await printedSchema(database.url));
  console.error("wrote schema.graphql");
} finally {
  await database.stop();
}
