#include "forward.h"

#include <cbor.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "plugin.h"
#include "record.h"

#define POLL_MS 500              /* look for new records at least this often */

struct fwd_item {
	struct cg_dump_record rec;
	uint32_t done;                 /* 0 pending; CG_FLUSH_OK or CG_FLUSH_DROP once final */
	uint8_t *body;
	size_t body_len;
	char id[400];
	char *json;
	uint8_t *cbor;
	size_t cbor_len;
};

struct up {
	struct cg_forwarder *f;
	const struct cg_upstream_config *cfg;
	const char *region;
	struct cg_output out;
	struct cg_plugin_host host;
	void *state;
	pthread_t thread;
	bool started;
	uint64_t cursor;               /* last acknowledged seq; guarded by f->lock for readers */
	uint32_t attempts;             /* consecutive transient failures */
	/* the batch being formed */
	struct fwd_item *items;
	size_t n, cap;
	uint64_t bytes;
	uint64_t upto;                 /* last seq examined that the batch accounts for */
	bool full;
	struct cg_upstream_stats stats;   /* guarded by f->lock */
};

struct cg_forwarder {
	const struct cg_config *cfg;
	struct cg_store *st;
	struct up *ups;
	size_t n;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	uint64_t wakes;
};

static int64_t wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t cg_forward_key(uint8_t *out, size_t cap, const char *upstream, char what)
{
	size_t n = strlen(upstream);
	if (n + 3 > cap)
		return 0;
	out[0] = 'f';
	memcpy(out + 1, upstream, n);
	out[1 + n] = 0;
	out[2 + n] = (uint8_t)what;
	return n + 3;
}

/* ---- the host side of the plugin ABI ---- */

static void host_log(const struct cg_plugin_host *h, int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	switch (level) {
	case CG_PLOG_DEBUG: log_debug("forward", "%s: %s", h->upstream, msg); break;
	case CG_PLOG_INFO: log_info("forward", "%s: %s", h->upstream, msg); break;
	case CG_PLOG_WARN: log_warn("forward", "%s: %s", h->upstream, msg); break;
	default: log_error("forward", "%s: %s", h->upstream, msg); break;
	}
}

static cbor_item_t *json_to_cbor(json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		cbor_item_t *m = cbor_new_definite_map(json_object_size(j));
		const char *k;
		json_t *v;
		json_object_foreach(j, k, v) {
			cbor_item_t *cv = json_to_cbor(v);
			if (!m || !cv || !cbor_map_add(m, (struct cbor_pair){ .key = cbor_move(cbor_build_string(k)),
									  .value = cbor_move(cv) })) {
				if (m)
					cbor_decref(&m);
				return NULL;
			}
		}
		return m;
	}
	case JSON_ARRAY: {
		cbor_item_t *a = cbor_new_definite_array(json_array_size(j));
		size_t i;
		json_t *v;
		json_array_foreach(j, i, v) {
			cbor_item_t *cv = json_to_cbor(v);
			if (!a || !cv || !cbor_array_push(a, cbor_move(cv))) {
				if (a)
					cbor_decref(&a);
				return NULL;
			}
		}
		return a;
	}
	case JSON_STRING: return cbor_build_string(json_string_value(j));
	case JSON_INTEGER: {
		json_int_t v = json_integer_value(j);
		return v >= 0 ? cbor_build_uint64((uint64_t)v) : cbor_build_negint64((uint64_t)(-1 - v));
	}
	case JSON_REAL: return cbor_build_float8(json_real_value(j));
	case JSON_TRUE: return cbor_build_bool(true);
	case JSON_FALSE: return cbor_build_bool(false);
	default: return cbor_new_null();
	}
}

static bool map_put(cbor_item_t *m, const char *k, cbor_item_t *v)
{
	return v && cbor_map_add(m, (struct cbor_pair){ .key = cbor_move(cbor_build_string(k)),
						       .value = cbor_move(v) });
}

/* The batch document (plugins/README.md). Every item is built with one
 * reference, handed to its container (which takes its own) and released,
 * so that freeing the document on any failure frees everything. */
