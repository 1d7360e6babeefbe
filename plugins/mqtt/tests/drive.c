/*
 * drive: run an output plugin the way the core does, without the core.
 *
 *   drive PLUGIN.so [key=value...] [--save DIR] [-- COMMAND...]
 *   drive --check FILE
 *
 * The first form dlopens PLUGIN.so, checks its ABI version and struct size,
 * fills its options struct from the key=value pairs according to its option
 * table (defaults, required keys, bounds, unknown keys: as the core does),
 * calls init, runs the commands (the arguments after "--", else one per line
 * from stdin), then destroy. Commands:
 *
 *   flush N SIZE      a new batch of N records whose dumps are SIZE bytes each
 *                     ("4MiB", "1000"; "t" = a throttled count with no dump)
 *   retry             the last batch again (same batch_id, same content)
 *   bench COUNT N SIZE  COUNT new batches one after another; prints throughput
 *   sleep MS
 *   quit
 *
 * Each flush prints "result batch=ID status=OK|RETRY|DROP ms=T bytes=LEN
 * reason=...". With --save DIR, the CBOR document of every batch that
 * returned OK is written to DIR/ok-NNNNNN.cbor, in order, so a test can compare
 * what arrived upstream byte for byte.
 *
 * The second form decodes FILE as a sequence of batch documents (what
 * mosquitto_sub -N writes for several messages), checks every dump against
 * the bytes flush generated for it, and prints "doc batch=ID records=N
 * dumps=N dump_bytes=B" per document. Exit status 1 on any mismatch.
 *
 * Dump bytes are a function of (batch_id, record index, length), so the
 * checker needs nothing but the document.
 */
#include <cbor.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crashgate/plugin.h"

#define GATEWAY_ID "gw-test"
#define UPSTREAM   "cloud"
#define REGION     "eu-1"

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "drive: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- deterministic dump bytes ---- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_dump(uint8_t *p, size_t len, uint64_t batch_id, size_t idx)
{
	uint64_t s = batch_id * 1000003u + idx;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v = splitmix(&s);
		memcpy(p + i, &v, 8);
	}
	uint64_t v = splitmix(&s);
	memcpy(p + i, &v, len - i);
}

/* ---- a growing buffer with CBOR heads ---- */

struct wbuf {
	uint8_t *p;
	size_t len, cap;
};

static void wb_put(struct wbuf *w, const void *data, size_t n)
{
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *p = realloc(w->p, cap);
		if (!p)
			die("out of memory");
		w->p = p;
		w->cap = cap;
	}
	memcpy(w->p + w->len, data, n);
	w->len += n;
}

enum head { H_UINT, H_BYTES, H_TEXT, H_ARRAY, H_MAP };

static void wb_head(struct wbuf *w, enum head h, uint64_t v)
{
	unsigned char b[9];
	size_t n = 0;
	switch (h) {
	case H_UINT: n = cbor_encode_uint(v, b, sizeof b); break;
	case H_BYTES: n = cbor_encode_bytestring_start((size_t)v, b, sizeof b); break;
	case H_TEXT: n = cbor_encode_string_start((size_t)v, b, sizeof b); break;
	case H_ARRAY: n = cbor_encode_array_start((size_t)v, b, sizeof b); break;
	case H_MAP: n = cbor_encode_map_start((size_t)v, b, sizeof b); break;
	}
	if (!n)
		die("cbor head");
	wb_put(w, b, n);
}

static void wb_text(struct wbuf *w, const char *s)
{
	wb_head(w, H_TEXT, strlen(s));
	wb_put(w, s, strlen(s));
}

/* ---- the host ---- */

static struct {
	char *save_dir;
	uint8_t *last;        /* the last document batch_cbor produced */
	size_t last_len;
	uint64_t last_id;
	unsigned saved;
} G;

static void host_log(const struct cg_plugin_host *host, int level, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[%s] %s: ", level >= 0 && level <= 3 ? names[level] : "?", host->upstream);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

static char *host_read_secret(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);
	fclose(f);
	if (n < 0) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	return line;
}

