// The audit explorer: plain DOM, no library. Every value from the server reaches the page as text
// (textContent, attributes), never as HTML.
import * as api from "./graphql.js";

/** The marker the trail records instead of a masked column's value (audit_private.masked_value()). */
const MASKED = "[masked]";
const HISTORY_PAGE = 500;
const SEARCH_PAGE = 100;
const ACTIONS = ["INSERT", "UPDATE", "DELETE", "TRUNCATE"];

const $ = (id) => document.getElementById(id);

/** An element: `h("td", { class: "num" }, "42")`; `on*` attributes become listeners. */
function h(tag, attributes = {}, ...children) {
  const svg = ["svg", "g", "rect", "text", "title", "line"].includes(tag);
  const element = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const show = (element, ...children) => element.replaceChildren(...children.flat());

/** 2026-12-02T00:07:03.123456+00:00 → "2026-12-02 00:07:03.123 UTC" (the raw value stays in datetime=). */
function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toISOString().replace("T", " ").replace("Z", " UTC");
}
const timeOf = (iso) => h("time", { datetime: iso }, when(iso));

function bytes(value) {
  let n = Number(value);
  for (const unit of ["B", "kB", "MB", "GB", "TB"]) {
    if (n < 1024 || unit === "TB") return `${unit === "B" ? n : n.toFixed(1)} ${unit}`;
    n /= 1024;
  }
  return String(value);
}

/** JSON text of a value, numbers as the server wrote them. */
function json(v) {
  if (v instanceof api.ExactNumber) return v.source;
  if (Array.isArray(v)) return `[${v.map(json).join(", ")}]`;
  if (v !== null && typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${json(x)}`).join(", ")}}`;
  return JSON.stringify(v);
}

/** A recorded value: JSON as recorded (strings quoted), masked columns as masked. */
function value(v, absent = false) {
  if (absent) return h("span", { class: "value" }, "—");
  if (v === MASKED) return h("span", { class: "masked", title: "masked column: the value is not recorded" }, "masked");
  return h("code", { class: "value" }, json(v));
}

const qualified = (row) => `${row.entitySchema}.${row.entityName}`;
const deniedMessage = (error) => /permission denied/i.test(error.message);

// ---------------------------------------------------------------------------------------------------------
// Token and problems

function claimsOf(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return undefined;
  }
}

function showWho() {
  const jwt = api.token.get();
  const claims = jwt && claimsOf(jwt);
  if (!jwt) $("who").textContent = "No token: you see what an anonymous client may see.";
  else if (!claims) $("who").textContent = "The token does not look like a JWT; the server will decide.";
  else {
    const expires = typeof claims.exp === "number" ? `, expires ${when(new Date(claims.exp * 1000).toISOString())}` : "";
    $("who").textContent = `Token for ${claims.sub ?? "?"} (role ${claims.role ?? "user"}${expires}), as it claims; the server checks it.`;
  }
}

function clearProblem() {
  $("problem").hidden = true;
  $("problem").replaceChildren();
  $("token").removeAttribute("aria-invalid");
}

/** A refused token (401) is the page's problem, not a panel's: say why and lead back to the token field. */
function tokenRefused(error) {
  api.token.clear();
  showWho();
  $("token").setAttribute("aria-invalid", "true");
  show($("problem"),
    h("p", {}, h("strong", {}, "The server refused your token (401): "), error.message, "."),
    h("p", {}, "It has been forgotten. ", h("button", { type: "button", onclick: () => $("token").focus() }, "Enter a new token")));
  $("problem").hidden = false;
  $("problem").focus();
}

