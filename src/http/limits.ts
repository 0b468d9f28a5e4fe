// Limits on what one client may ask: request rate, document size and query depth.
import type { NextFunction, Request, Response } from "express";
import { rateLimit, type Store } from "express-rate-limit";
import { GraphQLError, Kind, parse, type DefinitionNode, type SelectionSetNode } from "graphql";
import { sendError } from "./identity.ts";

export const MAX_DEPTH = 12;
export const MAX_DOCUMENT_BYTES = 100_000;

/**
 * At most `perWindow` requests per client (IP) per window (a minute unless a test shortens it), counted in
 * `store` (shared by all instances; default: this process's memory).
 */
export function requestRate(perWindow: number, windowMs = 60_000, store?: Store) {
  return rateLimit({
    windowMs,
    store,
    limit: perWindow,
    standardHeaders: "draft-7",
    legacyHeaders: false,
    // Without TRUST_PROXY we ignore X-Forwarded-For on purpose; a client sending it is not a misconfiguration
    // worth a log line per request.
    validate: { xForwardedForHeader: false },
    handler(req, res) {
      const reset = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime;
      const seconds = Math.max(1, Math.ceil(((reset?.getTime() ?? Date.now() + windowMs) - Date.now()) / 1000));
      sendError(res, 429, `too many requests: at most ${perWindow} per ${windowMs / 1000} s; retry in ${seconds} s`,
        { "Retry-After": String(seconds) });
    },
  });
}

/** Depth of the deepest selection, following fragment spreads (each fragment counted once per path). */
export function queryDepth(definitions: readonly DefinitionNode[]): number {
  const fragments = new Map<string, SelectionSetNode>();
  for (const d of definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d.selectionSet);
  const depthOf = (set: SelectionSetNode, seen: Set<string>): number => {
    let deepest = 0;
    for (const s of set.selections) {
      if (s.kind === Kind.FIELD) {
        deepest = Math.max(deepest, s.selectionSet ? 1 + depthOf(s.selectionSet, seen) : 1);
      } else if (s.kind === Kind.INLINE_FRAGMENT) {
        deepest = Math.max(deepest, depthOf(s.selectionSet, seen));
      } else {
        const fragment = fragments.get(s.name.value);
        if (fragment && !seen.has(s.name.value)) deepest = Math.max(deepest, depthOf(fragment, new Set([...seen, s.name.value])));
      }
    }
    return deepest;
  };
  let max = 0;
  for (const d of definitions) if (d.kind === Kind.OPERATION_DEFINITION) max = Math.max(max, depthOf(d.selectionSet, new Set()));
  return max;
}

/** Refuses, with a 400 and a clear message, a body that is not a GraphQL request, does not parse, or is too deep. */
export function documentChecks(req: Request, res: Response, next: NextFunction): void {
  if (req.method !== "POST") return next();
  const body = req.body as { query?: unknown } | undefined;
  if (!body || typeof body !== "object" || typeof body.query !== "string") {
    return sendError(res, 400, 'expected a JSON body with a "query" string');
  }
  try {
    const depth = queryDepth(parse(body.query).definitions);
    if (depth > MAX_DEPTH) return sendError(res, 400, `query is too deep: depth ${depth}, at most ${MAX_DEPTH}`);
  } catch (error) {
    if (error instanceof GraphQLError) return sendError(res, 400, `malformed GraphQL: ${error.message}`);
    throw error;
  }
  next();
}
