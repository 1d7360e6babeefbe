/*
 * Test driver for output plugins: loads one plugin the way the core does
 * (dlopen, CG_PLUGIN_SYMBOL, ABI version and struct size checked), fills
 * its options struct from key=value arguments according to the plugin's own
 * option table (defaults, bounds, required keys, enums), provides a host,
 * builds a batch of realistic SPEC §12 records and flushes it.
 *
 *   drive PLUGIN.so [--records N] [--sizes S1,S2,..] [--formats F1,F2,..]
 *         [--throttled] [--batch-id N] [--flushes K] [--out DIR]
 *         [--gateway G] [--upstream U] [--region R] [key=value ...]
 *
 * Prints one line per flush on stdout:
 *   records OK|RETRY|DROP|-,...   (each record's own outcome; "-": as the batch)
 *   result status=OK|RETRY|DROP retry_after_ms=N elapsed_ms=N reason=...
 * With --out, writes DIR/records.json (each record: id, device, dump_id,
 * format, status, occurrences, meta, body file) and DIR/dump-<i>.bin before
 * flushing, so the tests can compare what the server received.
 *
 * Exit: 0 flushed (whatever the status), 2 usage or harness error, 3 the
 * plugin's init failed ("init failed: <err>" on stdout).
 *
 * Its batch_cbor is the tests' own implementation of the document in
 * plugins/http/README.md (libcbor); the core brings the real one.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <cbor.h>
#include <jansson.h>

#include "crashgate/plugin.h"

#define MAX_RECORDS 64
#define MAX_KV 64

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

/* ---- the host ---- */

static void host_log(const struct cg_plugin_host *h, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void host_log(const struct cg_plugin_host *h, int level, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	va_list ap;
	fprintf(stderr, "[%s] %s: ", level >= 0 && level <= 3 ? names[level] : "?", h->upstream);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static char *host_read_secret(const char *path)
{
	char line[4096];
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	if (!fgets(line, sizeof line, f))
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	return strdup(line);
}

static cbor_item_t *str_item(const char *s)
{
	return cbor_build_stringn(s, strlen(s));
}

static int add_pair(cbor_item_t *map, const char *key, cbor_item_t *val)
{
	if (!val)
		return -1;
	bool ok = cbor_map_add(map, (struct cbor_pair){ .key = cbor_move(str_item(key)), .value = cbor_move(val) });
	return ok ? 0 : -1;
}

/* {"gateway", "upstream", "region", "batch_id", "records": [{"meta", ? "dump"}]} */
static int host_batch_cbor(const struct cg_plugin_host *h, const struct cg_plugin_batch *b, uint8_t **buf,
			   size_t *len)
{
	cbor_item_t *doc = cbor_new_definite_map(5);
	cbor_item_t *recs = cbor_new_definite_array(b->n);
	int bad = !doc || !recs;

	for (size_t i = 0; !bad && i < b->n; i++) {
		const struct cg_plugin_record *r = &b->records[i];
		struct cbor_load_result res;
		cbor_item_t *meta = cbor_load(r->meta_cbor, r->meta_cbor_len, &res);
		cbor_item_t *rec = cbor_new_definite_map(r->body ? 2 : 1);
		bad |= !meta || !rec || res.error.code != CBOR_ERR_NONE;
		if (!bad)
			bad |= add_pair(rec, "meta", meta);
		else if (meta)
			cbor_decref(&meta);
		if (!bad && r->body)
			bad |= add_pair(rec, "dump", cbor_build_bytestring(r->body, r->body_len));
		if (!bad)
			bad |= !cbor_array_push(recs, cbor_move(rec));
		else if (rec)
			cbor_decref(&rec);
	}
	if (!bad) {
		bad |= add_pair(doc, "gateway", str_item(h->gateway_id));
		bad |= add_pair(doc, "upstream", str_item(h->upstream));
		bad |= add_pair(doc, "region", str_item(h->region));
		bad |= add_pair(doc, "batch_id", cbor_build_uint64(b->batch_id));
		bad |= add_pair(doc, "records", recs);
		recs = NULL;
	}
	size_t cap = 0;
	*len = bad ? 0 : cbor_serialize_alloc(doc, buf, &cap);
	if (recs)
		cbor_decref(&recs);
	if (doc)
		cbor_decref(&doc);
	return bad || !*len ? -1 : 0;
}

/* ---- option parsing, as the core does it from YAML ---- */

static int parse_u64(const char *s, uint64_t *v, const char **end)
{
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	char *e;
	unsigned long long x = strtoull(s, &e, 10);
	if (errno)
		return -1;
	*v = x;
	*end = e;
	return 0;
}

static int parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *u; unsigned shift; } units[] = {
		{ "", 0 }, { "B", 0 }, { "KiB", 10 }, { "MiB", 20 }, { "GiB", 30 },
	};
	uint64_t v;
	const char *p;
	if (parse_u64(s, &v, &p) != 0)
		return -1;
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
		if (strcmp(p, units[i].u) == 0) {
			*out = v << units[i].shift;
			return 0;
		}
	return -1;
}

