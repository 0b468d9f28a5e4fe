// Limits on what one client may ask: request rate, document size, query depth and cost, page sizes,
// introspection, statement time and response size. Every refusal is a 4xx with a sentence saying what to change.
import type { NextFunction, Request, Response } from "express";
import { rateLimit, type Store } from "express-rate-limit";
import {
  GraphQLError, Kind, getNamedType, isInterfaceType, isObjectType, parse,
  type DocumentNode, type FieldNode, type FragmentDefinitionNode, type GraphQLNamedType, type GraphQLSchema,
  type SelectionSetNode, type ValueNode,
} from "graphql";
import { sendError } from "./identity.ts";

export const MAX_DEPTH = 12;
export const MAX_DOCUMENT_BYTES = 100_000;
/** `first`/`last` of any connection; a connection whose rows are asked for must say how many. */
export const MAX_PAGE_SIZE = 1000;
/** Each field counts once per row it can return; each connection (one SQL query) counts CONNECTION_COST. */
export const MAX_COST = 20_000;
export const CONNECTION_COST = 100;
/** A response body larger than this is replaced by a 400 (page sizes and cost keep honest queries far below). */
export const MAX_RESPONSE_BYTES = 10_000_000;
/**
 * Introspection (`__schema`, `__type`) reads the schema, not the database. The standard introspection query
 * (graphql's getIntrospectionQuery, what GraphiQL, codegen and Postman send) nests `ofType` about ten levels
 * deep, so it is held to its own rules instead of MAX_DEPTH: at most this deep, at most
 * MAX_INTROSPECTION_FIELDS `__schema`/`__type` fields, and no path through the same list of types twice
 * (`fields { type { fields { … } } }` multiplies the answer with each repetition).
 */
export const MAX_INTROSPECTION_DEPTH = 20;
export const MAX_INTROSPECTION_FIELDS = 10;
const introspectionLists = new Set(["types", "fields", "inputFields", "interfaces", "possibleTypes", "enumValues", "args", "directives"]);

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

/** A refusal: HTTP status and the sentence the client gets. */
class Refusal extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const isIntrospectionField = (name: string) => name === "__schema" || name === "__type";

/** Fields a document may expand to through its fragments (each spread counts again where it is used). */
export const MAX_EXPANDED_FIELDS = 10_000;

/**
 * A document's fields with fragments expanded, on a budget: fragments that spread each other twice per level
 * double with every level, so a 100 kB document could otherwise expand to billions of fields before any limit
 * is checked. Fragment cycles (invalid GraphQL, and endless to expand) are refused first.
 */
class Expansion {
  private readonly fragments = new Map<string, FragmentDefinitionNode>();
  private left = MAX_EXPANDED_FIELDS;

  constructor(document: DocumentNode) {
    for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) this.fragments.set(d.name.value, d);
    const spreadsOf = (set: SelectionSetNode): string[] => set.selections.flatMap((s) =>
      s.kind === Kind.FRAGMENT_SPREAD ? [s.name.value] : s.selectionSet ? spreadsOf(s.selectionSet) : []);
    const done = new Set<string>();
    const visit = (name: string, path: string[]) => {
      if (path.includes(name)) throw new Refusal(400, `malformed GraphQL: fragment ${name} spreads itself (${[...path, name].join(" → ")})`);
      if (done.has(name)) return;
      const fragment = this.fragments.get(name);
      if (fragment) for (const next of spreadsOf(fragment.selectionSet)) visit(next, [...path, name]);
      done.add(name);
    };
    for (const name of this.fragments.keys()) visit(name, []);
  }

  /** The fields of a selection set, inline fragments and spreads expanded. */
  fields(set: SelectionSetNode): FieldNode[] {
    const fields: FieldNode[] = [];
    for (const s of set.selections) {
      if (s.kind === Kind.FIELD) {
        if (--this.left < 0) throw new Refusal(400, `the document expands to more than ${MAX_EXPANDED_FIELDS} fields through its fragments: ask for less`);
        fields.push(s);
      } else if (s.kind === Kind.INLINE_FRAGMENT) {
        fields.push(...this.fields(s.selectionSet));
      } else {
        const fragment = this.fragments.get(s.name.value);
        if (fragment) fields.push(...this.fields(fragment.selectionSet));
      }
    }
    return fields;
  }
}

const operationsOf = (document: DocumentNode) => document.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);

