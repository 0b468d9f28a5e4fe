// Errors the archive path raises for users: one sentence prefixed with what refused, an SQLSTATE-style code
// (the class PostgreSQL would use for the same situation) and a hint saying what to do.
import { SQLSTATE } from "../db/sqlstate.ts";

export const ARCHIVE_ERRORS = {
  /** A file, its manifest or the restored rows do not match the database's record or the seals. */
  corrupted: SQLSTATE.dataCorrupted,
  /** The month is not in a state that allows the step (no record, a partition in the way). */
  wrongState: SQLSTATE.objectNotInPrerequisiteState,
  /** An argument or a value read from a file is not one this version accepts. */
  invalidValue: SQLSTATE.invalidParameterValue,
} as const;

export class ArchiveError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(message: string, code: string, hint?: string) {
    super(message);
    this.name = "ArchiveError";
    this.code = code;
    this.hint = hint;
  }
}
