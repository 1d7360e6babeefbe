/*
 * crashgatectl: the operator's tool (SPEC §10).
 *
 * It talks to the running gateway's admin API, found from the gateway's own
 * YAML (-c FILE: admin.listen and admin.token_file) or from --url and
 * --token-file. Where there is no API to talk to (no admin section in the
 * YAML, --data-dir, --offline, or a gateway that does not answer) it reads
 * the store directly as a RocksDB secondary instance, read-only: list, show,
 * download, signatures and queue still work when the daemon is down, retry
 * leaves a request the daemon picks up when it runs again, and purge, which
 * writes, refuses.
 *
 * health and backup need the API too.
 *
 * Exit codes: 0 ok; 1 error; 2 usage; 3 bad configuration; 4 not found;
 * 5 the gateway cannot be reached; 6 the token was refused; 7 not confirmed.
 */
#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "forward.h"
#include "plugin.h"
#include "record.h"
#include "store.h"

enum {
	EX_OK = 0, EX_ERR = 1, EX_USAGE = 2, EX_CONFIG = 3, EX_NOTFOUND = 4,
	EX_UNREACHABLE = 5, EX_TOKEN = 6, EX_DECLINED = 7,
};

struct ctl {
	bool json, yes, ready;
	long limit;                        /* list: at most this many (0: all) */
	long page;                         /* dumps per API request (1..1000) */
	struct cg_record_filter f;
	const char *output;                /* download -o */
	struct cg_config *cfg;             /* from -c, when given */
	/* the admin API */
	char base[300];                    /* http://host:port, no trailing slash */
	char *token;
	CURL *curl;
	/* the store, read-only */
	const char *data_dir;
	struct cg_store *st;
	char gateway[CG_DEVICE_ID_MAX + 1];
	char scratch[64];
};

/* ---- help ---- */

static const struct {
	const char *name, *args, *summary, *details;
} commands[] = {
	{ "list", "[FILTERS] [--limit N]", "dumps the gateway holds, oldest first",
	  "Stored dumps, then those still being received (status open).\n"
	  "FILTERS: --device ID  --group NAME  --region NAME  --signature HEX16\n"
	  "         --status open|stored|forwarded|throttled|rejected|expired|dead_letter\n"
	  "         --since TIME  --until TIME   (RFC 3339, e.g. 2026-11-23T08:00:00Z)\n" },
	{ "show", "ID", "one dump's record: device, status, signature, crash (PC, LR, reason)",
	  "ID is the stable id (GATEWAY/DEVICE/DUMP_ID/RECEIVED_MS), DEVICE/DUMP_ID, or the\n"
	  "sequence number.\n" },
	{ "download", "ID [-o FILE]", "the dump's bytes, byte for byte as the device sent them",
	  "Written to FILE (replaced only once the whole dump arrived), else to stdout.\n"
	  "Exit 4 when the dump is unknown or its bytes are no longer kept (throttled,\n"
	  "retention, eviction).\n" },
	{ "signatures", "", "crash groups: count, throttled, devices, first and last seen, reason", "" },
	{ "queue", "", "per upstream: dumps waiting, bytes, oldest age, dead letters, last error", "" },
	{ "retry", "UPSTREAM [SEQ]", "send dead-letter batches again (all, or the one starting at SEQ)",
	  "Without the API the request is left in data_dir/retry/ for the daemon.\n" },
	{ "purge", "ID... | FILTERS [--yes]", "delete dumps from the gateway (records and bytes)",
	  "Lists what it will delete and asks before deleting, unless --yes. FILTERS as\n"
	  "for list; at least one is needed. Only dumps present when it asked are\n"
	  "deleted. Needs the running gateway (the API). Exit 7 when not confirmed.\n" },
	{ "health", "[--ready]", "is the gateway alive (/healthz)? with --ready: connected to the broker (/readyz)",
	  "Exit 0 when it is, 1 when it answers otherwise (the reason on stderr), 5 when\n"
	  "nothing answers. Made for container HEALTHCHECKs and monitoring scripts: it\n"
	  "finds the endpoint from -c FILE, so moving admin.listen needs no other change.\n" },
	{ "backup", "", "a consistent copy of the store, taken while the gateway runs",
	  "The daemon writes a RocksDB checkpoint to data_dir/backups/TIMESTAMP (hard\n"
	  "links: quick, little space until compaction rewrites files) and prints its\n"
	  "path. Copy that directory off the box, then delete it. To restore: stop the\n"
	  "gateway, put the copy in place of data_dir/store, start it.\n" },
	{ "check-config", "[FILE]", "validate a configuration file, its plugins and their keys",
	  "FILE defaults to -c FILE. Exit 3 with FILE:LINE:COL: KEY: why, when it is bad.\n" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: crashgatectl [-c FILE | --url URL [--token-file F] | --data-dir DIR] [--json]\n"
		     "                    COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].summary);
	fprintf(out,
		"\nwhere the gateway is:\n"
		"  -c, --config FILE   the gateway's YAML: admin.listen and admin.token_file\n"
		"                      (or its data_dir when it has no admin section)\n"
		"  --url URL           the admin API, e.g. http://127.0.0.1:8080\n"
		"  --token-file F      the bearer token for --url (first line of F)\n"
		"  --data-dir DIR      read the store in DIR directly (read-only)\n"
		"  --offline           with -c: read the store even if the API answers\n"
		"  --json              JSON for scripts instead of tables\n"
		"\n'crashgatectl COMMAND --help' tells more about a command.\n"
		"exit: 0 ok, 1 error, 2 usage, 3 bad configuration, 4 not found,\n"
		"      5 gateway unreachable, 6 token refused, 7 not confirmed\n");
}

static int command_help(const char *cmd, FILE *out)
{
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(commands[i].name, cmd) == 0) {
			fprintf(out, "usage: crashgatectl [WHERE] [--json] %s %s\n\n%s.\n%s%s", cmd,
				commands[i].args, commands[i].summary, commands[i].details[0] ? "\n" : "",
				commands[i].details);
			fprintf(out, "\nWHERE: -c FILE | --url URL [--token-file F] | --data-dir DIR"
				     " (crashgatectl --help)\n");
			return EX_OK;
		}
	}
	fprintf(stderr, "crashgatectl: unknown command '%s'\n", cmd);
	usage(stderr);
	return EX_USAGE;
}