/** Runs a request for one area of the page; its failure is shown there (or, for a refused token, at the top). */
async function attempt(status, work) {
  try {
    return await work();
  } catch (error) {
    if (!(error instanceof api.ApiError)) throw error;
    if (error.status === 401) tokenRefused(error);
    show(status, h("span", { class: "bad" }, deniedMessage(error)
      ? `Your role may not read this: ${error.message}.`
      : `Refused: ${error.message}.`));
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Search

function searchFilter() {
  const and = [];
  const table = $("q-table").value.trim();
  if (table) {
    const dot = table.indexOf(".");
    if (dot > 0) and.push({ entitySchema: { equalTo: table.slice(0, dot) } }, { entityName: { equalTo: table.slice(dot + 1) } });
    else and.push({ entityName: { equalTo: table } });
  }
  for (const [id, field] of [["q-entity", "entityId"], ["q-user", "userId"], ["q-request", "requestId"]]) {
    const text = $(id).value.trim();
    if (text) and.push({ [field]: { equalTo: text } });
  }
  // datetime-local has no zone; the labels say UTC.
  const instant = (id) => $(id).value && new Date(`${$(id).value}Z`).toISOString();
  if ($("q-from").value) and.push({ createdAt: { greaterThanOrEqualTo: instant("q-from") } });
  if ($("q-until").value) and.push({ createdAt: { lessThan: instant("q-until") } });
  return and.length ? { and } : undefined;
}

async function search() {
  const status = $("search-status");
  status.textContent = "Searching…";
  const data = await attempt(status, () => api.gql(api.SEARCH, { filter: searchFilter(), first: SEARCH_PAGE }));
  if (!data) return show($("timeline"));
  const { nodes, totalCount } = data.auditLogs;
  status.textContent = totalCount > nodes.length
    ? `${totalCount} changes match; the newest ${nodes.length} are shown (narrow the search to see others).`
    : `${totalCount} change${totalCount === 1 ? "" : "s"} match, newest first.`;
  show($("timeline"), nodes.map((row) => {
    const label = `${qualified(row)} ${row.entityId ?? ""}`.trim();
    return h("li", {},
      timeOf(row.createdAt), " ",
      h("span", { class: `action ${row.action}` }, row.action), " ",
      h("strong", {}, qualified(row)), " ", row.entityId !== null ? h("code", {}, row.entityId) : "",
      row.userId ? [" by ", h("code", {}, row.userId), row.userEmail ? ` (${row.userEmail})` : ""] : " (no user in context)",
      row.requestId ? [", request ", h("code", {}, row.requestId)] : "",
      h("span", { class: "actions" },
        row.entityId !== null
          ? h("button", { type: "button", "aria-label": `History of ${label}`, onclick: () => openHistory(row) }, "History")
          : "",
        h("button", { type: "button", class: "secondary", "aria-label": `Preview revert of audit row ${row.rowId}`, onclick: () => previewRevert(row) }, "Preview revert")));
  }));
}

// ---------------------------------------------------------------------------------------------------------
// History: readable diffs and the state at an instant

function diffTable(caption, rows) {
  return h("table", {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col" }, "After"))),
    h("tbody", {}, rows.map(([field, before, after]) =>
      h("tr", {}, h("th", { scope: "row" }, field), h("td", { class: "old" }, before), h("td", { class: "new" }, after)))));
}

function changeRows(row) {
  switch (row.action) {
    case "INSERT": return Object.entries(row.newValue ?? {}).map(([f, v]) => [f, value(null, true), value(v)]);
    case "DELETE": return Object.entries(row.oldValue ?? {}).map(([f, v]) => [f, value(v), value(null, true)]);
    case "UPDATE": return Object.entries(row.changes ?? {}).map(([f, c]) => [f, value(c.old), value(c.new)]);
    default: return [];
  }
}

let history; // { entityName, entityId, instants: [createdAt ascending], rows }
let asOfRequest = 0;
let asOfTimer;

async function openHistory(row) {
  const entityName = qualified(row);
  const status = $("history-status");
  status.textContent = `Loading the history of ${entityName} ${row.entityId}…`;
  $("as-of").hidden = true;
  show($("history-body"));
  const data = await attempt(status, () => api.gql(api.HISTORY, { entityName, entityId: row.entityId, first: HISTORY_PAGE }));
  $("history").scrollIntoView();
  if (!data) return;
  const rows = data.entityHistory.nodes; // newest first
  status.textContent = `${entityName} ${row.entityId}: ${rows.length} change${rows.length === 1 ? "" : "s"}${rows.length === HISTORY_PAGE ? " (the newest shown)" : ""}, newest first.`;
  show($("history-body"), rows.map((change) => h("article", { class: "change", "aria-label": `${change.action} at ${when(change.createdAt)}` },
    h("h3", {}, h("span", { class: `action ${change.action}` }, change.action), " ", timeOf(change.createdAt),
      change.userId ? [" by ", change.userId] : "", ` (audit row ${change.rowId}, tx ${change.txId})`),
    change.action === "TRUNCATE" ? h("p", {}, "The table was truncated.") : diffTable(`${change.action} of ${entityName} ${row.entityId}`, changeRows(change)),
    h("button", { type: "button", class: "secondary", "aria-label": `Preview revert of audit row ${change.rowId}`, onclick: () => previewRevert(change) }, "Preview revert"))));
  if (!rows.length) return;
  history = { entityName, entityId: row.entityId, rows: [...rows].reverse() };
  const slider = $("as-of-slider");
  slider.max = String(history.rows.length - 1);
  slider.value = slider.max;
  $("as-of").hidden = false;
  showAsOf();
}

function showAsOf() {
  const index = Number($("as-of-slider").value);
  const change = history.rows[index];
  const label = `after change ${index + 1} of ${history.rows.length} (${change.action}), ${when(change.createdAt)}`;
  $("as-of-label").textContent = label;
  $("as-of-slider").setAttribute("aria-valuetext", label);
  clearTimeout(asOfTimer);
  asOfTimer = setTimeout(() => loadAsOf(change.createdAt), 120);
}

async function loadAsOf(at) {
  const request = ++asOfRequest;
  const target = $("as-of-state");
  const { entityName, entityId } = history;
  // `at` is passed back exactly as the server wrote it (microseconds intact): rowAsOf includes changes at `at`.
  const data = await attempt(target, () => api.gql(api.ROW_AS_OF, { entityName, entityId, at }));
  if (!data || request !== asOfRequest) return;
  const state = data.rowAsOf;
  show(target, state === null
    ? h("p", {}, `The row did not exist at ${when(at)}.`)
    : h("table", { "aria-label": `${entityName} ${entityId} at ${when(at)}` },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Value"))),
      h("tbody", {}, Object.entries(state).map(([f, v]) => h("tr", {}, h("th", { scope: "row" }, f), h("td", {}, value(v)))))));
}

// ---------------------------------------------------------------------------------------------------------
// Revert: a dry run first, then an explicit confirm

function revertScopes(row) {
  return [
    { label: `this change (audit row ${row.rowId})`, input: { logId: row.rowId } },
    row.statementNumber !== null && row.statementNumber !== undefined
      ? { label: `its statement (transaction ${row.txId}, statement ${row.statementNumber})`, input: { txId: row.txId, statementNumber: row.statementNumber } }
      : undefined,
    { label: `its transaction (${row.txId})`, input: { txId: row.txId } },
    row.requestId ? { label: `its request (${row.requestId})`, input: { requestId: row.requestId } } : undefined,
  ].filter(Boolean);
}

function stepDiff(step) {
  const before = step.currentValue ?? {};
  const after = step.revertedValue ?? {};
  const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])]
    .filter((f) => json(before[f]) !== json(after[f]));
  return diffTable(`step ${step.step}: the row now and after the revert`, fields.map((f) =>
    [f, value(before[f], step.currentValue === null || !(f in before)), value(after[f], step.revertedValue === null || !(f in after))]));
}

