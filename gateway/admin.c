#include "admin.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "forward.h"
#include "log.h"
#include "policy.h"
#include "record.h"

struct cg_admin {
	struct MHD_Daemon *mhd;
	const struct cg_config *cfg;
	struct cg_store *st;
	struct cg_reasm *rs;
	struct cg_ingest *in;
	char *token;                      /* NULL: no token (loopback only) */
	size_t token_len;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     const char *body, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Constant-time comparison of the bearer token: the time a refusal takes
 * says nothing about how much of a guess was right. */
static bool authorized(struct cg_admin *a, struct MHD_Connection *c)
{
	if (!a->token)
		return true;   /* loopback without a token: the operator chose it */
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (!h || strncmp(h, "Bearer ", 7) != 0)
		return false;
	h += 7;
	size_t n = strlen(h);
	/* Compare as many bytes as the token has whatever the guess's length. */
	char buf[512] = { 0 };
	if (a->token_len >= sizeof buf)
		return false;
	memcpy(buf, h, n < sizeof buf ? n : sizeof buf - 1);
	return CRYPTO_memcmp(buf, a->token, a->token_len + 1) == 0 && n == a->token_len;
}

struct buf {
	char *p;
	size_t n, cap;
};

static void add(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && b->n + (size_t)n < b->cap) {
			b->n += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->n + (size_t)n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return;
		b->p = p;
		b->cap = cap;
	}
}

static void metric(struct buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
	add(b, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name, v);
}

/* Prometheus text exposition format; names and units after its naming
 * conventions (_total for counters, _bytes for sizes). */
static void metrics(struct cg_admin *a, struct buf *b)
{
	struct cg_reasm_stats s;
	struct cg_ingest_stats is;
	cg_reasm_get_stats(a->rs, &s);
	cg_ingest_get_stats(a->in, &is);
	metric(b, "crashgate_chunks_received_total", "counter", "Chunk messages that decoded.", s.chunks_received);
	metric(b, "crashgate_chunk_received_bytes_total", "counter", "Content bytes of those chunks.", s.bytes_received);
	metric(b, "crashgate_chunks_stored_total", "counter", "New chunks written to the store.", s.chunks_stored);
	metric(b, "crashgate_messages_malformed_total", "counter", "Device messages that did not decode.", s.messages_malformed);
	metric(b, "crashgate_dumps_completed_total", "counter", "Dumps stored whole.", s.dumps_completed);
	metric(b, "crashgate_dumps_rejected_total", "counter", "Dumps rejected (too large, corrupt, CRC, window, quota).", s.dumps_rejected);
	metric(b, "crashgate_dumps_throttled_total", "counter", "Dumps answered throttled (bytes not kept).", s.dumps_throttled);
	metric(b, "crashgate_dumps_deduplicated_total", "counter", "Dumps sent again under a new id, stored once.", s.dumps_deduplicated);
	metric(b, "crashgate_dumps_expired_total", "counter", "Dumps dropped incomplete after reassembly_timeout.", s.dumps_expired);
	metric(b, "crashgate_consent_refused_total", "counter", "Chunks answered consent_required.", s.consent_refused);
	metric(b, "crashgate_busy_total", "counter", "Answers busy (store or memory full).", s.busy);
	metric(b, "crashgate_open_dumps", "gauge", "Dumps being reassembled.", s.open_dumps);
	metric(b, "crashgate_store_bytes", "gauge", "Bytes the store holds against limits.max_store_bytes.", s.store_bytes);
	metric(b, "crashgate_devices", "gauge", "Devices the consent signal goes to.", s.devices_seen);
	metric(b, "crashgate_broker_reconnects_total", "counter", "Reconnections to the broker.", is.connects ? is.connects - 1 : 0);
	metric(b, "crashgate_broker_connected", "gauge", "1 while connected to the broker.", cg_ingest_connected(a->in));
	metric(b, "crashgate_config_reloads_total", "counter", "Configuration reloads applied.", s.config_generation - 1);
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!s)
		return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n", 14);
	enum MHD_Result r = reply(c, status, "application/json", s, strlen(s));
	free(s);
	return r;
}

static enum MHD_Result not_found(struct MHD_Connection *c)
{
	return reply_json(c, MHD_HTTP_NOT_FOUND, json_pack("{s:s}", "error", "no such dump"));
}

/* ---- /v1/dumps: filters and paging over the records (receipt order) ---- */