/* ---- the admin API ---- */

struct resp {
	long status;
	char *body;
	size_t n;
	FILE *sink;                        /* a 200's body goes here when set */
	bool sink_failed;
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *ctx)
{
	struct resp *r = ctx;
	size_t n = size * nmemb;
	if (r->sink && r->status == 200) {
		if (fwrite(p, 1, n, r->sink) != n) {
			r->sink_failed = true;
			return 0;
		}
		return n;
	}
	if (r->n + n > (64u << 20))        /* no JSON answer of ours is that large */
		return 0;
	char *b = realloc(r->body, r->n + n + 1);
	if (!b)
		return 0;
	memcpy(b + r->n, p, n);
	r->body = b;
	r->n += n;
	b[r->n] = '\0';
	return n;
}

/* The status line arrives before any body byte: decide there where the
 * body goes. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ctx)
{
	struct resp *r = ctx;
	size_t n = size * nmemb;
	long code;
	if (n > 9 && strncmp(p, "HTTP/", 5) == 0 && sscanf(p, "HTTP/%*s %ld", &code) == 1)
		r->status = code;
	return n;
}

/* One request. Returns EX_OK when an answer came (r->status says which),
 * EX_UNREACHABLE when none did. */
static int http(struct ctl *c, const char *method, const char *path, struct resp *r)
{
	char url[4096], auth[600] = "";
	snprintf(url, sizeof url, "%s%s", c->base, path);
	if (!c->curl && !(c->curl = curl_easy_init()))
		return EX_ERR;
	CURL *h = c->curl;
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
	struct curl_slist *hdr = NULL;
	if (c->token) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
		hdr = curl_slist_append(hdr, auth);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	/* A large download may take long; a stalled one may not. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	CURLcode rc = curl_easy_perform(h);
	if (auth[0])
		explicit_bzero(auth, sizeof auth);
	curl_slist_free_all(hdr);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->sink_failed) {
		fprintf(stderr, "crashgatectl: writing %s: %s\n", c->output ? c->output : "stdout", strerror(errno));
		return EX_ERR;
	}
	if (rc != CURLE_OK) {
		if (r->status)
			fprintf(stderr, "crashgatectl: %s %s: %s\n", method, url, curl_easy_strerror(rc));
		return r->status ? EX_ERR : EX_UNREACHABLE;
	}
	return EX_OK;
}

/* Map an answer that is not a success to an exit code, saying why. */
static int api_error(const struct resp *r)
{
	json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
	const char *why = j ? json_string_value(json_object_get(j, "error")) : NULL;
	char text[300];
	snprintf(text, sizeof text, "%s", why ? why : r->body ? r->body : "no answer");
	text[strcspn(text, "\n")] = '\0';
	json_decref(j);
	switch (r->status) {
	case 401:
		fprintf(stderr, "crashgatectl: the gateway refused the token (401): give the right one "
				"with admin.token_file or --token-file\n");
		return EX_TOKEN;
	case 404:
	case 410:
		fprintf(stderr, "crashgatectl: %s\n", text);
		return EX_NOTFOUND;
	case 400:
		fprintf(stderr, "crashgatectl: %s\n", text);
		return EX_USAGE;
	default:
		fprintf(stderr, "crashgatectl: the gateway answered %ld: %s\n", r->status, text);
		return EX_ERR;
	}
}

/* GET/POST/DELETE a path and parse the JSON answer into *out. */
static int api_json(struct ctl *c, const char *method, const char *path, json_t **out)
{
	struct resp r = { 0 };
	int rc = http(c, method, path, &r);
	if (rc == EX_OK && (r.status < 200 || r.status > 299))
		rc = api_error(&r);
	if (rc == EX_OK) {
		json_error_t je;
		*out = json_loads(r.body ? r.body : "", 0, &je);
		if (!*out) {
			fprintf(stderr, "crashgatectl: the gateway's answer is not JSON: %s\n", je.text);
			rc = EX_ERR;
		}
	}
	free(r.body);
	return rc;
}

static void add_param(struct ctl *c, char *q, size_t cap, const char *k, const char *v)
{
	if (!v)
		return;
	char *e = curl_easy_escape(c->curl, v, 0);
	size_t n = strlen(q);
	snprintf(q + n, cap - n, "%s%s=%s", strchr(q, '?') ? "&" : "?", k, e ? e : "");
	curl_free(e);
}

/* The query string of c->f, appended to q. */
static void filter_query(struct ctl *c, char *q, size_t cap, const struct cg_record_filter *f)
{
	char t[40];
	add_param(c, q, cap, "device", f->device);
	add_param(c, q, cap, "group", f->group);
	add_param(c, q, cap, "region", f->region);
	add_param(c, q, cap, "signature", f->signature);
	add_param(c, q, cap, "status", f->status);
	if (f->has_since) {
		cg_record_time(f->since, t, sizeof t);
		add_param(c, q, cap, "since", t);
	}
	if (f->has_until) {
		cg_record_time(f->until, t, sizeof t);
		add_param(c, q, cap, "until", t);
	}
	if (f->through) {
		snprintf(t, sizeof t, "%" PRIu64, f->through);
		add_param(c, q, cap, "through", t);
	}
}

static char *escaped(struct ctl *c, const char *s)
{
	if (!c->curl)
		c->curl = curl_easy_init();
	return c->curl ? curl_easy_escape(c->curl, s, 0) : NULL;
}

/* ---- the store, read-only ---- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(path);
}

static int open_store(struct ctl *c)
{
	char path[PATH_MAX], err[1024];
	snprintf(path, sizeof path, "%s/store", c->data_dir);
	snprintf(c->scratch, sizeof c->scratch, "/tmp/crashgatectl.XXXXXX");
	if (!mkdtemp(c->scratch)) {
		perror("crashgatectl: mkdtemp");
		c->scratch[0] = '\0';
		return EX_ERR;
	}
	if (cg_store_open_secondary(path, c->scratch, &c->st, err, sizeof err) != CG_OK) {
		fprintf(stderr, "crashgatectl: cannot open the store: %s\n", err);
		return EX_ERR;
	}
	cg_store_refresh(c->st);
	if (cg_store_meta_get(c->st, "gateway_id", c->gateway, sizeof c->gateway) != CG_OK)
		snprintf(c->gateway, sizeof c->gateway, "gateway");
	return EX_OK;
}

struct scan {
	struct ctl *c;
	json_t *rows;
};

static int collect(void *ctx, const struct cg_dump_record *r)
{
	struct scan *s = ctx;
	if (!cg_record_filter_match(&s->c->f, r))
		return 0;
	if (s->c->limit && (long)json_array_size(s->rows) >= s->c->limit)
		return 1;
	json_array_append_new(s->rows, cg_record_json(s->c->gateway, s->c->st, r));
	return 0;
}

/* ---- the commands, each over the API (c->base set) or the store ---- */

static bool api(const struct ctl *c)
{
	return c->base[0] != '\0';
}

/* GET one page of /v1/dumps (the query in q) and append its dumps to rows;
 * *next is the answer's `next` (0: the last page). */
static int fetch_page(struct ctl *c, const char *q, json_t *rows, uint64_t *next)
{
	json_t *j = NULL;
	int rc = api_json(c, "GET", q, &j);
	if (rc == EX_OK) {
		json_array_extend(rows, json_object_get(j, "dumps"));
		json_t *n = json_object_get(j, "next");
		if (next)
			*next = json_is_integer(n) ? (uint64_t)json_integer_value(n) : 0;
	}
	json_decref(j);
	return rc;
}

/* Every dump matching c->f (all pages), then the open ones unless a status
 * other than open was asked for. */
static int get_dumps(struct ctl *c, json_t **out)
{
	bool open_only = c->f.status && strcmp(c->f.status, "open") == 0;
	bool with_open = !c->f.status || open_only;
	json_t *rows = json_array();
	if (!api(c)) {
		struct scan s = { c, rows };
		if (!open_only)
			cg_store_scan_records_from(c->st, c->f.after + 1, collect, &s);
		if (with_open) {
			json_t *o = cg_open_dumps_json(c->st, c->gateway, &c->f);
			json_array_extend(rows, o);
			json_decref(o);
		}
		*out = rows;
		return EX_OK;
	}
	uint64_t after = 0;
	for (bool more = !open_only; more;) {
		char q[2048] = "/v1/dumps";
		filter_query(c, q, sizeof q, &c->f);
		char n[64];
		long want = c->limit ? c->limit - (long)json_array_size(rows) : c->page;
		snprintf(n, sizeof n, "%ld", want > c->page ? c->page : want);
		add_param(c, q, sizeof q, "limit", n);
		if (after) {
			snprintf(n, sizeof n, "%" PRIu64, after);
			add_param(c, q, sizeof q, "after", n);
		}
		uint64_t next = 0;
		int rc = fetch_page(c, q, rows, &next);
		if (rc != EX_OK) {
			json_decref(rows);
			return rc;
		}
		more = next && (!c->limit || (long)json_array_size(rows) < c->limit);
		after = next;
	}
	if (with_open && (!c->limit || (long)json_array_size(rows) < c->limit)) {
		struct cg_record_filter of = { .device = c->f.device, .group = c->f.group,
					       .region = c->f.region, .status = "open" };
		char q[2048] = "/v1/dumps";
		filter_query(c, q, sizeof q, &of);
		add_param(c, q, sizeof q, "limit", "1000");
		int rc = fetch_page(c, q, rows, NULL);
		if (rc != EX_OK) {
			json_decref(rows);
			return rc;
		}
	}
	while (c->limit && (long)json_array_size(rows) > c->limit)
		json_array_remove(rows, json_array_size(rows) - 1);
	*out = rows;
	return EX_OK;
}

static int get_dump(struct ctl *c, const char *id, json_t **out)
{
	if (api(c)) {
		char *e = escaped(c, id), path[1200];
		snprintf(path, sizeof path, "/v1/dumps/%s", e ? e : id);
		curl_free(e);
		return api_json(c, "GET", path, out);
	}
	struct cg_dump_record *r = malloc(sizeof *r);
	if (!r || cg_record_find(c->st, c->gateway, id, r) != CG_OK) {
		free(r);
		fprintf(stderr, "crashgatectl: no dump '%s'\n", id);
		return EX_NOTFOUND;
	}
	*out = cg_record_json(c->gateway, c->st, r);
	free(r);
	return EX_OK;
}

static int download(struct ctl *c, const char *id)
{
	char tmp[PATH_MAX] = "";
	FILE *f = stdout;
	if (c->output) {   /* the file appears whole or not at all */
		snprintf(tmp, sizeof tmp, "%s.partial", c->output);
		if (!(f = fopen(tmp, "wb"))) {
			fprintf(stderr, "crashgatectl: %s: %s\n", tmp, strerror(errno));
			return EX_ERR;
		}
	}
	int rc;
	if (api(c)) {
		char *e = escaped(c, id), path[1200];
		snprintf(path, sizeof path, "/v1/dumps/%s/raw", e ? e : id);
		curl_free(e);
		struct resp r = { .sink = f };
		rc = http(c, "GET", path, &r);
		if (rc == EX_OK && r.status != 200)
			rc = api_error(&r);
		free(r.body);
	} else {
		struct cg_dump_record *r = malloc(sizeof *r);
		uint8_t *body = NULL;
		size_t len = 0;
		rc = EX_OK;
		if (!r || cg_record_find(c->st, c->gateway, id, r) != CG_OK) {
			fprintf(stderr, "crashgatectl: no dump '%s'\n", id);
			rc = EX_NOTFOUND;
		} else if (r->status == CG_DUMP_THROTTLED || r->body_deleted ||
			   cg_store_get_body(c->st, r->seq, &body, &len) != CG_OK) {
			fprintf(stderr, "crashgatectl: the dump's bytes are not kept\n");
			rc = EX_NOTFOUND;
		} else if (fwrite(body, 1, len, f) != len) {
			fprintf(stderr, "crashgatectl: writing: %s\n", strerror(errno));
			rc = EX_ERR;
		}
		free(body);
		free(r);
	}
	if (f != stdout) {
		if (fflush(f) != 0 || fsync(fileno(f)) != 0)
			rc = rc ? rc : EX_ERR;
		fclose(f);
		if (rc == EX_OK && rename(tmp, c->output) != 0) {
			fprintf(stderr, "crashgatectl: %s: %s\n", c->output, strerror(errno));
			rc = EX_ERR;
		}
		if (rc != EX_OK)
			unlink(tmp);
	} else if (fflush(stdout) != 0) {
		rc = rc ? rc : EX_ERR;
	}
	return rc;
}

static int get_list(struct ctl *c, const char *path, const char *key, json_t **out)
{
	json_t *j = NULL;
	int rc = api_json(c, "GET", path, &j);
	if (rc == EX_OK) {
		*out = json_incref(json_object_get(j, key));
		json_decref(j);
		if (!json_is_array(*out)) {
			json_decref(*out);
			fprintf(stderr, "crashgatectl: the gateway's answer has no %s\n", key);
			return EX_ERR;
		}
	}
	return rc;
}

static int get_signatures(struct ctl *c, json_t **out)
{
	if (api(c))
		return get_list(c, "/v1/signatures", "signatures", out);
	*out = cg_signatures_json(c->st);
	return EX_OK;
}

static int get_queue(struct ctl *c, json_t **out)
{
	if (api(c))
		return get_list(c, "/v1/upstreams", "upstreams", out);
	if (!c->cfg) {
		fprintf(stderr, "crashgatectl: queue needs the configuration (-c FILE) to know the upstreams\n");
		return EX_USAGE;
	}
	*out = cg_forward_queue_json(c->cfg, c->st);
	return EX_OK;
}

static int retry(struct ctl *c, const char *upstream, const char *seq)
{
	uint64_t only = 0;
	if (seq) {
		char *end;
		only = strtoull(seq, &end, 10);
		if (!*seq || *end || !only) {
			fprintf(stderr, "crashgatectl: SEQ is a sequence number (see queue)\n");
			return EX_USAGE;
		}
	}
	json_t *asked = NULL;
	int rc;
	if (api(c)) {
		char *e = escaped(c, upstream), path[600];
		snprintf(path, sizeof path, "/v1/upstreams/%s/retry", e ? e : upstream);
		curl_free(e);
		if (seq)
			add_param(c, path, sizeof path, "seq", seq);
		json_t *j = NULL;
		rc = api_json(c, "POST", path, &j);
		if (rc == EX_OK)
			asked = json_incref(json_object_get(j, "batches"));
		json_decref(j);
	} else {
		if (!c->cfg) {
			fprintf(stderr, "crashgatectl: retry needs -c FILE (the upstreams and data_dir)\n");
			return EX_USAGE;
		}
		char err[512];
		asked = json_array();
		rc = cg_forward_request_retry(c->cfg, c->st, upstream, only, asked, err, sizeof err);
		if (rc == CG_ERR_NOT_FOUND) {
			fprintf(stderr, "crashgatectl: %s in %s\n", err, c->cfg->path);
			rc = EX_NOTFOUND;
		} else if (rc != CG_OK) {
			fprintf(stderr, "crashgatectl: %s\n", err);
			rc = EX_ERR;
		} else if (!json_array_size(asked)) {
			fprintf(stderr, "crashgatectl: %s has no dead-letter batch%s%s\n", upstream,
				seq ? " starting at " : "", seq ? seq : "");
			rc = EX_NOTFOUND;
		}
	}
	if (rc == EX_OK) {
		if (c->json) {
			json_t *o = json_pack("{s:s, s:O}", "upstream", upstream, "batches", asked);
			json_dumpf(o, stdout, JSON_INDENT(2));
			printf("\n");
			json_decref(o);
		} else {
			size_t i;
			json_t *s;
			json_array_foreach(asked, i, s)
				printf("%s: dead-letter batch %" JSON_INTEGER_FORMAT " queued to be sent again%s\n",
				       upstream, json_integer_value(s), api(c) ? "" : " (when the gateway runs)");
		}
	}
	json_decref(asked);
	return rc;
}

/* ---- printing ---- */

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "-";
}