/** Depth of the deepest selection outside introspection (which has its own rules), fragments expanded. */
export function queryDepth(document: DocumentNode): number {
  const expansion = new Expansion(document);
  const depthOf = (set: SelectionSetNode): number => {
    let deepest = 0;
    for (const field of expansion.fields(set)) {
      if (isIntrospectionField(field.name.value)) continue;
      deepest = Math.max(deepest, field.selectionSet ? 1 + depthOf(field.selectionSet) : 1);
    }
    return deepest;
  };
  return Math.max(0, ...operationsOf(document).map((d) => depthOf(d.selectionSet)));
}

/** Checks every `__schema`/`__type` subtree against the introspection rules. */
function checkIntrospection(document: DocumentNode, allowed: boolean): void {
  const expansion = new Expansion(document);
  let count = 0;
  const walk = (fields: FieldNode[], depth: number, lists: ReadonlySet<string>, inside: boolean) => {
    for (const field of fields) {
      const name = field.name.value;
      let nextLists = lists;
      if (!inside && isIntrospectionField(name)) {
        if (!allowed) throw new Refusal(403, "introspection is off in production: set GRAPHQL_INTROSPECTION=on to allow it (and GraphiQL)");
        if (++count > MAX_INTROSPECTION_FIELDS) throw new Refusal(400, `too many introspection fields: at most ${MAX_INTROSPECTION_FIELDS} __schema/__type per document`);
      }
      const introspecting = inside || isIntrospectionField(name);
      if (introspecting) {
        if (depth > MAX_INTROSPECTION_DEPTH) throw new Refusal(400, `introspection query is too deep: more than ${MAX_INTROSPECTION_DEPTH} levels`);
        if (inside && introspectionLists.has(name)) {
          if (lists.has(name)) throw new Refusal(400, `introspection query repeats "${name}" inside "${name}": ask for each list of the schema once per path`);
          nextLists = new Set([...lists, name]);
        }
      }
      if (field.selectionSet) walk(expansion.fields(field.selectionSet), introspecting ? depth + 1 : depth, nextLists, introspecting);
    }
  };
  for (const d of operationsOf(document)) walk(expansion.fields(d.selectionSet), 1, new Set(), false);
}

function isConnection(type: GraphQLNamedType | undefined): boolean {
  if (!type || !isObjectType(type)) return false;
  const fields = type.getFields();
  return "pageInfo" in fields && ("nodes" in fields || "edges" in fields);
}

function intArgument(field: FieldNode, name: string, variables: Record<string, unknown>): number | undefined {
  const arg = field.arguments?.find((a) => a.name.value === name);
  if (!arg) return undefined;
  const value: ValueNode = arg.value;
  const raw = value.kind === Kind.VARIABLE ? variables[value.name.value] : value.kind === Kind.INT ? Number(value.value) : undefined;
  return typeof raw === "number" ? raw : undefined;
}

/**
 * The cost of an operation: every field counts once per row it can return, every connection counts
 * CONNECTION_COST (it is one SQL query). A connection whose rows (`nodes`/`edges`) are asked for must give
 * `first` or `last`, at most MAX_PAGE_SIZE. Fields the schema does not know are left to GraphQL validation.
 */
export function queryCost(schema: GraphQLSchema, document: DocumentNode, variables: Record<string, unknown>): number {
  const expansion = new Expansion(document);
  const costOf = (fields: FieldNode[], parent: GraphQLNamedType | undefined | null, rows: number, pageSize: number | undefined): number => {
    let cost = 0;
    for (const field of fields) {
      const name = field.name.value;
      if (name.startsWith("__")) continue; // introspection is checked by its own rules; __typename is free
      const definition = parent && (isObjectType(parent) || isInterfaceType(parent)) ? parent.getFields()[name] : undefined;
      const type = definition ? getNamedType(definition.type) : undefined;
      cost += rows;
      if (!field.selectionSet) continue;
      const children = expansion.fields(field.selectionSet);
      if (isConnection(type)) {
        const first = intArgument(field, "first", variables);
        const last = intArgument(field, "last", variables);
        const label = field.alias ? `${field.alias.value} (${name})` : name;
        for (const [argument, value] of [["first", first], ["last", last]] as const) {
          if (value !== undefined && value > MAX_PAGE_SIZE) {
            throw new Refusal(400, `${label}: ${argument} is ${value}, at most ${MAX_PAGE_SIZE}: page with after/before`);
          }
        }
        const size = Math.max(first ?? 0, last ?? 0);
        if (first === undefined && last === undefined && children.some((c) => c.name.value === "nodes" || c.name.value === "edges")) {
          throw new Refusal(400, `${label}: say how many rows with first: or last: (at most ${MAX_PAGE_SIZE})`);
        }
        cost += rows * CONNECTION_COST + costOf(children, type, rows, size);
      } else {
        // The rows of a connection (`nodes`, `edges`) are its page size times whatever is around it.
        const many = pageSize !== undefined && (name === "nodes" || name === "edges");
        cost += costOf(children, type ?? null, many ? rows * Math.max(pageSize, 1) : rows, undefined);
      }
    }
    return cost;
  };
  let max = 0;
  for (const d of operationsOf(document)) {
    const root = d.operation === "query" ? schema.getQueryType() : d.operation === "mutation" ? schema.getMutationType() : schema.getSubscriptionType();
    max = Math.max(max, costOf(expansion.fields(d.selectionSet), root, 1, undefined));
  }
  return max;
}

