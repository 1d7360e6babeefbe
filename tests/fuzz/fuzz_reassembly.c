/*
 * Fuzz the reassembler: the input is a program of operations over a few
 * devices and dump ids (well-formed chunks with fuzzed fields, raw payloads,
 * hellos, clock jumps, commits, restarts, configuration reloads) against an
 * in-memory RocksDB, under a policy: one device without consent, a quota,
 * duplicate throttling (Zephyr chunk 0s are made often), short retention.
 * Invariants checked after every input: every dump the reassembler says it
 * completed is in the store with exactly the bytes its chunks carried, open
 * dumps never exceed the limits, and nothing crashes or leaks (ASan).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "policy.h"
#include "reassembly.h"
#include "store.h"

struct ctx {
	int64_t now;
	unsigned acks;
};

static int64_t clk(void *c)
{
	return ((struct ctx *)c)->now;
}

static void consent_sink(void *c, const char *dev, const uint8_t *m, size_t n)
{
	(void)c, (void)dev;
	struct cg_consent cs;
	/* Every consent signal must decode. */
	if (cg_consent_decode(m, n, &cs) != CG_OK)
		abort();
}

/* Two policies to switch between: consent and quota change, so a reload
 * meets dumps that are open. Their limits equal the options below (a
 * reload applies the file's limits). */
static const char policy_a[] =
	"gateway: { id: gw, data_dir: /nonexistent }\n"
	"limits: { max_dump_bytes: 4KiB, max_chunk_bytes: 256B, reassembly_timeout: 60s,\n"
	"          max_store_bytes: 1TiB, max_open_dumps: 6, max_open_dumps_per_device: 2 }\n"
	"default_region: US\n"
	"regions: { US: { upstreams: [ { name: u, kind: file, path: /nonexistent } ] } }\n"
	"groups:\n"
	"  - { name: off, devices: [\"*-c\"], crash_dumps: disabled }\n"
	"  - { name: q, devices: [\"*-b\"], crash_dumps: enabled, collection: { max_dumps: 3 } }\n"
	"  - { name: default, crash_dumps: enabled }\n"
	"throttle: { max_identical: 2, window: 1h }\n"
	"retention: { dumps: 2h, history: 1h }\n";
static const char policy_b[] =
	"gateway: { id: gw, data_dir: /nonexistent }\n"
	"limits: { max_dump_bytes: 4KiB, max_chunk_bytes: 256B, reassembly_timeout: 60s,\n"
	"          max_store_bytes: 1TiB, max_open_dumps: 6, max_open_dumps_per_device: 2 }\n"
	"default_region: US\n"
	"regions: { US: { upstreams: [ { name: u, kind: file, path: /nonexistent } ] } }\n"
	"groups:\n"
	"  - { name: off, devices: [\"*-a\"], crash_dumps: disabled }\n"
	"  - { name: default, crash_dumps: enabled }\n"
	"throttle: { max_identical: 1, window: 10m }\n"
	"retention: { dumps: 1h, history: 3h }\n";

