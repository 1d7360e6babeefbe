/*
 * crashgate wire format (SPEC §2–§5).
 *
 * Decoding pulls one CBOR data item head at a time out of libcbor's
 * streaming decoder, which allocates nothing; the callbacks only record the
 * head in a struct tok. Everything structural (map pairs, indefinite-length
 * breaks, nesting depth, duplicate keys) is tracked here, iteratively, so a
 * hostile message can neither allocate nor grow the C stack. Encoding uses
 * libcbor's cbor_encode_* into the caller's buffer. No malloc anywhere.
 *
 * Errors are reported for the first problem met in byte order, except that
 * missing required keys are only known, and reported, at the end.
 */
#include "crashgate/proto.h"

#include <string.h>

#include <cbor/encoding.h>
#include <cbor/streaming.h>
#include <zlib.h>

#define CONSENT_VALID_FOR_DEFAULT 172800u

/* ---- reading one head at a time ------------------------------------- */

enum tok_kind {
	TOK_UINT,
	TOK_NEGINT,     /* the value is -1 - val */
	TOK_BSTR,
	TOK_TSTR,
	TOK_ARRAY,
	TOK_MAP,
	TOK_TAG,
	TOK_BOOL,
	TOK_BREAK,
	TOK_INDEF_STR,
	TOK_OTHER,      /* null, undefined, other simple values, floats */
};

struct tok {
	enum tok_kind kind;
	bool indef;             /* TOK_ARRAY, TOK_MAP */
	uint64_t val;           /* integer, tag number, bool, or item count */
	const uint8_t *ptr;     /* TOK_BSTR, TOK_TSTR: points into the input */
	size_t len;
};

struct reader {
	const uint8_t *buf;
	size_t len;
	size_t pos;
};

static void tok_int(void *ctx, enum tok_kind kind, uint64_t v)
{
	struct tok *t = ctx;

	t->kind = kind;
	t->val = v;
}

static void cb_uint8(void *c, uint8_t v) { tok_int(c, TOK_UINT, v); }
static void cb_uint16(void *c, uint16_t v) { tok_int(c, TOK_UINT, v); }
static void cb_uint32(void *c, uint32_t v) { tok_int(c, TOK_UINT, v); }
static void cb_uint64(void *c, uint64_t v) { tok_int(c, TOK_UINT, v); }
static void cb_negint8(void *c, uint8_t v) { tok_int(c, TOK_NEGINT, v); }
static void cb_negint16(void *c, uint16_t v) { tok_int(c, TOK_NEGINT, v); }
static void cb_negint32(void *c, uint32_t v) { tok_int(c, TOK_NEGINT, v); }
static void cb_negint64(void *c, uint64_t v) { tok_int(c, TOK_NEGINT, v); }
static void cb_tag(void *c, uint64_t v) { tok_int(c, TOK_TAG, v); }
static void cb_bool(void *c, bool v) { tok_int(c, TOK_BOOL, v); }
static void cb_break(void *c) { tok_int(c, TOK_BREAK, 0); }
static void cb_other(void *c) { tok_int(c, TOK_OTHER, 0); }
static void cb_indef_str(void *c) { tok_int(c, TOK_INDEF_STR, 0); }

static void cb_float(void *c, float v)
{
	(void)v;
	cb_other(c);
}

static void cb_double(void *c, double v)
{
	(void)v;
	cb_other(c);
}

static void tok_str(void *ctx, enum tok_kind kind, cbor_data p, size_t n)
{
	struct tok *t = ctx;

	t->kind = kind;
	t->ptr = p;
	t->len = n;
}

static void cb_bstr(void *c, cbor_data p, size_t n) { tok_str(c, TOK_BSTR, p, n); }
static void cb_tstr(void *c, cbor_data p, size_t n) { tok_str(c, TOK_TSTR, p, n); }

static void tok_coll(void *ctx, enum tok_kind kind, bool indef, size_t n)
{
	struct tok *t = ctx;

	t->kind = kind;
	t->indef = indef;
	t->val = n;
}

static void cb_array(void *c, size_t n) { tok_coll(c, TOK_ARRAY, false, n); }
static void cb_indef_array(void *c) { tok_coll(c, TOK_ARRAY, true, 0); }
static void cb_map(void *c, size_t n) { tok_coll(c, TOK_MAP, false, n); }
static void cb_indef_map(void *c) { tok_coll(c, TOK_MAP, true, 0); }

/*
 * Note libcbor's own header comments for these members are swapped: the
 * *_start string callbacks are the indefinite-length ones, and array_start /
 * map_start carry a definite count.
 */
static const struct cbor_callbacks callbacks = {
	.uint8 = cb_uint8,
	.uint16 = cb_uint16,
	.uint32 = cb_uint32,
	.uint64 = cb_uint64,
	.negint8 = cb_negint8,
	.negint16 = cb_negint16,
	.negint32 = cb_negint32,
	.negint64 = cb_negint64,
	.byte_string = cb_bstr,
	.byte_string_start = cb_indef_str,
	.string = cb_tstr,
	.string_start = cb_indef_str,
	.array_start = cb_array,
	.indef_array_start = cb_indef_array,
	.map_start = cb_map,
	.indef_map_start = cb_indef_map,
	.tag = cb_tag,
	.float2 = cb_float,
	.float4 = cb_float,
	.float8 = cb_double,
	.undefined = cb_other,
	.null = cb_other,
	.boolean = cb_bool,
	.indef_break = cb_break,
};

/*
 * libcbor 0.8 reports some well-formed heads as errors: tags 6–20
 * (0xc6–0xd4; later libcbor versions accept them) and simple values 0–19
 * (0xe0–0xf3) and 32–255 (0xf8 xx). They are one- or two-byte atoms or a tag
 * prefix, so recognise them here rather than reject a forward-compatible
 * unknown key just because of the libcbor version installed.
 */
