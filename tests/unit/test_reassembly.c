/*
 * Reassembly against a real RocksDB in a temp dir, with an injected clock and
 * a sink that records every acknowledgement.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reassembly.h"
#include "store.h"

#define MAX_ACKS 256

struct rec_ack {
	char device[CG_DEVICE_ID_MAX + 1];
	uint64_t dump_id;
	uint32_t status;
	char reason[CG_PROTO_MAX_REASON + 1];
	struct cg_range missing[64];
	size_t nmissing;
};

struct fx {
	char dir[64];
	struct cg_store *st;
	struct cg_reasm *rs;
	struct cg_reasm_opts opts;
	int64_t now;
	struct rec_ack acks[MAX_ACKS];
	size_t nacks;
};

static int64_t fake_clock(void *ctx)
{
	return ((struct fx *)ctx)->now;
}

static void sink(void *ctx, const char *device, const uint8_t *msg, size_t len)
{
	struct fx *f = ctx;
	assert_true(f->nacks < MAX_ACKS);
	struct rec_ack *a = &f->acks[f->nacks++];
	struct cg_ack d = { .missing = a->missing, .missing_cap = 64 };
	assert_int_equal(cg_ack_decode(msg, len, &d), CG_OK);
	snprintf(a->device, sizeof a->device, "%s", device);
	a->dump_id = d.dump_id;
	a->status = d.status;
	a->nmissing = d.n_missing;
	memcpy(a->reason, d.reason ? d.reason : "", d.reason ? d.reason_len : 0);
	a->reason[d.reason ? d.reason_len : 0] = '\0';
}

static void fx_start(struct fx *f)
{
	char err[256];
	assert_int_equal(cg_store_open(f->dir, &f->st, err, sizeof err), CG_OK);
	struct cg_ack_sink s = { .send = sink, .ctx = f };
	assert_int_equal(cg_reasm_create(&f->opts, f->st, &s, fake_clock, f, &f->rs), CG_OK);
}

static void fx_stop(struct fx *f)
{
	cg_reasm_destroy(f->rs);
	cg_store_close(f->st);
	f->rs = NULL;
	f->st = NULL;
}

static int rm_entry(const char *p, const struct stat *s, int fl, struct FTW *w)
{
	(void)s, (void)fl, (void)w;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/cg-reasm-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->opts = (struct cg_reasm_opts){
		.gateway_id = "gw-test",
		.max_dump_bytes = 1 << 20,
		.max_chunk_bytes = 4096,
		.reassembly_timeout_ms = 600000,
		.max_store_bytes = 8 << 20,
		.max_open_dumps = 8,
		.max_open_dumps_per_device = 2,
	};
	f->now = 1700000000000;
	fx_start(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	fx_stop(f);
	nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static uint8_t *make_dump(size_t n, uint32_t seed)
{
	uint8_t *d = malloc(n);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		d[i] = (uint8_t)(seed >> 16);
	}
	return d;
}

struct dump {
	const char *device;
	uint64_t id;
	const uint8_t *data;
	size_t size, csz;
	uint32_t n;
	bool with_total, with_crc;
	uint32_t crc_override;
	bool corrupt_crc;
};

static void send_ord(struct fx *f, const struct dump *d, uint32_t ord)
{
	size_t off = (size_t)ord * d->csz;
	size_t len = d->size - off < d->csz ? d->size - off : d->csz;
	struct cg_chunk c = { .dump_id = d->id, .ordinal = ord, .content = d->data + off,
			      .content_len = len, .last = ord + 1 == d->n };
	if (ord == 0 && d->with_total) {
		c.present |= CG_HAS_TOTAL_SIZE | CG_HAS_FORMAT;
		c.total_size = d->size;
		c.format = CG_FORMAT_RAW;
	}
	if (c.last && d->with_crc) {
		c.present |= CG_HAS_CRC32;
		c.crc32 = cg_crc32(0, d->data, d->size) ^ (d->corrupt_crc ? 1u : 0u);
	}
	uint8_t buf[8192];
	size_t n = 0;
	assert_int_equal(cg_chunk_encode(&c, 0, buf, sizeof buf, &n), CG_OK);
	assert_int_equal(cg_reasm_chunk(f->rs, d->device, buf, n), CG_OK);
}

static struct dump mk(const char *dev, uint64_t id, const uint8_t *data, size_t size, size_t csz)
{
	struct dump d = { .device = dev, .id = id, .data = data, .size = size, .csz = csz,
			  .n = (uint32_t)((size + csz - 1) / csz), .with_total = true, .with_crc = true };
	return d;
}

static const struct rec_ack *last_ack(struct fx *f)
{
	assert_true(f->nacks > 0);
	return &f->acks[f->nacks - 1];
}

static int count_status(struct fx *f, uint32_t status)
{
	int n = 0;
	for (size_t i = 0; i < f->nacks; i++)
		n += f->acks[i].status == status;
	return n;
}

static void assert_stored(struct fx *f, const struct dump *d)
{
	struct cg_dumpkey k;
	cg_dumpkey_make(&k, d->device, strlen(d->device), d->id);
	struct cg_index_entry ie;
	assert_int_equal(cg_store_index_get(f->st, &k, &ie), CG_OK);
	assert_int_equal(ie.status, CG_DUMP_STORED);
	uint8_t *body;
	size_t len;
	assert_int_equal(cg_store_get_body(f->st, ie.seq, &body, &len), CG_OK);
	assert_int_equal(len, d->size);
	assert_memory_equal(body, d->data, d->size);
	free(body);
	struct cg_dump_record rec;
	assert_int_equal(cg_store_get_record(f->st, ie.seq, &rec), CG_OK);
	assert_string_equal(rec.device, d->device);
	assert_int_equal(rec.dump_id, d->id);
	assert_int_equal(rec.size, d->size);
	assert_int_equal(rec.chunks, d->n);
}

static int count_chunks_cb(void *ctx, uint32_t o, const uint8_t *d, size_t l)
{
	(void)o, (void)d, (void)l;
	(*(int *)ctx)++;
	return 0;
}

/* Chunks the store holds for one dump (a stored dump keeps its chunks). */
static int chunks_of(struct fx *f, const char *dev, uint64_t id)
{
	struct cg_dumpkey k;
	cg_dumpkey_make(&k, dev, strlen(dev), id);
	int n = 0;
	cg_store_each_chunk(f->st, &k, count_chunks_cb, &n);
	return n;
}

