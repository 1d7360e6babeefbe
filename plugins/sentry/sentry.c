/*
 * The `sentry` output plugin (SPEC §8): one envelope per dump, POSTed to the
 * project's envelope endpoint derived from a DSN kept in a secret file.
 *
 * Each envelope holds an event built from the record's metadata (tags,
 * fingerprint [signature], the crash reason as the exception) and, for a
 * stored dump, the dump itself as an attachment: `event.minidump` for
 * minidumps, which Sentry then processes itself, `event.attachment` for the
 * other formats. A throttled count (no body) becomes an event without
 * attachment carrying the occurrences.
 *
 * Idempotence: the event_id is the first 16 bytes of SHA-256(record id) in
 * hex, so when the core retries a batch (one failed record retries them
 * all) Sentry recognises and drops the events it already has.
 *
 * A batch is OK only when every envelope was accepted. A transient failure
 * (network, 408, 429, 5xx, or a rate limit announced on a success) stops the
 * batch at once with RETRY. A rejection of one record (400, 413, ...) does
 * not stop the others from being delivered, but the batch ends as DROP
 * naming the first rejected record; a rejection that every record would get
 * (3xx, 401, 403, 404: wrong DSN or key) stops at once.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "crashgate/plugin.h"
#include "httpc.h"

/* Sentry's own default when a 429 says nothing about how long to wait. */
#define SENTRY_DEFAULT_RETRY_MS 60000
#define SENTRY_TAG_MAX 200

struct sentry_options {
	char *dsn_file;
	char *ca_file;
	uint64_t timeout_ms;
};

struct sentry_state {
	const struct cg_plugin_host *host;
	struct httpc *client;
	char *dsn;                    /* the DSN without a secret key, for the envelope header */
	char *auth;                   /* X-Sentry-Auth value (holds the public key) */
	char *endpoint_origin;
};

static const struct cg_plugin_option sentry_options[] = {
	{ .name = "dsn_file", .type = CG_OPT_PATH, .flags = CG_OPT_REQUIRED,
	  .offset = offsetof(struct sentry_options, dsn_file),
	  .desc = "File whose first line is the project's DSN, https://PUBLIC_KEY@HOST/PROJECT_ID." },
	{ .name = "ca_file", .type = CG_OPT_PATH, .offset = offsetof(struct sentry_options, ca_file),
	  .desc = "PEM CA bundle that verifies Sentry; the system's CA store when absent." },
	{ .name = "timeout", .type = CG_OPT_DURATION, .offset = offsetof(struct sentry_options, timeout_ms),
	  .def = "30s", .min = 100, .max = 3600000,
	  .desc = "Longest time one envelope's POST may take, connecting included." },
	{ 0 }
};

/* ---- DSN ---- */

static bool token_ok(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return false;
	return true;
}

/*
 * scheme://PUBLIC_KEY[:SECRET]@HOST[:PORT][/PREFIX]/PROJECT_ID
 * -> endpoint scheme://HOST[:PORT][/PREFIX]/api/PROJECT_ID/envelope/,
 *    envelope dsn (without the deprecated secret), key.
 * Error texts never include the DSN: it is a secret.
 */