static int head_fallback(struct reader *r, struct tok *t)
{
	uint8_t ib = r->buf[r->pos];

	if (ib >= 0xc6 && ib <= 0xd4) {
		tok_int(t, TOK_TAG, ib - 0xc0u);
		r->pos += 1;
		return CG_OK;
	}
	if (ib >= 0xe0 && ib <= 0xf3) {
		cb_other(t);
		r->pos += 1;
		return CG_OK;
	}
	if (ib == 0xf8 && r->len - r->pos >= 2 && r->buf[r->pos + 1] >= 32) {
		cb_other(t);
		r->pos += 2;
		return CG_OK;
	}
	return CG_ERR_MALFORMED;
}

/*
 * Decode the next head into *t and advance. Truncation, reserved heads and
 * indefinite-length strings (which would need an allocation to join) are
 * CG_ERR_MALFORMED. A break comes back as TOK_BREAK for the caller to judge.
 */
static int next(struct reader *r, struct tok *t)
{
	if (r->pos >= r->len)
		return CG_ERR_MALFORMED;
	*t = (struct tok){ .kind = TOK_OTHER };

	const uint8_t *p = r->buf + r->pos;
	struct cbor_decoder_result res =
		cbor_stream_decode(p, r->len - r->pos, &callbacks, t);

	if (res.status == CBOR_DECODER_ERROR)
		return head_fallback(r, t);
	if (res.status != CBOR_DECODER_FINISHED)
		return CG_ERR_MALFORMED;
	if (t->kind == TOK_INDEF_STR)
		return CG_ERR_MALFORMED;
#if SIZE_MAX < UINT64_MAX
	/*
	 * libcbor 0.8 narrows 64-bit string lengths and item counts to size_t,
	 * which would silently misread them here; no such value can describe
	 * an input that fits in memory.
	 */
	if ((p[0] & 0x1f) == 27 && (p[0] >> 5) >= 2 && (p[0] >> 5) <= 5 &&
	    (p[1] | p[2] | p[3] | p[4]) != 0)
		return CG_ERR_MALFORMED;
#endif
	r->pos += res.read;
	return CG_OK;
}

/* Iteration over an array or map; a map's items are counted in pairs. */
struct cont {
	bool indef;
	uint64_t left;
};

static int cont_open(const struct reader *r, const struct tok *t, struct cont *c)
{
	uint64_t per_item = t->kind == TOK_MAP ? 2 : 1;

	c->indef = t->indef;
	c->left = t->val;
	/* Every item takes a byte at least: a larger count is a truncation. */
	if (!t->indef && t->val > (r->len - r->pos) / per_item)
		return CG_ERR_MALFORMED;
	return CG_OK;
}

/*
 * Read the next item head of c into *t. *more is false at the end of c; an
 * indefinite container's break is consumed. A break in a definite container
 * is malformed.
 */
static int cont_next(struct reader *r, struct cont *c, struct tok *t, bool *more)
{
	if (!c->indef) {
		if (c->left == 0) {
			*more = false;
			return CG_OK;
		}
		c->left--;
	}
	int rc = next(r, t);
	if (rc != CG_OK)
		return rc;
	if (t->kind == TOK_BREAK) {
		if (!c->indef)
			return CG_ERR_MALFORMED;
		*more = false;
		return CG_OK;
	}
	*more = true;
	return CG_OK;
}

/*
 * Consume the rest of the item whose head is t, found inside a container at
 * nesting level `level` (the message map is level 1). Each array, map and
 * tag opens one more level; beyond CG_PROTO_MAX_DEPTH is CG_ERR_DEPTH.
 */
static int skip_rest(struct reader *r, struct tok t, int level)
{
	struct {
		struct cont c;
		bool tag;
		bool map;
		uint64_t seen;  /* items of an indefinite map, to place its break */
	} st[CG_PROTO_MAX_DEPTH];
	int sp = 0;
	int rc;

	for (;;) {
		if (t.kind == TOK_BREAK) {
			if (sp == 0 || st[sp - 1].tag || !st[sp - 1].c.indef ||
			    (st[sp - 1].map && st[sp - 1].seen % 2 != 0))
				return CG_ERR_MALFORMED;
			sp--;
		} else if (t.kind == TOK_ARRAY || t.kind == TOK_MAP || t.kind == TOK_TAG) {
			if (level + sp + 1 > CG_PROTO_MAX_DEPTH)
				return CG_ERR_DEPTH;
			st[sp].tag = t.kind == TOK_TAG;
			st[sp].map = t.kind == TOK_MAP;
			st[sp].seen = 0;
			if (st[sp].tag) {
				st[sp].c = (struct cont){ .left = 1 };
			} else {
				rc = cont_open(r, &t, &st[sp].c);
				if (rc != CG_OK)
					return rc;
				if (st[sp].map)
					st[sp].c.left *= 2;  /* bounded by cont_open */
			}
			sp++;
			if (st[sp - 1].c.indef || st[sp - 1].c.left > 0) {
				rc = next(r, &t);
				if (rc != CG_OK)
					return rc;
				continue;
			}
			sp--;  /* an empty definite container is complete at once */
		}
		/* An item ended: count it in its parents, closing those now full. */
		while (sp > 0) {
			if (st[sp - 1].c.indef) {
				st[sp - 1].seen++;
				break;
			}
			if (--st[sp - 1].c.left > 0)
				break;
			sp--;
		}
		if (sp == 0)
			return CG_OK;
		rc = next(r, &t);
		if (rc != CG_OK)
			return rc;
	}
}

