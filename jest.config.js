// Tests run as ES modules (graphile-worker is ESM-only) with TypeScript compiled by SWC.
// Every test file gets its own database cloned from a migrated template, so files run in parallel.
/** @type {import('jest').Config} */
export default {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  extensionsToTreatAsEsm: [".ts"],
  transform: {
    "^.+\\.ts$": [
      "@swc/jest",
      { jsc: { target: "es2024", parser: { syntax: "typescript" } }, module: { type: "es6" } },
    ],
  },
  globalSetup: "<rootDir>/test/setup/globalSetup.ts",
  globalTeardown: "<rootDir>/test/setup/globalTeardown.ts",
  testTimeout: 120_000,
  maxWorkers: 2,
};
