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

struct cg_config {
	char *path;                 /* the file it was loaded from */

	struct {
		char *id;               /* required: 1–64 of [A-Za-z0-9._-] */
		char *data_dir;         /* required: RocksDB lives in data_dir/store */
		uint64_t sync_interval_ms; /* store group-commit interval, default 20 ms, 1..1000 */
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
};

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

/*
 * Read a secret from a file: the first line, trailing newline and CR
 * removed. Returns a malloc'd string (caller frees), or NULL with errno set.
 * Refuses files larger than 64 KiB.
 */
char *cg_read_secret_file(const char *path);

#endif
