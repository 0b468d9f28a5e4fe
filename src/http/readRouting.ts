// Sends GraphQL requests that only read the audit trail to the read replica, when there is one and it is
// usable (src/db/readReplica.ts); every other request, and every request while the replica is down or
// lagging, goes to the primary. `X-Read-Source` says where a request's reads went.
import type { NextFunction, Request, Response } from "express";
import { parse } from "graphql";
import type { ReadReplica } from "../db/readReplica.ts";
import { isTrailRead, readRoute } from "../graphql/readRouting.ts";
import type { Logger } from "../log.ts";

export function routeTrailReads(replica: ReadReplica, logger: Logger) {
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    const body = req.body as { query?: unknown; operationName?: unknown } | undefined;
    // documentChecks has already refused what does not parse.
    const trailRead = req.method === "POST" && typeof body?.query === "string" &&
      isTrailRead(parse(body.query), typeof body.operationName === "string" ? body.operationName : undefined);
    const target = trailRead && (await replica.state()).usable ? "replica" : "primary";
    res.setHeader("X-Read-Source", target);
    readRoute.run({
      target,
      onFallback(error) {
        logger.warn({ code: (error as { code?: string }).code, error: (error as Error).message }, "audit read failed on the replica; ran it on the primary");
        if (!res.headersSent) res.setHeader("X-Read-Source", "primary (replica read failed)");
      },
    }, next);
  };
}