/* {"gateway", "upstream", "region", "batch_id", "records": [{"meta": {...}, ? "dump": bstr}]} */
static int host_batch_cbor(const struct cg_plugin_host *host, const struct cg_plugin_batch *b, uint8_t **buf,
			   size_t *len)
{
	struct wbuf w = { 0 };
	wb_head(&w, H_MAP, 5);
	wb_text(&w, "gateway");
	wb_text(&w, host->gateway_id);
	wb_text(&w, "upstream");
	wb_text(&w, host->upstream);
	wb_text(&w, "region");
	wb_text(&w, host->region);
	wb_text(&w, "batch_id");
	wb_head(&w, H_UINT, b->batch_id);
	wb_text(&w, "records");
	wb_head(&w, H_ARRAY, b->n);
	for (size_t i = 0; i < b->n; i++) {
		const struct cg_plugin_record *r = &b->records[i];
		wb_head(&w, H_MAP, r->body ? 2 : 1);
		wb_text(&w, "meta");
		wb_put(&w, r->meta_cbor, r->meta_cbor_len);
		if (r->body) {
			wb_text(&w, "dump");
			wb_head(&w, H_BYTES, r->body_len);
			wb_put(&w, r->body, r->body_len);
		}
	}
	free(G.last);
	G.last = malloc(w.len);
	if (!G.last)
		die("out of memory");
	memcpy(G.last, w.p, w.len);
	G.last_len = w.len;
	G.last_id = b->batch_id;
	*buf = w.p;
	*len = w.len;
	return 0;
}

static const struct cg_plugin_host HOST = {
	.abi_version = CG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct cg_plugin_host),
	.gateway_id = GATEWAY_ID,
	.upstream = UPSTREAM,
	.region = REGION,
	.log = host_log,
	.read_secret = host_read_secret,
	.batch_cbor = host_batch_cbor,
};

/* ---- options ---- */

static int parse_scaled(const char *s, const char *const *units, const uint64_t *scale, uint64_t *out)
{
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || errno || *s == '-')
		return -1;
	for (size_t i = 0; units[i]; i++) {
		if (strcmp(end, units[i]) == 0) {
			if (scale[i] && v > UINT64_MAX / scale[i])
				return -1;
			*out = v * scale[i];
			return 0;
		}
	}
	return -1;
}

static void set_option(const struct cg_plugin_option *o, void *opts, const char *v)
{
	char *field = (char *)opts + o->offset;
	uint64_t n = 0;
	switch (o->type) {
	case CG_OPT_STRING:
	case CG_OPT_PATH: {
		size_t len = strlen(v);
		if (len < o->min || (o->max && len > o->max))
			die("%s: length %zu outside %" PRIu64 "..%" PRIu64, o->name, len, o->min, o->max);
		char *s = strdup(v);
		if (!s)
			die("out of memory");
		memcpy(field, &s, sizeof s);
		return;
	}
	case CG_OPT_BOOL: {
		bool b;
		if (strcmp(v, "true") == 0)
			b = true;
		else if (strcmp(v, "false") == 0)
			b = false;
		else
			die("%s: expected true or false, not %s", o->name, v);
		memcpy(field, &b, sizeof b);
		return;
	}
	case CG_OPT_UINT32:
	case CG_OPT_SIZE:
	case CG_OPT_DURATION: {
		static const char *const plain[] = { "", NULL };
		static const uint64_t plain_scale[] = { 1 };
		static const char *const sizes[] = { "", "B", "KiB", "MiB", "GiB", "kB", "MB", "GB", NULL };
		static const uint64_t size_scale[] = { 1, 1, 1024, 1024 * 1024, 1024 * 1024 * 1024,
						       1000, 1000000, 1000000000 };
		static const char *const durs[] = { "ms", "s", "m", "h", "d", NULL };
		static const uint64_t dur_scale[] = { 1, 1000, 60000, 3600000, 86400000 };
		int rc = o->type == CG_OPT_SIZE ? parse_scaled(v, sizes, size_scale, &n)
			 : o->type == CG_OPT_DURATION ? parse_scaled(v, durs, dur_scale, &n)
						      : parse_scaled(v, plain, plain_scale, &n);
		if (rc != 0)
			die("%s: cannot read %s", o->name, v);
		if (n < o->min || (o->max && n > o->max))
			die("%s: %" PRIu64 " outside %" PRIu64 "..%" PRIu64, o->name, n, o->min, o->max);
		if (o->type == CG_OPT_UINT32) {
			uint32_t u = (uint32_t)n;
			memcpy(field, &u, sizeof u);
		} else {
			memcpy(field, &n, sizeof n);
		}
		return;
	}
	case CG_OPT_ENUM:
		for (uint32_t i = 0; o->values && o->values[i]; i++) {
			if (strcmp(o->values[i], v) == 0) {
				memcpy(field, &i, sizeof i);
				return;
			}
		}
		die("%s: %s is not one of the accepted values", o->name, v);
	}
	die("%s: unknown option type %u", o->name, o->type);
}

