#include "reassembly.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include "log.h"

#define MAX_RANGES_PER_DUMP 65536  /* bounds memory against a device that sends every other ordinal */
#define MAX_MISSING_IN_ACK  64     /* keeps an ack small; the device asks again with hello */
#define ACK_REPEAT_MS       1000   /* one answer per second for chunks of a finished dump */
#define MAX_RECENT          100000

/* What memory holds per open dump: no chunk bytes. */
struct open_dump {
	UT_hash_handle hh;
	struct cg_dumpkey key;
	struct device *dev;
	struct open_dump *dev_next;
	uint64_t dump_id;
	struct cg_range *ranges;           /* received ordinals, sorted, disjoint */
	uint32_t nranges, cap;
	uint32_t nchunks;
	uint64_t bytes;
	int64_t last_ordinal;              /* -1 until known */
	int64_t last_seen_ms;
};

struct device {
	UT_hash_handle hh;
	char id[CG_DEVICE_ID_MAX + 1];
	uint32_t nopen;
	struct open_dump *open;
};

/* Rate limit for answers about dumps that are no longer open. */
struct recent {
	UT_hash_handle hh;
	struct cg_dumpkey key;
	int64_t at_ms;
};

struct pending_ack {
	char device[CG_DEVICE_ID_MAX + 1];
	uint64_t dump_id;
};

/* An encoded ack waiting to leave. Acks are queued under the lock and sent
 * after it is released: the sink (Paho) takes its own lock, and Paho holds
 * that one while it calls us with a message, so sending under ours would
 * invert the lock order and deadlock. */
struct out_msg {
	char device[CG_DEVICE_ID_MAX + 1];
	size_t len;
	uint8_t buf[];
};

struct cg_reasm {
	struct cg_reasm_opts opts;
	char gateway_id[CG_DEVICE_ID_MAX + 1];
	struct cg_store *st;
	struct cg_ack_sink sink;
	cg_clock_fn clock;
	void *clock_ctx;

	pthread_mutex_t lock;              /* guards everything below */
	pthread_cond_t cond;
	struct open_dump *open;            /* by key */
	struct device *devices;            /* by id */
	struct recent *recent;
	uint32_t nopen;
	struct pending_ack *pending;       /* `complete` acks waiting for a sync */
	size_t npending, pending_cap;
	struct out_msg **outbox;
	size_t nout, out_cap;
	bool dirty;                        /* unsynced writes exist */
	bool woken;
	struct cg_reasm_stats stats;
	struct cg_dump_record scratch;     /* record buffer, used under lock */
};

