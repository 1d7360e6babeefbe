/*
 * HTTP POST over libcurl for the output plugins; see httpc.h.
 */
#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpc.h"

struct httpc {
	CURL *easy;
	char origin[512];
	bool plain;
	char errbuf[CURL_ERROR_SIZE];
	uint64_t max_response;
	uint8_t *resp;                /* grows up to max_response */
	size_t resp_len, resp_cap;
	bool truncated;
};

/* curl_global_init() is thread-safe only in builds with
 * CURL_VERSION_THREADSAFE; upstreams are initialised from their own
 * threads, so serialise it here. This lock is the plugin's only static
 * state and carries no data. */
static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;

static int global_init(void)
{
	pthread_mutex_lock(&global_lock);
	CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	pthread_mutex_unlock(&global_lock);
	return rc == CURLE_OK ? 0 : -1;
}

static void global_cleanup(void)
{
	pthread_mutex_lock(&global_lock);
	curl_global_cleanup();
	pthread_mutex_unlock(&global_lock);
}

/* Checks the URL and writes its loggable origin. */
static int check_url(struct httpc *c, const char *url, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, *pass = NULL;
	int rc = -1;

	if (!u) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		snprintf(err, errlen, "url is not an absolute http:// or https:// URL");
		goto out;
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	curl_url_get(u, CURLUPART_PORT, &port, 0);
	curl_url_get(u, CURLUPART_USER, &user, 0);
	curl_url_get(u, CURLUPART_PASSWORD, &pass, 0);
	if (!scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
		snprintf(err, errlen, "url must start with http:// or https://");
		goto out;
	}
	if (!host || !*host) {
		snprintf(err, errlen, "url has no host");
		goto out;
	}
	if (user || pass) {
		/* Credentials in a URL end up in logs and process listings. */
		snprintf(err, errlen, "url must not hold a user or password: "
			 "use bearer_token_file or basic_auth_file");
		goto out;
	}
	snprintf(c->origin, sizeof c->origin, "%s://%.300s%s%s", scheme, host, port ? ":" : "",
		 port ? port : "");
	c->plain = strcmp(scheme, "http") == 0;
	rc = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(user);
	curl_free(pass);
	curl_url_cleanup(u);
	return rc;
}

/* Keeps at most max_response bytes; past that, stops the transfer (the status
 * line and headers have arrived, so the outcome is known). */
static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct httpc *c = ud;
	size_t n = size * nmemb;
	size_t room = (size_t)c->max_response - c->resp_len;
	size_t take = n < room ? n : room;

	if (c->resp_len + take > c->resp_cap) {
		size_t cap = c->resp_cap ? c->resp_cap : 4096;
		while (cap < c->resp_len + take)
			cap *= 2;
		if (cap > c->max_response)
			cap = (size_t)c->max_response;
		uint8_t *p = realloc(c->resp, cap);
		if (!p) {
			c->truncated = true;
			return 0;
		}
		c->resp = p;
		c->resp_cap = cap;
	}
	memcpy(c->resp + c->resp_len, data, take);
	c->resp_len += take;
	if (take < n) {
		c->truncated = true;
		return 0;
	}
	return n;
}

#define SET(opt, val)                                                       \
	do {                                                                \
		if (curl_easy_setopt(c->easy, opt, val) != CURLE_OK) {      \
			snprintf(err, errlen, "libcurl refused %s", #opt);  \
			goto fail;                                          \
		}                                                           \
	} while (0)

int httpc__open(const struct httpc_options *o, struct httpc **out, char *err, size_t errlen)
{
	struct httpc *c = calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (global_init() != 0) {
		snprintf(err, errlen, "curl_global_init failed");
		free(c);
		return -1;
	}
	if (check_url(c, o->url, err, errlen) != 0)
		goto fail;
	c->max_response = o->max_response_bytes ? o->max_response_bytes : 65536;
	c->easy = curl_easy_init();
	if (!c->easy) {
		snprintf(err, errlen, "curl_easy_init failed");
		goto fail;
	}
	SET(CURLOPT_URL, o->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
	SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (o->ca_file)
		SET(CURLOPT_CAINFO, o->ca_file);
	if (o->cert_file) {
		SET(CURLOPT_SSLCERT, o->cert_file);
		SET(CURLOPT_SSLKEY, o->key_file);
	}
	if (o->bearer) {
		SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		SET(CURLOPT_XOAUTH2_BEARER, o->bearer);
	} else if (o->user) {
		SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		SET(CURLOPT_USERNAME, o->user);
		SET(CURLOPT_PASSWORD, o->password ? o->password : "");
	}
	SET(CURLOPT_NOSIGNAL, 1L);   /* many threads; timeouts must not use SIGALRM */
	SET(CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)o->connect_timeout_ms);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_USERAGENT, "crashgate/0.1");
	SET(CURLOPT_ERRORBUFFER, c->errbuf);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, c);
	SET(CURLOPT_POST, 1L);
	*out = c;
	return 0;
fail:
	if (c->easy)
		curl_easy_cleanup(c->easy);
	free(c);
	global_cleanup();
	return -1;
}

#undef SET

void httpc__close(struct httpc *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->easy);
	free(c->resp);
	free(c);
	global_cleanup();
}

const char *httpc__origin(const struct httpc *c)
{
	return c->origin;
}

