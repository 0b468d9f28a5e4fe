// Who is asking, as the GraphQL layer needs it for the transaction's settings (pgSettingsFor). The HTTP
// middleware in src/http/identity.ts verifies the token and builds it.
export interface Claims {
  sub: string;
  email?: string;
  role: "user" | "auditor" | "admin";
}

export interface RequestIdentity {
  requestId: string;
  ip: string | undefined;
  userAgent: string | undefined;
  /** Undefined for anonymous requests (no Authorization header). */
  claims: Claims | undefined;
}

// What the HTTP middlewares (src/http/identity.ts) attach to every request, typed where Express declares its
// Request (grafserv hands GraphQL the same object).
declare module "express-serve-static-core" {
  interface Request {
    /** Set by requestId, first of all middlewares. */
    requestId: string;
    /** Set by identity, before /graphql. */
    identity?: RequestIdentity;
  }
}
