/*
 * The durable store: RocksDB with one column family per kind of data.
 *
 *   chunks   dumpkey‖ordinal(u32 BE)  → chunk bytes, of open and of stored dumps
 *   open     dumpkey                  → record of an open dump (chunk-0 fields, last ordinal, crc)
 *   records  seq(u64 BE)              → record of a completed/throttled/… dump
 *   index    dumpkey                  → what happened to a dump (stored seq, or rejection)
 *   policy   prefixed keys            → throttle, quota and device state (policy.c)
 *   default  "next_seq", "gateway_id" → small named values
 *
 * A dumpkey is len(device)‖device‖dump_id(u64 BE): chunks of one dump sort
 * together and in ordinal order. Open dumps live here, not in memory. A
 * completed dump keeps its chunks where they are: completing it writes only
 * its record and index entry, so each byte of a dump is written once (and
 * no value is larger than a chunk).
 *
 * Writes are not synced: each one reaches the operating system (RocksDB's
 * WAL is written, not fsynced) before the call returns, so it survives a
 * SIGKILL of the process. cg_store_sync() makes everything written so far
 * survive a power cut; the caller groups syncs (group commit).
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef CG_STORE_H
#define CG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crashgate/proto.h"
#include "decode.h"

#define CG_DUMPKEY_MAX (1 + CG_DEVICE_ID_MAX + 8)

struct cg_dumpkey {
	uint8_t len;
	uint8_t b[CG_DUMPKEY_MAX];
};

void cg_dumpkey_make(struct cg_dumpkey *k, const char *device, size_t devlen, uint64_t dump_id);
/* Split a dumpkey; device is NUL-terminated into dev[CG_DEVICE_ID_MAX + 1]. */
int cg_dumpkey_parse(const uint8_t *b, size_t len, char *dev, uint64_t *dump_id);

enum cg_dump_status {
	CG_DUMP_OPEN = 0,
	CG_DUMP_STORED,
	CG_DUMP_FORWARDED,
	CG_DUMP_THROTTLED,
	CG_DUMP_REJECTED,
	CG_DUMP_EXPIRED,
	CG_DUMP_DEAD_LETTER,
};
const char *cg_dump_status_name(uint32_t status);

/* Everything known about one dump. Fixed size so that callers need no
 * allocation; strings are NUL-terminated. */
struct cg_dump_record {
	uint64_t seq;                     /* 0 while open */
	char device[CG_DEVICE_ID_MAX + 1];
	uint64_t dump_id;
	uint32_t status;                  /* enum cg_dump_status */
	int64_t first_seen_ms;            /* first chunk, unix ms */
	int64_t received_at_ms;           /* completed, unix ms */
	uint64_t size;
	uint32_t chunks;
	int64_t last_ordinal;             /* -1 until the `last` chunk is seen */
	bool has_total_size, has_crc32, has_os, has_format, has_chunk0;
	uint64_t total_size;
	uint32_t crc32;
	uint32_t os;
	uint32_t format;
	uint8_t build_id[CG_PROTO_MAX_BUILD_ID];
	size_t build_id_len;
	char fw_version[CG_PROTO_MAX_FW_VERSION + 1];
	uint8_t meta[CG_PROTO_MAX_META];  /* raw CBOR map from chunk 0 */
	size_t meta_len;
	char reason[CG_PROTO_MAX_REASON + 1];
	bool has_crash;                   /* decoded at completion (SPEC §7) */
	struct cg_crash crash;
	char signature[17];               /* 16 hex digits, "" when not computed */
	char group[129];                  /* policy group (SPEC §6), "" = built-in default */
	char region[33];                  /* data boundary the dump must stay in */
	bool body_deleted;                /* retention removed the bytes; the record is history */
};

/* What the index says about a dump that is no longer open. */
struct cg_index_entry {
	uint32_t status;                  /* enum cg_dump_status */
	uint64_t seq;                     /* for STORED and later states */
	int64_t at_ms;
	char reason[CG_PROTO_MAX_REASON + 1];
};

