/*
 * The `http` output plugin (SPEC §8): one POST per batch.
 *
 * The body is either the batch's CBOR document (host->batch_cbor, documented
 * in plugins/http/README.md) or multipart/form-data with a "meta" part (the
 * records' JSON, in batch order) and one file part per dump named by the
 * record's index. It may be zstd-compressed as a whole (Content-Encoding).
 * Every request carries X-Crashgate-Batch and an Idempotency-Key that stays
 * the same when the core retries the batch, so the upstream can drop
 * repeats; the body of a retried batch is byte for byte the same.
 *
 * Secrets (bearer token, basic credentials) are read once at init with
 * host->read_secret, handed to libcurl, and wiped; they are never logged.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "crashgate/plugin.h"
#include "httpc.h"

enum http_body { HTTP_BODY_CBOR, HTTP_BODY_MULTIPART };
enum http_compression { HTTP_COMP_NONE, HTTP_COMP_ZSTD };

struct http_options {
	char *url;
	uint32_t body;                /* enum http_body */
	uint32_t compression;         /* enum http_compression */
	char *ca_file;
	char *client_cert_file;
	char *client_key_file;
	char *bearer_token_file;
	char *basic_auth_file;
	uint64_t timeout_ms;
	uint64_t connect_timeout_ms;
	uint64_t max_response_bytes;
};

struct http_state {
	const struct cg_plugin_host *host;
	uint32_t body;
	uint32_t compression;
	struct httpc *client;
};

static const char *const body_values[] = { "cbor", "multipart", NULL };
static const char *const compression_values[] = { "none", "zstd", NULL };

#define KiB 1024ull
#define MiB (1024ull * 1024)

static const struct cg_plugin_option http_options[] = {
	{ .name = "url", .type = CG_OPT_STRING, .flags = CG_OPT_REQUIRED,
	  .offset = offsetof(struct http_options, url), .min = 8, .max = 2048,
	  .desc = "Where each batch is POSTed: http:// or https://, no credentials in it." },
	{ .name = "body", .type = CG_OPT_ENUM, .offset = offsetof(struct http_options, body),
	  .def = "cbor", .values = body_values,
	  .desc = "cbor: the batch's CBOR document (application/cbor); multipart: "
		  "multipart/form-data, part \"meta\" (JSON array of records) and one file part per dump." },
	{ .name = "compression", .type = CG_OPT_ENUM, .offset = offsetof(struct http_options, compression),
	  .def = "none", .values = compression_values,
	  .desc = "zstd compresses the whole body and sends Content-Encoding: zstd." },
	{ .name = "ca_file", .type = CG_OPT_PATH, .offset = offsetof(struct http_options, ca_file),
	  .desc = "PEM CA bundle that verifies the server; the system's CA store when absent." },
	{ .name = "client_cert_file", .type = CG_OPT_PATH,
	  .offset = offsetof(struct http_options, client_cert_file),
	  .desc = "PEM client certificate for mutual TLS (with client_key_file)." },
	{ .name = "client_key_file", .type = CG_OPT_PATH,
	  .offset = offsetof(struct http_options, client_key_file),
	  .desc = "PEM private key of client_cert_file." },
	{ .name = "bearer_token_file", .type = CG_OPT_PATH,
	  .offset = offsetof(struct http_options, bearer_token_file),
	  .desc = "File whose first line is sent as Authorization: Bearer (not with basic_auth_file)." },
	{ .name = "basic_auth_file", .type = CG_OPT_PATH,
	  .offset = offsetof(struct http_options, basic_auth_file),
	  .desc = "File whose first line is user:password for Authorization: Basic." },
	{ .name = "timeout", .type = CG_OPT_DURATION, .offset = offsetof(struct http_options, timeout_ms),
	  .def = "30s", .min = 100, .max = 3600000,
	  .desc = "Longest time one POST may take, connecting included; then the batch is retried." },
	{ .name = "connect_timeout", .type = CG_OPT_DURATION,
	  .offset = offsetof(struct http_options, connect_timeout_ms),
	  .def = "10s", .min = 100, .max = 600000,
	  .desc = "Longest time to connect (TCP and TLS)." },
	{ .name = "max_response_bytes", .type = CG_OPT_SIZE,
	  .offset = offsetof(struct http_options, max_response_bytes),
	  .def = "64KiB", .min = 256, .max = 16 * MiB,
	  .desc = "Response body read at most; the rest is not read." },
	{ 0 }
};

