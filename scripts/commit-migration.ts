// Commits the SQL sources (src/db/sourceSql.ts lists their folders, in install order) as the next graphile-migrate migration.
// Needs DATABASE_URL, SHADOW_DATABASE_URL and ROOT_DATABASE_URL (graphile-migrate's own variables):
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/cartop_dev \
//   SHADOW_DATABASE_URL=postgres://postgres@127.0.0.1:5432/cartop_shadow \
//   ROOT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run migration:commit -- "why"
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { commit } from "graphile-migrate";
import { projectRoot, sourceMigrationBody } from "../src/db/sourceSql.ts";

const message = process.argv[2];
for (const name of ["DATABASE_URL", "SHADOW_DATABASE_URL", "ROOT_DATABASE_URL"]) {
  if (!process.env[name]) {
    console.error(`${name} must be set (a development server; the shadow database is dropped and recreated)`);
    process.exit(2);
  }
}
await writeFile(path.join(projectRoot, "migrations", "current.sql"), await sourceMigrationBody());
await commit({ migrationsFolder: path.join(projectRoot, "migrations") }, message);
console.log("committed; now run the tests (test/migrations.test.ts checks sources and migrations agree)");
