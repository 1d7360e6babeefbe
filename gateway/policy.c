#include "policy.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define SIG_STATS_VERSION 1

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* ---- signature statistics ---- */

size_t cg_sig_stats_encode(const struct cg_sig_stats *s, uint8_t *buf)
{
	uint8_t *p = buf;
	size_t rl = strnlen(s->reason, sizeof s->reason - 1);
	uint32_t n = s->nrecent > CG_THROTTLE_MAX ? CG_THROTTLE_MAX : s->nrecent;

	*p++ = SIG_STATS_VERSION;
	put64(p, s->stored), p += 8;
	put64(p, s->throttled), p += 8;
	put64(p, (uint64_t)s->first_seen_ms), p += 8;
	put64(p, (uint64_t)s->last_seen_ms), p += 8;
	p[0] = (uint8_t)(s->format >> 24), p[1] = (uint8_t)(s->format >> 16);
	p[2] = (uint8_t)(s->format >> 8), p[3] = (uint8_t)s->format, p += 4;
	*p++ = (uint8_t)rl;
	memcpy(p, s->reason, rl), p += rl;
	*p++ = (uint8_t)(n >> 8), *p++ = (uint8_t)n;
	for (uint32_t i = 0; i < n; i++)
		put64(p, (uint64_t)s->recent[i]), p += 8;
	return (size_t)(p - buf);
}

int cg_sig_stats_decode(const uint8_t *buf, size_t len, struct cg_sig_stats *s)
{
	const uint8_t *p = buf, *end = buf + len;

	memset(s, 0, sizeof *s);
	if (len < 1 + 32 + 4 + 1 || p[0] != SIG_STATS_VERSION)
		return CG_ERR_MALFORMED;
	p++;
	s->stored = get64(p), p += 8;
	s->throttled = get64(p), p += 8;
	s->first_seen_ms = (int64_t)get64(p), p += 8;
	s->last_seen_ms = (int64_t)get64(p), p += 8;
	s->format = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
	p += 4;
	size_t rl = *p++;
	if (rl >= sizeof s->reason || (size_t)(end - p) < rl + 2)
		return CG_ERR_MALFORMED;
	memcpy(s->reason, p, rl);
	s->reason[rl] = '\0';
	p += rl;
	uint32_t n = ((uint32_t)p[0] << 8) | p[1];
	p += 2;
	if (n > CG_THROTTLE_MAX || (size_t)(end - p) != (size_t)n * 8)
		return CG_ERR_MALFORMED;
	for (uint32_t i = 0; i < n; i++)
		s->recent[i] = (int64_t)get64(p), p += 8;
	s->nrecent = n;
	return CG_OK;
}

int cg_sig_stats_load(struct cg_store *st, const char *sig, struct cg_sig_stats *s)
{
	uint8_t key[CG_POLICY_KEY_MAX], *v = NULL;
	size_t vlen = 0, klen = cg_policy_key_sig(key, sig);
	int rc = cg_store_policy_get(st, key, klen, &v, &vlen);

	if (rc == CG_ERR_NOT_FOUND) {
		memset(s, 0, sizeof *s);
		return CG_OK;
	}
	if (rc != CG_OK)
		return rc;
	rc = cg_sig_stats_decode(v, vlen, s);
	cg_store_free(v);
	if (rc != CG_OK)   /* damaged: start counting again rather than stop collecting */
		memset(s, 0, sizeof *s);
	return CG_OK;
}

uint32_t cg_throttle_window(struct cg_sig_stats *s, int64_t now_ms, uint64_t window_ms)
{
	uint32_t drop = 0;

	/* A time in the future (the wall clock stepped back) counts as inside. */
	while (drop < s->nrecent && now_ms - s->recent[drop] >= (int64_t)window_ms)
		drop++;
	if (drop) {
		memmove(s->recent, s->recent + drop, (s->nrecent - drop) * sizeof s->recent[0]);
		s->nrecent -= drop;
	}
	return s->nrecent;
}

