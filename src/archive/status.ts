// audit.archives.status (partitions/04_archives.sql), and the groups of it the code asks about, each named once.
// A month goes exporting → exported → verified → detached → archived, and to restored when brought back.
export type ArchiveStatus = "exporting" | "exported" | "verified" | "detached" | "archived" | "restored";

/** Its rows have left the database (the file is the copy): seals of its days are checked through the file. */
export const ROWS_OUT_OF_DATABASE: readonly ArchiveStatus[] = ["detached", "archived"];
/** An archive run stopped after the file was checked: the next run finishes it, whatever its age. */
export const ARCHIVE_UNFINISHED: readonly ArchiveStatus[] = ["verified", "detached"];
/** Its file was written completely (what `partitions verify` checks). */
export const FILE_WRITTEN: readonly ArchiveStatus[] = ["exported", "verified", "detached", "archived", "restored"];
/** Archived and gone from the database (what doctor re-checks). */
export const ARCHIVED: readonly ArchiveStatus[] = ["archived"];