static int parse_dsn(const char *text, char **endpoint, char **dsn, char **key, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *user = NULL, *host = NULL, *port = NULL, *path = NULL;
	char *prefix = NULL, *project = NULL;
	int rc = -1;

	*endpoint = *dsn = *key = NULL;
	if (!u) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (curl_url_set(u, CURLUPART_URL, text, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		snprintf(err, errlen, "the DSN is not a URL (expected https://PUBLIC_KEY@HOST/PROJECT_ID)");
		goto out;
	}
	curl_url_get(u, CURLUPART_PORT, &port, 0);
	curl_url_get(u, CURLUPART_USER, &user, 0);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
		snprintf(err, errlen, "the DSN must start with https:// (or http://)");
		goto out;
	}
	if (!token_ok(user)) {
		snprintf(err, errlen, "the DSN has no valid public key (https://PUBLIC_KEY@HOST/PROJECT_ID)");
		goto out;
	}
	size_t n = path ? strlen(path) : 0;
	while (n && path[n - 1] == '/')
		path[--n] = '\0';
	char *slash = n ? strrchr(path, '/') : NULL;
	if (!slash || !token_ok(slash + 1)) {
		snprintf(err, errlen, "the DSN has no project id (https://PUBLIC_KEY@HOST/PROJECT_ID)");
		goto out;
	}
	*slash = '\0';
	prefix = path;               /* "" or "/sentry" */
	project = slash + 1;

	char hostport[512];
	snprintf(hostport, sizeof hostport, "%.300s%s%s", host, port ? ":" : "", port ? port : "");
	if (asprintf(endpoint, "%s://%s%s/api/%s/envelope/", scheme, hostport, prefix, project) < 0 ||
	    asprintf(dsn, "%s://%s@%s%s/%s", scheme, user, hostport, prefix, project) < 0 ||
	    !(*key = strdup(user))) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	rc = 0;
out:
	if (rc != 0) {
		free(*endpoint);
		free(*dsn);
		free(*key);
		*endpoint = *dsn = *key = NULL;
	}
	if (user)
		explicit_bzero(user, strlen(user));
	curl_free(scheme);
	curl_free(user);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return rc;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void sentry_destroy(void *state);

static int sentry_init(const struct cg_plugin_host *host, const void *options, void **state,
		       char *err, size_t errlen)
{
	const struct sentry_options *o = options;
	char *text = NULL, *endpoint = NULL, *key = NULL;

	/* Host fields are only appended: make sure this core has the ones used here. */
	if (host->struct_size < offsetof(struct cg_plugin_host, read_secret) + sizeof host->read_secret ||
	    !host->read_secret || !host->log) {
		snprintf(err, errlen, "the gateway's plugin host lacks read_secret or log");
		return -1;
	}
	struct sentry_state *st = calloc(1, sizeof *st);
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	st->host = host;
	text = host->read_secret(o->dsn_file);
	if (!text || !*text) {
		snprintf(err, errlen, "cannot read a DSN from dsn_file %s", o->dsn_file);
		goto fail;
	}
	if (parse_dsn(text, &endpoint, &st->dsn, &key, err, errlen) != 0)
		goto fail;
	if (asprintf(&st->auth, "Sentry sentry_version=7, sentry_client=crashgate/0.1, sentry_key=%s", key) < 0) {
		st->auth = NULL;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	uint64_t connect_ms = o->timeout_ms < 10000 ? o->timeout_ms : 10000;
	struct httpc_options ho = {
		.url = endpoint,
		.ca_file = o->ca_file,
		.timeout_ms = o->timeout_ms,
		.connect_timeout_ms = connect_ms,
		.max_response_bytes = 64 * 1024,
	};
	if (httpc__open(&ho, &st->client, err, errlen) != 0)
		goto fail;
	host->log(host, CG_PLOG_INFO, "envelopes to %s", httpc__origin(st->client));
	wipe_free(text);
	wipe_free(key);
	free(endpoint);
	*state = st;
	return 0;
fail:
	wipe_free(text);
	wipe_free(key);
	free(endpoint);
	sentry_destroy(st);
	return -1;
}

static void sentry_destroy(void *state)
{
	struct sentry_state *st = state;
	if (!st)
		return;
	httpc__close(st->client);
	wipe_free(st->dsn);
	wipe_free(st->auth);
	free(st);
}

/* ---- the envelope ---- */

/* First 16 bytes of SHA-256(id) as 32 lower-case hex digits. */
static int event_id(const char *id, char out[33])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (EVP_Digest(id, strlen(id), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 16)
		return -1;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static void rfc3339_ms(int64_t ms, char *buf, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000));
}

static const char *jstr(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s && *s ? s : NULL;
}

/* Sentry drops tag values over 200 characters or with line breaks. */
static void set_tag(json_t *tags, const char *key, const char *v)
{
	if (!v || !*v || strpbrk(v, "\r\n"))
		return;
	size_t n = strlen(v);
	if (n > SENTRY_TAG_MAX) {
		n = SENTRY_TAG_MAX;
		while (n && ((unsigned char)v[n] & 0xc0) == 0x80)   /* not inside a UTF-8 sequence */
			n--;
	}
	json_t *s = json_stringn(v, n);
	if (s)
		json_object_set_new(tags, key, s);
}

static void set_str(json_t *o, const char *key, const char *v)
{
	if (v) {
		json_t *s = json_string(v);
		if (s)
			json_object_set_new(o, key, s);
	}
}

/* snprintf at the end of what buf holds; cut at len - 1 bytes. */
static void append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t len, const char *fmt, ...)
{
	size_t n = strlen(buf);
	va_list ap;

	if (n + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + n, len - n, fmt, ap);
	va_end(ap);
}

