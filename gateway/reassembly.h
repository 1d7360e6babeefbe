/*
 * Reassembly of chunked dumps (SPEC §3) and the device acknowledgements that
 * follow from it (SPEC §4).
 *
 * Chunks go straight to the store; memory holds only a small summary per
 * open dump (received ordinal ranges, byte and chunk counts, times), so
 * 10,000 open dumps cost a few megabytes, not 10,000 buffers.
 *
 * Durability: cg_reasm_chunk() returns only after the chunk has reached the
 * store's write-ahead log in the operating system, so a SIGKILL after it
 * returns loses nothing. A `complete` acknowledgement is sent only after the
 * dump's commit has been synced (cg_reasm_commit, called by the daemon's
 * committer thread, which groups many dumps into one fsync).
 *
 * Thread safety: every function may be called from any thread; an internal
 * lock serialises them. Acks are sent through the sink from the calling
 * thread.
 */
#ifndef CG_REASSEMBLY_H
#define CG_REASSEMBLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

struct cg_reasm;

struct cg_reasm_opts {
	const char *gateway_id;
	uint64_t max_dump_bytes;
	uint64_t max_chunk_bytes;
	uint64_t reassembly_timeout_ms;
	uint64_t max_store_bytes;
	uint32_t max_open_dumps;
	uint32_t max_open_dumps_per_device;
	/* Policy (SPEC §5, §6): groups, consent, collection windows, throttling,
	 * regions and retention come from here. NULL = no policy: every dump is
	 * collected, unthrottled and without a region (the reassembly layer's
	 * own tests and fuzzing). The reassembler reads it under its lock; see
	 * cg_reasm_set_config for replacing it. */
	const struct cg_config *cfg;
};

/* Where acknowledgements go: the daemon publishes them on
 * {prefix}/dev/{device}/ack; tests collect them. msg is valid during the call. */
struct cg_ack_sink {
	void (*send)(void *ctx, const char *device, const uint8_t *msg, size_t len);
	void *ctx;
	/* The consent signal (SPEC §5): published retained on
	 * {prefix}/dev/{device}/consent. May be NULL. */
	void (*consent)(void *ctx, const char *device, const uint8_t *msg, size_t len);
};

/* Wall clock in unix milliseconds; injectable so tests need no sleeps. */
typedef int64_t (*cg_clock_fn)(void *ctx);

/* Why dumps were rejected, for /metrics (the reason text says more). */
enum cg_reject_class {
	CG_REJECT_TOO_LARGE, CG_REJECT_SIZE_MISMATCH, CG_REJECT_BAD_CRC, CG_REJECT_CORRUPT,
	CG_REJECT_TOO_FRAGMENTED, CG_REJECT_OUTSIDE_WINDOW, CG_REJECT_QUOTA, CG_REJECT_OTHER,
	CG_REJECT_CLASSES
};
/* The metric label of a class ("too_large", ...). */
const char *cg_reject_class_name(enum cg_reject_class c);
/* The class of a rejection reason as the reassembler words it. */
enum cg_reject_class cg_reject_classify(const char *reason);

struct cg_reasm_stats {
	uint64_t chunks_received;      /* chunk messages that decoded */
	uint64_t bytes_received;       /* content bytes of those */
	uint64_t chunks_stored;        /* new chunks written */
	uint64_t chunks_repeated;      /* identical repeats, not written again */
	uint64_t messages_malformed;   /* payloads that did not decode */
	uint64_t dumps_completed;
	uint64_t dumps_duplicate;      /* chunks of dumps already stored */
	uint64_t dumps_rejected;
	uint64_t rejected_by_class[CG_REJECT_CLASSES];
	uint64_t dumps_expired;
	uint64_t dumps_throttled;      /* answered `throttled` (bytes not stored) */
	uint64_t dumps_throttled_early;/* of those, decided at chunk 0 */
	uint64_t dumps_deduplicated;   /* same content from the same device: stored once */
	uint64_t consent_refused;      /* chunks answered `consent_required` */
	uint64_t consent_published;    /* consent signals sent */
	uint64_t devices_seen;         /* devices the consent signal goes to */
	uint64_t retention_bodies;     /* dumps whose bytes retention deleted */
	uint64_t retention_records;    /* history records retention deleted */
	uint64_t dumps_purged;         /* deleted by the operator (crashgatectl purge) */
	uint64_t config_generation;    /* 1 at start, +1 per applied reload */
	uint64_t busy;                 /* `busy` answers */
	uint64_t acks_sent;
	uint64_t syncs;
	uint32_t open_dumps;
	uint64_t store_bytes;
};

/*
 * Create the reassembler over an open store and recover the open dumps the
 * store holds (a dump whose last chunk was written before a crash but not
 * yet committed is completed now). clock may be NULL for the real clock.
 */
int cg_reasm_create(const struct cg_reasm_opts *opts, struct cg_store *st,
		    const struct cg_ack_sink *sink, cg_clock_fn clock, void *clock_ctx,
		    struct cg_reasm **out);
void cg_reasm_destroy(struct cg_reasm *rs);

/*
 * Handle one chunk message published by `device` (already validated as a
 * device id). Returns CG_OK when the message was stored or answered, or
 * CG_ERR_STORE if the store failed (the device was answered `busy`).
 */
int cg_reasm_chunk(struct cg_reasm *rs, const char *device, const uint8_t *payload, size_t len);

/* Handle a hello: answer `incomplete` for each dump of the device still open. */
int cg_reasm_hello(struct cg_reasm *rs, const char *device, const uint8_t *payload, size_t len);

/* Sync the store and send the `complete` acks that waited for it. */
int cg_reasm_commit(struct cg_reasm *rs);

/* Block until a commit is wanted or timeout_ms passes; true if one is wanted. */
bool cg_reasm_wait(struct cg_reasm *rs, uint64_t timeout_ms);

/* Wake a thread blocked in cg_reasm_wait (shutdown). */
void cg_reasm_wake(struct cg_reasm *rs);

/* Expire open dumps idle for longer than the reassembly timeout; publish
 * the consent signals that are due; run retention once a minute. */
void cg_reasm_tick(struct cg_reasm *rs);

/*
 * Apply a new configuration atomically (SIGHUP): limits, groups, consent,
 * throttle, regions and retention switch together under the lock, and every
 * known device gets its consent signal again at the next tick. The caller
 * keeps cfg alive until it is replaced again or the reassembler destroyed;
 * the old one is no longer read once this returns.
 */
void cg_reasm_set_config(struct cg_reasm *rs, const struct cg_config *cfg);

/* Wall clock (unix ms) for recorded times, collection windows, the throttle
 * window and retention; injectable so tests need no sleeps. NULL = real. */
void cg_reasm_set_wall_clock(struct cg_reasm *rs, cg_clock_fn wall, void *ctx);

/* Run retention now (tick does it once a minute). */
void cg_reasm_retention(struct cg_reasm *rs);

/* Delete a committed dump at the operator's request: its record, its bytes
 * and its index entry (a device sending that dump id again starts afresh).
 * Counted in dumps_purged; durable at the next commit. */
int cg_reasm_purge(struct cg_reasm *rs, const struct cg_dump_record *rec);

void cg_reasm_get_stats(struct cg_reasm *rs, struct cg_reasm_stats *out);

#endif