static void test_in_order_complete_after_commit(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(10000, 1);
	struct dump d = mk("dev-1", 42, data, 10000, 1000);
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	/* Durable first, then `complete`: nothing is answered before the sync. */
	assert_int_equal(count_status(f, CG_ACK_COMPLETE), 0);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(count_status(f, CG_ACK_COMPLETE), 1);
	assert_int_equal(last_ack(f)->dump_id, 42);
	assert_string_equal(last_ack(f)->device, "dev-1");
	assert_stored(f, &d);
	assert_int_equal(chunks_of(f, "dev-1", 42), 10);
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.open_dumps, 0);
	assert_int_equal(s.dumps_completed, 1);
	assert_int_equal(s.store_bytes, 10000 + 10 * (CG_DUMPKEY_MAX + 4));
	free(data);
}

static void test_shuffled_and_repeated(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(33333, 2);
	struct dump d = mk("dev-2", 7, data, 33333, 512);
	uint32_t order[100];
	for (uint32_t i = 0; i < d.n; i++)
		order[i] = i;
	uint32_t seed = 99;
	for (uint32_t i = d.n; i > 1; i--) {
		seed = seed * 1664525u + 1013904223u;
		uint32_t j = seed % i, t = order[i - 1];
		order[i - 1] = order[j];
		order[j] = t;
	}
	for (uint32_t i = 0; i < d.n; i++) {
		send_ord(f, &d, order[i]);
		if (i % 3 == 0 && i + 1 < d.n)
			send_ord(f, &d, order[i]); /* identical repeat: harmless */
	}
	cg_reasm_commit(f->rs);
	assert_int_equal(count_status(f, CG_ACK_COMPLETE), 1);
	assert_int_equal(count_status(f, CG_ACK_REJECTED), 0);
	assert_stored(f, &d);
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_true(s.chunks_repeated > 0);
	free(data);
}

