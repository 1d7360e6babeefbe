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

#include "log.h"

struct cg_admin {
	struct MHD_Daemon *mhd;
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
	return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "no such route\n", 14);
}

int cg_admin_start(const struct cg_config *cfg, struct cg_reasm *rs, struct cg_ingest *in,
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