struct cg_store;

/*
 * Open (creating if needed) the store in DIR. Returns CG_OK or an error with
 * a message in err. Close with cg_store_close().
 */
int cg_store_open(const char *dir, struct cg_store **out, char *err, size_t errlen);

/* Open a store that lives in memory only (RocksDB's mem env): for fuzzing
 * and tests that need many fresh stores quickly. */
int cg_store_open_memory(const char *name, struct cg_store **out, char *err, size_t errlen);

/*
 * Open a read-only view of a store that a running daemon may hold open
 * (a RocksDB secondary instance; scratch is a private directory it needs).
 * cg_store_refresh() catches up with the primary.
 */
int cg_store_open_secondary(const char *dir, const char *scratch, struct cg_store **out,
			    char *err, size_t errlen);
int cg_store_refresh(struct cg_store *st);
void cg_store_close(struct cg_store *st);

/* Free memory returned by cg_store_get_chunk. */
void cg_store_free(void *p);

/* Write one chunk, and in the same atomic batch the dump's open record when
 * rec is not NULL. */
int cg_store_put_chunk(struct cg_store *st, const struct cg_dumpkey *k, uint32_t ordinal,
		       const uint8_t *data, size_t len, const struct cg_dump_record *rec);

/* Read one chunk back; *data is freed with cg_store_free. CG_ERR_NOT_FOUND if absent. */
int cg_store_get_chunk(struct cg_store *st, const struct cg_dumpkey *k, uint32_t ordinal,
		       uint8_t **data, size_t *len);

/* Visit the chunks of one dump in ordinal order (data valid during the
 * call). The callback returns 0 to continue. */
typedef int (*cg_store_each_cb)(void *ctx, uint32_t ordinal, const uint8_t *data, size_t len);
int cg_store_each_chunk(struct cg_store *st, const struct cg_dumpkey *k, cg_store_each_cb cb, void *ctx);

/*
 * Concatenate the chunks of a dump in ordinal order into a new buffer
 * (freed with free()). Fails with CG_ERR_CONFLICT unless exactly ordinals
 * 0..nchunks-1 are present and they add up to `size` bytes.
 */
int cg_store_read_dump(struct cg_store *st, const struct cg_dumpkey *k, uint32_t nchunks,
		       uint64_t size, uint8_t **body);

/*
 * Complete a dump in one atomic batch: assign rec->seq, write its record,
 * point the index at it, delete its open record. Its chunks stay.
 */
int cg_store_commit_dump(struct cg_store *st, const struct cg_dumpkey *k, struct cg_dump_record *rec);

/* A key/value for the policy column family; val NULL = delete. */
struct cg_kv {
	const uint8_t *key;
	size_t klen;
	const uint8_t *val;
	size_t vlen;
};

/*
 * The same, and in the same atomic batch: delete the dump's chunks when
 * drop_chunks (a throttled or duplicate dump keeps no bytes) and apply the
 * policy writes (signature counts, quota), so counts and records never
 * disagree after a crash.
 */
int cg_store_commit_dump_ex(struct cg_store *st, const struct cg_dumpkey *k, struct cg_dump_record *rec,
			    bool drop_chunks, const struct cg_kv *puts, size_t nputs);

/* Retention: delete a stored dump's bytes and mark its record body_deleted
 * (on the record as it is now; *rec is updated to it); or delete the record,
 * its index entry and any bytes left. Safe against concurrent changes:
 * CG_ERR_NOT_FOUND when another change got there first (nothing freed). */
int cg_store_delete_body(struct cg_store *st, struct cg_dump_record *rec);
/* was (may be NULL) receives the record as it was when deleted. */
int cg_store_delete_record(struct cg_store *st, const struct cg_dump_record *rec,
			   struct cg_dump_record *was);