/* "30s", "1m30s", "500ms", "2h" */
static int parse_duration(const char *s, uint64_t *out)
{
	uint64_t total = 0;
	if (!*s)
		return -1;
	while (*s) {
		uint64_t v;
		if (parse_u64(s, &v, &s) != 0)
			return -1;
		if (strncmp(s, "ms", 2) == 0) {
			s += 2;
		} else if (*s == 's') {
			v *= 1000, s++;
		} else if (*s == 'm') {
			v *= 60000, s++;
		} else if (*s == 'h') {
			v *= 3600000, s++;
		} else if (*s == 'd') {
			v *= 86400000, s++;
		} else {
			return -1;
		}
		total += v;
	}
	*out = total;
	return 0;
}

static void set_option(const struct cg_plugin_option *o, void *opts, const char *text)
{
	char *field = (char *)opts + o->offset;
	uint64_t v = 0;

	switch (o->type) {
	case CG_OPT_STRING:
	case CG_OPT_PATH: {
		size_t n = strlen(text);
		if (n < o->min || (o->max && n > o->max))
			die("%s: length %zu outside [%" PRIu64 ", %" PRIu64 "]", o->name, n, o->min, o->max);
		char *s = strdup(text);
		if (!s)
			die("out of memory");
		free(*(char **)field);
		*(char **)field = s;
		return;
	}
	case CG_OPT_BOOL:
		if (!strcmp(text, "true") || !strcmp(text, "yes") || !strcmp(text, "on"))
			*(bool *)field = true;
		else if (!strcmp(text, "false") || !strcmp(text, "no") || !strcmp(text, "off"))
			*(bool *)field = false;
		else
			die("%s: not a bool: %s", o->name, text);
		return;
	case CG_OPT_ENUM:
		for (uint32_t i = 0; o->values && o->values[i]; i++)
			if (!strcmp(o->values[i], text)) {
				*(uint32_t *)field = i;
				return;
			}
		die("%s: not one of its values: %s", o->name, text);
	case CG_OPT_UINT32:
	case CG_OPT_SIZE:
	case CG_OPT_DURATION: {
		const char *end;
		int bad = o->type == CG_OPT_SIZE ? parse_size(text, &v)
			: o->type == CG_OPT_DURATION ? parse_duration(text, &v)
			: (parse_u64(text, &v, &end) != 0 || *end || v > UINT32_MAX);
		if (bad)
			die("%s: cannot parse %s", o->name, text);
		if (v < o->min || (o->max && v > o->max))
			die("%s: %" PRIu64 " outside [%" PRIu64 ", %" PRIu64 "]", o->name, v, o->min, o->max);
		if (o->type == CG_OPT_UINT32)
			*(uint32_t *)field = (uint32_t)v;
		else
			*(uint64_t *)field = v;
		return;
	}
	default:
		die("%s: unknown option type %u", o->name, o->type);
	}
}

