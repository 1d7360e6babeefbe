/*
 * Unit tests for the configuration loader (gateway/config.c).
 *
 * The test includes config.c itself rather than only config.h: that gives it
 * the key-table types and the walker, so the LIST and MAP row types (which no
 * crashgate section uses yet) are exercised with a table of its own. cg_core
 * is a static library, so its config.o is never pulled into this binary and
 * nothing is defined twice.
 *
 * Every error is asserted as the exact "FILE:LINE:COL: KEY: message" string.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config.c"

#include <libgen.h>
#include <stdio.h>
#include <sys/stat.h>

/* ---- helpers ------------------------------------------------------------- */

static int load(const char *yaml, struct cg_config **c, char *err, size_t errlen)
{
	return cg_config_load_string("t.yaml", yaml, strlen(yaml), c, err, errlen);
}

static struct cg_config *load_ok(const char *yaml)
{
	char err[512] = "";
	struct cg_config *c = NULL;
	int rc = load(yaml, &c, err, sizeof err);

	if (rc != 0)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(c);
	return c;
}

#define EXPECT_ERR(yaml, want)                                                   \
	do {                                                                     \
		char err_[512];                                                  \
		struct cg_config *c_ = (struct cg_config *)&err_;                \
		memset(err_, 'x', sizeof err_);                                  \
		assert_int_equal(load((yaml), &c_, err_, sizeof err_), -1);      \
		assert_null(c_);                                                 \
		assert_string_equal(err_, (want));                               \
	} while (0)

/* The required part: three lines, so a test's own lines start at line 4. */
#define BASE "gateway:\n  id: t\n  data_dir: /d\n"