/* The Sentry event of one record; NULL when out of memory. */
static json_t *build_event(const struct cg_plugin_record *rec, const char *eid, const char *gateway)
{
	json_error_t jerr;
	json_t *meta = rec->meta_json ? json_loads(rec->meta_json, 0, &jerr) : NULL;
	if (!json_is_object(meta)) {
		json_decref(meta);
		meta = json_object();
	}
	const json_t *crash = json_object_get(meta, "crash");
	const char *reason = jstr(crash, "reason");
	const char *pc = jstr(crash, "pc");
	const char *module = jstr(crash, "module");
	const char *device = rec->device && *rec->device ? rec->device : jstr(meta, "device");
	const char *signature = rec->signature && *rec->signature ? rec->signature : jstr(meta, "signature");
	const char *format = rec->format && *rec->format ? rec->format : jstr(meta, "format");
	bool throttled = rec->body == NULL;
	char ts[40], text[512];

	json_t *ev = json_object();
	json_t *tags = json_object();
	json_t *extra = json_object();
	json_t *exc = json_object();
	json_t *mech = json_object();
	if (!ev || !tags || !extra || !exc || !mech)
		goto oom;
	rfc3339_ms(rec->received_at_ms, ts, sizeof ts);
	json_object_set_new(ev, "event_id", json_string(eid));
	json_object_set_new(ev, "timestamp", json_string(ts));
	json_object_set_new(ev, "platform", json_string("native"));
	json_object_set_new(ev, "level", json_string("fatal"));
	json_object_set_new(ev, "logger", json_string("crashgate"));
	set_str(ev, "server_name", gateway && *gateway ? gateway : NULL);

	text[0] = '\0';
	append(text, sizeof text, "%s crash on %s", format ? format : "unknown", device ? device : "?");
	if (pc)
		append(text, sizeof text, " at pc %s", pc);
	if (module)
		append(text, sizeof text, " in %s%s%s", module, jstr(crash, "module_offset") ? "+" : "",
		       jstr(crash, "module_offset") ? jstr(crash, "module_offset") : "");
	if (jstr(crash, "fault_address"))
		append(text, sizeof text, ", fault address %s", jstr(crash, "fault_address"));
	if (jstr(crash, "decode_error"))
		append(text, sizeof text, " (decode error: %s)", jstr(crash, "decode_error"));
	if (throttled)
		append(text, sizeof text, "; seen %" PRIu64 " times, the repeats throttled at the gateway",
		       rec->occurrences);

	json_t *msg = json_object();
	set_str(msg, "formatted", text);
	json_object_set_new(ev, "message", msg);

	json_object_set_new(exc, "type", json_string(reason ? reason : "crash"));
	set_str(exc, "value", text);
	json_object_set_new(mech, "type", json_string("crashgate"));
	json_object_set_new(mech, "handled", json_false());
	json_t *sig = json_object_get(crash, "signal");
	if (json_is_integer(sig)) {
		json_t *mmeta = json_object();
		json_t *signal = json_object();
		json_object_set(signal, "number", sig);
		json_object_set_new(mmeta, "signal", signal);
		json_object_set_new(mech, "meta", mmeta);
	}
	json_object_set_new(exc, "mechanism", mech);
	mech = NULL;
	if (pc) {
		json_t *frame = json_object(), *frames = json_array(), *st = json_object(), *regs = json_object();
		set_str(frame, "instruction_addr", pc);
		set_str(frame, "package", module);
		json_array_append_new(frames, frame);
		json_object_set_new(st, "frames", frames);
		static const char *const reg_names[] = { "pc", "lr", "sp" };
		for (size_t i = 0; i < 3; i++)
			set_str(regs, reg_names[i], jstr(crash, reg_names[i]));
		json_object_set_new(st, "registers", regs);
		json_object_set_new(exc, "stacktrace", st);
	}
	json_t *values = json_array();
	json_array_append_new(values, exc);
	exc = NULL;
	json_t *exception = json_object();
	json_object_set_new(exception, "values", values);
	json_object_set_new(ev, "exception", exception);

	set_tag(tags, "device", device);
	set_tag(tags, "group", rec->group && *rec->group ? rec->group : jstr(meta, "group"));
	set_tag(tags, "region", rec->region && *rec->region ? rec->region : jstr(meta, "region"));
	set_tag(tags, "signature", signature);
	set_tag(tags, "reason", reason);
	set_tag(tags, "build_id", jstr(meta, "build_id"));
	set_tag(tags, "format", format);
	set_tag(tags, "fw_version", jstr(meta, "fw_version"));
	set_tag(tags, "arch", jstr(crash, "arch"));
	set_tag(tags, "os", jstr(crash, "os"));
	set_tag(tags, "status", rec->status);
	json_object_set_new(ev, "tags", tags);
	tags = NULL;

	if (signature) {
		json_t *fp = json_array();
		json_array_append_new(fp, json_string(signature));
		json_object_set_new(ev, "fingerprint", fp);
	}

	json_t *contexts = json_object();
	if (jstr(crash, "os")) {
		json_t *os = json_object();
		set_str(os, "name", jstr(crash, "os"));
		json_object_set_new(contexts, "os", os);
	}
	json_t *dev = json_object();
	set_str(dev, "name", device);
	set_str(dev, "arch", jstr(crash, "arch"));
	json_object_set_new(contexts, "device", dev);
	json_object_set_new(ev, "contexts", contexts);

	set_str(extra, "record_id", rec->id);
	json_object_set_new(extra, "dump_id", json_integer((json_int_t)rec->dump_id));
	json_object_set_new(extra, "occurrences", json_integer((json_int_t)rec->occurrences));
	json_object_set_new(extra, "record", meta);
	meta = NULL;
	json_object_set_new(ev, "extra", extra);
	extra = NULL;

	json_t *sdk = json_object();
	set_str(sdk, "name", "crashgate");
	set_str(sdk, "version", "0.1");
	json_object_set_new(ev, "sdk", sdk);
	return ev;
oom:
	json_decref(ev);
	json_decref(tags);
	json_decref(extra);
	json_decref(exc);
	json_decref(mech);
	json_decref(meta);
	return NULL;
}

