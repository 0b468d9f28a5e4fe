// GET /explore: the audit explorer, a static page and its ES modules. It reads the trail only through
// /graphql with the token the user gives it, like any other client, so it shows what that role may see.
import { fileURLToPath } from "node:url";
import express, { type NextFunction, type Request, type Response } from "express";

const assets = fileURLToPath(new URL("./explorer/", import.meta.url));

/**
 * The page's Content-Security-Policy: its own scripts, styles and API only; no inline code, no frames,
 * no form submissions (the token form is handled by script and must never become a URL).
 */
export const EXPLORER_CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
  "form-action 'none'", "frame-ancestors 'none'", "base-uri 'none'",
].join("; ");

export function explorer() {
  const router = express.Router({ strict: true });
  router.use((_req: Request, res: Response, next: NextFunction) => {
    res.set({
      "Content-Security-Policy": EXPLORER_CSP,
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "no-referrer",
      "Cache-Control": "no-cache",
    });
    next();
  });
  router.get("/", (_req, res) => res.type("html").sendFile("index.html", { root: assets }));
  router.use(express.static(assets, { index: false, redirect: false, dotfiles: "deny" }));
  router.use((_req: Request, res: Response) => res.status(404).type("text/plain").send("not found\n"));
  return router;
}
