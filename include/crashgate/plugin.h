/*
 * crashgate output plugin ABI (SPEC §8, STYLE §6).
 *
 * An output plugin is a shared object in gateway.plugin_dir named
 * `crashgate_out_<kind>.so` that exports one symbol, CG_PLUGIN_SYMBOL, a
 * `const struct cg_plugin`. The struct starts with the ABI version and its own
 * size; the loader refuses a plugin whose version differs from the one it was
 * built with, or whose struct is smaller than the fields it needs. Fields are
 * only ever appended, so a newer core can tell which ones an older plugin has.
 *
 * Lifecycle, all calls from one forwarder thread per upstream:
 *   init(host, options, &state)  once, with the upstream's options parsed and
 *                                 validated against the plugin's table
 *   flush(state, batch, &result)  many times; returns OK / RETRY / DROP
 *   destroy(state)                once
 * The core owns batching, retries with backoff (honouring result.retry_after_ms),
 * the dead-letter state and deleting what was delivered. A plugin only
 * delivers one batch and says how that went. A plugin must not keep pointers
 * into a batch after flush returns.
 *
 * Options: the plugin declares its keys as a table of cg_plugin_option rows
 * (offsets into its own options struct of options_size bytes). The core
 * validates the YAML against the table exactly like its own configuration
 * (types, bounds, required keys, unknown keys are errors with file:line:col),
 * fills a zeroed struct, and frees the strings it allocated after destroy.
 */
#ifndef CRASHGATE_PLUGIN_H
#define CRASHGATE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 2: cg_plugin_batch.record_status (per-record outcomes). */
#define CG_PLUGIN_ABI_VERSION 2
#define CG_PLUGIN_SYMBOL "crashgate_output_plugin"
/* Plugins are built with hidden visibility; the one exported struct is
 * declared `CG_PLUGIN_EXPORT const struct cg_plugin crashgate_output_plugin`. */
#define CG_PLUGIN_EXPORT __attribute__((visibility("default")))

/* ---- options ---- */

enum cg_plugin_option_type {
	CG_OPT_STRING = 1,    /* char * (core-owned) */
	CG_OPT_PATH,          /* char * (core-owned), a file-system path */
	CG_OPT_BOOL,          /* bool */
	CG_OPT_UINT32,        /* uint32_t */
	CG_OPT_SIZE,          /* uint64_t bytes ("4MiB") */
	CG_OPT_DURATION,      /* uint64_t milliseconds ("30s") */
	CG_OPT_ENUM,          /* uint32_t index into values */
};

#define CG_OPT_REQUIRED 1u

struct cg_plugin_option {
	const char *name;             /* NULL ends the table */
	uint32_t type;                /* enum cg_plugin_option_type */
	uint32_t flags;               /* CG_OPT_REQUIRED */
	size_t offset;                /* into the plugin's options struct */
	const char *def;              /* default as YAML text; NULL = none */
	uint64_t min, max;            /* bounds (strings: length); max 0 = none */
	const char *desc;             /* one line for the configuration reference */
	const char *const *values;    /* ENUM: accepted spellings, NULL-terminated */
};

/* ---- what is delivered ---- */

/*
 * One dump, or one count of throttled occurrences (body NULL, status
 * "throttled"). `meta_json` is the SPEC §12 record as a JSON object and
 * `meta_cbor` the same record as a CBOR map with the same text keys; both are
 * valid for the duration of flush.
 */
struct cg_plugin_record {
	const char *id;               /* stable id: {gateway}/{device}/{dump_id}/{received_at} */
	const char *device;
	uint64_t dump_id;
	const char *group;            /* "" when none */
	const char *region;
	const char *status;           /* "stored" or "throttled" */
	const char *format;           /* "zephyr", "minidump", "elf-core", "raw" */
	const char *signature;        /* 16 hex digits, "" when unknown */
	int64_t received_at_ms;
	uint64_t occurrences;         /* times this crash was seen (stored + throttled) */
	const char *meta_json;
	const uint8_t *meta_cbor;
	size_t meta_cbor_len;
	const uint8_t *body;          /* the dump's bytes; NULL for a throttled count */
	size_t body_len;
};

struct cg_plugin_batch {
	const struct cg_plugin_record *records;
	size_t n;
	uint64_t body_bytes;          /* sum of body_len */
	uint64_t batch_id;            /* unique per upstream; the same when a batch is retried */
	/*
	 * n entries, zeroed by the core, or NULL. A plugin that sends records
	 * one at a time may set each to the record's own outcome (enum
	 * cg_flush_status); 0 means "as result.status". The core then forgets
	 * the records marked OK (a retry does not send them again), makes only
	 * those marked DROP dead letters, and retries the rest. A plugin that
	 * delivers the batch as a whole leaves it alone.
	 */
	uint32_t *record_status;
};

enum cg_flush_status {
	CG_FLUSH_OK = 1,              /* delivered: the core may forget it (never 0: a zeroed
	                               * result is not success) */
	CG_FLUSH_RETRY = 2,           /* transient (network, timeout, 408, 429, 5xx): try again */
	CG_FLUSH_DROP = 3,            /* permanent (other 4xx, rejected): dead letter */
};

struct cg_flush_result {
	uint32_t status;              /* enum cg_flush_status */
	uint64_t retry_after_ms;      /* RETRY: the upstream asked for at least this wait; 0 = none */
	char reason[256];             /* why, for logs and the dead-letter state; no secrets */
};

/* ---- what the core offers ---- */

enum cg_plugin_log_level { CG_PLOG_DEBUG, CG_PLOG_INFO, CG_PLOG_WARN, CG_PLOG_ERROR };

/* Valid from init until destroy returns; the plugin may keep the pointer.
 * init may run for several upstreams at once, each on its own thread. */
struct cg_plugin_host {
	uint32_t abi_version;
	uint32_t struct_size;
	const char *gateway_id;
	const char *upstream;         /* the upstream's name */
	const char *region;
	/* One log line, tagged with the upstream; never pass secrets or dump bytes. */
	void (*log)(const struct cg_plugin_host *host, int level, const char *fmt, ...)
		__attribute__((format(printf, 3, 4)));
	/* Read a secret file's first line, without its CR/LF (malloc'd, caller
	 * frees with free()); NULL on error. Paths are as written in the
	 * configuration: relative ones resolve against the gateway's working
	 * directory. */
	char *(*read_secret)(const char *path);
	/* The batch as the documented CBOR document (plugins/README.md):
	 * {"gateway", "upstream", "region", "batch_id", "records": [{"meta": {...}, ? "dump": bstr}]}.
	 * *buf is malloc'd, the caller frees it with free(). Returns 0 or -1. */
	int (*batch_cbor)(const struct cg_plugin_host *host, const struct cg_plugin_batch *batch,
			  uint8_t **buf, size_t *len);
};

/* ---- the exported struct ---- */

struct cg_plugin {
	uint32_t abi_version;         /* CG_PLUGIN_ABI_VERSION */
	uint32_t struct_size;         /* sizeof(struct cg_plugin) as the plugin was built */
	const char *kind;             /* "http", "sentry", "mqtt", "file"; matches the file name */
	const char *description;
	const struct cg_plugin_option *options;
	size_t options_size;          /* sizeof the plugin's options struct */
	/* Returns 0, or -1 with a message in err (no secrets). */
	int (*init)(const struct cg_plugin_host *host, const void *options, void **state,
		    char *err, size_t errlen);
	void (*flush)(void *state, const struct cg_plugin_batch *batch, struct cg_flush_result *result);
	void (*destroy)(void *state);
};

#endif
