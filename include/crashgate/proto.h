/*
 * crashgate wire format (SPEC §2–§5): CBOR maps with small integer keys.
 *
 * This library is pure: no I/O, no allocation. Decoders fill structs whose
 * pointers point INTO the caller's input buffer (valid as long as that buffer
 * is); encoders write into a caller-supplied buffer and return the number of
 * bytes written. It builds on libcbor's streaming decoder and its encoders,
 * so it runs on a device as well as in the gateway.
 *
 * Bounds: nesting depth of skipped unknown values is limited to
 * CG_PROTO_MAX_DEPTH; indefinite-length maps and arrays are accepted,
 * indefinite-length byte and text strings are not (they would need an
 * allocation to reassemble); duplicate known keys are malformed.
 */
#ifndef CRASHGATE_PROTO_H
#define CRASHGATE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crashgate/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_PROTO_MAX_DEPTH      8
#define CG_PROTO_MAX_BUILD_ID   64
#define CG_PROTO_MAX_FW_VERSION 128
#define CG_PROTO_MAX_META       1024   /* encoded size of the meta map */
#define CG_PROTO_MAX_REASON     256
#define CG_PROTO_MAX_GROUP      128
#define CG_DEVICE_ID_MAX        64

/* Message types (key 0). */
enum cg_msg_type {
	CG_MSG_HELLO = 1,
	CG_MSG_CHUNK = 2,
	CG_MSG_ACK = 3,
	CG_MSG_CONSENT = 4,
};

/* Map keys (SPEC §3–§5). 0x00–0x10 are Spotflow-compatible. */
enum cg_key {
	CG_KEY_TYPE = 0,
	CG_KEY_UPTIME_MS = 6,
	CG_KEY_DUMP_ID = 9,
	CG_KEY_ORDINAL = 10,
	CG_KEY_CONTENT = 11,
	CG_KEY_LAST = 12,
	CG_KEY_BUILD_ID = 14,
	CG_KEY_OS = 15,
	CG_KEY_RUN_ID = 30,
	CG_KEY_TOTAL_SIZE = 32,
	CG_KEY_CRC32 = 33,
	CG_KEY_FORMAT = 34,
	CG_KEY_FW_VERSION = 35,
	CG_KEY_META = 36,
	CG_KEY_STATUS = 40,
	CG_KEY_REASON = 41,
	CG_KEY_MISSING = 42,
	CG_KEY_ENABLED = 50,
	CG_KEY_ISSUED_AT = 51,
	CG_KEY_VALID_FOR = 52,
	CG_KEY_GROUP = 53,
};

/* Acknowledgement status (SPEC §4). */
enum cg_ack_status {
	CG_ACK_COMPLETE = 1,
	CG_ACK_THROTTLED = 2,
	CG_ACK_REJECTED = 3,
	CG_ACK_CONSENT_REQUIRED = 4,
	CG_ACK_BUSY = 5,
	CG_ACK_INCOMPLETE = 6,
};

/* Dump formats (key 34). */
enum cg_format {
	CG_FORMAT_DETECT = 0,
	CG_FORMAT_ZEPHYR = 1,
	CG_FORMAT_MINIDUMP = 2,
	CG_FORMAT_ELF_CORE = 3,
	CG_FORMAT_RAW = 4,
};

/* Presence bits for optional fields (struct .present). */
#define CG_HAS_UPTIME     (1u << 0)
#define CG_HAS_BUILD_ID   (1u << 1)
#define CG_HAS_OS         (1u << 2)
#define CG_HAS_TOTAL_SIZE (1u << 3)
#define CG_HAS_CRC32      (1u << 4)
#define CG_HAS_FORMAT     (1u << 5)
#define CG_HAS_FW_VERSION (1u << 6)
#define CG_HAS_META       (1u << 7)
#define CG_HAS_RUN_ID     (1u << 8)
#define CG_HAS_REASON     (1u << 9)
#define CG_HAS_VALID_FOR  (1u << 10)
#define CG_HAS_GROUP      (1u << 11)

/*
 * A coredump chunk (type 2). Required: dump_id, ordinal, content (1 byte or
 * more). `last` defaults to false when absent. Pointers refer into the
 * decoded buffer. `meta` is the raw encoded CBOR of key 36 (a map of tstr →
 * tstr/int, at most CG_PROTO_MAX_META bytes), validated by the decoder.
 */
