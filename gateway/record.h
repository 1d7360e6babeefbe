#ifndef CG_RECORD_H
#define CG_RECORD_H

#include <jansson.h>
#include <stdint.h>

#include "store.h"

/* RFC 3339 UTC with milliseconds ("2026-11-23T01:02:03.456Z"). */
void cg_record_time(int64_t ms, char *out, size_t cap);

/* "zephyr", "minidump", "elf-core", "raw", or NULL when unknown. */
const char *cg_record_format_name(const struct cg_dump_record *r);

/* The record as a new JSON object (caller owns: json_decref). st, when not
 * NULL, adds `occurrences` from the signature counts. */
json_t *cg_record_json(const char *gateway, struct cg_store *st, const struct cg_dump_record *r);

/* A committed dump by its stable id, DEVICE/DUMP_ID, or sequence number.
 * CG_ERR_NOT_FOUND when there is none. */
int cg_record_find(struct cg_store *st, const char *gateway, const char *id, struct cg_dump_record *out);

#endif
