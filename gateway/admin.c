#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/stat.h>
#include <time.h>
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
	struct cg_forwarder *fw;
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
/* Without a token only loopback listens; a web page in a browser on the
 * same box could still reach it through DNS rebinding, with a Host header
 * naming its own domain. So without a token the Host must be a loopback
 * name or address. */
static bool loopback_host(const char *h)
{
	if (!h)
		return false;
	if (h[0] == '[')
		return strncmp(h, "[::1]", 5) == 0 && (h[5] == '\0' || h[5] == ':');
	char host[64];
	size_t n = strcspn(h, ":");
	if (n >= sizeof host)
		return false;
	memcpy(host, h, n);
	host[n] = '\0';
	struct in_addr ip;
	if (inet_pton(AF_INET, host, &ip) == 1)   /* an address, not a name like 127.evil.example */
		return (ntohl(ip.s_addr) >> 24) == 127;
	return strcmp(host, "localhost") == 0;
}

static bool authorized(struct cg_admin *a, struct MHD_Connection *c)
{
	if (!a->token)   /* loopback without a token: the operator chose it */
		return loopback_host(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host"));
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

/* Label values are configuration names (checked at load: no quotes or
 * backslashes), so they need no escaping. */
static void upstream_metrics(struct cg_admin *a, struct buf *b)
{
	json_t *q = cg_forward_queue_json(a->cfg, a->st);
	size_t i;
	json_t *r;
	static const struct {
		const char *key, *name, *help;
	} gauges[] = {
		{ "depth", "crashgate_upstream_queue_dumps", "Dumps waiting for this upstream." },
		{ "bytes", "crashgate_upstream_queue_bytes", "Bytes of the dumps waiting for this upstream." },
		{ "oldest_age_s", "crashgate_upstream_queue_oldest_age_seconds", "Age of the oldest dump waiting (0 when none)." },
		{ "dead_letters", "crashgate_upstream_dead_letter_batches", "Batches the upstream refused, kept for crashgatectl retry." },
	};
	for (size_t g = 0; g < sizeof gauges / sizeof gauges[0]; g++) {
		add(b, "# HELP %s %s\n# TYPE %s gauge\n", gauges[g].name, gauges[g].help, gauges[g].name);
		json_array_foreach(q, i, r) {
			add(b, "%s{upstream=\"%s\",region=\"%s\"} %" JSON_INTEGER_FORMAT "\n", gauges[g].name,
			    json_string_value(json_object_get(r, "upstream")),
			    json_string_value(json_object_get(r, "region")),
			    json_integer_value(json_object_get(r, gauges[g].key)));
		}
	}
	json_decref(q);

	size_t n = cg_forwarder_stats(a->fw, NULL, 0);
	struct cg_upstream_stats *st = n ? calloc(n, sizeof *st) : NULL;
	n = st ? cg_forwarder_stats(a->fw, st, n) : 0;
	add(b, "# HELP crashgate_upstream_batches_total Batches handed to an upstream, by result.\n"
	       "# TYPE crashgate_upstream_batches_total counter\n");
	for (size_t k = 0; k < n; k++) {
		static const char *const res[] = { "ok", "retry", "drop" };
		uint64_t v[] = { st[k].batches_ok, st[k].batches_retry, st[k].batches_drop };
		for (int j = 0; j < 3; j++)
			add(b, "crashgate_upstream_batches_total{upstream=\"%s\",result=\"%s\"} %" PRIu64 "\n",
			    st[k].name, res[j], v[j]);
	}
	add(b, "# HELP crashgate_upstream_dumps_delivered_total Dumps an upstream acknowledged.\n"
	       "# TYPE crashgate_upstream_dumps_delivered_total counter\n");
	for (size_t k = 0; k < n; k++)
		add(b, "crashgate_upstream_dumps_delivered_total{upstream=\"%s\"} %" PRIu64 "\n", st[k].name,
		    st[k].dumps_delivered);
	add(b, "# HELP crashgate_upstream_delivered_bytes_total Dump bytes an upstream acknowledged.\n"
	       "# TYPE crashgate_upstream_delivered_bytes_total counter\n");
	for (size_t k = 0; k < n; k++)
		add(b, "crashgate_upstream_delivered_bytes_total{upstream=\"%s\"} %" PRIu64 "\n", st[k].name,
		    st[k].bytes_delivered);
	add(b, "# HELP crashgate_upstream_flush_duration_seconds Time an upstream took to answer a batch.\n"
	       "# TYPE crashgate_upstream_flush_duration_seconds histogram\n");
	for (size_t k = 0; k < n; k++) {
		uint64_t cum = 0;
		for (int j = 0; j <= CG_FWD_LATENCY_BUCKETS; j++) {
			cum += st[k].latency[j];
			if (j < CG_FWD_LATENCY_BUCKETS)
				add(b, "crashgate_upstream_flush_duration_seconds_bucket{upstream=\"%s\",le=\"%g\"} %" PRIu64 "\n",
				    st[k].name, cg_forward_latency_bounds[j], cum);
			else
				add(b, "crashgate_upstream_flush_duration_seconds_bucket{upstream=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
				    st[k].name, cum);
		}
		add(b, "crashgate_upstream_flush_duration_seconds_sum{upstream=\"%s\"} %.6f\n", st[k].name,
		    st[k].latency_sum_s);
		add(b, "crashgate_upstream_flush_duration_seconds_count{upstream=\"%s\"} %" PRIu64 "\n",
		    st[k].name, cum);
	}
	free(st);
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
	add(b, "# HELP crashgate_dumps_rejected_total Dumps rejected, by reason.\n"
	       "# TYPE crashgate_dumps_rejected_total counter\n");
	for (int k = 0; k < CG_REJECT_CLASSES; k++)
		add(b, "crashgate_dumps_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
		    cg_reject_class_name((enum cg_reject_class)k), s.rejected_by_class[k]);
	metric(b, "crashgate_dumps_throttled_total", "counter", "Dumps answered throttled (bytes not kept).", s.dumps_throttled);
	metric(b, "crashgate_dumps_deduplicated_total", "counter", "Dumps sent again under a new id, stored once.", s.dumps_deduplicated);
	metric(b, "crashgate_dumps_purged_total", "counter", "Dumps deleted by the operator (purge).", s.dumps_purged);
	metric(b, "crashgate_dumps_expired_total", "counter", "Dumps dropped incomplete after reassembly_timeout.", s.dumps_expired);
	metric(b, "crashgate_consent_refused_total", "counter", "Chunks answered consent_required.", s.consent_refused);
	metric(b, "crashgate_busy_total", "counter", "Answers busy (store or memory full).", s.busy);
	metric(b, "crashgate_open_dumps", "gauge", "Dumps being reassembled.", s.open_dumps);
	metric(b, "crashgate_store_bytes", "gauge", "Bytes the store holds against limits.max_store_bytes.", s.store_bytes);
	metric(b, "crashgate_devices", "gauge", "Devices the consent signal goes to.", s.devices_seen);
	metric(b, "crashgate_broker_reconnects_total", "counter", "Reconnections to the broker.", is.connects ? is.connects - 1 : 0);
	metric(b, "crashgate_broker_connected", "gauge", "1 while connected to the broker.", cg_ingest_connected(a->in));
	metric(b, "crashgate_config_reloads_total", "counter", "Configuration reloads applied.", s.config_generation - 1);
	upstream_metrics(a, b);
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

/* {"error": text}: the text may quote what a client sent (a parameter, an
 * upstream name), so bytes that are not printable ASCII become '?' and the
 * answer is always valid JSON. */
static json_t *error_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *error_json(const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return json_pack("{s:s}", "error", msg);
}

static enum MHD_Result not_found(struct MHD_Connection *c)
{
	return reply_json(c, MHD_HTTP_NOT_FOUND, json_pack("{s:s}", "error", "no such dump"));
}

/* ---- /v1/dumps: filters and paging over the records (receipt order) ---- */

struct list_q {
	struct cg_record_filter f;
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
	if (q->f.through && r->seq > q->f.through)
		return 1;
	if (!cg_record_filter_match(&q->f, r))
		return 0;
	if (json_array_size(q->rows) == q->limit) {
		q->more = true;
		return 1;
	}
	json_array_append_new(q->rows, cg_record_json(q->gateway, q->st, r));
	q->last = r->seq;
	return 0;
}

#define PURGE_SEQS_MAX 1000

struct query {
	struct cg_record_filter f;
	size_t limit;
	bool allow_seqs;               /* DELETE: seqs=1,2,3 names exactly what goes */
	uint64_t seqs[PURGE_SEQS_MAX];
	size_t nseqs;
	bool has_seqs, has_limit, bad;
	char err[160];
};

static bool parse_seqs(struct query *q, const char *val)
{
	const char *p = val;
	while (*p) {
		char *end;
		if (*p < '0' || *p > '9' || q->nseqs == PURGE_SEQS_MAX)
			return false;
		uint64_t v = strtoull(p, &end, 10);
		if (v == 0 || (*end && *end != ','))
			return false;
		q->seqs[q->nseqs++] = v;
		p = *end ? end + 1 : end;
	}
	return q->nseqs > 0;
}

static enum MHD_Result query_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *val)
{
	struct query *q = cls;
	(void)kind;
	if (q->bad || !val || !*val)
		return MHD_YES;
	if (strcmp(key, "limit") == 0) {
		char *end;
		unsigned long n = strtoul(val, &end, 10);
		if (*end || n < 1 || n > 1000) {
			q->bad = true;
			snprintf(q->err, sizeof q->err, "limit: 1 to 1000");
		}
		q->limit = n;
		q->has_limit = true;
		return MHD_YES;
	}
	if (q->allow_seqs && strcmp(key, "seqs") == 0) {
		q->has_seqs = true;
		if (!parse_seqs(q, val)) {
			q->bad = true;
			snprintf(q->err, sizeof q->err, "seqs: 1 to %d sequence numbers, comma-separated", PURGE_SEQS_MAX);
		}
		return MHD_YES;
	}
	int rc = cg_record_filter_set(&q->f, key, val, q->err, sizeof q->err);
	if (rc == 1)
		snprintf(q->err, sizeof q->err, "unknown parameter %.64s", key);
	q->bad = rc != 0;
	return MHD_YES;
}

/* Parse the query string; NULL and a 400 reply queued when it is bad. */
static bool parse_query(struct MHD_Connection *c, struct query *q, bool allow_seqs, enum MHD_Result *res)
{
	memset(q, 0, sizeof *q);
	q->limit = 100;
	q->allow_seqs = allow_seqs;
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_arg, q);
	if (q->bad)
		*res = reply_json(c, MHD_HTTP_BAD_REQUEST, error_json("%s", q->err));
	return !q->bad;
}

static enum MHD_Result list_dumps(struct cg_admin *a, struct MHD_Connection *c)
{
	struct query qa;   /* 8 KiB: fine on the server thread's stack */
	enum MHD_Result res;
	if (!parse_query(c, &qa, false, &res))
		return res;
	if (qa.f.status && strcmp(qa.f.status, "open") == 0) {   /* being received: no paging */
		json_t *rows = cg_open_dumps_json(a->st, a->cfg->gateway.id, &qa.f);
		while (json_array_size(rows) > qa.limit)
			json_array_remove(rows, json_array_size(rows) - 1);
		return reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "dumps", rows));
	}
	struct list_q q = { .f = qa.f, .limit = qa.limit, .gateway = a->cfg->gateway.id, .st = a->st };
	q.rows = json_array();
	cg_store_scan_records_from(a->st, q.f.after + 1, list_visit, &q);
	json_t *j = json_pack("{s:o}", "dumps", q.rows);
	if (q.more)
		json_object_set_new(j, "next", json_integer((json_int_t)q.last));
	return reply_json(c, MHD_HTTP_OK, j);
}