static void fill_options(const struct cg_plugin *p, void *opts, char **kv, int nkv)
{
	for (int i = 0; i < nkv; i++) {
		char *eq = strchr(kv[i], '=');
		if (!eq)
			die("expected key=value, not %s", kv[i]);
		*eq = '\0';
		const struct cg_plugin_option *o = p->options;
		while (o->name && strcmp(o->name, kv[i]) != 0)
			o++;
		if (!o->name)
			die("unknown option %s for plugin %s", kv[i], p->kind);
		*eq = '=';
	}
	for (const struct cg_plugin_option *o = p->options; o->name; o++) {
		const char *v = NULL;
		size_t nl = strlen(o->name);
		for (int i = 0; i < nkv; i++)
			if (strncmp(kv[i], o->name, nl) == 0 && kv[i][nl] == '=')
				v = kv[i] + nl + 1;
		if (!v)
			v = o->def;
		if (!v) {
			if (o->flags & CG_OPT_REQUIRED)
				die("option %s is required", o->name);
			continue;
		}
		set_option(o, opts, v);
	}
}

static void free_options(const struct cg_plugin *p, void *opts)
{
	for (const struct cg_plugin_option *o = p->options; o->name; o++) {
		if (o->type == CG_OPT_STRING || o->type == CG_OPT_PATH) {
			char *s;
			memcpy(&s, (char *)opts + o->offset, sizeof s);
			free(s);
		}
	}
	free(opts);
}

/* ---- batches ---- */

struct batch {
	struct cg_plugin_batch b;
	struct cg_plugin_record *rec;
	char **strs;          /* owned strings of the records */
	size_t nstrs;
};

static char *own(struct batch *bt, char *s)
{
	if (!s)
		die("out of memory");
	bt->strs[bt->nstrs++] = s;
	return s;
}

static void batch_free(struct batch *bt)
{
	if (!bt->rec)
		return;
	for (size_t i = 0; i < bt->b.n; i++) {
		free((void *)bt->rec[i].body);
		free((void *)bt->rec[i].meta_cbor);
	}
	for (size_t i = 0; i < bt->nstrs; i++)
		free(bt->strs[i]);
	free(bt->strs);
	free(bt->rec);
	memset(bt, 0, sizeof *bt);
}

static void meta_pair(cbor_item_t *map, const char *k, cbor_item_t *v)
{
	if (!v || !cbor_map_add(map, (struct cbor_pair){ .key = cbor_move(cbor_build_string(k)), .value = cbor_move(v) }))
		die("cbor meta");
}