struct list_q {
	const char *device, *group, *region, *signature, *status;
	int64_t since, until;
	uint64_t after;
	size_t limit;
	const char *gateway;
	struct cg_store *st;
	json_t *rows;
	uint64_t last;
	bool more;
};

static int list_visit(void *ctx, const struct cg_dump_record *r)
{
	struct list_q *q = ctx;
	if (r->seq <= q->after)
		return 0;
	if ((q->device && strcmp(q->device, r->device)) || (q->group && strcmp(q->group, r->group)) ||
	    (q->region && strcmp(q->region, r->region)) ||
	    (q->signature && strcmp(q->signature, r->signature)) ||
	    (q->status && strcmp(q->status, cg_dump_status_name(r->status))) ||
	    (q->since && r->received_at_ms < q->since) || (q->until && r->received_at_ms >= q->until))
		return 0;
	if (json_array_size(q->rows) == q->limit) {
		q->more = true;
		return 1;
	}
	json_array_append_new(q->rows, cg_record_json(q->gateway, q->st, r));
	q->last = r->seq;
	return 0;
}

static const char *arg(struct MHD_Connection *c, const char *k)
{
	const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
	return v && *v ? v : NULL;
}

static enum MHD_Result list_dumps(struct cg_admin *a, struct MHD_Connection *c)
{
	struct list_q q = { .device = arg(c, "device"), .group = arg(c, "group"),
			    .region = arg(c, "region"), .signature = arg(c, "signature"),
			    .status = arg(c, "status"), .limit = 100, .gateway = a->cfg->gateway.id,
			    .st = a->st };
	const char *v;
	char *end;
	if ((v = arg(c, "limit"))) {
		unsigned long n = strtoul(v, &end, 10);
		if (*end || n < 1 || n > 1000)
			return reply_json(c, MHD_HTTP_BAD_REQUEST, json_pack("{s:s}", "error", "limit: 1 to 1000"));
		q.limit = n;
	}
	if ((v = arg(c, "after"))) {
		q.after = strtoull(v, &end, 10);
		if (*end)
			return reply_json(c, MHD_HTTP_BAD_REQUEST, json_pack("{s:s}", "error", "after: a sequence number"));
	}
	if (((v = arg(c, "since")) && cg_parse_time(v, &q.since) != 0) ||
	    ((v = arg(c, "until")) && cg_parse_time(v, &q.until) != 0)) {
		return reply_json(c, MHD_HTTP_BAD_REQUEST, json_pack("{s:s}", "error", "since/until: RFC 3339"));
	}
	q.rows = json_array();
	cg_store_scan_records_from(a->st, q.after + 1, list_visit, &q);
	json_t *j = json_pack("{s:o}", "dumps", q.rows);
	if (q.more)
		json_object_set_new(j, "next", json_integer((json_int_t)q.last));
	return reply_json(c, MHD_HTTP_OK, j);
}