/* ---- DELETE /v1/dumps[/{id}]: purge at the operator's request ---- */

struct purge_q {
	struct cg_record_filter f;
	size_t limit;
	struct cg_dump_record *recs;
	size_t n, cap;
	bool more, nomem;
};

static bool purge_add(struct purge_q *p, const struct cg_dump_record *r)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		struct cg_dump_record *n = realloc(p->recs, cap * sizeof *n);
		if (!n) {
			p->nomem = true;
			return false;
		}
		p->recs = n;
		p->cap = cap;
	}
	p->recs[p->n++] = *r;
	return true;
}

static int purge_visit(void *ctx, const struct cg_dump_record *r)
{
	struct purge_q *p = ctx;
	if (p->f.through && r->seq > p->f.through)
		return 1;
	if (!cg_record_filter_match(&p->f, r))
		return 0;
	if (p->n == p->limit) {
		p->more = true;
		return 1;
	}
	return purge_add(p, r) ? 0 : 1;
}

/*
 * What goes: one dump (DELETE /v1/dumps/{id}), exactly the dumps named by
 * seqs=1,2,3 (what crashgatectl listed and the operator confirmed), or at
 * most `limit` (default and most 1000) dumps matching filters, with
 * "more": true when others match too. Never everything by accident: a
 * request without seqs or a filter is refused.
 */