static size_t field_size(uint32_t type)
{
	switch (type) {
	case CG_OPT_STRING:
	case CG_OPT_PATH: return sizeof(char *);
	case CG_OPT_BOOL: return sizeof(bool);
	case CG_OPT_UINT32:
	case CG_OPT_ENUM: return sizeof(uint32_t);
	default: return sizeof(uint64_t);
	}
}

static void *fill_options(const struct cg_plugin *p, char **kv, int nkv)
{
	void *opts = calloc(1, p->options_size);
	bool given[256] = { 0 };
	size_t n = 0;

	if (!opts)
		die("out of memory");
	for (const struct cg_plugin_option *o = p->options; o->name; o++, n++) {
		if (n >= 256 || o->offset + field_size(o->type) > p->options_size)
			die("option table: %s lies outside the options struct", o->name);
		if (o->type == CG_OPT_ENUM && !o->values)
			die("option table: enum %s has no values", o->name);
		if (!o->desc || !*o->desc)
			die("option table: %s has no description", o->name);
	}
	for (int i = 0; i < nkv; i++) {
		char *eq = strchr(kv[i], '=');
		if (!eq)
			die("not key=value: %s", kv[i]);
		*eq = '\0';
		size_t k = 0;
		const struct cg_plugin_option *o;
		for (o = p->options; o->name && strcmp(o->name, kv[i]) != 0; o++)
			k++;
		if (!o->name)
			die("unknown key %s", kv[i]);
		set_option(o, opts, eq + 1);
		given[k] = true;
	}
	size_t k = 0;
	for (const struct cg_plugin_option *o = p->options; o->name; o++, k++) {
		if (given[k])
			continue;
		if (o->flags & CG_OPT_REQUIRED) {
			printf("init failed: the key %s is required\n", o->name);
			exit(3);
		}
		if (o->def)
			set_option(o, opts, o->def);
	}
	return opts;
}

static void free_options(const struct cg_plugin *p, void *opts)
{
	for (const struct cg_plugin_option *o = p->options; o->name; o++)
		if (o->type == CG_OPT_STRING || o->type == CG_OPT_PATH)
			free(*(char **)((char *)opts + o->offset));
	free(opts);
}

/* ---- the batch ---- */

static cbor_item_t *json_to_cbor(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		cbor_item_t *m = cbor_new_definite_map(json_object_size(j));
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)j, k, v) {
			if (add_pair(m, k, json_to_cbor(v)) != 0)
				die("cbor: out of memory");
		}
		return m;
	}
	case JSON_ARRAY: {
		cbor_item_t *a = cbor_new_definite_array(json_array_size(j));
		size_t i;
		json_t *v;
		json_array_foreach(j, i, v)
			cbor_array_push(a, cbor_move(json_to_cbor(v)));
		return a;
	}
	case JSON_STRING:
		return cbor_build_stringn(json_string_value(j), json_string_length(j));
	case JSON_INTEGER: {
		json_int_t v = json_integer_value(j);
		return v >= 0 ? cbor_build_uint64((uint64_t)v) : cbor_build_negint64((uint64_t)(-1 - v));
	}
	case JSON_REAL:
		return cbor_build_float8(json_real_value(j));
	case JSON_TRUE:
		return cbor_build_bool(true);
	case JSON_FALSE:
		return cbor_build_bool(false);
	default:
		return cbor_new_null();
	}
}

struct rec_store {
	struct cg_plugin_record rec[MAX_RECORDS];
	char *strings[MAX_RECORDS][8];
	uint8_t *bodies[MAX_RECORDS];
	json_t *meta[MAX_RECORDS];
};

static char *keep(struct rec_store *s, size_t i, int slot, const char *v)
{
	s->strings[i][slot] = strdup(v);
	if (!s->strings[i][slot])
		die("out of memory");
	return s->strings[i][slot];
}

static void rfc3339(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000));
}

/* Deterministic bytes with the format's magic, some NULs, CR LF, a line
 * that looks like an envelope item, and the http plugin's first multipart
 * boundary for this batch, so no encoder can get away with treating a dump
 * as text or with a boundary it did not check. */