function stepsView(steps) {
  return steps.map((step) => h("article", { class: "change", "aria-label": `step ${step.step}` },
    h("h3", {}, `Step ${step.step}: ${step.revertAction ?? "nothing"} ${step.entitySchema}.${step.entityName} `, h("code", {}, step.entityId ?? ""),
      ` (undoes ${step.action} of audit row ${step.logId})`, step.applied ? h("span", { class: "ok" }, " applied") : ""),
    step.problem ? h("p", { class: "bad" }, `Problem (${step.problemCode}): ${step.problem}`) : "",
    stepDiff(step),
    step.statement ? h("details", {}, h("summary", {}, "SQL"), h("pre", {}, h("code", {}, step.statement))) : ""));
}

async function previewRevert(row, scopeIndex = 0) {
  const status = $("revert-status");
  const scopes = revertScopes(row);
  const scope = scopes[scopeIndex];
  status.textContent = `Previewing the revert of ${scope.label}…`;
  show($("revert-body"));
  $("revert").scrollIntoView();
  const chooser = h("fieldset", {}, h("legend", {}, "Undo"), scopes.map((s, i) => h("label", { class: "choice" },
    h("input", { type: "radio", name: "revert-scope", checked: i === scopeIndex, onchange: () => previewRevert(row, i) }), ` ${s.label}`)));
  const data = await attempt(status, () => api.gql(api.REVERT, { input: { ...scope.input, dryRun: true } }));
  if (!data) return show($("revert-body"), chooser);
  const steps = data.revert.result;
  const conflicts = steps.filter((s) => s.problemCode === "55000").length;
  const refusals = steps.filter((s) => s.problemCode && s.problemCode !== "55000").length;
  status.textContent = `Dry run of ${scope.label}: ${steps.length} step${steps.length === 1 ? "" : "s"}, ${conflicts + refusals} problem${conflicts + refusals === 1 ? "" : "s"}; nothing has changed.`;
  const confirm = h("input", { type: "checkbox", id: "revert-confirm" });
  const apply = h("button", { type: "button", id: "revert-apply", disabled: true }, `Apply the revert (${steps.length} step${steps.length === 1 ? "" : "s"})`);
  confirm.addEventListener("change", () => { apply.disabled = !confirm.checked; });
  apply.addEventListener("click", () => applyRevert(row, scope, apply));
  const confirmation = conflicts + refusals
    ? h("p", { class: "bad" }, "Applying would be refused: resolve the problems above (or revert a narrower set) first.")
    : h("div", { class: "confirm" },
      h("label", { class: "choice", for: "revert-confirm" }, confirm, " I have read this preview: change the data as shown"),
      apply);
  show($("revert-body"), chooser, stepsView(steps), confirmation);
}