/* Reads "user:password" (first line) into two malloc'd strings. */
static int read_basic(const struct cg_plugin_host *host, const char *path, char **user, char **pass,
		      char *err, size_t errlen)
{
	char *line = host->read_secret(path);
	if (!line) {
		snprintf(err, errlen, "cannot read basic_auth_file %s", path);
		return -1;
	}
	char *colon = strchr(line, ':');
	if (!colon || colon == line) {
		snprintf(err, errlen, "basic_auth_file %s must hold user:password on its first line", path);
		explicit_bzero(line, strlen(line));
		free(line);
		return -1;
	}
	*colon = '\0';
	*user = strdup(line);
	*pass = strdup(colon + 1);
	*colon = ':';
	explicit_bzero(line, strlen(line));
	free(line);
	if (!*user || !*pass) {
		free(*user);
		free(*pass);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static int http_init(const struct cg_plugin_host *host, const void *options, void **state,
		     char *err, size_t errlen)
{
	const struct http_options *o = options;
	char *bearer = NULL, *user = NULL, *pass = NULL;

	/* Host fields are only appended: make sure this core has the ones used here. */
	if (host->struct_size < offsetof(struct cg_plugin_host, batch_cbor) + sizeof host->batch_cbor ||
	    !host->batch_cbor || !host->read_secret || !host->log) {
		snprintf(err, errlen, "the gateway's plugin host lacks batch_cbor, read_secret or log");
		return -1;
	}
	if (!o->client_cert_file != !o->client_key_file) {
		snprintf(err, errlen, "client_cert_file and client_key_file go together");
		return -1;
	}
	if (o->bearer_token_file && o->basic_auth_file) {
		snprintf(err, errlen, "bearer_token_file and basic_auth_file exclude each other");
		return -1;
	}
	if (o->bearer_token_file) {
		bearer = host->read_secret(o->bearer_token_file);
		if (!bearer || !*bearer) {
			snprintf(err, errlen, "cannot read a token from bearer_token_file %s", o->bearer_token_file);
			wipe_free(bearer);
			return -1;
		}
	} else if (o->basic_auth_file &&
		   read_basic(host, o->basic_auth_file, &user, &pass, err, errlen) != 0) {
		return -1;
	}

	struct http_state *st = calloc(1, sizeof *st);
	if (!st) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	st->host = host;
	st->body = o->body;
	st->compression = o->compression;
	struct httpc_options ho = {
		.url = o->url,
		.ca_file = o->ca_file,
		.cert_file = o->client_cert_file,
		.key_file = o->client_key_file,
		.bearer = bearer,
		.user = user,
		.password = pass,
		.timeout_ms = o->timeout_ms,
		.connect_timeout_ms = o->connect_timeout_ms,
		.max_response_bytes = o->max_response_bytes,
	};
	if (httpc__open(&ho, &st->client, err, errlen) != 0)
		goto fail;
	if (httpc__is_plain(st->client) && (bearer || user))
		host->log(host, CG_PLOG_WARN, "credentials go to %s over plain http, readable on the way",
			  httpc__origin(st->client));
	host->log(host, CG_PLOG_INFO, "POST to %s, body %s%s", httpc__origin(st->client),
		  body_values[st->body], st->compression == HTTP_COMP_ZSTD ? ", zstd" : "");
	wipe_free(bearer);
	wipe_free(user);
	wipe_free(pass);
	*state = st;
	return 0;
fail:
	free(st);
	wipe_free(bearer);
	wipe_free(user);
	wipe_free(pass);
	return -1;
}

static const char *file_ext(const char *format)
{
	if (format && strcmp(format, "minidump") == 0)
		return "dmp";
	if (format && strcmp(format, "elf-core") == 0)
		return "core";
	return "bin";
}

/* True when the boundary b (with its leading "--") occurs in no part. */
static bool boundary_free(const struct cg_plugin_batch *batch, const struct httpc_buf *meta, const char *b)
{
	char delim[96];
	int n = snprintf(delim, sizeof delim, "--%s", b);
	if (memmem(meta->p, meta->len, delim, (size_t)n))
		return false;
	for (size_t i = 0; i < batch->n; i++) {
		const struct cg_plugin_record *rec = &batch->records[i];
		if (rec->body && memmem(rec->body, rec->body_len, delim, (size_t)n))
			return false;
	}
	return true;
}

/*
 * multipart/form-data (RFC 7578). The boundary is derived from the batch id
 * and checked against every part, so a retried batch gets the same bytes and
 * no dump can end a part early.
 */
static int build_multipart(const struct cg_plugin_batch *batch, struct httpc_buf *out, char *ctype,
			   size_t ctype_len)
{
	struct httpc_buf meta = { 0 };
	char boundary[64];

	httpc__buf_put(&meta, "[", 1);
	for (size_t i = 0; i < batch->n; i++) {
		const char *m = batch->records[i].meta_json;
		if (i)
			httpc__buf_put(&meta, ",", 1);
		httpc__buf_put(&meta, m, strlen(m));
	}
	httpc__buf_put(&meta, "]", 1);
	if (meta.oom) {
		free(meta.p);
		return -1;
	}
	for (unsigned k = 0;; k++) {
		if (k == 1000) {   /* every candidate occurs in a dump: not in this universe */
			free(meta.p);
			return -1;
		}
		snprintf(boundary, sizeof boundary, "crashgate-%016" PRIx64 "-%u", batch->batch_id, k);
		if (boundary_free(batch, &meta, boundary))
			break;
	}
	snprintf(ctype, ctype_len, "multipart/form-data; boundary=%s", boundary);

	httpc__buf_printf(out, "--%s\r\nContent-Disposition: form-data; name=\"meta\"\r\n"
			  "Content-Type: application/json\r\n\r\n", boundary);
	httpc__buf_put(out, meta.p, meta.len);
	free(meta.p);
	for (size_t i = 0; i < batch->n; i++) {
		const struct cg_plugin_record *rec = &batch->records[i];
		if (!rec->body)
			continue;   /* a throttled count: its meta says so, there are no bytes */
		httpc__buf_printf(out, "\r\n--%s\r\nContent-Disposition: form-data; name=\"%zu\"; "
				  "filename=\"record-%zu.%s\"\r\nContent-Type: application/octet-stream\r\n\r\n",
				  boundary, i, i, file_ext(rec->format));
		httpc__buf_put(out, rec->body, rec->body_len);
	}
	httpc__buf_printf(out, "\r\n--%s--\r\n", boundary);
	return out->oom ? -1 : 0;
}

static int compress_zstd(const uint8_t *in, size_t len, struct httpc_buf *out)
{
	size_t cap = ZSTD_compressBound(len);
	out->p = malloc(cap ? cap : 1);
	if (!out->p)
		return -1;
	out->cap = cap;
	size_t n = ZSTD_compress(out->p, cap, in, len, 3);
	if (ZSTD_isError(n))
		return -1;
	out->len = n;
	return 0;
}

static void http_flush(void *state, const struct cg_plugin_batch *batch, struct cg_flush_result *r)
{
	struct http_state *st = state;
	const struct cg_plugin_host *host = st->host;
	struct httpc_buf body = { 0 }, packed = { 0 };
	struct curl_slist *headers = NULL, *l;
	struct httpc_response resp;
	const uint8_t *send;
	size_t send_len;
	char ctype[128], value[512];
	int bad;

	r->status = CG_FLUSH_RETRY;   /* every local failure below: maybe memory comes back */
	r->retry_after_ms = 0;
	if (st->body == HTTP_BODY_CBOR) {
		uint8_t *buf = NULL;
		size_t len = 0;
		if (host->batch_cbor(host, batch, &buf, &len) != 0) {
			snprintf(r->reason, sizeof r->reason, "cannot encode the batch as CBOR");
			return;
		}
		body.p = buf;
		body.len = body.cap = len;
		snprintf(ctype, sizeof ctype, "application/cbor");
	} else if (build_multipart(batch, &body, ctype, sizeof ctype) != 0) {
		snprintf(r->reason, sizeof r->reason, "cannot build the multipart body (out of memory)");
		goto out;
	}
	send = body.p;
	send_len = body.len;
	if (st->compression == HTTP_COMP_ZSTD) {
		if (compress_zstd(body.p, body.len, &packed) != 0) {
			snprintf(r->reason, sizeof r->reason, "cannot compress the body with zstd");
			goto out;
		}
		send = packed.p;
		send_len = packed.len;
	}

	bad = httpc__add_header(&headers, "Content-Type", ctype);
	if (st->compression == HTTP_COMP_ZSTD)
		bad |= httpc__add_header(&headers, "Content-Encoding", "zstd");
	snprintf(value, sizeof value, "%" PRIu64, batch->batch_id);
	bad |= httpc__add_header(&headers, "X-Crashgate-Batch", value);
	snprintf(value, sizeof value, "%s/%s/%" PRIu64, host->gateway_id ? host->gateway_id : "",
		 host->upstream ? host->upstream : "", batch->batch_id);
	bad |= httpc__add_header(&headers, "Idempotency-Key", value);
	/* No 100-continue round trip: the body is sent right away. */
	l = curl_slist_append(headers, "Expect:");
	if (l)
		headers = l;
	if (bad || !l) {
		snprintf(r->reason, sizeof r->reason, "cannot build the request headers "
			 "(gateway id or upstream name with a line break, or out of memory)");
		goto out;
	}

	httpc__post(st->client, headers, send, send_len, &resp);
	httpc__result(st->client, &resp, r);
	host->log(host, CG_PLOG_DEBUG, "batch %" PRIu64 ": %zu records, %zu bytes sent, %s in %" PRIu64 " ms",
		  batch->batch_id, batch->n, send_len, r->reason, resp.elapsed_ms);
out:
	curl_slist_free_all(headers);
	free(body.p);
	free(packed.p);
}

static void http_destroy(void *state)
{
	struct http_state *st = state;
	if (!st)
		return;
	httpc__close(st->client);
	free(st);
}

CG_PLUGIN_EXPORT const struct cg_plugin crashgate_output_plugin = {
	.abi_version = CG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct cg_plugin),
	.kind = "http",
	.description = "One POST per batch (CBOR or multipart, optionally zstd) over HTTP(S).",
	.options = http_options,
	.options_size = sizeof(struct http_options),
	.init = http_init,
	.flush = http_flush,
	.destroy = http_destroy,
};