static int skip_item(struct reader *r, int level)
{
	struct tok t;
	int rc = next(r, &t);

	return rc != CG_OK ? rc : skip_rest(r, t, level);
}

/* ---- typed values of known keys ------------------------------------- */

/*
 * RFC 8949 §3.1: a text string that is not UTF-8 is not valid CBOR; these
 * strings end up in JSON records and logs, so they are checked.
 */
static bool utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		size_t k;
		uint32_t cp, min;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			k = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* Next item as a head of kind `want`: a break is malformed, else a type error. */
static int get(struct reader *r, struct tok *t, enum tok_kind want)
{
	int rc = next(r, t);

	if (rc != CG_OK)
		return rc;
	if (t->kind == TOK_BREAK)
		return CG_ERR_MALFORMED;
	return t->kind == want ? CG_OK : CG_ERR_TYPE;
}

static int get_u64(struct reader *r, uint64_t *v)
{
	struct tok t;
	int rc = get(r, &t, TOK_UINT);

	if (rc == CG_OK)
		*v = t.val;
	return rc;
}

static int get_u32(struct reader *r, uint32_t min, uint32_t max, uint32_t *v)
{
	struct tok t;
	int rc = get(r, &t, TOK_UINT);

	if (rc != CG_OK)
		return rc;
	if (t.val < min || t.val > max)
		return CG_ERR_RANGE;
	*v = (uint32_t)t.val;
	return CG_OK;
}

static int get_int(struct reader *r, int64_t *v)
{
	struct tok t;
	int rc = next(r, &t);

	if (rc != CG_OK)
		return rc;
	if (t.kind == TOK_BREAK)
		return CG_ERR_MALFORMED;
	if (t.kind != TOK_UINT && t.kind != TOK_NEGINT)
		return CG_ERR_TYPE;
	if (t.val > INT64_MAX)
		return CG_ERR_RANGE;
	*v = t.kind == TOK_UINT ? (int64_t)t.val : -1 - (int64_t)t.val;
	return CG_OK;
}

static int get_bool(struct reader *r, bool *v)
{
	struct tok t;
	int rc = get(r, &t, TOK_BOOL);

	if (rc == CG_OK)
		*v = t.val != 0;
	return rc;
}

/* A byte string of min..max bytes: shorter is CG_ERR_RANGE, longer TOO_LARGE. */
static int get_bstr(struct reader *r, size_t min, size_t max,
		    const uint8_t **p, size_t *n)
{
	struct tok t;
	int rc = get(r, &t, TOK_BSTR);

	if (rc != CG_OK)
		return rc;
	if (t.len < min)
		return CG_ERR_RANGE;
	if (t.len > max)
		return CG_ERR_TOO_LARGE;
	*p = t.ptr;
	*n = t.len;
	return CG_OK;
}

static int get_tstr(struct reader *r, size_t max, const char **p, size_t *n)
{
	struct tok t;
	int rc = get(r, &t, TOK_TSTR);

	if (rc != CG_OK)
		return rc;
	if (t.len > max)
		return CG_ERR_TOO_LARGE;
	if (!utf8_valid(t.ptr, t.len))
		return CG_ERR_MALFORMED;
	*p = (const char *)t.ptr;
	*n = t.len;
	return CG_OK;
}

/* An entry takes two bytes at least, so a meta map holds no more keys. */
#define META_MAX_KEYS (CG_PROTO_MAX_META / 2)

/*
 * Insert the key k (at offset `at` from base) into the sorted set of meta
 * key offsets, or report a duplicate. The order is by length, then bytes;
 * stored keys are re-read from the input, so the set costs 2 bytes a key.
 */
static int meta_key_add(const struct reader *r, size_t base, uint16_t *keys,
			size_t *nkeys, const struct tok *k, size_t at)
{
	size_t lo = 0, hi = *nkeys;

	if (*nkeys == META_MAX_KEYS)
		return CG_ERR_TOO_LARGE;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct reader kr = { r->buf, r->len, base + keys[mid] };
		struct tok o;
		int cmp;

		if (next(&kr, &o) != CG_OK)
			return CG_ERR_MALFORMED;  /* not reached: validated before */
		if (o.len != k->len)
			cmp = o.len < k->len ? -1 : 1;
		else
			cmp = memcmp(o.ptr, k->ptr, k->len);
		if (cmp == 0)
			return CG_ERR_MALFORMED;
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	memmove(keys + lo + 1, keys + lo, (*nkeys - lo) * sizeof *keys);
	keys[lo] = (uint16_t)at;
	(*nkeys)++;
	return CG_OK;
}

/*
 * Meta (key 36): one map, definite or indefinite, of unique UTF-8 text keys
 * to text or integer values, at most CG_PROTO_MAX_META bytes encoded.
 */
static int parse_meta(struct reader *r)
{
	uint16_t keys[META_MAX_KEYS];
	size_t nkeys = 0;
	size_t start = r->pos;
	struct tok t;
	struct cont c;
	bool more;
	int rc;

	if ((rc = get(r, &t, TOK_MAP)) != CG_OK || (rc = cont_open(r, &t, &c)) != CG_OK)
		return rc;
	for (;;) {
		size_t key_at = r->pos;

		if ((rc = cont_next(r, &c, &t, &more)) != CG_OK)
			return rc;
		if (r->pos - start > CG_PROTO_MAX_META)
			return CG_ERR_TOO_LARGE;
		if (!more)
			return CG_OK;
		if (t.kind != TOK_TSTR)
			return CG_ERR_TYPE;
		if (!utf8_valid(t.ptr, t.len))
			return CG_ERR_MALFORMED;
		rc = meta_key_add(r, start, keys, &nkeys, &t, key_at - start);
		if (rc != CG_OK)
			return rc;
		if ((rc = next(r, &t)) != CG_OK)
			return rc;
		if (r->pos - start > CG_PROTO_MAX_META)
			return CG_ERR_TOO_LARGE;
		if (t.kind == TOK_BREAK)
			return CG_ERR_MALFORMED;
		if (t.kind == TOK_TSTR) {
			if (!utf8_valid(t.ptr, t.len))
				return CG_ERR_MALFORMED;
		} else if (t.kind != TOK_UINT && t.kind != TOK_NEGINT) {
			return CG_ERR_TYPE;
		}
	}
}