static void batch_make(struct batch *bt, uint64_t batch_id, size_t n, const char *size)
{
	bool throttled = strcmp(size, "t") == 0;
	uint64_t body_len = 0;
	static const char *const sizes[] = { "", "B", "KiB", "MiB", "GiB", NULL };
	static const uint64_t scale[] = { 1, 1, 1024, 1024 * 1024, 1024 * 1024 * 1024 };
	if (!throttled && parse_scaled(size, sizes, scale, &body_len) != 0)
		die("bad dump size %s", size);
	memset(bt, 0, sizeof *bt);
	bt->rec = calloc(n ? n : 1, sizeof *bt->rec);
	bt->strs = calloc(3 * (n ? n : 1), sizeof *bt->strs);
	if (!bt->rec || !bt->strs)
		die("out of memory");
	bt->b.records = bt->rec;
	bt->b.n = n;
	bt->b.batch_id = batch_id;
	for (size_t i = 0; i < n; i++) {
		struct cg_plugin_record *r = &bt->rec[i];
		char *s;
		uint64_t dump_id = batch_id * 1000 + i;
		int64_t at = 1700000000000 + (int64_t)dump_id;
		if (asprintf(&s, "dev-%zu", i % 7) < 0)
			s = NULL;
		r->device = own(bt, s);
		if (asprintf(&s, "%s/%s/%" PRIu64 "/%" PRId64, GATEWAY_ID, r->device, dump_id, at) < 0)
			s = NULL;
		r->id = own(bt, s);
		r->dump_id = dump_id;
		r->group = "";
		r->region = REGION;
		r->status = throttled ? "throttled" : "stored";
		r->format = "raw";
		r->signature = "0123456789abcdef";
		r->received_at_ms = at;
		r->occurrences = throttled ? 5 : 1;
		if (asprintf(&s, "{\"id\":\"%s\",\"device\":\"%s\",\"dump_id\":%" PRIu64 ",\"region\":\"%s\","
			     "\"status\":\"%s\",\"size\":%" PRIu64 ",\"format\":\"raw\",\"signature\":\"%s\","
			     "\"occurrences\":%" PRIu64 "}", r->id, r->device, dump_id, REGION, r->status,
			     body_len, r->signature, r->occurrences) < 0)
			s = NULL;
		r->meta_json = own(bt, s);
		cbor_item_t *m = cbor_new_definite_map(9);
		if (!m)
			die("out of memory");
		meta_pair(m, "id", cbor_build_string(r->id));
		meta_pair(m, "device", cbor_build_string(r->device));
		meta_pair(m, "dump_id", cbor_build_uint64(dump_id));
		meta_pair(m, "region", cbor_build_string(REGION));
		meta_pair(m, "status", cbor_build_string(r->status));
		meta_pair(m, "size", cbor_build_uint64(throttled ? 0 : body_len));
		meta_pair(m, "format", cbor_build_string("raw"));
		meta_pair(m, "signature", cbor_build_string(r->signature));
		meta_pair(m, "occurrences", cbor_build_uint64(r->occurrences));
		unsigned char *mb = NULL;
		size_t mcap = 0;
		size_t ml = cbor_serialize_alloc(m, &mb, &mcap);
		cbor_decref(&m);
		if (!ml)
			die("cbor meta serialize");
		r->meta_cbor = mb;
		r->meta_cbor_len = ml;
		if (!throttled) {
			uint8_t *body = malloc(body_len ? body_len : 1);
			if (!body)
				die("out of memory");
			fill_dump(body, body_len, batch_id, i);
			r->body = body;
			r->body_len = body_len;
			bt->b.body_bytes += body_len;
		}
	}
}

/* ---- commands ---- */

static const char *status_name(uint32_t s)
{
	return s == CG_FLUSH_OK ? "OK" : s == CG_FLUSH_RETRY ? "RETRY" : s == CG_FLUSH_DROP ? "DROP" : "INVALID";
}

static void save_ok(void)
{
	if (!G.save_dir)
		return;
	char path[4096];
	snprintf(path, sizeof path, "%s/ok-%06u.cbor", G.save_dir, G.saved++);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(G.last, 1, G.last_len, f) != G.last_len || fclose(f) != 0)
		die("cannot write %s", path);
}

static uint32_t do_flush(const struct cg_plugin *p, void *state, struct batch *bt, bool quiet, size_t *bytes)
{
	struct cg_flush_result r;
	memset(&r, 0, sizeof r);
	G.last_len = 0;
	int64_t t0 = mono_ms();
	p->flush(state, &bt->b, &r);
	int64_t ms = mono_ms() - t0;
	if (r.status == CG_FLUSH_OK && G.last_id == bt->b.batch_id)
		save_ok();
	*bytes = G.last_id == bt->b.batch_id ? G.last_len : 0;
	if (!quiet || r.status != CG_FLUSH_OK)
		printf("result batch=%" PRIu64 " status=%s ms=%" PRId64 " bytes=%zu retry_after=%" PRIu64 " reason=%s\n",
		       bt->b.batch_id, status_name(r.status), ms, *bytes, r.retry_after_ms, r.reason);
	if (!memchr(r.reason, '\0', sizeof r.reason))
		die("reason not NUL-terminated");
	return r.status;
}

