/*
 * bench_store: the cost of the chunk path without the network, beside a raw
 * RocksDB write measured in the same run.
 *
 *   raw RocksDB put         1 KiB values, WAL on, not synced (what a chunk costs at least)
 *   raw RocksDB put, synced  one fsync per write (what per-chunk durability would cost)
 *   cg_reasm_chunk          decode + reassembly + store, dumps of 64 chunks completed
 *                           and committed with grouped syncs, as the daemon does
 *
 * usage: bench_store DIR [N]
 */
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reassembly.h"
#include "store.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double raw_puts(const char *dir, long n, int sync)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(o, 1);
	char *err = NULL;
	rocksdb_t *db = rocksdb_open(o, dir, &err);
	if (err) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(wo, (unsigned char)sync);
	char val[1024], key[32];
	memset(val, 0x5a, sizeof val);
	double t0 = now_s();
	for (long i = 0; i < n; i++) {
		snprintf(key, sizeof key, "%012ld", i);
		rocksdb_put(db, wo, key, 12, val, sizeof val, &err);
		if (err)
			exit(1);
	}
	double t = now_s() - t0;
	rocksdb_writeoptions_destroy(wo);
	rocksdb_close(db);
	rocksdb_options_destroy(o);
	return n / t;
}

static void sink(void *ctx, const char *d, const uint8_t *m, size_t n)
{
	(void)d, (void)m, (void)n;
	(*(long *)ctx)++;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_store DIR [N]\n");
		return 2;
	}
	long n = argc > 2 ? atol(argv[2]) : 100000;
	char path[1024], err[256];
	snprintf(path, sizeof path, "%s/raw", argv[1]);
	double raw = raw_puts(path, n, 0);
	snprintf(path, sizeof path, "%s/rawsync", argv[1]);
	long nsync = n / 50 > 200 ? n / 50 : 200;
	double rawsync = raw_puts(path, nsync, 1);

	snprintf(path, sizeof path, "%s/store", argv[1]);
	struct cg_store *st;
	if (cg_store_open(path, &st, err, sizeof err) != CG_OK) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	long acks = 0;
	struct cg_ack_sink s = { .send = sink, .ctx = &acks };
	struct cg_reasm_opts o = { .gateway_id = "bench", .max_dump_bytes = 16 << 20, .max_chunk_bytes = 65536,
				   .reassembly_timeout_ms = 600000, .max_store_bytes = 1ull << 40,
				   .max_open_dumps = 10000, .max_open_dumps_per_device = 4 };
	struct cg_reasm *rs;
	cg_reasm_create(&o, st, &s, NULL, NULL, &rs);
	uint8_t content[1024], buf[1200];
	memset(content, 0x33, sizeof content);
	double t0 = now_s();
	for (long i = 0; i < n; i++) {
		struct cg_chunk c = { .dump_id = (uint64_t)(i / 64), .ordinal = (uint32_t)(i % 64),
				      .content = content, .content_len = sizeof content, .last = i % 64 == 63 };
		content[0] = (uint8_t)i;
		size_t len;
		cg_chunk_encode(&c, 0, buf, sizeof buf, &len);
		cg_reasm_chunk(rs, "bench-dev", buf, len);
		if (i % 1024 == 1023)
			cg_reasm_commit(rs); /* the committer thread's work, inline */
	}
	cg_reasm_commit(rs);
	double t = now_s() - t0;
	struct cg_reasm_stats stats;
	cg_reasm_get_stats(rs, &stats);
	printf("store path: %ld chunks of 1 KiB\n", n);
	printf("  raw RocksDB put (WAL, no sync) : %9.0f puts/s\n", raw);
	printf("  raw RocksDB put, synced        : %9.0f puts/s  (%ld puts)\n", rawsync, nsync);
	printf("  cg_reasm_chunk (+ commits)     : %9.0f chunks/s  (%.2f of the raw put rate; %lu dumps, %lu syncs)\n",
	       n / t, (n / t) / raw, (unsigned long)stats.dumps_completed, (unsigned long)stats.syncs);
	cg_reasm_destroy(rs);
	cg_store_close(st);
	return 0;
}
