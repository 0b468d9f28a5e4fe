// The SQL source of truth lives in triggers/, partitions/, reporting/, integrity/ and example/ as idempotent files. A migration
// that installs them is their concatenation, in the order of the files' numeric prefixes (unique across
// the folders). `npm run migration:commit` writes it; test/migrations.test.ts fails when they drift.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const sourceFolders = ["triggers", "partitions", "reporting", "integrity", "example"] as const;

export interface SourceFile {
  /** Path relative to the project root, e.g. `triggers/06_tracking.sql`. */
  relativePath: string;
  order: number;
  content: string;
}

export async function readSourceFiles(root = projectRoot): Promise<SourceFile[]> {
  const files: SourceFile[] = [];
  for (const folder of sourceFolders) {
    for (const name of await readdir(path.join(root, folder))) {
      if (!name.endsWith(".sql")) continue;
      const match = /^(\d+)_/.exec(name);
      if (!match) throw new Error(`${folder}/${name}: SQL source files are named NN_description.sql`);
      files.push({
        relativePath: `${folder}/${name}`,
        order: Number(match[1]),
        content: await readFile(path.join(root, folder, name), "utf8"),
      });
    }
  }
  files.sort((a, b) => a.order - b.order);
  for (let i = 1; i < files.length; i++) {
    if (files[i]!.order === files[i - 1]!.order) {
      throw new Error(`${files[i - 1]!.relativePath} and ${files[i]!.relativePath} share the prefix ${files[i]!.order}`);
    }
  }
  return files;
}

/** The body of the migration that installs all SQL sources. */
export async function sourceMigrationBody(root = projectRoot): Promise<string> {
  const parts = (await readSourceFiles(root)).map(
    (file) => `-- source: ${file.relativePath}\n${file.content.trim()}\n`,
  );
  return parts.join("\n");
}
