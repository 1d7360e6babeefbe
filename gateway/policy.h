/*
 * Policy state that must survive a restart (SPEC §6): per-signature counts
 * and the throttle window, per-group quota counts, the devices the gateway
 * has seen (for the consent signal) and content hashes for deduplication.
 *
 * All of it lives in the store's `policy` column family under one-letter
 * key prefixes, written in the same atomic batch as the dump record it
 * belongs to (cg_store_commit_dump_ex), so that a crash can never leave a
 * count that disagrees with the records:
 *
 *   's' sig(16)                 signature statistics (struct cg_sig_stats)
 *   'd' sig(16) device          a device that had this crash: last seen (8 B)
 *   'q' start(8 BE) group       dumps stored for a group in its collection window
 *   'v' device                  a device seen: first and last seen (8 + 8 B)
 *   'c' device 0x00 hash(16)    content of a stored dump: seq and time (8 + 8 B)
 *
 * The functions here are pure apart from the store calls; the reassembler
 * calls them under its lock.
 */
#ifndef CG_POLICY_H
#define CG_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "decode.h"
#include "store.h"

#define CG_THROTTLE_MAX 1000            /* throttle.max_identical's upper bound */
#define CG_POLICY_KEY_MAX (1 + 16 + CG_DEVICE_ID_MAX + 1 + 16)
#define CG_QUOTA_KEY_MAX (1 + 8 + 128)

struct cg_sig_stats {
	uint64_t stored;                     /* full dumps stored */
	uint64_t throttled;                  /* occurrences whose bytes were not stored */
	int64_t first_seen_ms, last_seen_ms;
	uint32_t format;
	char reason[64];
	uint32_t nrecent;                    /* receive times of the stored dumps still */
	int64_t recent[CG_THROTTLE_MAX];     /* inside the throttle window, oldest first */
};

/* Load a signature's statistics; absent = zeroed with CG_OK. */
int cg_sig_stats_load(struct cg_store *st, const char *sig, struct cg_sig_stats *s);
/* Encoded size is at most CG_SIG_STATS_MAX. */
#define CG_SIG_STATS_MAX (1 + 4 * 8 + 4 + 1 + 64 + 2 + 8 * CG_THROTTLE_MAX)
size_t cg_sig_stats_encode(const struct cg_sig_stats *s, uint8_t *buf);
int cg_sig_stats_decode(const uint8_t *buf, size_t len, struct cg_sig_stats *s);

/* Drop entries of `recent` older than the window; return how many remain. */
uint32_t cg_throttle_window(struct cg_sig_stats *s, int64_t now_ms, uint64_t window_ms);

/* Count one occurrence: stored (its time joins `recent`, at most `keep`
 * entries) or throttled. */
void cg_sig_stats_note(struct cg_sig_stats *s, int64_t now_ms, bool stored, uint32_t keep,
		       const struct cg_crash *c);

/* Keys (return their length). */
size_t cg_policy_key_sig(uint8_t *out, const char *sig);
size_t cg_policy_key_sigdev(uint8_t *out, const char *sig, const char *device);
size_t cg_policy_key_quota(uint8_t *out, const struct cg_group_config *g);
size_t cg_policy_key_device(uint8_t *out, const char *device);
size_t cg_policy_key_content(uint8_t *out, const char *device, const uint8_t hash[16]);

/* A u64 counter value (quota), absent = 0. */
int cg_policy_counter_get(struct cg_store *st, const uint8_t *key, size_t klen, uint64_t *v);

/*
 * Collection window and quota (SPEC §6.3). Returns NULL when a new dump of
 * the group may be collected, otherwise the reason (written into why).
 * `taken` counts the dumps stored in the window plus those being received.
 */
const char *cg_collection_refusal(const struct cg_group_config *g, int64_t now_ms, uint64_t taken,
				  char *why, size_t whylen);

/* Visit every signature's statistics in key order. */
typedef int (*cg_sig_cb)(void *ctx, const char *sig, const struct cg_sig_stats *s);
int cg_policy_scan_sigs(struct cg_store *st, cg_sig_cb cb, void *ctx);

/* Counts of what a retention pass removed. */
struct cg_retention_result {
	uint64_t bodies_deleted;    /* dumps whose bytes went */
	uint64_t bytes_freed;       /* their content and key overhead */
	uint64_t records_deleted;   /* history records that went */
	uint64_t signatures_deleted;
	uint64_t devices_forgotten; /* filled by the reassembler, which owns that list */
};

/*
 * Retention (SPEC §6.6): a dump's bytes go `dumps_ms` after it was
 * received; its record (history) goes when both the bytes are gone and
 * `history_ms` has passed; signature statistics, device and content
 * entries go `history_ms` after they were last touched (content entries
 * after the throttle window). chunk_overhead is what each chunk costs
 * against the store budget beyond its bytes.
 */
int cg_retention_sweep_records(struct cg_store *st, int64_t now_ms, uint64_t dumps_ms,
			       uint64_t history_ms, uint64_t chunk_overhead,
			       struct cg_retention_result *out);
/* Delete the bytes of forwarded dumps, oldest first, until `want` bytes
 * (content and chunk overhead) are freed. Records stay (body_deleted). */
int cg_evict_delivered(struct cg_store *st, uint64_t want, uint64_t chunk_overhead,
		       struct cg_retention_result *out);

int cg_retention_sweep_policy(struct cg_store *st, int64_t now_ms, uint64_t history_ms,
			      uint64_t window_ms, struct cg_retention_result *out);

#endif