static struct cg_config *load_policy(const char *yaml)
{
	struct cg_config *cfg;
	char err[256];
	if (cg_config_load_string("fuzz.yaml", yaml, strlen(yaml), &cfg, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	return cfg;
}

static void sink(void *c, const char *dev, const uint8_t *m, size_t n)
{
	(void)dev;
	struct cg_range miss[64];
	struct cg_ack a = { .missing = miss, .missing_cap = 64 };
	/* Every ack the gateway sends must decode. */
	if (cg_ack_decode(m, n, &a) != CG_OK)
		abort();
	((struct ctx *)c)->acks++;
}

struct rd {
	const uint8_t *p;
	size_t n;
};

static uint8_t take(struct rd *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

static int check_record(void *c, const struct cg_dump_record *rec)
{
	struct cg_store *st = c;
	uint8_t *body;
	size_t len;
	if (rec->status == CG_DUMP_THROTTLED || rec->body_deleted)
		return 0;   /* no bytes by design */
	if (cg_store_get_body(st, rec->seq, &body, &len) != CG_OK || len != rec->size)
		abort();
	if (rec->has_crc32 && cg_crc32(0, body, len) != rec->crc32)
		abort();
	free(body);
	return 0;
}

/* RocksDB's timer thread registers a thread-local destructor (32 bytes in
 * glibc) when a store is reopened; LeakSanitizer can see that allocation in
 * flight between two inputs and report it. It is freed at thread exit and
 * involves no crashgate code (facebook/rocksdb#5931). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:__cxa_thread_atexit_impl\n";
}

/* Opening RocksDB costs milliseconds, so one in-memory store serves many
 * inputs; each input uses device ids of its own and ends by expiring every
 * dump it left open, so inputs do not see each other's dumps. */
#define RUNS_PER_STORE 256

static struct cg_store *shared_store(unsigned run)
{
	static struct cg_store *st;
	static unsigned generation;
	if (st && run % RUNS_PER_STORE == 0) {
		cg_store_close(st);
		st = NULL;
	}
	if (!st) {
		char name[64], err[256];
		snprintf(name, sizeof name, "/fuzz-reasm-%u", generation++);
		if (cg_store_open_memory(name, &st, err, sizeof err) != CG_OK)
			abort();
	}
	return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned run;
	unsigned this_run = run++;
	if (this_run == 0)
		cg_log_setup(CG_LOG_ERROR, CG_LOG_TEXT); /* rejections are expected here */
	struct cg_store *st = shared_store(this_run);
	static struct cg_config *pa, *pb;
	if (!pa) {
		pa = load_policy(policy_a);
		pb = load_policy(policy_b);
	}
	struct ctx c = { .now = 1700000000000 };
	struct cg_reasm_opts o = { .gateway_id = "gw", .max_dump_bytes = 4096, .max_chunk_bytes = 256,
				   .reassembly_timeout_ms = 60000,
				   /* dumps of earlier inputs stay in the shared store: a small
				    * budget would make inputs depend on each other (the
				    * budget is covered by the unit tests) */
				   .max_store_bytes = 1ull << 40,
				   .max_open_dumps = 6, .max_open_dumps_per_device = 2,
				   .cfg = pa };
	struct cg_ack_sink s = { .send = sink, .consent = consent_sink, .ctx = &c };
	struct cg_reasm *rs;
	if (cg_reasm_create(&o, st, &s, clk, &c, &rs) != CG_OK)
		abort();
	/* One clock for both: wall time only moves forward here, as the
	 * monotonic one does. */
	cg_reasm_set_wall_clock(rs, clk, &c);
	char devs[3][24];
	for (int i = 0; i < 3; i++)
		snprintf(devs[i], sizeof devs[i], "r%u-%c", this_run, 'a' + i);
	uint8_t content[256], buf[2048];
	struct rd r = { data, size };
	for (int ops = 0; r.n && ops < 512; ops++) {
		uint8_t op = take(&r);
		const char *dev = devs[op % 3];
		switch ((op >> 2) % 8) {
		case 0: case 1: case 2: case 3: { /* a well-formed chunk with fuzzed fields */
			struct cg_chunk ch = { .dump_id = take(&r) % 4, .ordinal = take(&r) % 24 };
			ch.content_len = 1 + take(&r) % 255;
			uint8_t fill = take(&r);
			memset(content, fill, ch.content_len);
			ch.content = content;
			uint8_t flags = take(&r);
			if ((flags & 8) && ch.content_len >= 53) {
				/* A Zephyr header and Cortex-M register block, one of four
				 * crashes: chunk 0 of it can be throttled early. */
				static const uint8_t ze[17] = { 'Z', 'E', 2, 0, 3, 0, 5, 0, 0, 0, 0, 0,
								'A', 1, 0, 36, 0 };
				memcpy(content, ze, sizeof ze);
				memset(content + 17, 0, 36);
				content[17 + 6 * 4] = (uint8_t)(fill & 3);   /* pc */
				if (flags & 16) {
					ch.present |= CG_HAS_FORMAT;
					ch.format = CG_FORMAT_ZEPHYR;
				}
			}
			ch.last = flags & 1;
			if (flags & 2) {
				ch.present |= CG_HAS_TOTAL_SIZE;
				ch.total_size = (uint64_t)take(&r) * 32;
			}
			if (flags & 4) {
				ch.present |= CG_HAS_CRC32;
				ch.crc32 = (uint32_t)take(&r) << 8 | take(&r);
			}
			size_t n;
			if (cg_chunk_encode(&ch, 0, buf, sizeof buf, &n) == CG_OK)
				cg_reasm_chunk(rs, dev, buf, n);
			break;
		}
		case 4: { /* raw bytes as a chunk payload */
			size_t n = take(&r) % 64;
			if (n > r.n)
				n = r.n;
			cg_reasm_chunk(rs, dev, r.p, n);
			r.p += n;
			r.n -= n;
			break;
		}
		case 5: {
			uint8_t hb[16];
			size_t hn;
			struct cg_hello h = { 0 };
			if (cg_hello_encode(&h, hb, sizeof hb, &hn) == CG_OK)
				cg_reasm_hello(rs, dev, hb, hn);
			break;
		}
		case 6:
			c.now += (int64_t)take(&r) * 1000;
			cg_reasm_tick(rs);
			break;
		case 7: {
			uint8_t what = take(&r);
			if (what & 1) { /* restart over the same store */
				cg_reasm_destroy(rs);
				if (cg_reasm_create(&o, st, &s, clk, &c, &rs) != CG_OK)
					abort();
				cg_reasm_set_wall_clock(rs, clk, &c);
			} else if (what & 2) { /* SIGHUP */
				o.cfg = o.cfg == pa ? pb : pa;
				cg_reasm_set_config(rs, o.cfg);
			} else if (what & 4) {
				cg_reasm_retention(rs);
			} else {
				cg_reasm_commit(rs);
			}
			break;
		}
		}
	}
	cg_reasm_commit(rs);
	struct cg_reasm_stats stats;
	cg_reasm_get_stats(rs, &stats);
	if (stats.open_dumps > o.max_open_dumps)
		abort();
	cg_store_scan_records(st, check_record, st);
	c.now += o.reassembly_timeout_ms + 1; /* leave nothing open for the next input */
	cg_reasm_tick(rs);
	cg_reasm_get_stats(rs, &stats);
	if (stats.open_dumps != 0)
		abort();
	cg_reasm_destroy(rs);
	return 0;
}