static int host_batch_cbor(const struct cg_plugin_host *h, const struct cg_plugin_batch *b,
			   uint8_t **buf, size_t *len)
{
	cbor_item_t *doc = cbor_new_definite_map(5), *recs = cbor_new_definite_array(b->n);
	bool ok = doc && recs;
	for (size_t i = 0; ok && i < b->n; i++) {
		const struct cg_plugin_record *r = &b->records[i];
		struct cbor_load_result res;
		cbor_item_t *meta = cbor_load(r->meta_cbor, r->meta_cbor_len, &res);
		cbor_item_t *m = cbor_new_definite_map(r->body ? 2 : 1);
		ok = meta && m && map_put(m, "meta", cbor_incref(meta));
		if (ok && r->body)
			ok = map_put(m, "dump", cbor_build_bytestring(r->body, r->body_len));
		ok = ok && cbor_array_push(recs, m);
		if (meta)
			cbor_decref(&meta);
		if (m)
			cbor_decref(&m);
	}
	ok = ok && map_put(doc, "gateway", cbor_build_string(h->gateway_id)) &&
	     map_put(doc, "upstream", cbor_build_string(h->upstream)) &&
	     map_put(doc, "region", cbor_build_string(h->region)) &&
	     map_put(doc, "batch_id", cbor_build_uint64(b->batch_id)) &&
	     map_put(doc, "records", cbor_incref(recs));
	if (recs)
		cbor_decref(&recs);
	size_t cap = 0;
	*len = ok ? cbor_serialize_alloc(doc, buf, &cap) : 0;
	if (doc)
		cbor_decref(&doc);
	return *len ? 0 : -1;
}

/* ---- forming a batch ---- */

static void count_flush(struct up *u, int status, int64_t us, size_t ok, uint64_t ok_bytes);

/* Durations are measured on the monotonic clock: wall-clock steps (NTP on
 * a box that booted without time) never make a flush look negative. */
static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void items_clear(struct up *u)
{
	for (size_t i = 0; i < u->n; i++) {
		free(u->items[i].body);
		free(u->items[i].json);
		free(u->items[i].cbor);
	}
	u->n = 0;
	u->bytes = 0;
	u->full = false;
}

static bool belongs(const struct up *u, const struct cg_dump_record *r)
{
	if (strcmp(r->region, u->region) != 0)
		return false;
	if (r->status == CG_DUMP_THROTTLED)
		return true;
	return (r->status == CG_DUMP_STORED || r->status == CG_DUMP_FORWARDED) && !r->body_deleted;
}

static int add_item(struct up *u, const struct cg_dump_record *r);
static size_t dead_letter_key(struct up *u, uint64_t first, uint8_t *key, size_t cap);
static void dead_letter_clear(struct up *u, uint64_t first);

static int collect(void *ctx, const struct cg_dump_record *r)
{
	struct up *u = ctx;
	if (r->seq <= u->cursor)
		return 0;
	if (!belongs(u, r)) {
		u->upto = r->seq;
		return 0;
	}
	uint64_t body = r->status == CG_DUMP_THROTTLED ? 0 : r->size;
	if (u->n >= u->cfg->batch.max_dumps || (u->n && u->bytes + body > u->cfg->batch.max_bytes)) {
		u->full = true;   /* a single dump above max_bytes still goes, alone */
		return 1;
	}
	int rc = add_item(u, r);
	if (rc < 0)
		return 1;      /* out of memory: try again later */
	u->upto = r->seq;  /* added, or its bytes are gone: either way accounted for */
	return 0;
}

/* Add r to the batch being formed: 0 added, 1 skipped (its bytes are gone),
 * -1 out of memory. */
static int add_item(struct up *u, const struct cg_dump_record *r)
{
	struct cg_forwarder *f = u->f;
	uint64_t body = r->status == CG_DUMP_THROTTLED ? 0 : r->size;
	if (u->n == u->cap) {
		size_t ncap = u->cap ? u->cap * 2 : 16;
		struct fwd_item *ni = realloc(u->items, ncap * sizeof *ni);
		if (!ni)
			return -1;
		u->items = ni;
		u->cap = ncap;
	}
	struct fwd_item *it = &u->items[u->n];
	memset(it, 0, sizeof *it);
	it->rec = *r;
	if (body) {
		uint8_t *b = NULL;
		size_t len = 0;
		if (cg_store_get_body(f->st, r->seq, &b, &len) != CG_OK)
			return 1;   /* its bytes went (retention) between the scan and now */
		it->body = b;
		it->body_len = len;
	}
	cg_dump_stable_id(f->cfg->gateway.id, r, it->id, sizeof it->id);
	json_t *j = cg_record_json(f->cfg->gateway.id, f->st, r);
	json_object_del(j, "seq");
	json_object_del(j, "chunks");
	it->json = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	cbor_item_t *c = json_to_cbor(j);
	json_decref(j);
	size_t cap = 0;
	it->cbor_len = c ? cbor_serialize_alloc(c, &it->cbor, &cap) : 0;
	if (c)
		cbor_decref(&c);
	if (!it->json || !it->cbor_len) {
		free(it->body);
		free(it->json);
		free(it->cbor);
		return -1;
	}
	u->n++;
	u->bytes += it->body_len;
	return 0;
}