void cg_sig_stats_note(struct cg_sig_stats *s, int64_t now_ms, bool stored, uint32_t keep,
		       const struct cg_crash *c)
{
	if (!s->first_seen_ms || now_ms < s->first_seen_ms)
		s->first_seen_ms = now_ms;
	if (now_ms > s->last_seen_ms)
		s->last_seen_ms = now_ms;
	if (c) {
		s->format = c->format;
		if (c->reason[0])
			snprintf(s->reason, sizeof s->reason, "%s", c->reason);
	}
	if (!stored) {
		s->throttled++;
		return;
	}
	s->stored++;
	if (keep > CG_THROTTLE_MAX)
		keep = CG_THROTTLE_MAX;
	if (keep == 0)
		return;
	if (s->nrecent >= keep) {   /* only the newest `keep` can matter */
		uint32_t drop = s->nrecent - keep + 1;
		memmove(s->recent, s->recent + drop, (s->nrecent - drop) * sizeof s->recent[0]);
		s->nrecent -= drop;
	}
	s->recent[s->nrecent++] = now_ms;
}

/* ---- keys ---- */

size_t cg_policy_key_sig(uint8_t *out, const char *sig)
{
	out[0] = 's';
	memcpy(out + 1, sig, 16);
	return 17;
}

size_t cg_policy_key_sigdev(uint8_t *out, const char *sig, const char *device)
{
	size_t dl = strnlen(device, CG_DEVICE_ID_MAX);
	out[0] = 'd';
	memcpy(out + 1, sig, 16);
	memcpy(out + 17, device, dl);
	return 17 + dl;
}

size_t cg_policy_key_quota(uint8_t *out, const struct cg_group_config *g)
{
	size_t nl = strnlen(g->name, 128);
	out[0] = 'q';
	/* Keyed by the window's start: a new window starts a new count. */
	put64(out + 1, g->collection.start_ms);
	memcpy(out + 9, g->name, nl);
	return 9 + nl;
}

size_t cg_policy_key_device(uint8_t *out, const char *device)
{
	size_t dl = strnlen(device, CG_DEVICE_ID_MAX);
	out[0] = 'v';
	memcpy(out + 1, device, dl);
	return 1 + dl;
}

size_t cg_policy_key_content(uint8_t *out, const char *device, const uint8_t hash[16])
{
	size_t dl = strnlen(device, CG_DEVICE_ID_MAX);
	out[0] = 'c';
	memcpy(out + 1, device, dl);
	out[1 + dl] = 0;
	memcpy(out + 2 + dl, hash, 16);
	return 2 + dl + 16;
}

int cg_policy_counter_get(struct cg_store *st, const uint8_t *key, size_t klen, uint64_t *v)
{
	uint8_t *val = NULL;
	size_t vlen = 0;
	int rc = cg_store_policy_get(st, key, klen, &val, &vlen);

	*v = 0;
	if (rc == CG_ERR_NOT_FOUND)
		return CG_OK;
	if (rc != CG_OK)
		return rc;
	if (vlen == 8)
		*v = get64(val);
	cg_store_free(val);
	return CG_OK;
}

/* ---- collection window and quota ---- */

const char *cg_collection_refusal(const struct cg_group_config *g, int64_t now_ms, uint64_t taken,
				  char *why, size_t whylen)
{
	char t[32];

	if (g->collection.start_ms && now_ms < (int64_t)g->collection.start_ms) {
		cg_format_time((int64_t)g->collection.start_ms, t, sizeof t);
		snprintf(why, whylen, "outside the collection window: group %s collects from %s",
			 g->name, t);
		return why;
	}
	if (g->collection.stop_ms && now_ms >= (int64_t)g->collection.stop_ms) {
		cg_format_time((int64_t)g->collection.stop_ms, t, sizeof t);
		snprintf(why, whylen, "outside the collection window: group %s stopped collecting at %s",
			 g->name, t);
		return why;
	}
	if (g->collection.max_dumps && taken >= g->collection.max_dumps) {
		snprintf(why, whylen, "quota reached: group %s collects at most %u dumps in its window",
			 g->name, g->collection.max_dumps);
		return why;
	}
	return NULL;
}