static void test_conflicting_repeat_rejects(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(4000, 3);
	struct dump d = mk("dev-3", 9, data, 4000, 1000);
	send_ord(f, &d, 0);
	send_ord(f, &d, 1);
	uint8_t *other = make_dump(4000, 4);
	struct dump bad = d;
	bad.data = other;
	send_ord(f, &bad, 1);
	assert_int_equal(last_ack(f)->status, CG_ACK_REJECTED);
	assert_non_null(strstr(last_ack(f)->reason, "corrupt"));
	assert_int_equal(chunks_of(f, "dev-3", 9), 0);
	/* Later chunks of the rejected dump are answered, not stored. */
	send_ord(f, &d, 2);
	assert_int_equal(last_ack(f)->status, CG_ACK_REJECTED);
	assert_int_equal(chunks_of(f, "dev-3", 9), 0);
	free(data);
	free(other);
}

static void test_missing_then_resent(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(8000, 5);
	struct dump d = mk("dev-4", 11, data, 8000, 1000);
	for (uint32_t i = 0; i < d.n; i++) {
		if (i != 2 && i != 4 && i != 5)
			send_ord(f, &d, i);
	}
	const struct rec_ack *a = last_ack(f);
	assert_int_equal(a->status, CG_ACK_INCOMPLETE);
	assert_int_equal(a->nmissing, 2);
	assert_int_equal(a->missing[0].first, 2);
	assert_int_equal(a->missing[0].last, 2);
	assert_int_equal(a->missing[1].first, 4);
	assert_int_equal(a->missing[1].last, 5);
	/* hello while open: asked again */
	uint8_t hb[32];
	size_t hn;
	struct cg_hello h = { 0 };
	assert_int_equal(cg_hello_encode(&h, hb, sizeof hb, &hn), CG_OK);
	size_t before = f->nacks;
	cg_reasm_hello(f->rs, "dev-4", hb, hn);
	assert_int_equal(f->nacks, before + 1);
	assert_int_equal(last_ack(f)->status, CG_ACK_INCOMPLETE);
	send_ord(f, &d, 2);
	send_ord(f, &d, 4);
	send_ord(f, &d, 5);
	cg_reasm_commit(f->rs);
	assert_int_equal(last_ack(f)->status, CG_ACK_COMPLETE);
	assert_stored(f, &d);
	free(data);
}

static void test_hello_open_ended_when_last_unseen(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(5000, 6);
	struct dump d = mk("dev-5", 12, data, 5000, 1000);
	send_ord(f, &d, 0);
	send_ord(f, &d, 2);
	uint8_t hb[32];
	size_t hn;
	struct cg_hello h = { 0 };
	cg_hello_encode(&h, hb, sizeof hb, &hn);
	cg_reasm_hello(f->rs, "dev-5", hb, hn);
	const struct rec_ack *a = last_ack(f);
	assert_int_equal(a->status, CG_ACK_INCOMPLETE);
	assert_int_equal(a->nmissing, 2);
	assert_int_equal(a->missing[0].first, 1);
	assert_int_equal(a->missing[0].last, 1);
	assert_int_equal(a->missing[1].first, 3);
	assert_int_equal(a->missing[1].last, UINT32_MAX);
	free(data);
}

static void test_limits_reject(void **state)
{
	struct fx *f = *state;
	/* a chunk above max_chunk_bytes */
	uint8_t *big = make_dump(5000, 7);
	struct dump d1 = mk("dev-6", 1, big, 5000, 5000);
	send_ord(f, &d1, 0);
	assert_int_equal(last_ack(f)->status, CG_ACK_REJECTED);
	assert_non_null(strstr(last_ack(f)->reason, "too large"));
	/* total_size above max_dump_bytes */
	uint8_t *data = make_dump(4000, 8);
	struct cg_chunk c = { .dump_id = 2, .ordinal = 0, .content = data, .content_len = 100,
			      .present = CG_HAS_TOTAL_SIZE, .total_size = 2u << 20 };
	uint8_t buf[512];
	size_t n;
	cg_chunk_encode(&c, 0, buf, sizeof buf, &n);
	cg_reasm_chunk(f->rs, "dev-6", buf, n);
	assert_int_equal(last_ack(f)->status, CG_ACK_REJECTED);
	/* the dump grows beyond max_dump_bytes without declaring it */
	f->opts.max_dump_bytes = 3000;
	fx_stop(f);
	fx_start(f);
	struct dump d3 = mk("dev-7", 3, data, 4000, 1000);
	d3.with_total = false;
	for (uint32_t i = 0; i < 4; i++)
		send_ord(f, &d3, i);
	assert_int_equal(last_ack(f)->status, CG_ACK_REJECTED);
	assert_int_equal(chunks_of(f, "dev-7", 3), 0);
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);   /* counted per class since the restart */
	assert_int_equal(s.rejected_by_class[CG_REJECT_TOO_LARGE], 1);
	assert_int_equal(s.dumps_rejected, 1);
	free(big);
	free(data);
}