/* ---- state in the store ---- */

static void save_cursor(struct up *u, uint64_t seq)
{
	uint8_t key[200], val[8];
	size_t kl = cg_forward_key(key, sizeof key, u->cfg->name, 'c');
	for (int i = 0; i < 8; i++)
		val[i] = (uint8_t)(seq >> (56 - 8 * i));
	struct cg_kv kv = { key, kl, val, 8 };
	if (cg_store_policy_write(u->f->st, &kv, 1) != CG_OK || cg_store_sync(u->f->st) != CG_OK)
		log_error("forward", "%s: cannot save the queue position; the batch may be sent again",
			  u->cfg->name);
	pthread_mutex_lock(&u->f->lock);
	u->cursor = seq;
	pthread_mutex_unlock(&u->f->lock);
}

static uint64_t load_cursor(struct up *u)
{
	uint8_t key[200], *v = NULL;
	size_t kl = cg_forward_key(key, sizeof key, u->cfg->name, 'c'), vl = 0;
	uint64_t seq = 0;
	if (cg_store_policy_get(u->f->st, key, kl, &v, &vl) == CG_OK) {
		for (size_t i = 0; vl == 8 && i < 8; i++)
			seq = (seq << 8) | v[i];
		cg_store_free(v);
	}
	return seq;
}

static void save_state(struct up *u, const char *last_error, int64_t next_retry_ms, bool delivered)
{
	uint8_t key[200];
	size_t kl = cg_forward_key(key, sizeof key, u->cfg->name, 's');
	json_t *j = json_pack("{s:s, s:I, s:I, s:b}", "last_error", last_error ? last_error : "",
			      "next_retry_ms", (json_int_t)next_retry_ms, "at_ms", (json_int_t)wall_now(),
			      "last_ok", delivered);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!s)
		return;
	struct cg_kv kv = { key, kl, (const uint8_t *)s, strlen(s) };
	cg_store_policy_write(u->f->st, &kv, 1);
	free(s);
}

static void dead_letter(struct up *u, uint64_t first, const char *reason)
{
	uint8_t key[208];
	size_t kl = dead_letter_key(u, first, key, sizeof key) - 8;
	json_t *seqs = json_array();
	for (size_t i = 0; i < u->n; i++)
		if (u->items[i].done == CG_FLUSH_DROP)
			json_array_append_new(seqs, json_integer((json_int_t)u->items[i].rec.seq));
	size_t n = json_array_size(seqs);
	json_t *j = json_pack("{s:o, s:s, s:I}", "seqs", seqs, "reason", reason, "at_ms",
			      (json_int_t)wall_now());
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (s) {
		struct cg_kv kv = { key, kl + 8, (const uint8_t *)s, strlen(s) };
		cg_store_policy_write(u->f->st, &kv, 1);
		free(s);
	}
	log_error("forward", "%s: %zu of %zu dumps of batch %" PRIu64 " refused for good: %s; "
		  "kept as a dead letter", u->cfg->name, n, u->n, first, reason);
}

static size_t dead_letter_key(struct up *u, uint64_t first, uint8_t *key, size_t cap)
{
	size_t kl = cg_forward_key(key, cap - 8, u->cfg->name, 'd');
	for (int i = 0; i < 8; i++)
		key[kl + i] = (uint8_t)(first >> (56 - 8 * i));
	return kl + 8;
}

static void dead_letter_clear(struct up *u, uint64_t first)
{
	uint8_t key[208];
	size_t kl = dead_letter_key(u, first, key, sizeof key);
	struct cg_kv kv = { key, kl, NULL, 0 };
	cg_store_policy_write(u->f->st, &kv, 1);
}