static int get_meta(struct reader *r, const uint8_t **p, size_t *n)
{
	size_t start = r->pos;
	int rc = parse_meta(r);

	if (rc != CG_OK)
		return rc;
	*p = r->buf + start;
	*n = r->pos - start;
	return CG_OK;
}

/* Missing (key 42): an array of [first, last] arrays, first ≤ last. */
static int get_missing(struct reader *r, struct cg_ack *a)
{
	size_t cap = a->missing ? a->missing_cap : 0;
	struct tok t;
	struct cont c;
	bool more;
	int rc;

	if ((rc = get(r, &t, TOK_ARRAY)) != CG_OK || (rc = cont_open(r, &t, &c)) != CG_OK)
		return rc;
	if (!c.indef && c.left > cap)
		return CG_ERR_TOO_LARGE;
	a->n_missing = 0;
	for (;;) {
		if ((rc = cont_next(r, &c, &t, &more)) != CG_OK)
			return rc;
		if (!more)
			return CG_OK;
		if (t.kind != TOK_ARRAY || (!t.indef && t.val != 2))
			return CG_ERR_TYPE;
		if (a->n_missing == cap)
			return CG_ERR_TOO_LARGE;

		struct cont pair;
		uint64_t v[2];

		if ((rc = cont_open(r, &t, &pair)) != CG_OK)
			return rc;
		for (int i = 0; i < 2; i++) {
			if ((rc = cont_next(r, &pair, &t, &more)) != CG_OK)
				return rc;
			if (!more || t.kind != TOK_UINT)
				return CG_ERR_TYPE;
			if (t.val > UINT32_MAX)
				return CG_ERR_RANGE;
			v[i] = t.val;
		}
		if ((rc = cont_next(r, &pair, &t, &more)) != CG_OK)
			return rc;
		if (more)
			return CG_ERR_TYPE;
		if (v[0] > v[1])
			return CG_ERR_RANGE;
		a->missing[a->n_missing].first = (uint32_t)v[0];
		a->missing[a->n_missing].last = (uint32_t)v[1];
		a->n_missing++;
	}
}

/* ---- the message map ------------------------------------------------- */

#define KEY(k) (UINT64_C(1) << (k))

struct msg_desc {
	uint32_t type;
	uint64_t keys;          /* KEY(k) set: k is known to this message */
	int (*field)(struct reader *r, uint32_t key, void *out);
};

/*
 * Walk the one map that must make up buf, handing each known key other than
 * 0 to d->field and skipping the rest. *seen collects the known keys found.
 */
static int decode_msg(const uint8_t *buf, size_t len, const struct msg_desc *d,
		      void *out, uint64_t *seen)
{
	struct reader r = { buf, len, 0 };
	struct tok t;
	struct cont c;
	bool more;
	int rc;

	*seen = 0;
	if (!buf || len == 0)
		return CG_ERR_MALFORMED;
	if ((rc = next(&r, &t)) != CG_OK)
		return rc;
	if (t.kind != TOK_MAP)
		return CG_ERR_MALFORMED;
	if ((rc = cont_open(&r, &t, &c)) != CG_OK)
		return rc;
	for (;;) {
		if ((rc = cont_next(&r, &c, &t, &more)) != CG_OK)
			return rc;
		if (!more)
			break;
		if (t.kind == TOK_UINT && t.val < 64 && (d->keys & KEY(t.val))) {
			uint32_t key = (uint32_t)t.val;

			if (*seen & KEY(key))
				return CG_ERR_MALFORMED;
			*seen |= KEY(key);
			if (key == CG_KEY_TYPE) {
				uint64_t type;

				rc = get_u64(&r, &type);
				if (rc == CG_OK && type != d->type)
					rc = CG_ERR_MALFORMED;
			} else {
				rc = d->field(&r, key, out);
			}
		} else {
			rc = skip_rest(&r, t, 1);
			if (rc == CG_OK)
				rc = skip_item(&r, 1);
		}
		if (rc != CG_OK)
			return rc;
	}
	if (r.pos != r.len)
		return CG_ERR_MALFORMED;
	return (*seen & KEY(CG_KEY_TYPE)) ? CG_OK : CG_ERR_MISSING;
}