static void test_crc_and_size_mismatch(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 9);
	struct dump d = mk("dev-8", 5, data, 3000, 1000);
	d.corrupt_crc = true;
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	assert_int_equal(last_ack(f)->status, CG_ACK_REJECTED);
	assert_non_null(strstr(last_ack(f)->reason, "crc"));
	assert_int_equal(chunks_of(f, "dev-8", 5), 0);

	struct cg_chunk c = { .dump_id = 6, .ordinal = 0, .content = data, .content_len = 100,
			      .present = CG_HAS_TOTAL_SIZE, .total_size = 150, .last = true };
	uint8_t buf[512];
	size_t n;
	cg_chunk_encode(&c, 0, buf, sizeof buf, &n);
	cg_reasm_chunk(f->rs, "dev-8", buf, n);
	assert_int_equal(last_ack(f)->status, CG_ACK_REJECTED);
	assert_non_null(strstr(last_ack(f)->reason, "size mismatch"));
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.rejected_by_class[CG_REJECT_BAD_CRC], 1);
	assert_int_equal(s.rejected_by_class[CG_REJECT_SIZE_MISMATCH], 1);
	assert_int_equal(s.rejected_by_class[CG_REJECT_OTHER], 0);
	assert_string_equal(cg_reject_class_name(CG_REJECT_BAD_CRC), "bad_crc");
	assert_int_equal(cg_reject_classify("quota reached: group g"), CG_REJECT_QUOTA);
	assert_int_equal(cg_reject_classify("outside the collection window: x"), CG_REJECT_OUTSIDE_WINDOW);
	assert_int_equal(cg_reject_classify("something new"), CG_REJECT_OTHER);
	free(data);
}

static void test_chunk_beyond_last_and_two_lasts(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 10);
	struct dump d = mk("dev-9", 5, data, 3000, 1000);
	send_ord(f, &d, 2); /* last */
	struct dump longer = mk("dev-9", 5, data, 3000, 500); /* ordinal 5 > last 2 */
	longer.with_total = false;
	send_ord(f, &longer, 4);
	assert_int_equal(last_ack(f)->status, CG_ACK_REJECTED);
	assert_non_null(strstr(last_ack(f)->reason, "beyond"));
	free(data);
}

static void test_busy_limits(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 11);
	for (uint64_t id = 1; id <= 3; id++) {
		struct dump d = mk("dev-10", id, data, 3000, 1000);
		send_ord(f, &d, 0);
	}
	assert_int_equal(last_ack(f)->status, CG_ACK_BUSY);
	assert_int_equal(last_ack(f)->dump_id, 3);
	assert_non_null(strstr(last_ack(f)->reason, "device"));
	/* the global bound: 8 open at most */
	char dev[16];
	for (int i = 0; i < 7; i++) {
		snprintf(dev, sizeof dev, "g-%d", i);
		struct dump d = mk(dev, 1, data, 3000, 1000);
		send_ord(f, &d, 0);
	}
	assert_int_equal(last_ack(f)->status, CG_ACK_BUSY);
	assert_string_equal(last_ack(f)->device, "g-6");
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.open_dumps, 8);
	assert_int_equal(s.busy, 2);
	free(data);
}

static void test_store_full_busy(void **state)
{
	struct fx *f = *state;
	f->opts.max_store_bytes = 2000 + 2 * (CG_DUMPKEY_MAX + 4) + 500;
	fx_stop(f);
	fx_start(f);
	uint8_t *data = make_dump(2000, 12);
	struct dump d = mk("dev-11", 1, data, 2000, 1000);
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	cg_reasm_commit(f->rs);
	assert_int_equal(last_ack(f)->status, CG_ACK_COMPLETE);
	struct dump d2 = mk("dev-11", 2, data, 2000, 1000);
	send_ord(f, &d2, 0);
	assert_int_equal(last_ack(f)->status, CG_ACK_BUSY);
	assert_non_null(strstr(last_ack(f)->reason, "full"));
	/* the full store survives a restart: the count is rebuilt from the store */
	fx_stop(f);
	fx_start(f);
	send_ord(f, &d2, 0);
	assert_int_equal(last_ack(f)->status, CG_ACK_BUSY);
	free(data);
}

