/*
 * Unit tests of the wire format library (proto/proto.c). Messages are
 * written as hex by hand, mostly as indefinite-length maps ("bf ... ff") so a
 * key can be added or left out without recounting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cbor.h>

#include "crashgate/proto.h"

/* ---- helpers ------------------------------------------------------------ */

#define BUFSZ 8192

/* Hex to bytes; spaces are ignored. */
static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	int hi = -1;

	for (; *s; s++) {
		int v = 0;

		if (*s == ' ' || *s == '\n')
			continue;
		if (*s >= '0' && *s <= '9')
			v = *s - '0';
		else if (*s >= 'a' && *s <= 'f')
			v = *s - 'a' + 10;
		else if (*s >= 'A' && *s <= 'F')
			v = *s - 'A' + 10;
		else
			fail_msg("bad hex character '%c'", *s);
		if (hi < 0) {
			hi = v;
			continue;
		}
		assert_true(n < cap);
		out[n++] = (uint8_t)(hi << 4 | v);
		hi = -1;
	}
	assert_int_equal(hi, -1);
	return n;
}

static uint8_t g_in[BUFSZ];
static uint8_t g_out[BUFSZ];
static struct cg_range g_ranges[4];

static int chunk_hex(const char *hex, struct cg_chunk *c)
{
	size_t n = unhex(hex, g_in, sizeof g_in);
	return cg_chunk_decode(g_in, n, c);
}

static int chunk_rc(const char *hex)
{
	struct cg_chunk c;
	return chunk_hex(hex, &c);
}

static int hello_rc(const char *hex)
{
	struct cg_hello h;
	size_t n = unhex(hex, g_in, sizeof g_in);
	return cg_hello_decode(g_in, n, &h);
}

static int ack_hex(const char *hex, struct cg_ack *a)
{
	size_t n = unhex(hex, g_in, sizeof g_in);
	memset(a, 0, sizeof *a);
	a->missing = g_ranges;
	a->missing_cap = 4;
	return cg_ack_decode(g_in, n, a);
}

static int ack_rc(const char *hex)
{
	struct cg_ack a;
	return ack_hex(hex, &a);
}

static int consent_rc(const char *hex)
{
	struct cg_consent c;
	size_t n = unhex(hex, g_in, sizeof g_in);
	return cg_consent_decode(g_in, n, &c);
}

/* A chunk with the required keys, plus x. */
#define CH(x) "bf 0002 0907 0a00 0b41aa " x " ff"
/* An ack with the required keys, plus x. */
#define ACK(x) "bf 0003 0907 182801 " x " ff"
/* A consent with the required keys, plus x. */
#define CON(x) "bf 0004 1832f5 183301 " x " ff"

/* A growable test message built with libcbor's encoders. */
struct tb {
	uint8_t b[BUFSZ];
	size_t n;
};

static void tb_hex(struct tb *t, const char *hex)
{
	t->n += unhex(hex, t->b + t->n, sizeof t->b - t->n);
}

static void tb_tstr(struct tb *t, size_t len, char fill)
{
	size_t h = cbor_encode_string_start(len, t->b + t->n, sizeof t->b - t->n);
	assert_true(h > 0 && t->n + h + len <= sizeof t->b);
	t->n += h;
	memset(t->b + t->n, fill, len);
	t->n += len;
}

static void tb_bstr(struct tb *t, size_t len, uint8_t fill)
{
	size_t h = cbor_encode_bytestring_start(len, t->b + t->n, sizeof t->b - t->n);
	assert_true(h > 0 && t->n + h + len <= sizeof t->b);
	t->n += h;
	memset(t->b + t->n, fill, len);
	t->n += len;
}

/* A meta map {"m": "xxx…"} of exactly `size` encoded bytes (size ≥ 262). */
static void tb_meta(struct tb *t, size_t size)
{
	tb_hex(t, "a1 616d");
	tb_tstr(t, size - 6, 'x');
}

static const uint8_t build_id[] = { 0xa1, 0xb2, 0xc3, 0xd4 };
static const uint8_t meta_ex[] = {
	0xa2, 0x66, 'r', 'e', 'a', 's', 'o', 'n', 0x68, 'w', 'a', 't', 'c', 'h',
	'd', 'o', 'g', 0x64, 'e', 'x', 'i', 't', 0x20,
};
static const uint8_t content_ex[] = { 0x00, 0x01, 0x02, 0x03 };

static void assert_mem(const void *a, size_t an, const void *b, size_t bn)
{
	assert_int_equal(an, bn);
	if (an)
		assert_memory_equal(a, b, an);
}

static void assert_chunk_eq(const struct cg_chunk *a, const struct cg_chunk *b)
{
	assert_int_equal(a->present, b->present);
	assert_true(a->dump_id == b->dump_id);
	assert_int_equal(a->ordinal, b->ordinal);
	assert_mem(a->content, a->content_len, b->content, b->content_len);
	assert_int_equal(a->last, b->last);
	if (a->present & CG_HAS_UPTIME)
		assert_true(a->uptime_ms == b->uptime_ms);
	if (a->present & CG_HAS_BUILD_ID)
		assert_mem(a->build_id, a->build_id_len, b->build_id, b->build_id_len);
	if (a->present & CG_HAS_OS)
		assert_int_equal(a->os, b->os);
	if (a->present & CG_HAS_TOTAL_SIZE)
		assert_true(a->total_size == b->total_size);
	if (a->present & CG_HAS_CRC32)
		assert_int_equal(a->crc32, b->crc32);
	if (a->present & CG_HAS_FORMAT)
		assert_int_equal(a->format, b->format);
	if (a->present & CG_HAS_FW_VERSION)
		assert_mem(a->fw_version, a->fw_version_len, b->fw_version, b->fw_version_len);
	if (a->present & CG_HAS_META)
		assert_mem(a->meta, a->meta_len, b->meta, b->meta_len);
}

static struct cg_chunk full_chunk(void)
{
	return (struct cg_chunk){
		.present = CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS |
			   CG_HAS_TOTAL_SIZE | CG_HAS_CRC32 | CG_HAS_FORMAT |
			   CG_HAS_FW_VERSION | CG_HAS_META,
		.dump_id = 0x1122334455667788ull,
		.ordinal = 70000,
		.content = content_ex,
		.content_len = sizeof content_ex,
		.last = true,
		.uptime_ms = -42,
		.build_id = build_id,
		.build_id_len = sizeof build_id,
		.os = 3,
		.total_size = 1ull << 33,
		.crc32 = 0xcbf43926,
		.format = CG_FORMAT_ELF_CORE,
		.fw_version = "2.0.0-rc.1+g1234",
		.fw_version_len = 16,
		.meta = meta_ex,
		.meta_len = sizeof meta_ex,
	};
}

/* ---- round trips ---------------------------------------------------------- */

