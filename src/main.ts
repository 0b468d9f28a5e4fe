// Entry point of `npm start` and the `cartop-audit` command.
import { loadDotEnv } from "./config.ts";

loadDotEnv();
// Grafast reads GRAPHILE_ENV when it is first imported and warns when it is unset: decide it first.
process.env.GRAPHILE_ENV ??= process.env.NODE_ENV === "development" ? "development" : "production";
const { runCli } = await import("./cli/program.ts");
const code = await runCli(process.argv);
// `start`, `serve` and `worker` keep running until a signal; everything else ends here.
if (code !== 0) process.exit(code);