async function applyRevert(row, scope, button) {
  button.disabled = true;
  const status = $("revert-status");
  status.textContent = "Reverting…";
  const data = await attempt(status, () => api.gql(api.REVERT, { input: { ...scope.input, dryRun: false } }));
  if (!data) return;
  const steps = data.revert.result;
  status.textContent = `Reverted ${scope.label}: ${steps.filter((s) => s.applied).length} of ${steps.length} step${steps.length === 1 ? "" : "s"} applied.`;
  show($("revert-body"), stepsView(steps));
  if (history && row.entityId !== null && history.entityName === qualified(row) && history.entityId === row.entityId) openHistory(row);
}

// ---------------------------------------------------------------------------------------------------------
// Activity: changes per day per table and action

let activity = [];

async function loadActivity() {
  const status = $("activity-status");
  const days = Math.min(366, Math.max(1, Number($("activity-days").value) || 30));
  const since = new Date(Date.now() - (days - 1) * 86_400_000).toISOString().slice(0, 10);
  status.textContent = "Loading…";
  let source = "the daily summary";
  let data;
  try {
    data = await api.gql(api.ACTIVITY_DAILY, { since });
    activity = data.auditActivityDailies.groupedAggregates.map((g) => ({ day: g.keys[0], table: `${g.keys[1]}.${g.keys[2]}`, action: g.keys[3], count: Number(g.sum.changes) }));
  } catch (error) {
    if (!(error instanceof api.ApiError) || !deniedMessage(error)) return attempt(status, () => Promise.reject(error));
    // Users may not read the summary: count the trail rows their role sees instead.
    source = "the audit rows your role may read";
    data = await attempt(status, () => api.gql(api.ACTIVITY_FROM_TRAIL, { since: `${since}T00:00:00Z` }));
    if (!data) return;
    activity = data.auditLogs.groupedAggregates.map((g) => ({ day: new Date(g.keys[0]).toISOString().slice(0, 10), table: `${g.keys[1]}.${g.keys[2]}`, action: g.keys[3], count: Number(g.distinctCount.rowId) }));
  }
  const select = $("activity-table");
  const chosen = select.value;
  show(select, h("option", { value: "" }, "all tables"),
    [...new Set(activity.map((a) => a.table))].sort().map((t) => h("option", { value: t, selected: t === chosen }, t)));
  status.textContent = `Changes per UTC day since ${since}, from ${source}.`;
  drawActivity(since, days);
}

