// Who is asking: request id, client IP, user agent and verified JWT claims, attached to the request.
import { randomUUID } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import jwt from "jsonwebtoken";
import type { Claims, RequestIdentity } from "../graphql/identity.ts";

/** Replies the way GraphQL clients expect errors, with an HTTP status that says what went wrong. */
export function sendError(res: Response, status: number, message: string, headers: Record<string, string> = {}): void {
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.status(status).json({ errors: [{ message }] });
}

const requestIdPattern = /^[\w.:\-]{1,128}$/;

/** X-Request-Id when it is sane, otherwise a fresh UUID; always echoed back. */
export function requestId(req: Request, res: Response, next: NextFunction): void {
  const given = req.get("x-request-id");
  const id = given && requestIdPattern.test(given) ? given : randomUUID();
  res.setHeader("X-Request-Id", id);
  req.requestId = id;
  next();
}

function claimsFrom(payload: string | jwt.JwtPayload): Claims {
  if (typeof payload === "string" || typeof payload.sub !== "string" || payload.sub === "") {
    throw new Error("the token has no subject (sub)");
  }
  // A token that never expires is a password that can never be changed: refuse it.
  if (typeof payload.exp !== "number") throw new Error("the token has no expiry (exp): sign it with one, e.g. expiresIn: \"1h\"");
  // No role claim: the least privileged signed-in role.
  const role = payload.role ?? "user";
  if (role !== "user" && role !== "auditor" && role !== "admin") throw new Error(`unknown role "${String(role)}"`);
  if (payload.email !== undefined && typeof payload.email !== "string") throw new Error("email must be a string");
  return { sub: payload.sub, email: payload.email, role };
}

/** Verifies `Authorization: Bearer` (HS256 with JWT_SECRET); a bad token is a 401, never a 500. */
export function identity(jwtSecret: string | undefined) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const header = req.get("authorization");
    let claims: Claims | undefined;
    if (header) {
      const match = /^Bearer ([^\s]+)$/i.exec(header);
      const challenge = { "WWW-Authenticate": 'Bearer realm="cartop-audit"' };
      if (!match) return sendError(res, 401, "Authorization must be 'Bearer <token>'", challenge);
      if (!jwtSecret) return sendError(res, 401, "this server accepts no tokens (JWT_SECRET is not set)", challenge);
      try {
        claims = claimsFrom(jwt.verify(match[1]!, jwtSecret, { algorithms: ["HS256"] }));
      } catch (error) {
        return sendError(res, 401, `invalid token: ${(error as Error).message}`, challenge);
      }
    }
    const id: RequestIdentity = {
      requestId: req.requestId,
      // req.ip honours X-Forwarded-For only when the app's "trust proxy" is set (TRUST_PROXY).
      ip: req.ip?.replace(/^::ffff:/, ""),
      userAgent: req.get("user-agent") || undefined,
      claims,
    };
    req.identity = id;
    next();
  };
}