export interface DocumentCheckOptions {
  /** The schema the documents are checked against (PostGraphile builds it at start). */
  schema: () => Promise<GraphQLSchema>;
  /** false: `__schema`/`__type` are refused (403). */
  introspection: boolean;
}

/**
 * Refuses, with a 4xx and a clear message, a body that is not a GraphQL request, does not parse, asks for
 * introspection where it is off, is too deep, asks for too large a page or costs too much.
 */
export function documentChecks(options: DocumentCheckOptions) {
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    if (req.method !== "POST") return next();
    const body = req.body as { query?: unknown; variables?: unknown } | undefined;
    if (!body || typeof body !== "object" || typeof body.query !== "string") {
      return sendError(res, 400, 'expected a JSON body with a "query" string');
    }
    const variables = body.variables && typeof body.variables === "object" ? body.variables as Record<string, unknown> : {};
    try {
      const document = parse(body.query);
      checkIntrospection(document, options.introspection);
      const depth = queryDepth(document);
      if (depth > MAX_DEPTH) return sendError(res, 400, `query is too deep: depth ${depth}, at most ${MAX_DEPTH}`);
      const cost = queryCost(await options.schema(), document, variables);
      if (cost > MAX_COST) {
        return sendError(res, 400, `query is too costly: cost ${cost}, at most ${MAX_COST} (every field counts once per row it can return, every connection ${CONNECTION_COST}): ask for smaller pages or fewer fields`);
      }
    } catch (error) {
      if (error instanceof Refusal) return sendError(res, error.status, error.message);
      if (error instanceof GraphQLError) return sendError(res, 400, `malformed GraphQL: ${error.message}`);
      return next(error);
    }
    next();
  };
}

/**
 * Replaces a response body larger than `limit` bytes with a 400. grafserv writes the head, then the
 * whole body in one `end()`; the head is held back until the body is known (or streaming starts).
 */
export function responseSize(limit = MAX_RESPONSE_BYTES) {
  return (_req: Request, res: Response, next: NextFunction): void => {
    const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => Response;
    const write = res.write.bind(res) as (...args: unknown[]) => boolean;
    const end = res.end.bind(res) as (...args: unknown[]) => Response;
    let held: unknown[] | undefined;
    // Once the head is out, Node's own end() calls writeHead again (implicitly): hand the originals back first.
    const release = () => {
      res.writeHead = writeHead as Response["writeHead"];
      res.write = write as Response["write"];
      res.end = end as Response["end"];
      if (held) writeHead(...held);
      held = undefined;
    };
    res.writeHead = ((...args: unknown[]) => {
      held = args;
      return res;
    }) as Response["writeHead"];
    res.write = ((...args: unknown[]) => {
      release();
      return write(...args);
    }) as Response["write"];
    res.end = ((...args: unknown[]) => {
      const body = args[0];
      const bytes = typeof body === "string" ? Buffer.byteLength(body) : Buffer.isBuffer(body) ? body.length : 0;
      if (bytes > limit && held) {
        held = undefined;
        release();
        const payload = JSON.stringify({ errors: [{ message: `the response is ${bytes} bytes, more than the ${limit}-byte limit: ask for smaller pages or fewer fields` }] });
        writeHead(400, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(payload) });
        return end(payload);
      }
      release();
      return end(...args);
    }) as Response["end"];
    next();
  };
}
