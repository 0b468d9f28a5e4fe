// The SQL source of truth: idempotent files in folders named for what they hold. The install order is declared
// here once: the folders in this order, and inside each folder its files by their NN_ prefix. A migration that
// installs them is their concatenation in that order. `npm run migration:commit` writes it;
// test/migrations.test.ts fails when they drift.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const sourceFolders = [
  "base", // schemas and roles
  "partitions", // the trail's storage, its append-only guard and the monthly partition lifecycle (premake, archive)
  "triggers", // capture: the session context and the tracking API that generates each table's capture
  "reading", // the audit.log view, history, reporting and undo
  "integrity", // seals and the coverage check
  "operations", // what the worker and the API keep in the database: task runs, shared rate limits
  "example", // the example application schema
] as const;

export interface SourceFile {
  /** Path relative to the project root, e.g. `triggers/02_tracking.sql`. */
  relativePath: string;
  content: string;
}

/** Every SQL source file, in install order: folder by folder, inside a folder by prefix (unique there). */
export async function readSourceFiles(root = projectRoot): Promise<SourceFile[]> {
  const files: SourceFile[] = [];
  for (const folder of sourceFolders) {
    const named: { order: number; name: string }[] = [];
    for (const name of await readdir(path.join(root, folder))) {
      if (!name.endsWith(".sql")) continue;
      const match = /^(\d+)_[a-z0-9_]+\.sql$/.exec(name);
      if (!match) throw new Error(`${folder}/${name}: SQL source files are named NN_description.sql`);
      named.push({ order: Number(match[1]), name });
    }
    named.sort((a, b) => a.order - b.order);
    for (let i = 1; i < named.length; i++) {
      if (named[i]!.order === named[i - 1]!.order) {
        throw new Error(`${folder}/${named[i - 1]!.name} and ${folder}/${named[i]!.name} share the prefix ${named[i]!.order}`);
      }
    }
    for (const { name } of named) {
      files.push({ relativePath: `${folder}/${name}`, content: await readFile(path.join(root, folder, name), "utf8") });
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