static const char *attachment_ext(const char *format)
{
	if (!format)
		return "bin";
	if (strcmp(format, "minidump") == 0)
		return "dmp";
	if (strcmp(format, "elf-core") == 0)
		return "core";
	if (strcmp(format, "zephyr") == 0)
		return "zdump";
	return "bin";
}

/* An item header and its payload, then the newline that ends the item. */
static void put_item(struct httpc_buf *b, json_t *header, const void *payload, size_t len)
{
	char *h = json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(header);
	if (!h) {
		b->oom = true;
		return;
	}
	httpc__buf_put(b, h, strlen(h));
	httpc__buf_put(b, "\n", 1);
	httpc__buf_put(b, payload, len);
	httpc__buf_put(b, "\n", 1);
	free(h);
}

static int build_envelope(const struct sentry_state *st, const struct cg_plugin_record *rec, const char *eid,
			  struct httpc_buf *b)
{
	char now[40];
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	rfc3339_ms((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, now, sizeof now);
	json_t *ev = build_event(rec, eid, st->host->gateway_id);
	if (!ev)
		return -1;
	char *event = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(ev);
	if (!event)
		return -1;
	size_t event_len = strlen(event);

	json_t *hdr = json_pack("{s:s, s:s, s:s}", "event_id", eid, "dsn", st->dsn, "sent_at", now);
	char *h = hdr ? json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(hdr);
	if (!h) {
		free(event);
		return -1;
	}
	httpc__buf_put(b, h, strlen(h));
	httpc__buf_put(b, "\n", 1);
	free(h);
	put_item(b, json_pack("{s:s, s:I}", "type", "event", "length", (json_int_t)event_len), event, event_len);
	free(event);
	if (rec->body) {
		char name[160];
		char dev[96];
		size_t i;
		/* A file name of the device's name: keep what is safe anywhere. */
		for (i = 0; rec->device && rec->device[i] && i < sizeof dev - 1; i++) {
			char ch = rec->device[i];
			dev[i] = isalnum((unsigned char)ch) || ch == '-' || ch == '_' || ch == '.' ? ch : '_';
		}
		dev[i] = '\0';
		snprintf(name, sizeof name, "%s-%" PRIu64 ".%s", i ? dev : "device", rec->dump_id,
			 attachment_ext(rec->format));
		bool minidump = rec->format && strcmp(rec->format, "minidump") == 0;
		put_item(b, json_pack("{s:s, s:I, s:s, s:s}", "type", "attachment", "length", (json_int_t)rec->body_len,
				      "filename", name, "attachment_type",
				      minidump ? "event.minidump" : "event.attachment"),
			 rec->body, rec->body_len);
	}
	return b->oom ? -1 : 0;
}

/* ---- rate limits ---- */

/*
 * X-Sentry-Rate-Limits: "<seconds>:<cat>;<cat>:<scope>[:...], ...". The
 * longest wait among groups that stop what we send (error, attachment, or
 * no category: everything); -1 when no group applies.
 */
static int64_t rate_limit_ms(const char *header)
{
	int64_t best = -1;
	char *copy = strdup(header), *save = NULL;

	if (!copy)
		return -1;
	for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
		while (*g == ' ' || *g == '\t')
			g++;
		char *colon = strchr(g, ':');
		if (!colon || !isdigit((unsigned char)*g))
			continue;
		*colon = '\0';
		char *cats = colon + 1, *end = strchr(cats, ':');
		if (end)
			*end = '\0';
		int64_t ms = httpc__parse_retry_after(g, 0);
		if (ms < 0)
			continue;
		bool applies = *cats == '\0';
		char *csave = NULL;
		for (char *c = strtok_r(cats, ";", &csave); c && !applies; c = strtok_r(NULL, ";", &csave)) {
			while (*c == ' ')
				c++;
			applies = strcmp(c, "error") == 0 || strcmp(c, "attachment") == 0;
		}
		if (applies && ms > best)
			best = ms;
	}
	free(copy);
	return best;
}