static uint8_t *make_body(size_t size, const char *format, uint32_t seed, uint64_t batch_id)
{
	uint8_t *b = malloc(size ? size : 1);
	uint32_t x = seed * 2654435761u + 1;
	char trap[128];
	if (!b)
		die("out of memory");
	for (size_t i = 0; i < size; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		b[i] = (uint8_t)x;
	}
	const char *magic = !strcmp(format, "minidump") ? "MDMP\x93\xa7" : !strcmp(format, "elf-core") ? "\x7f" "ELF"
		: !strcmp(format, "zephyr") ? "ZE\x01\x00" : "";
	size_t ml = strlen(magic);
	memcpy(b, magic, ml < size ? ml : size);
	int n = snprintf(trap, sizeof trap, "\r\n--crashgate-%016" PRIx64 "-0\r\n\n{\"type\":\"event\"}\n", batch_id);
	if (size > 64 + (size_t)n)
		memcpy(b + 32, trap, (size_t)n);
	return b;
}

static void build_records(struct rec_store *s, size_t n, const size_t *sizes, size_t nsizes, char **formats,
			  size_t nformats, bool throttled, const char *gateway, const char *region, uint64_t batch_id)
{
	int64_t base = 1732300000000;   /* 2024-11-22T18:26:40Z */
	for (size_t i = 0; i < n + (throttled ? 1 : 0); i++) {
		bool thr = i == n;
		struct cg_plugin_record *r = &s->rec[i];
		const char *format = thr ? "zephyr" : formats[i % nformats];
		bool md = !strcmp(format, "minidump");
		char device[32], id[256], ts[40], sig[17];
		uint64_t dump_id = thr ? 999 : 100 + i;
		int64_t at = base + (int64_t)i * 1500;

		snprintf(device, sizeof device, "dev-%02zu", thr ? 0 : i % 3);
		rfc3339(at, ts, sizeof ts);
		snprintf(id, sizeof id, "%s/%s/%" PRIu64 "/%s", gateway, device, dump_id, ts);
		snprintf(sig, sizeof sig, "%s%08x", md ? "5eed0bad" : "c0ffee00", (unsigned)(thr ? 0 : i & 0xffff));
		r->id = keep(s, i, 0, id);
		r->device = keep(s, i, 1, device);
		r->dump_id = dump_id;
		r->group = keep(s, i, 2, i % 2 ? "" : "Halle 3 (Süd)");
		r->region = keep(s, i, 3, region);
		r->status = thr ? "throttled" : "stored";
		r->format = format;
		r->signature = keep(s, i, 4, sig);
		r->received_at_ms = at;
		r->occurrences = thr ? 17 : 1;
		if (!thr) {
			r->body_len = sizes[i % nsizes];
			r->body = s->bodies[i] = make_body(r->body_len, format, (uint32_t)i + 1, batch_id);
		}

		json_t *crash = md
			? json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s}", "arch", "x86_64", "os", "Linux",
				    "reason", "SIGSEGV", "signal", 11, "fault_address", "0x0", "pc", "0x55d0c0de1234",
				    "sp", "0x7ffc0ffee000", "module", "sensor-daemon", "module_offset", "0x1234")
			: json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "arch", "arm-cortex-m", "os", "Zephyr",
				    "reason", "K_ERR_CPU_EXCEPTION", "fault_address", "0x20001ffc", "pc", "0x0800a1c4",
				    "lr", "0x0800a0f1", "sp", "0x20003f80");
		json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:o}",
				      "id", id, "device", device, "dump_id", (json_int_t)dump_id, "status", r->status,
				      "size", (json_int_t)(thr ? 4096 : r->body_len), "received_at", ts, "format", format,
				      "build_id", md ? "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b" : "2c26b46b68ffc68ff99b453c1d304134",
				      "fw_version", "4.2.0-rc1", "signature", sig,
				      "occurrences", (json_int_t)r->occurrences, "region", region, "crash", crash);
		if (!m)
			die("json_pack failed");
		if (*r->group)
			json_object_set_new(m, "group", json_string(r->group));
		s->meta[i] = m;
		r->meta_json = s->strings[i][5] = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
		cbor_item_t *c = json_to_cbor(m);
		unsigned char *cb = NULL;
		size_t cap = 0;
		r->meta_cbor_len = cbor_serialize_alloc(c, &cb, &cap);
		r->meta_cbor = cb;
		s->strings[i][6] = (char *)cb;
		cbor_decref(&c);
		if (!r->meta_json || !r->meta_cbor_len)
			die("cannot encode the meta of record %zu", i);
	}
}

