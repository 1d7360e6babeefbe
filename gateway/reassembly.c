#include "reassembly.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include <openssl/evp.h>

#include "log.h"
#include "policy.h"
#include "signature.h"

#define MAX_RANGES_PER_DUMP 4096      /* gaps one dump may have while it is being received */
#define MAX_RANGES_TOTAL    (1u << 20) /* all open dumps together: 8 MiB of range memory */
#define MAX_MISSING_IN_ACK  64         /* keeps an ack small; the device asks again with hello */
#define ACK_REPEAT_MS       1000       /* one answer per second for chunks of a finished dump */
#define ACK_REPEAT_MAX_MS   8000       /* ... backing off to this while the device keeps sending */
#define MAX_RECENT          100000
#define MAX_REJECTED        100000
#define CHUNK_OVERHEAD      (CG_DUMPKEY_MAX + 4) /* key bytes counted against max_store_bytes */
#define MAX_SEEN            1000000    /* devices the consent signal is kept up for */
#define SEEN_PERSIST_MS     (3600 * 1000) /* a device's last-seen time is written hourly */
#define RETENTION_EVERY_MS  (60 * 1000)

/* A group name, interned for the reassembler's lifetime so that open dumps
 * can point at it across reloads. */
struct grp {
	UT_hash_handle hh;
	uint32_t open;                     /* open dumps: they count against the quota */
	char name[129];
};

/* Open dumps admitted at chunk 0 under a signature: they hold a place in
 * the throttle window until they complete or go away, so that a storm of
 * identical crashes admits exactly max_identical. */
struct sigres {
	UT_hash_handle hh;
	char sig[17];
	uint32_t n;
};

/* A device the gateway has seen (hello or chunk): it gets the consent
 * signal, and its group is cached per configuration generation. */
struct seen {
	UT_hash_handle hh;
	char id[CG_DEVICE_ID_MAX + 1];
	uint64_t gen;                      /* generation of grp/enabled */
	struct grp *grp;                   /* NULL = the built-in default group */
	bool enabled;
	bool due;                          /* consent not yet sent for this generation */
	int64_t published;                 /* monotonic ms of the last consent signal */
	int64_t first_wall, last_wall;     /* unix ms */
	int64_t persisted_wall;            /* when last_wall was last written */
};

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
	struct grp *grp;                   /* policy group at open (quota) */
	char early_sig[17];                /* admitted at chunk 0 under this signature */
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
	uint32_t gap;              /* no other answer before at + gap */
	bool closed;               /* answered from the index: the dump is finished */
	bool stored;               /* ... and stored (its repeats count as duplicates) */
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
	uint32_t status;                   /* complete or throttled */
};

/* An encoded ack waiting to leave. Acks are queued under the lock and sent
 * after it is released: the sink (Paho) takes its own lock, and Paho holds
 * that one while it calls us with a message, so sending under ours would
 * invert the lock order and deadlock. */
struct out_msg {
	char device[CG_DEVICE_ID_MAX + 1];
	bool consent;                      /* a consent signal, not an ack */
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
	cg_clock_fn wall;                  /* unix ms: records, windows, retention */
	void *wall_ctx;

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

	const struct cg_config *cfg;       /* policy; NULL = none */
	uint64_t gen;                      /* configuration generation */
	struct grp *grps;
	struct sigres *sigres;
	struct seen *seen;
	uint32_t nseen;
	bool seen_full_logged;
	int64_t last_retention;            /* monotonic ms; INT64_MIN = not yet */
	bool retention_running;
	bool evict_wanted;                 /* the store is full: free delivered dumps' bytes */
	struct cg_sig_stats sigs;          /* signature statistics buffer, used under lock */
};