static int chunk_field(struct reader *r, uint32_t key, void *out)
{
	struct cg_chunk *c = out;

	switch (key) {
	case CG_KEY_UPTIME_MS:
		c->present |= CG_HAS_UPTIME;
		return get_int(r, &c->uptime_ms);
	case CG_KEY_DUMP_ID:
		return get_u64(r, &c->dump_id);
	case CG_KEY_ORDINAL:
		return get_u32(r, 0, UINT32_MAX, &c->ordinal);
	case CG_KEY_CONTENT:
		return get_bstr(r, 1, SIZE_MAX, &c->content, &c->content_len);
	case CG_KEY_LAST:
		return get_bool(r, &c->last);
	case CG_KEY_BUILD_ID:
		c->present |= CG_HAS_BUILD_ID;
		return get_bstr(r, 1, CG_PROTO_MAX_BUILD_ID, &c->build_id, &c->build_id_len);
	case CG_KEY_OS:
		c->present |= CG_HAS_OS;
		return get_u32(r, 0, UINT32_MAX, &c->os);
	case CG_KEY_TOTAL_SIZE:
		c->present |= CG_HAS_TOTAL_SIZE;
		return get_u64(r, &c->total_size);
	case CG_KEY_CRC32:
		c->present |= CG_HAS_CRC32;
		return get_u32(r, 0, UINT32_MAX, &c->crc32);
	case CG_KEY_FORMAT:
		c->present |= CG_HAS_FORMAT;
		return get_u32(r, 0, CG_FORMAT_RAW, &c->format);
	case CG_KEY_FW_VERSION:
		c->present |= CG_HAS_FW_VERSION;
		return get_tstr(r, CG_PROTO_MAX_FW_VERSION, &c->fw_version, &c->fw_version_len);
	case CG_KEY_META:
		c->present |= CG_HAS_META;
		return get_meta(r, &c->meta, &c->meta_len);
	}
	return CG_ERR_MALFORMED;  /* not reached: decode_msg passes known keys */
}

static const struct msg_desc chunk_desc = {
	CG_MSG_CHUNK,
	KEY(CG_KEY_TYPE) | KEY(CG_KEY_UPTIME_MS) | KEY(CG_KEY_DUMP_ID) |
		KEY(CG_KEY_ORDINAL) | KEY(CG_KEY_CONTENT) | KEY(CG_KEY_LAST) |
		KEY(CG_KEY_BUILD_ID) | KEY(CG_KEY_OS) | KEY(CG_KEY_TOTAL_SIZE) |
		KEY(CG_KEY_CRC32) | KEY(CG_KEY_FORMAT) | KEY(CG_KEY_FW_VERSION) |
		KEY(CG_KEY_META),
	chunk_field,
};

int cg_chunk_decode(const uint8_t *buf, size_t len, struct cg_chunk *out)
{
	uint64_t seen;

	memset(out, 0, sizeof *out);
	int rc = decode_msg(buf, len, &chunk_desc, out, &seen);
	if (rc != CG_OK)
		return rc;
	uint64_t req = KEY(CG_KEY_DUMP_ID) | KEY(CG_KEY_ORDINAL) | KEY(CG_KEY_CONTENT);
	return (seen & req) == req ? CG_OK : CG_ERR_MISSING;
}

static int hello_field(struct reader *r, uint32_t key, void *out)
{
	struct cg_hello *h = out;

	switch (key) {
	case CG_KEY_UPTIME_MS:
		h->present |= CG_HAS_UPTIME;
		return get_int(r, &h->uptime_ms);
	case CG_KEY_BUILD_ID:
		h->present |= CG_HAS_BUILD_ID;
		return get_bstr(r, 1, CG_PROTO_MAX_BUILD_ID, &h->build_id, &h->build_id_len);
	case CG_KEY_OS:
		h->present |= CG_HAS_OS;
		return get_u32(r, 0, UINT32_MAX, &h->os);
	case CG_KEY_RUN_ID:
		h->present |= CG_HAS_RUN_ID;
		return get_u64(r, &h->run_id);
	case CG_KEY_FW_VERSION:
		h->present |= CG_HAS_FW_VERSION;
		return get_tstr(r, CG_PROTO_MAX_FW_VERSION, &h->fw_version, &h->fw_version_len);
	}
	return CG_ERR_MALFORMED;
}

static const struct msg_desc hello_desc = {
	CG_MSG_HELLO,
	KEY(CG_KEY_TYPE) | KEY(CG_KEY_UPTIME_MS) | KEY(CG_KEY_BUILD_ID) |
		KEY(CG_KEY_OS) | KEY(CG_KEY_RUN_ID) | KEY(CG_KEY_FW_VERSION),
	hello_field,
};

int cg_hello_decode(const uint8_t *buf, size_t len, struct cg_hello *out)
{
	uint64_t seen;

	memset(out, 0, sizeof *out);
	return decode_msg(buf, len, &hello_desc, out, &seen);
}

static int ack_field(struct reader *r, uint32_t key, void *out)
{
	struct cg_ack *a = out;

	switch (key) {
	case CG_KEY_DUMP_ID:
		return get_u64(r, &a->dump_id);
	case CG_KEY_STATUS:
		return get_u32(r, CG_ACK_COMPLETE, CG_ACK_INCOMPLETE, &a->status);
	case CG_KEY_REASON:
		a->present |= CG_HAS_REASON;
		return get_tstr(r, CG_PROTO_MAX_REASON, &a->reason, &a->reason_len);
	case CG_KEY_MISSING:
		return get_missing(r, a);
	}
	return CG_ERR_MALFORMED;
}

static const struct msg_desc ack_desc = {
	CG_MSG_ACK,
	KEY(CG_KEY_TYPE) | KEY(CG_KEY_DUMP_ID) | KEY(CG_KEY_STATUS) |
		KEY(CG_KEY_REASON) | KEY(CG_KEY_MISSING),
	ack_field,
};

int cg_ack_decode(const uint8_t *buf, size_t len, struct cg_ack *out)
{
	struct cg_range *missing = out->missing;
	size_t cap = out->missing_cap;
	uint64_t seen;

	memset(out, 0, sizeof *out);
	out->missing = missing;
	out->missing_cap = cap;
	int rc = decode_msg(buf, len, &ack_desc, out, &seen);
	if (rc != CG_OK)
		return rc;
	uint64_t req = KEY(CG_KEY_DUMP_ID) | KEY(CG_KEY_STATUS);
	return (seen & req) == req ? CG_OK : CG_ERR_MISSING;
}

