// The explorer's only way to the data: POST /graphql with the user's token, documents written by hand against
// schema.graphql (no introspection), pages within MAX_PAGE_SIZE and the cost limit (src/http/limits.ts).

/** A refusal the user can act on; `status` 401 means the token was refused. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** A JSON number whose text a JavaScript number would change (12.50, 1e400, 2^53 + 1): kept as written. */
export class ExactNumber {
  constructor(source) {
    this.source = source;
  }
}

// JSON.parse source text access (Chromium 114+, Firefox 135+); where it is missing numbers stay numbers.
function keepNumberText(_key, value, context) {
  return typeof value === "number" && context?.source !== undefined && String(value) !== context.source
    ? new ExactNumber(context.source) : value;
}

const TOKEN_KEY = "cartop-audit.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) ?? "",
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** Runs one document; resolves with `data`, rejects with an ApiError carrying the server's sentence. */
export async function gql(query, variables = {}) {
  const headers = { "content-type": "application/json", accept: "application/json" };
  const bearer = token.get();
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new ApiError("the server cannot be reached: check that cartop-audit is running", 0);
  }
  let body;
  try {
    body = JSON.parse(await response.text(), keepNumberText);
  } catch {
    throw new ApiError(`the server answered ${response.status} without a GraphQL response`, response.status);
  }
  if (body.errors?.length) throw new ApiError(body.errors.map((e) => e.message).join("; "), response.status);
  if (!response.ok) throw new ApiError(`the server answered ${response.status}`, response.status);
  return body.data;
}

const LOG_FIELDS = "rowId createdAt txId statementNumber entitySchema entityName entityId action userId userEmail requestId";

export const SEARCH = `query Search($filter: AuditLogFilter, $first: Int!) {
  auditLogs(filter: $filter, first: $first, orderBy: [CREATED_AT_DESC, ROW_ID_DESC]) {
    totalCount
    nodes { ${LOG_FIELDS} }
  }
}`;

export const HISTORY = `query History($entityName: String!, $entityId: String!, $first: Int!) {
  entityHistory(entityName: $entityName, entityId: $entityId, first: $first) {
    nodes { ${LOG_FIELDS} oldValue newValue changes }
  }
}`;

export const ROW_AS_OF = `query RowAsOf($entityName: String!, $entityId: String!, $at: Datetime!) {
  rowAsOf(entityName: $entityName, entityId: $entityId, at: $at)
}`;

export const REVERT = `mutation Revert($input: RevertInput!) {
  revert(input: $input) {
    result { step logId action revertAction entitySchema entityName entityId problem problemCode applied currentValue revertedValue statement }
  }
}`;

// Finished days come from the worker's summary (auditors); the fallback reads the trail itself, which
// row-level security narrows to the caller's own rows for users.
export const ACTIVITY_DAILY = `query Activity($since: Date!) {
  auditActivityDailies(filter: { day: { greaterThanOrEqualTo: $since } }) {
    groupedAggregates(groupBy: [DAY, ENTITY_SCHEMA, ENTITY_NAME, ACTION]) { keys sum { changes } }
  }
}`;

export const ACTIVITY_FROM_TRAIL = `query ActivityFromTrail($since: Datetime!) {
  auditLogs(filter: { createdAt: { greaterThanOrEqualTo: $since } }) {
    groupedAggregates(groupBy: [CREATED_AT_TRUNCATED_TO_DAY, ENTITY_SCHEMA, ENTITY_NAME, ACTION]) { keys distinctCount { rowId } }
  }
}`;

export const PARTITIONS = `query Partitions {
  auditPartitions(first: 1000, orderBy: [IS_DEFAULT_ASC, RANGE_START_ASC]) {
    nodes { partitionName rangeStart rangeEnd estimatedRows totalBytes isDefault }
  }
}`;

export const ARCHIVES = `query Archives {
  auditArchives(first: 1000, orderBy: MONTH_DESC) {
    nodes { month partitionName status rows bytes archivedAt restoredAt updatedAt lastError location }
  }
}`;

export const SEALS = `query Seals {
  auditSeals(first: 1, orderBy: DAY_DESC) { totalCount nodes { day rows sealedAt } }
  auditTaskRuns(first: 200, orderBy: FINISHED_AT_DESC, filter: { task: { equalTo: "audit__seal_days" } }) {
    nodes { finishedAt succeeded error }
  }
}`;

export const COVERAGE = `query Coverage {
  auditCoverageProblems(first: 1000) { nodes { checkName object problem } }
}`;
