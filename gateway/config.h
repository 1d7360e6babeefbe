/*
 * crashgate configuration (SPEC §9): one YAML file, validated in full against
 * declarative key tables (STYLE §7). Every error names file:line:column and
 * the dotted key path. The same tables print the configuration reference.
 */
#ifndef CG_CONFIG_H
#define CG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct cg_tls_config {
	char *ca_file;              /* NULL = system store */
	char *cert_file;            /* client certificate (PEM), optional */
	char *key_file;             /* client key (PEM), optional */
	bool verify_hostname;       /* default true */
};

/* A key of a mapping whose table leaves it to someone else (an output
 * plugin's own options): kept as text with its position, validated later
 * against the plugin's table (cg_config_apply_options). */
struct cg_conf_extra {
	char *key;
	char *value;                /* scalar text */
	unsigned line, col;
};

struct cg_conf_extras {
	struct cg_conf_extra *items;
	size_t n;
	char *where;                /* key path of the mapping ("regions.EU.upstreams[0]") */
	unsigned line, col;         /* where the mapping starts */
};

/* One upstream of a region (SPEC §8). */
struct cg_upstream_config {
	char *name;                 /* unique across all regions */
	char *kind;                 /* output plugin: crashgate_out_<kind>.so */
	struct {
		uint32_t max_dumps;
		uint64_t max_bytes;
		uint64_t max_delay_ms;
	} batch;
	struct {
		uint64_t min_ms;        /* first backoff after a transient failure */
		uint64_t max_ms;        /* backoff ceiling */
	} retry;
	struct cg_conf_extras options;  /* every other key: the plugin's */
};

struct cg_region_config {
	char *name;                 /* "EU", "US", ...: [A-Za-z0-9_-], not "None" */
	struct cg_upstream_config *upstreams;
	size_t n_upstreams;
};

enum { CG_CONSENT_DISABLED = 0, CG_CONSENT_ENABLED = 1 };

/* A device group (SPEC §6). */
struct cg_group_config {
	char *name;
	char **devices;             /* globs over the device id (fnmatch) */
	size_t n_devices;
	uint32_t crash_dumps;       /* CG_CONSENT_* */
	char *region;               /* a region name, or "None" = default_region */
	struct {
		uint64_t start_ms;      /* 0 = open start */
		uint64_t stop_ms;       /* 0 = open end */
		uint32_t max_dumps;     /* 0 = no quota */
	} collection;
};

struct cg_config {
	char *path;                 /* the file it was loaded from */

	struct {
		char *id;               /* required: 1–64 of [A-Za-z0-9._-] */
		char *data_dir;         /* required: RocksDB lives in data_dir/store */
		uint64_t sync_interval_ms; /* store group-commit interval, default 20 ms, 1..1000 */
		char *plugin_dir;       /* output plugins; NULL = $CRASHGATE_PLUGIN_DIR or the install dir */
	} gateway;

	struct {
		char *uri;              /* tcp://host:port or ssl://host:port; default tcp://127.0.0.1:1883 */
		char *client_id;        /* default "crashgate" */
		char *topic_prefix;     /* default "crashgate/v1", no wildcards, no trailing '/' */
		char *username;         /* optional */
		char *password_file;    /* optional; the secret is read from this file, never logged */
		uint64_t keepalive_ms;  /* default 30s, 5s..1h */
		uint64_t reconnect_min_ms; /* default 1s */
		uint64_t reconnect_max_ms; /* default 30s, >= reconnect_min */
		uint32_t max_inflight;  /* messages in flight to the broker (acks), default 100 */
		bool tls_enabled;       /* true when a `tls:` section is present */
		struct cg_tls_config tls;
	} mqtt;

	struct {
		uint64_t max_dump_bytes;         /* default 16 MiB, 1 KiB..1 GiB */
		uint64_t max_chunk_bytes;        /* default 64 KiB, 16 B..1 MiB, <= max_dump_bytes */
		uint64_t reassembly_timeout_ms;  /* default 10 min, 1s..7d */
		uint32_t max_open_dumps;         /* default 10000, 1..10,000,000 */
		uint32_t max_open_dumps_per_device; /* default 4, 1..max_open_dumps */
		uint64_t max_store_bytes;        /* default 2 GiB, >= max_dump_bytes */
	} limits;