static int run(const struct cg_plugin *p, void *state, char *line, struct batch *bt, uint64_t *next_id)
{
	char *save = NULL;
	char *cmd = strtok_r(line, " \t\r\n", &save);
	if (!cmd || cmd[0] == '#')
		return 0;
	if (strcmp(cmd, "quit") == 0)
		return 1;
	char *a1 = strtok_r(NULL, " \t\r\n", &save);
	char *a2 = strtok_r(NULL, " \t\r\n", &save);
	char *a3 = strtok_r(NULL, " \t\r\n", &save);
	size_t bytes;
	if (strcmp(cmd, "flush") == 0 && a1 && a2) {
		batch_free(bt);
		batch_make(bt, (*next_id)++, strtoul(a1, NULL, 10), a2);
		do_flush(p, state, bt, false, &bytes);
	} else if (strcmp(cmd, "retry") == 0) {
		if (!bt->rec)
			die("retry: no batch yet");
		do_flush(p, state, bt, false, &bytes);
	} else if (strcmp(cmd, "bench") == 0 && a1 && a2 && a3) {
		unsigned long count = strtoul(a1, NULL, 10), ok = 0;
		uint64_t total = 0;
		int64_t busy = 0;
		for (unsigned long i = 0; i < count; i++) {
			batch_free(bt);
			batch_make(bt, (*next_id)++, strtoul(a2, NULL, 10), a3);
			int64_t t0 = mono_ms();   /* flush only: not the making of the batch */
			if (do_flush(p, state, bt, true, &bytes) == CG_FLUSH_OK) {
				ok++;
				total += bytes;
			}
			busy += mono_ms() - t0;
		}
		double s = busy / 1000.0;
		printf("bench count=%lu ok=%lu bytes=%" PRIu64 " seconds=%.3f MBps=%.1f per_batch_ms=%.1f\n", count, ok,
		       total, s, s > 0 ? total / s / 1e6 : 0.0, count ? busy / (double)count : 0.0);
	} else if (strcmp(cmd, "sleep") == 0 && a1) {
		long ms = strtol(a1, NULL, 10);
		struct timespec ts = { ms / 1000, ms % 1000 * 1000000L };
		nanosleep(&ts, NULL);
	} else {
		die("bad command: %s", cmd);
	}
	fflush(stdout);
	return 0;
}

/* ---- --check ---- */

static const cbor_item_t *map_get(const cbor_item_t *map, const char *key)
{
	if (!cbor_isa_map(map))
		return NULL;
	struct cbor_pair *pairs = cbor_map_handle(map);
	for (size_t i = 0; i < cbor_map_size(map); i++) {
		const cbor_item_t *k = pairs[i].key;
		if (cbor_isa_string(k) && cbor_string_is_definite(k) && cbor_string_length(k) == strlen(key) &&
		    memcmp(cbor_string_handle(k), key, strlen(key)) == 0)
			return pairs[i].value;
	}
	return NULL;
}

static bool text_is(const cbor_item_t *it, const char *s)
{
	return it && cbor_isa_string(it) && cbor_string_is_definite(it) && cbor_string_length(it) == strlen(s) &&
	       memcmp(cbor_string_handle(it), s, strlen(s)) == 0;
}