/* Every upstream of the region has it: the dump is `forwarded`. */
static void settle(struct up *u)
{
	struct cg_forwarder *f = u->f;
	for (size_t i = 0; i < u->n; i++) {
		struct cg_dump_record *r = &u->items[i].rec;
		if (r->status == CG_DUMP_THROTTLED || u->items[i].done != CG_FLUSH_OK)
			continue;
		bool all = true;
		pthread_mutex_lock(&f->lock);
		for (size_t k = 0; k < f->n && all; k++)
			if (strcmp(f->ups[k].region, u->region) == 0 && f->ups[k].cursor < r->seq)
				all = false;
		pthread_mutex_unlock(&f->lock);
		if (!all)
			continue;
		/* The bytes stay until retention.dumps (SPEC §6.6: deleted after
		 * receipt, forwarded or not), so a site can still download them. */
		r->status = CG_DUMP_FORWARDED;
		int rc = cg_store_set_status(f->st, r->seq, CG_DUMP_FORWARDED);
		if (rc != CG_OK && rc != CG_ERR_NOT_FOUND)   /* purged meanwhile: stays gone */
			log_warn("forward", "%s: cannot mark seq %" PRIu64 " forwarded", u->cfg->name, r->seq);
	}
}

/* ---- the thread ---- */

/* Wait ms (or until stop/wake); returns false when stopping. */
static bool nap(struct cg_forwarder *f, int64_t ms, bool wakeable)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&f->lock);
	uint64_t w = f->wakes;
	while (!f->stopping && !(wakeable && f->wakes != w))
		if (pthread_cond_timedwait(&f->cond, &f->lock, &ts) == ETIMEDOUT)
			break;
	bool go = !f->stopping;
	pthread_mutex_unlock(&f->lock);
	return go;
}

static uint64_t backoff_ms(struct up *u, uint64_t retry_after)
{
	uint64_t cap = u->cfg->retry.min_ms;
	for (uint32_t i = 0; i < u->attempts && cap < u->cfg->retry.max_ms; i++)
		cap *= 2;
	if (cap > u->cfg->retry.max_ms)
		cap = u->cfg->retry.max_ms;
	uint64_t r = 0;
	if (getrandom(&r, sizeof r, 0) != sizeof r)
		r = (uint64_t)wall_now();
	uint64_t wait = cap ? r % (cap + 1) : 0;   /* full jitter */
	return wait < retry_after ? retry_after : wait;
}

/* Drop from the batch what was deleted since it was formed (a purge, or
 * retention taking the bytes): an operator's purge holds for a batch that
 * waits out an outage too. Returns how many items are left. */
static size_t prune_gone(struct up *u)
{
	size_t kept = 0;
	struct cg_dump_record *cur = malloc(sizeof *cur);
	if (!cur)
		return u->n;   /* keep the batch as it is; checked again next attempt */
	for (size_t i = 0; i < u->n; i++) {
		struct fwd_item *it = &u->items[i];
		if (it->done) {   /* already delivered or refused: nothing to hold back */
			u->items[kept++] = *it;
			continue;
		}
		int rc = cg_store_get_record(u->f->st, it->rec.seq, cur);
		bool gone = rc == CG_ERR_NOT_FOUND ||
			    (rc == CG_OK && it->rec.status != CG_DUMP_THROTTLED && cur->body_deleted);
		if (gone) {
			log_info("forward", "%s: seq %" PRIu64 " was deleted before delivery; not sent",
				 u->cfg->name, it->rec.seq);
			u->bytes -= it->body_len;
			free(it->body);
			free(it->json);
			free(it->cbor);
			continue;
		}
		u->items[kept++] = *it;
	}
	free(cur);
	u->n = kept;
	return kept;
}

/* Every record of the batch is final (or deleted): record the refused
 * ones, move the queue position, mark the delivered ones forwarded. */
static void finish_batch(struct up *u, bool replay, uint64_t first, const char *reason)
{
	size_t dropped = 0;
	for (size_t i = 0; i < u->n; i++)
		dropped += u->items[i].done == CG_FLUSH_DROP;
	if (dropped)
		dead_letter(u, first, reason && reason[0] ? reason : "refused by the upstream");
	else if (replay)
		dead_letter_clear(u, first);
	if (!replay)
		save_cursor(u, u->upto);
	u->attempts = 0;
	save_state(u, dropped ? reason : NULL, 0, !dropped);
	settle(u);
}