	char *default_region;       /* where groups with regional_data_boundary None go */
	struct cg_region_config *regions;
	size_t n_regions;
	struct cg_group_config *groups;
	size_t n_groups;

	struct {
		uint32_t max_identical;        /* full dumps per signature per window, default 5 */
		uint64_t window_ms;            /* default 24 h */
	} throttle;
	struct {
		uint64_t valid_for_ms;         /* default 48 h */
	} consent;
	struct {
		uint64_t dumps_ms;             /* default 29 d */
		uint64_t history_ms;           /* default 15 d */
	} retention;

	bool admin_enabled;                /* an `admin:` section is present */
	struct {
		char *listen;                  /* host:port, default 127.0.0.1:8080 */
		char *token_file;              /* bearer token (a secret); required off loopback */
	} admin;
};

/* The group a device belongs to (SPEC §6.1): the first whose globs match,
 * else the group named "default", else NULL (the built-in default group:
 * consent disabled). */
const struct cg_group_config *cg_config_group_for(const struct cg_config *cfg, const char *device);

/* The region a group's dumps belong to ("None" resolved to default_region). */
const char *cg_config_group_region(const struct cg_config *cfg, const struct cg_group_config *g);

/*
 * Validate an upstream's plugin options against the plugin's table (rows of
 * struct cg_plugin_option) and fill the zeroed struct at base: defaults,
 * then the values written. Unknown keys, missing required keys and bad
 * values fail with "FILE:LINE:COL: KEY.PATH: message" in err. Strings are
 * malloc'd into base; cg_config_free_options releases them.
 */
struct cg_plugin_option;
int cg_config_apply_options(const struct cg_config *cfg, const struct cg_upstream_config *u,
			    const char *plugin_kind, const struct cg_plugin_option *table, void *base,
			    char *err, size_t errlen);
void cg_config_free_options(const struct cg_plugin_option *table, void *base);

/* Where plugins are loaded from: gateway.plugin_dir, else $CRASHGATE_PLUGIN_DIR,
 * else the directory the build installs them to. */
const char *cg_config_plugin_dir(const struct cg_config *cfg);

/* Look a region up by name; NULL if absent. */
const struct cg_region_config *cg_config_region(const struct cg_config *cfg, const char *name);

/*
 * Load and validate FILE. On success returns 0 and sets *out (caller frees
 * with cg_config_free). On failure returns -1 and writes one message of the
 * form "FILE:LINE:COL: KEY: what is wrong" into err (always NUL-terminated).
 */
int cg_config_load(const char *path, struct cg_config **out, char *err, size_t errlen);

/* Same, from a string in memory; `name` stands for the file in messages. */
int cg_config_load_string(const char *name, const char *yaml, size_t len,
			  struct cg_config **out, char *err, size_t errlen);

void cg_config_free(struct cg_config *cfg);

/* Print the reference (every key: type, default, bounds, meaning) as Markdown. */
void cg_config_print_reference(FILE *out);

/* Parse "16MiB" / "10m" style values (exposed for tests and the CLI tools).
 * Return 0 on success, -1 on a malformed value or overflow. */
int cg_parse_size(const char *s, uint64_t *bytes);
int cg_parse_duration(const char *s, uint64_t *ms);
/* RFC 3339 ("2026-01-31T00:00:00Z", "...T01:00:00.5+01:00") to unix ms. */
int cg_parse_time(const char *s, int64_t *ms);
/* Unix ms as RFC 3339 UTC, second precision ("-" for negative). */
void cg_format_time(int64_t ms, char *out, size_t cap);

/*
 * Read a secret from a file: the first line, trailing newline and CR
 * removed. Returns a malloc'd string (caller frees), or NULL with errno set.
 * Refuses files larger than 64 KiB.
 */
char *cg_read_secret_file(const char *path);

#endif