static int check(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die("cannot open %s", path);
	struct wbuf w = { 0 };
	uint8_t chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		wb_put(&w, chunk, n);
	fclose(f);
	size_t off = 0;
	int bad = 0, docs = 0;
	while (off < w.len) {
		struct cbor_load_result res;
		cbor_item_t *doc = cbor_load(w.p + off, w.len - off, &res);
		if (!doc) {
			printf("bad: undecodable CBOR at offset %zu (error %d)\n", off, res.error.code);
			free(w.p);
			return 1;
		}
		off += res.read;
		docs++;
		const cbor_item_t *id = map_get(doc, "batch_id"), *recs = map_get(doc, "records");
		if (!text_is(map_get(doc, "gateway"), GATEWAY_ID) || !text_is(map_get(doc, "upstream"), UPSTREAM) ||
		    !text_is(map_get(doc, "region"), REGION) || !id || !cbor_isa_uint(id) || !recs ||
		    !cbor_isa_array(recs) || !cbor_array_is_definite(recs) || cbor_map_size(doc) != 5) {
			printf("bad: document %d lacks a field or has a wrong one\n", docs);
			bad = 1;
			cbor_decref(&doc);
			continue;
		}
		uint64_t batch_id = cbor_get_int(id);
		size_t nrec = cbor_array_size(recs), dumps = 0;
		uint64_t dump_bytes = 0;
		for (size_t i = 0; i < nrec; i++) {
			const cbor_item_t *rec = cbor_array_handle(recs)[i];
			const cbor_item_t *meta = map_get(rec, "meta"), *dump = map_get(rec, "dump");
			const cbor_item_t *dump_id = map_get(meta, "dump_id"), *size = map_get(meta, "size");
			if (!meta || !cbor_isa_map(meta) || !dump_id || cbor_get_int(dump_id) != batch_id * 1000 + i ||
			    !size || !cbor_isa_uint(size)) {
				printf("bad: batch %" PRIu64 " record %zu: meta\n", batch_id, i);
				bad = 1;
				continue;
			}
			if (!dump) {
				if (!text_is(map_get(meta, "status"), "throttled")) {
					printf("bad: batch %" PRIu64 " record %zu: stored without a dump\n", batch_id, i);
					bad = 1;
				}
				continue;
			}
			size_t len = cbor_isa_bytestring(dump) && cbor_bytestring_is_definite(dump)
					     ? cbor_bytestring_length(dump) : 0;
			uint8_t *want = malloc(len ? len : 1);
			if (!want)
				die("out of memory");
			fill_dump(want, len, batch_id, i);
			if (!cbor_isa_bytestring(dump) || cbor_get_int(size) != len ||
			    (len && memcmp(cbor_bytestring_handle(dump), want, len) != 0)) {
				printf("bad: batch %" PRIu64 " record %zu: dump bytes differ\n", batch_id, i);
				bad = 1;
			}
			free(want);
			dumps++;
			dump_bytes += len;
		}
		printf("doc batch=%" PRIu64 " records=%zu dumps=%zu dump_bytes=%" PRIu64 "\n", batch_id, nrec, dumps,
		       dump_bytes);
		cbor_decref(&doc);
	}
	free(w.p);
	printf("docs=%d\n", docs);
	return bad;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "--check") == 0)
		return check(argv[2]);
	if (argc < 2)
		die("usage: drive PLUGIN.so [key=value...] [--save DIR] [-- COMMAND...] | drive --check FILE");

	void *so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!so)
		die("dlopen %s: %s", argv[1], dlerror());
	const struct cg_plugin *p = dlsym(so, CG_PLUGIN_SYMBOL);
	if (!p)
		die("%s does not export %s", argv[1], CG_PLUGIN_SYMBOL);
	if (p->abi_version != CG_PLUGIN_ABI_VERSION)
		die("%s: ABI version %u, expected %u", argv[1], p->abi_version, CG_PLUGIN_ABI_VERSION);
	if (p->struct_size < offsetof(struct cg_plugin, destroy) + sizeof p->destroy)
		die("%s: struct_size %u is smaller than the fields this driver needs", argv[1], p->struct_size);
	if (!p->kind || !p->options || !p->init || !p->flush || !p->destroy || !p->options_size)
		die("%s: incomplete plugin struct", argv[1]);
	printf("plugin kind=%s abi_version=%u struct_size=%u options_size=%zu\n", p->kind, p->abi_version,
	       p->struct_size, p->options_size);

	char **kv = calloc((size_t)argc, sizeof *kv);
	int nkv = 0, i = 2;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--save") == 0 && i + 1 < argc)
			G.save_dir = argv[++i];
		else
			kv[nkv++] = argv[i];
	}
	void *opts = calloc(1, p->options_size);
	if (!kv || !opts)
		die("out of memory");
	fill_options(p, opts, kv, nkv);

	void *state = NULL;
	char err[512] = "";
	if (p->init(&HOST, opts, &state, err, sizeof err) != 0) {
		printf("init failed: %s\n", err);
		free_options(p, opts);
		free(kv);
		return 3;
	}
	printf("init ok\n");

	struct batch bt = { 0 };
	uint64_t next_id = 1;
	if (i < argc) {
		for (i++; i < argc; i++) {
			char *line = strdup(argv[i]);
			int q = run(p, state, line, &bt, &next_id);
			free(line);
			if (q)
				break;
		}
	} else {
		char *line = NULL;
		size_t cap = 0;
		while (getline(&line, &cap, stdin) >= 0 && run(p, state, line, &bt, &next_id) == 0)
			;
		free(line);
	}
	p->destroy(state);
	printf("destroyed\n");
	batch_free(&bt);
	free_options(p, opts);   /* the core frees its strings after destroy */
	free(kv);
	free(G.last);
	/* no dlclose: Paho's threads may outlive the last client briefly */
	return 0;
}