static void print_dumps_to(FILE *out, json_t *rows)
{
	fprintf(out, "%-56s %-20s %-10s %9s %-24s %s\n", "ID", "DEVICE", "STATUS", "SIZE", "RECEIVED", "SIGNATURE");
	size_t i;
	json_t *r;
	json_array_foreach(rows, i, r) {
		char idbuf[80];
		const char *id = json_string_value(json_object_get(r, "id"));
		if (!id) {
			snprintf(idbuf, sizeof idbuf, "(open %s/%" JSON_INTEGER_FORMAT ")", str(r, "device"),
				 json_integer_value(json_object_get(r, "dump_id")));
			id = idbuf;
		}
		fprintf(out, "%-56s %-20s %-10s %9" JSON_INTEGER_FORMAT " %-24s %s\n", id, str(r, "device"),
		       str(r, "status"), json_integer_value(json_object_get(r, "size")), str(r, "received_at"),
		       str(r, "signature"));
	}
}

static void print_dumps(json_t *rows)
{
	print_dumps_to(stdout, rows);
}

static void print_record(json_t *o)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v) {
		if (json_is_object(v)) {
			printf("%s:\n", k);
			const char *k2;
			json_t *v2;
			json_object_foreach(v, k2, v2) {
				char *s = json_is_string(v2) ? NULL : json_dumps(v2, JSON_ENCODE_ANY);
				printf("  %-14s %s\n", k2, s ? s : json_string_value(v2));
				free(s);
			}
			continue;
		}
		char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY);
		printf("%-16s %s\n", k, s ? s : json_string_value(v));
		free(s);
	}
}

