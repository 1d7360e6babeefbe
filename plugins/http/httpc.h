/*
 * A small HTTP POST client over libcurl, shared by the `http` and `sentry`
 * output plugins (each links its own copy: plugins/sentry/CMakeLists.txt
 * compiles this file too). It holds what both need and nothing
 * plugin-specific: one reused connection per upstream, TLS verification that
 * cannot be turned off, no redirects, a bounded response body, and the
 * mapping of a response to OK / RETRY / DROP (SPEC §8).
 *
 * Secrets handed to httpc__open() (bearer token, password) are copied into
 * libcurl; the caller may wipe and free its own copies as soon as it returns.
 * Nothing here logs or puts a URL's path or query, a header value or a
 * credential into an error text: only the origin (scheme://host:port).
 */
#ifndef CG_PLUGIN_HTTPC_H
#define CG_PLUGIN_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#include "crashgate/plugin.h"

/* The longest wait a Retry-After or rate limit header may ask for; beyond
 * it the upstream is treated as asking for a day (a typo or a hostile
 * header must not park a region for years). */
#define HTTPC_MAX_RETRY_AFTER_MS (24ull * 3600 * 1000)

struct httpc;

struct httpc_options {
	const char *url;              /* http:// or https://, no user:password@ */
	const char *ca_file;          /* PEM bundle; NULL = the system store */
	const char *cert_file;        /* client certificate (PEM), with key_file; or NULL */
	const char *key_file;
	const char *bearer;           /* Authorization: Bearer; NULL = none */
	const char *user;             /* Authorization: Basic, with password; NULL = none */
	const char *password;
	uint64_t timeout_ms;          /* the whole request */
	uint64_t connect_timeout_ms;
	uint64_t max_response_bytes;  /* response body kept; the transfer stops there */
};

struct httpc_response {
	long code;                    /* final HTTP status; 0 when none arrived */
	int transport_error;          /* CURLcode; 0 when a status arrived */
	char error[CURL_ERROR_SIZE];  /* why the transport failed, "" otherwise */
	const uint8_t *body;          /* first max_response_bytes of the body; owned by */
	size_t body_len;              /* the client, valid until its next post or close */
	bool truncated;               /* the body was longer and was not read whole */
	uint64_t elapsed_ms;
};

/* A growable byte buffer for request bodies; free with free(b.p). */
struct httpc_buf {
	uint8_t *p;
	size_t len, cap;
	bool oom;                     /* an append failed: the content is incomplete */
};

/*
 * Checks the URL (scheme http or https, a host, no credentials in it) and
 * makes the client. Calls curl_global_init(), balanced by httpc__close().
 * Returns 0, or -1 with a message in err.
 */
int httpc__open(const struct httpc_options *o, struct httpc **out, char *err, size_t errlen);

/* Frees the client and its connection; NULL is a no-op. */
void httpc__close(struct httpc *c);

/* "scheme://host[:port]" of the URL, safe to log (no path, query or user). */
const char *httpc__origin(const struct httpc *c);

/* True when the URL is plain http:// (credentials would travel in clear). */
bool httpc__is_plain(const struct httpc *c);

/*
 * One POST of len bytes at body (the caller keeps ownership of both body and
 * headers; libcurl reads them only during the call). Always fills *r; never
 * follows a redirect.
 */
void httpc__post(struct httpc *c, const struct curl_slist *headers, const void *body, size_t len,
		 struct httpc_response *r);

/*
 * Value of a response header of the last post (last one when repeated),
 * trimmed and cut to len - 1 bytes; "" when absent. Returns buf.
 */
char *httpc__header(struct httpc *c, const char *name, char *buf, size_t len);

/*
 * Retry-After: delta-seconds ("7", a fraction rounds up) or an HTTP-date,
 * relative to now. Returns the wait in ms, capped at HTTPC_MAX_RETRY_AFTER_MS,
 * or -1 when the value is neither.
 */
int64_t httpc__parse_retry_after(const char *v, time_t now);

/*
 * The generic mapping of SPEC §8: 2xx OK; no response, 408, 429, 5xx RETRY
 * (with the Retry-After of the last post); 3xx (not followed) and other 4xx
 * DROP with "HTTP 400: <first 100 bytes of the body, printable>"; anything
 * else RETRY.
 */
void httpc__result(struct httpc *c, const struct httpc_response *r, struct cg_flush_result *out);

/* The first up to 100 bytes of the body, non-printable bytes shown as '.',
 * whitespace as ' '; into buf (at least 101 bytes). Returns buf. */
char *httpc__snippet(const struct httpc_response *r, char *buf, size_t len);

/* Append n bytes / a formatted string / a header line ("Name: value",
 * rejecting CR and LF in the value so no header can be smuggled in). */
void httpc__buf_put(struct httpc_buf *b, const void *p, size_t n);
void httpc__buf_printf(struct httpc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int httpc__add_header(struct curl_slist **list, const char *name, const char *value);

#endif