/* Delete index entries older than before_ms whose record is gone (a content
 * duplicate's entry outlives the record it points at). */
int cg_store_sweep_index(struct cg_store *st, int64_t before_ms, uint64_t *deleted);

/* Point a dumpkey at an existing record (content duplicates). */
int cg_store_index_put(struct cg_store *st, const struct cg_dumpkey *k, const struct cg_index_entry *e);

/* The policy column family. Values from get are freed with cg_store_free. */
int cg_store_policy_get(struct cg_store *st, const void *key, size_t klen, uint8_t **val, size_t *vlen);
int cg_store_policy_write(struct cg_store *st, const struct cg_kv *kv, size_t n);
typedef int (*cg_store_kv_cb)(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen);
/* Visit the keys that start with prefix, in order; cb returns non-zero to stop. */
int cg_store_scan_policy(struct cg_store *st, const void *prefix, size_t plen, cg_store_kv_cb cb,
			 void *ctx);

/* Drop an open dump (rejected or expired): delete its chunks and open
 * record in one batch. */
int cg_store_drop_open(struct cg_store *st, const struct cg_dumpkey *k);

/* Read the open record of a dump. CG_ERR_NOT_FOUND if absent. */
int cg_store_get_open(struct cg_store *st, const struct cg_dumpkey *k, struct cg_dump_record *rec);

/* Small named values in the default column family (gateway id, …). */
int cg_store_meta_put(struct cg_store *st, const char *key, const char *value);
/* Copies into out (NUL-terminated); CG_ERR_NOT_FOUND if absent. */
int cg_store_meta_get(struct cg_store *st, const char *key, char *out, size_t cap);

int cg_store_index_get(struct cg_store *st, const struct cg_dumpkey *k, struct cg_index_entry *out);

/* A consistent copy of the whole store in dir (which must not exist), taken
 * while it runs: a RocksDB checkpoint (hard links where dir is on the same
 * file system). dir opens as a store of its own. */
int cg_store_checkpoint(struct cg_store *st, const char *dir, char *err, size_t errlen);

/* Make every write so far durable against power loss (fsync of the WAL). */
int cg_store_sync(struct cg_store *st);

/* Startup scans. Callbacks return 0 to continue, non-zero to stop. */
typedef int (*cg_store_open_cb)(void *ctx, const struct cg_dumpkey *k, const struct cg_dump_record *rec);
typedef int (*cg_store_record_cb)(void *ctx, const struct cg_dump_record *rec);
int cg_store_scan_open(struct cg_store *st, cg_store_open_cb cb, void *ctx);
int cg_store_scan_records(struct cg_store *st, cg_store_record_cb cb, void *ctx);

int cg_store_get_record(struct cg_store *st, uint64_t seq, struct cg_dump_record *rec);
/* Records with seq >= from_seq, in seq order (receipt order). */
int cg_store_scan_records_from(struct cg_store *st, uint64_t from_seq, cg_store_record_cb cb, void *ctx);
/* Change a committed record's status (forwarded), on the record as it is
 * now; CG_ERR_NOT_FOUND when it was deleted meanwhile (purge, retention). */
int cg_store_set_status(struct cg_store *st, uint64_t seq, uint32_t status);
/* The bytes of a stored dump; *body is freed with free(). */
int cg_store_get_body(struct cg_store *st, uint64_t seq, uint8_t **body, size_t *len);

/* Record codec (CBOR), exposed for tests. */
int cg_record_encode(const struct cg_dump_record *rec, uint8_t **buf, size_t *len);
int cg_record_decode(const uint8_t *buf, size_t len, struct cg_dump_record *rec);

/* The stable dump id of SPEC §8: {gateway}/{device}/{dump_id}/{received_at ms}. */
void cg_dump_stable_id(const char *gateway, const struct cg_dump_record *rec, char *out, size_t outlen);

#endif