/* Deliver the batch in u->items. replay: a dead-letter batch sent again on
 * request, whose entry is keyed by `first` (the queue position does not
 * move; its entry goes, or is rewritten with what was refused again). The
 * batch id stays the batch's first seq even if dumps deleted meanwhile
 * leave the batch. A plugin may report each record's outcome
 * (record_status): accepted records are not sent again, and only refused
 * ones become dead letters. */
static void flush_batch(struct up *u, bool replay, uint64_t first)
{
	char why[sizeof ((struct cg_flush_result *)0)->reason] = "";   /* the last answer */
	for (;;) {
		prune_gone(u);
		size_t left = 0;
		for (size_t i = 0; i < u->n; i++)
			left += !u->items[i].done;
		if (!left) {   /* what was left to send was deleted meanwhile */
			finish_batch(u, replay, first, why);
			break;
		}
		size_t np = 0;
		struct cg_plugin_record *recs = calloc(u->n, sizeof *recs);
		uint32_t *rs = calloc(u->n, sizeof *rs);
		size_t *map = calloc(u->n, sizeof *map);
		if (!recs || !rs || !map) {
			free(recs);
			free(rs);
			free(map);
			return;
		}
		uint64_t body_bytes = 0;
		for (size_t i = 0; i < u->n; i++) {
			struct fwd_item *it = &u->items[i];
			if (it->done)
				continue;
			const char *fmt = cg_record_format_name(&it->rec);
			recs[np] = (struct cg_plugin_record){
				.id = it->id, .device = it->rec.device, .dump_id = it->rec.dump_id,
				.group = it->rec.group, .region = it->rec.region, .status = it->rec.status == CG_DUMP_THROTTLED ? "throttled" : "stored",
				.format = fmt ? fmt : "raw", .signature = it->rec.signature,
				.received_at_ms = it->rec.received_at_ms, .meta_json = it->json,
				.meta_cbor = it->cbor, .meta_cbor_len = it->cbor_len, .body = it->body,
				.body_len = it->body_len,
			};
			body_bytes += it->body_len;
			map[np++] = i;
		}
		struct cg_plugin_batch b = { .records = recs, .n = np, .body_bytes = body_bytes,
					     .batch_id = first, .record_status = rs };
		struct cg_flush_result res = { 0 };
		int64_t t0 = mono_us();
		u->out.plugin->flush(u->state, &b, &res);
		res.reason[sizeof res.reason - 1] = '\0';
		int64_t took_us = mono_us() - t0;
		memcpy(why, res.reason, sizeof why);
		/* Each record's outcome: its own, else the batch's. */
		size_t ok = 0, dropped = 0, pending = 0;
		uint64_t ok_bytes = 0;
		for (size_t j = 0; j < np; j++) {
			struct fwd_item *it = &u->items[map[j]];
			uint32_t st = rs[j] ? rs[j] : res.status;
			if (st == CG_FLUSH_OK) {
				it->done = CG_FLUSH_OK;
				ok++;
				ok_bytes += it->body_len;
			} else if (st == CG_FLUSH_DROP) {
				it->done = CG_FLUSH_DROP;
				dropped++;
			} else {
				pending++;   /* RETRY, or nothing valid: transient */
			}
		}
		free(recs);
		free(rs);
		free(map);
		count_flush(u, res.status, took_us, ok, ok_bytes);
		if (!pending) {
			log_info("forward", "%s: delivered %zu dumps in %" PRId64 " ms%s%s", u->cfg->name, ok,
				 took_us / 1000, dropped ? ", some refused" : "",
				 replay ? " (a dead letter, sent again)" : "");
			finish_batch(u, replay, first, res.reason);
			break;
		}
		if (ok)
			u->attempts = 0;   /* progress: the backoff starts over */
		uint64_t wait = backoff_ms(u, res.retry_after_ms);
		u->attempts++;
		log_warn("forward", "%s: %zu of %zu dumps not delivered yet (%s); retry %u in %" PRIu64 " ms",
			 u->cfg->name, pending, u->n, res.reason[0] ? res.reason : "no reason given", u->attempts, wait);
		save_state(u, res.reason[0] ? res.reason : "transient failure", wall_now() + (int64_t)wait, false);
		if (!nap(u->f, (int64_t)wait, false))
			break;   /* stopping: the batch goes again at the next start */
	}
}