struct cg_chunk {
	uint32_t present;
	uint64_t dump_id;
	uint32_t ordinal;
	const uint8_t *content;
	size_t content_len;
	bool last;
	int64_t uptime_ms;
	const uint8_t *build_id;
	size_t build_id_len;        /* 1..CG_PROTO_MAX_BUILD_ID */
	uint32_t os;
	uint64_t total_size;
	uint32_t crc32;
	uint32_t format;            /* enum cg_format; values > 4 are CG_ERR_RANGE */
	const char *fw_version;     /* not NUL-terminated */
	size_t fw_version_len;      /* 0..CG_PROTO_MAX_FW_VERSION */
	const uint8_t *meta;
	size_t meta_len;
};

/* A session/hello message (type 1). */
struct cg_hello {
	uint32_t present;
	int64_t uptime_ms;
	const uint8_t *build_id;
	size_t build_id_len;
	uint32_t os;
	uint64_t run_id;
	const char *fw_version;
	size_t fw_version_len;
};

struct cg_range {
	uint32_t first;
	uint32_t last;              /* inclusive; UINT32_MAX = "through the end" */
};

/*
 * An acknowledgement (type 3). On decode, `missing` must point to caller
 * storage of `missing_cap` entries; n_missing is set to the count found
 * (CG_ERR_TOO_LARGE if there are more than missing_cap).
 */
struct cg_ack {
	uint32_t present;
	uint64_t dump_id;
	uint32_t status;            /* enum cg_ack_status, 1..6 */
	const char *reason;         /* not NUL-terminated */
	size_t reason_len;          /* 0..CG_PROTO_MAX_REASON */
	struct cg_range *missing;
	size_t n_missing;
	size_t missing_cap;
};

/* The consent signal (type 4). valid_for defaults to 172800 when absent. */
struct cg_consent {
	uint32_t present;
	bool enabled;
	uint64_t issued_at;
	uint64_t valid_for;
	const char *group;
	size_t group_len;
};

/*
 * Peek at key 0 of any message. Returns CG_OK and sets *type, or an error.
 */
int cg_msg_type(const uint8_t *buf, size_t len, uint32_t *type);

/*
 * Decoders. Each returns CG_OK or a cg_err; on error *out is unspecified.
 * The whole buffer must be exactly one CBOR map (trailing bytes are
 * CG_ERR_MALFORMED). Unknown keys are skipped, within the depth bound.
 */
int cg_chunk_decode(const uint8_t *buf, size_t len, struct cg_chunk *out);
int cg_hello_decode(const uint8_t *buf, size_t len, struct cg_hello *out);
int cg_ack_decode(const uint8_t *buf, size_t len, struct cg_ack *out);
int cg_consent_decode(const uint8_t *buf, size_t len, struct cg_consent *out);

/* Encoder flags. */
#define CG_ENC_SPOTFLOW (1u << 0)   /* chunk: emit only keys 0x00–0x10 */

/*
 * Encoders. Write one definite-length map into buf[0..cap) and set *written.
 * Optional fields are emitted when their CG_HAS_* bit is set. Returns CG_OK,
 * CG_ERR_BUFFER when cap is too small, or CG_ERR_RANGE for out-of-range input.
 */
int cg_chunk_encode(const struct cg_chunk *c, uint32_t flags, uint8_t *buf, size_t cap, size_t *written);
int cg_hello_encode(const struct cg_hello *h, uint8_t *buf, size_t cap, size_t *written);
int cg_ack_encode(const struct cg_ack *a, uint8_t *buf, size_t cap, size_t *written);
int cg_consent_encode(const struct cg_consent *c, uint8_t *buf, size_t cap, size_t *written);

/* Encoded-size upper bound of a chunk carrying content_len bytes. */
size_t cg_chunk_encoded_max(size_t content_len);

/* Device id check (SPEC §2): 1–64 chars of [A-Za-z0-9._-]. */
bool cg_device_id_valid(const char *id, size_t len);

/* CRC-32/IEEE (the zlib/Ethernet polynomial), incremental: start with 0. */
uint32_t cg_crc32(uint32_t crc, const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