static enum MHD_Result purge(struct cg_admin *a, struct MHD_Connection *c, const char *id)
{
	struct purge_q p = { .limit = 1000 };
	struct cg_dump_record *one = malloc(sizeof *one);
	if (!one)
		return MHD_NO;
	if (id) {
		if (cg_record_find(a->st, a->cfg->gateway.id, id, one) != CG_OK) {
			free(one);
			return not_found(c);
		}
		purge_add(&p, one);
	} else {
		struct query q;
		enum MHD_Result res;
		if (!parse_query(c, &q, true, &res)) {
			free(one);
			return res;
		}
		if (q.has_seqs) {
			for (size_t i = 0; i < q.nseqs && !p.nomem; i++)
				if (cg_store_get_record(a->st, q.seqs[i], one) == CG_OK)
					purge_add(&p, one);
		} else if (!cg_record_filter_any(&q.f) || (q.f.status && strcmp(q.f.status, "open") == 0)) {
			free(one);
			return reply_json(c, MHD_HTTP_BAD_REQUEST,
					  json_pack("{s:s}", "error", "purge needs seqs or a filter (device, group, "
						    "region, signature, status, since, until, after, through)"));
		} else {
			p.f = q.f;
			p.limit = q.has_limit ? q.limit : 1000;
			cg_store_scan_records_from(a->st, p.f.after + 1, purge_visit, &p);
		}
	}
	free(one);
	json_t *ids = json_array();
	int rc = p.nomem ? CG_ERR_NOMEM : CG_OK;
	for (size_t i = 0; i < p.n && rc == CG_OK; i++) {
		rc = cg_reasm_purge(a->rs, &p.recs[i]);
		if (rc == CG_OK)
			json_array_append_new(ids, json_integer((json_int_t)p.recs[i].seq));
	}
	free(p.recs);
	/* Deleted means deleted: durable before the answer says so. */
	if (json_array_size(ids) && cg_store_sync(a->st) != CG_OK && rc == CG_OK)
		rc = CG_ERR_STORE;
	log_info("admin", "purge: %zu dumps deleted%s", json_array_size(ids), rc == CG_OK ? "" : " (then it failed)");
	if (rc != CG_OK)
		return reply_json(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  json_pack("{s:s, s:o}", "error", cg_strerror(rc), "purged", ids));
	json_t *j = json_pack("{s:I, s:o}", "count", (json_int_t)json_array_size(ids), "purged", ids);
	if (p.more)
		json_object_set_new(j, "more", json_true());
	return reply_json(c, MHD_HTTP_OK, j);
}