/*
 * Dead-letter batches the operator asked to send again: a file named after
 * the batch's first seq in data_dir/retry/NAME/ (crashgatectl retry). The
 * batch is rebuilt from its records and sent; the file goes once the batch
 * was delivered or refused again.
 */
static void replay_requests(struct up *u)
{
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/retry/%s", u->f->cfg->gateway.data_dir, u->cfg->name);
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) && !u->f->stopping) {
		char *end;
		uint64_t first = strtoull(e->d_name, &end, 10);
		if (e->d_name[0] < '0' || e->d_name[0] > '9' || *end)
			continue;
		uint8_t key[208], *v = NULL;
		size_t kl = dead_letter_key(u, first, key, sizeof key), vl = 0;
		char path[4400];
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (cg_store_policy_get(u->f->st, key, kl, &v, &vl) != CG_OK) {
			unlink(path);   /* no such dead letter (any more) */
			continue;
		}
		json_t *j = json_loadb((const char *)v, vl, 0, NULL);
		cg_store_free(v);
		items_clear(u);
		size_t i;
		json_t *sq;
		json_array_foreach(json_object_get(j, "seqs"), i, sq) {
			struct cg_dump_record rec;
			if (cg_store_get_record(u->f->st, (uint64_t)json_integer_value(sq), &rec) == CG_OK)
				add_item(u, &rec);
		}
		json_decref(j);
		if (u->n) {
			log_info("forward", "%s: sending dead-letter batch %" PRIu64 " again (%zu dumps), as asked",
				 u->cfg->name, first, u->n);
			flush_batch(u, true, first);
		} else {
			struct cg_kv kv = { key, kl, NULL, 0 };
			cg_store_policy_write(u->f->st, &kv, 1);
		}
		if (!u->f->stopping)
			unlink(path);
		items_clear(u);
	}
	closedir(d);
}