/* The repository root: $CG_SRC, or three levels above this file. */
static void repo_file(char *buf, size_t len, const char *rel)
{
	const char *src = getenv("CG_SRC");
	char here[4096];

	if (src && *src) {
		snprintf(buf, len, "%s/%s", src, rel);
		return;
	}
	snprintf(here, sizeof here, "%s", __FILE__);
	/* tests/unit/test_config.c -> tests/unit -> tests -> root */
	char *d = dirname(dirname(dirname(here)));
	snprintf(buf, len, "%s/%s", d, rel);
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		print_error("cannot open %s\n", path);
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* A temp file holding LEN bytes of DATA; returns its path (static buffer). */
static const char *temp_file(const void *data, size_t len)
{
	static char path[256];
	const char *dir = getenv("TMPDIR");
	int fd;

	snprintf(path, sizeof path, "%s/cg_test_config_XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

/* Replace every TOKEN in *s with VALUE (reallocating). */
static void substitute(char **s, const char *token, const char *value)
{
	char *p;

	while ((p = strstr(*s, token)) != NULL) {
		size_t pre = (size_t)(p - *s), tl = strlen(token), vl = strlen(value);
		size_t rest = strlen(p + tl);
		char *n = malloc(pre + vl + rest + 1);
		assert_non_null(n);
		memcpy(n, *s, pre);
		memcpy(n + pre, value, vl);
		memcpy(n + pre + vl, p + tl, rest + 1);
		free(*s);
		*s = n;
	}
}

/* ---- whole files --------------------------------------------------------- */

static const char full_yaml[] =
	"gateway:\n"
	"  id: Site_1.a-b\n"
	"  data_dir: /srv/cg\n"
	"  sync_interval: 5ms\n"
	"  plugin_dir: /opt/cg/plugins\n"
	"mqtt:\n"
	"  uri: mqtts://broker.example:8883\n"
	"  client_id: gw-1\n"
	"  topic_prefix: acme/crash\n"
	"  username: gw\n"
	"  password_file: /run/pw\n"
	"  keepalive: 1m\n"
	"  reconnect_min: 500ms\n"
	"  reconnect_max: 2m\n"
	"  max_inflight: 20\n"
	"  tls:\n"
	"    ca_file: /etc/ca.pem\n"
	"    cert_file: /etc/c.crt\n"
	"    key_file: /etc/c.key\n"
	"    verify_hostname: false\n"
	"limits:\n"
	"  max_dump_bytes: 32MiB\n"
	"  max_chunk_bytes: 16KiB\n"
	"  reassembly_timeout: 1h30m\n"
	"  max_open_dumps: 500\n"
	"  max_open_dumps_per_device: 2\n"
	"  max_store_bytes: 10GiB\n"
	"default_region: US\n"
	"regions:\n"
	"  EU:\n"
	"    upstreams:\n"
	"      - name: eu-collector\n"
	"        kind: http\n"
	"        url: https://eu.example/api/crashes\n"
	"        batch: { max_dumps: 16, max_bytes: 8MiB, max_delay: 2s }\n"
	"      - { name: eu-mqtt, kind: mqtt, uri: ssl://cloud.example:8883, topic: crash/eu }\n"
	"  US:\n"
	"    upstreams:\n"
	"      - { name: us-sentry, kind: sentry, dsn_file: /run/dsn }\n"
	"      - { name: us-files, kind: file, path: /srv/out, retry: { min: 2s, max: 1m } }\n"
	"groups:\n"
	"  - name: DW100/Marketing\n"
	"    devices: [\"dw100-*\", \"dw1[0-9][0-9]x-?\"]\n"
	"    crash_dumps: enabled\n"
	"    regional_data_boundary: EU\n"
	"    collection: { start: 2026-01-01T00:00:00Z, stop: 2026-07-01T02:00:00+02:00, max_dumps: 1000 }\n"
	"  - { name: default, crash_dumps: enabled }\n"
	"throttle: { max_identical: 3, window: 12h }\n"
	"consent: { valid_for: 24h }\n"
	"retention: { dumps: 7d, history: 30d }\n"
	"admin: { listen: 127.0.0.1:9090, token_file: /run/admin_token }\n";

static void check_full(const struct cg_config *c)
{
	assert_string_equal(c->gateway.id, "Site_1.a-b");
	assert_string_equal(c->gateway.data_dir, "/srv/cg");
	assert_int_equal(c->gateway.sync_interval_ms, 5);
	assert_string_equal(c->mqtt.uri, "mqtts://broker.example:8883");
	assert_string_equal(c->mqtt.client_id, "gw-1");
	assert_string_equal(c->mqtt.topic_prefix, "acme/crash");
	assert_string_equal(c->mqtt.username, "gw");
	assert_string_equal(c->mqtt.password_file, "/run/pw");
	assert_int_equal(c->mqtt.keepalive_ms, 60000);
	assert_int_equal(c->mqtt.reconnect_min_ms, 500);
	assert_int_equal(c->mqtt.reconnect_max_ms, 120000);
	assert_int_equal(c->mqtt.max_inflight, 20);
	assert_true(c->mqtt.tls_enabled);
	assert_string_equal(c->mqtt.tls.ca_file, "/etc/ca.pem");
	assert_string_equal(c->mqtt.tls.cert_file, "/etc/c.crt");
	assert_string_equal(c->mqtt.tls.key_file, "/etc/c.key");
	assert_false(c->mqtt.tls.verify_hostname);
	assert_int_equal(c->limits.max_dump_bytes, 32ull << 20);
	assert_int_equal(c->limits.max_chunk_bytes, 16ull << 10);
	assert_int_equal(c->limits.reassembly_timeout_ms, 90ull * 60 * 1000);
	assert_int_equal(c->limits.max_open_dumps, 500);
	assert_int_equal(c->limits.max_open_dumps_per_device, 2);
	assert_int_equal(c->limits.max_store_bytes, 10ull << 30);
}

static void check_full_policy(const struct cg_config *c)
{
	assert_string_equal(c->default_region, "US");
	assert_int_equal(c->n_regions, 2);
	const struct cg_region_config *eu = cg_config_region(c, "EU"), *us = cg_config_region(c, "US");
	assert_non_null(eu);
	assert_non_null(us);
	assert_null(cg_config_region(c, "UK"));
	assert_int_equal(eu->n_upstreams, 2);
	assert_string_equal(eu->upstreams[0].name, "eu-collector");
	assert_string_equal(eu->upstreams[0].kind, "http");
	/* The plugin's own keys are kept as text, with their position. */
	assert_int_equal(eu->upstreams[0].options.n, 1);
	assert_string_equal(eu->upstreams[0].options.items[0].key, "url");
	assert_string_equal(eu->upstreams[0].options.items[0].value, "https://eu.example/api/crashes");
	assert_int_equal(eu->upstreams[0].options.items[0].line, 34);
	assert_string_equal(eu->upstreams[0].options.where, "regions.EU.upstreams[0]");
	assert_int_equal(eu->upstreams[0].retry.min_ms, 1000);
	assert_int_equal(eu->upstreams[0].retry.max_ms, 300000);
	assert_int_equal(eu->upstreams[0].batch.max_dumps, 16);
	assert_int_equal(eu->upstreams[0].batch.max_bytes, 8ull << 20);
	assert_int_equal(eu->upstreams[0].batch.max_delay_ms, 2000);
	assert_string_equal(eu->upstreams[1].kind, "mqtt");
	assert_int_equal(eu->upstreams[1].options.n, 2);
	assert_string_equal(eu->upstreams[1].options.items[1].key, "topic");
	assert_string_equal(eu->upstreams[1].options.items[1].value, "crash/eu");
	assert_int_equal(eu->upstreams[1].batch.max_dumps, 32);   /* defaults */
	assert_int_equal(eu->upstreams[1].batch.max_bytes, 4ull << 20);
	assert_int_equal(eu->upstreams[1].batch.max_delay_ms, 5000);
	assert_string_equal(us->upstreams[0].kind, "sentry");
	assert_string_equal(us->upstreams[0].options.items[0].value, "/run/dsn");
	assert_string_equal(us->upstreams[1].kind, "file");
	assert_string_equal(us->upstreams[1].options.items[0].key, "path");
	assert_int_equal(us->upstreams[1].retry.min_ms, 2000);
	assert_int_equal(us->upstreams[1].retry.max_ms, 60000);
	assert_int_equal(c->n_groups, 2);
	const struct cg_group_config *g = &c->groups[0];
	assert_string_equal(g->name, "DW100/Marketing");
	assert_int_equal(g->n_devices, 2);
	assert_string_equal(g->devices[1], "dw1[0-9][0-9]x-?");
	assert_int_equal(g->crash_dumps, CG_CONSENT_ENABLED);
	assert_string_equal(g->region, "EU");
	assert_int_equal(g->collection.start_ms, 1767225600000ull);
	assert_int_equal(g->collection.stop_ms, 1782864000000ull);
	assert_int_equal(g->collection.max_dumps, 1000);
	assert_string_equal(c->groups[1].region, "None");
	assert_int_equal(c->groups[1].n_devices, 0);
	assert_int_equal(c->throttle.max_identical, 3);
	assert_int_equal(c->throttle.window_ms, 12ull * 3600 * 1000);
	assert_int_equal(c->consent.valid_for_ms, 24ull * 3600 * 1000);
	assert_int_equal(c->retention.dumps_ms, 7ull * 86400 * 1000);
	assert_int_equal(c->retention.history_ms, 30ull * 86400 * 1000);
	assert_true(c->admin_enabled);
	assert_string_equal(c->admin.listen, "127.0.0.1:9090");
	assert_string_equal(c->admin.token_file, "/run/admin_token");

	/* Group matching: first match wins, the `default` group takes the rest. */
	assert_ptr_equal(cg_config_group_for(c, "dw100-17"), &c->groups[0]);
	assert_ptr_equal(cg_config_group_for(c, "dw123x-a"), &c->groups[0]);
	assert_ptr_equal(cg_config_group_for(c, "dw12x-a"), &c->groups[1]);
	assert_ptr_equal(cg_config_group_for(c, "other"), &c->groups[1]);
	assert_string_equal(cg_config_group_region(c, &c->groups[0]), "EU");
	assert_string_equal(cg_config_group_region(c, &c->groups[1]), "US");
}

static void test_full_file(void **state)
{
	(void)state;
	struct cg_config *c = load_ok(full_yaml);

	assert_string_equal(c->path, "t.yaml");
	check_full(c);
	check_full_policy(c);
	cg_config_free(c);
}

/* The same settings in flow style, with quoting and comments. */
static void test_full_file_flow(void **state)
{
	(void)state;
	struct cg_config *c = load_ok(
		"# comment\n"
		"gateway: { id: 'Site_1.a-b', data_dir: \"/srv/cg\", sync_interval: 5ms }\n"
		"mqtt: { uri: mqtts://broker.example:8883, client_id: gw-1, topic_prefix: acme/crash,\n"
		"        username: gw, password_file: /run/pw, keepalive: 60s, reconnect_min: 500ms,\n"
		"        reconnect_max: 2m, max_inflight: \"20\",\n"
		"        tls: { ca_file: /etc/ca.pem, cert_file: /etc/c.crt, key_file: /etc/c.key,\n"
		"               verify_hostname: off } }\n"
		"limits: { max_dump_bytes: 33554432, max_chunk_bytes: 16384B, reassembly_timeout: 90m,\n"
		"          max_open_dumps: 500, max_open_dumps_per_device: 2, max_store_bytes: 10GiB }\n");
	check_full(c);
	cg_config_free(c);
}

/* Every key of every table appears in full_yaml, so the test above covers all. */
static void assert_keys_in(const struct conf_key *t, const char *text)
{
	for (const struct conf_key *r = t; r->name; r++) {
		char needle[80];
		if (r->type == CONF_EXTRA)
			continue;   /* the plugin's keys */
		snprintf(needle, sizeof needle, "%s:", r->name);
		if (!strstr(text, needle))
			print_error("key %s is missing\n", r->name);
		assert_non_null(strstr(text, needle));
		if (r->child)
			assert_keys_in(r->child, text);
	}
}

static void test_full_file_covers_every_key(void **state)
{
	(void)state;
	assert_keys_in(config_keys, full_yaml);
}

static void test_defaults(void **state)
{
	(void)state;
	struct cg_config *c = load_ok(BASE);

	assert_string_equal(c->gateway.id, "t");
	assert_string_equal(c->gateway.data_dir, "/d");
	assert_int_equal(c->gateway.sync_interval_ms, 20);
	assert_string_equal(c->mqtt.uri, "tcp://127.0.0.1:1883");
	assert_string_equal(c->mqtt.client_id, "crashgate");
	assert_string_equal(c->mqtt.topic_prefix, "crashgate/v1");
	assert_null(c->mqtt.username);
	assert_null(c->mqtt.password_file);
	assert_int_equal(c->mqtt.keepalive_ms, 30000);
	assert_int_equal(c->mqtt.reconnect_min_ms, 1000);
	assert_int_equal(c->mqtt.reconnect_max_ms, 30000);
	assert_int_equal(c->mqtt.max_inflight, 1000);
	assert_false(c->mqtt.tls_enabled);
	assert_null(c->mqtt.tls.ca_file);
	assert_null(c->mqtt.tls.cert_file);
	assert_null(c->mqtt.tls.key_file);
	assert_true(c->mqtt.tls.verify_hostname);
	assert_int_equal(c->limits.max_dump_bytes, 16ull << 20);
	assert_int_equal(c->limits.max_chunk_bytes, 64ull << 10);
	assert_int_equal(c->limits.reassembly_timeout_ms, 10ull * 60 * 1000);
	assert_int_equal(c->limits.max_open_dumps, 10000);
	assert_int_equal(c->limits.max_open_dumps_per_device, 4);
	assert_int_equal(c->limits.max_store_bytes, 2ull << 30);
	cg_config_free(c);
}

/* Null sections are empty sections; null optional strings are unset. */
static void test_nulls(void **state)
{
	(void)state;
	struct cg_config *c = load_ok(BASE "mqtt:\n  username: ~\n  password_file:\nlimits:\n"
				      "# all commented out\n");
	assert_null(c->mqtt.username);
	assert_null(c->mqtt.password_file);
	assert_int_equal(c->limits.max_dump_bytes, 16ull << 20);
	assert_false(c->mqtt.tls_enabled);
	cg_config_free(c);

	/* An empty tls section turns TLS on with the system store. */
	c = load_ok(BASE "mqtt:\n  uri: ssl://b:8883\n  tls:\n");
	assert_true(c->mqtt.tls_enabled);
	assert_null(c->mqtt.tls.ca_file);
	assert_true(c->mqtt.tls.verify_hostname);
	cg_config_free(c);

	EXPECT_ERR(BASE "mqtt:\n  keepalive: ~\n",
		   "t.yaml:5:14: mqtt.keepalive: no value: write a duration such as 30s, or "
		   "remove the key for the default (30s)");
	EXPECT_ERR(BASE "mqtt:\n  client_id: null\n",
		   "t.yaml:5:14: mqtt.client_id: no value: write a string, or remove the key "
		   "for the default (crashgate)");
	EXPECT_ERR("gateway:\n  id:\n  data_dir: /d\n",
		   "t.yaml:2:6: gateway.id: no value: write a string");
	/* Quoted, it is a string, not null, but empty. */
	EXPECT_ERR(BASE "mqtt:\n  username: \"\"\n", "t.yaml:5:13: mqtt.username: the value is empty");
}

static void test_bools(void **state)
{
	(void)state;
	static const struct { const char *text; bool value; } cases[] = {
		{ "true", true }, { "True", true }, { "yes", true }, { "on", true }, { "ON", true },
		{ "false", false }, { "FALSE", false }, { "no", false }, { "off", false },
		{ "\"false\"", false },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char yaml[256];
		snprintf(yaml, sizeof yaml, BASE "mqtt:\n  uri: ssl://b:1\n  tls:\n    verify_hostname: %s\n",
			 cases[i].text);
		struct cg_config *c = load_ok(yaml);
		assert_int_equal(c->mqtt.tls.verify_hostname, cases[i].value);
		cg_config_free(c);
	}
	EXPECT_ERR(BASE "mqtt:\n  uri: ssl://b:1\n  tls:\n    verify_hostname: 1\n",
		   "t.yaml:7:22: mqtt.tls.verify_hostname: '1' is not a boolean: write true or false");
}

/* ---- errors the walker finds --------------------------------------------- */

static void test_unknown_keys(void **state)
{
	(void)state;
	EXPECT_ERR(BASE "mqt:\n  uri: tcp://x:1\n", "t.yaml:4:1: mqt: unknown key (did you mean mqtt?)");
	EXPECT_ERR(BASE "region:\n  EU: {}\n", "t.yaml:4:1: region: unknown key (did you mean regions?)");
	EXPECT_ERR(BASE "limits:\n  max_dump: 1MiB\n", "t.yaml:5:3: limits.max_dump: unknown key");
	EXPECT_ERR(BASE "mqtt:\n  uri: ssl://h:1\n  tls:\n    ca_fil: /x\n",
		   "t.yaml:7:5: mqtt.tls.ca_fil: unknown key (did you mean ca_file?)");
	EXPECT_ERR("gateway: { id: t, data_dir: /d, color: blue }\n",
		   "t.yaml:1:33: gateway.color: unknown key");
	/* YAML merge keys are not special: just an unknown key. */
	EXPECT_ERR(BASE "limits:\n  <<: {}\n", "t.yaml:5:3: limits.<<: unknown key");
	EXPECT_ERR(BASE "limits:\n  ? [a]\n  : 1\n",
		   "t.yaml:5:5: limits: a key must be a string, not a list");
	EXPECT_ERR(BASE "limits:\n  \"\": 1\n", "t.yaml:5:3: limits: empty key");
}

static void test_wrong_kind(void **state)
{
	(void)state;
	/* A mapping or list where a scalar belongs. */
	EXPECT_ERR("gateway:\n  id: { a: 1 }\n  data_dir: /d\n",
		   "t.yaml:2:7: gateway.id: expected a string, got a mapping");
	EXPECT_ERR(BASE "limits:\n  max_dump_bytes:\n    - 1\n",
		   "t.yaml:6:5: limits.max_dump_bytes: expected a size such as 64KiB, got a list");
	/* A scalar or list where a mapping belongs. */
	EXPECT_ERR(BASE "limits: 5\n", "t.yaml:4:9: limits: expected a mapping, got a scalar");
	EXPECT_ERR(BASE "mqtt:\n  uri: ssl://h:1\n  tls: [a, b]\n",
		   "t.yaml:6:8: mqtt.tls: expected a mapping, got a list");
	/* The top level. */
	EXPECT_ERR("- gateway\n", "t.yaml:1:1: the top level must be a mapping of sections, not a list");
	EXPECT_ERR("gateway\n", "t.yaml:1:1: the top level must be a mapping of sections, not a scalar");
}

static void test_bad_values(void **state)
{
	(void)state;
	EXPECT_ERR(BASE "limits:\n  max_dump_bytes: 16MB\n",
		   "t.yaml:5:19: limits.max_dump_bytes: '16MB' is not a size: write bytes, or a "
		   "whole number with B, KiB, MiB, GiB or TiB, e.g. 64KiB");
	EXPECT_ERR(BASE "limits:\n  max_store_bytes: 1.5GiB\n",
		   "t.yaml:5:20: limits.max_store_bytes: '1.5GiB' is not a size: write bytes, or a "
		   "whole number with B, KiB, MiB, GiB or TiB, e.g. 64KiB");
	EXPECT_ERR(BASE "limits:\n  reassembly_timeout: 600\n",
		   "t.yaml:5:23: limits.reassembly_timeout: '600' is not a duration: write a whole "
		   "number with ms, s, m, h or d, e.g. 30s or 1h30m");
	EXPECT_ERR(BASE "mqtt:\n  keepalive: 10 s\n",
		   "t.yaml:5:14: mqtt.keepalive: '10 s' is not a duration: write a whole number "
		   "with ms, s, m, h or d, e.g. 30s or 1h30m");
	EXPECT_ERR(BASE "limits:\n  max_open_dumps: -1\n",
		   "t.yaml:5:19: limits.max_open_dumps: '-1' is not a whole number");
	EXPECT_ERR(BASE "limits:\n  max_open_dumps: 0x10\n",
		   "t.yaml:5:19: limits.max_open_dumps: '0x10' is not a whole number");
	EXPECT_ERR(BASE "limits:\n  max_open_dumps: 99999999999999999999999\n",
		   "t.yaml:5:19: limits.max_open_dumps: '99999999999999999999999' is not a whole number");
	/* Long values are shortened in messages. */
	EXPECT_ERR(BASE "limits:\n  max_open_dumps: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
		   "t.yaml:5:19: limits.max_open_dumps: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' "
		   "is not a whole number");
}

static void test_bounds(void **state)
{
	(void)state;
	/* The example of the brief: the value as written, the bound formatted. */
	EXPECT_ERR(BASE "limits:\n    max_chunk_bytes: 2MiB\n",
		   "t.yaml:5:22: limits.max_chunk_bytes: 2MiB is above the maximum 1MiB");
	EXPECT_ERR(BASE "limits:\n  max_chunk_bytes: 15\n",
		   "t.yaml:5:20: limits.max_chunk_bytes: 15 is below the minimum 16B");
	EXPECT_ERR(BASE "limits:\n  max_dump_bytes: 1023B\n",
		   "t.yaml:5:19: limits.max_dump_bytes: 1023B is below the minimum 1KiB");
	EXPECT_ERR(BASE "limits:\n  max_dump_bytes: 1025MiB\n",
		   "t.yaml:5:19: limits.max_dump_bytes: 1025MiB is above the maximum 1GiB");
	EXPECT_ERR(BASE "mqtt:\n  keepalive: 4999ms\n",
		   "t.yaml:5:14: mqtt.keepalive: 4999ms is below the minimum 5s");
	EXPECT_ERR(BASE "mqtt:\n  keepalive: 1h1ms\n",
		   "t.yaml:5:14: mqtt.keepalive: 1h1ms is above the maximum 1h");
	EXPECT_ERR(BASE "limits:\n  reassembly_timeout: 8d\n",
		   "t.yaml:5:23: limits.reassembly_timeout: 8d is above the maximum 7d");
	EXPECT_ERR("gateway:\n  id: t\n  data_dir: /d\n  sync_interval: 0ms\n",
		   "t.yaml:4:18: gateway.sync_interval: 0ms is below the minimum 1ms");
	EXPECT_ERR("gateway:\n  id: t\n  data_dir: /d\n  sync_interval: 2s\n",
		   "t.yaml:4:18: gateway.sync_interval: 2s is above the maximum 1s");
	EXPECT_ERR(BASE "mqtt:\n  max_inflight: 0\n",
		   "t.yaml:5:17: mqtt.max_inflight: 0 is below the minimum 1");
	EXPECT_ERR(BASE "mqtt:\n  max_inflight: 65536\n",
		   "t.yaml:5:17: mqtt.max_inflight: 65536 is above the maximum 65535");
	EXPECT_ERR(BASE "limits:\n  max_open_dumps: 4294967296\n",
		   "t.yaml:5:19: limits.max_open_dumps: 4294967296 is above the maximum 10000000");

	/* The bounds themselves are accepted. */
	struct cg_config *c = load_ok(BASE "limits:\n  max_chunk_bytes: 16B\n  max_dump_bytes: 1GiB\n"
				      "  max_store_bytes: 1GiB\n  reassembly_timeout: 7d\n"
				      "  max_open_dumps: 10000000\n  max_open_dumps_per_device: 10000000\n"
				      "mqtt:\n  keepalive: 5s\n  max_inflight: 65535\n");
	assert_int_equal(c->limits.max_chunk_bytes, 16);
	assert_int_equal(c->limits.max_dump_bytes, 1ull << 30);
	assert_int_equal(c->limits.max_open_dumps, 10000000);
	cg_config_free(c);
}

static void test_missing_required(void **state)
{
	(void)state;
	/* Points at the mapping that lacks the key. */
	EXPECT_ERR("gateway:\n  data_dir: /d\n", "t.yaml:2:3: gateway.id: required key is missing");
	EXPECT_ERR("mqtt: {}\ngateway: { id: x }\n",
		   "t.yaml:2:10: gateway.data_dir: required key is missing");
	/* No gateway section at all: the top-level mapping. */
	EXPECT_ERR("\n\nmqtt:\n  uri: tcp://h:1\n", "t.yaml:3:1: gateway.id: required key is missing");
	EXPECT_ERR("gateway:\n", "t.yaml:1:9: gateway.id: required key is missing");
}

static void test_duplicate_keys(void **state)
{
	(void)state;
	EXPECT_ERR(BASE "limits: {}\nlimits: {}\n", "t.yaml:5:1: limits: duplicate key (first at 4:1)");
	EXPECT_ERR("gateway:\n  id: a\n  data_dir: /d\n  id: b\n",
		   "t.yaml:4:3: gateway.id: duplicate key (first at 2:3)");
	EXPECT_ERR(BASE "mqtt: { uri: tcp://a:1, uri: tcp://b:1 }\n",
		   "t.yaml:4:25: mqtt.uri: duplicate key (first at 4:9)");
}

static void test_aliases_rejected(void **state)
{
	(void)state;
	/* Anchors are harmless and ignored; an alias is refused where it is used. */
	struct cg_config *c = load_ok(BASE "limits:\n  max_dump_bytes: &big 32MiB\n");
	assert_int_equal(c->limits.max_dump_bytes, 32ull << 20);
	cg_config_free(c);
	EXPECT_ERR(BASE "limits:\n  max_dump_bytes: &big 32MiB\n  max_store_bytes: *big\n",
		   "t.yaml:6:20: limits.max_store_bytes: aliases (*big) are not supported; "
		   "write the value out");
	EXPECT_ERR("base: &b { id: t, data_dir: /d }\ngateway: *b\n",
		   "t.yaml:1:1: base: unknown key");
	EXPECT_ERR("gateway: &b { id: t, data_dir: /d }\nmqtt: *b\n",
		   "t.yaml:2:7: mqtt: aliases (*b) are not supported; write the value out");
}

static void test_yaml_syntax_errors(void **state)
{
	(void)state;
	EXPECT_ERR(BASE "mqtt:\n  uri: a: b\n",
		   "t.yaml:5:9: YAML syntax error: mapping values are not allowed in this context");
	EXPECT_ERR(BASE "mqtt:\n\turi: tcp://a:1\n",
		   "t.yaml:5:1: YAML syntax error: found character that cannot start any token "
		   "(while scanning for the next token at 5:1)");
	EXPECT_ERR(BASE "mqtt: { uri: tcp://a:1\n",
		   "t.yaml:5:1: YAML syntax error: did not find expected ',' or '}' "
		   "(while parsing a flow mapping at 4:7)");
	EXPECT_ERR(BASE "mqtt:\n  uri: \"tcp://a:1\n",
		   "t.yaml:6:1: YAML syntax error: found unexpected end of stream "
		   "(while scanning a quoted scalar at 5:8)");
	EXPECT_ERR(BASE "mqtt:\n  uri: tcp://a:1\n    client_id: x\n",
		   "t.yaml:6:14: YAML syntax error: mapping values are not allowed in this context");
	EXPECT_ERR(BASE "---\nmqtt: {}\n", "t.yaml:4:1: only one YAML document is allowed");
	/* Reader errors come as a byte offset; the position is computed from it. */
	EXPECT_ERR("gateway:\n  id: \xff\n",
		   "t.yaml:2:7: YAML syntax error: invalid leading UTF-8 octet");
	EXPECT_ERR("gateway:\n  id: a\x01\n",
		   "t.yaml:2:8: YAML syntax error: control characters are not allowed");
	/* NUL reaches a value or key only as an escape; both are refused. */
	EXPECT_ERR("gateway:\n  id: \"a\\0b\"\n  data_dir: /d\n",
		   "t.yaml:2:7: gateway.id: the value contains a NUL byte");
	EXPECT_ERR(BASE "\"mq\\0tt\\n\": {}\n", "t.yaml:4:1: mq?tt?: unknown key (did you mean mqtt?)");
}

static void test_empty_files(void **state)
{
	(void)state;
	EXPECT_ERR("", "t.yaml:1:1: the file is empty");
	EXPECT_ERR("# nothing here\n\n", "t.yaml:1:1: the file is empty");
	EXPECT_ERR("---\n", "t.yaml:1:1: the file is empty");
	EXPECT_ERR("~\n", "t.yaml:1:1: the file is empty");
	struct cg_config *c = (struct cg_config *)&c;
	char err[128];
	assert_int_equal(cg_config_load_string("t.yaml", NULL, 0, &c, err, sizeof err), -1);
	assert_null(c);
	assert_string_equal(err, "t.yaml:1:1: the file is empty");
}

static void test_input_bounds(void **state)
{
	(void)state;
	char yaml[256];
	char *big;
	size_t n;

	/* 16 nested levels are fine (the walker then finds the unknown key); 17 are not. */
	snprintf(yaml, sizeof yaml, "x: %.*s%.*s\n", 15, "[[[[[[[[[[[[[[[[[[[[", 15,
		 "]]]]]]]]]]]]]]]]]]]]");
	EXPECT_ERR(yaml, "t.yaml:1:1: x: unknown key");
	snprintf(yaml, sizeof yaml, "x: %.*s%.*s\n", 16, "[[[[[[[[[[[[[[[[[[[[", 16,
		 "]]]]]]]]]]]]]]]]]]]]");
	EXPECT_ERR(yaml, "t.yaml:1:19: nesting deeper than 16 levels");

	/* Too many nodes: the mapping, x and the list come first, so the
	 * 100001st node is list item 99998, index 99997, at column 5 + 2 * 99997. */
	n = 4 + 2 * 100000 + 2;
	big = malloc(n + 1);
	assert_non_null(big);
	memcpy(big, "x: [", 4);
	for (size_t i = 0; i < 100000; i++)
		memcpy(big + 4 + 2 * i, "1,", 2);
	memcpy(big + 4 + 2 * 100000, "]\n", 3);
	EXPECT_ERR(big, "t.yaml:1:199999: more than 100000 YAML nodes");
	free(big);

	/* More than 1 MiB, even of comments. */
	n = (1u << 20) + 1;
	big = malloc(n + 1);
	assert_non_null(big);
	memset(big, '#', n);
	big[n] = '\0';
	EXPECT_ERR(big, "t.yaml: the file is larger than 1 MiB");
	big[n - 1] = '\0';   /* exactly 1 MiB is read (and is just a comment) */
	EXPECT_ERR(big, "t.yaml:1:1: the file is empty");
	free(big);
}

/* ---- single-key and cross-key checks ------------------------------------- */

static void test_gateway_id(void **state)
{
	(void)state;
	struct cg_config *c =
		load_ok("gateway:\n  id: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
			"  data_dir: /d\n");
	assert_int_equal(strlen(c->gateway.id), 64);
	cg_config_free(c);
	EXPECT_ERR("gateway:\n  id: site 1\n  data_dir: /d\n",
		   "t.yaml:2:7: gateway.id: 'site 1' must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
	EXPECT_ERR("gateway:\n  id: a/b\n  data_dir: /d\n",
		   "t.yaml:2:7: gateway.id: 'a/b' must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
	EXPECT_ERR("gateway:\n  id: ''\n  data_dir: /d\n", "t.yaml:2:7: gateway.id: the value is empty");
	EXPECT_ERR("gateway:\n  id: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
		   "  data_dir: /d\n",
		   "t.yaml:2:7: gateway.id: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' must be "
		   "1 to 64 characters of A-Z a-z 0-9 . _ -");
}

static void test_topic_prefix(void **state)
{
	(void)state;
	EXPECT_ERR(BASE "mqtt:\n  topic_prefix: a/+/b\n",
		   "t.yaml:5:17: mqtt.topic_prefix: 'a/+/b' must not contain the wildcards + or #");
	EXPECT_ERR(BASE "mqtt:\n  topic_prefix: 'a/#'\n",
		   "t.yaml:5:17: mqtt.topic_prefix: 'a/#' must not contain the wildcards + or #");
	EXPECT_ERR(BASE "mqtt:\n  topic_prefix: /a\n",
		   "t.yaml:5:17: mqtt.topic_prefix: '/a' must not start or end with /");
	EXPECT_ERR(BASE "mqtt:\n  topic_prefix: a/\n",
		   "t.yaml:5:17: mqtt.topic_prefix: 'a/' must not start or end with /");
	EXPECT_ERR(BASE "mqtt:\n  topic_prefix: \"\"\n",
		   "t.yaml:5:17: mqtt.topic_prefix: the value is empty");
}

static void test_uri(void **state)
{
	(void)state;
	static const char *const good[] = { "tcp://h:1883", "mqtt://h:1883", "ssl://h:8883",
					    "mqtts://h:8883" };
	for (size_t i = 0; i < 4; i++) {
		char yaml[128];
		snprintf(yaml, sizeof yaml, BASE "mqtt:\n  uri: %s\n", good[i]);
		struct cg_config *c = load_ok(yaml);
		assert_string_equal(c->mqtt.uri, good[i]);
		assert_false(c->mqtt.tls_enabled);   /* ssl:// alone: system CA, no section */
		cg_config_free(c);
	}
	EXPECT_ERR(BASE "mqtt:\n  uri: ws://h:80\n",
		   "t.yaml:5:8: mqtt.uri: 'ws://h:80' is not a broker address: write tcp://, "
		   "mqtt://, ssl:// or mqtts:// followed by host:port");
	EXPECT_ERR(BASE "mqtt:\n  uri: localhost:1883\n",
		   "t.yaml:5:8: mqtt.uri: 'localhost:1883' is not a broker address: write tcp://, "
		   "mqtt://, ssl:// or mqtts:// followed by host:port");
	EXPECT_ERR(BASE "mqtt:\n  uri: tcp://\n",
		   "t.yaml:5:8: mqtt.uri: 'tcp://' is not a broker address: write tcp://, "
		   "mqtt://, ssl:// or mqtts:// followed by host:port");
}

static void test_cross_limits(void **state)
{
	(void)state;
	/* chunk <= dump: blame the chunk when written, else the dump. */
	EXPECT_ERR(BASE "limits:\n  max_dump_bytes: 1KiB\n  max_chunk_bytes: 2KiB\n  max_store_bytes: 1MiB\n",
		   "t.yaml:6:3: limits.max_chunk_bytes: 2KiB is above limits.max_dump_bytes (1KiB)");
	EXPECT_ERR(BASE "limits:\n  max_dump_bytes: 32KiB\n",
		   "t.yaml:5:3: limits.max_dump_bytes: 32KiB is below limits.max_chunk_bytes "
		   "(64KiB, the default)");
	/* store >= dump: blame the store when written. */
	EXPECT_ERR(BASE "limits:\n  max_dump_bytes: 16MiB\n  max_store_bytes: 8MiB\n",
		   "t.yaml:6:3: limits.max_store_bytes: 8MiB is below limits.max_dump_bytes (16MiB)");
	EXPECT_ERR(BASE "limits:\n  max_store_bytes: 8MiB\n",
		   "t.yaml:5:3: limits.max_store_bytes: 8MiB is below limits.max_dump_bytes "
		   "(16MiB, the default)");
	/* per device <= total. */
	EXPECT_ERR(BASE "limits:\n  max_open_dumps_per_device: 20\n  max_open_dumps: 10\n",
		   "t.yaml:5:3: limits.max_open_dumps_per_device: 20 is above limits.max_open_dumps (10)");
	EXPECT_ERR(BASE "limits:\n  max_open_dumps: 2\n",
		   "t.yaml:5:3: limits.max_open_dumps: 2 is below limits.max_open_dumps_per_device "
		   "(4, the default)");
	/* Equal is fine. */
	struct cg_config *c = load_ok(BASE "limits:\n  max_dump_bytes: 64KiB\n  max_store_bytes: 64KiB\n"
				      "  max_open_dumps: 4\n");
	cg_config_free(c);
}

static void test_cross_reconnect(void **state)
{
	(void)state;
	EXPECT_ERR(BASE "mqtt:\n  reconnect_min: 10s\n  reconnect_max: 5s\n",
		   "t.yaml:6:3: mqtt.reconnect_max: 5s is below mqtt.reconnect_min (10s)");
	EXPECT_ERR(BASE "mqtt:\n  reconnect_max: 500ms\n",
		   "t.yaml:5:3: mqtt.reconnect_max: 500ms is below mqtt.reconnect_min (1s, the default)");
	EXPECT_ERR(BASE "mqtt:\n  reconnect_min: 1m\n",
		   "t.yaml:5:3: mqtt.reconnect_min: 1m is above mqtt.reconnect_max (30s, the default)");
	struct cg_config *c = load_ok(BASE "mqtt:\n  reconnect_min: 30s\n");
	cg_config_free(c);
}

static void test_cross_tls(void **state)
{
	(void)state;
	EXPECT_ERR(BASE "mqtt:\n  tls:\n    ca_file: /ca.pem\n",
		   "t.yaml:5:3: mqtt.tls: a tls section needs an ssl:// or mqtts:// uri, but "
		   "mqtt.uri is tcp://127.0.0.1:1883");
	EXPECT_ERR(BASE "mqtt:\n  uri: mqtt://b:1883\n  tls: {}\n",
		   "t.yaml:6:3: mqtt.tls: a tls section needs an ssl:// or mqtts:// uri, but "
		   "mqtt.uri is mqtt://b:1883");
	EXPECT_ERR(BASE "mqtt:\n  uri: ssl://b:8883\n  tls:\n    cert_file: /c.crt\n",
		   "t.yaml:7:5: mqtt.tls.cert_file: a client certificate needs key_file too");
	EXPECT_ERR(BASE "mqtt:\n  uri: ssl://b:8883\n  tls:\n    ca_file: /ca\n    key_file: /c.key\n",
		   "t.yaml:8:5: mqtt.tls.key_file: a client key needs cert_file too");
}

/* ---- value parsers ------------------------------------------------------- */

static void test_parse_size(void **state)
{
	(void)state;
	static const struct { const char *s; uint64_t v; } ok[] = {
		{ "0", 0 }, { "1", 1 }, { "512B", 512 }, { "64KiB", 65536 }, { "16MiB", 16u << 20 },
		{ "2GiB", 2ull << 30 }, { "1TiB", 1ull << 40 }, { "007KiB", 7168 },
		{ "18446744073709551615", UINT64_MAX }, { "18446744073709551615B", UINT64_MAX },
		{ "16777215TiB", 16777215ull << 40 }, { "17179869183GiB", 17179869183ull << 30 },
	};
	static const char *const bad[] = {
		"", "B", "KiB", "-1", "+1", " 1", "1 ", "16 MiB", "1.5MiB", "16KB", "16MB", "16kib",
		"16mib", "16K", "16k", "1e3", "0x10", "1PiB", "16MiBs",
		"18446744073709551616", "16777216TiB", "17179869184GiB", "99999999999999999999999KiB",
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		v = 12345;
		if (cg_parse_size(ok[i].s, &v) != 0)
			print_error("rejected %s\n", ok[i].s);
		assert_int_equal(cg_parse_size(ok[i].s, &v), 0);
		assert_int_equal(v, ok[i].v);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 12345;
		if (cg_parse_size(bad[i], &v) == 0)
			print_error("accepted %s\n", bad[i]);
		assert_int_equal(cg_parse_size(bad[i], &v), -1);
		assert_int_equal(v, 12345);   /* untouched on failure */
	}
	assert_int_equal(cg_parse_size(NULL, &v), -1);
}

static void test_parse_duration(void **state)
{
	(void)state;
	static const struct { const char *s; uint64_t v; } ok[] = {
		{ "0s", 0 }, { "0ms", 0 }, { "250ms", 250 }, { "5s", 5000 }, { "10m", 600000 },
		{ "24h", 86400000 }, { "29d", 29ull * 86400000 }, { "1h30m", 5400000 },
		{ "1d2h3m4s5ms", 93784005 }, { "90s", 90000 }, { "1m500ms", 60500 },
		{ "18446744073709551615ms", UINT64_MAX },
		{ "213503982334d", 213503982334ull * 86400000 },
		{ "213503982334d14h", 213503982334ull * 86400000 + 14ull * 3600000 },
	};
	static const char *const bad[] = {
		"", "10", "0", "s", "ms", "-1s", "+1s", " 1s", "1s ", "1 s", "1.5h", "1S", "1H",
		"1w", "1y", "1sec", "10min", "30m1h", "1m1m", "1s1m", "1ms1s", "1h30", "1hh",
		"18446744073709551616ms", "213503982335d", "213503982334d15h",
		"18446744073709551615s", "99999999999999999999999d",
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		v = 12345;
		if (cg_parse_duration(ok[i].s, &v) != 0)
			print_error("rejected %s\n", ok[i].s);
		assert_int_equal(cg_parse_duration(ok[i].s, &v), 0);
		assert_int_equal(v, ok[i].v);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 12345;
		if (cg_parse_duration(bad[i], &v) == 0)
			print_error("accepted %s\n", bad[i]);
		assert_int_equal(cg_parse_duration(bad[i], &v), -1);
		assert_int_equal(v, 12345);
	}
	assert_int_equal(cg_parse_duration(NULL, &v), -1);
}

static void test_formatting(void **state)
{
	(void)state;
	char buf[32];

	fmt_size(0, buf, sizeof buf);
	assert_string_equal(buf, "0B");
	fmt_size(1536, buf, sizeof buf);
	assert_string_equal(buf, "1536B");
	fmt_size(3ull << 30, buf, sizeof buf);
	assert_string_equal(buf, "3GiB");
	fmt_size(UINT64_MAX, buf, sizeof buf);
	assert_string_equal(buf, "18446744073709551615B");
	fmt_duration(0, buf, sizeof buf);
	assert_string_equal(buf, "0s");
	fmt_duration(90000, buf, sizeof buf);
	assert_string_equal(buf, "90s");
	fmt_duration(7 * 86400000ull, buf, sizeof buf);
	assert_string_equal(buf, "7d");
	fmt_duration(1001, buf, sizeof buf);
	assert_string_equal(buf, "1001ms");
}

/* ---- files --------------------------------------------------------------- */

static void test_load_file(void **state)
{
	(void)state;
	char err[512];
	struct cg_config *c = NULL;
	const char *path = temp_file(full_yaml, strlen(full_yaml));

	assert_int_equal(cg_config_load(path, &c, err, sizeof err), 0);
	assert_string_equal(c->path, path);
	check_full(c);
	cg_config_free(c);
	unlink(path);

	/* Errors name the file as given. */
	static const char bad[] = BASE "limits:\n  max_chunk_bytes: 2MiB\n";
	char want[600];
	path = temp_file(bad, strlen(bad));
	c = (struct cg_config *)&c;
	assert_int_equal(cg_config_load(path, &c, err, sizeof err), -1);
	assert_null(c);
	snprintf(want, sizeof want, "%s:5:20: limits.max_chunk_bytes: 2MiB is above the maximum 1MiB",
		 path);
	assert_string_equal(err, want);
	unlink(path);

	assert_int_equal(cg_config_load("/nonexistent/crashgate.yaml", &c, err, sizeof err), -1);
	assert_null(c);
	assert_string_equal(err, "/nonexistent/crashgate.yaml: cannot read: No such file or directory");
	assert_int_equal(cg_config_load("/", &c, err, sizeof err), -1);
	assert_string_equal(err, "/: cannot read: Is a directory");

	/* Over 1 MiB on disk. */
	size_t n = (1u << 20) + 10;
	char *big = malloc(n);
	assert_non_null(big);
	memset(big, '\n', n);
	path = temp_file(big, n);
	free(big);
	assert_int_equal(cg_config_load(path, &c, err, sizeof err), -1);
	snprintf(want, sizeof want, "%s: the file is larger than 1 MiB", path);
	assert_string_equal(err, want);
	unlink(path);
}

/* A short error buffer still gets a NUL-terminated prefix of the message. */
static void test_short_error_buffer(void **state)
{
	(void)state;
	char err[16];
	struct cg_config *c = NULL;

	memset(err, 'x', sizeof err);
	assert_int_equal(load(BASE "limits:\n  max_chunk_bytes: 2MiB\n", &c, err, sizeof err), -1);
	assert_string_equal(err, "t.yaml:5:20: li");
	assert_int_equal(load(BASE "nope: 1\n", &c, NULL, 0), -1);
	assert_null(c);
}

static void test_example_file(void **state)
{
	(void)state;
	char path[4096], err[512];
	struct cg_config *c = NULL;

	repo_file(path, sizeof path, "config/crashgate.example.yaml");
	if (cg_config_load(path, &c, err, sizeof err) != 0)
		print_error("%s\n", err);
	assert_non_null(c);
	assert_string_equal(c->gateway.id, "site-berlin-01");
	assert_string_equal(c->gateway.data_dir, "/var/lib/crashgate");
	assert_string_equal(c->mqtt.uri, "tcp://127.0.0.1:1883");
	assert_string_equal(c->mqtt.username, "crashgate");
	assert_string_equal(c->mqtt.password_file, "/run/secrets/mqtt_password");
	assert_false(c->mqtt.tls_enabled);
	cg_config_free(c);

	/* Every key is there (tls keys commented out, still present as text). */
	char *text = read_all(path);
	assert_keys_in(config_keys, text);

	/* Uncommenting the tls section (with a TLS uri) gives a valid file too. */
	substitute(&text, "  # tls:", "  tls:");
	substitute(&text, "  #   ", "    ");
	substitute(&text, "uri: tcp://127.0.0.1:1883", "uri: ssl://127.0.0.1:8883");
	assert_int_equal(load(text, &c, err, sizeof err), 0);
	assert_true(c->mqtt.tls_enabled);
	assert_non_null(c->mqtt.tls.ca_file);
	assert_non_null(c->mqtt.tls.cert_file);
	assert_non_null(c->mqtt.tls.key_file);
	cg_config_free(c);
	free(text);
}

static void test_demo_file(void **state)
{
	(void)state;
	char path[4096], err[512];
	struct cg_config *c = NULL;
	char *text;

	repo_file(path, sizeof path, "config/demo.yaml");
	text = read_all(path);
	substitute(&text, "@DATA_DIR@", "/tmp/crashgate demo/data");
	substitute(&text, "@PORT@", "18830");
	substitute(&text, "@PASSWORD_FILE@", "/tmp/crashgate demo/password");
	substitute(&text, "@ADMIN_PORT@", "18080");
	substitute(&text, "@TOKEN_FILE@", "/tmp/crashgate demo/admin.token");
	assert_null(strchr(text, '@'));
	if (load(text, &c, err, sizeof err) != 0)
		print_error("%s\n", err);
	assert_non_null(c);
	assert_string_equal(c->gateway.data_dir, "/tmp/crashgate demo/data");
	assert_string_equal(c->mqtt.uri, "tcp://127.0.0.1:18830");
	assert_string_equal(c->mqtt.password_file, "/tmp/crashgate demo/password");
	assert_true(c->admin_enabled);
	assert_string_equal(c->admin.listen, "127.0.0.1:18080");
	assert_string_equal(c->admin.token_file, "/tmp/crashgate demo/admin.token");
	cg_config_free(c);
	free(text);
}

static void test_secret_file(void **state)
{
	(void)state;
	static const struct { const char *data; size_t len; const char *want; } cases[] = {
		{ "s3cret\n", 7, "s3cret" },
		{ "s3cret", 6, "s3cret" },
		{ "s3cret\r\nsecond line\n", 20, "s3cret" },
		{ "with space \n", 12, "with space " },
		{ "\n", 1, "" },
		{ "", 0, "" },
	};
	const char *path;
	char *s;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		path = temp_file(cases[i].data, cases[i].len);
		s = cg_read_secret_file(path);
		assert_non_null(s);
		assert_string_equal(s, cases[i].want);
		free(s);
		unlink(path);
	}

	/* 64 KiB is the limit. */
	char *big = malloc((64u << 10) + 1);
	assert_non_null(big);
	memset(big, 'a', (64u << 10) + 1);
	path = temp_file(big, 64u << 10);
	s = cg_read_secret_file(path);
	assert_non_null(s);
	assert_int_equal(strlen(s), 64u << 10);
	free(s);
	unlink(path);
	path = temp_file(big, (64u << 10) + 1);
	errno = 0;
	assert_null(cg_read_secret_file(path));
	assert_int_equal(errno, EFBIG);
	unlink(path);
	free(big);

	path = temp_file("ab\0cd\n", 6);
	errno = 0;
	assert_null(cg_read_secret_file(path));
	assert_int_equal(errno, EINVAL);
	unlink(path);

	errno = 0;
	assert_null(cg_read_secret_file("/nonexistent/secret"));
	assert_int_equal(errno, ENOENT);
}

/* ---- the reference ------------------------------------------------------- */

static char *print_to_string(void (*fn)(FILE *, const void *), const void *arg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	fn(f, arg);
	fclose(f);
	return buf;
}

static void print_ref(FILE *f, const void *arg)
{
	(void)arg;
	cg_config_print_reference(f);
}

static void assert_rows_in(const struct conf_key *t, const char *text)
{
	for (const struct conf_key *r = t; r->name; r++) {
		char needle[80];
		snprintf(needle, sizeof needle, "| `%s` | %s |", r->name, type_name(r->type));
		if (!strstr(text, needle))
			print_error("no row for %s\n", r->name);
		assert_non_null(strstr(text, needle));
		if (r->child)
			assert_rows_in(r->child, text);
	}
}

static void test_reference(void **state)
{
	(void)state;
	char *ref = print_to_string(print_ref, NULL);

	/* Top-level sections are headings, their keys are rows. */
	for (const struct conf_key *r = config_keys; r->name; r++)
		if (r->child)
			assert_rows_in(r->child, ref);
	assert_non_null(strstr(ref, "\n## `gateway`\n"));
	assert_non_null(strstr(ref, "\n## `mqtt`\n"));
	assert_non_null(strstr(ref, "\n## `mqtt.tls`\n"));
	assert_non_null(strstr(ref, "\n## `limits`\n"));
	assert_non_null(strstr(ref, "## Top level"));   /* default_region */
	assert_non_null(strstr(ref, "| `crash_dumps` | enum | `disabled` | `disabled`, `enabled` |"));
	assert_non_null(strstr(ref, "| `devices` | list of strings | empty | 0 .. 1000 entries |"));
	assert_non_null(strstr(ref, "| `start` | timestamp | none |"));
	assert_non_null(strstr(ref, "| `id` | string | required |"));
	assert_non_null(strstr(ref, "| `max_chunk_bytes` | size | `64KiB` | 16B .. 1MiB |"));
	assert_non_null(strstr(ref, "| `reassembly_timeout` | duration | `10m` | 1s .. 7d |"));
	assert_non_null(strstr(ref, "| `max_store_bytes` | size | `2GiB` | >= 1KiB |"));
	assert_non_null(strstr(ref, "| `max_inflight` | integer | `1000` | 1 .. 65535 |"));
	assert_non_null(strstr(ref, "| `verify_hostname` | boolean | `true` |"));
	assert_non_null(strstr(ref, "| `username` | string | none |"));
	assert_non_null(strstr(ref, "See `mqtt.tls`."));
	free(ref);
}

/* ---- policy: groups, regions, upstreams (SPEC §6, §9) --------------------- */

#define UP_US "regions:\n  US:\n    upstreams: [ { name: u, kind: file, path: /o } ]\n"

static void test_policy_errors(void **state)
{
	(void)state;
	/* A consenting group's region must have an upstream. */
	EXPECT_ERR(BASE UP_US "groups:\n  - { name: g, devices: [\"*\"], crash_dumps: enabled, "
		   "regional_data_boundary: EU }\n",
		   "t.yaml:8:54: groups[0].regional_data_boundary: group 'g' collects dumps in "
		   "region EU, which has no upstream: add regions.EU.upstreams");
	EXPECT_ERR(BASE UP_US "groups:\n  - { name: g, devices: [\"*\"], crash_dumps: enabled }\n",
		   "t.yaml:8:32: groups[0].regional_data_boundary: group 'g' collects dumps with "
		   "regional_data_boundary None, but default_region is not set");
	EXPECT_ERR(BASE "default_region: EU\n" UP_US
		   "groups:\n  - { name: g, devices: [\"*\"], crash_dumps: enabled }\n",
		   "t.yaml:9:32: groups[0].regional_data_boundary: group 'g' collects dumps in "
		   "region EU, which has no upstream: add regions.EU.upstreams");
	/* Without consent nothing is stored, so no upstream is needed. */
	struct cg_config *c = load_ok(BASE "groups:\n  - { name: g, devices: [\"*\"], "
				      "regional_data_boundary: EU }\n");
	assert_int_equal(c->groups[0].crash_dumps, CG_CONSENT_DISABLED);
	assert_null(cg_config_group_for(c, "zz") == &c->groups[0] ? NULL : (void *)1);
	cg_config_free(c);
	/* No groups at all: every device is in the built-in default group. */
	c = load_ok(BASE);
	assert_null(cg_config_group_for(c, "dev-1"));
	assert_int_equal(c->throttle.max_identical, 5);
	assert_int_equal(c->throttle.window_ms, 24ull * 3600 * 1000);
	assert_int_equal(c->consent.valid_for_ms, 48ull * 3600 * 1000);
	assert_int_equal(c->retention.dumps_ms, 29ull * 86400 * 1000);
	assert_int_equal(c->retention.history_ms, 15ull * 86400 * 1000);
	cg_config_free(c);

	EXPECT_ERR(BASE "groups:\n  - { name: g }\n",
		   "t.yaml:5:7: groups[0]: devices is required (at least one glob; only the group "
		   "named default may have none)");
	EXPECT_ERR(BASE "groups:\n  - { name: g, devices: [a] }\n  - { name: g, devices: [b] }\n",
		   "t.yaml:6:7: groups[1]: group name 'g' is already used by groups[0]");
	EXPECT_ERR(BASE "groups:\n  - { name: g, devices: [\"a b\"] }\n",
		   "t.yaml:5:26: groups[0].devices[0]: 'a b' is not a device glob: device ids are "
		   "A-Z a-z 0-9 . _ -, with * ? and [...] as wildcards");
	EXPECT_ERR(BASE "groups:\n  - { name: g, devices: [[a]] }\n",
		   "t.yaml:5:26: groups[0].devices[0]: expected a string, got a list");
	EXPECT_ERR(BASE "groups:\n  - { name: g, devices: [a], crash_dumps: yes }\n",
		   "t.yaml:5:43: groups[0].crash_dumps: 'yes' is not one of: disabled, enabled");
	EXPECT_ERR(BASE "groups:\n  - { name: g, devices: [a], collection: { start: 2026-03-01T00:00:00Z, "
		   "stop: 2026-02-01T00:00:00Z } }\n",
		   "t.yaml:5:73: groups[0].collection.stop: stop is not after start");
	EXPECT_ERR(BASE "groups:\n  - { name: g, devices: [a], collection: { start: yesterday } }\n",
		   "t.yaml:5:51: groups[0].collection.start: 'yesterday' is not an RFC 3339 "
		   "timestamp after 1970: write e.g. 2026-01-31T00:00:00Z or 2026-01-31T01:00:00+01:00");
	EXPECT_ERR(BASE "regions:\n  None: { upstreams: [ { name: u, kind: file, path: /o } ] }\n",
		   "t.yaml:5:3: regions.None: 'None' is reserved: it means default_region");
	EXPECT_ERR(BASE "regions:\n  E/U: { upstreams: [ { name: u, kind: file, path: /o } ] }\n",
		   "t.yaml:5:3: regions.E/U: 'E/U' is not a region name: 1 to 32 of A-Z a-z 0-9 _ -");
	EXPECT_ERR(BASE "regions:\n  EU: { upstreams: [] }\n",
		   "t.yaml:5:20: regions.EU.upstreams: 0 entries is below the minimum 1");
	EXPECT_ERR(BASE "regions:\n  EU: { upstreams: [ { name: u, kind: Http } ] }\n",
		   "t.yaml:5:39: regions.EU.upstreams[0].kind: 'Http' is not a plugin kind: 1 to 32 "
		   "of a-z 0-9 _ (http, sentry, mqtt, file, ...)");
	EXPECT_ERR(BASE "regions:\n  EU: { upstreams: [ { name: u, kind: file, path: [a] } ] }\n",
		   "t.yaml:5:51: regions.EU.upstreams[0].path: expected a scalar value, got a list");
	EXPECT_ERR(BASE "regions:\n  EU: { upstreams: [ { name: u, kind: file, retry: { min: 2m, max: 1m } } ] }\n",
		   "t.yaml:5:63: regions.EU.upstreams[0].retry: max is below min");
	EXPECT_ERR(BASE "regions:\n  EU: { upstreams: [ { name: u, kind: file, path: /a } ] }\n"
		   "  US: { upstreams: [ { name: u, kind: file, path: /b } ] }\n",
		   "t.yaml:6:24: regions.US.upstreams[0]: upstream name 'u' is already used in "
		   "regions.EU");
	EXPECT_ERR(BASE "throttle: { max_identical: 0 }\n",
		   "t.yaml:4:28: throttle.max_identical: 0 is below the minimum 1");
}

static void test_parse_time(void **state)
{
	(void)state;
	int64_t t;
	assert_int_equal(cg_parse_time("1970-01-01T00:00:01Z", &t), 0);
	assert_int_equal(t, 1000);
	assert_int_equal(cg_parse_time("2026-11-23T01:02:03.5+01:00", &t), 0);
	assert_int_equal(t, 1795392123500ll);
	assert_int_equal(cg_parse_time("2024-02-29t00:00:00z", &t), 0);
	assert_int_equal(t, 1709164800000ll);
	const char *bad[] = { "2023-02-29T00:00:00Z", "2026-11-23", "2026-11-23T01:02:03",
			      "2026-11-23T24:00:00Z", "2026-11-23T01:02:60Z", "2026-11-23T01:02:03.Z",
			      "2026-11-23T01:02:03+1:00", "2026-13-01T00:00:00Z", "x", "" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (cg_parse_time(bad[i], &t) == 0)
			print_error("accepted %s\n", bad[i]);
		assert_int_not_equal(cg_parse_time(bad[i], &t), 0);
	}
	char buf[32];
	cg_format_time(1709164800000ll, buf, sizeof buf);
	assert_string_equal(buf, "2024-02-29T00:00:00Z");
}

/* ---- LIST and MAP rows, with a table of the test's own ------------------- */

struct t_batch {
	uint32_t max_dumps;
	uint64_t max_delay_ms;
};

struct t_upstream {
	char *name;
	char *kind;
	struct t_batch batch;
};

struct t_region {
	char *name;
	struct t_upstream *upstreams;
	size_t n_upstreams;
};

struct t_group {
	char *name;
	bool enabled;
	uint32_t max_dumps;
};

struct t_root {
	char *default_region;
	struct t_region *regions;
	size_t n_regions;
	struct t_group *groups;
	size_t n_groups;
};

static const struct conf_key t_batch_keys[] = {
	{ .name = "max_dumps", .type = CONF_UINT32, .offset = offsetof(struct t_batch, max_dumps),
	  .def = "32", .min = 1, .max = 1000, .desc = "Dumps per batch." },
	{ .name = "max_delay", .type = CONF_DURATION,
	  .offset = offsetof(struct t_batch, max_delay_ms), .def = "5s", .min = 1, .max = 3600000,
	  .desc = "Wait for a full batch." },
	{ 0 }
};

static const struct conf_key t_upstream_keys[] = {
	{ .name = "name", .type = CONF_STRING, .flags = CONF_REQUIRED,
	  .offset = offsetof(struct t_upstream, name), .desc = "Upstream name." },
	{ .name = "kind", .type = CONF_STRING, .offset = offsetof(struct t_upstream, kind),
	  .def = "http", .desc = "Plugin." },
	{ .name = "batch", .type = CONF_SECTION, .offset = offsetof(struct t_upstream, batch),
	  .child = t_batch_keys, .desc = "Batching." },
	{ 0 }
};

static const struct conf_key t_region_keys[] = {
	{ .name = "upstreams", .type = CONF_LIST, .offset = offsetof(struct t_region, upstreams),
	  .count_off = offsetof(struct t_region, n_upstreams), .elem_size = sizeof(struct t_upstream),
	  .child = t_upstream_keys, .min = 1, .max = 3, .desc = "Where dumps go." },
	{ 0 }
};

static const struct conf_key t_group_keys[] = {
	{ .name = "name", .type = CONF_STRING, .flags = CONF_REQUIRED,
	  .offset = offsetof(struct t_group, name), .desc = "Group name." },
	{ .name = "enabled", .type = CONF_BOOL, .offset = offsetof(struct t_group, enabled),
	  .def = "true", .desc = "Collect." },
	{ .name = "max_dumps", .type = CONF_UINT32, .offset = offsetof(struct t_group, max_dumps),
	  .def = "1000", .min = 1, .max = 100000, .desc = "Cap." },
	{ 0 }
};

static const struct conf_key t_root_keys[] = {
	{ .name = "default_region", .type = CONF_STRING,
	  .offset = offsetof(struct t_root, default_region), .desc = "Region by default." },
	{ .name = "regions", .type = CONF_MAP, .offset = offsetof(struct t_root, regions),
	  .count_off = offsetof(struct t_root, n_regions), .elem_size = sizeof(struct t_region),
	  .name_off = offsetof(struct t_region, name), .child = t_region_keys, .max = 4,
	  .desc = "Regions by name." },
	{ .name = "groups", .type = CONF_LIST, .offset = offsetof(struct t_root, groups),
	  .count_off = offsetof(struct t_root, n_groups), .elem_size = sizeof(struct t_group),
	  .child = t_group_keys, .max = 3, .desc = "Device groups." },
	{ 0 }
};

static int twalk(const char *yaml, struct t_root *r, char *err, size_t errlen)
{
	struct walk w = { .file = "t.yaml", .err = err, .errlen = errlen };
	int rc;

	memset(r, 0, sizeof *r);
	rc = walk_string(&w, yaml, strlen(yaml), t_root_keys, r);
	free(w.pos);
	return rc;
}

#define EXPECT_TERR(yaml, want)                                                  \
	do {                                                                     \
		char err_[512];                                                  \
		struct t_root r_;                                                \
		assert_int_equal(twalk((yaml), &r_, err_, sizeof err_), -1);     \
		assert_string_equal(err_, (want));                               \
		/* Nothing is left allocated after a failure. */                 \
		assert_null(r_.regions);                                         \
		assert_null(r_.groups);                                          \
		assert_null(r_.default_region);                                  \
	} while (0)

static void test_list_and_map(void **state)
{
	(void)state;
	char err[512];
	struct t_root r;
	int rc = twalk("default_region: US\n"
		       "regions:\n"
		       "  EU: { upstreams: [ { name: eu-collector, batch: { max_dumps: 8, max_delay: 1s } } ] }\n"
		       "  US:\n"
		       "    upstreams:\n"
		       "      - name: us-sentry\n"
		       "        kind: sentry\n"
		       "      - { name: us-file, kind: file }\n"
		       "groups:\n"
		       "  - { name: DW100/Marketing, max_dumps: 10 }\n"
		       "  - name: other\n"
		       "    enabled: false\n",
		       &r, err, sizeof err);
	if (rc != 0)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(r.default_region, "US");
	assert_int_equal(r.n_regions, 2);
	assert_string_equal(r.regions[0].name, "EU");
	assert_int_equal(r.regions[0].n_upstreams, 1);
	assert_string_equal(r.regions[0].upstreams[0].name, "eu-collector");
	assert_string_equal(r.regions[0].upstreams[0].kind, "http");   /* default */
	assert_int_equal(r.regions[0].upstreams[0].batch.max_dumps, 8);
	assert_int_equal(r.regions[0].upstreams[0].batch.max_delay_ms, 1000);
	assert_string_equal(r.regions[1].name, "US");
	assert_int_equal(r.regions[1].n_upstreams, 2);
	assert_string_equal(r.regions[1].upstreams[0].kind, "sentry");
	assert_int_equal(r.regions[1].upstreams[0].batch.max_dumps, 32); /* default in a section */
	assert_int_equal(r.regions[1].upstreams[0].batch.max_delay_ms, 5000);
	assert_string_equal(r.regions[1].upstreams[1].name, "us-file");
	assert_int_equal(r.n_groups, 2);
	assert_string_equal(r.groups[0].name, "DW100/Marketing");
	assert_true(r.groups[0].enabled);
	assert_int_equal(r.groups[0].max_dumps, 10);
	assert_false(r.groups[1].enabled);
	assert_int_equal(r.groups[1].max_dumps, 1000);
	free_table(t_root_keys, &r);
	assert_null(r.regions);
	assert_int_equal(r.n_regions, 0);
	assert_null(r.groups);

	/* Null lists and maps are empty. */
	assert_int_equal(twalk("regions:\ngroups: ~\n", &r, err, sizeof err), 0);
	assert_int_equal(r.n_regions, 0);
	assert_int_equal(r.n_groups, 0);
	free_table(t_root_keys, &r);
}

static void test_list_and_map_errors(void **state)
{
	(void)state;
	/* Paths name the index or the name. */
	EXPECT_TERR("groups:\n  - name: a\n  - name: b\n    max_dumps: 0\n",
		    "t.yaml:4:16: groups[1].max_dumps: 0 is below the minimum 1");
	EXPECT_TERR("groups:\n  - name: a\n  - enabled: true\n",
		    "t.yaml:3:5: groups[1].name: required key is missing");
	EXPECT_TERR("groups:\n  - name: a\n  - colour: red\n",
		    "t.yaml:3:5: groups[1].colour: unknown key");
	EXPECT_TERR("groups:\n  - name: a\n  - b\n", "t.yaml:3:5: groups[1]: expected a mapping, got a scalar");
	EXPECT_TERR("groups:\n  -\n", "t.yaml:2:4: groups[0].name: required key is missing");
	EXPECT_TERR("groups: { name: a }\n",
		    "t.yaml:1:9: groups: expected a list of mappings, got a mapping");
	EXPECT_TERR("groups: [ {name: a}, {name: b}, {name: c}, {name: d} ]\n",
		    "t.yaml:1:9: groups: 4 entries is above the maximum 3");
	EXPECT_TERR("regions:\n  EU:\n    upstreams:\n      - name: x\n        batch: { max_delay: 2h }\n",
		    "t.yaml:5:29: regions.EU.upstreams[0].batch.max_delay: 2h is above the maximum 1h");
	EXPECT_TERR("regions:\n  EU: { upstreams: [] }\n",
		    "t.yaml:2:20: regions.EU.upstreams: 0 entries is below the minimum 1");
	EXPECT_TERR("regions:\n  EU: {}\n", "t.yaml:2:7: regions.EU.upstreams: required key is missing");
	EXPECT_TERR("regions:\n  EU: { upstreams: [ { kind: x } ] }\n",
		    "t.yaml:2:22: regions.EU.upstreams[0].name: required key is missing");
	EXPECT_TERR("regions:\n  EU: { upstreams: [ { name: a } ] }\n  US: 1\n",
		    "t.yaml:3:7: regions.US: expected a mapping, got a scalar");
	EXPECT_TERR("regions: [ EU ]\n",
		    "t.yaml:1:10: regions: expected a mapping of names to mappings, got a list");
	EXPECT_TERR("regions:\n  EU: { upstreams: [ { name: a } ] }\n  US: { upstreams: [ { name: b } ] }\n"
		    "  EU: { upstreams: [ { name: c } ] }\n  US: {}\n",
		    "t.yaml:4:3: regions.EU: duplicate key (first at 2:3)");
	EXPECT_TERR("regions:\n  ~: {}\n", "t.yaml:2:3: regions: a name must be a non-empty string, not null");
	EXPECT_TERR("regions:\n  [a]: {}\n", "t.yaml:2:3: regions: a name must be a non-empty string, not a list");
	EXPECT_TERR("regions:\n  a: &x { upstreams: [ { name: a } ] }\n  b: *x\n",
		    "t.yaml:3:6: regions.b: aliases (*x) are not supported; write the value out");
	EXPECT_TERR("regions: { a: {upstreams: [{name: a}]}, b: {upstreams: [{name: a}]}, "
		    "c: {upstreams: [{name: a}]}, d: {upstreams: [{name: a}]}, e: {} }\n",
		    "t.yaml:1:10: regions: 5 entries is above the maximum 4");
	/* An error after some elements were filled frees them all (ASan checks). */
	EXPECT_TERR("default_region: EU\nregions:\n  EU: { upstreams: [ { name: a, kind: b } ] }\n"
		    "groups:\n  - name: g\n  - name: h\n    max_dumps: x\n",
		    "t.yaml:7:16: groups[1].max_dumps: 'x' is not a whole number");
}

static void print_t(FILE *f, const void *arg)
{
	(void)arg;
	print_table(f, NULL, t_root_keys);
}

static void test_list_and_map_reference(void **state)
{
	(void)state;
	char *ref = print_to_string(print_t, NULL);

	assert_non_null(strstr(ref, "\n## Top level\n"));
	assert_non_null(strstr(ref, "| `default_region` | string | none |"));
	assert_non_null(strstr(ref, "| `regions` | map | empty | 0 .. 4 entries | Regions by name. "
				    "See `regions.<name>`. |"));
	assert_non_null(strstr(ref, "| `groups` | list | empty | 0 .. 3 entries |"));
	assert_non_null(strstr(ref, "\n## `regions.<name>`\n"));
	assert_non_null(strstr(ref, "\n## `regions.<name>.upstreams[]`\n"));
	assert_non_null(strstr(ref, "\n## `regions.<name>.upstreams[].batch`\n"));
	assert_non_null(strstr(ref, "\n## `groups[]`\n"));
	assert_non_null(strstr(ref, "| `max_delay` | duration | `5s` | 1ms .. 1h |"));
	assert_rows_in(t_root_keys, ref);
	free(ref);
}

/* Every default of every table converts and lies within its bounds. */
static void test_table_defaults(void **state)
{
	(void)state;
	struct t_root r;
	struct walk w = { .file = "t.yaml" };
	struct cg_config *c = calloc(1, sizeof *c);

	assert_non_null(c);
	assert_int_equal(apply_defaults(&w, config_keys, (char *)c), 0);
	free_table(config_keys, c);
	free(c);
	memset(&r, 0, sizeof r);
	assert_int_equal(apply_defaults(&w, t_root_keys, (char *)&r), 0);
	free_table(t_root_keys, &r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_full_file_flow),
		cmocka_unit_test(test_full_file_covers_every_key),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_nulls),
		cmocka_unit_test(test_bools),
		cmocka_unit_test(test_unknown_keys),
		cmocka_unit_test(test_wrong_kind),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_missing_required),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_aliases_rejected),
		cmocka_unit_test(test_yaml_syntax_errors),
		cmocka_unit_test(test_empty_files),
		cmocka_unit_test(test_input_bounds),
		cmocka_unit_test(test_gateway_id),
		cmocka_unit_test(test_topic_prefix),
		cmocka_unit_test(test_uri),
		cmocka_unit_test(test_cross_limits),
		cmocka_unit_test(test_cross_reconnect),
		cmocka_unit_test(test_cross_tls),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_formatting),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_short_error_buffer),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_demo_file),
		cmocka_unit_test(test_secret_file),
		cmocka_unit_test(test_reference),
		cmocka_unit_test(test_policy_errors),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_list_and_map),
		cmocka_unit_test(test_list_and_map_errors),
		cmocka_unit_test(test_list_and_map_reference),
		cmocka_unit_test(test_table_defaults),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
