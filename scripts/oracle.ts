// The WAL oracle at a larger size: npm run oracle -- [--seed N] [--clients N] [--transactions N] [--port N]
// Starts its own embedded PostgreSQL (logical decoding on), runs the seeded workload, compares the decoded
// WAL with audit.log per transaction, and exits 1 with the problems (and the seed to replay) if any.
import { parseArgs } from "node:util";
import { runOracle } from "../test/oracle/oracle.ts";
import { startOracleServer } from "../test/oracle/server.ts";

const { values } = parseArgs({
  options: {
    seed: { type: "string" },
    clients: { type: "string", default: "8" },
    transactions: { type: "string", default: "500" },
    port: { type: "string", default: "56350" },
  },
});
const seed = Number(values.seed ?? Math.floor(Math.random() * 1e6));
const server = await startOracleServer(Number(values.port));
try {
  const started = Date.now();
  const result = await runOracle({ url: server.url, seed, clients: Number(values.clients), transactions: Number(values.transactions) });
  console.log(`seed ${seed}: ${result.committed} committed and ${result.aborted} rolled-back transactions, ` +
    `${result.walChanges} decoded changes, ${result.auditRows} audit rows, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (result.problems.length) {
    console.log(`${result.problems.length} problem(s); replay with: npm run oracle -- --seed ${seed} --clients ${values.clients} --transactions ${values.transactions}`);
    console.log(result.problems.slice(0, 30).join("\n"));
    process.exitCode = 1;
  } else {
    console.log("the trail matches the WAL");
  }
} finally {
  await server.stop();
}