static int64_t real_clock(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(struct cg_reasm *rs)
{
	return rs->clock(rs->clock_ctx);
}

/* ---- received-ordinal range sets ---- */

static bool ranges_contains(const struct open_dump *od, uint32_t v)
{
	uint32_t lo = 0, hi = od->nranges;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (v < od->ranges[mid].first)
			hi = mid;
		else if (v > od->ranges[mid].last)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

/* Insert v (not yet present). Returns -1 when the set would grow past its bound. */
static int ranges_add(struct open_dump *od, uint32_t v)
{
	uint32_t i = 0, lo = 0, hi = od->nranges;
	while (lo < hi) { /* first range with first > v */
		uint32_t mid = lo + (hi - lo) / 2;
		if (od->ranges[mid].first > v)
			hi = mid;
		else
			lo = mid + 1;
	}
	i = lo;
	bool join_prev = i > 0 && od->ranges[i - 1].last + 1 == v;
	bool join_next = i < od->nranges && v + 1 == od->ranges[i].first;
	if (join_prev && join_next) {
		od->ranges[i - 1].last = od->ranges[i].last;
		memmove(&od->ranges[i], &od->ranges[i + 1], (od->nranges - i - 1) * sizeof *od->ranges);
		od->nranges--;
	} else if (join_prev) {
		od->ranges[i - 1].last = v;
	} else if (join_next) {
		od->ranges[i].first = v;
	} else {
		if (od->nranges == od->cap) {
			if (od->cap >= MAX_RANGES_PER_DUMP)
				return -1;
			uint32_t ncap = od->cap ? od->cap * 2 : 2;
			struct cg_range *nr = realloc(od->ranges, ncap * sizeof *nr);
			if (!nr)
				return -1;
			od->ranges = nr;
			od->cap = ncap;
		}
		memmove(&od->ranges[i + 1], &od->ranges[i], (od->nranges - i) * sizeof *od->ranges);
		od->ranges[i].first = od->ranges[i].last = v;
		od->nranges++;
	}
	return 0;
}

static uint32_t ranges_max(const struct open_dump *od)
{
	return od->nranges ? od->ranges[od->nranges - 1].last : 0;
}

/* The ordinals still missing, as at most `cap` ranges. When the last ordinal
 * is unknown the final range is open-ended (last = UINT32_MAX). */
static size_t missing_ranges(const struct open_dump *od, struct cg_range *out, size_t cap)
{
	size_t n = 0;
	uint32_t next = 0;
	for (uint32_t i = 0; i < od->nranges && n < cap; i++) {
		if (od->ranges[i].first > next)
			out[n++] = (struct cg_range){ next, od->ranges[i].first - 1 };
		next = od->ranges[i].last + 1;
	}
	if (n < cap) {
		if (od->last_ordinal < 0)
			out[n++] = (struct cg_range){ od->nranges ? ranges_max(od) + 1 : 0, UINT32_MAX };
		else if ((int64_t)next <= od->last_ordinal)
			out[n++] = (struct cg_range){ next, (uint32_t)od->last_ordinal };
	}
	return n;
}

/* ---- acknowledgements ---- */

static void send_ack(struct cg_reasm *rs, const char *device, uint64_t dump_id, uint32_t status,
		     const char *reason, struct cg_range *missing, size_t nmissing)
{
	struct cg_ack a = { .dump_id = dump_id, .status = status, .missing = missing,
			    .n_missing = nmissing, .missing_cap = nmissing };
	if (reason && reason[0]) {
		a.present |= CG_HAS_REASON;
		a.reason = reason;
		a.reason_len = strnlen(reason, CG_PROTO_MAX_REASON);
	}
	uint8_t buf[64 + CG_PROTO_MAX_REASON + MAX_MISSING_IN_ACK * 12];
	size_t len = 0;
	if (cg_ack_encode(&a, buf, sizeof buf, &len) != CG_OK) {
		log_error("reasm", "cannot encode ack for %s/%" PRIu64, device, dump_id);
		return;
	}
	if (rs->nout == rs->out_cap) {
		size_t ncap = rs->out_cap ? rs->out_cap * 2 : 16;
		struct out_msg **no = realloc(rs->outbox, ncap * sizeof *no);
		if (!no)
			return; /* the device asks again */
		rs->outbox = no;
		rs->out_cap = ncap;
	}
	struct out_msg *m = malloc(sizeof *m + len);
	if (!m)
		return;
	snprintf(m->device, sizeof m->device, "%s", device);
	m->len = len;
	memcpy(m->buf, buf, len);
	rs->outbox[rs->nout++] = m;
	rs->stats.acks_sent++;
}

/* Send queued acks; called without the lock held. */
static void flush_outbox(struct cg_reasm *rs)
{
	pthread_mutex_lock(&rs->lock);
	struct out_msg **out = rs->outbox;
	size_t n = rs->nout;
	rs->outbox = NULL;
	rs->nout = rs->out_cap = 0;
	pthread_mutex_unlock(&rs->lock);
	for (size_t i = 0; i < n; i++) {
		if (rs->sink.send)
			rs->sink.send(rs->sink.ctx, out[i]->device, out[i]->buf, out[i]->len);
		free(out[i]);
	}
	free(out);
}

static void send_incomplete(struct cg_reasm *rs, struct open_dump *od)
{
	struct cg_range miss[MAX_MISSING_IN_ACK];
	size_t n = missing_ranges(od, miss, MAX_MISSING_IN_ACK);
	send_ack(rs, od->dev->id, od->dump_id, CG_ACK_INCOMPLETE, NULL, miss, n);
}

/* Answer about a dump that is no longer open, at most once per second. */
static void answer_finished(struct cg_reasm *rs, const struct cg_dumpkey *k, const char *device,
			    uint64_t dump_id, uint32_t status, const char *reason)
{
	int64_t now = now_ms(rs);
	struct recent *r = NULL;
	HASH_FIND(hh, rs->recent, k->b, k->len, r);
	if (r && now - r->at_ms < ACK_REPEAT_MS)
		return;
	if (!r) {
		if (HASH_COUNT(rs->recent) >= MAX_RECENT) {
			struct recent *x, *tmp;
			HASH_ITER(hh, rs->recent, x, tmp) {
				HASH_DEL(rs->recent, x);
				free(x);
			}
		}
		r = calloc(1, sizeof *r);
		if (!r)
			return;
		r->key = *k;
		HASH_ADD(hh, rs->recent, key.b, r->key.len, r);
	}
	r->at_ms = now;
	send_ack(rs, device, dump_id, status, reason, NULL, 0);
}

/* ---- open dump bookkeeping ---- */

static struct device *device_get(struct cg_reasm *rs, const char *id, bool create)
{
	struct device *d = NULL;
	HASH_FIND_STR(rs->devices, id, d);
	if (!d && create) {
		d = calloc(1, sizeof *d);
		if (!d)
			return NULL;
		snprintf(d->id, sizeof d->id, "%s", id);
		HASH_ADD_STR(rs->devices, id, d);
	}
	return d;
}

static struct open_dump *od_new(struct cg_reasm *rs, const struct cg_dumpkey *k, const char *device,
				uint64_t dump_id)
{
	struct device *d = device_get(rs, device, true);
	struct open_dump *od = d ? calloc(1, sizeof *od) : NULL;
	if (!od)
		return NULL;
	od->key = *k;
	od->dev = d;
	od->dump_id = dump_id;
	od->last_ordinal = -1;
	od->last_seen_ms = now_ms(rs);
	od->dev_next = d->open;
	d->open = od;
	d->nopen++;
	HASH_ADD(hh, rs->open, key.b, od->key.len, od);
	rs->nopen++;
	return od;
}

static void od_free(struct cg_reasm *rs, struct open_dump *od)
{
	struct device *d = od->dev;
	for (struct open_dump **pp = &d->open; *pp; pp = &(*pp)->dev_next) {
		if (*pp == od) {
			*pp = od->dev_next;
			break;
		}
	}
	if (--d->nopen == 0) {
		HASH_DEL(rs->devices, d);
		free(d);
	}
	HASH_DEL(rs->open, od);
	rs->nopen--;
	free(od->ranges);
	free(od);
}

/* Give up on an open dump: free its chunks, remember why, tell the device. */
static void od_reject(struct cg_reasm *rs, struct open_dump *od, const char *reason)
{
	struct cg_index_entry tomb = { .status = CG_DUMP_REJECTED, .at_ms = now_ms(rs) };
	snprintf(tomb.reason, sizeof tomb.reason, "%s", reason);
	if (cg_store_drop_open(rs->st, &od->key, &tomb) != CG_OK)
		log_error("reasm", "cannot drop rejected dump %s/%" PRIu64, od->dev->id, od->dump_id);
	rs->dirty = true;
	rs->stats.dumps_rejected++;
	rs->stats.store_bytes -= od->bytes;
	log_warn("reasm", "rejected dump %s/%" PRIu64 ": %s", od->dev->id, od->dump_id, reason);
	send_ack(rs, od->dev->id, od->dump_id, CG_ACK_REJECTED, reason, NULL, 0);
	od_free(rs, od);
}

/* Reject a dump that has no open state (its first chunk is already bad). */
static void reject_new(struct cg_reasm *rs, const struct cg_dumpkey *k, const char *device,
		       uint64_t dump_id, const char *reason)
{
	struct cg_index_entry tomb = { .status = CG_DUMP_REJECTED, .at_ms = now_ms(rs) };
	snprintf(tomb.reason, sizeof tomb.reason, "%s", reason);
	cg_store_drop_open(rs->st, k, &tomb);
	rs->stats.dumps_rejected++;
	log_warn("reasm", "rejected dump %s/%" PRIu64 ": %s", device, dump_id, reason);
	send_ack(rs, device, dump_id, CG_ACK_REJECTED, reason, NULL, 0);
}

static void queue_complete_ack(struct cg_reasm *rs, const char *device, uint64_t dump_id)
{
	if (rs->npending == rs->pending_cap) {
		size_t ncap = rs->pending_cap ? rs->pending_cap * 2 : 64;
		struct pending_ack *np = realloc(rs->pending, ncap * sizeof *np);
		if (!np)
			return; /* the device asks again; the dump itself is stored */
		rs->pending = np;
		rs->pending_cap = ncap;
	}
	struct pending_ack *p = &rs->pending[rs->npending++];
	snprintf(p->device, sizeof p->device, "%s", device);
	p->dump_id = dump_id;
	pthread_cond_signal(&rs->cond);
}

/*
 * All ordinals 0..last are present: check size and CRC, move the body into
 * the dumps column family and queue the `complete` ack for after the sync.
 */
static void od_complete(struct cg_reasm *rs, struct open_dump *od)
{
	struct cg_dump_record *rec = &rs->scratch;
	char why[128];
	if (cg_store_get_open(rs->st, &od->key, rec) != CG_OK) {
		od_reject(rs, od, "internal: open record unreadable");
		return;
	}
	if (rec->has_total_size && rec->total_size != od->bytes) {
		snprintf(why, sizeof why, "size mismatch: received %" PRIu64 " bytes, total_size %" PRIu64,
			 od->bytes, rec->total_size);
		od_reject(rs, od, why);
		return;
	}
	uint8_t *body = NULL;
	int rc = cg_store_read_dump(rs->st, &od->key, od->nchunks, od->bytes, &body);
	if (rc != CG_OK) {
		log_error("reasm", "cannot read dump %s/%" PRIu64 ": %s", od->dev->id, od->dump_id,
			  cg_strerror(rc));
		return; /* stays open; a hello or resend retries */
	}
	if (rec->has_crc32) {
		uint32_t crc = cg_crc32(0, body, od->bytes);
		if (crc != rec->crc32) {
			free(body);
			snprintf(why, sizeof why, "bad crc32: computed 0x%08x, device said 0x%08x", crc, rec->crc32);
			od_reject(rs, od, why);
			return;
		}
	}
	rec->status = CG_DUMP_STORED;
	rec->received_at_ms = now_ms(rs);
	rec->size = od->bytes;
	rec->chunks = od->nchunks;
	rc = cg_store_commit_dump(rs->st, &od->key, rec, body);
	free(body);
	if (rc != CG_OK) {
		log_error("reasm", "cannot commit dump %s/%" PRIu64 ": %s", od->dev->id, od->dump_id,
			  cg_strerror(rc));
		return;
	}
	rs->dirty = true;
	rs->stats.dumps_completed++;
	log_info("reasm", "dump %s/%" PRIu64 " complete: %" PRIu64 " bytes in %u chunks, seq %" PRIu64,
		 od->dev->id, od->dump_id, od->bytes, od->nchunks, rec->seq);
	queue_complete_ack(rs, od->dev->id, od->dump_id);
	od_free(rs, od);
}

/* Copy chunk-0 fields into the open record. */
static void record_chunk0(struct cg_dump_record *rec, const struct cg_chunk *c)
{
	rec->has_chunk0 = true;
	if (c->present & CG_HAS_TOTAL_SIZE) {
		rec->has_total_size = true;
		rec->total_size = c->total_size;
	}
	if (c->present & CG_HAS_OS) {
		rec->has_os = true;
		rec->os = c->os;
	}
	if (c->present & CG_HAS_FORMAT) {
		rec->has_format = true;
		rec->format = c->format;
	}
	if (c->present & CG_HAS_BUILD_ID) {
		rec->build_id_len = c->build_id_len;
		memcpy(rec->build_id, c->build_id, c->build_id_len);
	}
	if (c->present & CG_HAS_FW_VERSION) {
		memcpy(rec->fw_version, c->fw_version, c->fw_version_len);
		rec->fw_version[c->fw_version_len] = '\0';
	}
	if (c->present & CG_HAS_META) {
		rec->meta_len = c->meta_len;
		memcpy(rec->meta, c->meta, c->meta_len);
	}
}

/* A chunk for a dump that is not open: answer from the index, or open it. */
static struct open_dump *open_or_answer(struct cg_reasm *rs, const struct cg_dumpkey *k,
					const char *device, const struct cg_chunk *c, bool *is_new)
{
	struct cg_index_entry ie;
	int rc = cg_store_index_get(rs->st, k, &ie);
	if (rc == CG_OK) {
		bool rejection_live = ie.status == CG_DUMP_REJECTED &&
				      now_ms(rs) - ie.at_ms < (int64_t)rs->opts.reassembly_timeout_ms;
		if (ie.status != CG_DUMP_REJECTED) {
			/* Sent again after it was stored: answer complete, store once. */
			rs->stats.dumps_duplicate++;
			answer_finished(rs, k, device, c->dump_id, CG_ACK_COMPLETE, NULL);
			return NULL;
		}
		if (rejection_live) {
			answer_finished(rs, k, device, c->dump_id, CG_ACK_REJECTED, ie.reason);
			return NULL;
		}
	} else if (rc != CG_ERR_NOT_FOUND) {
		rs->stats.busy++;
		send_ack(rs, device, c->dump_id, CG_ACK_BUSY, "store unavailable", NULL, 0);
		return NULL;
	}
	struct device *d = device_get(rs, device, false);
	const char *busy = NULL;
	if (rs->nopen >= rs->opts.max_open_dumps)
		busy = "too many open dumps at the gateway";
	else if (d && d->nopen >= rs->opts.max_open_dumps_per_device)
		busy = "too many open dumps for this device";
	else if (rs->stats.store_bytes + c->content_len > rs->opts.max_store_bytes)
		busy = "gateway storage full";
	if (busy) {
		rs->stats.busy++;
		send_ack(rs, device, c->dump_id, CG_ACK_BUSY, busy, NULL, 0);
		return NULL;
	}
	struct open_dump *od = od_new(rs, k, device, c->dump_id);
	if (!od) {
		rs->stats.busy++;
		send_ack(rs, device, c->dump_id, CG_ACK_BUSY, "out of memory", NULL, 0);
		return NULL;
	}
	*is_new = true;
	return od;
}

/* Same ordinal again: harmless if identical, corrupt otherwise. */
static void handle_repeat(struct cg_reasm *rs, struct open_dump *od, const struct cg_chunk *c)
{
	uint8_t *old = NULL;
	size_t oldlen = 0;
	int rc = cg_store_get_chunk(rs->st, &od->key, c->ordinal, &old, &oldlen);
	if (rc != CG_OK) {
		log_error("reasm", "cannot read chunk %u of %s/%" PRIu64 ": %s", c->ordinal, od->dev->id,
			  od->dump_id, cg_strerror(rc));
		return;
	}
	bool same = oldlen == c->content_len && memcmp(old, c->content, oldlen) == 0;
	cg_store_free(old);
	if (!same) {
		char why[96];
		snprintf(why, sizeof why, "corrupt: chunk %u repeated with different bytes", c->ordinal);
		od_reject(rs, od, why);
		return;
	}
	rs->stats.chunks_repeated++;
	od->last_seen_ms = now_ms(rs);
	if (c->last && od->last_ordinal >= 0)
		send_incomplete(rs, od); /* a device resending its last chunk asks where it stands */
}

static int chunk_locked(struct cg_reasm *rs, const char *device, const uint8_t *payload, size_t len)
{
	struct cg_chunk c;
	int rc = cg_chunk_decode(payload, len, &c);
	if (rc != CG_OK) {
		rs->stats.messages_malformed++;
		log_warn("reasm", "malformed chunk from %s (%zu bytes): %s", device, len, cg_strerror(rc));
		return CG_OK;
	}
	rs->stats.chunks_received++;
	rs->stats.bytes_received += c.content_len;

	struct cg_dumpkey k;
	cg_dumpkey_make(&k, device, strlen(device), c.dump_id);
	struct open_dump *od = NULL;
	HASH_FIND(hh, rs->open, k.b, k.len, od);

	char why[128];
	why[0] = '\0';
	if (c.content_len > rs->opts.max_chunk_bytes)
		snprintf(why, sizeof why, "too large: chunk of %zu bytes, limit %" PRIu64, c.content_len,
			 rs->opts.max_chunk_bytes);
	else if (c.ordinal >= rs->opts.max_dump_bytes)
		snprintf(why, sizeof why, "too large: ordinal %u cannot fit in %" PRIu64 " bytes", c.ordinal,
			 rs->opts.max_dump_bytes);
	else if ((c.present & CG_HAS_TOTAL_SIZE) && c.total_size > rs->opts.max_dump_bytes)
		snprintf(why, sizeof why, "too large: total_size %" PRIu64 ", limit %" PRIu64, c.total_size,
			 rs->opts.max_dump_bytes);
	if (why[0]) {
		if (od)
			od_reject(rs, od, why);
		else
			reject_new(rs, &k, device, c.dump_id, why);
		return CG_OK;
	}

	bool is_new = false;
	if (!od) {
		od = open_or_answer(rs, &k, device, &c, &is_new);
		if (!od)
			return CG_OK;
	}
	if (!is_new && ranges_contains(od, c.ordinal)) {
		handle_repeat(rs, od, &c);
		return CG_OK;
	}

	if (od->last_ordinal >= 0 && c.ordinal > od->last_ordinal)
		snprintf(why, sizeof why, "corrupt: chunk %u beyond the last chunk %" PRId64, c.ordinal,
			 od->last_ordinal);
	else if (c.last && od->last_ordinal >= 0)
		snprintf(why, sizeof why, "corrupt: two last chunks (%" PRId64 " and %u)", od->last_ordinal,
			 c.ordinal);
	else if (c.last && od->nranges && c.ordinal < ranges_max(od))
		snprintf(why, sizeof why, "corrupt: last chunk %u below chunk %u", c.ordinal, ranges_max(od));
	else if (od->bytes + c.content_len > rs->opts.max_dump_bytes)
		snprintf(why, sizeof why, "too large: more than %" PRIu64 " bytes", rs->opts.max_dump_bytes);
	if (why[0]) {
		od_reject(rs, od, why);
		return CG_OK;
	}

	/* The open record changes only on a dump's first chunk, chunk 0 and the
	 * last chunk: two or three read-modify-writes per dump, none per chunk. */
	struct cg_dump_record *rec = NULL;
	bool touches_record = is_new || c.ordinal == 0 || c.last || (c.present & CG_HAS_CRC32);
	if (touches_record) {
		rec = &rs->scratch;
		if (is_new || cg_store_get_open(rs->st, &k, rec) != CG_OK) {
			memset(rec, 0, sizeof *rec);
			snprintf(rec->device, sizeof rec->device, "%s", device);
			rec->dump_id = c.dump_id;
			rec->status = CG_DUMP_OPEN;
			rec->first_seen_ms = now_ms(rs);
			rec->last_ordinal = -1;
		}
		if (c.ordinal == 0)
			record_chunk0(rec, &c);
		if (c.last)
			rec->last_ordinal = c.ordinal;
		if (c.present & CG_HAS_CRC32) {
			rec->has_crc32 = true;
			rec->crc32 = c.crc32;
		}
		if (rec->has_total_size && od->bytes + c.content_len > rec->total_size) {
			snprintf(why, sizeof why, "size mismatch: more than total_size %" PRIu64 " bytes",
				 rec->total_size);
			od_reject(rs, od, why);
			return CG_OK;
		}
	}
	rc = cg_store_put_chunk(rs->st, &k, c.ordinal, c.content, c.content_len, rec);
	if (rc != CG_OK) {
		/* Not stored: ask the device to keep the dump and retry. */
		log_error("reasm", "store write failed for %s/%" PRIu64 ": %s", device, c.dump_id, cg_strerror(rc));
		rs->stats.busy++;
		send_ack(rs, device, c.dump_id, CG_ACK_BUSY, "store write failed", NULL, 0);
		if (is_new)
			od_free(rs, od);
		return CG_ERR_STORE;
	}
	rs->stats.store_bytes += c.content_len;
	od->bytes += c.content_len;
	if (ranges_add(od, c.ordinal) != 0) {
		od_reject(rs, od, "too fragmented: too many gaps between received chunks");
		return CG_OK;
	}
	rs->dirty = true;
	rs->stats.chunks_stored++;
	od->nchunks++;
	od->last_seen_ms = now_ms(rs);
	if (c.last)
		od->last_ordinal = c.ordinal;

	if (od->last_ordinal >= 0) {
		if ((int64_t)od->nchunks == od->last_ordinal + 1)
			od_complete(rs, od);
		else if (c.last)
			send_incomplete(rs, od);
	}
	return CG_OK;
}

int cg_reasm_chunk(struct cg_reasm *rs, const char *device, const uint8_t *payload, size_t len)
{
	pthread_mutex_lock(&rs->lock);
	int rc = chunk_locked(rs, device, payload, len);
	pthread_mutex_unlock(&rs->lock);
	flush_outbox(rs);
	return rc;
}

int cg_reasm_hello(struct cg_reasm *rs, const char *device, const uint8_t *payload, size_t len)
{
	struct cg_hello h;
	int rc = cg_hello_decode(payload, len, &h);
	pthread_mutex_lock(&rs->lock);
	if (rc != CG_OK) {
		rs->stats.messages_malformed++;
		log_warn("reasm", "malformed hello from %s: %s", device, cg_strerror(rc));
	} else {
		struct device *d = device_get(rs, device, false);
		for (struct open_dump *od = d ? d->open : NULL; od; od = od->dev_next)
			send_incomplete(rs, od);
	}
	pthread_mutex_unlock(&rs->lock);
	flush_outbox(rs);
	return CG_OK;
}

int cg_reasm_commit(struct cg_reasm *rs)
{
	pthread_mutex_lock(&rs->lock);
	struct pending_ack *acks = rs->pending;
	size_t nacks = rs->npending;
	bool dirty = rs->dirty;
	rs->pending = NULL;
	rs->npending = rs->pending_cap = 0;
	rs->dirty = false;
	pthread_mutex_unlock(&rs->lock);

	int rc = CG_OK;
	if (dirty || nacks) {
		rc = cg_store_sync(rs->st);
		pthread_mutex_lock(&rs->lock);
		rs->stats.syncs++;
		pthread_mutex_unlock(&rs->lock);
	}
	if (rc != CG_OK) {
		/* Not durable: no `complete`. The devices keep their dumps and ask again. */
		log_error("reasm", "store sync failed: %s; %zu acks withheld", cg_strerror(rc), nacks);
		free(acks);
		return rc;
	}
	pthread_mutex_lock(&rs->lock);
	for (size_t i = 0; i < nacks; i++)
		send_ack(rs, acks[i].device, acks[i].dump_id, CG_ACK_COMPLETE, NULL, NULL, 0);
	pthread_mutex_unlock(&rs->lock);
	free(acks);
	flush_outbox(rs);
	return CG_OK;
}

bool cg_reasm_wait(struct cg_reasm *rs, uint64_t timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(timeout_ms / 1000);
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&rs->lock);
	while (rs->npending == 0 && !rs->woken) {
		if (pthread_cond_timedwait(&rs->cond, &rs->lock, &ts) == ETIMEDOUT)
			break;
	}
	bool want = rs->npending > 0;
	rs->woken = false;
	pthread_mutex_unlock(&rs->lock);
	return want;
}

void cg_reasm_wake(struct cg_reasm *rs)
{
	pthread_mutex_lock(&rs->lock);
	rs->woken = true;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
}

void cg_reasm_tick(struct cg_reasm *rs)
{
	pthread_mutex_lock(&rs->lock);
	int64_t now = now_ms(rs);
	struct open_dump *od, *tmp;
	HASH_ITER(hh, rs->open, od, tmp) {
		if (now - od->last_seen_ms < (int64_t)rs->opts.reassembly_timeout_ms)
			continue;
		log_warn("reasm", "dump %s/%" PRIu64 " expired incomplete after %" PRIu64 " ms: %u chunks, %" PRIu64 " bytes",
			 od->dev->id, od->dump_id, rs->opts.reassembly_timeout_ms, od->nchunks, od->bytes);
		if (cg_store_drop_open(rs->st, &od->key, NULL) != CG_OK)
			continue;
		rs->dirty = true;
		rs->stats.dumps_expired++;
		rs->stats.store_bytes -= od->bytes;
		od_free(rs, od);
	}
	struct recent *r, *rtmp;
	HASH_ITER(hh, rs->recent, r, rtmp) {
		if (now - r->at_ms >= ACK_REPEAT_MS) {
			HASH_DEL(rs->recent, r);
			free(r);
		}
	}
	pthread_mutex_unlock(&rs->lock);
}

void cg_reasm_get_stats(struct cg_reasm *rs, struct cg_reasm_stats *out)
{
	pthread_mutex_lock(&rs->lock);
	*out = rs->stats;
	out->open_dumps = rs->nopen;
	pthread_mutex_unlock(&rs->lock);
}

/* ---- recovery at start ---- */

static int recover_open(void *ctx, const struct cg_dumpkey *k, const struct cg_dump_record *rec)
{
	struct cg_reasm *rs = ctx;
	struct open_dump *od = od_new(rs, k, rec->device, rec->dump_id);
	if (od)
		od->last_ordinal = rec->last_ordinal;
	return 0;
}

static int recover_chunk(void *ctx, const struct cg_dumpkey *k, uint32_t ordinal, size_t len)
{
	struct cg_reasm *rs = ctx;
	struct open_dump *od = NULL;
	HASH_FIND(hh, rs->open, k->b, k->len, od);
	if (!od) {
		/* Chunks are always written with or after their open record; a
		 * chunk without one is an orphan of an older version: adopt it so
		 * the reassembly timeout frees it. */
		char dev[CG_DEVICE_ID_MAX + 1];
		uint64_t id;
		if (cg_dumpkey_parse(k->b, k->len, dev, &id) != CG_OK)
			return 0;
		od = od_new(rs, k, dev, id);
		if (!od)
			return 0;
	}
	if (ranges_add(od, ordinal) == 0) {
		od->nchunks++;
		od->bytes += len;
		rs->stats.store_bytes += len;
	}
	return 0;
}

static int recover_record(void *ctx, const struct cg_dump_record *rec)
{
	struct cg_reasm *rs = ctx;
	if (rec->status == CG_DUMP_STORED || rec->status == CG_DUMP_DEAD_LETTER)
		rs->stats.store_bytes += rec->size;
	return 0;
}

int cg_reasm_create(const struct cg_reasm_opts *opts, struct cg_store *st,
		    const struct cg_ack_sink *sink, cg_clock_fn clock, void *clock_ctx,
		    struct cg_reasm **out)
{
	struct cg_reasm *rs = calloc(1, sizeof *rs);
	if (!rs)
		return CG_ERR_NOMEM;
	rs->opts = *opts;
	snprintf(rs->gateway_id, sizeof rs->gateway_id, "%s", opts->gateway_id ? opts->gateway_id : "");
	rs->opts.gateway_id = rs->gateway_id;
	rs->st = st;
	if (sink)
		rs->sink = *sink;
	rs->clock = clock ? clock : real_clock;
	rs->clock_ctx = clock_ctx;
	pthread_mutex_init(&rs->lock, NULL);
	pthread_cond_init(&rs->cond, NULL);

	pthread_mutex_lock(&rs->lock);
	cg_store_scan_open(st, recover_open, rs);
	cg_store_scan_chunks(st, recover_chunk, rs);
	cg_store_scan_records(st, recover_record, rs);
	/* A crash between writing a dump's final chunk and its commit leaves it
	 * complete but open: finish it now. */
	struct open_dump *od, *tmp;
	uint32_t recovered = rs->nopen;
	HASH_ITER(hh, rs->open, od, tmp) {
		if (od->last_ordinal >= 0 && (int64_t)od->nchunks == od->last_ordinal + 1)
			od_complete(rs, od);
	}
	pthread_mutex_unlock(&rs->lock);
	if (recovered)
		log_info("reasm", "recovered %u open dumps (%u still open)", recovered, rs->nopen);
	*out = rs;
	return CG_OK;
}

void cg_reasm_destroy(struct cg_reasm *rs)
{
	if (!rs)
		return;
	struct open_dump *od, *tmp;
	HASH_ITER(hh, rs->open, od, tmp) {
		HASH_DEL(rs->open, od);
		free(od->ranges);
		free(od);
	}
	struct device *d, *dtmp;
	HASH_ITER(hh, rs->devices, d, dtmp) {
		HASH_DEL(rs->devices, d);
		free(d);
	}
	struct recent *r, *rtmp;
	HASH_ITER(hh, rs->recent, r, rtmp) {
		HASH_DEL(rs->recent, r);
		free(r);
	}
	for (size_t i = 0; i < rs->nout; i++)
		free(rs->outbox[i]);
	free(rs->outbox);
	free(rs->pending);
	pthread_cond_destroy(&rs->cond);
	pthread_mutex_destroy(&rs->lock);
	free(rs);
}