/* ---- POST /v1/backup: a consistent copy of the store while it runs ---- */

static enum MHD_Result backup(struct cg_admin *a, struct MHD_Connection *c)
{
	/* Only ever under data_dir/backups: the API names no paths. */
	char dir[4096], name[40], err[512];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(name, sizeof name, "%Y%m%dT%H%M%S", &tm);
	snprintf(name + n, sizeof name - n, ".%03ldZ", ts.tv_nsec / 1000000);
	snprintf(dir, sizeof dir, "%s/backups", a->cfg->gateway.data_dir);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return reply_json(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  json_pack("{s:s}", "error", "cannot create data_dir/backups"));
	snprintf(dir, sizeof dir, "%s/backups/%s", a->cfg->gateway.data_dir, name);
	if (cg_store_checkpoint(a->st, dir, err, sizeof err) != CG_OK) {
		log_error("admin", "backup to %s failed: %s", dir, err);
		return reply_json(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_json("%s", err));
	}
	log_info("admin", "backup: store copied to %s", dir);
	return reply_json(c, MHD_HTTP_CREATED, json_pack("{s:s, s:s}", "name", name, "path", dir));
}

/* ---- POST /v1/upstreams/{name}/retry[?seq=N] ---- */

static enum MHD_Result retry(struct cg_admin *a, struct MHD_Connection *c, const char *name)
{
	const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "seq");
	uint64_t only = 0;
	if (v) {
		char *end;
		only = strtoull(v, &end, 10);
		if (!*v || *end || only == 0)
			return reply_json(c, MHD_HTTP_BAD_REQUEST, json_pack("{s:s}", "error", "seq: a sequence number"));
	}
	char err[256] = "";
	json_t *asked = json_array();
	int rc = cg_forward_request_retry(a->cfg, a->st, name, only, asked, err, sizeof err);
	if (rc == CG_ERR_NOT_FOUND) {
		json_decref(asked);
		return reply_json(c, MHD_HTTP_NOT_FOUND, error_json("%s", err));
	}
	if (rc != CG_OK) {
		json_decref(asked);
		return reply_json(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_json("%s", err));
	}
	if (json_array_size(asked) == 0) {
		json_decref(asked);
		return reply_json(c, MHD_HTTP_NOT_FOUND,
				  json_pack("{s:s}", "error", only ? "no dead-letter batch starts at that seq"
								 : "the upstream has no dead-letter batch"));
	}
	cg_forwarder_wake(a->fw);
	log_info("admin", "%s: %zu dead-letter batches queued to be sent again", name, json_array_size(asked));
	return reply_json(c, MHD_HTTP_ACCEPTED, json_pack("{s:s, s:o}", "upstream", name, "batches", asked));   /* name: a configured upstream */
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