bool httpc__is_plain(const struct httpc *c)
{
	return c->plain;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void httpc__post(struct httpc *c, const struct curl_slist *headers, const void *body, size_t len,
		 struct httpc_response *r)
{
	memset(r, 0, sizeof *r);
	c->resp_len = 0;
	c->truncated = false;
	c->errbuf[0] = '\0';

	/* libcurl takes a non-const list but only reads it. */
	curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)headers);
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);

	uint64_t t0 = now_ms();
	CURLcode rc = curl_easy_perform(c->easy);
	r->elapsed_ms = now_ms() - t0;
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &r->code);
	/* Our own stop at max_response is not a failure: the status is known. */
	if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && c->truncated && r->code >= 200)) {
		r->code = 0;
		r->transport_error = (int)rc;
		snprintf(r->error, sizeof r->error, "%s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
		size_t n = strlen(r->error);
		while (n && (r->error[n - 1] == '\n' || r->error[n - 1] == '\r'))
			r->error[--n] = '\0';
	}
	r->body = c->resp;
	r->body_len = c->resp_len;
	r->truncated = c->truncated;
	/* Nothing of this request may be read after it returns. */
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, NULL);
}

char *httpc__header(struct httpc *c, const char *name, char *buf, size_t len)
{
	struct curl_header *h = NULL;

	if (!len)
		return buf;
	buf[0] = '\0';
	if (curl_easy_header(c->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h || !h->value)
		return buf;
	/* The last one when the header is repeated. */
	if (h->amount > 1 && curl_easy_header(c->easy, name, h->amount - 1, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return buf;
	const char *v = h->value;
	while (*v == ' ' || *v == '\t')
		v++;
	size_t n = strlen(v);
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
		n--;
	if (n >= len)
		n = len - 1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return buf;
}

int64_t httpc__parse_retry_after(const char *v, time_t now)
{
	const char *p = v;
	uint64_t ms = 0;

	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p)
		return -1;
	if (isdigit((unsigned char)*p)) {
		/* delta-seconds; a fraction (Sentry sends them) rounds up */
		uint64_t s = 0;
		while (isdigit((unsigned char)*p)) {
			if (s < HTTPC_MAX_RETRY_AFTER_MS)
				s = s * 10 + (uint64_t)(*p - '0');
			p++;
		}
		bool frac = false;
		if (*p == '.') {
			p++;
			if (!isdigit((unsigned char)*p))
				return -1;
			while (isdigit((unsigned char)*p))
				frac |= *p++ != '0';
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p)
			return -1;
		ms = s * 1000 + (frac ? 1000 : 0);
	} else {
		time_t t = curl_getdate(p, NULL);
		if (t == (time_t)-1)
			return -1;
		ms = t > now ? (uint64_t)(t - now) * 1000 : 0;
	}
	return (int64_t)(ms > HTTPC_MAX_RETRY_AFTER_MS ? HTTPC_MAX_RETRY_AFTER_MS : ms);
}

char *httpc__snippet(const struct httpc_response *r, char *buf, size_t len)
{
	size_t n = r->body_len < 100 ? r->body_len : 100;
	if (n >= len)
		n = len - 1;
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = r->body[i];
		buf[i] = ch == '\t' || ch == '\r' || ch == '\n' ? ' ' : ch >= 0x20 && ch < 0x7f ? (char)ch : '.';
	}
	while (n && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return buf;
}

void httpc__result(struct httpc *c, const struct httpc_response *r, struct cg_flush_result *out)
{
	char snip[128];
	long code = r->code;

	out->retry_after_ms = 0;
	if (r->transport_error) {
		out->status = CG_FLUSH_RETRY;
		snprintf(out->reason, sizeof out->reason, "POST to %.100s failed: %.120s", c->origin, r->error);
		return;
	}
	httpc__snippet(r, snip, sizeof snip);
	if (code >= 200 && code < 300) {
		out->status = CG_FLUSH_OK;
		snprintf(out->reason, sizeof out->reason, "HTTP %ld", code);
		return;
	}
	if (code == 408 || code == 429 || (code >= 500 && code < 600)) {
		char ra[128];
		out->status = CG_FLUSH_RETRY;
		int64_t ms = httpc__parse_retry_after(httpc__header(c, "Retry-After", ra, sizeof ra), time(NULL));
		if (ms > 0)
			out->retry_after_ms = (uint64_t)ms;
	} else if ((code >= 300 && code < 500)) {
		out->status = CG_FLUSH_DROP;
		if (code < 400) {
			snprintf(out->reason, sizeof out->reason,
				 "HTTP %ld: redirects are not followed, point url at the final location", code);
			return;
		}
	} else {
		out->status = CG_FLUSH_RETRY;   /* not HTTP as we know it: maybe a proxy hiccup */
	}
	snprintf(out->reason, sizeof out->reason, "HTTP %ld%s%s", code, snip[0] ? ": " : "", snip);
}

void httpc__buf_put(struct httpc_buf *b, const void *p, size_t n)
{
	if (b->oom)
		return;
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2) {
				b->oom = true;
				return;
			}
			cap *= 2;
		}
		uint8_t *q = realloc(b->p, cap);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

void httpc__buf_printf(struct httpc_buf *b, const char *fmt, ...)
{
	char small[512];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = true;
		return;
	}
	if ((size_t)n < sizeof small) {
		httpc__buf_put(b, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		b->oom = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	httpc__buf_put(b, big, (size_t)n);
	free(big);
}

int httpc__add_header(struct curl_slist **list, const char *name, const char *value)
{
	char line[1024];

	if (strpbrk(value, "\r\n"))
		return -1;
	int n = snprintf(line, sizeof line, "%s: %s", name, value);
	if (n < 0 || (size_t)n >= sizeof line)
		return -1;
	struct curl_slist *l = curl_slist_append(*list, line);
	if (!l)
		return -1;
	*list = l;
	return 0;
}
