// The PostgreSQL error codes (SQLSTATE) the TypeScript side raises or acts on, by name
// (PostgreSQL documentation, appendix A "Error Codes").
export const SQLSTATE = {
  dataException: "22000",
  invalidParameterValue: "22023",
  serializationFailure: "40001",
  undefinedObject: "42704",
  objectNotInPrerequisiteState: "55000",
  lockNotAvailable: "55P03",
  queryCanceled: "57014",
  dataCorrupted: "XX001",
} as const;

/** The SQLSTATE of a PostgreSQL error (or of one of ours that carries one), else undefined. */
export function sqlstateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}