/* ---- scans ---- */

struct sig_scan {
	cg_sig_cb cb;
	void *ctx;
	struct cg_sig_stats *s;
};

static int sig_visit(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	struct sig_scan *ss = ctx;
	char sig[17];

	if (klen != 17 || cg_sig_stats_decode(val, vlen, ss->s) != CG_OK)
		return 0;
	memcpy(sig, key + 1, 16);
	sig[16] = '\0';
	return ss->cb(ss->ctx, sig, ss->s);
}

int cg_policy_scan_sigs(struct cg_store *st, cg_sig_cb cb, void *ctx)
{
	struct sig_scan ss = { cb, ctx, malloc(sizeof(struct cg_sig_stats)) };
	if (!ss.s)
		return CG_ERR_NOMEM;
	int rc = cg_store_scan_policy(st, "s", 1, sig_visit, &ss);
	free(ss.s);
	return rc;
}

/* ---- retention ---- */

struct rec_sweep {
	struct cg_store *st;
	int64_t now;
	uint64_t dumps_ms, history_ms, overhead;
	struct cg_retention_result *out;
	int rc;
};

static bool older(int64_t now, int64_t at, uint64_t age_ms)
{
	return at > 0 && now - at >= (int64_t)age_ms;
}

static int rec_visit(void *ctx, const struct cg_dump_record *rec_in)
{
	struct rec_sweep *w = ctx;
	struct cg_dump_record *rec = (struct cg_dump_record *)rec_in; /* the scan's own buffer */
	bool has_body = !rec->body_deleted && (rec->status == CG_DUMP_STORED ||
					       rec->status == CG_DUMP_FORWARDED ||
					       rec->status == CG_DUMP_DEAD_LETTER);
	bool body_due = has_body && older(w->now, rec->received_at_ms, w->dumps_ms);
	bool history_due = older(w->now, rec->received_at_ms, w->history_ms);
	int rc = CG_OK;

	if (!has_body && history_due) {
		rc = cg_store_delete_record(w->st, rec, NULL);
		if (rc == CG_OK)
			w->out->records_deleted++;
	} else if (body_due) {
		uint64_t freed = rec->size + (uint64_t)rec->chunks * w->overhead;
		if (history_due) {
			rc = cg_store_delete_record(w->st, rec, NULL);
			if (rc == CG_OK)
				w->out->records_deleted++;
		} else {
			rc = cg_store_delete_body(w->st, rec);
		}
		if (rc == CG_OK) {
			w->out->bodies_deleted++;
			w->out->bytes_freed += freed;
		}
	}
	if (rc == CG_ERR_NOT_FOUND)   /* purged or evicted meanwhile */
		rc = CG_OK;
	if (rc != CG_OK) {
		w->rc = rc;
		return 1;
	}
	return 0;
}

int cg_retention_sweep_records(struct cg_store *st, int64_t now_ms, uint64_t dumps_ms,
			       uint64_t history_ms, uint64_t chunk_overhead,
			       struct cg_retention_result *out)
{
	struct rec_sweep w = { st, now_ms, dumps_ms, history_ms, chunk_overhead, out, CG_OK };
	int rc = cg_store_scan_records(st, rec_visit, &w);
	if (rc == CG_OK)
		rc = w.rc;
	/* Index entries of content duplicates point at another dump's record:
	 * once that record is gone they go too (rejections are not indexed). */
	uint64_t span = dumps_ms > history_ms ? dumps_ms : history_ms;
	uint64_t aliases = 0;   /* not history of their own: not counted in out */
	if (rc == CG_OK)
		rc = cg_store_sweep_index(st, now_ms - (int64_t)span, &aliases);
	return rc;
}

struct evict {
	struct cg_store *st;
	uint64_t want, overhead;
	struct cg_retention_result *out;
	int rc;
};