function drawActivity(since, days) {
  const table = $("activity-table").value;
  const rows = activity.filter((a) => !table || a.table === table);
  const dayList = Array.from({ length: days }, (_, i) => new Date(Date.parse(`${since}T00:00:00Z`) + i * 86_400_000).toISOString().slice(0, 10));
  const perDay = new Map(dayList.map((d) => [d, Object.fromEntries(ACTIONS.map((a) => [a, 0]))]));
  for (const r of rows) if (perDay.has(r.day)) perDay.get(r.day)[r.action] += r.count;
  const totals = dayList.map((d) => ACTIONS.reduce((n, a) => n + perDay.get(d)[a], 0));
  const max = Math.max(1, ...totals);
  const barWidth = 14, chartHeight = 160, left = 40, top = 10;
  const width = left + days * barWidth + 10;
  const bars = dayList.flatMap((d, i) => {
    let y = top + chartHeight;
    return ACTIONS.filter((a) => perDay.get(d)[a] > 0).map((a) => {
      const height = (perDay.get(d)[a] / max) * chartHeight;
      y -= height;
      return h("rect", { class: `bar-${a}`, x: left + i * barWidth + 1, y, width: barWidth - 2, height },
        h("title", {}, `${d}: ${perDay.get(d)[a]} ${a}`));
    });
  });
  const total = totals.reduce((n, t) => n + t, 0);
  show($("activity-chart"),
    h("ul", { class: "legend", "aria-hidden": "true" }, ACTIONS.map((a) => h("li", {}, h("span", { class: `swatch bar-${a}` }), a))),
    h("svg", { class: "chart", role: "img", "aria-label": `${total} changes${table ? ` to ${table}` : ""} over ${days} days, at most ${max} in a day; the table below has the numbers`, viewBox: `0 0 ${width} ${chartHeight + 40}`, width },
      h("line", { x1: left, y1: top + chartHeight, x2: width - 5, y2: top + chartHeight, stroke: "#595959" }),
      h("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, String(max)),
      h("text", { x: left - 4, y: top + chartHeight, "text-anchor": "end" }, "0"),
      h("text", { x: left, y: top + chartHeight + 16 }, dayList[0]),
      h("text", { x: width - 5, y: top + chartHeight + 16, "text-anchor": "end" }, dayList.at(-1)),
      bars),
    rows.length
      ? h("table", { "aria-label": "Changes per day, table and action" },
        h("thead", {}, h("tr", {}, ["Day", "Table", "Action", "Changes"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, [...rows].sort((a, b) => b.day.localeCompare(a.day) || a.table.localeCompare(b.table) || a.action.localeCompare(b.action))
          .map((r) => h("tr", {}, h("td", {}, r.day), h("td", {}, r.table), h("td", { class: r.action }, r.action), h("td", { class: "num" }, String(r.count))))))
      : h("p", {}, "No changes in this period."));
}

// ---------------------------------------------------------------------------------------------------------
// Dashboard: partitions, archives, seals, coverage (what the caller's role may read)

function grid(columns, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c))))));
}

