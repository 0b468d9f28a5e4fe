// Which GraphQL requests may read the replica: queries whose top-level fields all read the audit trail.
import { expect, test } from "@jest/globals";
import { parse } from "graphql";
import { isTrailRead } from "../src/graphql/readRouting.ts";

const trailRead = (query: string, operationName?: string) => isTrailRead(parse(query), operationName);

test("trail queries, also through fragments and with __typename, go to the replica", () => {
  expect(trailRead(`{ auditLogs { totalCount } entityHistory(entityName: "products", entityId: "1") { totalCount } }`)).toBe(true);
  expect(trailRead(`query Q { ...Trail } fragment Trail on Query { __typename userActivity(userId: "u") { totalCount } }`)).toBe(true);
  expect(trailRead(`{ ... on Query { rowAsOf(entity: "app.products", entityId: "1", at: "2026-01-01") } }`)).toBe(true);
});

test("mutations, other fields, mixed queries, node lookups and ambiguous documents go to the primary", () => {
  expect(trailRead(`mutation { deleteProduct(input: { rowId: "1" }) { clientMutationId } }`)).toBe(false);
  expect(trailRead(`{ products { totalCount } }`)).toBe(false);
  expect(trailRead(`{ auditLogs { totalCount } products { totalCount } }`)).toBe(false);
  expect(trailRead(`{ node(id: "x") { id } }`)).toBe(false);
  expect(trailRead(`{ ...Missing }`)).toBe(false);
  expect(trailRead(`query A { auditLogs { totalCount } } mutation B { createProduct(input: {}) { clientMutationId } }`)).toBe(false);
  expect(trailRead(`query A { auditLogs { totalCount } } mutation B { createProduct(input: {}) { clientMutationId } }`, "B")).toBe(false);
  expect(trailRead(`query A { auditLogs { totalCount } } mutation B { createProduct(input: {}) { clientMutationId } }`, "A")).toBe(true);
});