static void test_chunk_roundtrip_required(void **state)
{
	(void)state;
	struct cg_chunk in = { .dump_id = 7, .ordinal = 0, .content = content_ex,
			       .content_len = sizeof content_ex };
	struct cg_chunk out;
	size_t n;

	assert_int_equal(cg_chunk_encode(&in, 0, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_chunk_decode(g_out, n, &out), CG_OK);
	assert_chunk_eq(&in, &out);
	assert_false(out.last);
	/* {0: 2, 9: 7, 10: 0, 11: h'00010203', 12: false} */
	uint8_t want[32];
	size_t wn = unhex("a5 0002 0907 0a00 0b4400010203 0cf4", want, sizeof want);
	assert_mem(g_out, n, want, wn);
}

static void test_chunk_roundtrip_full(void **state)
{
	(void)state;
	struct cg_chunk in = full_chunk(), out;
	size_t n;

	assert_int_equal(cg_chunk_encode(&in, 0, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_chunk_decode(g_out, n, &out), CG_OK);
	assert_chunk_eq(&in, &out);
	/* Pointers refer into the encoded buffer. */
	assert_true(out.content > g_out && out.content < g_out + n);
	assert_true(out.meta > g_out && out.meta + out.meta_len <= g_out + n);

	/* Extremes of every integer. */
	in.dump_id = UINT64_MAX;
	in.ordinal = UINT32_MAX;
	in.uptime_ms = INT64_MIN;
	in.total_size = UINT64_MAX;
	in.crc32 = UINT32_MAX;
	in.os = UINT32_MAX;
	in.format = CG_FORMAT_RAW;
	in.last = false;
	assert_int_equal(cg_chunk_encode(&in, 0, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_chunk_decode(g_out, n, &out), CG_OK);
	assert_chunk_eq(&in, &out);
	in.uptime_ms = INT64_MAX;
	assert_int_equal(cg_chunk_encode(&in, 0, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_chunk_decode(g_out, n, &out), CG_OK);
	assert_true(out.uptime_ms == INT64_MAX);

	/* Each optional field alone. */
	for (uint32_t bit = 1; bit <= CG_HAS_META; bit <<= 1) {
		struct cg_chunk one = full_chunk();
		one.present = bit;
		assert_int_equal(cg_chunk_encode(&one, 0, g_out, sizeof g_out, &n), CG_OK);
		assert_int_equal(cg_chunk_decode(g_out, n, &out), CG_OK);
		assert_chunk_eq(&one, &out);
	}
}

static void test_chunk_encode_ignores_foreign_bits(void **state)
{
	(void)state;
	struct cg_chunk in = full_chunk(), out;
	size_t n;

	in.present = CG_HAS_RUN_ID | CG_HAS_REASON | CG_HAS_GROUP | CG_HAS_VALID_FOR;
	assert_int_equal(cg_chunk_encode(&in, 0, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_chunk_decode(g_out, n, &out), CG_OK);
	assert_int_equal(out.present, 0);
}

static void test_hello_roundtrip(void **state)
{
	(void)state;
	struct cg_hello in = { 0 }, out;
	size_t n;

	assert_int_equal(cg_hello_encode(&in, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(n, 3);
	assert_int_equal(cg_hello_decode(g_out, n, &out), CG_OK);
	assert_int_equal(out.present, 0);

	in = (struct cg_hello){
		.present = CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS |
			   CG_HAS_RUN_ID | CG_HAS_FW_VERSION,
		.uptime_ms = 1500,
		.build_id = build_id,
		.build_id_len = sizeof build_id,
		.os = 2,
		.run_id = UINT64_MAX,
		.fw_version = "",
		.fw_version_len = 0,
	};
	assert_int_equal(cg_hello_encode(&in, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_hello_decode(g_out, n, &out), CG_OK);
	assert_int_equal(out.present, in.present);
	assert_true(out.uptime_ms == 1500);
	assert_mem(out.build_id, out.build_id_len, build_id, sizeof build_id);
	assert_int_equal(out.os, 2);
	assert_true(out.run_id == UINT64_MAX);
	assert_int_equal(out.fw_version_len, 0);
}

static void test_ack_roundtrip(void **state)
{
	(void)state;
	struct cg_range r[3] = { { 0, 0 }, { 2, 9 }, { 12, UINT32_MAX } };
	struct cg_ack in = { .dump_id = 99, .status = CG_ACK_COMPLETE }, out;
	struct cg_range got[3];
	size_t n;

	assert_int_equal(cg_ack_encode(&in, g_out, sizeof g_out, &n), CG_OK);
	out = (struct cg_ack){ .missing = got, .missing_cap = 3 };
	assert_int_equal(cg_ack_decode(g_out, n, &out), CG_OK);
	assert_true(out.dump_id == 99);
	assert_int_equal(out.status, CG_ACK_COMPLETE);
	assert_int_equal(out.present, 0);
	assert_int_equal(out.n_missing, 0);
	assert_ptr_equal(out.missing, got);
	assert_int_equal(out.missing_cap, 3);

	in = (struct cg_ack){
		.present = CG_HAS_REASON, .dump_id = UINT64_MAX,
		.status = CG_ACK_INCOMPLETE, .reason = "resend", .reason_len = 6,
		.missing = r, .n_missing = 3,
	};
	assert_int_equal(cg_ack_encode(&in, g_out, sizeof g_out, &n), CG_OK);
	out = (struct cg_ack){ .missing = got, .missing_cap = 3 };
	assert_int_equal(cg_ack_decode(g_out, n, &out), CG_OK);
	assert_true(out.dump_id == UINT64_MAX);
	assert_int_equal(out.status, CG_ACK_INCOMPLETE);
	assert_int_equal(out.present, CG_HAS_REASON);
	assert_mem(out.reason, out.reason_len, "resend", 6);
	assert_int_equal(out.n_missing, 3);
	assert_memory_equal(got, r, sizeof r);

	/* One short of room for the ranges. */
	out = (struct cg_ack){ .missing = got, .missing_cap = 2 };
	assert_int_equal(cg_ack_decode(g_out, n, &out), CG_ERR_TOO_LARGE);
}

static void test_consent_roundtrip(void **state)
{
	(void)state;
	struct cg_consent in = { .enabled = true, .issued_at = 1735689600 }, out;
	size_t n;

	assert_int_equal(cg_consent_encode(&in, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_consent_decode(g_out, n, &out), CG_OK);
	assert_true(out.enabled);
	assert_true(out.issued_at == 1735689600);
	assert_true(out.valid_for == 172800);
	assert_int_equal(out.present, 0);

	in = (struct cg_consent){
		.present = CG_HAS_VALID_FOR | CG_HAS_GROUP, .enabled = false,
		.issued_at = UINT64_MAX, .valid_for = 0, .group = "fleet-eu",
		.group_len = 8,
	};
	assert_int_equal(cg_consent_encode(&in, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_consent_decode(g_out, n, &out), CG_OK);
	assert_false(out.enabled);
	assert_true(out.issued_at == UINT64_MAX);
	assert_true(out.valid_for == 0);
	assert_int_equal(out.present, CG_HAS_VALID_FOR | CG_HAS_GROUP);
	assert_mem(out.group, out.group_len, "fleet-eu", 8);
}

/* ---- Spotflow compatibility ---------------------------------------------- */

/* Every key of a map encoded in buf, checked with libcbor's allocating loader. */
static void assert_keys_at_most(const uint8_t *buf, size_t n, uint64_t max)
{
	struct cbor_load_result res;
	cbor_item_t *item = cbor_load(buf, n, &res);

	assert_non_null(item);
	assert_int_equal(res.error.code, CBOR_ERR_NONE);
	assert_int_equal(res.read, n);
	assert_true(cbor_isa_map(item));
	struct cbor_pair *pairs = cbor_map_handle(item);
	for (size_t i = 0; i < cbor_map_size(item); i++) {
		assert_true(cbor_isa_uint(pairs[i].key));
		assert_true(cbor_get_int(pairs[i].key) <= max);
	}
	cbor_decref(&item);
}

static void test_spotflow_encoding(void **state)
{
	(void)state;
	struct cg_chunk in = full_chunk(), out;
	size_t n;

	assert_int_equal(cg_chunk_encode(&in, CG_ENC_SPOTFLOW, g_out, sizeof g_out, &n), CG_OK);
	assert_keys_at_most(g_out, n, 0x10);
	assert_int_equal(cg_chunk_decode(g_out, n, &out), CG_OK);
	assert_int_equal(out.present, CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS);
	in.present &= CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS;
	assert_chunk_eq(&in, &out);

	/* The same chunk without the flag does carry the extension keys. */
	in = full_chunk();
	assert_int_equal(cg_chunk_encode(&in, 0, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_chunk_decode(g_out, n, &out), CG_OK);
	assert_int_equal(out.present, in.present);
}

/*
 * A chunk as Spotflow's Zephyr module writes it with zcbor (an indefinite-
 * length map, `last` always present), encoded by hand from RFC 8949:
 *   bf                 map (indefinite length)
 *   00 02              0: 2            type = chunk
 *   09 1a 12345678     9: 305419896    dump_id
 *   0a 00              10: 0           ordinal
 *   0b 44 7f454c46     11: h'7f454c46' content
 *   0c f4              12: false       last
 *   0f 01              15: 1           os = Zephyr
 *   ff                 break
 */
#define HEX_SPOTFLOW "bf0002091a123456780a000b447f454c460cf40f01ff"

static void test_spotflow_hex(void **state)
{
	(void)state;
	struct cg_chunk c;

	assert_int_equal(chunk_hex(HEX_SPOTFLOW, &c), CG_OK);
	assert_int_equal(c.present, CG_HAS_OS);
	assert_true(c.dump_id == 305419896);
	assert_int_equal(c.ordinal, 0);
	assert_mem(c.content, c.content_len, "\x7f" "ELF", 4);
	assert_false(c.last);
	assert_int_equal(c.os, 1);

	/* Re-encoded for Spotflow, it decodes to the same fields. */
	struct cg_chunk again;
	uint8_t copy[64];
	size_t n;
	assert_int_equal(cg_chunk_encode(&c, CG_ENC_SPOTFLOW, copy, sizeof copy, &n), CG_OK);
	assert_keys_at_most(copy, n, 0x10);
	assert_int_equal(cg_chunk_decode(copy, n, &again), CG_OK);
	assert_chunk_eq(&c, &again);
}

static void test_indefinite_maps(void **state)
{
	(void)state;
	struct cg_chunk c;
	struct cg_ack a;

	assert_int_equal(chunk_hex(CH(""), &c), CG_OK);
	assert_int_equal(c.content_len, 1);
	assert_int_equal(hello_rc("bf 0001 ff"), CG_OK);
	assert_int_equal(ack_hex(ACK("182a 9f 9f 01 02 ff 82 03 04 ff"), &a), CG_OK);
	assert_int_equal(a.n_missing, 2);
	assert_int_equal(a.missing[1].first, 3);
	assert_int_equal(consent_rc(CON("")), CG_OK);
	/* Indefinite meta. */
	assert_int_equal(chunk_hex(CH("1824 bf 6161 01 6162 6178 ff"), &c), CG_OK);
	assert_int_equal(c.meta_len, 9);
	assert_int_equal(c.meta[0], 0xbf);
}

/* ---- the README examples --------------------------------------------------- */

/* Keep these identical to proto/README.md; test_readme_has_examples checks. */
#define HEX_CHUNK0 "ac0002061a00013d5209070a000b44000102030cf40e44a1b2c3d40f011820191000182201182365312e342e321824a266726561736f6e687761746368646f67646578697420"
#define HEX_CHUNK_LAST "a6000209070a030b41ff0cf518211acbf43926"
#define HEX_HELLO "a60001061905dc0e44a1b2c3d40f01181e1aabcdef01182365312e342e32"
#define HEX_ACK_COMPLETE "a300030907182801"
#define HEX_ACK_INCOMPLETE "a400030907182806182a8282010282051affffffff"
#define HEX_ACK_REJECTED "a40003090718280318296762616420637263"
#define HEX_CONSENT "a500041832f518331a6774858018341a0002a300183568666c6565742d6575"

static const struct example {
	const char *hex;
	uint32_t type;
	bool canonical;  /* our encoder writes exactly these bytes */
} examples[] = {
	{ HEX_SPOTFLOW, CG_MSG_CHUNK, false },
	{ HEX_CHUNK0, CG_MSG_CHUNK, true },
	{ HEX_CHUNK_LAST, CG_MSG_CHUNK, true },
	{ HEX_HELLO, CG_MSG_HELLO, true },
	{ HEX_ACK_COMPLETE, CG_MSG_ACK, true },
	{ HEX_ACK_INCOMPLETE, CG_MSG_ACK, true },
	{ HEX_ACK_REJECTED, CG_MSG_ACK, true },
	{ HEX_CONSENT, CG_MSG_CONSENT, true },
};
#define N_EXAMPLES (sizeof examples / sizeof examples[0])

static char *read_readme(void)
{
	/* __FILE__ is .../tests/unit/test_proto.c; the README is .../proto/. */
	const char *file = __FILE__, *suffix = "tests/unit/test_proto.c";
	char path[4096];
	size_t flen = strlen(file), slen = strlen(suffix);

	assert_true(flen >= slen && strcmp(file + flen - slen, suffix) == 0);
	snprintf(path, sizeof path, "%.*sproto/README.md", (int)(flen - slen), file);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	char *text = calloc(1, 1 << 20);
	assert_non_null(text);
	size_t n = fread(text, 1, (1 << 20) - 1, f);
	fclose(f);
	text[n] = '\0';
	return text;
}

static void test_readme_has_examples(void **state)
{
	(void)state;
	char *text = read_readme();

	for (size_t i = 0; i < N_EXAMPLES; i++) {
		if (!strstr(text, examples[i].hex))
			fail_msg("proto/README.md lacks example %s", examples[i].hex);
	}
	free(text);
}

static int decode_as(uint32_t type, const uint8_t *buf, size_t n)
{
	struct cg_chunk c;
	struct cg_hello h;
	struct cg_ack a = { .missing = g_ranges, .missing_cap = 4 };
	struct cg_consent k;

	switch (type) {
	case CG_MSG_CHUNK: return cg_chunk_decode(buf, n, &c);
	case CG_MSG_HELLO: return cg_hello_decode(buf, n, &h);
	case CG_MSG_ACK: return cg_ack_decode(buf, n, &a);
	case CG_MSG_CONSENT: return cg_consent_decode(buf, n, &k);
	}
	return -1;
}

/* Each example decodes with its own decoder and is the wrong type for the others. */
static void test_examples_decode_and_types(void **state)
{
	(void)state;
	uint8_t buf[256];

	for (size_t i = 0; i < N_EXAMPLES; i++) {
		size_t n = unhex(examples[i].hex, buf, sizeof buf);
		uint32_t type = 0;

		assert_int_equal(cg_msg_type(buf, n, &type), CG_OK);
		assert_int_equal(type, examples[i].type);
		for (uint32_t t = CG_MSG_HELLO; t <= CG_MSG_CONSENT; t++) {
			int want = t == examples[i].type ? CG_OK : CG_ERR_MALFORMED;
			assert_int_equal(decode_as(t, buf, n), want);
		}
	}
}

/* The encoder writes the canonical examples byte for byte. */
static void test_examples_reencode(void **state)
{
	(void)state;
	uint8_t buf[256], out[256];
	struct cg_range r[4];

	for (size_t i = 0; i < N_EXAMPLES; i++) {
		size_t n = unhex(examples[i].hex, buf, sizeof buf), m = 0;
		struct cg_chunk c;
		struct cg_hello h;
		struct cg_ack a = { .missing = r, .missing_cap = 4 };
		struct cg_consent k;

		if (!examples[i].canonical)
			continue;
		switch (examples[i].type) {
		case CG_MSG_CHUNK:
			assert_int_equal(cg_chunk_decode(buf, n, &c), CG_OK);
			assert_int_equal(cg_chunk_encode(&c, 0, out, sizeof out, &m), CG_OK);
			break;
		case CG_MSG_HELLO:
			assert_int_equal(cg_hello_decode(buf, n, &h), CG_OK);
			assert_int_equal(cg_hello_encode(&h, out, sizeof out, &m), CG_OK);
			break;
		case CG_MSG_ACK:
			assert_int_equal(cg_ack_decode(buf, n, &a), CG_OK);
			assert_int_equal(cg_ack_encode(&a, out, sizeof out, &m), CG_OK);
			break;
		case CG_MSG_CONSENT:
			assert_int_equal(cg_consent_decode(buf, n, &k), CG_OK);
			assert_int_equal(cg_consent_encode(&k, out, sizeof out, &m), CG_OK);
			break;
		}
		assert_mem(out, m, buf, n);
	}
}

static void test_example_values(void **state)
{
	(void)state;
	struct cg_chunk c;
	struct cg_hello h;
	struct cg_ack a;
	struct cg_consent k;
	uint8_t buf[256];
	size_t n;

	assert_int_equal(chunk_hex(HEX_CHUNK0, &c), CG_OK);
	assert_int_equal(c.present, CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS |
			 CG_HAS_TOTAL_SIZE | CG_HAS_FORMAT | CG_HAS_FW_VERSION | CG_HAS_META);
	assert_true(c.uptime_ms == 81234);
	assert_true(c.dump_id == 7);
	assert_int_equal(c.ordinal, 0);
	assert_mem(c.content, c.content_len, content_ex, sizeof content_ex);
	assert_false(c.last);
	assert_mem(c.build_id, c.build_id_len, build_id, sizeof build_id);
	assert_int_equal(c.os, 1);
	assert_true(c.total_size == 4096);
	assert_int_equal(c.format, CG_FORMAT_ZEPHYR);
	assert_mem(c.fw_version, c.fw_version_len, "1.4.2", 5);
	assert_mem(c.meta, c.meta_len, meta_ex, sizeof meta_ex);

	assert_int_equal(chunk_hex(HEX_CHUNK_LAST, &c), CG_OK);
	assert_int_equal(c.present, CG_HAS_CRC32);
	assert_int_equal(c.ordinal, 3);
	assert_true(c.last);
	assert_int_equal(c.crc32, 0xcbf43926);

	n = unhex(HEX_HELLO, buf, sizeof buf);
	assert_int_equal(cg_hello_decode(buf, n, &h), CG_OK);
	assert_true(h.uptime_ms == 1500);
	assert_int_equal(h.os, 1);
	assert_true(h.run_id == 0xabcdef01);
	assert_mem(h.fw_version, h.fw_version_len, "1.4.2", 5);

	assert_int_equal(ack_hex(HEX_ACK_COMPLETE, &a), CG_OK);
	assert_int_equal(a.status, CG_ACK_COMPLETE);
	assert_int_equal(ack_hex(HEX_ACK_INCOMPLETE, &a), CG_OK);
	assert_int_equal(a.status, CG_ACK_INCOMPLETE);
	assert_int_equal(a.n_missing, 2);
	assert_int_equal(a.missing[0].first, 1);
	assert_int_equal(a.missing[0].last, 2);
	assert_int_equal(a.missing[1].first, 5);
	assert_int_equal(a.missing[1].last, UINT32_MAX);
	assert_int_equal(ack_hex(HEX_ACK_REJECTED, &a), CG_OK);
	assert_int_equal(a.status, CG_ACK_REJECTED);
	assert_mem(a.reason, a.reason_len, "bad crc", 7);

	n = unhex(HEX_CONSENT, buf, sizeof buf);
	assert_int_equal(cg_consent_decode(buf, n, &k), CG_OK);
	assert_true(k.enabled);
	assert_true(k.issued_at == 1735689600);
	assert_true(k.valid_for == 172800);
	assert_mem(k.group, k.group_len, "fleet-eu", 8);
}

/* ---- malformed input -------------------------------------------------------- */

static void test_truncated_everywhere(void **state)
{
	(void)state;
	struct cg_chunk full = full_chunk();
	size_t n;

	assert_int_equal(cg_chunk_encode(&full, 0, g_out, sizeof g_out, &n), CG_OK);
	for (size_t i = 0; i < n; i++) {
		/* A heap copy of exactly i bytes, so ASan sees any over-read. */
		uint8_t *p = malloc(i ? i : 1);
		struct cg_chunk c;
		memcpy(p, g_out, i);
		if (cg_chunk_decode(i ? p : NULL, i, &c) != CG_ERR_MALFORMED)
			fail_msg("prefix of %zu/%zu bytes not malformed", i, n);
		free(p);
	}
	for (size_t e = 0; e < N_EXAMPLES; e++) {
		uint8_t buf[256];
		size_t len = unhex(examples[e].hex, buf, sizeof buf);
		for (size_t i = 0; i < len; i++) {
			uint8_t *p = malloc(i ? i : 1);
			memcpy(p, buf, i);
			int rc = decode_as(examples[e].type, p, i);
			if (rc != CG_ERR_MALFORMED)
				fail_msg("example %zu cut at %zu: %d", e, i, rc);
			free(p);
		}
	}
}

static void test_trailing_bytes(void **state)
{
	(void)state;
	assert_int_equal(chunk_rc(CH("") "00"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("") "ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("") CH("")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(HEX_CHUNK_LAST "f6"), CG_ERR_MALFORMED);
	assert_int_equal(ack_rc(HEX_ACK_COMPLETE "00"), CG_ERR_MALFORMED);
	assert_int_equal(consent_rc(HEX_CONSENT "a0"), CG_ERR_MALFORMED);
	assert_int_equal(hello_rc(HEX_HELLO "01"), CG_ERR_MALFORMED);
}

static void test_not_a_map(void **state)
{
	(void)state;
	struct cg_chunk c;
	uint32_t type;

	assert_int_equal(chunk_rc("82 0002"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("02"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("41 00"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("f6"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("d9d9f7 a0"), CG_ERR_MALFORMED);  /* tagged */
	assert_int_equal(cg_chunk_decode(NULL, 0, &c), CG_ERR_MALFORMED);
	assert_int_equal(cg_chunk_decode(g_in, 0, &c), CG_ERR_MALFORMED);
	assert_int_equal(cg_msg_type(NULL, 0, &type), CG_ERR_MALFORMED);
	assert_int_equal(cg_msg_type((const uint8_t *)"\x82\x00\x02", 3, &type), CG_ERR_MALFORMED);
}

static void test_non_uint_keys_skipped(void **state)
{
	(void)state;
	struct cg_chunk c;

	/*
	 * "x": 1, -1: [1, 2], h'00': {0: 0}, true: 0, null: 0, 1.0: 0,
	 * 1(0): 0, []: 0, {"k": 1}: [_ 1] — the nested {0: 0} is not key 0.
	 */
	assert_int_equal(chunk_hex(CH("6178 01  20 820102  4100 a10000  f5 00  f6 00"
				      "  fa3f800000 00  c100 00  80 00  a1616b01 9f01ff"), &c),
			 CG_OK);
	assert_true(c.dump_id == 7);
	assert_int_equal(c.content[0], 0xaa);
	/* A non-uint key that is itself malformed is still malformed. */
	assert_int_equal(chunk_rc(CH("5f4100ff 00")), CG_ERR_MALFORMED);
}

static void test_unknown_keys_skipped(void **state)
{
	(void)state;
	struct cg_chunk c;

	assert_int_equal(chunk_hex(CH(
		"1863 83 01 a1 6161 82 4100 f93e00 c1 05"  /* 99: [1, {"a": [h'00', 1.5]}, 1(5)] */
		"1864 9f bf 6161 9f ff ff 01 ff"           /* 100: [_ {_ "a": [_ ]}, 1] */
		"1865 f6 1866 f7 1867 fb3ff0000000000000"  /* null, undefined, double */
		"1868 d820 a0"                             /* 104: 32({}) */
		"1869 1b0000000100000000"                  /* a big uint */
		"186a 3bffffffffffffffff"                  /* the most negative int */
		"1b ffffffffffffffff 00"                   /* key 2^64-1 */
		"183f 00 1840 00"                          /* keys 63 and 64 */
		"01 02 02 60 03 80 05 a0 07 f4 08 f5"      /* unused small keys */
		"1863 00"                                  /* duplicate unknown key */
		), &c), CG_OK);
	assert_true(c.dump_id == 7);
	assert_int_equal(c.ordinal, 0);
	assert_int_equal(c.present, 0);

	/* Keys that belong to other messages are unknown to the chunk. */
	assert_int_equal(chunk_rc(CH("181e 6178 1828 f5 1832 80 1835 01")), CG_OK);
	assert_int_equal(hello_rc("bf 0001 0b 01 0a 6178 09 f5 ff"), CG_OK);
	assert_int_equal(ack_rc(ACK("0b 01 1824 80")), CG_OK);
	assert_int_equal(consent_rc(CON("09 6178 1828 a0")), CG_OK);
}

/* Heads that libcbor 0.8's streaming decoder wrongly reports as errors. */
static void test_libcbor_quirks(void **state)
{
	(void)state;
	assert_int_equal(chunk_rc(CH("1863 c6 00")), CG_OK);     /* tag 6 */
	assert_int_equal(chunk_rc(CH("1863 d4 00")), CG_OK);     /* tag 20 */
	assert_int_equal(chunk_rc(CH("1863 d2 8100")), CG_OK);   /* tag 18 */
	assert_int_equal(chunk_rc(CH("1863 e0")), CG_OK);        /* simple(0) */
	assert_int_equal(chunk_rc(CH("1863 f3")), CG_OK);        /* simple(19) */
	assert_int_equal(chunk_rc(CH("1863 f820")), CG_OK);      /* simple(32) */
	assert_int_equal(chunk_rc(CH("1863 f8ff")), CG_OK);      /* simple(255) */
	assert_int_equal(chunk_rc(CH("1863 f810")), CG_ERR_MALFORMED);  /* not well-formed */
	assert_int_equal(chunk_rc("bf 0002 0907 0a00 0b41aa 1863 f8"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 1c")), CG_ERR_MALFORMED);    /* reserved */
	assert_int_equal(chunk_rc(CH("1863 5c")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 fc")), CG_ERR_MALFORMED);
	/* A tag 6–20 still counts towards the depth bound. */
	assert_int_equal(chunk_rc(CH("1863 c6c6c6c6c6c6c6 00")), CG_OK);
	assert_int_equal(chunk_rc(CH("1863 c6c6c6c6c6c6c6c6 00")), CG_ERR_DEPTH);
}

static void test_depth(void **state)
{
	(void)state;
	/* The message map is level 1: seven more levels fit, an eighth does not. */
	assert_int_equal(chunk_rc(CH("1863 81818181818181 00")), CG_OK);
	assert_int_equal(chunk_rc(CH("1863 8181818181818181 00")), CG_ERR_DEPTH);
	assert_int_equal(chunk_rc(CH("1863 a100a100a100a100a100a100a100 00")), CG_OK);
	assert_int_equal(chunk_rc(CH("1863 a100a100a100a100a100a100a100a100 00")), CG_ERR_DEPTH);
	assert_int_equal(chunk_rc(CH("1863 9f9f9f9f9f9f9f ffffffffffffff")), CG_OK);
	assert_int_equal(chunk_rc(CH("1863 9f9f9f9f9f9f9f9f ffffffffffffffff")), CG_ERR_DEPTH);
	assert_int_equal(chunk_rc(CH("1863 d820d820d820d820d820d820d820d820 00")), CG_ERR_DEPTH);
	/* In key position too. */
	assert_int_equal(chunk_rc(CH("8181818181818181 00 00")), CG_ERR_DEPTH);
	/* Depth is found before the truncation that follows it. */
	assert_int_equal(chunk_rc("bf 0002 1863 9f9f9f9f9f9f9f9f9f9f9f"), CG_ERR_DEPTH);

	/* A bomb: 100 000 nested arrays, must neither recurse nor crash. */
	size_t n = 100000;
	uint8_t *bomb = malloc(n);
	struct cg_chunk c;
	uint32_t type;
	memcpy(bomb, "\xbf\x18\x63", 3);
	memset(bomb + 3, 0x81, n - 3);
	assert_int_equal(cg_chunk_decode(bomb, n, &c), CG_ERR_DEPTH);
	assert_int_equal(cg_msg_type(bomb, n, &type), CG_ERR_DEPTH);
	free(bomb);
}

static void test_breaks(void **state)
{
	(void)state;
	assert_int_equal(chunk_rc("a3 0002 0907 ff 0000"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("bf 0002 09 ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("bf 0002 0907 0a00 0b ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 bf 00 ff")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 c1 ff")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 82 01 ff")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1824 bf 6161 ff")), CG_ERR_MALFORMED);
	assert_int_equal(ack_rc(ACK("182a 81 9f 01 ff")), CG_ERR_TYPE);
}

static void test_huge_counts(void **state)
{
	(void)state;
	assert_int_equal(chunk_rc("bb ffffffffffffffff 0002"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("ba 00010000 0002"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 9b ffffffffffffffff 00")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 5b 0000000100000000 00")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 7b ffffffffffffffff 00")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1824 bb ffffffffffffffff")), CG_ERR_MALFORMED);
	assert_int_equal(ack_rc(ACK("182a 9b ffffffffffffffff")), CG_ERR_MALFORMED);
}

static void test_duplicate_keys(void **state)
{
	(void)state;
	assert_int_equal(chunk_rc("bf 0002 0907 0907 0a00 0b41aa ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("bf 0002 0002 0907 0a00 0b41aa ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("0cf5 0cf4")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1824a0 1824a0")), CG_ERR_MALFORMED);
	/* The same value twice is still a duplicate. */
	assert_int_equal(chunk_rc(CH("0f01 0f01")), CG_ERR_MALFORMED);
	/* An alternative encoding of the same key is the same key. */
	assert_int_equal(chunk_rc(CH("0f01 180f01")), CG_ERR_MALFORMED);
	assert_int_equal(hello_rc("bf 0001 181e01 181e02 ff"), CG_ERR_MALFORMED);
	assert_int_equal(ack_rc(ACK("182802")), CG_ERR_MALFORMED);
	assert_int_equal(consent_rc(CON("1832f4")), CG_ERR_MALFORMED);
	/* Meta keys are unique too. */
	assert_int_equal(chunk_rc(CH("1824 a2 6161 01 6161 02")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1824 a3 6161 01 6162 02 6161 6178")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1824 a2 6161 01 626161 02")), CG_OK);
}

static void test_wrong_types(void **state)
{
	(void)state;
	static const char *const chunk_bad[] = {
		"bf 00 6178 0907 0a00 0b41aa ff",     /* type */
		"bf 00 f6 0907 0a00 0b41aa ff",
		CH("06 6178"),                        /* uptime_ms */
		CH("06 fa3f800000"),
		"bf 0002 0920 0a00 0b41aa ff",        /* dump_id: negative */
		"bf 0002 09 c240 0a00 0b41aa ff",     /* dump_id: bignum */
		"bf 0002 0907 0a4100 0b41aa ff",      /* ordinal */
		"bf 0002 0907 0a00 0b6161 ff",        /* content: text */
		"bf 0002 0907 0a00 0b80 ff",
		CH("0c 01"),                          /* last: an int */
		CH("0c f6"),
		CH("0e 6161"),                        /* build_id */
		CH("0f f5"),                          /* os */
		CH("1820 24"),                        /* total_size: negative */
		CH("1821 f93c00"),                    /* crc32: a float */
		CH("1822 6131"),                      /* format */
		CH("1823 4131"),                      /* fw_version: bytes */
		CH("1824 8101"),                      /* meta: array */
		CH("1824 6161"),
	};
	for (size_t i = 0; i < sizeof chunk_bad / sizeof chunk_bad[0]; i++) {
		int rc = chunk_rc(chunk_bad[i]);
		if (rc != CG_ERR_TYPE)
			fail_msg("chunk case %zu: got %d, want CG_ERR_TYPE", i, rc);
	}

	assert_int_equal(hello_rc("bf 0001 06 f4 ff"), CG_ERR_TYPE);
	assert_int_equal(hello_rc("bf 0001 0e 80 ff"), CG_ERR_TYPE);
	assert_int_equal(hello_rc("bf 0001 0f 20 ff"), CG_ERR_TYPE);
	assert_int_equal(hello_rc("bf 0001 181e 6178 ff"), CG_ERR_TYPE);
	assert_int_equal(hello_rc("bf 0001 1823 01 ff"), CG_ERR_TYPE);

	assert_int_equal(ack_rc("bf 0003 09f5 182801 ff"), CG_ERR_TYPE);
	assert_int_equal(ack_rc("bf 0003 0907 1828 6131 ff"), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("1829 05")), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("182a a0")), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("182a 8101")), CG_ERR_TYPE);

	assert_int_equal(consent_rc("bf 0004 1832 01 183301 ff"), CG_ERR_TYPE);
	assert_int_equal(consent_rc("bf 0004 1832f5 1833 6178 ff"), CG_ERR_TYPE);
	assert_int_equal(consent_rc(CON("1834 20")), CG_ERR_TYPE);
	assert_int_equal(consent_rc(CON("1835 4100")), CG_ERR_TYPE);
}

static void test_ranges(void **state)
{
	(void)state;
	struct cg_chunk c;

	assert_int_equal(chunk_rc("bf 0002 0907 0a1b0000000100000000 0b41aa ff"), CG_ERR_RANGE);
	assert_int_equal(chunk_hex("bf 0002 0907 0a1affffffff 0b41aa ff", &c), CG_OK);
	assert_int_equal(c.ordinal, UINT32_MAX);
	/* Any encoding width the device chose. */
	assert_int_equal(chunk_hex("bf 0002 091b0000000000000007 0a1a00000005 0b41aa ff", &c), CG_OK);
	assert_true(c.dump_id == 7);
	assert_int_equal(c.ordinal, 5);
	assert_int_equal(chunk_hex("bf 0002 09 1bffffffffffffffff 0a00 0b41aa ff", &c), CG_OK);
	assert_true(c.dump_id == UINT64_MAX);

	assert_int_equal(chunk_rc(CH("1821 1b0000000100000000")), CG_ERR_RANGE);
	assert_int_equal(chunk_rc(CH("0f 1b0000000100000000")), CG_ERR_RANGE);
	assert_int_equal(chunk_rc(CH("1822 05")), CG_ERR_RANGE);
	assert_int_equal(chunk_rc(CH("1822 1b0000000000000004")), CG_OK);
	assert_int_equal(chunk_rc(CH("06 1b8000000000000000")), CG_ERR_RANGE);
	assert_int_equal(chunk_rc(CH("06 3b8000000000000000")), CG_ERR_RANGE);
	assert_int_equal(chunk_hex(CH("06 3b7fffffffffffffff"), &c), CG_OK);
	assert_true(c.uptime_ms == INT64_MIN);
	assert_int_equal(chunk_hex(CH("06 20"), &c), CG_OK);
	assert_true(c.uptime_ms == -1);

	assert_int_equal(ack_rc("bf 0003 0907 182800 ff"), CG_ERR_RANGE);
	assert_int_equal(ack_rc("bf 0003 0907 182807 ff"), CG_ERR_RANGE);
	for (int s = 1; s <= 6; s++) {
		char hex[64];
		snprintf(hex, sizeof hex, "bf 0003 0907 18280%d ff", s);
		assert_int_equal(ack_rc(hex), CG_OK);
	}
}

static void test_wrong_message_type(void **state)
{
	(void)state;
	/* A well-formed message of another type is not this message. */
	assert_int_equal(chunk_rc("bf 0001 0907 0a00 0b41aa ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("bf 0005 0907 0a00 0b41aa ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc("bf 001b0000010000000002 0907 0a00 0b41aa ff"), CG_ERR_MALFORMED);
	assert_int_equal(hello_rc("a1 0002"), CG_ERR_MALFORMED);
	assert_int_equal(ack_rc(HEX_CONSENT), CG_ERR_MALFORMED);
	assert_int_equal(consent_rc(HEX_ACK_COMPLETE), CG_ERR_MALFORMED);
	/* The type key may come last. */
	assert_int_equal(chunk_rc("bf 0907 0a00 0b41aa 0002 ff"), CG_OK);
}

static void test_missing_keys(void **state)
{
	(void)state;
	assert_int_equal(chunk_rc("bf 0002 0a00 0b41aa ff"), CG_ERR_MISSING);
	assert_int_equal(chunk_rc("bf 0002 0907 0b41aa ff"), CG_ERR_MISSING);
	assert_int_equal(chunk_rc("bf 0002 0907 0a00 ff"), CG_ERR_MISSING);
	assert_int_equal(chunk_rc("bf 0907 0a00 0b41aa ff"), CG_ERR_MISSING);
	assert_int_equal(chunk_rc("a0"), CG_ERR_MISSING);
	assert_int_equal(hello_rc("a1 0001"), CG_OK);
	assert_int_equal(hello_rc("a1 0601"), CG_ERR_MISSING);
	assert_int_equal(ack_rc("bf 0003 0907 ff"), CG_ERR_MISSING);
	assert_int_equal(ack_rc("bf 0003 182801 ff"), CG_ERR_MISSING);
	assert_int_equal(consent_rc("bf 0004 1832f5 ff"), CG_ERR_MISSING);
	assert_int_equal(consent_rc("bf 0004 183301 ff"), CG_ERR_MISSING);
}

static void test_lengths(void **state)
{
	(void)state;
	struct cg_chunk c;
	struct tb t;

	assert_int_equal(chunk_rc("bf 0002 0907 0a00 0b40 ff"), CG_ERR_RANGE);
	assert_int_equal(chunk_rc(CH("0e 40")), CG_ERR_RANGE);
	assert_int_equal(hello_rc("bf 0001 0e40 ff"), CG_ERR_RANGE);
	assert_int_equal(chunk_rc(CH("1823 60")), CG_OK);
	assert_int_equal(ack_rc(ACK("1829 60")), CG_OK);
	assert_int_equal(consent_rc(CON("1835 60")), CG_OK);

	struct {
		const char *pre, *key;
		size_t limit;
		bool bytes;
		int (*rc)(const char *);
	} cases[] = {
		{ CH(""), "0e", CG_PROTO_MAX_BUILD_ID, true, chunk_rc },
		{ CH(""), "1823", CG_PROTO_MAX_FW_VERSION, false, chunk_rc },
		{ "bf 0001 ff", "0e", CG_PROTO_MAX_BUILD_ID, true, hello_rc },
		{ "bf 0001 ff", "1823", CG_PROTO_MAX_FW_VERSION, false, hello_rc },
		{ ACK(""), "1829", CG_PROTO_MAX_REASON, false, ack_rc },
		{ CON(""), "1835", CG_PROTO_MAX_GROUP, false, consent_rc },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (size_t len = cases[i].limit; len <= cases[i].limit + 1; len++) {
			char hex[2 * BUFSZ];
			size_t pre = strlen(cases[i].pre) - 2;  /* drop the break */
			t.n = 0;
			memcpy(hex, cases[i].pre, pre);
			hex[pre] = '\0';
			tb_hex(&t, hex);
			tb_hex(&t, cases[i].key);
			if (cases[i].bytes)
				tb_bstr(&t, len, 0x5a);
			else
				tb_tstr(&t, len, 'v');
			tb_hex(&t, "ff");
			/* Back to hex for the per-message helper. */
			for (size_t k = 0; k < t.n; k++)
				snprintf(hex + 2 * k, 3, "%02x", t.b[k]);
			int want = len > cases[i].limit ? CG_ERR_TOO_LARGE : CG_OK;
			int rc = cases[i].rc(hex);
			if (rc != want)
				fail_msg("case %zu len %zu: got %d want %d", i, len, rc, want);
		}
	}

	/* Meta: 1024 encoded bytes fit, 1025 do not. */
	for (size_t size = CG_PROTO_MAX_META - 1; size <= CG_PROTO_MAX_META + 1; size++) {
		t.n = 0;
		tb_hex(&t, "bf 0002 0907 0a00 0b41aa 1824");
		tb_meta(&t, size);
		tb_hex(&t, "ff");
		int rc = cg_chunk_decode(t.b, t.n, &c);
		assert_int_equal(rc, size > CG_PROTO_MAX_META ? CG_ERR_TOO_LARGE : CG_OK);
		if (rc == CG_OK)
			assert_int_equal(c.meta_len, size);
	}
	/* Indefinite meta: the closing break counts towards the 1024 bytes. */
	for (size_t size = CG_PROTO_MAX_META; size <= CG_PROTO_MAX_META + 1; size++) {
		t.n = 0;
		tb_hex(&t, "bf 0002 0907 0a00 0b41aa 1824 bf 616d");
		tb_tstr(&t, size - 7, 'x');
		tb_hex(&t, "ff ff");
		int rc = cg_chunk_decode(t.b, t.n, &c);
		assert_int_equal(rc, size > CG_PROTO_MAX_META ? CG_ERR_TOO_LARGE : CG_OK);
		if (rc == CG_OK)
			assert_int_equal(c.meta_len, size);
	}
	/* Many small entries over the limit, in an indefinite map. */
	t.n = 0;
	tb_hex(&t, "bf 0002 0907 0a00 0b41aa 1824 bf");
	for (int i = 0; i < 300; i++) {
		char e[16];
		snprintf(e, sizeof e, "62%02x%02x 00", 'A' + i / 26, 'a' + i % 26);
		tb_hex(&t, e);
	}
	tb_hex(&t, "ff ff");
	assert_int_equal(cg_chunk_decode(t.b, t.n, &c), CG_ERR_TOO_LARGE);
}

static void test_meta_shape(void **state)
{
	(void)state;
	struct cg_chunk c;

	assert_int_equal(chunk_rc(CH("1824 a1 01 6161")), CG_ERR_TYPE);      /* uint key */
	assert_int_equal(chunk_rc(CH("1824 a1 4161 6161")), CG_ERR_TYPE);    /* bstr key */
	assert_int_equal(chunk_rc(CH("1824 a1 6161 a0")), CG_ERR_TYPE);      /* nested map */
	assert_int_equal(chunk_rc(CH("1824 a1 6161 a16162 01")), CG_ERR_TYPE);
	assert_int_equal(chunk_rc(CH("1824 a1 6161 80")), CG_ERR_TYPE);      /* array */
	assert_int_equal(chunk_rc(CH("1824 a1 6161 f5")), CG_ERR_TYPE);      /* bool */
	assert_int_equal(chunk_rc(CH("1824 a1 6161 4100")), CG_ERR_TYPE);    /* bstr */
	assert_int_equal(chunk_rc(CH("1824 a1 6161 c100")), CG_ERR_TYPE);    /* tagged */
	assert_int_equal(chunk_rc(CH("1824 a1 62c080 01")), CG_ERR_MALFORMED);  /* bad UTF-8 */
	assert_int_equal(chunk_rc(CH("1824 a1 6161 62c080")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1824 a1 7f6161ff 01")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_hex(CH("1824 a0"), &c), CG_OK);
	assert_int_equal(c.meta_len, 1);
	assert_int_equal(chunk_hex(CH("1824 a2 6161 3b7fffffffffffffff 6162 1bffffffffffffffff"), &c),
			 CG_OK);
	assert_int_equal(c.meta_len, 23);

	/*
	 * 106 keys of lengths 0–3 ("", "a".."z", 40 of 2 and 40 of 3 chars),
	 * then one more key: present already, or not.
	 */
	static const struct { const char *key; bool dup; } probe[] = {
		{ "", true }, { "a", true }, { "m", true }, { "z", true },
		{ "zz", false }, { "mmm", false }, { "za", true }, { "maA", true },
		{ "mnB", true }, { "moB", false }, { "maC", false }, { "{", false },
	};
	for (size_t p = 0; p < sizeof probe / sizeof probe[0]; p++) {
		struct tb t = { .n = 0 };
		char e[32];
		tb_hex(&t, "bf 0002 0907 0a00 0b41aa 1824 bf 60 00");
		for (int i = 0; i < 26; i++) {
			snprintf(e, sizeof e, "61%02x 01", 'a' + i);
			tb_hex(&t, e);
		}
		for (int i = 0; i < 40; i++) {
			snprintf(e, sizeof e, "62%02x%02x 01", 'z' - i % 26, 'a' + i / 26);
			tb_hex(&t, e);
			snprintf(e, sizeof e, "63%02x%02x%02x 01", 'm', 'a' + i % 26, 'A' + i / 26);
			tb_hex(&t, e);
		}
		size_t kn = strlen(probe[p].key);
		tb_tstr(&t, kn, 0);
		memcpy(t.b + t.n - kn, probe[p].key, kn);
		tb_hex(&t, "00 ff ff");
		int rc = cg_chunk_decode(t.b, t.n, &c);
		if (rc != (probe[p].dup ? CG_ERR_MALFORMED : CG_OK))
			fail_msg("probe \"%s\": got %d", probe[p].key, rc);
	}
}

static void test_missing_ranges(void **state)
{
	(void)state;
	struct cg_ack a;
	uint8_t buf[64];
	size_t n;

	assert_int_equal(ack_hex(ACK("182a 80"), &a), CG_OK);
	assert_int_equal(a.n_missing, 0);
	assert_int_equal(ack_hex(ACK("182a 81 82 00 1affffffff"), &a), CG_OK);
	assert_int_equal(a.n_missing, 1);
	assert_int_equal(a.missing[0].last, UINT32_MAX);
	assert_int_equal(ack_rc(ACK("182a 81 82 0707")), CG_OK);
	assert_int_equal(ack_rc(ACK("182a 81 82 0201")), CG_ERR_RANGE);
	assert_int_equal(ack_rc(ACK("182a 81 82 01 1b0000000100000000")), CG_ERR_RANGE);
	assert_int_equal(ack_rc(ACK("182a 81 83 010203")), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("182a 81 81 01")), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("182a 81 80")), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("182a 81 9f 010203 ff")), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("182a 81 82 01 6161")), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("182a 81 82 20 01")), CG_ERR_TYPE);
	assert_int_equal(ack_rc(ACK("182a 81 a0")), CG_ERR_TYPE);
	/* More ranges than the caller has room for (4), definite or not. */
	assert_int_equal(ack_rc(ACK("182a 84 820101 820202 820303 820404")), CG_OK);
	assert_int_equal(ack_rc(ACK("182a 85 820101 820202 820303 820404 820505")),
			 CG_ERR_TOO_LARGE);
	assert_int_equal(ack_rc(ACK("182a 9f 820101 820202 820303 820404 ff")), CG_OK);
	assert_int_equal(ack_rc(ACK("182a 9f 820101 820202 820303 820404 820505 ff")),
			 CG_ERR_TOO_LARGE);
	/* No storage at all. */
	n = unhex(ACK("182a 81 820101"), buf, sizeof buf);
	a = (struct cg_ack){ 0 };
	assert_int_equal(cg_ack_decode(buf, n, &a), CG_ERR_TOO_LARGE);
	n = unhex(ACK("182a 80"), buf, sizeof buf);
	a = (struct cg_ack){ 0 };
	assert_int_equal(cg_ack_decode(buf, n, &a), CG_OK);
}

static void test_indefinite_strings(void **state)
{
	(void)state;
	assert_int_equal(chunk_rc("bf 0002 0907 0a00 0b 5f 41aa ff ff"), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("0e 5f 41aa ff")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1823 7f 6161 ff")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 5f ff")), CG_ERR_MALFORMED);
	assert_int_equal(chunk_rc(CH("1863 82 01 7f ff")), CG_ERR_MALFORMED);
	assert_int_equal(ack_rc(ACK("1829 7f 6161 ff")), CG_ERR_MALFORMED);
	assert_int_equal(consent_rc(CON("1835 7f ff")), CG_ERR_MALFORMED);
}

static void test_utf8(void **state)
{
	(void)state;
	static const struct { const char *s; int rc; } cases[] = {
		{ "63 e282ac", CG_OK },               /* U+20AC */
		{ "64 f09f9880", CG_OK },             /* U+1F600 */
		{ "64 f48fbfbf", CG_OK },             /* U+10FFFF */
		{ "62 c280", CG_OK },                 /* U+0080 */
		{ "61 00", CG_OK },                   /* NUL is UTF-8 */
		{ "62 c080", CG_ERR_MALFORMED },      /* overlong */
		{ "63 e08080", CG_ERR_MALFORMED },    /* overlong */
		{ "63 eda080", CG_ERR_MALFORMED },    /* surrogate */
		{ "64 f4908080", CG_ERR_MALFORMED },  /* > U+10FFFF */
		{ "62 e282", CG_ERR_MALFORMED },      /* cut short */
		{ "61 80", CG_ERR_MALFORMED },        /* lone continuation */
		{ "61 ff", CG_ERR_MALFORMED },
		{ "62 c241", CG_ERR_MALFORMED },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char hex[64];
		snprintf(hex, sizeof hex, CH("1823 %s"), cases[i].s);
		int rc = chunk_rc(hex);
		if (rc != cases[i].rc)
			fail_msg("utf8 case %zu: got %d want %d", i, rc, cases[i].rc);
	}
}

static void test_msg_type(void **state)
{
	(void)state;
	uint8_t buf[64];
	uint32_t type = 0;
	size_t n;

	n = unhex("bf 1863 82 a10001 9f ff 6178 00 0004 ff", buf, sizeof buf);
	assert_int_equal(cg_msg_type(buf, n, &type), CG_OK);
	assert_int_equal(type, 4);
	/* Unknown type values are reported; the caller decides. */
	n = unhex("a1 00 1a00010000", buf, sizeof buf);
	assert_int_equal(cg_msg_type(buf, n, &type), CG_OK);
	assert_int_equal(type, 65536);
	n = unhex("a1 00 1b0000000100000000", buf, sizeof buf);
	assert_int_equal(cg_msg_type(buf, n, &type), CG_ERR_RANGE);
	n = unhex("a1 00 6178", buf, sizeof buf);
	assert_int_equal(cg_msg_type(buf, n, &type), CG_ERR_TYPE);
	n = unhex("a1 01 02", buf, sizeof buf);
	assert_int_equal(cg_msg_type(buf, n, &type), CG_ERR_MISSING);
	n = unhex("bf 01 02 ff", buf, sizeof buf);
	assert_int_equal(cg_msg_type(buf, n, &type), CG_ERR_MISSING);
	n = unhex("a2 01 02", buf, sizeof buf);
	assert_int_equal(cg_msg_type(buf, n, &type), CG_ERR_MALFORMED);
	n = unhex("bf 01", buf, sizeof buf);
	assert_int_equal(cg_msg_type(buf, n, &type), CG_ERR_MALFORMED);
}

/* ---- encoders ------------------------------------------------------------------ */

typedef int (*enc_fn)(const void *msg, uint8_t *buf, size_t cap, size_t *written);

static int enc_chunk(const void *m, uint8_t *b, size_t c, size_t *w) { return cg_chunk_encode(m, 0, b, c, w); }
static int enc_spot(const void *m, uint8_t *b, size_t c, size_t *w) { return cg_chunk_encode(m, CG_ENC_SPOTFLOW, b, c, w); }
static int enc_hello(const void *m, uint8_t *b, size_t c, size_t *w) { return cg_hello_encode(m, b, c, w); }
static int enc_ack(const void *m, uint8_t *b, size_t c, size_t *w) { return cg_ack_encode(m, b, c, w); }
static int enc_consent(const void *m, uint8_t *b, size_t c, size_t *w) { return cg_consent_encode(m, b, c, w); }

/* Every capacity below the needed size is CG_ERR_BUFFER and writes nothing past cap. */
static void check_every_size(enc_fn enc, const void *msg)
{
	size_t need;

	assert_int_equal(enc(msg, g_out, sizeof g_out, &need), CG_OK);
	assert_true(need > 0);
	size_t w = 1;
	assert_int_equal(enc(msg, NULL, 0, &w), CG_ERR_BUFFER);
	assert_int_equal(w, 0);
	for (size_t cap = 0; cap <= need; cap++) {
		/* Exactly cap bytes on the heap for ASan, plus a canary copy. */
		uint8_t *p = cap ? malloc(cap) : NULL;
		memset(g_out, 0xa5, sizeof g_out);
		size_t n1 = 99, n2 = 99;
		int rc1 = enc(msg, p, cap, &n1);
		int rc2 = enc(msg, g_out, cap, &n2);
		for (size_t k = cap; k < sizeof g_out; k++)
			assert_int_equal(g_out[k], 0xa5);
		if (cap < need) {
			assert_int_equal(rc1, CG_ERR_BUFFER);
			assert_int_equal(rc2, CG_ERR_BUFFER);
			assert_int_equal(n1, 0);
		} else {
			assert_int_equal(rc1, CG_OK);
			assert_int_equal(n1, need);
			assert_memory_equal(p, g_out, need);
		}
		free(p);
	}
}

static void test_encoder_buffer_sizes(void **state)
{
	(void)state;
	struct cg_chunk c = full_chunk();
	struct cg_range r[2] = { { 1, 2 }, { 5, UINT32_MAX } };
	struct cg_hello h = {
		.present = CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS | CG_HAS_RUN_ID |
			   CG_HAS_FW_VERSION,
		.uptime_ms = -100000, .build_id = build_id, .build_id_len = 4,
		.os = 1, .run_id = 1ull << 40, .fw_version = "1.0", .fw_version_len = 3,
	};
	struct cg_ack a = { .present = CG_HAS_REASON, .dump_id = 1, .status = 6,
			    .reason = "gap", .reason_len = 3, .missing = r, .n_missing = 2 };
	struct cg_consent k = { .present = CG_HAS_VALID_FOR | CG_HAS_GROUP,
				.enabled = true, .issued_at = 1, .valid_for = 2,
				.group = "g", .group_len = 1 };

	check_every_size(enc_chunk, &c);
	check_every_size(enc_spot, &c);
	check_every_size(enc_hello, &h);
	check_every_size(enc_ack, &a);
	check_every_size(enc_consent, &k);
	/* A large content, whose bstr head is 5 bytes long. */
	static uint8_t big[70000];
	c.content = big;
	c.content_len = sizeof big;
	size_t need;
	uint8_t *out = malloc(cg_chunk_encoded_max(sizeof big));
	assert_int_equal(cg_chunk_encode(&c, 0, out, cg_chunk_encoded_max(sizeof big), &need), CG_OK);
	for (size_t cap = need - 80; cap < need; cap++)
		assert_int_equal(cg_chunk_encode(&c, 0, out, cap, &need), CG_ERR_BUFFER);
	free(out);
}

static void test_encoded_max(void **state)
{
	(void)state;
	static uint8_t content[70000], bid[CG_PROTO_MAX_BUILD_ID];
	static char fw[CG_PROTO_MAX_FW_VERSION];
	struct tb meta = { .n = 0 };
	struct cg_chunk c = full_chunk(), out;
	size_t sizes[] = { 1, 23, 24, 255, 256, 65535, 65536, sizeof content };

	memset(fw, 'v', sizeof fw);
	tb_meta(&meta, CG_PROTO_MAX_META);
	c.dump_id = UINT64_MAX;
	c.ordinal = UINT32_MAX;
	c.uptime_ms = INT64_MIN;
	c.build_id = bid;
	c.build_id_len = sizeof bid;
	c.os = UINT32_MAX;
	c.total_size = UINT64_MAX;
	c.crc32 = UINT32_MAX;
	c.fw_version = fw;
	c.fw_version_len = sizeof fw;
	c.meta = meta.b;
	c.meta_len = meta.n;
	c.content = content;
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t max = cg_chunk_encoded_max(sizes[i]), n;
		uint8_t *buf = malloc(max);
		c.content_len = sizes[i];
		assert_int_equal(cg_chunk_encode(&c, 0, buf, max, &n), CG_OK);
		assert_true(n <= max);
		assert_true(max - n <= 16);  /* a bound, but not a loose one */
		assert_int_equal(cg_chunk_decode(buf, n, &out), CG_OK);
		assert_chunk_eq(&c, &out);
		free(buf);
	}
	assert_int_equal(cg_chunk_encoded_max(SIZE_MAX), SIZE_MAX);
	assert_int_equal(cg_chunk_encoded_max(SIZE_MAX - 100), SIZE_MAX);
	assert_true(cg_chunk_encoded_max(0) > CG_PROTO_MAX_META);
}

static void test_encoder_ranges(void **state)
{
	(void)state;
	static uint8_t long_id[CG_PROTO_MAX_BUILD_ID + 1];
	static char long_text[CG_PROTO_MAX_REASON + 1];
	struct cg_chunk c;
	size_t n;

	memset(long_text, 'x', sizeof long_text);
#define CHUNK_RC(mod) (c = full_chunk(), (void)(mod), cg_chunk_encode(&c, 0, g_out, sizeof g_out, &n))
	assert_int_equal(CHUNK_RC(c.content_len = 0), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC(c.content = NULL), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC(c.build_id_len = 0), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC((c.build_id = long_id, c.build_id_len = sizeof long_id)), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC(c.format = 5), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC((c.fw_version = long_text, c.fw_version_len = 129)), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC((c.fw_version = "\xc0\x80", c.fw_version_len = 2)), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC(c.fw_version = NULL), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC(c.meta_len = sizeof meta_ex - 1), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC((c.meta = (const uint8_t *)"\x81\x01", c.meta_len = 2)), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC((c.meta = (const uint8_t *)"\xa0\x00", c.meta_len = 2)), CG_ERR_RANGE);
	assert_int_equal(CHUNK_RC(c.meta = NULL), CG_ERR_RANGE);
	/* A field not marked present is not checked. */
	assert_int_equal(CHUNK_RC((c.format = 5, c.present &= ~CG_HAS_FORMAT)), CG_OK);
	/* Nor one the Spotflow encoding leaves out. */
	c = full_chunk();
	c.format = 99;
	assert_int_equal(cg_chunk_encode(&c, CG_ENC_SPOTFLOW, g_out, sizeof g_out, &n), CG_OK);
	assert_int_equal(cg_chunk_encode(&c, 0, g_out, sizeof g_out, &n), CG_ERR_RANGE);
#undef CHUNK_RC

	struct cg_hello h = { .present = CG_HAS_BUILD_ID, .build_id = long_id,
			      .build_id_len = sizeof long_id };
	assert_int_equal(cg_hello_encode(&h, g_out, sizeof g_out, &n), CG_ERR_RANGE);
	h = (struct cg_hello){ .present = CG_HAS_FW_VERSION, .fw_version = long_text,
			       .fw_version_len = 129 };
	assert_int_equal(cg_hello_encode(&h, g_out, sizeof g_out, &n), CG_ERR_RANGE);

	struct cg_range bad = { 3, 2 };
	struct cg_ack a = { .dump_id = 1, .status = 0 };
	assert_int_equal(cg_ack_encode(&a, g_out, sizeof g_out, &n), CG_ERR_RANGE);
	a.status = 7;
	assert_int_equal(cg_ack_encode(&a, g_out, sizeof g_out, &n), CG_ERR_RANGE);
	a.status = 6;
	a.missing = &bad;
	a.n_missing = 1;
	assert_int_equal(cg_ack_encode(&a, g_out, sizeof g_out, &n), CG_ERR_RANGE);
	a.missing = NULL;
	assert_int_equal(cg_ack_encode(&a, g_out, sizeof g_out, &n), CG_ERR_RANGE);
	a = (struct cg_ack){ .present = CG_HAS_REASON, .dump_id = 1, .status = 3,
			     .reason = long_text, .reason_len = CG_PROTO_MAX_REASON + 1 };
	assert_int_equal(cg_ack_encode(&a, g_out, sizeof g_out, &n), CG_ERR_RANGE);
	a.reason_len = CG_PROTO_MAX_REASON;
	assert_int_equal(cg_ack_encode(&a, g_out, sizeof g_out, &n), CG_OK);

	struct cg_consent k = { .present = CG_HAS_GROUP, .group = long_text,
				.group_len = CG_PROTO_MAX_GROUP + 1 };
	assert_int_equal(cg_consent_encode(&k, g_out, sizeof g_out, &n), CG_ERR_RANGE);
	k.group_len = CG_PROTO_MAX_GROUP;
	assert_int_equal(cg_consent_encode(&k, g_out, sizeof g_out, &n), CG_OK);
}

/* ---- small helpers ---------------------------------------------------------------- */

static void test_device_id(void **state)
{
	(void)state;
	char id[CG_DEVICE_ID_MAX + 2];

	assert_true(cg_device_id_valid("a", 1));
	assert_true(cg_device_id_valid("A-z_0.9", 7));
	assert_true(cg_device_id_valid("...", 3));
	assert_true(cg_device_id_valid("-", 1));
	assert_false(cg_device_id_valid("", 0));
	assert_false(cg_device_id_valid(NULL, 0));
	assert_false(cg_device_id_valid(NULL, 5));
	memset(id, 'x', sizeof id);
	assert_true(cg_device_id_valid(id, CG_DEVICE_ID_MAX));
	assert_false(cg_device_id_valid(id, CG_DEVICE_ID_MAX + 1));
	static const char *const bad[] = {
		"a/b", "a b", "dev+1", "#", "a+", "dev#1", "x:y", "\xc3\xa4", "\x7f", "*",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_false(cg_device_id_valid(bad[i], strlen(bad[i])));
	assert_false(cg_device_id_valid("ab\0cd", 5));
	/* Only len bytes are looked at. */
	assert_true(cg_device_id_valid("abc/", 3));
	for (int ch = 0; ch < 256; ch++) {
		char s[1] = { (char)ch };
		bool want = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
		assert_int_equal(cg_device_id_valid(s, 1), want);
	}
}

static void test_crc32(void **state)
{
	(void)state;
	const uint8_t *s = (const uint8_t *)"123456789";

	assert_int_equal(cg_crc32(0, s, 9), 0xcbf43926);
	assert_int_equal(cg_crc32(cg_crc32(0, s, 4), s + 4, 5), 0xcbf43926);
	assert_int_equal(cg_crc32(0, s, 0), 0);
	assert_int_equal(cg_crc32(0x1234, NULL, 0), 0x1234);
	assert_int_equal(cg_crc32(0x1234, NULL, 9), 0x1234);  /* zlib alone gives 0 */
	assert_int_equal(cg_crc32(0x1234, s, 0), 0x1234);
}

static void test_strerror(void **state)
{
	(void)state;
	for (int e = CG_OK; e < CG_ERR__COUNT; e++) {
		const char *s = cg_strerror(e);
		assert_non_null(s);
		assert_string_not_equal(s, "unknown error");
		for (int f = CG_OK; f < e; f++)
			assert_string_not_equal(s, cg_strerror(f));
	}
	assert_string_equal(cg_strerror(-1), "unknown error");
	assert_string_equal(cg_strerror(CG_ERR__COUNT), "unknown error");
	assert_string_equal(cg_strerror(1000000), "unknown error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunk_roundtrip_required),
		cmocka_unit_test(test_chunk_roundtrip_full),
		cmocka_unit_test(test_chunk_encode_ignores_foreign_bits),
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_ack_roundtrip),
		cmocka_unit_test(test_consent_roundtrip),
		cmocka_unit_test(test_spotflow_encoding),
		cmocka_unit_test(test_spotflow_hex),
		cmocka_unit_test(test_indefinite_maps),
		cmocka_unit_test(test_readme_has_examples),
		cmocka_unit_test(test_examples_decode_and_types),
		cmocka_unit_test(test_examples_reencode),
		cmocka_unit_test(test_example_values),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_trailing_bytes),
		cmocka_unit_test(test_not_a_map),
		cmocka_unit_test(test_non_uint_keys_skipped),
		cmocka_unit_test(test_unknown_keys_skipped),
		cmocka_unit_test(test_libcbor_quirks),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_breaks),
		cmocka_unit_test(test_huge_counts),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_wrong_message_type),
		cmocka_unit_test(test_missing_keys),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_meta_shape),
		cmocka_unit_test(test_missing_ranges),
		cmocka_unit_test(test_indefinite_strings),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_msg_type),
		cmocka_unit_test(test_encoder_buffer_sizes),
		cmocka_unit_test(test_encoded_max),
		cmocka_unit_test(test_encoder_ranges),
		cmocka_unit_test(test_device_id),
		cmocka_unit_test(test_crc32),
		cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