static void test_timeout_expires(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 13);
	struct dump d = mk("dev-12", 1, data, 3000, 1000);
	send_ord(f, &d, 0);
	send_ord(f, &d, 1);
	assert_int_equal(chunks_of(f, "dev-12", 1), 2);
	f->now += 599999;
	cg_reasm_tick(f->rs);
	assert_int_equal(chunks_of(f, "dev-12", 1), 2);
	f->now += 2;
	cg_reasm_tick(f->rs);
	assert_int_equal(chunks_of(f, "dev-12", 1), 0);
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.dumps_expired, 1);
	assert_int_equal(s.open_dumps, 0);
	assert_int_equal(s.store_bytes, 0);
	free(data);
}

static void test_duplicate_dump_stored_once(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 14);
	struct dump d = mk("dev-13", 77, data, 3000, 1000);
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	cg_reasm_commit(f->rs);
	f->now += 5000;
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	cg_reasm_commit(f->rs);
	assert_int_equal(count_status(f, CG_ACK_COMPLETE), 2); /* once per second at most */
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.dumps_completed, 1);
	assert_int_equal(s.store_bytes, 3000 + 3 * (CG_DUMPKEY_MAX + 4));
	assert_int_equal(chunks_of(f, "dev-13", 77), 3); /* stored once */
	/* every chunk sent again counts, also those answered from memory */
	assert_int_equal(s.dumps_duplicate, 3);
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.dumps_duplicate, 6);
	free(data);
}

static void test_restart_recovers_open_dump(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(6000, 15);
	struct dump d = mk("dev-14", 5, data, 6000, 1000);
	send_ord(f, &d, 0);
	send_ord(f, &d, 1);
	send_ord(f, &d, 5); /* last */
	fx_stop(f);         /* as after a kill: nothing but the store survives */
	fx_start(f);
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.open_dumps, 1);
	assert_int_equal(s.store_bytes, 3000 + 3 * (CG_DUMPKEY_MAX + 4));
	uint8_t hb[32];
	size_t hn;
	struct cg_hello h = { 0 };
	cg_hello_encode(&h, hb, sizeof hb, &hn);
	cg_reasm_hello(f->rs, "dev-14", hb, hn);
	const struct rec_ack *a = last_ack(f);
	assert_int_equal(a->status, CG_ACK_INCOMPLETE);
	assert_int_equal(a->nmissing, 1);
	assert_int_equal(a->missing[0].first, 2);
	assert_int_equal(a->missing[0].last, 4);
	for (uint32_t i = 2; i <= 4; i++)
		send_ord(f, &d, i);
	cg_reasm_commit(f->rs);
	assert_int_equal(last_ack(f)->status, CG_ACK_COMPLETE);
	assert_stored(f, &d);
	free(data);
}

static void test_restart_completes_written_dump(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(2000, 16);
	/* As if killed after the last chunk's write and before the commit. */
	fx_stop(f);
	char err[256];
	assert_int_equal(cg_store_open(f->dir, &f->st, err, sizeof err), CG_OK);
	struct cg_dumpkey k;
	cg_dumpkey_make(&k, "dev-15", 6, 3);
	struct cg_dump_record rec = { .dump_id = 3, .last_ordinal = 1, .first_seen_ms = f->now };
	snprintf(rec.device, sizeof rec.device, "dev-15");
	assert_int_equal(cg_store_put_chunk(f->st, &k, 0, data, 1000, &rec), CG_OK);
	assert_int_equal(cg_store_put_chunk(f->st, &k, 1, data + 1000, 1000, NULL), CG_OK);
	cg_store_close(f->st);
	fx_start(f);
	struct dump d = mk("dev-15", 3, data, 2000, 1000);
	assert_stored(f, &d);
	free(data);
}

static void test_malformed_counted(void **state)
{
	struct fx *f = *state;
	const uint8_t junk[] = { 0xa1, 0x00 };
	cg_reasm_chunk(f->rs, "dev-16", junk, sizeof junk);
	cg_reasm_chunk(f->rs, "dev-16", junk, 0);
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.messages_malformed, 2);
	assert_int_equal(f->nacks, 0);
	assert_int_equal(chunks_of(f, "dev-16", 0), 0);
}

/* A duplicate of a dump whose commit is not yet synced must not be
 * answered `complete` before the sync. */