/* The reason of a result; a long one is cut (vsnprintf: no -Wformat-truncation). */
static void set_reason(struct cg_flush_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(struct cg_flush_result *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof r->reason, fmt, ap);
	va_end(ap);
}

static void sentry_flush(void *state, const struct cg_plugin_batch *batch, struct cg_flush_result *r)
{
	struct sentry_state *st = state;
	struct curl_slist *headers = NULL, *l;
	struct cg_flush_result first_drop = { 0 };
	size_t dropped = 0, i;
	char rl[1024];

	r->status = CG_FLUSH_RETRY;
	r->retry_after_ms = 0;
	int bad = httpc__add_header(&headers, "Content-Type", "application/x-sentry-envelope");
	bad |= httpc__add_header(&headers, "X-Sentry-Auth", st->auth);
	l = curl_slist_append(headers, "Expect:");
	if (l)
		headers = l;
	if (bad || !l) {
		snprintf(r->reason, sizeof r->reason, "cannot build the request headers (out of memory)");
		curl_slist_free_all(headers);
		return;
	}

	for (i = 0; i < batch->n; i++) {
		const struct cg_plugin_record *rec = &batch->records[i];
		struct httpc_buf env = { 0 };
		struct httpc_response resp;
		struct cg_flush_result one = { 0 };
		char eid[33];

		if (event_id(rec->id ? rec->id : "", eid) != 0 || build_envelope(st, rec, eid, &env) != 0) {
			free(env.p);
			r->status = CG_FLUSH_RETRY;
			snprintf(r->reason, sizeof r->reason, "record %zu/%zu: cannot build the envelope (out of memory)",
				 i + 1, batch->n);
			goto out;
		}
		httpc__post(st->client, headers, env.p, env.len, &resp);
		free(env.p);
		httpc__result(st->client, &resp, &one);
		int64_t limit = resp.transport_error ? -1
			: rate_limit_ms(httpc__header(st->client, "X-Sentry-Rate-Limits", rl, sizeof rl));
		st->host->log(st->host, CG_PLOG_DEBUG, "batch %" PRIu64 " record %zu/%zu event %s: %s in %" PRIu64 " ms",
			      batch->batch_id, i + 1, batch->n, eid, one.reason, resp.elapsed_ms);

		if (batch->record_status)   /* this record's own outcome */
			batch->record_status[i] = one.status == CG_FLUSH_OK ? CG_FLUSH_OK : 0;
		if (one.status == CG_FLUSH_OK) {
			if (limit > 0 && i + 1 < batch->n) {
				/* Accepted, but what follows would be dropped: wait, then send
				 * the batch again (Sentry drops the repeats by event_id). */
				r->status = CG_FLUSH_RETRY;
				r->retry_after_ms = (uint64_t)limit;
				snprintf(r->reason, sizeof r->reason,
					 "Sentry rate-limits errors/attachments for %" PRId64 " s after record %zu/%zu",
					 (limit + 999) / 1000, i + 1, batch->n);
				goto out;
			}
			continue;
		}
		if (resp.code == 429) {
			one.retry_after_ms = limit >= 0 ? (uint64_t)limit
				: one.retry_after_ms ? one.retry_after_ms : SENTRY_DEFAULT_RETRY_MS;
		}
		long c = resp.code;
		bool whole_project = c == 401 || c == 403 || c == 404 || (c >= 300 && c < 400);
		if (one.status == CG_FLUSH_DROP && !whole_project) {
			if (batch->record_status)
				batch->record_status[i] = CG_FLUSH_DROP;
			if (!dropped++) {
				first_drop = one;
				set_reason(&first_drop, "record %zu/%zu (%.72s): %.120s", i + 1, batch->n,
					   rec->id ? rec->id : "", one.reason);
			}
			continue;
		}
		*r = one;
		set_reason(r, "record %zu/%zu: %s", i + 1, batch->n, one.reason);
		goto out;
	}
	if (dropped) {
		*r = first_drop;
		char tail[64];
		snprintf(tail, sizeof tail, " (%zu of %zu rejected)", dropped, batch->n);
		append(r->reason, sizeof r->reason, "%s", tail);
	} else {
		r->status = CG_FLUSH_OK;
		snprintf(r->reason, sizeof r->reason, "%zu events accepted", batch->n);
	}
out:
	curl_slist_free_all(headers);
}

CG_PLUGIN_EXPORT const struct cg_plugin crashgate_output_plugin = {
	.abi_version = CG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct cg_plugin),
	.kind = "sentry",
	.description = "One Sentry envelope per dump (minidumps as event.minidump), honouring rate limits.",
	.options = sentry_options,
	.options_size = sizeof(struct sentry_options),
	.init = sentry_init,
	.flush = sentry_flush,
	.destroy = sentry_destroy,
};