async function loadPartitions() {
  const target = $("partitions");
  const data = await attempt(target, () => api.gql(api.PARTITIONS));
  if (!data) return;
  const nodes = data.auditPartitions.nodes;
  const largest = Math.max(1, ...nodes.map((p) => Number(p.totalBytes)));
  show(target, grid(["Month", "Partition", "Rows (estimate)", "Size"], nodes.map((p) => [
    p.isDefault ? "default" : new Date(p.rangeStart).toISOString().slice(0, 7),
    h("code", {}, p.partitionName),
    h("td", { class: "num" }, String(p.estimatedRows)),
    h("td", { class: "size" }, h("meter", { min: 0, max: largest, value: Number(p.totalBytes), "aria-label": `${p.partitionName} size` }), ` ${bytes(p.totalBytes)}`),
  ])));
}

async function loadArchives() {
  const target = $("archives");
  const data = await attempt(target, () => api.gql(api.ARCHIVES));
  if (!data) return;
  const nodes = data.auditArchives.nodes;
  show(target, nodes.length
    ? grid(["Month", "State", "Rows", "Size", "Updated", "Last error"], nodes.map((a) => [
      a.month.slice(0, 7), h("td", { class: a.lastError ? "bad" : "" }, a.status), h("td", { class: "num" }, a.rows ?? "—"),
      h("td", { class: "size" }, a.bytes === null ? "—" : bytes(a.bytes)), timeOf(a.updatedAt), a.lastError ?? "—"]))
    : h("p", {}, "No month has been archived."));
}

async function loadSeals() {
  const target = $("seals");
  const data = await attempt(target, () => api.gql(api.SEALS));
  if (!data) return;
  const last = data.auditSeals.nodes[0];
  const runs = data.auditTaskRuns.nodes;
  const failures = runs.filter((r) => !r.succeeded);
  show(target,
    h("p", {}, last
      ? [`Last sealed day: `, h("strong", {}, last.day), ` (${last.rows} audit rows, sealed ${when(last.sealedAt)}); ${data.auditSeals.totalCount} seal${data.auditSeals.totalCount === 1 ? "" : "s"} in the chain.`]
      : "Nothing is sealed yet."),
    h("p", {}, runs.length
      ? [`Last sealing run `, timeOf(runs[0].finishedAt), ": ", runs[0].succeeded ? h("span", { class: "ok" }, "succeeded") : h("span", { class: "bad" }, `failed: ${runs[0].error}`)]
      : "No sealing run recorded."),
    failures.length
      ? grid(["Failed run", "Error"], failures.map((r) => [timeOf(r.finishedAt), r.error]))
      : "",
    h("p", {}, "Unsealed finished days appear under coverage problems. ", h("code", {}, "cartop-audit verify"), " recomputes every seal; its findings are not served over GraphQL."));
}

async function loadCoverage() {
  const target = $("coverage");
  const data = await attempt(target, () => api.gql(api.COVERAGE));
  if (!data) return;
  const nodes = data.auditCoverageProblems.nodes;
  show(target, nodes.length
    ? grid(["Check", "Object", "Problem"], nodes.map((p) => [h("td", { class: "bad" }, p.checkName), h("code", {}, p.object), p.problem]))
    : h("p", { class: "ok" }, "No coverage problems."));
}

const loadDashboard = () => Promise.all([loadPartitions(), loadArchives(), loadSeals(), loadCoverage()]);

// ---------------------------------------------------------------------------------------------------------

function refreshAll() {
  showWho();
  loadActivity();
  loadDashboard();
}

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("token").value.trim().replace(/^Bearer\s+/i, "");
    $("token").value = "";
    clearProblem();
    if (given) api.token.set(given);
    refreshAll();
  });
  $("forget-token").addEventListener("click", () => {
    api.token.clear();
    clearProblem();
    refreshAll();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("as-of-slider").addEventListener("input", showAsOf);
  $("activity-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadActivity();
  });
  $("activity-table").addEventListener("change", () => loadActivity());
  $("dashboard-refresh").addEventListener("click", loadDashboard);
  refreshAll();
}

start();