static void test_duplicate_complete_waits_for_sync(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 17);
	struct dump d = mk("dev-17", 1, data, 3000, 1000);
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	send_ord(f, &d, 2); /* the sender's "last chunk again" */
	assert_int_equal(count_status(f, CG_ACK_COMPLETE), 0);
	cg_reasm_commit(f->rs);
	assert_true(count_status(f, CG_ACK_COMPLETE) >= 1);
	free(data);
}

/* A bad chunk for a stored dump must not touch its record. */
static void test_bad_chunk_cannot_unstore(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 18);
	struct dump d = mk("dev-18", 4, data, 3000, 1000);
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	cg_reasm_commit(f->rs);
	uint8_t *big = make_dump(5000, 19);
	struct dump bad = mk("dev-18", 4, big, 5000, 5000);
	send_ord(f, &bad, 0);
	cg_reasm_commit(f->rs);
	assert_int_equal(last_ack(f)->status, CG_ACK_COMPLETE);
	assert_stored(f, &d);
	f->now += 700000; /* past the reassembly timeout: still stored once */
	f->nacks = 0;
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	cg_reasm_commit(f->rs);
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_int_equal(s.dumps_completed, 1);
	assert_int_equal(last_ack(f)->status, CG_ACK_COMPLETE);
	free(data);
	free(big);
}

/* The `last` flag may first arrive on a repeat of the highest chunk. */
static void test_last_flag_on_repeat(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 20);
	struct dump d = mk("dev-19", 2, data, 3000, 1000);
	d.with_crc = false;
	struct dump longer = d;
	longer.n = 4; /* so that ordinal 2 is sent without `last` */
	for (uint32_t i = 0; i < 3; i++)
		send_ord(f, &longer, i);
	assert_int_equal(f->nacks, 0);
	send_ord(f, &d, 2); /* same bytes, now flagged last */
	cg_reasm_commit(f->rs);
	assert_int_equal(last_ack(f)->status, CG_ACK_COMPLETE);
	assert_stored(f, &d);
	free(data);
}

/* Open dumps cannot grow past the store budget. */
static void test_budget_applies_to_open_dumps(void **state)
{
	struct fx *f = *state;
	f->opts.max_store_bytes = 4096;
	fx_stop(f);
	fx_start(f);
	uint8_t *data = make_dump(20000, 21);
	struct dump d = mk("dev-20", 1, data, 20000, 1000);
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	assert_int_equal(last_ack(f)->status, CG_ACK_BUSY);
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	assert_true(s.store_bytes <= 4096);
	assert_true(chunks_of(f, "dev-20", 1) < 5);
	free(data);
}

/* Rejections of never-opened dumps are not written to the store. */
static void test_rejections_leave_no_tombstones(void **state)
{
	struct fx *f = *state;
	uint8_t *big = make_dump(5000, 22);
	for (uint64_t id = 100; id < 110; id++) {
		struct dump bad = mk("dev-21", id, big, 5000, 5000);
		send_ord(f, &bad, 0);
		struct cg_dumpkey k;
		cg_dumpkey_make(&k, "dev-21", 6, id);
		struct cg_index_entry ie;
		assert_int_equal(cg_store_index_get(f->st, &k, &ie), CG_ERR_NOT_FOUND);
	}
	assert_int_equal(count_status(f, CG_ACK_REJECTED), 10);
	free(big);
}

/* Record changes from different threads never write back a stale copy:
 * marking a purged dump forwarded does not bring it back, deleting the
 * bytes of a copy that predates a status change keeps the new status, and
 * purge frees what the dump held in the store's budget. */
