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
#include "signature.h"

#define MAX_RANGES_PER_DUMP 4096      /* gaps one dump may have while it is being received */
#define MAX_RANGES_TOTAL    (1u << 20) /* all open dumps together: 8 MiB of range memory */
#define MAX_MISSING_IN_ACK  64         /* keeps an ack small; the device asks again with hello */
#define ACK_REPEAT_MS       1000       /* one answer per second for chunks of a finished dump */
#define MAX_RECENT          100000
#define MAX_REJECTED        100000
#define CHUNK_OVERHEAD      (CG_DUMPKEY_MAX + 4) /* key bytes counted against max_store_bytes */

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
	uint64_t bytes;                    /* content bytes */
	uint64_t cost;                     /* bytes counted against max_store_bytes */
	int64_t last_ordinal;              /* -1 until known */
	int64_t last_seen;                 /* monotonic ms */
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
	int64_t at;
};

/* A dump rejected recently: further chunks of it are answered, not stored.
 * Kept in memory only and for reassembly_timeout, so that a device cycling
 * through dump ids cannot grow the store. */
struct rejected {
	UT_hash_handle hh;
	struct cg_dumpkey key;
	int64_t at;
	char reason[128];
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
	cg_clock_fn clock;                 /* monotonic ms: timeouts and rate limits */
	void *clock_ctx;

	pthread_mutex_t lock;              /* guards everything below */
	pthread_cond_t cond;
	struct open_dump *open;            /* by key */
	struct device *devices;            /* by id */
	struct recent *recent;
	struct rejected *rejected;
	uint32_t nopen;
	uint64_t ranges_total;
	struct pending_ack *pending;       /* `complete` acks waiting for a sync */
	size_t npending, pending_cap;
	struct out_msg **outbox;
	size_t nout, out_cap;
	bool dirty;                        /* unsynced writes exist */
	bool woken;
	struct cg_reasm_stats stats;
	struct cg_dump_record scratch;     /* record buffer, used under lock */
};

