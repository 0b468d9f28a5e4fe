#!/usr/bin/env node
// `npx cartop-audit` puts node_modules/.bin first on PATH, so `node` here is the project's Node 24,
// which runs the TypeScript entry point directly (type stripping).
import "../src/main.ts";