static void print_signatures(json_t *rows)
{
	printf("%-16s %7s %9s %7s %-24s %-24s %s\n", "SIGNATURE", "COUNT", "THROTTLED", "DEVICES",
	       "FIRST_SEEN", "LAST_SEEN", "REASON");
	size_t i;
	json_t *r;
	json_array_foreach(rows, i, r) {
		printf("%-16s %7" JSON_INTEGER_FORMAT " %9" JSON_INTEGER_FORMAT " %7" JSON_INTEGER_FORMAT
		       " %-24s %-24s %s\n", str(r, "signature"), json_integer_value(json_object_get(r, "count")),
		       json_integer_value(json_object_get(r, "throttled")),
		       json_integer_value(json_object_get(r, "devices")), str(r, "first_seen"),
		       str(r, "last_seen"), str(r, "reason"));
	}
}

static void print_queue(json_t *rows)
{
	printf("%-20s %-8s %-8s %7s %12s %10s %6s  %s\n", "UPSTREAM", "KIND", "REGION", "DEPTH", "BYTES",
	       "OLDEST_S", "DEAD", "LAST_ERROR / NEXT_RETRY");
	size_t i;
	json_t *r;
	json_array_foreach(rows, i, r) {
		json_t *age = json_object_get(r, "oldest_age_s");
		char ages[24] = "-";
		if (age)
			snprintf(ages, sizeof ages, "%" JSON_INTEGER_FORMAT, json_integer_value(age));
		const char *nr = json_string_value(json_object_get(r, "next_retry"));
		printf("%-20s %-8s %-8s %7" JSON_INTEGER_FORMAT " %12" JSON_INTEGER_FORMAT " %10s %6"
		       JSON_INTEGER_FORMAT "  %s%s%s\n", str(r, "upstream"), str(r, "kind"), str(r, "region"),
		       json_integer_value(json_object_get(r, "depth")),
		       json_integer_value(json_object_get(r, "bytes")), ages,
		       json_integer_value(json_object_get(r, "dead_letters")), str(r, "last_error"),
		       nr ? " / " : "", nr ? nr : "");
	}
}

