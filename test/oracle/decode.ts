// Parses test_decoding output (pg_logical_slot_get_changes with include-xids) into row changes.
// A change line reads `table w.items: INSERT: id[bigint]:1 sku[text]:'it''s' tags[text[]]:'{a,b}' x[integer]:null`;
// UPDATE has `old-key: … new-tuple: …` (the whole old row with REPLICA IDENTITY FULL); TRUNCATE lists its
// tables: `table w.a, w.b: TRUNCATE: (no-flags)`. Values are the type's output text: integers, floats and
// numerics bare, booleans as true/false, bit strings as B'…', everything else single-quoted with '' for '.

/** Column name to its text form (null for SQL NULL). */
export type Tuple = Record<string, string | null>;

export interface WalChange {
  xid: number;
  /** schema.table as PostgreSQL names it (a partition, not its partitioned table). */
  relation: string;
  op: "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE";
  old?: Tuple;
  new?: Tuple;
  /** TRUNCATE: every relation it names. */
  relations?: string[];
}

/** Reads `name[type]:value` pairs from `text` starting at `start` until `stop` (a marker such as "new-tuple:",
 * met where a pair would start, never inside a value) or the end. */
function parseTuple(text: string, start: number, stop?: string): { tuple: Tuple; end: number } {
  const tuple: Tuple = {};
  let pos = start;
  const limit = text.length;
  while (pos < limit) {
    while (text[pos] === " ") pos++;
    if (pos >= limit || (stop && text.startsWith(stop, pos))) break;
    const open = text.indexOf("[", pos);
    if (open === -1) throw new Error(`test_decoding: no [type] at ${pos} in ${text}`);
    const name = unquoteIdentifier(text.slice(pos, open));
    const close = text.indexOf("]:", open);
    if (close === -1) throw new Error(`test_decoding: no ]: after ${name} in ${text}`);
    const type = text.slice(open + 1, close);
    pos = close + 2;
    let value: string | null;
    if (text[pos] === "'") {
      let out = "";
      pos++;
      for (;;) {
        if (pos >= text.length) throw new Error(`test_decoding: unterminated value of ${name} in ${text}`);
        if (text[pos] === "'") {
          if (text[pos + 1] === "'") {
            out += "'";
            pos += 2;
            continue;
          }
          pos++;
          break;
        }
        out += text[pos++];
      }
      value = out;
    } else if (text.startsWith("B'", pos)) {
      const end = text.indexOf("'", pos + 2);
      value = text.slice(pos + 2, end);
      pos = end + 1;
    } else {
      let end = text.indexOf(" ", pos);
      if (end === -1) end = limit;
      const token = text.slice(pos, end);
      pos = end;
      value = token === "null" ? null
        : type === "boolean" ? (token === "true" ? "t" : "f")
        : token;
      if (token === "unchanged-toast-datum") throw new Error(`test_decoding: unchanged TOAST value of ${name}; the oracle keeps values small`);
    }
    tuple[name] = value;
  }
  return { tuple, end: pos };
}

function unquoteIdentifier(text: string): string {
  return text.startsWith('"') ? text.slice(1, -1).replaceAll('""', '"') : text;
}

/** The row changes of the given test_decoding lines, with the transaction each belongs to. */
export function parseChanges(lines: string[]): WalChange[] {
  const changes: WalChange[] = [];
  let xid: number | undefined;
  for (const line of lines) {
    if (line.startsWith("BEGIN ")) {
      xid = Number(line.slice(6));
      continue;
    }
    if (line.startsWith("COMMIT ")) {
      xid = undefined;
      continue;
    }
    if (!line.startsWith("table ")) throw new Error(`test_decoding: unexpected line ${line}`);
    if (xid === undefined) throw new Error(`test_decoding: change outside a transaction: ${line}`);
    const opAt = line.search(/: (INSERT|UPDATE|DELETE|TRUNCATE):/);
    const relation = line.slice(6, opAt);
    const op = line.slice(opAt + 2, line.indexOf(":", opAt + 2)) as WalChange["op"];
    const rest = opAt + 2 + op.length + 1;
    if (op === "TRUNCATE") {
      changes.push({ xid, relation, op, relations: relation.split(", ").map((r) => r.split(".").map(unquoteIdentifier).join(".")) });
    } else if (op === "INSERT") {
      changes.push({ xid, relation, op, new: parseTuple(line, rest).tuple });
    } else if (op === "DELETE") {
      changes.push({ xid, relation, op, old: parseTuple(line, rest).tuple });
    } else {
      // `old-key:` (only with an identity that logs the old row) comes first, then `new-tuple:`.
      let pos = rest;
      while (line[pos] === " ") pos++;
      let old: Tuple | undefined;
      if (line.startsWith("old-key:", pos)) {
        const parsed = parseTuple(line, pos + "old-key:".length, "new-tuple:");
        old = parsed.tuple;
        pos = parsed.end;
      }
      if (!line.startsWith("new-tuple:", pos)) throw new Error(`test_decoding: no new-tuple in ${line}`);
      changes.push({ xid, relation, op, old, new: parseTuple(line, pos + "new-tuple:".length).tuple });
    }
  }
  return changes;
}