static enum MHD_Result v1_post(struct cg_admin *a, struct MHD_Connection *c, const char *url)
{
	static const char pre[] = "/v1/upstreams/", suf[] = "/retry";
	size_t n = strlen(url);
	if (strcmp(url, "/v1/backup") == 0)
		return backup(a, c);
	if (strncmp(url, pre, sizeof pre - 1) == 0 && n > sizeof pre - 1 + sizeof suf - 1 &&
	    strcmp(url + n - (sizeof suf - 1), suf) == 0) {
		char name[200];
		snprintf(name, sizeof name, "%.*s", (int)(n - (sizeof pre - 1) - (sizeof suf - 1)), url + sizeof pre - 1);
		return retry(a, c, name);
	}
	return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "no such route\n", 14);
}

static enum MHD_Result v1(struct cg_admin *a, struct MHD_Connection *c, const char *url, const char *method)
{
	if (strcmp(method, "POST") == 0)
		return v1_post(a, c, url);
	bool del = strcmp(method, "DELETE") == 0;
	if (strcmp(url, "/v1/dumps") == 0)
		return del ? purge(a, c, NULL) : list_dumps(a, c);
	if (strncmp(url, "/v1/dumps/", 10) == 0) {
		char id[600];
		snprintf(id, sizeof id, "%s", url + 10);
		size_t n = strlen(id);
		bool raw = n > 4 && strcmp(id + n - 4, "/raw") == 0;
		if (raw)
			id[n - 4] = '\0';
		if (del)
			return raw ? reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "GET only\n", 9)
				   : purge(a, c, id);
		return one_dump(a, c, id, raw);
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n", 19);
	if (strcmp(url, "/v1/upstreams") == 0)
		return reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "upstreams",
							    cg_forward_queue_json(a->cfg, a->st)));
	if (strcmp(url, "/v1/signatures") == 0)
		return reply_json(c, MHD_HTTP_OK, json_pack("{s:o}", "signatures", cg_signatures_json(a->st)));
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
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	bool v1r = strncmp(url, "/v1/", 4) == 0;
	if (!get && !(v1r && (strcmp(method, "POST") == 0 || strcmp(method, "DELETE") == 0)))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n", 19);
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
	if (v1r)
		return v1(a, c, url, method);
	return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "no such route\n", 14);
}

/* libmicrohttpd's own messages go through our log, so that a JSON log stays
 * one JSON object per line. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn("admin", "%s", msg);
}

int cg_admin_start(const struct cg_config *cfg, struct cg_store *st, struct cg_reasm *rs,
		   struct cg_ingest *in, struct cg_forwarder *fw,
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
	a->fw = fw;
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
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
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