const double cg_forward_latency_bounds[CG_FWD_LATENCY_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

/* Count one flush: its result and how long the plugin took. */
static void count_flush(struct up *u, int status, int64_t us, size_t ok, uint64_t ok_bytes)
{
	double s = (double)(us < 0 ? 0 : us) / 1e6;
	int b = 0;
	while (b < CG_FWD_LATENCY_BUCKETS && s > cg_forward_latency_bounds[b])
		b++;
	pthread_mutex_lock(&u->f->lock);
	struct cg_upstream_stats *st = &u->stats;
	st->latency[b]++;
	st->latency_sum_s += s;
	st->dumps_delivered += ok;
	st->bytes_delivered += ok_bytes;
	if (status == CG_FLUSH_OK) {
		st->batches_ok++;
	} else if (status == CG_FLUSH_DROP) {
		st->batches_drop++;
	} else {
		st->batches_retry++;
	}
	pthread_mutex_unlock(&u->f->lock);
}

size_t cg_forwarder_stats(struct cg_forwarder *f, struct cg_upstream_stats *out, size_t cap)
{
	if (!f)
		return 0;
	pthread_mutex_lock(&f->lock);
	for (size_t k = 0; k < f->n && k < cap; k++) {
		out[k] = f->ups[k].stats;
		out[k].name = f->ups[k].cfg->name;
		out[k].kind = f->ups[k].cfg->kind;
		out[k].region = f->ups[k].region;
	}
	pthread_mutex_unlock(&f->lock);
	return f->n;
}

static void *up_main(void *arg)
{
	struct up *u = arg;
	struct cg_forwarder *f = u->f;
	while (!f->stopping) {
		replay_requests(u);
		items_clear(u);
		u->upto = u->cursor;
		cg_store_scan_records_from(f->st, u->cursor + 1, collect, u);
		if (u->n == 0) {
			if (u->upto > u->cursor)   /* only other regions' records: move past them */
				save_cursor(u, u->upto);
			nap(f, POLL_MS, true);
			continue;
		}
		/* Not full: wait for more until the oldest has waited max_delay. */
		int64_t due = u->items[0].rec.received_at_ms + (int64_t)u->cfg->batch.max_delay_ms;
		int64_t now = wall_now();
		if (!u->full && u->n < u->cfg->batch.max_dumps && now < due) {
			nap(f, due - now < POLL_MS ? due - now : POLL_MS, true);
			continue;
		}
		flush_batch(u, false, u->items[0].rec.seq);
	}
	items_clear(u);
	free(u->items);
	u->items = NULL;
	return NULL;
}

int cg_forwarder_start(const struct cg_config *cfg, struct cg_store *st, struct cg_forwarder **out,
		       char *err, size_t errlen)
{
	struct cg_forwarder *f = calloc(1, sizeof *f);
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_regions; i++)
		n += cfg->regions[i].n_upstreams;
	if (!f || (n && !(f->ups = calloc(n, sizeof *f->ups)))) {
		free(f);
		snprintf(err, errlen, "out of memory");
		return CG_ERR_NOMEM;
	}
	f->cfg = cfg;
	f->st = st;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	const char *dir = cg_config_plugin_dir(cfg);
	for (size_t i = 0; i < cfg->n_regions; i++) {
		for (size_t j = 0; j < cfg->regions[i].n_upstreams; j++) {
			struct up *u = &f->ups[f->n++];
			u->f = f;
			u->cfg = &cfg->regions[i].upstreams[j];
			u->region = cfg->regions[i].name;
			if (cg_output_open(&u->out, cfg, u->cfg, dir, err, errlen) != 0) {
				cg_forwarder_stop(f);
				return CG_ERR_CONFIG;
			}
			u->host = (struct cg_plugin_host){
				.abi_version = CG_PLUGIN_ABI_VERSION, .struct_size = sizeof u->host,
				.gateway_id = cfg->gateway.id, .upstream = u->cfg->name, .region = u->region,
				.log = host_log, .read_secret = cg_read_secret_file, .batch_cbor = host_batch_cbor,
			};
			char perr[256] = "";
			if (u->out.plugin->init(&u->host, u->out.options, &u->state, perr, sizeof perr) != 0) {
				snprintf(err, errlen, "upstream %s (%s): %s", u->cfg->name, u->cfg->kind,
					 perr[0] ? perr : "the plugin failed to start");
				u->state = NULL;
				cg_forwarder_stop(f);
				return CG_ERR_CONFIG;
			}
			u->cursor = load_cursor(u);
		}
	}
	for (size_t k = 0; k < f->n; k++) {
		if (pthread_create(&f->ups[k].thread, NULL, up_main, &f->ups[k]) != 0) {
			snprintf(err, errlen, "cannot start the forwarder thread of %s", f->ups[k].cfg->name);
			cg_forwarder_stop(f);
			return CG_ERR_NOMEM;
		}
		f->ups[k].started = true;
		log_info("forward", "%s (%s, region %s) starts after seq %" PRIu64, f->ups[k].cfg->name,
			 f->ups[k].cfg->kind, f->ups[k].region, f->ups[k].cursor);
	}
	*out = f;
	return CG_OK;
}

void cg_forwarder_wake(struct cg_forwarder *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->wakes++;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

void cg_forwarder_stop(struct cg_forwarder *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stopping = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	for (size_t k = 0; k < f->n; k++) {
		struct up *u = &f->ups[k];
		if (u->started)
			pthread_join(u->thread, NULL);
		if (u->state)
			u->out.plugin->destroy(u->state);
		cg_output_close(&u->out);
		free(u->items);
	}
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f->ups);
	free(f);
}

/* ---- what each upstream has yet to deliver (crashgatectl queue, /v1/upstreams) ---- */

struct queue_ctx {
	const char *region;
	uint64_t cursor;
	json_int_t depth, bytes;
	int64_t oldest;
};

static int queue_visit(void *ctx, const struct cg_dump_record *r)
{
	struct queue_ctx *q = ctx;
	if (r->seq <= q->cursor || strcmp(r->region, q->region) != 0)
		return 0;
	if (r->status != CG_DUMP_THROTTLED &&
	    (r->body_deleted || (r->status != CG_DUMP_STORED && r->status != CG_DUMP_FORWARDED)))
		return 0;
	q->depth++;
	if (r->status != CG_DUMP_THROTTLED)
		q->bytes += (json_int_t)r->size;
	if (!q->oldest || r->received_at_ms < q->oldest)
		q->oldest = r->received_at_ms;
	return 0;
}

static int count_dead(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	(*(json_int_t *)ctx)++;
	return 0;
}