static void test_record_changes_and_purge(void **state)
{
	struct fx *f = *state;
	uint8_t *data = make_dump(3000, 21);
	struct dump d = mk("dev-p", 1, data, 3000, 1000);
	for (uint32_t i = 0; i < d.n; i++)
		send_ord(f, &d, i);
	cg_reasm_commit(f->rs);
	struct dump d2 = mk("dev-p", 2, data, 3000, 1000);
	data[0] ^= 1;   /* other content: not a content duplicate */
	for (uint32_t i = 0; i < d2.n; i++)
		send_ord(f, &d2, i);
	cg_reasm_commit(f->rs);
	struct cg_dump_record stale, now;
	assert_int_equal(cg_store_get_record(f->st, 1, &stale), CG_OK);
	assert_int_equal(cg_store_set_status(f->st, 1, CG_DUMP_FORWARDED), CG_OK);
	assert_int_equal(cg_store_delete_body(f->st, &stale), CG_OK);   /* a copy from before */
	assert_int_equal(cg_store_get_record(f->st, 1, &now), CG_OK);
	assert_int_equal(now.status, CG_DUMP_FORWARDED);
	assert_true(now.body_deleted);
	assert_int_equal(cg_store_delete_body(f->st, &stale), CG_ERR_NOT_FOUND);   /* nothing freed twice */

	struct cg_reasm_stats before, after;
	cg_reasm_get_stats(f->rs, &before);
	struct cg_dump_record r2;
	assert_int_equal(cg_store_get_record(f->st, 2, &r2), CG_OK);
	assert_int_equal(cg_reasm_purge(f->rs, &r2), CG_OK);
	cg_reasm_get_stats(f->rs, &after);
	assert_int_equal(after.dumps_purged, 1);
	assert_int_equal(before.store_bytes - after.store_bytes, 3000 + 3 * (CG_DUMPKEY_MAX + 4));
	assert_int_equal(cg_store_get_record(f->st, 2, &now), CG_ERR_NOT_FOUND);
	assert_int_equal(chunks_of(f, "dev-p", 2), 0);
	/* the forwarder settling it afterwards does not bring it back */
	assert_int_equal(cg_store_set_status(f->st, 2, CG_DUMP_FORWARDED), CG_ERR_NOT_FOUND);
	assert_int_equal(cg_store_get_record(f->st, 2, &now), CG_ERR_NOT_FOUND);
	/* purging again is not an error and frees nothing more */
	assert_int_equal(cg_reasm_purge(f->rs, &r2), CG_OK);
	cg_reasm_get_stats(f->rs, &before);
	assert_int_equal(before.store_bytes, after.store_bytes);
	/* the device sending that dump id again starts afresh */
	for (uint32_t i = 0; i < d2.n; i++)
		send_ord(f, &d2, i);
	cg_reasm_commit(f->rs);
	assert_stored(f, &d2);
	free(data);
}

static void test_store_record_codec(void **state)
{
	(void)state;
	struct cg_dump_record r = { .seq = 9, .dump_id = UINT64_MAX, .status = CG_DUMP_STORED,
				    .first_seen_ms = -5, .received_at_ms = 1700000000123, .size = 77,
				    .chunks = 3, .last_ordinal = 2, .has_crc32 = true, .crc32 = 0xdeadbeef,
				    .has_format = true, .format = 2, .build_id_len = 3, .meta_len = 1 };
	snprintf(r.device, sizeof r.device, "abc");
	snprintf(r.fw_version, sizeof r.fw_version, "1.2.3");
	memcpy(r.build_id, "\x01\x02\x03", 3);
	r.meta[0] = 0xa0;
	uint8_t *buf;
	size_t len;
	assert_int_equal(cg_record_encode(&r, &buf, &len), CG_OK);
	struct cg_dump_record d;
	assert_int_equal(cg_record_decode(buf, len, &d), CG_OK);
	free(buf);
	assert_int_equal(d.seq, 9);
	assert_true(d.dump_id == UINT64_MAX);
	assert_int_equal(d.first_seen_ms, -5);
	assert_int_equal(d.received_at_ms, 1700000000123);
	assert_int_equal(d.crc32, 0xdeadbeef);
	assert_string_equal(d.device, "abc");
	assert_string_equal(d.fw_version, "1.2.3");
	assert_memory_equal(d.build_id, "\x01\x02\x03", 3);
	assert_int_equal(d.meta_len, 1);
	assert_false(d.has_os);
	assert_int_equal(cg_record_decode((const uint8_t *)"\xff", 1, &d), CG_ERR_MALFORMED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_in_order_complete_after_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shuffled_and_repeated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conflicting_repeat_rejects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_then_resent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_open_ended_when_last_unseen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_reject, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crc_and_size_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunk_beyond_last_and_two_lasts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_full_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_expires, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_dump_stored_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_recovers_open_dump, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_completes_written_dump, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_complete_waits_for_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_chunk_cannot_unstore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_last_flag_on_repeat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_applies_to_open_dumps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejections_leave_no_tombstones, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_changes_and_purge, setup, teardown),
		cmocka_unit_test(test_store_record_codec),
	};
	return cmocka_run_group_tests_name("reassembly", tests, NULL, NULL);
}