static int consent_field(struct reader *r, uint32_t key, void *out)
{
	struct cg_consent *c = out;

	switch (key) {
	case CG_KEY_ENABLED:
		return get_bool(r, &c->enabled);
	case CG_KEY_ISSUED_AT:
		return get_u64(r, &c->issued_at);
	case CG_KEY_VALID_FOR:
		c->present |= CG_HAS_VALID_FOR;
		return get_u64(r, &c->valid_for);
	case CG_KEY_GROUP:
		c->present |= CG_HAS_GROUP;
		return get_tstr(r, CG_PROTO_MAX_GROUP, &c->group, &c->group_len);
	}
	return CG_ERR_MALFORMED;
}

static const struct msg_desc consent_desc = {
	CG_MSG_CONSENT,
	KEY(CG_KEY_TYPE) | KEY(CG_KEY_ENABLED) | KEY(CG_KEY_ISSUED_AT) |
		KEY(CG_KEY_VALID_FOR) | KEY(CG_KEY_GROUP),
	consent_field,
};

int cg_consent_decode(const uint8_t *buf, size_t len, struct cg_consent *out)
{
	uint64_t seen;

	memset(out, 0, sizeof *out);
	out->valid_for = CONSENT_VALID_FOR_DEFAULT;
	int rc = decode_msg(buf, len, &consent_desc, out, &seen);
	if (rc != CG_OK)
		return rc;
	uint64_t req = KEY(CG_KEY_ENABLED) | KEY(CG_KEY_ISSUED_AT);
	return (seen & req) == req ? CG_OK : CG_ERR_MISSING;
}

/* A peek: stops at key 0 without validating the rest of the map. */
int cg_msg_type(const uint8_t *buf, size_t len, uint32_t *type)
{
	struct reader r = { buf, len, 0 };
	struct tok t;
	struct cont c;
	bool more;
	int rc;

	if (!buf || len == 0)
		return CG_ERR_MALFORMED;
	if ((rc = next(&r, &t)) != CG_OK)
		return rc;
	if (t.kind != TOK_MAP)
		return CG_ERR_MALFORMED;
	if ((rc = cont_open(&r, &t, &c)) != CG_OK)
		return rc;
	for (;;) {
		if ((rc = cont_next(&r, &c, &t, &more)) != CG_OK)
			return rc;
		if (!more)
			return CG_ERR_MISSING;
		if (t.kind == TOK_UINT && t.val == CG_KEY_TYPE)
			return get_u32(&r, 0, UINT32_MAX, type);
		if ((rc = skip_rest(&r, t, 1)) != CG_OK || (rc = skip_item(&r, 1)) != CG_OK)
			return rc;
	}
}

/* ---- encoding --------------------------------------------------------- */

struct writer {
	uint8_t *buf;
	size_t cap;
	size_t pos;
	bool full;
};

static size_t w_room(struct writer *w)
{
	if (w->full || w->pos == w->cap) {
		w->full = true;
		return 0;
	}
	return w->cap - w->pos;
}

/* libcbor's encoders return 0 when the item does not fit. */
static void w_advance(struct writer *w, size_t n)
{
	if (n == 0)
		w->full = true;
	else
		w->pos += n;
}

static void w_uint(struct writer *w, uint64_t v)
{
	size_t room = w_room(w);

	if (room)
		w_advance(w, cbor_encode_uint(v, w->buf + w->pos, room));
}

static void w_int(struct writer *w, int64_t v)
{
	size_t room = w_room(w);

	if (!room)
		return;
	if (v >= 0)
		w_advance(w, cbor_encode_uint((uint64_t)v, w->buf + w->pos, room));
	else
		w_advance(w, cbor_encode_negint((uint64_t)(-1 - v), w->buf + w->pos, room));
}

static void w_bool(struct writer *w, bool v)
{
	size_t room = w_room(w);

	if (room)
		w_advance(w, cbor_encode_bool(v, w->buf + w->pos, room));
}

static void w_map(struct writer *w, size_t n)
{
	size_t room = w_room(w);

	if (room)
		w_advance(w, cbor_encode_map_start(n, w->buf + w->pos, room));
}

static void w_array(struct writer *w, size_t n)
{
	size_t room = w_room(w);

	if (room)
		w_advance(w, cbor_encode_array_start(n, w->buf + w->pos, room));
}

static void w_raw(struct writer *w, const void *p, size_t n)
{
	if (n == 0 || w->full)
		return;
	if (w->cap - w->pos < n) {
		w->full = true;
		return;
	}
	memcpy(w->buf + w->pos, p, n);
	w->pos += n;
}

static void w_bstr(struct writer *w, const uint8_t *p, size_t n)
{
	size_t room = w_room(w);

	if (!room)
		return;
	w_advance(w, cbor_encode_bytestring_start(n, w->buf + w->pos, room));
	w_raw(w, p, n);
}

static void w_tstr(struct writer *w, const char *p, size_t n)
{
	size_t room = w_room(w);

	if (!room)
		return;
	w_advance(w, cbor_encode_string_start(n, w->buf + w->pos, room));
	w_raw(w, p, n);
}

static int w_finish(const struct writer *w, size_t *written)
{
	if (w->full) {
		*written = 0;
		return CG_ERR_BUFFER;
	}
	*written = w->pos;
	return CG_OK;
}

static unsigned popcount(uint32_t v)
{
	unsigned n = 0;

	for (; v; v &= v - 1)
		n++;
	return n;
}

static bool build_id_ok(const uint8_t *p, size_t n)
{
	return p && n >= 1 && n <= CG_PROTO_MAX_BUILD_ID;
}

static bool text_ok(const char *p, size_t n, size_t max)
{
	return n <= max && (n == 0 || (p && utf8_valid((const uint8_t *)p, n)));
}

