import { dropDatabase } from "../../src/db/scratch.ts";

export default async function globalTeardown(): Promise<void> {
  const serverUrl = process.env.CARTOP_TEST_SERVER_URL;
  const template = process.env.CARTOP_TEST_TEMPLATE;
  if (serverUrl && template) await dropDatabase(serverUrl, template);
  await globalThis.cartopTestServer?.stop();
}