/* Empty a uthash table whose entries were malloc'd one by one. */
#define FREE_ALL(head, type)                                   \
	do {                                                   \
		type *x_, *t_;                                 \
		HASH_ITER(hh, head, x_, t_) {                  \
			HASH_DEL(head, x_);                    \
			free(x_);                              \
		}                                              \
	} while (0)

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
static int64_t real_wall(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(struct cg_reasm *rs)
{
	return rs->wall(rs->wall_ctx);
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

static bool queue_out(struct cg_reasm *rs, const char *device, const uint8_t *buf, size_t len,
		      bool consent);

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
	if (queue_out(rs, device, buf, len, false))
		rs->stats.acks_sent++;
}

/* Queue a message for the sink; false when memory is short (the device
 * asks again, or the consent signal goes out at a later tick). */
static bool queue_out(struct cg_reasm *rs, const char *device, const uint8_t *buf, size_t len,
		      bool consent)
{
	if (rs->nout == rs->out_cap) {
		size_t ncap = rs->out_cap ? rs->out_cap * 2 : 16;
		struct out_msg **no = realloc(rs->outbox, ncap * sizeof *no);
		if (!no)
			return false;
		rs->outbox = no;
		rs->out_cap = ncap;
	}
	struct out_msg *m = malloc(sizeof *m + len);
	if (!m)
		return false;
	snprintf(m->device, sizeof m->device, "%s", device);
	m->consent = consent;
	m->len = len;
	memcpy(m->buf, buf, len);
	rs->outbox[rs->nout++] = m;
	return true;
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
		if (out[i]->consent && rs->sink.consent)
			rs->sink.consent(rs->sink.ctx, out[i]->device, out[i]->buf, out[i]->len);
		else if (!out[i]->consent && rs->sink.send)
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
static bool answer_due_gap(struct cg_reasm *rs, const struct cg_dumpkey *k, bool closed)
{
	int64_t now = now_ms(rs);
	struct recent *r = NULL;
	HASH_FIND(hh, rs->recent, k->b, k->len, r);
	if (r && now - r->at < r->gap && now >= r->at)
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
		r->gap = ACK_REPEAT_MS / 2;   /* doubled below */
		HASH_ADD(hh, rs->recent, key.b, r->key.len, r);
	}
	r->at = now;
	/* A finished dump whose chunks keep coming (the answer is still on its
	 * way, or lost): answer again after 1, 2, 4, 8 s, not every second. */
	r->gap = closed ? (r->gap * 2 > ACK_REPEAT_MAX_MS ? ACK_REPEAT_MAX_MS : r->gap * 2) : ACK_REPEAT_MS;
	r->closed = closed;
	return true;
}

static bool answer_due(struct cg_reasm *rs, const struct cg_dumpkey *k)
{
	return answer_due_gap(rs, k, false);
}

/* Answered from the index less than its gap ago: nothing to look up. */
static bool answered_recently(struct cg_reasm *rs, const struct cg_dumpkey *k)
{
	int64_t now = now_ms(rs);
	struct recent *r = NULL;
	HASH_FIND(hh, rs->recent, k->b, k->len, r);
	if (!r || !r->closed || now - r->at >= r->gap || now < r->at)
		return false;
	if (r->stored)
		rs->stats.dumps_duplicate++;
	return true;
}

static void mark_stored(struct cg_reasm *rs, const struct cg_dumpkey *k)
{
	struct recent *r = NULL;
	HASH_FIND(hh, rs->recent, k->b, k->len, r);
	if (r)
		r->stored = true;
}

/* A final answer (complete, throttled) that must wait for the sync of what
 * it reports. */
static void queue_final_ack(struct cg_reasm *rs, const char *device, uint64_t dump_id, uint32_t status)
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
	p->status = status;
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

/* ---- policy (SPEC §5, §6) ---- */

static struct grp *grp_intern(struct cg_reasm *rs, const char *name)
{
	struct grp *g = NULL;
	HASH_FIND_STR(rs->grps, name, g);
	if (!g) {
		g = calloc(1, sizeof *g);
		if (!g)
			return NULL;
		snprintf(g->name, sizeof g->name, "%s", name);
		HASH_ADD_STR(rs->grps, name, g);
	}
	return g;
}

/* The configured group of that name, NULL when the configuration has none
 * (the built-in default group, or a group a reload removed). */
static const struct cg_group_config *cfg_group(struct cg_reasm *rs, const struct grp *g)
{
	for (size_t i = 0; g && rs->cfg && i < rs->cfg->n_groups; i++)
		if (strcmp(rs->cfg->groups[i].name, g->name) == 0)
			return &rs->cfg->groups[i];
	return NULL;
}

static uint32_t sigres_count(struct cg_reasm *rs, const char *sig)
{
	struct sigres *r = NULL;
	HASH_FIND_STR(rs->sigres, sig, r);
	return r ? r->n : 0;
}

static bool sigres_add(struct cg_reasm *rs, const char *sig)
{
	struct sigres *r = NULL;
	HASH_FIND_STR(rs->sigres, sig, r);
	if (!r) {
		r = calloc(1, sizeof *r);
		if (!r)
			return false;
		snprintf(r->sig, sizeof r->sig, "%s", sig);
		HASH_ADD_STR(rs->sigres, sig, r);
	}
	r->n++;
	return true;
}

static void sigres_release(struct cg_reasm *rs, char *sig)
{
	struct sigres *r = NULL;
	if (!sig[0])
		return;
	HASH_FIND_STR(rs->sigres, sig, r);
	if (r && --r->n == 0) {
		HASH_DEL(rs->sigres, r);
		free(r);
	}
	sig[0] = '\0';
}

/* Where the device stands under the current configuration. */
static void seen_resolve(struct cg_reasm *rs, struct seen *e)
{
	const struct cg_group_config *g = cg_config_group_for(rs->cfg, e->id);
	e->grp = g ? grp_intern(rs, g->name) : NULL;
	e->enabled = g && e->grp && g->crash_dumps == CG_CONSENT_ENABLED;
	e->gen = rs->gen;
	e->due = true;
}

static void seen_persist(struct cg_reasm *rs, struct seen *e)
{
	uint8_t key[CG_POLICY_KEY_MAX], val[16];
	size_t klen = cg_policy_key_device(key, e->id);
	for (int i = 0; i < 8; i++) {
		val[i] = (uint8_t)((uint64_t)e->first_wall >> (56 - 8 * i));
		val[8 + i] = (uint8_t)((uint64_t)e->last_wall >> (56 - 8 * i));
	}
	struct cg_kv kv = { key, klen, val, 16 };
	if (cg_store_policy_write(rs->st, &kv, 1) == CG_OK) {
		e->persisted_wall = e->last_wall;
		rs->dirty = true;
	}
}

static struct seen *seen_add(struct cg_reasm *rs, const char *device, int64_t first, int64_t last)
{
	if (rs->nseen >= MAX_SEEN) {
		if (!rs->seen_full_logged)
			log_warn("policy", "more than %u devices: new devices get no consent signal until "
				 "history retention forgets old ones", MAX_SEEN);
		rs->seen_full_logged = true;
		return NULL;
	}
	struct seen *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	snprintf(e->id, sizeof e->id, "%s", device);
	e->first_wall = first;
	e->last_wall = last;
	e->persisted_wall = last;
	e->published = INT64_MIN;
	e->gen = 0;   /* resolved on first use */
	HASH_ADD_STR(rs->seen, id, e);
	rs->nseen++;
	rs->stats.devices_seen = rs->nseen;
	return e;
}

/* Publish the consent signal of one device (SPEC §5). */
static void consent_publish(struct cg_reasm *rs, struct seen *e)
{
	char gname[129] = "";
	struct cg_consent c = {
		.present = CG_HAS_VALID_FOR,
		.enabled = e->enabled,
		.issued_at = (uint64_t)(wall_ms(rs) / 1000),
		.valid_for = rs->cfg->consent.valid_for_ms / 1000,
	};
	if (e->grp) {
		snprintf(gname, sizeof gname, "%s", e->grp->name);
		c.present |= CG_HAS_GROUP;
		c.group = gname;
		c.group_len = strlen(gname);
	}
	uint8_t buf[64 + CG_PROTO_MAX_GROUP];
	size_t len = 0;
	if (cg_consent_encode(&c, buf, sizeof buf, &len) != CG_OK)
		return;
	if (queue_out(rs, e->id, buf, len, true)) {
		e->published = now_ms(rs);
		e->due = false;
		rs->stats.consent_published++;
	}
}

/*
 * Note that a device was seen (hello or chunk) and return its consent and
 * group. A device seen for the first time gets its consent signal now.
 */
static bool device_policy(struct cg_reasm *rs, const char *device, struct grp **grp)
{
	struct seen *e = NULL;
	int64_t wall = wall_ms(rs);
	HASH_FIND_STR(rs->seen, device, e);
	if (!e) {
		e = seen_add(rs, device, wall, wall);
		if (e)
			seen_persist(rs, e);
	}
	if (!e) {   /* not tracked: decide from the configuration directly */
		const struct cg_group_config *g = cg_config_group_for(rs->cfg, device);
		*grp = g ? grp_intern(rs, g->name) : NULL;
		return g && *grp && g->crash_dumps == CG_CONSENT_ENABLED;
	}
	if (e->gen != rs->gen)
		seen_resolve(rs, e);
	if (wall > e->last_wall)
		e->last_wall = wall;
	if (e->last_wall - e->persisted_wall >= SEEN_PERSIST_MS)
		seen_persist(rs, e);
	if (e->published == INT64_MIN)
		consent_publish(rs, e);
	*grp = e->grp;
	return e->enabled;
}

/* Consent signals due: new generation, or older than valid_for / 2. */
static void consent_tick(struct cg_reasm *rs)
{
	int64_t now = now_ms(rs), half = (int64_t)(rs->cfg->consent.valid_for_ms / 2);
	struct seen *e, *tmp;
	HASH_ITER(hh, rs->seen, e, tmp) {
		if (e->gen != rs->gen)
			seen_resolve(rs, e);
		if (e->due || e->published == INT64_MIN || now - e->published >= half)
			consent_publish(rs, e);
	}
}

/* The region a group's dumps belong to under the current configuration. */
static void record_policy(struct cg_reasm *rs, struct cg_dump_record *rec, const struct grp *g)
{
	const struct cg_group_config *gc = cfg_group(rs, g);
	const char *region = gc ? cg_config_group_region(rs->cfg, gc) : NULL;
	snprintf(rec->group, sizeof rec->group, "%s", g ? g->name : "");
	snprintf(rec->region, sizeof rec->region, "%s", region ? region : "");
}

static bool early_candidate(const struct cg_chunk *c)
{
	if (c->present & CG_HAS_FORMAT)
		return c->format == CG_FORMAT_ZEPHYR ||
		       (c->format == CG_FORMAT_DETECT && cg_detect_format(c->content, c->content_len) == CG_FORMAT_ZEPHYR);
	return cg_detect_format(c->content, c->content_len) == CG_FORMAT_ZEPHYR;
}

/* A device-declared build id stands in for one the dump does not carry
 * (Zephyr dumps carry none), both at chunk 0 and at completion, so the
 * early and the full signature agree. */
static void crash_build_id(struct cg_crash *cr, const uint8_t *bid, size_t len)
{
	if (cr->build_id_len == 0 && len && len <= sizeof cr->build_id) {
		memcpy(cr->build_id, bid, len);
		cr->build_id_len = len;
	}
}

/* Places held under sig by open dumps of other devices than `device`. A
 * device's own open dump does not crowd out its next attempt: a device that
 * restarts an upload under a new dump id (Spotflow draws one per attempt)
 * would otherwise be answered `throttled` and erase the dump while the
 * abandoned attempt expires, and the crash would never be collected. */
static uint32_t sigres_others(struct cg_reasm *rs, const char *sig, const char *device)
{
	uint32_t n = sigres_count(rs, sig);
	struct device *d = NULL;
	HASH_FIND_STR(rs->devices, device, d);
	for (struct open_dump *o = d ? d->open : NULL; o && n; o = o->dev_next)
		if (strcmp(o->early_sig, sig) == 0)
			n--;
	return n;
}

/* Is the throttle window of sig full for a dump of `device`? Leaves its
 * statistics in rs->sigs (nrecent: the stored dumps inside the window). */
static int throttle_full(struct cg_reasm *rs, const char *sig, const char *device, bool *full)
{
	int rc = cg_sig_stats_load(rs->st, sig, &rs->sigs);
	if (rc != CG_OK)
		return rc;
	uint32_t n = cg_throttle_window(&rs->sigs, wall_ms(rs), rs->cfg->throttle.window_ms);
	*full = n + sigres_others(rs, sig, device) >= rs->cfg->throttle.max_identical;
	return CG_OK;
}

struct resend_scan {
	struct cg_reasm *rs;
	const struct cg_chunk *c;
	const char *sig;
	int64_t now;
	uint32_t budget;
	bool found;
	struct cg_dump_record rec;
};

static int resend_visit(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	struct resend_scan *s = ctx;
	uint64_t seq = 0, at = 0;
	(void)key, (void)klen;
	if (s->budget-- == 0)
		return 1;
	if (vlen != 16)
		return 0;
	for (int i = 0; i < 8; i++) {
		seq = (seq << 8) | val[i];
		at = (at << 8) | val[8 + i];
	}
	if (s->now - (int64_t)at >= (int64_t)s->rs->cfg->throttle.window_ms ||
	    cg_store_get_record(s->rs->st, seq, &s->rec) != CG_OK || s->rec.body_deleted ||
	    s->rec.status == CG_DUMP_THROTTLED || strcmp(s->rec.signature, s->sig) != 0)
		return 0;
	struct cg_dumpkey k;
	uint8_t *first = NULL;
	size_t flen = 0;
	cg_dumpkey_make(&k, s->rec.device, strlen(s->rec.device), s->rec.dump_id);
	if (cg_store_get_chunk(s->rs->st, &k, 0, &first, &flen) != CG_OK)
		return 0;
	size_t n = flen < s->c->content_len ? flen : s->c->content_len;
	s->found = memcmp(first, s->c->content, n) == 0;
	cg_store_free(first);
	return s->found;
}

/*
 * Could this chunk 0 start the same dump as one this device stored inside
 * the throttle window (same signature, same leading bytes)? Then it may be
 * the same dump sent again under a new id, which must be answered
 * `complete` and not counted as another occurrence (SPEC §3); only its
 * content, known at completion, can tell, so the early decision is left to
 * completion. Looks at no more than 64 of the device's stored dumps.
 */
static bool maybe_resend(struct cg_reasm *rs, const char *device, const struct cg_chunk *c,
			 const char *sig)
{
	uint8_t prefix[CG_POLICY_KEY_MAX];
	static const uint8_t nohash[16];
	size_t plen = cg_policy_key_content(prefix, device, nohash) - 16;
	struct resend_scan *s = malloc(sizeof *s);
	if (!s)
		return false;
	*s = (struct resend_scan){ .rs = rs, .c = c, .sig = sig, .now = wall_ms(rs), .budget = 64 };
	cg_store_scan_policy(rs->st, prefix, plen, resend_visit, s);
	bool found = s->found;
	free(s);
	return found;
}

/* Policy writes that go with a dump's record: its signature's statistics
 * (already updated in rs->sigs), the device under the signature, and for a
 * stored dump the group's quota count and its content hash. */
struct policy_puts {
	struct cg_kv kv[4];
	size_t n;
	uint8_t sigkey[CG_POLICY_KEY_MAX], devkey[CG_POLICY_KEY_MAX], qkey[CG_QUOTA_KEY_MAX];
	uint8_t ckey[CG_POLICY_KEY_MAX];
	uint8_t sigval[CG_SIG_STATS_MAX], devval[8], qval[8], cval[16];
};

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void puts_sig(struct cg_reasm *rs, struct policy_puts *pp, const char *sig, const char *device)
{
	size_t kl = cg_policy_key_sig(pp->sigkey, sig);
	size_t vl = cg_sig_stats_encode(&rs->sigs, pp->sigval);
	pp->kv[pp->n++] = (struct cg_kv){ pp->sigkey, kl, pp->sigval, vl };
	kl = cg_policy_key_sigdev(pp->devkey, sig, device);
	put_be64(pp->devval, (uint64_t)wall_ms(rs));
	pp->kv[pp->n++] = (struct cg_kv){ pp->devkey, kl, pp->devval, 8 };
}

/* A dump whose crash is already collected often enough: keep its record
 * and count, drop its bytes, and answer `throttled` once that is durable. */
static int throttle_commit(struct cg_reasm *rs, const struct cg_dumpkey *k, struct cg_dump_record *rec,
			   const struct cg_crash *cr, bool drop_chunks)
{
	struct policy_puts pp = { .n = 0 };
	cg_sig_stats_note(&rs->sigs, wall_ms(rs), false, rs->cfg->throttle.max_identical, cr);
	puts_sig(rs, &pp, rec->signature, rec->device);
	rec->status = CG_DUMP_THROTTLED;
	rec->received_at_ms = wall_ms(rs);
	int rc = cg_store_commit_dump_ex(rs->st, k, rec, drop_chunks, pp.kv, pp.n);
	if (rc != CG_OK)
		return rc;
	rs->dirty = true;
	rs->stats.dumps_throttled++;
	/* Answered at once, not after the sync: `throttled` does not report a
	 * dump the gateway keeps, so a crash before the sync loses at most an
	 * occurrence count, and in a crash storm every moment the answer waits
	 * is more chunks crossing the network. */
	send_ack(rs, rec->device, rec->dump_id, CG_ACK_THROTTLED, NULL, NULL, 0);
	return CG_OK;
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
	if (od->grp && od->grp->open)
		od->grp->open--;
	sigres_release(rs, od->early_sig);
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

/* Reasons are worded "<class>: details"; the class is the metric label. */
static const struct {
	const char *prefix, *name;
} reject_classes[CG_REJECT_CLASSES] = {
	[CG_REJECT_TOO_LARGE] = { "too large", "too_large" },
	[CG_REJECT_SIZE_MISMATCH] = { "size mismatch", "size_mismatch" },
	[CG_REJECT_BAD_CRC] = { "bad crc32", "bad_crc" },
	[CG_REJECT_CORRUPT] = { "corrupt", "corrupt" },
	[CG_REJECT_TOO_FRAGMENTED] = { "too fragmented", "too_fragmented" },
	[CG_REJECT_OUTSIDE_WINDOW] = { "outside the collection window", "outside_window" },
	[CG_REJECT_QUOTA] = { "quota reached", "quota" },
	[CG_REJECT_OTHER] = { NULL, "other" },
};

const char *cg_reject_class_name(enum cg_reject_class c)
{
	return c < CG_REJECT_CLASSES ? reject_classes[c].name : "other";
}

enum cg_reject_class cg_reject_classify(const char *reason)
{
	for (int c = 0; c < CG_REJECT_OTHER; c++) {
		size_t n = strlen(reject_classes[c].prefix);
		if (strncmp(reason, reject_classes[c].prefix, n) == 0)
			return (enum cg_reject_class)c;
	}
	return CG_REJECT_OTHER;
}

static void count_rejection(struct cg_reasm *rs, const char *reason)
{
	rs->stats.dumps_rejected++;
	rs->stats.rejected_by_class[cg_reject_classify(reason)]++;
}

/* Give up on an open dump: free its chunks, remember why, tell the device. */
static void od_reject(struct cg_reasm *rs, struct open_dump *od, const char *reason)
{
	od_drop(rs, od);
	count_rejection(rs, reason);
	log_warn("reasm", "rejected dump %s/%" PRIu64 ": %s", od->dev->id, od->dump_id, reason);
	remember_rejection(rs, &od->key, reason);
	send_ack(rs, od->dev->id, od->dump_id, CG_ACK_REJECTED, reason, NULL, 0);
	od_free(rs, od);
}

/* Reject a dump that has no open state (its first chunk is already bad). */
static void reject_new(struct cg_reasm *rs, const struct cg_dumpkey *k, const char *device,
		       uint64_t dump_id, const char *reason)
{
	count_rejection(rs, reason);
	if (answer_due(rs, k))
		log_warn("reasm", "rejected dump %s/%" PRIu64 ": %s", device, dump_id, reason);
	remember_rejection(rs, k, reason);
	send_ack(rs, device, dump_id, CG_ACK_REJECTED, reason, NULL, 0);
}

/* A minimal open record, for a dump whose record is missing (written by an
 * older version, or lost): what memory knows. */
static void record_fresh(struct cg_reasm *rs, struct cg_dump_record *rec, const char *device,
			 uint64_t dump_id)
{
	memset(rec, 0, sizeof *rec);
	snprintf(rec->device, sizeof rec->device, "%s", device);
	rec->dump_id = dump_id;
	rec->status = CG_DUMP_OPEN;
	rec->first_seen_ms = wall_ms(rs);
	rec->last_ordinal = -1;
}

/* The dump's content is already stored as record seq: point its key there,
 * drop its chunks, and answer `complete` once that is durable. */
static int od_alias(struct cg_reasm *rs, struct open_dump *od, uint64_t seq)
{
	struct cg_dump_record *orig = malloc(sizeof *orig);
	int rc = orig ? cg_store_get_record(rs->st, seq, orig) : CG_ERR_NOMEM;
	if (rc == CG_OK && (orig->body_deleted || orig->status == CG_DUMP_THROTTLED))
		rc = CG_ERR_NOT_FOUND;  /* nothing left to stand for this dump */
	free(orig);
	if (rc != CG_OK)
		return rc;
	struct cg_index_entry ie = { .status = CG_DUMP_STORED, .seq = seq, .at_ms = wall_ms(rs) };
	rc = cg_store_drop_open(rs->st, &od->key);
	if (rc == CG_OK)
		rc = cg_store_index_put(rs->st, &od->key, &ie);
	if (rc != CG_OK)
		return rc;
	rs->dirty = true;
	rs->stats.store_bytes -= od->cost;
	rs->stats.dumps_deduplicated++;
	log_info("reasm", "dump %s/%" PRIu64 ": same content as stored dump seq %" PRIu64 ", stored once",
		 od->dev->id, od->dump_id, seq);
	queue_final_ack(rs, od->dev->id, od->dump_id, CG_ACK_COMPLETE);
	od_free(rs, od);
	return CG_OK;
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
		record_fresh(rs, rec, od->dev->id, od->dump_id);
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
	crash_build_id(&rec->crash, rec->build_id, rec->build_id_len);
	cg_crash_signature(&rec->crash, body, od->bytes, rec->signature);
	uint8_t hash[EVP_MAX_MD_SIZE];
	unsigned int hlen = 0;
	if (rs->cfg)
		EVP_Digest(body, od->bytes, hash, &hlen, EVP_sha256(), NULL);
	free(body);
	rec->status = CG_DUMP_STORED;
	rec->received_at_ms = wall_ms(rs);
	rec->size = od->bytes;
	rec->chunks = od->nchunks;
	rec->last_ordinal = od->last_ordinal;

	struct policy_puts pp = { .n = 0 };
	bool throttled = false;
	if (rs->cfg) {
		record_policy(rs, rec, od->grp);
		/* Sent again under a new dump id (devices that draw one per
		 * attempt): the same content from the same device within the
		 * throttle window is the same dump (SPEC §3). */
		size_t cklen = cg_policy_key_content(pp.ckey, od->dev->id, hash);
		uint8_t *cv = NULL;
		size_t cvlen = 0;
		rc = cg_store_policy_get(rs->st, pp.ckey, cklen, &cv, &cvlen);
		if (rc == CG_OK && cvlen == 16) {
			uint64_t seq = 0;
			int64_t at = 0;
			for (int i = 0; i < 8; i++) {
				seq = (seq << 8) | cv[i];
				at = (int64_t)(((uint64_t)at << 8) | cv[8 + i]);
			}
			cg_store_free(cv);
			if (wall_ms(rs) - at < (int64_t)rs->cfg->throttle.window_ms &&
			    od_alias(rs, od, seq) == CG_OK)
				return;
		} else if (rc == CG_OK) {
			cg_store_free(cv);
		} else if (rc != CG_ERR_NOT_FOUND) {
			busy(rs, od->dev->id, od->dump_id, "store unavailable");
			return;
		}
		/* Duplicate throttling (SPEC §6.4). A dump admitted at chunk 0
		 * holds its place; any other is counted against the window now. */
		bool admitted = od->early_sig[0] && strcmp(od->early_sig, rec->signature) == 0;
		sigres_release(rs, od->early_sig);
		rc = throttle_full(rs, rec->signature, od->dev->id, &throttled);
		if (rc != CG_OK) {
			if (admitted && sigres_add(rs, rec->signature))
				snprintf(od->early_sig, sizeof od->early_sig, "%s", rec->signature);
			busy(rs, od->dev->id, od->dump_id, "store unavailable");
			return;
		}
		/* An admitted dump held its place; only stored dumps can have
		 * filled it since (another attempt of the same device). */
		if (admitted)
			throttled = rs->sigs.nrecent >= rs->cfg->throttle.max_identical;
		if (throttled) {
			if (throttle_commit(rs, &od->key, rec, &rec->crash, true) != CG_OK) {
				busy(rs, od->dev->id, od->dump_id, "store write failed");
				return;
			}
			log_info("reasm", "dump %s/%" PRIu64 " throttled: signature %s already collected %u "
				 "times in the window", od->dev->id, od->dump_id, rec->signature,
				 rs->cfg->throttle.max_identical);
			rs->stats.store_bytes -= od->cost;
			od_free(rs, od);
			return;
		}
		cg_sig_stats_note(&rs->sigs, rec->received_at_ms, true, rs->cfg->throttle.max_identical,
				  &rec->crash);
		puts_sig(rs, &pp, rec->signature, od->dev->id);
		const struct cg_group_config *gc = cfg_group(rs, od->grp);
		if (gc && gc->collection.max_dumps) {
			uint64_t n = 0;
			size_t qlen = cg_policy_key_quota(pp.qkey, gc);
			if (cg_policy_counter_get(rs->st, pp.qkey, qlen, &n) != CG_OK) {
				busy(rs, od->dev->id, od->dump_id, "store unavailable");
				return;
			}
			put_be64(pp.qval, n + 1);
			pp.kv[pp.n++] = (struct cg_kv){ pp.qkey, qlen, pp.qval, 8 };
		}
	}
	rc = cg_store_commit_dump_ex(rs->st, &od->key, rec, false, pp.kv, pp.n);
	if (rc != CG_OK) {
		log_error("reasm", "cannot commit dump %s/%" PRIu64 ": %s", od->dev->id, od->dump_id,
			  cg_strerror(rc));
		busy(rs, od->dev->id, od->dump_id, "store write failed");
		return;
	}
	if (rs->cfg) {
		/* The content entry names the record's seq, known only now; losing
		 * it in a crash costs one duplicate, never a dump. */
		size_t cklen = cg_policy_key_content(pp.ckey, od->dev->id, hash);
		put_be64(pp.cval, rec->seq);
		put_be64(pp.cval + 8, (uint64_t)rec->received_at_ms);
		struct cg_kv ckv = { pp.ckey, cklen, pp.cval, 16 };
		cg_store_policy_write(rs->st, &ckv, 1);
	}
	rs->dirty = true;
	rs->stats.dumps_completed++;
	log_info("reasm", "dump %s/%" PRIu64 " complete: %" PRIu64 " bytes in %u chunks, seq %" PRIu64,
		 od->dev->id, od->dump_id, od->bytes, od->nchunks, rec->seq);
	queue_final_ack(rs, od->dev->id, od->dump_id, CG_ACK_COMPLETE);
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
	/* The rest of a throttled or stored dump keeps arriving until the
	 * device hears the answer: no store read for each of those chunks. */
	if (answered_recently(rs, k))
		return true;
	struct cg_index_entry ie;
	int rc = cg_store_index_get(rs->st, k, &ie);
	if (rc == CG_OK && ie.status == CG_DUMP_THROTTLED) {
		if (answer_due_gap(rs, k, true))
			send_ack(rs, device, dump_id, CG_ACK_THROTTLED, NULL, NULL, 0);
		return true;
	}
	if (rc == CG_OK && ie.status != CG_DUMP_REJECTED) {
		/* Sent again after it was stored: stored once, answered `complete`
		 * once the store is synced (the commit may still be in flight). */
		rs->stats.dumps_duplicate++;
		if (answer_due_gap(rs, k, true))
			queue_final_ack(rs, device, dump_id, CG_ACK_COMPLETE);
		mark_stored(rs, k);
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
			record_fresh(rs, rec, od->dev->id, od->dump_id);
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

	/* Consent first (SPEC §6.2): nothing from a group without it is
	 * stored, not even this chunk; a dump opened before a reload took the
	 * consent away is dropped. */
	struct grp *grp = NULL;
	if (rs->cfg && !device_policy(rs, device, &grp)) {
		if (od) {
			od_drop(rs, od);
			od_free(rs, od);
		}
		rs->stats.consent_refused++;
		if (answer_due(rs, &k))
			send_ack(rs, device, c.dump_id, CG_ACK_CONSENT_REQUIRED,
				 grp ? "the device's group has not consented to crash collection" :
				       "no group with consent matches this device", NULL, 0);
		return CG_OK;
	}

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

	/* Collection window and quota (SPEC §6.3), decided when a dump opens:
	 * the dumps of the group being received count against the quota. */
	const struct cg_group_config *gc = rs->cfg ? cfg_group(rs, grp) : NULL;
	if (!od && gc) {
		uint8_t qkey[CG_QUOTA_KEY_MAX];
		uint64_t stored = 0;
		size_t qlen = cg_policy_key_quota(qkey, gc);
		if (gc->collection.max_dumps && cg_policy_counter_get(rs->st, qkey, qlen, &stored) != CG_OK) {
			busy(rs, device, c.dump_id, "store unavailable");
			return CG_ERR_STORE;
		}
		if (cg_collection_refusal(gc, wall_ms(rs), stored + (grp ? grp->open : 0), why, sizeof why)) {
			reject_new(rs, &k, device, c.dump_id, why);
			return CG_OK;
		}
	}

	/* Duplicate throttling at chunk 0 (SPEC §6.4): a Zephyr dump's header
	 * and registers lead it, so its signature is known now and a crash that
	 * is already collected often enough never crosses the network again. */
	char early_sig[17] = "";
	struct cg_crash early;
	if (rs->cfg && c.ordinal == 0 && (!od || !od->early_sig[0]) && early_candidate(&c) &&
	    cg_zephyr_early(c.content, c.content_len, &early) == CG_OK) {
		bool full = false;
		crash_build_id(&early, c.build_id, (c.present & CG_HAS_BUILD_ID) ? c.build_id_len : 0);
		cg_crash_signature(&early, NULL, 0, early_sig);
		if (throttle_full(rs, early_sig, device, &full) != CG_OK) {
			busy(rs, device, c.dump_id, "store unavailable");
			return CG_ERR_STORE;
		}
		if (full && maybe_resend(rs, device, &c, early_sig)) {
			full = false;          /* decided at completion, without a place */
			early_sig[0] = '\0';
		}
		if (full) {
			struct cg_dump_record *trec = &rs->scratch;
			rc = od ? cg_store_get_open(rs->st, &k, trec) : CG_ERR_NOT_FOUND;
			if (rc != CG_OK)
				record_fresh(rs, trec, device, c.dump_id);
			record_chunk0(trec, &c);
			trec->has_crash = true;
			trec->crash = early;
			snprintf(trec->signature, sizeof trec->signature, "%s", early_sig);
			if (trec->has_total_size)
				trec->size = trec->total_size;
			record_policy(rs, trec, grp);
			if (throttle_commit(rs, &k, trec, &early, od != NULL) != CG_OK) {
				busy(rs, device, c.dump_id, "store write failed");
				return CG_ERR_STORE;
			}
			rs->stats.dumps_throttled_early++;
			if (od) {
				rs->stats.store_bytes -= od->cost;
				od_free(rs, od);
			}
			return CG_OK;
		}
	}

	/* Budgets: nothing is written that the store or memory cannot hold. */
	uint64_t cost = c.content_len + CHUNK_OVERHEAD;
	const char *refuse = NULL;
	if (rs->stats.store_bytes + cost > rs->opts.max_store_bytes)
		refuse = "gateway storage full";
	if (refuse)   /* delivered dumps' bytes can make room: at the next tick */
		rs->evict_wanted = true;
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
		od->grp = grp;
		if (grp)
			grp->open++;
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
			record_fresh(rs, rec, device, c.dump_id);
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
		/* The admission survives a restart with the open record. */
		if (early_sig[0])
			snprintf(rec->signature, sizeof rec->signature, "%s", early_sig);
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
	if (early_sig[0] && sigres_add(rs, early_sig))
		snprintf(od->early_sig, sizeof od->early_sig, "%s", early_sig);
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
		struct grp *grp;
		if (rs->cfg)
			device_policy(rs, device, &grp);   /* a new device gets its consent signal */
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
			queue_final_ack(rs, acks[i].device, acks[i].dump_id, acks[i].status);
	} else {
		for (size_t i = 0; i < nacks; i++)
			send_ack(rs, acks[i].device, acks[i].dump_id, acks[i].status, NULL, NULL, 0);
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
		/* A finished dump's entry outlives its gap, so that the next gap
		 * can double. */
		int64_t keep = r->closed ? 2 * ACK_REPEAT_MAX_MS : r->gap;
		if (now - r->at >= keep || now < r->at) {
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
	if (rs->cfg)
		consent_tick(rs);
	bool retention = rs->cfg && (rs->last_retention == INT64_MIN || rs->evict_wanted ||
				     now - rs->last_retention >= RETENTION_EVERY_MS);
	pthread_mutex_unlock(&rs->lock);
	flush_outbox(rs);
	if (retention)
		cg_reasm_retention(rs);
}

void cg_reasm_set_config(struct cg_reasm *rs, const struct cg_config *cfg)
{
	pthread_mutex_lock(&rs->lock);
	rs->cfg = cfg;
	rs->gen++;
	rs->stats.config_generation = rs->gen;
	if (cfg) {
		rs->opts.max_dump_bytes = cfg->limits.max_dump_bytes;
		rs->opts.max_chunk_bytes = cfg->limits.max_chunk_bytes;
		rs->opts.reassembly_timeout_ms = cfg->limits.reassembly_timeout_ms;
		rs->opts.max_store_bytes = cfg->limits.max_store_bytes;
		rs->opts.max_open_dumps = cfg->limits.max_open_dumps;
		rs->opts.max_open_dumps_per_device = cfg->limits.max_open_dumps_per_device;
	}
	pthread_mutex_unlock(&rs->lock);
}

void cg_reasm_set_wall_clock(struct cg_reasm *rs, cg_clock_fn wall, void *ctx)
{
	pthread_mutex_lock(&rs->lock);
	rs->wall = wall ? wall : real_wall;
	rs->wall_ctx = wall ? ctx : NULL;
	pthread_mutex_unlock(&rs->lock);
}

/*
 * Retention (SPEC §6.6). The record pass runs without the lock (it only
 * deletes what is old; the reassembler never rewrites a committed record),
 * so ingest does not wait for it; the policy pass, whose signature counts
 * the reassembler updates, runs under it.
 */
void cg_reasm_retention(struct cg_reasm *rs)
{
	pthread_mutex_lock(&rs->lock);
	const struct cg_config *cfg = rs->cfg;
	if (!cfg || rs->retention_running) {
		pthread_mutex_unlock(&rs->lock);
		return;
	}
	rs->retention_running = true;
	rs->last_retention = now_ms(rs);
	int64_t wall = wall_ms(rs);
	uint64_t dumps_ms = cfg->retention.dumps_ms, history_ms = cfg->retention.history_ms;
	uint64_t window_ms = cfg->throttle.window_ms;
	pthread_mutex_unlock(&rs->lock);

	struct cg_retention_result res = { 0 };
	int rc = cg_retention_sweep_records(rs->st, wall, dumps_ms, history_ms, CHUNK_OVERHEAD, &res);
	/* Above 90 % of the budget, the bytes of dumps every upstream already
	 * has go first (oldest first, down to 80 %): a gateway whose upstreams
	 * are up never refuses devices for what it has delivered. Undelivered
	 * dumps are never evicted; devices hear `busy` instead. */
	pthread_mutex_lock(&rs->lock);
	uint64_t used = rs->stats.store_bytes, budget = rs->opts.max_store_bytes;
	rs->evict_wanted = false;
	pthread_mutex_unlock(&rs->lock);
	if (rc == CG_OK && used > budget / 10 * 9) {
		struct cg_retention_result ev = { 0 };
		rc = cg_evict_delivered(rs->st, used - budget / 10 * 8, CHUNK_OVERHEAD, &ev);
		if (ev.bodies_deleted)
			log_info("retention", "store at %" PRIu64 " of %" PRIu64 " bytes: deleted the bytes of %"
				 PRIu64 " forwarded dumps (%" PRIu64 " bytes)", used, budget, ev.bodies_deleted,
				 ev.bytes_freed);
		res.bodies_deleted += ev.bodies_deleted;
		res.bytes_freed += ev.bytes_freed;
	}

	pthread_mutex_lock(&rs->lock);
	if (rc == CG_OK)
		rc = cg_retention_sweep_policy(rs->st, wall, history_ms, window_ms, &res);
	/* Devices not heard from for the history period: no more consent signals. */
	struct seen *e, *tmp;
	HASH_ITER(hh, rs->seen, e, tmp) {
		if (wall - e->last_wall < (int64_t)history_ms)
			continue;
		uint8_t key[CG_POLICY_KEY_MAX];
		struct cg_kv kv = { key, cg_policy_key_device(key, e->id), NULL, 0 };
		if (cg_store_policy_write(rs->st, &kv, 1) != CG_OK)
			break;
		HASH_DEL(rs->seen, e);
		free(e);
		rs->nseen--;
		res.devices_forgotten++;
	}
	rs->stats.devices_seen = rs->nseen;
	rs->stats.store_bytes -= res.bytes_freed > rs->stats.store_bytes ? rs->stats.store_bytes :
									   res.bytes_freed;
	rs->stats.retention_bodies += res.bodies_deleted;
	rs->stats.retention_records += res.records_deleted;
	if (res.bodies_deleted || res.records_deleted || res.signatures_deleted || res.devices_forgotten)
		rs->dirty = true;
	rs->retention_running = false;
	pthread_mutex_unlock(&rs->lock);
	if (rc != CG_OK)
		log_error("retention", "pass stopped: %s; it runs again in a minute", cg_strerror(rc));
	if (res.bodies_deleted || res.records_deleted || res.signatures_deleted || res.devices_forgotten)
		log_info("retention", "deleted the bytes of %" PRIu64 " dumps (%" PRIu64 " bytes), %" PRIu64
			 " history records, %" PRIu64 " signatures; forgot %" PRIu64 " devices",
			 res.bodies_deleted, res.bytes_freed, res.records_deleted, res.signatures_deleted,
			 res.devices_forgotten);
}

int cg_reasm_purge(struct cg_reasm *rs, const struct cg_dump_record *rec)
{
	struct cg_dump_record *was = malloc(sizeof *was);
	if (!was)
		return CG_ERR_NOMEM;
	pthread_mutex_lock(&rs->lock);
	int rc = cg_store_delete_record(rs->st, rec, was);
	if (rc == CG_OK) {
		/* What recovery counts for a committed dump with its bytes, from
		 * the record as it was (retention may have taken the bytes). */
		uint64_t cost = was->body_deleted || was->status == CG_DUMP_THROTTLED
					? 0 : was->size + (uint64_t)was->chunks * CHUNK_OVERHEAD;
		rs->stats.store_bytes -= cost > rs->stats.store_bytes ? rs->stats.store_bytes : cost;
		rs->stats.dumps_purged++;
		rs->dirty = true;
	}
	pthread_mutex_unlock(&rs->lock);
	if (rc == CG_OK)
		log_info("reasm", "dump %s/%" PRIu64 " (seq %" PRIu64 ") purged by the operator", was->device,
			 was->dump_id, was->seq);
	free(was);
	if (rc == CG_ERR_NOT_FOUND)   /* retention got there first: gone all the same */
		return CG_OK;
	return rc;
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
	if (rs->cfg) {
		const struct cg_group_config *g = cg_config_group_for(rs->cfg, rec->device);
		od->grp = g ? grp_intern(rs, g->name) : NULL;
		if (od->grp)
			od->grp->open++;
		/* Admitted at chunk 0 before the restart: it keeps its place. */
		if (rec->signature[0] && sigres_add(rs, rec->signature))
			snprintf(od->early_sig, sizeof od->early_sig, "%s", rec->signature);
	}
	struct recover_ctx r = { rs, od };
	if (cg_store_each_chunk(rs->st, k, recover_chunk, &r) != CG_OK)
		log_error("reasm", "dump %s/%" PRIu64 ": cannot read its chunks back", rec->device, rec->dump_id);
	return 0;
}

static int recover_record(void *ctx, const struct cg_dump_record *rec)
{
	struct cg_reasm *rs = ctx;
	/* Forwarded dumps keep their bytes until retention or eviction: they
	 * count, as they did before the restart. */
	if ((rec->status == CG_DUMP_STORED || rec->status == CG_DUMP_FORWARDED ||
	     rec->status == CG_DUMP_DEAD_LETTER) && !rec->body_deleted)
		rs->stats.store_bytes += rec->size + (uint64_t)rec->chunks * CHUNK_OVERHEAD;
	return 0;
}

static int recover_seen(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	struct cg_reasm *rs = ctx;
	char dev[CG_DEVICE_ID_MAX + 1];
	if (klen < 2 || klen - 1 > CG_DEVICE_ID_MAX || vlen != 16)
		return 0;
	memcpy(dev, key + 1, klen - 1);
	dev[klen - 1] = '\0';
	if (!cg_device_id_valid(dev, klen - 1))
		return 0;
	uint64_t first = 0, last = 0;
	for (int i = 0; i < 8; i++) {
		first = (first << 8) | val[i];
		last = (last << 8) | val[8 + i];
	}
	return seen_add(rs, dev, (int64_t)first, (int64_t)last) ? 0 : 1;
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
	rs->wall = real_wall;
	rs->cfg = opts->cfg;
	rs->gen = 1;
	rs->stats.config_generation = 1;
	rs->last_retention = INT64_MIN;
	pthread_mutex_init(&rs->lock, NULL);
	pthread_cond_init(&rs->cond, NULL);

	pthread_mutex_lock(&rs->lock);
	if (rs->cfg)   /* every device seen before gets its consent signal again */
		cg_store_scan_policy(st, "v", 1, recover_seen, rs);
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
	FREE_ALL(rs->devices, struct device);
	FREE_ALL(rs->recent, struct recent);
	FREE_ALL(rs->rejected, struct rejected);
	FREE_ALL(rs->seen, struct seen);
	FREE_ALL(rs->sigres, struct sigres);
	FREE_ALL(rs->grps, struct grp);
	for (size_t i = 0; i < rs->nout; i++)
		free(rs->outbox[i]);
	free(rs->outbox);
	free(rs->pending);
	pthread_cond_destroy(&rs->cond);
	pthread_mutex_destroy(&rs->lock);
	free(rs);
}