/* What the decoder accepts, so that every encoded chunk decodes. */
static bool meta_ok(const uint8_t *p, size_t n)
{
	struct reader r = { p, n, 0 };

	return p && n > 0 && parse_meta(&r) == CG_OK && r.pos == n;
}

#define CHUNK_OPTIONAL (CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS | \
	CG_HAS_TOTAL_SIZE | CG_HAS_CRC32 | CG_HAS_FORMAT | CG_HAS_FW_VERSION | \
	CG_HAS_META)
#define CHUNK_SPOTFLOW (CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS)

/*
 * Keys in ascending order. `last` is always written, as Spotflow's device
 * module does, so both encodings carry the same required keys.
 */
int cg_chunk_encode(const struct cg_chunk *c, uint32_t flags, uint8_t *buf,
		    size_t cap, size_t *written)
{
	uint32_t has = c->present & ((flags & CG_ENC_SPOTFLOW) ? CHUNK_SPOTFLOW : CHUNK_OPTIONAL);
	struct writer w = { buf, buf ? cap : 0, 0, false };

	*written = 0;
	if (!c->content || c->content_len == 0)
		return CG_ERR_RANGE;
	if ((has & CG_HAS_BUILD_ID) && !build_id_ok(c->build_id, c->build_id_len))
		return CG_ERR_RANGE;
	if ((has & CG_HAS_FORMAT) && c->format > CG_FORMAT_RAW)
		return CG_ERR_RANGE;
	if ((has & CG_HAS_FW_VERSION) &&
	    !text_ok(c->fw_version, c->fw_version_len, CG_PROTO_MAX_FW_VERSION))
		return CG_ERR_RANGE;
	if ((has & CG_HAS_META) && !meta_ok(c->meta, c->meta_len))
		return CG_ERR_RANGE;

	w_map(&w, 5 + popcount(has));
	w_uint(&w, CG_KEY_TYPE);
	w_uint(&w, CG_MSG_CHUNK);
	if (has & CG_HAS_UPTIME) {
		w_uint(&w, CG_KEY_UPTIME_MS);
		w_int(&w, c->uptime_ms);
	}
	w_uint(&w, CG_KEY_DUMP_ID);
	w_uint(&w, c->dump_id);
	w_uint(&w, CG_KEY_ORDINAL);
	w_uint(&w, c->ordinal);
	w_uint(&w, CG_KEY_CONTENT);
	w_bstr(&w, c->content, c->content_len);
	w_uint(&w, CG_KEY_LAST);
	w_bool(&w, c->last);
	if (has & CG_HAS_BUILD_ID) {
		w_uint(&w, CG_KEY_BUILD_ID);
		w_bstr(&w, c->build_id, c->build_id_len);
	}
	if (has & CG_HAS_OS) {
		w_uint(&w, CG_KEY_OS);
		w_uint(&w, c->os);
	}
	if (has & CG_HAS_TOTAL_SIZE) {
		w_uint(&w, CG_KEY_TOTAL_SIZE);
		w_uint(&w, c->total_size);
	}
	if (has & CG_HAS_CRC32) {
		w_uint(&w, CG_KEY_CRC32);
		w_uint(&w, c->crc32);
	}
	if (has & CG_HAS_FORMAT) {
		w_uint(&w, CG_KEY_FORMAT);
		w_uint(&w, c->format);
	}
	if (has & CG_HAS_FW_VERSION) {
		w_uint(&w, CG_KEY_FW_VERSION);
		w_tstr(&w, c->fw_version, c->fw_version_len);
	}
	if (has & CG_HAS_META) {
		w_uint(&w, CG_KEY_META);
		w_raw(&w, c->meta, c->meta_len);
	}
	return w_finish(&w, written);
}

#define HELLO_OPTIONAL (CG_HAS_UPTIME | CG_HAS_BUILD_ID | CG_HAS_OS | \
	CG_HAS_RUN_ID | CG_HAS_FW_VERSION)

int cg_hello_encode(const struct cg_hello *h, uint8_t *buf, size_t cap, size_t *written)
{
	uint32_t has = h->present & HELLO_OPTIONAL;
	struct writer w = { buf, buf ? cap : 0, 0, false };

	*written = 0;
	if ((has & CG_HAS_BUILD_ID) && !build_id_ok(h->build_id, h->build_id_len))
		return CG_ERR_RANGE;
	if ((has & CG_HAS_FW_VERSION) &&
	    !text_ok(h->fw_version, h->fw_version_len, CG_PROTO_MAX_FW_VERSION))
		return CG_ERR_RANGE;

	w_map(&w, 1 + popcount(has));
	w_uint(&w, CG_KEY_TYPE);
	w_uint(&w, CG_MSG_HELLO);
	if (has & CG_HAS_UPTIME) {
		w_uint(&w, CG_KEY_UPTIME_MS);
		w_int(&w, h->uptime_ms);
	}
	if (has & CG_HAS_BUILD_ID) {
		w_uint(&w, CG_KEY_BUILD_ID);
		w_bstr(&w, h->build_id, h->build_id_len);
	}
	if (has & CG_HAS_OS) {
		w_uint(&w, CG_KEY_OS);
		w_uint(&w, h->os);
	}
	if (has & CG_HAS_RUN_ID) {
		w_uint(&w, CG_KEY_RUN_ID);
		w_uint(&w, h->run_id);
	}
	if (has & CG_HAS_FW_VERSION) {
		w_uint(&w, CG_KEY_FW_VERSION);
		w_tstr(&w, h->fw_version, h->fw_version_len);
	}
	return w_finish(&w, written);
}

