/*
 * libFuzzer target for the wire format: every input is decoded as each of
 * the four messages. Whatever decodes must re-encode (CG_OK) into
 * cg_chunk_encoded_max() bytes or a generous bound, and decode again to the
 * same fields; any difference aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crashgate/proto.h"

#define MAX_RANGES 64

static void check(int cond)
{
	if (!cond)
		abort();
}

static void same_bytes(const void *a, size_t an, const void *b, size_t bn)
{
	check(an == bn);
	check(an == 0 || memcmp(a, b, an) == 0);
}

static void same_chunk(const struct cg_chunk *a, const struct cg_chunk *b)
{
	check(a->present == b->present);
	check(a->dump_id == b->dump_id);
	check(a->ordinal == b->ordinal);
	same_bytes(a->content, a->content_len, b->content, b->content_len);
	check(a->last == b->last);
	check(a->uptime_ms == b->uptime_ms);
	same_bytes(a->build_id, a->build_id_len, b->build_id, b->build_id_len);
	check(a->os == b->os);
	check(a->total_size == b->total_size);
	check(a->crc32 == b->crc32);
	check(a->format == b->format);
	same_bytes(a->fw_version, a->fw_version_len, b->fw_version, b->fw_version_len);
	same_bytes(a->meta, a->meta_len, b->meta, b->meta_len);
}

static void fuzz_chunk(const uint8_t *data, size_t size)
{
	struct cg_chunk c, again;

	if (cg_chunk_decode(data, size, &c) != CG_OK)
		return;
	check(c.content_len >= 1 && c.content_len <= size);
	check(c.build_id_len <= CG_PROTO_MAX_BUILD_ID);
	check(c.fw_version_len <= CG_PROTO_MAX_FW_VERSION);
	check(c.meta_len <= CG_PROTO_MAX_META);
	check(c.format <= CG_FORMAT_RAW);

	size_t cap = cg_chunk_encoded_max(c.content_len), n;
	uint8_t *buf = malloc(cap);
	check(buf != NULL);
	check(cg_chunk_encode(&c, 0, buf, cap, &n) == CG_OK);
	check(n <= cap);
	check(cg_chunk_decode(buf, n, &again) == CG_OK);
	same_chunk(&c, &again);

	/* The Spotflow encoding keeps the fields it can carry. */
	check(cg_chunk_encode(&c, CG_ENC_SPOTFLOW, buf, cap, &n) == CG_OK);
	check(cg_chunk_decode(buf, n, &again) == CG_OK);
	c.present &= CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS;
	check(again.present == c.present);
	check(again.dump_id == c.dump_id && again.ordinal == c.ordinal);
	same_bytes(c.content, c.content_len, again.content, again.content_len);
	free(buf);
}

static void fuzz_hello(const uint8_t *data, size_t size)
{
	struct cg_hello h, again;
	uint8_t buf[512];
	size_t n;

	if (cg_hello_decode(data, size, &h) != CG_OK)
		return;
	check(cg_hello_encode(&h, buf, sizeof buf, &n) == CG_OK);
	check(cg_hello_decode(buf, n, &again) == CG_OK);
	check(h.present == again.present);
	check(h.uptime_ms == again.uptime_ms);
	same_bytes(h.build_id, h.build_id_len, again.build_id, again.build_id_len);
	check(h.os == again.os);
	check(h.run_id == again.run_id);
	same_bytes(h.fw_version, h.fw_version_len, again.fw_version, again.fw_version_len);
}

static void fuzz_ack(const uint8_t *data, size_t size)
{
	struct cg_range r1[MAX_RANGES], r2[MAX_RANGES];
	struct cg_ack a = { .missing = r1, .missing_cap = MAX_RANGES };
	struct cg_ack again = { .missing = r2, .missing_cap = MAX_RANGES };
	uint8_t buf[512 + MAX_RANGES * 11];
	size_t n;

	if (cg_ack_decode(data, size, &a) != CG_OK)
		return;
	check(a.n_missing <= MAX_RANGES);
	check(a.status >= CG_ACK_COMPLETE && a.status <= CG_ACK_INCOMPLETE);
	check(cg_ack_encode(&a, buf, sizeof buf, &n) == CG_OK);
	check(cg_ack_decode(buf, n, &again) == CG_OK);
	check(a.present == again.present);
	check(a.dump_id == again.dump_id && a.status == again.status);
	same_bytes(a.reason, a.reason_len, again.reason, again.reason_len);
	same_bytes(a.missing, a.n_missing * sizeof *r1, again.missing,
		   again.n_missing * sizeof *r2);
}

static void fuzz_consent(const uint8_t *data, size_t size)
{
	struct cg_consent c, again;
	uint8_t buf[512];
	size_t n;

	if (cg_consent_decode(data, size, &c) != CG_OK)
		return;
	check(cg_consent_encode(&c, buf, sizeof buf, &n) == CG_OK);
	check(cg_consent_decode(buf, n, &again) == CG_OK);
	check(c.present == again.present && c.enabled == again.enabled);
	check(c.issued_at == again.issued_at && c.valid_for == again.valid_for);
	same_bytes(c.group, c.group_len, again.group, again.group_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t type;

	(void)cg_msg_type(data, size, &type);
	fuzz_chunk(data, size);
	fuzz_hello(data, size);
	fuzz_ack(data, size);
	fuzz_consent(data, size);
	return 0;
}