static void emit(struct ctl *c, json_t *j, void (*table)(json_t *))
{
	if (c->json) {
		json_dumpf(j, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		table(j);
	}
}

/* ---- purge ---- */

static bool confirmed(size_t n)
{
	fprintf(stderr, "Delete %zu dump%s from the gateway (records and bytes)? This cannot be undone. [y/N] ",
		n, n == 1 ? "" : "s");
	fflush(stderr);
	char line[32];
	if (!fgets(line, sizeof line, stdin))
		return false;
	line[strcspn(line, "\r\n")] = '\0';
	return strcmp(line, "y") == 0 || strcmp(line, "Y") == 0 || strcmp(line, "yes") == 0;
}

static int purge(struct ctl *c, char **ids, int nids)
{
	if (!api(c)) {
		fprintf(stderr, "crashgatectl: purge needs the running gateway's admin API (the store is "
				"written only by the daemon): use -c FILE with an admin section, or --url\n");
		return EX_UNREACHABLE;
	}
	if (!nids && !cg_record_filter_any(&c->f)) {
		fprintf(stderr, "crashgatectl: purge needs dump ids or at least one filter "
				"(crashgatectl purge --help)\n");
		return EX_USAGE;
	}
	if (c->f.status && strcmp(c->f.status, "open") == 0) {
		fprintf(stderr, "crashgatectl: dumps being received cannot be purged; they expire after "
				"limits.reassembly_timeout\n");
		return EX_USAGE;
	}
	json_t *rows = json_array();
	int rc = EX_OK;
	for (int i = 0; i < nids && rc == EX_OK; i++) {
		json_t *r = NULL;
		rc = get_dump(c, ids[i], &r);
		if (rc == EX_OK)
			json_array_append_new(rows, r);
	}
	if (rc == EX_OK && !nids) {
		json_t *all = NULL;
		long lim = c->limit;
		c->limit = 0;   /* everything that matches */
		rc = get_dumps(c, &all);
		c->limit = lim;
		if (rc == EX_OK) {   /* committed dumps only: open ones are not purged */
			size_t i;
			json_t *r;
			json_array_foreach(all, i, r)
				if (strcmp(str(r, "status"), "open") != 0)
					json_array_append(rows, r);
			json_decref(all);
		}
	}
	if (rc != EX_OK) {
		json_decref(rows);
		return rc;
	}
	size_t n = json_array_size(rows);
	if (!n) {
		fprintf(stderr, "crashgatectl: no dump matches; nothing deleted\n");
		json_decref(rows);
		return EX_NOTFOUND;
	}
	if (!c->yes) {
		json_t *shown = json_array();
		for (size_t i = 0; i < n && i < 20; i++)
			json_array_append(shown, json_array_get(rows, i));
		print_dumps_to(stderr, shown);   /* the listing is part of the question */
		if (n > 20)
			fprintf(stderr, "... and %zu more\n", n - 20);
		json_decref(shown);
		if (!confirmed(n)) {
			fprintf(stderr, "crashgatectl: not confirmed; nothing deleted\n");
			json_decref(rows);
			return EX_DECLINED;
		}
	}
	/* Exactly what was listed and confirmed, by seq: nothing that arrived
	 * or changed while the question waited. */
	json_t *purged = json_array();
	size_t i = 0;
	while (i < n && rc == EX_OK) {
		char q[4096] = "/v1/dumps?seqs=";
		size_t len = strlen(q), in_req = 0;
		for (; i < n && in_req < 200; i++, in_req++) {
			json_t *s = json_object_get(json_array_get(rows, i), "seq");
			if (!json_is_integer(s)) {
				fprintf(stderr, "crashgatectl: the gateway's record has no seq\n");
				rc = EX_ERR;
				break;
			}
			len += (size_t)snprintf(q + len, sizeof q - len, "%s%" JSON_INTEGER_FORMAT, in_req ? "," : "",
						json_integer_value(s));
		}
		json_t *j = NULL;
		if (rc == EX_OK)
			rc = api_json(c, "DELETE", q, &j);
		if (rc == EX_OK)
			json_array_extend(purged, json_object_get(j, "purged"));
		json_decref(j);
	}
	if (c->json) {
		json_t *o = json_pack("{s:I, s:O}", "count", (json_int_t)json_array_size(purged), "purged", purged);
		json_dumpf(o, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(o);
	} else {
		printf("purged %zu dump%s\n", json_array_size(purged), json_array_size(purged) == 1 ? "" : "s");
	}
	json_decref(purged);
	json_decref(rows);
	return rc;
}

/* ---- where the gateway is ---- */

/* The API from the configuration's admin section: a wildcard listen
 * address is reached on loopback. */
static int api_from_config(struct ctl *c, bool want_token)
{
	const char *listen = c->cfg->admin.listen;
	const char *colon = strrchr(listen, ':');
	char host[256];
	snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
	if (strcmp(host, "0.0.0.0") == 0)
		snprintf(host, sizeof host, "127.0.0.1");
	snprintf(c->base, sizeof c->base, "http://%s:%s", host, colon + 1);
	if (want_token && c->cfg->admin.token_file && !c->token) {
		c->token = cg_read_secret_file(c->cfg->admin.token_file);
		if (!c->token) {
			fprintf(stderr, "crashgatectl: cannot read admin.token_file %s (%s): run as a user who "
					"may, or give --token-file\n", c->cfg->admin.token_file, strerror(errno));
			return EX_CONFIG;
		}
	}
	return EX_OK;
}

/* Does anything answer at c->base? (Before the command, so that reads can
 * fall back to the store when the daemon is down.) */
static bool api_answers(struct ctl *c)
{
	struct resp r = { 0 };
	int rc = http(c, "GET", "/healthz", &r);
	free(r.body);
	return rc == EX_OK && r.status == 200;
}

static int health(struct ctl *c)
{
	if (!api(c)) {
		fprintf(stderr, "crashgatectl: health needs the admin endpoint (an admin section in -c FILE, or --url)\n");
		return EX_CONFIG;
	}
	struct resp r = { 0 };
	const char *path = c->ready ? "/readyz" : "/healthz";
	int rc = http(c, "GET", path, &r);
	if (rc == EX_UNREACHABLE)
		fprintf(stderr, "crashgatectl: nothing answers at %s\n", c->base);
	else if (rc == EX_OK && r.status == 401)
		rc = api_error(&r);
	else if (rc == EX_OK && r.status != 200) {
		fprintf(stderr, "crashgatectl: %s: %ld %s", path, r.status, r.body ? r.body : "\n");
		rc = EX_ERR;
	} else if (rc == EX_OK && !c->json)
		printf("%s", r.body ? r.body : "ok\n");
	else if (rc == EX_OK)
		printf("{\"%s\": true}\n", c->ready ? "ready" : "alive");
	free(r.body);
	return rc;
}

static int backup(struct ctl *c)
{
	if (!api(c)) {
		fprintf(stderr, "crashgatectl: backup needs the running gateway's admin API (with the daemon "
				"stopped, copy data_dir/store as it is)\n");
		return EX_UNREACHABLE;
	}
	json_t *j = NULL;
	int rc = api_json(c, "POST", "/v1/backup", &j);
	if (rc == EX_OK && c->json) {
		json_dumpf(j, stdout, JSON_INDENT(2));
		printf("\n");
	} else if (rc == EX_OK) {
		printf("%s\n", str(j, "path"));
	}
	json_decref(j);
	return rc;
}

static int check_config(const char *path)
{
	char err[1024];
	struct cg_config *cfg = NULL;
	if (cg_config_load(path, &cfg, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		return EX_CONFIG;
	}
	if (cg_outputs_check(cfg, err, sizeof err) != 0) {   /* plugins and their keys */
		fprintf(stderr, "%s\n", err);
		cg_config_free(cfg);
		return EX_CONFIG;
	}
	printf("%s: ok\n", path);
	cg_config_free(cfg);
	return EX_OK;
}

static int run(struct ctl *c, const char *cmd, int argc, char **argv)
{
	const char *arg = argc > 0 ? argv[0] : NULL;
	json_t *j = NULL;
	int rc;
	if (strcmp(cmd, "list") == 0) {
		if ((rc = get_dumps(c, &j)) == EX_OK)
			emit(c, j, print_dumps);
	} else if (strcmp(cmd, "show") == 0) {
		if (!arg) {
			command_help(cmd, stderr);
			return EX_USAGE;
		}
		if ((rc = get_dump(c, arg, &j)) == EX_OK)
			emit(c, j, print_record);
	} else if (strcmp(cmd, "download") == 0) {
		if (!arg) {
			command_help(cmd, stderr);
			return EX_USAGE;
		}
		rc = download(c, arg);
	} else if (strcmp(cmd, "signatures") == 0) {
		if ((rc = get_signatures(c, &j)) == EX_OK)
			emit(c, j, print_signatures);
	} else if (strcmp(cmd, "queue") == 0) {
		if ((rc = get_queue(c, &j)) == EX_OK)
			emit(c, j, print_queue);
	} else if (strcmp(cmd, "retry") == 0) {
		if (!arg) {
			command_help(cmd, stderr);
			return EX_USAGE;
		}
		rc = retry(c, arg, argc > 1 ? argv[1] : NULL);
	} else if (strcmp(cmd, "health") == 0) {
		rc = health(c);
	} else if (strcmp(cmd, "backup") == 0) {
		rc = backup(c);
	} else {
		rc = purge(c, argv, argc);
	}
	json_decref(j);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_URL = 256, O_TOKEN, O_DATA, O_OFFLINE, O_YES, O_LIMIT, O_DEVICE, O_GROUP, O_REGION,
	       O_SIG, O_STATUS, O_SINCE, O_UNTIL, O_READY };
	static const struct option lo[] = {
		{ "config", 1, 0, 'c' }, { "url", 1, 0, O_URL }, { "token-file", 1, 0, O_TOKEN },
		{ "data-dir", 1, 0, O_DATA }, { "offline", 0, 0, O_OFFLINE }, { "json", 0, 0, 'j' },
		{ "output", 1, 0, 'o' }, { "yes", 0, 0, O_YES }, { "limit", 1, 0, O_LIMIT },
		{ "device", 1, 0, O_DEVICE }, { "group", 1, 0, O_GROUP }, { "region", 1, 0, O_REGION },
		{ "signature", 1, 0, O_SIG }, { "status", 1, 0, O_STATUS }, { "since", 1, 0, O_SINCE },
		{ "until", 1, 0, O_UNTIL }, { "ready", 0, 0, O_READY }, { "help", 0, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *cfg_path = NULL, *url = NULL, *token_file = NULL;
	bool offline = false, help = false;
	struct ctl c = { 0 };
	char ferr[200];
	int o;
	/* GNU getopt permutes: options may stand before or after the command. */
	while ((o = getopt_long(argc, argv, "c:jo:hy", lo, NULL)) != -1) {
		const char *fk = NULL;
		switch (o) {
		case 'c': cfg_path = optarg; break;
		case O_URL: url = optarg; break;
		case O_TOKEN: token_file = optarg; break;
		case O_DATA: c.data_dir = optarg; break;
		case O_OFFLINE: offline = true; break;
		case O_READY: c.ready = true; break;
		case 'j': c.json = true; break;
		case 'o': c.output = optarg; break;
		case 'y':
		case O_YES: c.yes = true; break;
		case 'h': help = true; break;
		case O_LIMIT: {
			char *end;
			c.limit = strtol(optarg, &end, 10);
			if (*end || c.limit < 1) {
				fprintf(stderr, "crashgatectl: --limit: a positive number\n");
				return EX_USAGE;
			}
			break;
		}
		case O_DEVICE: fk = "device"; break;
		case O_GROUP: fk = "group"; break;
		case O_REGION: fk = "region"; break;
		case O_SIG: fk = "signature"; break;
		case O_STATUS: fk = "status"; break;
		case O_SINCE: fk = "since"; break;
		case O_UNTIL: fk = "until"; break;
		default: usage(stderr); return EX_USAGE;
		}
		if (fk && cg_record_filter_set(&c.f, fk, optarg, ferr, sizeof ferr) != 0) {
			fprintf(stderr, "crashgatectl: --%s\n", ferr);
			return EX_USAGE;
		}
	}
	if (optind >= argc) {
		usage(help ? stdout : stderr);
		return help ? EX_OK : EX_USAGE;
	}
	const char *cmd = argv[optind++];
	if (strcmp(cmd, "help") == 0) {
		if (optind < argc)
			return command_help(argv[optind], stdout);
		usage(stdout);
		return EX_OK;
	}
	if (help)
		return command_help(cmd, stdout);
	bool known = false;
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		known |= strcmp(commands[i].name, cmd) == 0;
	if (!known) {
		fprintf(stderr, "crashgatectl: unknown command '%s'\n", cmd);
		usage(stderr);
		return EX_USAGE;
	}
	if (strcmp(cmd, "check-config") == 0) {
		const char *p = optind < argc ? argv[optind] : cfg_path;
		if (!p) {
			command_help(cmd, stderr);
			return EX_USAGE;
		}
		return check_config(p);
	}

	char err[1024];
	int rc = EX_OK;
	/* Pages of 1000, the API's most; CRASHGATECTL_PAGE_SIZE makes them
	 * smaller (the tests page through a few dumps with it). */
	c.page = 1000;
	const char *ps = getenv("CRASHGATECTL_PAGE_SIZE");
	if (ps && atol(ps) >= 1 && atol(ps) <= 1000)
		c.page = atol(ps);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (token_file && !(c.token = cg_read_secret_file(token_file))) {
		fprintf(stderr, "crashgatectl: cannot read --token-file %s: %s\n", token_file, strerror(errno));
		rc = EX_CONFIG;
		goto out;
	}
	if (cfg_path && !url) {
		if (cg_config_load(cfg_path, &c.cfg, err, sizeof err) != 0) {
			fprintf(stderr, "%s\n", err);
			rc = EX_CONFIG;
			goto out;
		}
		if (!c.data_dir)
			c.data_dir = c.cfg->gateway.data_dir;
		/* /healthz needs no token: a health check works where the token
		 * file is unreadable. */
		bool alive_only = strcmp(cmd, "health") == 0 && !c.ready;
		if (c.cfg->admin_enabled && !offline && (rc = api_from_config(&c, !alive_only)) != EX_OK)
			goto out;
	} else if (url) {
		snprintf(c.base, sizeof c.base, "%s", url);
		size_t n = strlen(c.base);
		while (n && c.base[n - 1] == '/')
			c.base[--n] = '\0';
	}
	if (!api(&c) && !c.data_dir) {
		fprintf(stderr, "crashgatectl: say where the gateway is: -c FILE, --url URL or --data-dir DIR\n");
		rc = EX_USAGE;
		goto out;
	}
	/* The daemon is down: reads go to the store it left (from -c only);
	 * what needs the daemon says so. */
	bool api_only = strcmp(cmd, "purge") == 0 || strcmp(cmd, "backup") == 0 || strcmp(cmd, "health") == 0;
	if (api(&c) && cfg_path && c.data_dir && !api_only && !api_answers(&c)) {
		fprintf(stderr, "crashgatectl: the admin API at %s does not answer; reading the store in %s\n",
			c.base, c.data_dir);
		c.base[0] = '\0';
	}
	if (!api(&c) && !api_only && (rc = open_store(&c)) != EX_OK)
		goto out;
	rc = run(&c, cmd, argc - optind, argv + optind);
out:
	if (c.st)
		cg_store_close(c.st);
	if (c.scratch[0])
		nftw(c.scratch, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	if (c.curl)
		curl_easy_cleanup(c.curl);
	if (c.token) {
		explicit_bzero(c.token, strlen(c.token));
		free(c.token);
	}
	cg_config_free(c.cfg);
	curl_global_cleanup();
	return rc;
}