static void write_out(const char *dir, const struct rec_store *s, size_t n)
{
	char path[4096];
	json_t *arr = json_array();

	mkdir(dir, 0700);
	for (size_t i = 0; i < n; i++) {
		const struct cg_plugin_record *r = &s->rec[i];
		json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:I, s:O}", "id", r->id, "device", r->device,
				      "dump_id", (json_int_t)r->dump_id, "format", r->format, "status", r->status,
				      "signature", r->signature, "occurrences", (json_int_t)r->occurrences, "meta",
				      s->meta[i]);
		if (r->body) {
			snprintf(path, sizeof path, "%s/dump-%zu.bin", dir, i);
			FILE *f = fopen(path, "wb");
			if (!f || fwrite(r->body, 1, r->body_len, f) != r->body_len || fclose(f) != 0)
				die("cannot write %s", path);
			json_object_set_new(o, "body", json_string(path));
		} else {
			json_object_set_new(o, "body", json_null());
		}
		json_array_append_new(arr, o);
	}
	snprintf(path, sizeof path, "%s/records.json", dir);
	if (json_dump_file(arr, path, JSON_INDENT(1)) != 0)
		die("cannot write %s", path);
	json_decref(arr);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	size_t nrec = 2, sizes[MAX_RECORDS] = { 1000 }, nsizes = 1, nformats = 1;
	char *formats[MAX_RECORDS] = { "zephyr" };
	bool throttled = false, formats_owned = false;
	uint64_t batch_id = 42;
	unsigned flushes = 1;
	const char *out = NULL, *gateway = "gw-test-1", *upstream = "up-test", *region = "eu-central";
	char *kv[MAX_KV];
	int nkv = 0;

	if (argc < 2)
		die("usage: drive PLUGIN.so [--records N] [--sizes A,B] [--formats F,G] [--throttled] "
		    "[--batch-id N] [--flushes K] [--out DIR] [--gateway G] [--upstream U] [--region R] [key=value...]");
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--throttled")) {
			throttled = true;
		} else if (!strncmp(a, "--", 2) && !v) {
			die("%s needs a value", a);
		} else if (!strcmp(a, "--records")) {
			nrec = strtoul(v, NULL, 10), i++;
		} else if (!strcmp(a, "--batch-id")) {
			batch_id = strtoull(v, NULL, 10), i++;
		} else if (!strcmp(a, "--flushes")) {
			flushes = (unsigned)strtoul(v, NULL, 10), i++;
		} else if (!strcmp(a, "--out")) {
			out = v, i++;
		} else if (!strcmp(a, "--gateway")) {
			gateway = v, i++;
		} else if (!strcmp(a, "--upstream")) {
			upstream = v, i++;
		} else if (!strcmp(a, "--region")) {
			region = v, i++;
		} else if (!strcmp(a, "--sizes") || !strcmp(a, "--formats")) {
			char *copy = strdup(v), *save = NULL;
			size_t n = 0;
			for (char *t = strtok_r(copy, ",", &save); t && n < MAX_RECORDS; t = strtok_r(NULL, ",", &save)) {
				if (a[2] == 's')
					sizes[n++] = strtoul(t, NULL, 10);
				else
					formats[n++] = strdup(t);
			}
			if (!n)
				die("%s: empty list", a);
			*(a[2] == 's' ? &nsizes : &nformats) = n;
			formats_owned |= a[2] == 'f';
			free(copy);
			i++;
		} else if (!strncmp(a, "--", 2)) {
			die("unknown flag %s", a);
		} else if (nkv < MAX_KV) {
			kv[nkv++] = argv[i];
		}
	}
	if (nrec + (throttled ? 1 : 0) > MAX_RECORDS)
		die("at most %d records", MAX_RECORDS - 1);

	void *so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!so)
		die("dlopen %s: %s", argv[1], dlerror());
	const struct cg_plugin *p = dlsym(so, CG_PLUGIN_SYMBOL);
	if (!p)
		die("%s does not export %s", argv[1], CG_PLUGIN_SYMBOL);
	if (p->abi_version != CG_PLUGIN_ABI_VERSION)
		die("abi_version %u, expected %u", p->abi_version, CG_PLUGIN_ABI_VERSION);
	if (p->struct_size < sizeof(struct cg_plugin))
		die("struct_size %u, expected at least %zu", p->struct_size, sizeof(struct cg_plugin));
	if (!p->kind || !p->description || !p->options || !p->options_size || !p->init || !p->flush || !p->destroy)
		die("the plugin struct has empty fields");
	fprintf(stderr, "drive: plugin %s: %s\n", p->kind, p->description);

	struct cg_plugin_host host = {
		.abi_version = CG_PLUGIN_ABI_VERSION,
		.struct_size = sizeof host,
		.gateway_id = gateway,
		.upstream = upstream,
		.region = region,
		.log = host_log,
		.read_secret = host_read_secret,
		.batch_cbor = host_batch_cbor,
	};
	void *opts = fill_options(p, kv, nkv);
	static struct rec_store store;
	build_records(&store, nrec, sizes, nsizes, formats, nformats, throttled, gateway, region, batch_id);
	size_t total = nrec + (throttled ? 1 : 0);
	if (out)
		write_out(out, &store, total);

	char err[512] = "";
	void *state = NULL;
	if (p->init(&host, opts, &state, err, sizeof err) != 0) {
		printf("init failed: %s\n", err[0] ? err : "(no message)");
		free_options(p, opts);
		return 3;
	}
	struct cg_plugin_batch batch = { .records = store.rec, .n = total, .batch_id = batch_id };
	for (size_t i = 0; i < total; i++)
		batch.body_bytes += store.rec[i].body_len;
	uint32_t *rstat = calloc(total ? total : 1, sizeof *rstat);
	if (!rstat)
		die("out of memory");
	batch.record_status = rstat;
	for (unsigned f = 0; f < flushes; f++) {
		struct cg_flush_result r;
		memset(&r, 0xa5, sizeof r);   /* a plugin must set every field it reports */
		r.reason[sizeof r.reason - 1] = '\0';
		memset(rstat, 0, total * sizeof *rstat);   /* the core zeroes it for each flush */
		uint64_t t0 = mono_ms();
		p->flush(state, &batch, &r);
		uint64_t dt = mono_ms() - t0;
		const char *st = r.status == CG_FLUSH_OK ? "OK" : r.status == CG_FLUSH_RETRY ? "RETRY"
			: r.status == CG_FLUSH_DROP ? "DROP" : "INVALID";
		if (!memchr(r.reason, '\0', sizeof r.reason))
			die("flush left reason without a terminating NUL");
		/* Each record's own outcome, as the plugin reported it ("-": as the batch). */
		printf("records ");
		for (size_t i = 0; i < total; i++) {
			uint32_t v = rstat[i];
			printf("%s%s", i ? "," : "", v == CG_FLUSH_OK ? "OK" : v == CG_FLUSH_RETRY ? "RETRY"
				: v == CG_FLUSH_DROP ? "DROP" : v == 0 ? "-" : "INVALID");
		}
		printf("\n");
		printf("result status=%s retry_after_ms=%" PRIu64 " elapsed_ms=%" PRIu64 " reason=%s\n", st,
		       r.retry_after_ms, dt, r.reason);
		fflush(stdout);
	}
	free(rstat);
	p->destroy(state);
	free_options(p, opts);
	dlclose(so);

	for (size_t i = 0; i < total; i++) {
		free(store.bodies[i]);
		json_decref(store.meta[i]);
		for (int k = 0; k < 8; k++)
			free(store.strings[i][k]);
	}
	for (size_t i = 0; formats_owned && i < nformats; i++)
		free(formats[i]);
	return 0;
}