static enum MHD_Result one_dump(struct cg_admin *a, struct MHD_Connection *c, const char *id, bool raw)
{
	struct cg_dump_record *r = malloc(sizeof *r);
	if (!r || cg_record_find(a->st, a->cfg->gateway.id, id, r) != CG_OK) {
		free(r);
		return not_found(c);
	}
	if (!raw) {
		enum MHD_Result res = reply_json(c, MHD_HTTP_OK, cg_record_json(a->cfg->gateway.id, a->st, r));
		free(r);
		return res;
	}
	uint8_t *body = NULL;
	size_t len = 0;
	bool has = r->status != CG_DUMP_THROTTLED && !r->body_deleted &&
		   cg_store_get_body(a->st, r->seq, &body, &len) == CG_OK;
	char disp[200];
	snprintf(disp, sizeof disp, "attachment; filename=\"%s-%" PRIu64 ".dump\"", r->device, r->dump_id);
	free(r);
	if (!has)
		return reply_json(c, MHD_HTTP_GONE, json_pack("{s:s}", "error", "the dump's bytes are not kept"));
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
	MHD_add_response_header(resp, "Content-Disposition", disp);
	enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static int sig_visit(void *ctx, const char *sig, const struct cg_sig_stats *s)
{
	char t1[40], t2[40];
	cg_record_time(s->first_seen_ms, t1, sizeof t1);
	cg_record_time(s->last_seen_ms, t2, sizeof t2);
	json_array_append_new(ctx, json_pack("{s:s, s:I, s:I, s:I, s:s, s:s, s:s}", "signature", sig,
					     "count", (json_int_t)s->stored, "throttled",
					     (json_int_t)s->throttled, "occurrences",
					     (json_int_t)(s->stored + s->throttled), "first_seen", t1,
					     "last_seen", t2, "reason", s->reason));
	return 0;
}

static enum MHD_Result v1(struct cg_admin *a, struct MHD_Connection *c, const char *url)
{
	if (strcmp(url, "/v1/dumps") == 0)
		return list_dumps(a, c);
	if (strncmp(url, "/v1/dumps/", 10) == 0) {
		char id[600];
		snprintf(id, sizeof id, "%s", url + 10);
		size_t n = strlen(id);
		bool raw = n > 4 && strcmp(id + n - 4, "/raw") == 0;
		if (raw)
			id[n - 4] = '\0';
		return one_dump(a, c, id, raw);
	}
	if (strcmp(url, "/v1/upstreams") == 0)
		return reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "upstreams",
							    cg_forward_queue_json(a->cfg, a->st)));
	if (strcmp(url, "/v1/signatures") == 0) {
		json_t *rows = json_array();
		cg_policy_scan_sigs(a->st, sig_visit, rows);
		return reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "signatures", rows));
	}
	return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "no such route\n", 14);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			      const char *version, const char *upload, size_t *upload_size, void **req)
{
	struct cg_admin *a = cls;
	(void)version, (void)upload, (void)req;
	if (*upload_size) {   /* no route takes a body */
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "GET only\n", 9);
	if (strcmp(url, "/healthz") == 0)
		return reply(c, MHD_HTTP_OK, "text/plain", "ok\n", 3);
	if (!authorized(a, c))
		return reply(c, MHD_HTTP_UNAUTHORIZED, "text/plain", "a bearer token is required\n", 27);
	if (strcmp(url, "/readyz") == 0) {
		if (!cg_ingest_connected(a->in))
			return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", "not ready: broker not connected\n", 32);
		return reply(c, MHD_HTTP_OK, "text/plain", "ready\n", 6);
	}
	if (strcmp(url, "/metrics") == 0) {
		struct buf b = { 0 };
		metrics(a, &b);
		enum MHD_Result r = reply(c, b.p ? MHD_HTTP_OK : MHD_HTTP_INTERNAL_SERVER_ERROR,
					  "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "", b.n);
		free(b.p);
		return r;
	}
	if (strncmp(url, "/v1/", 4) == 0)
		return v1(a, c, url);
	return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "no such route\n", 14);
}

int cg_admin_start(const struct cg_config *cfg, struct cg_store *st, struct cg_reasm *rs,
		   struct cg_ingest *in,
		   struct cg_admin **out, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(cfg->admin.listen, ':');
	snprintf(host, sizeof host, "%.*s", (int)(colon - cfg->admin.listen), cfg->admin.listen);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1)) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		snprintf(err, errlen, "admin.listen %s: the host must be an IPv4 address", cfg->admin.listen);
		return CG_ERR_CONFIG;
	}
	bool loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
	struct cg_admin *a = calloc(1, sizeof *a);
	if (!a)
		return CG_ERR_NOMEM;
	a->cfg = cfg;
	a->st = st;
	a->rs = rs;
	a->in = in;
	if (cfg->admin.token_file) {
		a->token = cg_read_secret_file(cfg->admin.token_file);
		if (!a->token || !a->token[0]) {
			snprintf(err, errlen, "admin.token_file %s: cannot read a token", cfg->admin.token_file);
			cg_admin_stop(a);
			return CG_ERR_CONFIG;
		}
		a->token_len = strlen(a->token);
	} else if (!loopback) {
		snprintf(err, errlen, "admin.listen %s is not a loopback address: set admin.token_file",
			 cfg->admin.listen);
		cg_admin_stop(a);
		return CG_ERR_CONFIG;
	}
	a->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
				  handle, a, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
	if (!a->mhd) {
		snprintf(err, errlen, "admin: cannot listen on %s", cfg->admin.listen);
		cg_admin_stop(a);
		return CG_ERR_IO;
	}
	log_info("admin", "listening on %s%s", cfg->admin.listen, a->token ? " (bearer token)" : "");
	*out = a;
	return CG_OK;
}

void cg_admin_stop(struct cg_admin *a)
{
	if (!a)
		return;
	if (a->mhd)
		MHD_stop_daemon(a->mhd);
	if (a->token) {
		explicit_bzero(a->token, a->token_len);
		free(a->token);
	}
	free(a);
}
