// Entry point of `npm start` and the `cartop-audit` command.
import { runCli } from "./cli/commands.ts";
import { loadDotEnv } from "./config.ts";

loadDotEnv();
const code = await runCli(process.argv);
// `start` and `worker` keep running until a signal; everything else ends here.
if (code !== 0) process.exit(code);
