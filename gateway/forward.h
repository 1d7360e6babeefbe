/*
 * Forwarding upstream (SPEC §8): one thread per upstream drains its
 * region's queue — the committed records of that region, in receipt order —
 * through its output plugin, in batches bounded by batch.max_dumps,
 * batch.max_bytes and batch.max_delay.
 *
 * Delivery is at least once. Each upstream has a cursor (the last record
 * it acknowledged), written durably only after the plugin said OK; a crash
 * before that sends the batch again with the same batch id. A dump's bytes
 * are deleted (status `forwarded`) only once every upstream of its region
 * has acknowledged it. RETRY waits with full-jitter exponential backoff
 * within retry.min..retry.max, never shorter than the upstream's
 * Retry-After; DROP moves the batch to the dead-letter state with the
 * reason, and the cursor moves on. Each upstream runs on its own thread, so
 * one upstream's outage never slows another.
 *
 * State in the store's policy column family, per upstream NAME:
 *   'f' NAME 0x00 'c'           cursor: last acknowledged seq (8 B)
 *   'f' NAME 0x00 's'           state: JSON {last_error, next_retry_ms, delivered, dead}
 *   'f' NAME 0x00 'd' seq(8)    a dead-letter batch: JSON {seqs, reason, at_ms}
 * A dead-letter batch is sent again when a file named after its first seq
 * appears in data_dir/retry/NAME/ (`crashgatectl retry` writes it: the
 * store is only written by the daemon); its entry goes once it is delivered.
 */
#ifndef CG_FORWARD_H
#define CG_FORWARD_H

#include <jansson.h>

#include "config.h"
#include "store.h"

struct cg_forwarder;

/*
 * Load every upstream's plugin, initialise it and start its thread. Fails
 * (with a message naming the upstream) if any plugin cannot be loaded or
 * initialised. cfg must outlive the forwarder.
 */
int cg_forwarder_start(const struct cg_config *cfg, struct cg_store *st, struct cg_forwarder **out,
		       char *err, size_t errlen);

/* Let threads finish the flush in flight, stop them, destroy the plugins. */
void cg_forwarder_stop(struct cg_forwarder *f);

/* Wake the threads: a dump was committed. */
void cg_forwarder_wake(struct cg_forwarder *f);

/* Upper bounds (seconds) of the flush latency histogram's buckets. */
#define CG_FWD_LATENCY_BUCKETS 12
extern const double cg_forward_latency_bounds[CG_FWD_LATENCY_BUCKETS];

/* What one upstream has done since start (for /metrics). */
struct cg_upstream_stats {
	const char *name, *kind, *region;   /* owned by the configuration */
	uint64_t batches_ok, batches_retry, batches_drop;
	uint64_t dumps_delivered, bytes_delivered;
	/* flush calls by duration: count per bucket (not cumulative), +Inf last */
	uint64_t latency[CG_FWD_LATENCY_BUCKETS + 1];
	double latency_sum_s;
};

/* Copy up to cap upstreams' figures into out; returns how many there are. */
size_t cg_forwarder_stats(struct cg_forwarder *f, struct cg_upstream_stats *out, size_t cap);

/* The policy-CF key of an upstream's cursor / state (for crashgatectl queue). */
size_t cg_forward_key(uint8_t *out, size_t cap, const char *upstream, char what);

/*
 * Ask for dead-letter batches of `upstream` to be sent again: all of them,
 * or only the one starting at seq `only` (0: all). Writes the request files
 * the forwarder picks up (works from crashgatectl on a read-only view too),
 * and appends each batch's first seq to `asked` (a JSON array) when not
 * NULL. Returns 0, or CG_ERR_NOT_FOUND (no such upstream: err says so; no
 * dead letter: asked stays empty), or CG_ERR_IO.
 */
int cg_forward_request_retry(const struct cg_config *cfg, struct cg_store *st, const char *upstream,
			     uint64_t only, json_t *asked, char *err, size_t errlen);

/* Per upstream of cfg: depth, bytes, oldest_age_s, delivered_through_seq,
 * dead_letters, last_error, next_retry (a new JSON array; caller decrefs).
 * Works on the daemon's store and on a read-only secondary. */
json_t *cg_forward_queue_json(const struct cg_config *cfg, struct cg_store *st);

#endif
