/*
 * The admin HTTP endpoint (SPEC §10), on libmicrohttpd: /healthz (no token),
 * /readyz and /metrics (Prometheus text format) behind a bearer token.
 * /v1/dumps (filters device, group, region, signature, status, since, until;
 * paging limit/after → next), /v1/dumps/{id}, /v1/dumps/{id}/raw,
 * /v1/signatures, /v1/upstreams (queue per upstream): JSON.
 */
#ifndef CG_ADMIN_H
#define CG_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "forward.h"
#include "ingest.h"
#include "reassembly.h"
#include "store.h"

struct cg_admin;

/* Start on cfg->admin.listen. Refuses (with a message) a non-loopback
 * address without a token, and an unreadable token file. */
int cg_admin_start(const struct cg_config *cfg, struct cg_store *st, struct cg_reasm *rs,
		   struct cg_ingest *in, struct cg_forwarder *fw,
		   struct cg_admin **out, char *err, size_t errlen);
void cg_admin_stop(struct cg_admin *a);

#endif