/* `missing` is written when n_missing > 0; missing_cap is not consulted. */
int cg_ack_encode(const struct cg_ack *a, uint8_t *buf, size_t cap, size_t *written)
{
	bool reason = a->present & CG_HAS_REASON;
	struct writer w = { buf, buf ? cap : 0, 0, false };

	*written = 0;
	if (a->status < CG_ACK_COMPLETE || a->status > CG_ACK_INCOMPLETE)
		return CG_ERR_RANGE;
	if (reason && !text_ok(a->reason, a->reason_len, CG_PROTO_MAX_REASON))
		return CG_ERR_RANGE;
	if (a->n_missing > 0 && !a->missing)
		return CG_ERR_RANGE;
	for (size_t i = 0; i < a->n_missing; i++) {
		if (a->missing[i].first > a->missing[i].last)
			return CG_ERR_RANGE;
	}

	w_map(&w, 3 + (size_t)reason + (a->n_missing > 0));
	w_uint(&w, CG_KEY_TYPE);
	w_uint(&w, CG_MSG_ACK);
	w_uint(&w, CG_KEY_DUMP_ID);
	w_uint(&w, a->dump_id);
	w_uint(&w, CG_KEY_STATUS);
	w_uint(&w, a->status);
	if (reason) {
		w_uint(&w, CG_KEY_REASON);
		w_tstr(&w, a->reason, a->reason_len);
	}
	if (a->n_missing > 0) {
		w_uint(&w, CG_KEY_MISSING);
		w_array(&w, a->n_missing);
		for (size_t i = 0; i < a->n_missing && !w.full; i++) {
			w_array(&w, 2);
			w_uint(&w, a->missing[i].first);
			w_uint(&w, a->missing[i].last);
		}
	}
	return w_finish(&w, written);
}

int cg_consent_encode(const struct cg_consent *c, uint8_t *buf, size_t cap, size_t *written)
{
	bool valid_for = c->present & CG_HAS_VALID_FOR;
	bool group = c->present & CG_HAS_GROUP;
	struct writer w = { buf, buf ? cap : 0, 0, false };

	*written = 0;
	if (group && !text_ok(c->group, c->group_len, CG_PROTO_MAX_GROUP))
		return CG_ERR_RANGE;

	w_map(&w, 3 + (size_t)valid_for + (size_t)group);
	w_uint(&w, CG_KEY_TYPE);
	w_uint(&w, CG_MSG_CONSENT);
	w_uint(&w, CG_KEY_ENABLED);
	w_bool(&w, c->enabled);
	w_uint(&w, CG_KEY_ISSUED_AT);
	w_uint(&w, c->issued_at);
	if (valid_for) {
		w_uint(&w, CG_KEY_VALID_FOR);
		w_uint(&w, c->valid_for);
	}
	if (group) {
		w_uint(&w, CG_KEY_GROUP);
		w_tstr(&w, c->group, c->group_len);
	}
	return w_finish(&w, written);
}

/*
 * The longest chunk cg_chunk_encode can write: every key present, every
 * integer in its 9-byte form, every string at its limit. Saturates rather
 * than wrap for absurd content_len.
 */
size_t cg_chunk_encoded_max(size_t content_len)
{
	const size_t fixed =
		1 +                                     /* map head, 13 pairs */
		1 + 1 +                                 /* 0: type */
		1 + 9 +                                 /* 6: uptime_ms */
		1 + 9 +                                 /* 9: dump_id */
		1 + 5 +                                 /* 10: ordinal */
		1 + 9 +                                 /* 11: content head */
		1 + 1 +                                 /* 12: last */
		1 + 2 + CG_PROTO_MAX_BUILD_ID +         /* 14: build_id */
		1 + 5 +                                 /* 15: os */
		2 + 9 +                                 /* 32: total_size */
		2 + 5 +                                 /* 33: crc32 */
		2 + 1 +                                 /* 34: format */
		2 + 2 + CG_PROTO_MAX_FW_VERSION +       /* 35: fw_version */
		2 + CG_PROTO_MAX_META;                  /* 36: meta */

	return content_len > SIZE_MAX - fixed ? SIZE_MAX : fixed + content_len;
}

/* ---- small helpers ---------------------------------------------------- */

bool cg_device_id_valid(const char *id, size_t len)
{
	if (!id || len == 0 || len > CG_DEVICE_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = id[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
		if (!ok)
			return false;
	}
	return true;
}

uint32_t cg_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
	/* zlib's crc32() takes a uInt length, and returns 0 for a NULL buffer. */
	if (!data)
		return crc;
	while (len > 0) {
		uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
		crc = (uint32_t)crc32(crc, data, n);
		data += n;
		len -= n;
	}
	return crc;
}

const char *cg_strerror(int err)
{
	static const char *const msg[CG_ERR__COUNT] = {
		[CG_OK] = "success",
		[CG_ERR_NOMEM] = "out of memory",
		[CG_ERR_MALFORMED] = "malformed message",
		[CG_ERR_TYPE] = "a key has a value of the wrong type",
		[CG_ERR_MISSING] = "a required key is missing",
		[CG_ERR_RANGE] = "a value is out of range",
		[CG_ERR_TOO_LARGE] = "a size limit was exceeded",
		[CG_ERR_DEPTH] = "nesting too deep",
		[CG_ERR_BUFFER] = "output buffer too small",
		[CG_ERR_IO] = "I/O error",
		[CG_ERR_STORE] = "storage error",
		[CG_ERR_CONFIG] = "invalid configuration",
		[CG_ERR_NOT_FOUND] = "not found",
		[CG_ERR_CONFLICT] = "conflicts with stored data",
		[CG_ERR_MQTT] = "MQTT error",
	};

	if (err < 0 || err >= CG_ERR__COUNT || !msg[err])
		return "unknown error";
	return msg[err];
}
