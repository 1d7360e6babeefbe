/*
 * Fuzz what the admin API and crashgatectl parse from an operator's request:
 * a dump id (stable id, DEVICE/DUMP_ID or sequence number, looked up in an
 * empty in-memory store) and the /v1/dumps query parameters (filters,
 * since/until in RFC 3339, after/through). Input: the id, a newline, then
 * "key=value&key=value...". Every parameter is set, refused with a
 * NUL-terminated message, or reported as unknown; matching never crashes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cg_store *st;
	char err[256];
	if (!st && cg_store_open_memory("/fuzz-admin-query", &st, err, sizeof err) != CG_OK)
		abort();
	char *in = malloc(size + 1);
	if (!in)
		return 0;
	memcpy(in, data, size);
	in[size] = '\0';
	char *query = strchr(in, '\n');
	if (query)
		*query++ = '\0';
	struct cg_dump_record *r = malloc(sizeof *r);
	if (r && cg_record_find(st, "gw", in, r) == CG_OK)
		abort();   /* the store is empty */

	struct cg_record_filter f = { 0 };
	char *save = NULL;
	for (char *kv = query ? strtok_r(query, "&", &save) : NULL; kv; kv = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(kv, '=');
		if (!eq)
			continue;
		*eq = '\0';
		memset(err, 'x', sizeof err);
		int rc = cg_record_filter_set(&f, kv, eq + 1, err, sizeof err);
		if (rc < -1 || rc > 1 || (rc == -1 && !memchr(err, '\0', sizeof err)))
			abort();
	}
	if (r) {
		memset(r, 0, sizeof *r);
		snprintf(r->device, sizeof r->device, "dev-1");
		snprintf(r->group, sizeof r->group, "g");
		snprintf(r->region, sizeof r->region, "EU");
		snprintf(r->signature, sizeof r->signature, "0123456789abcdef");
		r->seq = 42;
		r->status = CG_DUMP_STORED;
		r->received_at_ms = 1795400000000;
		(void)cg_record_filter_match(&f, r);
		(void)cg_record_filter_any(&f);
	}
	free(r);
	free(in);
	return 0;
}