static int64_t mono_clock(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Recorded timestamps (first seen, received at) are wall-clock time; every
 * interval is measured on the injectable monotonic clock, so that a clock
 * step on a box without an RTC neither expires nor freezes anything. */
static int64_t wall_ms(void)
{
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

/* Index of the first range that starts above v. */
static uint32_t ranges_upper(const struct open_dump *od, uint32_t v)
{
	uint32_t lo = 0, hi = od->nranges;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (od->ranges[mid].first > v)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* Would inserting v (not present) need a range of its own? */
static bool ranges_needs_new(const struct open_dump *od, uint32_t v)
{
	uint32_t i = ranges_upper(od, v);
	bool join_prev = i > 0 && od->ranges[i - 1].last + 1 == v;
	bool join_next = i < od->nranges && v + 1 == od->ranges[i].first;
	return !join_prev && !join_next;
}

/* Make room for one more range; false when memory is short. */
static bool ranges_reserve(struct open_dump *od)
{
	if (od->nranges < od->cap)
		return true;
	uint32_t ncap = od->cap ? od->cap * 2 : 2;
	struct cg_range *nr = realloc(od->ranges, ncap * sizeof *nr);
	if (!nr)
		return false;
	od->ranges = nr;
	od->cap = ncap;
	return true;
}

/* Insert v (not present; room reserved when it needs a new range).
 * Returns the change in the number of ranges: +1, 0 or -1. */
static int ranges_add(struct open_dump *od, uint32_t v)
{
	uint32_t i = ranges_upper(od, v);
	bool join_prev = i > 0 && od->ranges[i - 1].last + 1 == v;
	bool join_next = i < od->nranges && v + 1 == od->ranges[i].first;
	if (join_prev && join_next) {
		od->ranges[i - 1].last = od->ranges[i].last;
		memmove(&od->ranges[i], &od->ranges[i + 1], (od->nranges - i - 1) * sizeof *od->ranges);
		od->nranges--;
		return -1;
	}
	if (join_prev) {
		od->ranges[i - 1].last = v;
		return 0;
	}
	if (join_next) {
		od->ranges[i].first = v;
		return 0;
	}
	memmove(&od->ranges[i + 1], &od->ranges[i], (od->nranges - i) * sizeof *od->ranges);
	od->ranges[i].first = od->ranges[i].last = v;
	od->nranges++;
	return 1;
}

static uint32_t ranges_max(const struct open_dump *od)
{
	return od->nranges ? od->ranges[od->nranges - 1].last : 0;
}

static bool od_ready(const struct open_dump *od)
{
	return od->last_ordinal >= 0 && (int64_t)od->nchunks == od->last_ordinal + 1;
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

static void busy(struct cg_reasm *rs, const char *device, uint64_t dump_id, const char *why)
{
	rs->stats.busy++;
	send_ack(rs, device, dump_id, CG_ACK_BUSY, why, NULL, 0);
}

/* True at most once per second per dump: answers about dumps that are no
 * longer open, so a device resending a whole dump gets one answer. */
static bool answer_due(struct cg_reasm *rs, const struct cg_dumpkey *k)
{
	int64_t now = now_ms(rs);
	struct recent *r = NULL;
	HASH_FIND(hh, rs->recent, k->b, k->len, r);
	if (r && now - r->at < ACK_REPEAT_MS && now >= r->at)
		return false;
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
			return true;
		r->key = *k;
		HASH_ADD(hh, rs->recent, key.b, r->key.len, r);
	}
	r->at = now;
	return true;
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

static void remember_rejection(struct cg_reasm *rs, const struct cg_dumpkey *k, const char *reason)
{
	struct rejected *r = NULL;
	HASH_FIND(hh, rs->rejected, k->b, k->len, r);
	if (!r) {
		if (HASH_COUNT(rs->rejected) >= MAX_REJECTED)
			return; /* later chunks are checked afresh and rejected again */
		r = calloc(1, sizeof *r);
		if (!r)
			return;
		r->key = *k;
		HASH_ADD(hh, rs->rejected, key.b, r->key.len, r);
	}
	r->at = now_ms(rs);
	snprintf(r->reason, sizeof r->reason, "%s", reason);
}

static void send_incomplete(struct cg_reasm *rs, struct open_dump *od)
{
	struct cg_range miss[MAX_MISSING_IN_ACK];
	size_t n = missing_ranges(od, miss, MAX_MISSING_IN_ACK);
	if (n == 0)
		return; /* nothing missing: the dump is completing, `complete` follows */
	send_ack(rs, od->dev->id, od->dump_id, CG_ACK_INCOMPLETE, NULL, miss, n);
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
	if (!od) {
		if (d && d->nopen == 0) {
			HASH_DEL(rs->devices, d);
			free(d);
		}
		return NULL;
	}
	od->key = *k;
	od->dev = d;
	od->dump_id = dump_id;
	od->last_ordinal = -1;
	od->last_seen = now_ms(rs);
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
	rs->ranges_total -= od->nranges;
	free(od->ranges);
	free(od);
}

/* Delete an open dump's chunks and open record; adjusts the store budget
 * only when the delete went through. */
static int od_drop(struct cg_reasm *rs, struct open_dump *od)
{
	int rc = cg_store_drop_open(rs->st, &od->key);
	if (rc != CG_OK) {
		log_error("reasm", "cannot drop dump %s/%" PRIu64 ": %s; it stays until the next start",
			  od->dev->id, od->dump_id, cg_strerror(rc));
		return rc;
	}
	rs->dirty = true;
	rs->stats.store_bytes -= od->cost;
	return CG_OK;
}

/* Give up on an open dump: free its chunks, remember why, tell the device. */
static void od_reject(struct cg_reasm *rs, struct open_dump *od, const char *reason)
{
	od_drop(rs, od);
	rs->stats.dumps_rejected++;
	log_warn("reasm", "rejected dump %s/%" PRIu64 ": %s", od->dev->id, od->dump_id, reason);
	remember_rejection(rs, &od->key, reason);
	send_ack(rs, od->dev->id, od->dump_id, CG_ACK_REJECTED, reason, NULL, 0);
	od_free(rs, od);
}

/* Reject a dump that has no open state (its first chunk is already bad). */
static void reject_new(struct cg_reasm *rs, const struct cg_dumpkey *k, const char *device,
		       uint64_t dump_id, const char *reason)
{
	rs->stats.dumps_rejected++;
	if (answer_due(rs, k))
		log_warn("reasm", "rejected dump %s/%" PRIu64 ": %s", device, dump_id, reason);
	remember_rejection(rs, k, reason);
	send_ack(rs, device, dump_id, CG_ACK_REJECTED, reason, NULL, 0);
}

/* A minimal open record, for a dump whose record is missing (written by an
 * older version, or lost): what memory knows. */
static void record_fresh(struct cg_dump_record *rec, const char *device, uint64_t dump_id)
{
	memset(rec, 0, sizeof *rec);
	snprintf(rec->device, sizeof rec->device, "%s", device);
	rec->dump_id = dump_id;
	rec->status = CG_DUMP_OPEN;
	rec->first_seen_ms = wall_ms();
	rec->last_ordinal = -1;
}

/*
 * All ordinals 0..last are present: check size and CRC, write the dump's
 * record and queue the `complete` ack for after the sync. A failure of the
 * store leaves the dump open and answers `busy`; only the data itself
 * (size, CRC) can get a dump rejected.
 */
static void od_complete(struct cg_reasm *rs, struct open_dump *od)
{
	struct cg_dump_record *rec = &rs->scratch;
	char why[128];
	int rc = cg_store_get_open(rs->st, &od->key, rec);
	if (rc == CG_ERR_NOT_FOUND || rc == CG_ERR_MALFORMED) {
		log_warn("reasm", "dump %s/%" PRIu64 ": open record %s; completing without it", od->dev->id,
			 od->dump_id, rc == CG_ERR_NOT_FOUND ? "missing" : "unreadable");
		record_fresh(rec, od->dev->id, od->dump_id);
	} else if (rc != CG_OK) {
		busy(rs, od->dev->id, od->dump_id, "store unavailable");
		return;
	}
	if (rec->has_total_size && rec->total_size != od->bytes) {
		snprintf(why, sizeof why, "size mismatch: received %" PRIu64 " bytes, total_size %" PRIu64,
			 od->bytes, rec->total_size);
		od_reject(rs, od, why);
		return;
	}
	/* Read the dump back once: CRC check, crash analysis and signature. */
	uint8_t *body = NULL;
	rc = cg_store_read_dump(rs->st, &od->key, od->nchunks, od->bytes, &body);
	if (rc != CG_OK) {
		log_error("reasm", "cannot read dump %s/%" PRIu64 " back: %s", od->dev->id, od->dump_id,
			  cg_strerror(rc));
		busy(rs, od->dev->id, od->dump_id, "store unavailable");
		return;
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
	/* A dump that cannot be read whole is still stored, with what could be
	 * read and the decode error (SPEC §7). */
	cg_decode(body, od->bytes, rec->has_format ? rec->format : CG_FORMAT_DETECT, &rec->crash);
	rec->has_crash = true;
	cg_crash_signature(&rec->crash, body, od->bytes, rec->signature);
	free(body);
	rec->status = CG_DUMP_STORED;
	rec->received_at_ms = wall_ms();
	rec->size = od->bytes;
	rec->chunks = od->nchunks;
	rec->last_ordinal = od->last_ordinal;
	rc = cg_store_commit_dump(rs->st, &od->key, rec);
	if (rc != CG_OK) {
		log_error("reasm", "cannot commit dump %s/%" PRIu64 ": %s", od->dev->id, od->dump_id,
			  cg_strerror(rc));
		busy(rs, od->dev->id, od->dump_id, "store write failed");
		return;
	}
	rs->dirty = true;
	rs->stats.dumps_completed++;
	log_info("reasm", "dump %s/%" PRIu64 " complete: %" PRIu64 " bytes in %u chunks, seq %" PRIu64,
		 od->dev->id, od->dump_id, od->bytes, od->nchunks, rec->seq);
	queue_complete_ack(rs, od->dev->id, od->dump_id);
	od_free(rs, od);
}

/* After a chunk: complete the dump, or tell the device what is missing when
 * it sent its last chunk (again). */
static void od_progress(struct cg_reasm *rs, struct open_dump *od, bool sent_last)
{
	if (od_ready(od))
		od_complete(rs, od);
	else if (sent_last)
		send_incomplete(rs, od);
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

/*
 * A chunk of a dump that is not open: answer it from what we remember (a
 * recent rejection, or the index for a stored dump), or return false when
 * it starts a new dump.
 */
static bool answer_closed(struct cg_reasm *rs, const struct cg_dumpkey *k, const char *device,
			  uint64_t dump_id)
{
	struct rejected *rj = NULL;
	HASH_FIND(hh, rs->rejected, k->b, k->len, rj);
	if (rj) {
		int64_t age = now_ms(rs) - rj->at;
		if (age >= 0 && age < (int64_t)rs->opts.reassembly_timeout_ms) {
			if (answer_due(rs, k))
				send_ack(rs, device, dump_id, CG_ACK_REJECTED, rj->reason, NULL, 0);
			return true;
		}
		HASH_DEL(rs->rejected, rj);
		free(rj);
	}
	struct cg_index_entry ie;
	int rc = cg_store_index_get(rs->st, k, &ie);
	if (rc == CG_OK && ie.status != CG_DUMP_REJECTED) {
		/* Sent again after it was stored: stored once, answered `complete`
		 * once the store is synced (the commit may still be in flight). */
		rs->stats.dumps_duplicate++;
		if (answer_due(rs, k))
			queue_complete_ack(rs, device, dump_id);
		return true;
	}
	if (rc != CG_OK && rc != CG_ERR_NOT_FOUND) {
		busy(rs, device, dump_id, "store unavailable");
		return true;
	}
	return false;
}

static const char *open_refusal(struct cg_reasm *rs, const char *device)
{
	struct device *d = device_get(rs, device, false);
	if (rs->nopen >= rs->opts.max_open_dumps)
		return "too many open dumps at the gateway";
	if (d && d->nopen >= rs->opts.max_open_dumps_per_device)
		return "too many open dumps for this device";
	return NULL;
}

/* Same ordinal again: harmless if identical (and it may carry the `last`
 * flag the first copy lacked), corrupt otherwise. */
static void handle_repeat(struct cg_reasm *rs, struct open_dump *od, const struct cg_chunk *c)
{
	uint8_t *old = NULL;
	size_t oldlen = 0;
	int rc = cg_store_get_chunk(rs->st, &od->key, c->ordinal, &old, &oldlen);
	if (rc != CG_OK) {
		log_error("reasm", "cannot read chunk %u of %s/%" PRIu64 ": %s", c->ordinal, od->dev->id,
			  od->dump_id, cg_strerror(rc));
		busy(rs, od->dev->id, od->dump_id, "store unavailable");
		return;
	}
	bool same = oldlen == c->content_len && memcmp(old, c->content, oldlen) == 0;
	cg_store_free(old);
	char why[96];
	if (!same) {
		snprintf(why, sizeof why, "corrupt: chunk %u repeated with different bytes", c->ordinal);
		od_reject(rs, od, why);
		return;
	}
	rs->stats.chunks_repeated++;
	od->last_seen = now_ms(rs);
	if (c->last && od->last_ordinal < 0) {
		if (c->ordinal != ranges_max(od)) {
			snprintf(why, sizeof why, "corrupt: last chunk %u below chunk %u", c->ordinal, ranges_max(od));
			od_reject(rs, od, why);
			return;
		}
		struct cg_dump_record *rec = &rs->scratch;
		rc = cg_store_get_open(rs->st, &od->key, rec);
		if (rc == CG_ERR_NOT_FOUND || rc == CG_ERR_MALFORMED)
			record_fresh(rec, od->dev->id, od->dump_id);
		else if (rc != CG_OK) {
			busy(rs, od->dev->id, od->dump_id, "store unavailable");
			return;
		}
		rec->last_ordinal = c->ordinal;
		if (c->present & CG_HAS_CRC32) {
			rec->has_crc32 = true;
			rec->crc32 = c->crc32;
		}
		/* Rewrite the chunk with the record: same bytes, one atomic batch. */
		if (cg_store_put_chunk(rs->st, &od->key, c->ordinal, c->content, c->content_len, rec) != CG_OK) {
			busy(rs, od->dev->id, od->dump_id, "store write failed");
			return;
		}
		rs->dirty = true;
		od->last_ordinal = c->ordinal;
	} else if (c->last && c->ordinal != od->last_ordinal) {
		snprintf(why, sizeof why, "corrupt: two last chunks (%" PRId64 " and %u)", od->last_ordinal,
			 c->ordinal);
		od_reject(rs, od, why);
		return;
	}
	od_progress(rs, od, c->last);
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
	/* What the gateway already decided about this dump comes first: a bad
	 * chunk must never overwrite the record of a stored dump. */
	if (!od && answer_closed(rs, &k, device, c.dump_id))
		return CG_OK;

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

	if (od && ranges_contains(od, c.ordinal)) {
		handle_repeat(rs, od, &c);
		return CG_OK;
	}

	if (od) {
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
		else if (ranges_needs_new(od, c.ordinal) && od->nranges >= MAX_RANGES_PER_DUMP)
			snprintf(why, sizeof why, "too fragmented: more than %u gaps", MAX_RANGES_PER_DUMP);
		if (why[0]) {
			od_reject(rs, od, why);
			return CG_OK;
		}
	}

	/* Budgets: nothing is written that the store or memory cannot hold. */
	uint64_t cost = c.content_len + CHUNK_OVERHEAD;
	const char *refuse = NULL;
	if (rs->stats.store_bytes + cost > rs->opts.max_store_bytes)
		refuse = "gateway storage full";
	else if (!od)
		refuse = open_refusal(rs, device);
	if (!refuse && rs->ranges_total >= MAX_RANGES_TOTAL && (!od || ranges_needs_new(od, c.ordinal)))
		refuse = "too many fragmented dumps at the gateway";
	if (refuse) {
		busy(rs, device, c.dump_id, refuse);
		return CG_OK;
	}

	bool is_new = od == NULL;
	if (is_new) {
		od = od_new(rs, &k, device, c.dump_id);
		if (!od) {
			busy(rs, device, c.dump_id, "out of memory");
			return CG_OK;
		}
	}
	bool new_range = ranges_needs_new(od, c.ordinal);
	if (new_range && !ranges_reserve(od)) {
		busy(rs, device, c.dump_id, "out of memory");
		if (is_new)
			od_free(rs, od);
		return CG_OK;
	}

	/* The open record changes only on a dump's first chunk, chunk 0 and the
	 * last chunk: two or three read-modify-writes per dump, none per chunk. */
	struct cg_dump_record *rec = NULL;
	if (is_new || c.ordinal == 0 || c.last || (c.present & CG_HAS_CRC32)) {
		rec = &rs->scratch;
		rc = is_new ? CG_ERR_NOT_FOUND : cg_store_get_open(rs->st, &k, rec);
		if (rc == CG_ERR_NOT_FOUND || rc == CG_ERR_MALFORMED) {
			record_fresh(rec, device, c.dump_id);
		} else if (rc != CG_OK) {
			busy(rs, device, c.dump_id, "store unavailable");
			return CG_ERR_STORE;
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
		busy(rs, device, c.dump_id, "store write failed");
		if (is_new)
			od_free(rs, od);
		return CG_ERR_STORE;
	}
	rs->dirty = true;
	rs->stats.chunks_stored++;
	rs->stats.store_bytes += cost;
	rs->ranges_total += (uint64_t)(int64_t)ranges_add(od, c.ordinal);
	od->nchunks++;
	od->bytes += c.content_len;
	od->cost += cost;
	od->last_seen = now_ms(rs);
	if (c.last)
		od->last_ordinal = c.ordinal;
	od_progress(rs, od, c.last);
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
		struct open_dump *od = d ? d->open : NULL;
		while (od) {
			struct open_dump *next = od->dev_next; /* od may complete and go away */
			if (od_ready(od))
				od_complete(rs, od);
			else
				send_incomplete(rs, od);
			od = next;
		}
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
	if (dirty || nacks)
		rc = cg_store_sync(rs->st);
	pthread_mutex_lock(&rs->lock);
	if (dirty || nacks)
		rs->stats.syncs++;
	if (rc != CG_OK) {
		/* Not durable: no `complete` yet. Keep the acks and try again. */
		log_error("reasm", "store sync failed: %s; %zu acks wait for the next sync", cg_strerror(rc), nacks);
		rs->dirty = true;
		for (size_t i = 0; i < nacks; i++)
			queue_complete_ack(rs, acks[i].device, acks[i].dump_id);
	} else {
		for (size_t i = 0; i < nacks; i++)
			send_ack(rs, acks[i].device, acks[i].dump_id, CG_ACK_COMPLETE, NULL, NULL, 0);
	}
	pthread_mutex_unlock(&rs->lock);
	free(acks);
	flush_outbox(rs);
	return rc;
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
	int64_t timeout = (int64_t)rs->opts.reassembly_timeout_ms;
	struct open_dump *od, *tmp;
	HASH_ITER(hh, rs->open, od, tmp) {
		if (od_ready(od)) { /* an earlier completion hit a store error */
			od_complete(rs, od);
			continue;
		}
		if (now - od->last_seen < timeout)
			continue;
		log_warn("reasm", "dump %s/%" PRIu64 " expired incomplete after %" PRId64 " ms: %u chunks, %" PRIu64 " bytes",
			 od->dev->id, od->dump_id, timeout, od->nchunks, od->bytes);
		if (od_drop(rs, od) != CG_OK)
			continue;
		rs->stats.dumps_expired++;
		od_free(rs, od);
	}
	struct recent *r, *rtmp;
	HASH_ITER(hh, rs->recent, r, rtmp) {
		if (now - r->at >= ACK_REPEAT_MS || now < r->at) {
			HASH_DEL(rs->recent, r);
			free(r);
		}
	}
	struct rejected *rj, *rjtmp;
	HASH_ITER(hh, rs->rejected, rj, rjtmp) {
		if (now - rj->at >= timeout || now < rj->at) {
			HASH_DEL(rs->rejected, rj);
			free(rj);
		}
	}
	pthread_mutex_unlock(&rs->lock);
	flush_outbox(rs);
}

void cg_reasm_get_stats(struct cg_reasm *rs, struct cg_reasm_stats *out)
{
	pthread_mutex_lock(&rs->lock);
	*out = rs->stats;
	out->open_dumps = rs->nopen;
	pthread_mutex_unlock(&rs->lock);
}

/* ---- recovery at start ---- */

struct recover_ctx {
	struct cg_reasm *rs;
	struct open_dump *od;
};

static int recover_chunk(void *ctx, uint32_t ordinal, const uint8_t *data, size_t len)
{
	struct recover_ctx *r = ctx;
	(void)data;
	struct open_dump *od = r->od;
	if (ranges_contains(od, ordinal))
		return 0;
	if (ranges_needs_new(od, ordinal) && !ranges_reserve(od))
		return CG_ERR_NOMEM;
	r->rs->ranges_total += (uint64_t)(int64_t)ranges_add(od, ordinal);
	od->nchunks++;
	od->bytes += len;
	od->cost += len + CHUNK_OVERHEAD;
	r->rs->stats.store_bytes += len + CHUNK_OVERHEAD;
	return 0;
}

/* Each open record becomes an open dump again, with its chunks counted
 * from the store (only that dump's key range is read). */
static int recover_open(void *ctx, const struct cg_dumpkey *k, const struct cg_dump_record *rec)
{
	struct cg_reasm *rs = ctx;
	struct open_dump *od = od_new(rs, k, rec->device, rec->dump_id);
	if (!od)
		return 0;
	od->last_ordinal = rec->last_ordinal;
	struct recover_ctx r = { rs, od };
	if (cg_store_each_chunk(rs->st, k, recover_chunk, &r) != CG_OK)
		log_error("reasm", "dump %s/%" PRIu64 ": cannot read its chunks back", rec->device, rec->dump_id);
	return 0;
}

static int recover_record(void *ctx, const struct cg_dump_record *rec)
{
	struct cg_reasm *rs = ctx;
	if (rec->status == CG_DUMP_STORED || rec->status == CG_DUMP_DEAD_LETTER)
		rs->stats.store_bytes += rec->size + (uint64_t)rec->chunks * CHUNK_OVERHEAD;
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
	rs->clock = clock ? clock : mono_clock;
	rs->clock_ctx = clock_ctx;
	pthread_mutex_init(&rs->lock, NULL);
	pthread_cond_init(&rs->cond, NULL);

	pthread_mutex_lock(&rs->lock);
	cg_store_scan_open(st, recover_open, rs);
	cg_store_scan_records(st, recover_record, rs);
	/* A crash between writing a dump's final chunk and its commit leaves it
	 * complete but open: finish it now. */
	struct open_dump *od, *tmp;
	uint32_t recovered = rs->nopen;
	HASH_ITER(hh, rs->open, od, tmp) {
		if (od_ready(od))
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
	struct rejected *rj, *rjtmp;
	HASH_ITER(hh, rs->rejected, rj, rjtmp) {
		HASH_DEL(rs->rejected, rj);
		free(rj);
	}
	for (size_t i = 0; i < rs->nout; i++)
		free(rs->outbox[i]);
	free(rs->outbox);
	free(rs->pending);
	pthread_cond_destroy(&rs->cond);
	pthread_mutex_destroy(&rs->lock);
	free(rs);
}