static int evict_visit(void *ctx, const struct cg_dump_record *rec_in)
{
	struct evict *e = ctx;
	struct cg_dump_record *rec = (struct cg_dump_record *)rec_in; /* the scan's own buffer */
	if (e->out->bytes_freed >= e->want)
		return 1;
	if (rec->status != CG_DUMP_FORWARDED || rec->body_deleted)
		return 0;
	uint64_t freed = rec->size + (uint64_t)rec->chunks * e->overhead;
	e->rc = cg_store_delete_body(e->st, rec);
	if (e->rc == CG_ERR_NOT_FOUND) {   /* purged or deleted meanwhile */
		e->rc = CG_OK;
		return 0;
	}
	if (e->rc != CG_OK)
		return 1;
	e->out->bodies_deleted++;
	e->out->bytes_freed += freed;
	return 0;
}

int cg_evict_delivered(struct cg_store *st, uint64_t want, uint64_t chunk_overhead,
		       struct cg_retention_result *out)
{
	struct evict e = { st, want, chunk_overhead, out, CG_OK };
	int rc = cg_store_scan_records(st, evict_visit, &e);
	return rc != CG_OK ? rc : e.rc;
}

/* Deletes are collected and written in batches of up to SWEEP_BATCH keys. */
#define SWEEP_BATCH 256

struct pol_sweep {
	struct cg_store *st;
	int64_t now;
	uint64_t history_ms, window_ms;
	struct cg_retention_result *out;
	uint8_t keys[SWEEP_BATCH][CG_POLICY_KEY_MAX];
	struct cg_kv kv[SWEEP_BATCH];
	size_t n;
	int rc;
	struct cg_sig_stats s;
};

static void pol_flush(struct pol_sweep *w)
{
	if (w->n && w->rc == CG_OK)
		w->rc = cg_store_policy_write(w->st, w->kv, w->n);
	w->n = 0;
}

static void pol_delete(struct pol_sweep *w, const uint8_t *key, size_t klen)
{
	if (klen > CG_POLICY_KEY_MAX)
		return;
	memcpy(w->keys[w->n], key, klen);
	w->kv[w->n] = (struct cg_kv){ .key = w->keys[w->n], .klen = klen };
	if (++w->n == SWEEP_BATCH)
		pol_flush(w);
}

static int pol_visit_sig(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	struct pol_sweep *w = ctx;

	if (klen == 17 && cg_sig_stats_decode(val, vlen, &w->s) == CG_OK &&
	    older(w->now, w->s.last_seen_ms, w->history_ms)) {
		pol_delete(w, key, klen);
		w->out->signatures_deleted++;
	}
	return w->rc != CG_OK;
}

static int pol_visit_sigdev(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	struct pol_sweep *w = ctx;

	if (vlen == 8 && older(w->now, (int64_t)get64(val), w->history_ms))
		pol_delete(w, key, klen);
	(void)klen;
	return w->rc != CG_OK;
}

static int pol_visit_content(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	struct pol_sweep *w = ctx;

	if (vlen == 16 && older(w->now, (int64_t)get64(val + 8), w->window_ms))
		pol_delete(w, key, klen);
	return w->rc != CG_OK;
}

int cg_retention_sweep_policy(struct cg_store *st, int64_t now_ms, uint64_t history_ms,
			      uint64_t window_ms, struct cg_retention_result *out)
{
	struct pol_sweep *w = calloc(1, sizeof *w);
	if (!w)
		return CG_ERR_NOMEM;
	w->st = st;
	w->now = now_ms;
	w->history_ms = history_ms;
	w->window_ms = window_ms;
	w->out = out;
	int rc = cg_store_scan_policy(st, "s", 1, pol_visit_sig, w);
	/* A device's entry under a signature is as old as its last occurrence,
	 * never newer than the signature's own last_seen: same rule. */
	if (rc == CG_OK)
		rc = cg_store_scan_policy(st, "d", 1, pol_visit_sigdev, w);
	if (rc == CG_OK)
		rc = cg_store_scan_policy(st, "c", 1, pol_visit_content, w);
	pol_flush(w);
	if (rc == CG_OK)
		rc = w->rc;
	free(w);
	return rc;
}
