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

/* The policy-CF key of an upstream's cursor / state (for crashgatectl queue). */
size_t cg_forward_key(uint8_t *out, size_t cap, const char *upstream, char what);

/* Per upstream of cfg: depth, bytes, oldest_age_s, delivered_through_seq,
 * dead_letters, last_error, next_retry (a new JSON array; caller decrefs).
 * Works on the daemon's store and on a read-only secondary. */
#include <jansson.h>
json_t *cg_forward_queue_json(const struct cg_config *cfg, struct cg_store *st);

#endif
