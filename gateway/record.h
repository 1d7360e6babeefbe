#ifndef CG_RECORD_H
#define CG_RECORD_H

#include <jansson.h>
#include <stdbool.h>
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

/* Which dumps a listing or a purge covers (admin API query parameters,
 * crashgatectl options). Unset fields match everything. */
struct cg_record_filter {
	const char *device, *group, *region, *signature, *status;
	int64_t since, until;          /* received_at in [since, until), ms */
	bool has_since, has_until;     /* (any instant, the epoch included, is a bound) */
	uint64_t after, through;       /* seq in (after, through]; through 0: no end */
};
/* Set one filter from a query parameter. 0 set; 1 not a filter key; -1 a bad
 * value (err says which and why). val must outlive f. */
int cg_record_filter_set(struct cg_record_filter *f, const char *key, const char *val, char *err,
			 size_t errlen);
bool cg_record_filter_any(const struct cg_record_filter *f);
bool cg_record_filter_match(const struct cg_record_filter *f, const struct cg_dump_record *r);

/* Crash groups: the gateway's counts per signature, with the number of
 * devices that had it (a new JSON array). */
json_t *cg_signatures_json(struct cg_store *st);

/* Dumps being received (status "open"), matching f's device, group and
 * region when f is not NULL (a new JSON array). */
json_t *cg_open_dumps_json(struct cg_store *st, const char *gateway, const struct cg_record_filter *f);

#endif