json_t *cg_forward_queue_json(const struct cg_config *cfg, struct cg_store *st)
{
	json_t *rows = json_array();
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	for (size_t i = 0; i < cfg->n_regions; i++) {
		for (size_t j = 0; j < cfg->regions[i].n_upstreams; j++) {
			const struct cg_upstream_config *u = &cfg->regions[i].upstreams[j];
			struct queue_ctx q = { .region = cfg->regions[i].name };
			uint8_t key[208], *v = NULL;
			size_t kl = cg_forward_key(key, sizeof key, u->name, 'c'), vl = 0;
			if (cg_store_policy_get(st, key, kl, &v, &vl) == CG_OK) {
				for (size_t b = 0; vl == 8 && b < 8; b++)
					q.cursor = (q.cursor << 8) | v[b];
				cg_store_free(v);
			}
			cg_store_scan_records_from(st, q.cursor + 1, queue_visit, &q);
			json_int_t dead = 0;
			kl = cg_forward_key(key, sizeof key, u->name, 'd');
			cg_store_scan_policy(st, key, kl, count_dead, &dead);
			json_t *row = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "upstream", u->name,
						"kind", u->kind, "region", q.region, "depth", q.depth,
						"bytes", q.bytes, "delivered_through_seq", (json_int_t)q.cursor,
						"dead_letters", dead);
			if (q.oldest)
				json_object_set_new(row, "oldest_age_s", json_integer((now - q.oldest) / 1000));
			kl = cg_forward_key(key, sizeof key, u->name, 's');
			if (cg_store_policy_get(st, key, kl, &v, &vl) == CG_OK) {
				json_t *st = json_loadb((const char *)v, vl, 0, NULL);
				cg_store_free(v);
				const char *le = st ? json_string_value(json_object_get(st, "last_error")) : NULL;
				json_int_t nr = st ? json_integer_value(json_object_get(st, "next_retry_ms")) : 0;
				if (le && *le)
					json_object_set_new(row, "last_error", json_string(le));
				if (nr > now) {
					char when[40];
					cg_record_time(nr, when, sizeof when);
					json_object_set_new(row, "next_retry", json_string(when));
				}
				json_decref(st);
			}
			json_array_append_new(rows, row);
		}
	}
	return rows;
}

/* ---- dead letters sent again on request ---- */

struct dl_scan {
	size_t prefix;
	uint64_t only;
	const char *dir;
	json_t *asked;
	int rc;
};

static int request_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	struct dl_scan *d = ctx;
	(void)val, (void)vlen;
	if (klen != d->prefix + 8)
		return 0;
	uint64_t seq = 0;
	for (int i = 0; i < 8; i++)
		seq = (seq << 8) | key[d->prefix + i];
	if (d->only && seq != d->only)
		return 0;
	char path[4200];
	snprintf(path, sizeof path, "%s/%" PRIu64, d->dir, seq);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		d->rc = CG_ERR_IO;
		return 1;
	}
	close(fd);
	if (d->asked)
		json_array_append_new(d->asked, json_integer((json_int_t)seq));
	return 0;
}

int cg_forward_request_retry(const struct cg_config *cfg, struct cg_store *st, const char *upstream,
			     uint64_t only, json_t *asked, char *err, size_t errlen)
{
	bool known = false;
	for (size_t i = 0; i < cfg->n_regions; i++)
		for (size_t j = 0; j < cfg->regions[i].n_upstreams; j++)
			known |= strcmp(cfg->regions[i].upstreams[j].name, upstream) == 0;
	if (!known) {
		snprintf(err, errlen, "no upstream named %s", upstream);
		return CG_ERR_NOT_FOUND;
	}
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/retry", cfg->gateway.data_dir);
	mkdir(dir, 0700);
	snprintf(dir, sizeof dir, "%s/retry/%s", cfg->gateway.data_dir, upstream);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		return CG_ERR_IO;
	}
	uint8_t key[208];
	struct dl_scan d = { .only = only, .dir = dir, .asked = asked };
	d.prefix = cg_forward_key(key, sizeof key, upstream, 'd');
	cg_store_scan_policy(st, key, d.prefix, request_one, &d);
	if (d.rc != CG_OK)
		snprintf(err, errlen, "cannot write a request in %s: %s", dir, strerror(errno));
	return d.rc;
}
