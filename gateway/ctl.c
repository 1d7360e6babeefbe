/*
 * crashgatectl: look at what the store holds. It opens the store as a
 * RocksDB secondary instance, so it works while crashgated runs (and sees
 * what the daemon has written, including its not-yet-flushed WAL).
 *
 * Exit codes: 0 ok; 1 error; 2 usage; 3 bad configuration; 4 not found.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ftw.h>

#include "config.h"
#include "forward.h"
#include "plugin.h"
#include "policy.h"
#include "record.h"
#include "store.h"

struct ctl {
	struct cg_store *st;
	char gateway[CG_DEVICE_ID_MAX + 1];
	char scratch[64];
	bool json;
	json_t *rows;
};

static void rfc3339(int64_t ms, char *out, size_t cap)
{
	cg_record_time(ms, out, cap);
}

static json_t *record_json(struct ctl *c, const struct cg_dump_record *r)
{
	return cg_record_json(c->gateway, c->st, r);
}

static int collect_record(void *ctx, const struct cg_dump_record *r)
{
	struct ctl *c = ctx;
	json_array_append_new(c->rows, record_json(c, r));
	return 0;
}

struct open_count {
	json_int_t size, chunks;
};

static int count_chunk(void *ctx, uint32_t ordinal, const uint8_t *data, size_t len);

/* An open dump: its record, with size and chunks counted from the store. */
static int collect_open(void *ctx, const struct cg_dumpkey *k, const struct cg_dump_record *r)
{
	struct ctl *c = ctx;
	struct open_count n = { 0, 0 };
	cg_store_each_chunk(c->st, k, count_chunk, &n);
	json_t *row = record_json(c, r);
	json_object_set_new(row, "size", json_integer(n.size));
	json_object_set_new(row, "chunks", json_integer(n.chunks));
	json_array_append_new(c->rows, row);
	return 0;
}

static int count_chunk(void *ctx, uint32_t ordinal, const uint8_t *data, size_t len)
{
	struct open_count *n = ctx;
	(void)ordinal;
	(void)data;
	n->size += (json_int_t)len;
	n->chunks++;
	return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int open_store(struct ctl *c, const char *data_dir)
{
	char path[PATH_MAX], err[1024];
	snprintf(path, sizeof path, "%s/store", data_dir);
	snprintf(c->scratch, sizeof c->scratch, "/tmp/crashgatectl.XXXXXX");
	if (!mkdtemp(c->scratch)) {
		perror("mkdtemp");
		return 1;
	}
	if (cg_store_open_secondary(path, c->scratch, &c->st, err, sizeof err) != CG_OK) {
		fprintf(stderr, "crashgatectl: cannot open the store: %s\n", err);
		nftw(c->scratch, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
		return 1;
	}
	cg_store_refresh(c->st);
	if (cg_store_meta_get(c->st, "gateway_id", c->gateway, sizeof c->gateway) != CG_OK)
		snprintf(c->gateway, sizeof c->gateway, "gateway");
	return 0;
}

static void close_store(struct ctl *c)
{
	cg_store_close(c->st);
	nftw(c->scratch, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void print_table(json_t *rows)
{
	printf("%-48s %-20s %-8s %10s %-24s %s\n", "ID", "DEVICE", "STATUS", "SIZE", "RECEIVED", "BUILD_ID");
	size_t i;
	json_t *r;
	json_array_foreach(rows, i, r) {
		const char *id = json_string_value(json_object_get(r, "id"));
		const char *recv = json_string_value(json_object_get(r, "received_at"));
		const char *bid = json_string_value(json_object_get(r, "build_id"));
		char idbuf[80];
		if (!id) {
			snprintf(idbuf, sizeof idbuf, "(open %s/%" JSON_INTEGER_FORMAT ")",
				 json_string_value(json_object_get(r, "device")),
				 json_integer_value(json_object_get(r, "dump_id")));
			id = idbuf;
		}
		printf("%-48s %-20s %-8s %10" JSON_INTEGER_FORMAT " %-24s %s\n", id,
		       json_string_value(json_object_get(r, "device")),
		       json_string_value(json_object_get(r, "status")),
		       json_integer_value(json_object_get(r, "size")), recv ? recv : "-", bid ? bid : "-");
	}
}

/* Find a stored dump by stable id, by "device/dump_id" or by sequence number. */
static int find_dump(struct ctl *c, const char *id, struct cg_dump_record *out)
{
	return cg_record_find(c->st, c->gateway, id, out);
}

/* Crash groups (SPEC §10 `signatures`): the gateway's own counts per
 * signature (they outlive the records, and count throttled occurrences
 * whose bytes were never stored), with the devices that had the crash. */
struct sig_ctx {
	struct ctl *c;
	json_t *groups;
};

static int count_key(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	(*(json_int_t *)ctx)++;
	return 0;
}

static int collect_signature(void *ctx, const char *sig, const struct cg_sig_stats *s)
{
	struct sig_ctx *sc = ctx;
	char when[40];
	json_t *g = json_object();
	json_object_set_new(g, "signature", json_string(sig));
	json_object_set_new(g, "count", json_integer((json_int_t)s->stored));
	json_object_set_new(g, "throttled", json_integer((json_int_t)s->throttled));
	json_object_set_new(g, "occurrences", json_integer((json_int_t)(s->stored + s->throttled)));
	rfc3339(s->first_seen_ms, when, sizeof when);
	json_object_set_new(g, "first_seen", json_string(when));
	rfc3339(s->last_seen_ms, when, sizeof when);
	json_object_set_new(g, "last_seen", json_string(when));
	if (s->reason[0])
		json_object_set_new(g, "reason", json_string(s->reason));
	uint8_t prefix[CG_POLICY_KEY_MAX];
	prefix[0] = 'd';
	memcpy(prefix + 1, sig, 16);
	json_int_t devices = 0;
	cg_store_scan_policy(sc->c->st, prefix, 17, count_key, &devices);
	json_object_set_new(g, "devices", json_integer(devices));
	json_object_set_new(sc->groups, sig, g);
	return 0;
}

static void print_signatures(json_t *groups, bool as_json)
{
	json_t *rows = json_array();
	const char *key;
	json_t *g;
	json_object_foreach(groups, key, g) {
		json_array_append_new(rows, json_deep_copy(g));
	}
	if (as_json) {
		json_dumpf(rows, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		printf("%-16s %7s %9s %7s %-24s %-24s %s\n", "SIGNATURE", "COUNT", "THROTTLED", "DEVICES",
		       "FIRST_SEEN", "LAST_SEEN", "REASON");
		size_t i;
		json_t *r;
		json_array_foreach(rows, i, r) {
			const char *reason = json_string_value(json_object_get(r, "reason"));
			printf("%-16s %7" JSON_INTEGER_FORMAT " %9" JSON_INTEGER_FORMAT " %7" JSON_INTEGER_FORMAT
			       " %-24s %-24s %s\n",
			       json_string_value(json_object_get(r, "signature")),
			       json_integer_value(json_object_get(r, "count")),
			       json_integer_value(json_object_get(r, "throttled")),
			       json_integer_value(json_object_get(r, "devices")),
			       json_string_value(json_object_get(r, "first_seen")),
			       json_string_value(json_object_get(r, "last_seen")), reason ? reason : "-");
		}
	}
	json_decref(rows);
}

static void print_queue(struct ctl *c, const struct cg_config *cfg)
{
	json_t *rows = cg_forward_queue_json(cfg, c->st);
	if (c->json) {
		json_dumpf(rows, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		printf("%-20s %-8s %-8s %7s %12s %10s %6s  %s\n", "UPSTREAM", "KIND", "REGION", "DEPTH",
		       "BYTES", "OLDEST_S", "DEAD", "LAST_ERROR / NEXT_RETRY");
		size_t i;
		json_t *r;
		json_array_foreach(rows, i, r) {
			const char *le = json_string_value(json_object_get(r, "last_error"));
			const char *nr = json_string_value(json_object_get(r, "next_retry"));
			json_t *age = json_object_get(r, "oldest_age_s");
			char ages[24] = "-";
			if (age)
				snprintf(ages, sizeof ages, "%" JSON_INTEGER_FORMAT, json_integer_value(age));
			printf("%-20s %-8s %-8s %7" JSON_INTEGER_FORMAT " %12" JSON_INTEGER_FORMAT " %10s %6"
			       JSON_INTEGER_FORMAT "  %s%s%s\n",
			       json_string_value(json_object_get(r, "upstream")),
			       json_string_value(json_object_get(r, "kind")),
			       json_string_value(json_object_get(r, "region")),
			       json_integer_value(json_object_get(r, "depth")),
			       json_integer_value(json_object_get(r, "bytes")),
			       ages,
			       json_integer_value(json_object_get(r, "dead_letters")), le ? le : "-",
			       nr ? " / " : "", nr ? nr : "");
		}
	}
	json_decref(rows);
}

/* ---- retry: ask the daemon to send dead-letter batches again ---- */

struct dl_list {
	uint64_t seqs[4096];
	size_t n;
	size_t prefix;
};

static int collect_dead(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	struct dl_list *l = ctx;
	(void)val, (void)vlen;
	if (klen != l->prefix + 8 || l->n == sizeof l->seqs / sizeof l->seqs[0])
		return 0;
	uint64_t seq = 0;
	for (int i = 0; i < 8; i++)
		seq = (seq << 8) | key[l->prefix + i];
	l->seqs[l->n++] = seq;
	return 0;
}

/* The store belongs to the daemon (this tool opens a read-only view), so
 * the request is a file the forwarder picks up: data_dir/retry/NAME/SEQ. */
static int request_retry(struct ctl *c, const struct cg_config *cfg, const char *upstream,
			 const char *only)
{
	bool known = false;
	for (size_t i = 0; i < cfg->n_regions; i++)
		for (size_t j = 0; j < cfg->regions[i].n_upstreams; j++)
			known |= strcmp(cfg->regions[i].upstreams[j].name, upstream) == 0;
	if (!known) {
		fprintf(stderr, "crashgatectl: no upstream named %s in %s\n", upstream, cfg->path);
		return 4;
	}
	struct dl_list *l = calloc(1, sizeof *l);
	if (!l)
		return 1;
	uint8_t key[208];
	l->prefix = cg_forward_key(key, sizeof key, upstream, 'd');
	cg_store_scan_policy(c->st, key, l->prefix, collect_dead, l);
	char dir[4096], path[4200];
	snprintf(dir, sizeof dir, "%s/retry", cfg->gateway.data_dir);
	mkdir(dir, 0700);
	snprintf(dir, sizeof dir, "%s/retry/%s", cfg->gateway.data_dir, upstream);
	mkdir(dir, 0700);
	size_t asked = 0;
	for (size_t i = 0; i < l->n; i++) {
		char name[24];
		snprintf(name, sizeof name, "%" PRIu64, l->seqs[i]);
		if (only && strcmp(only, name) != 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, name);
		FILE *f = fopen(path, "w");
		if (!f) {
			fprintf(stderr, "crashgatectl: cannot write %s: %s\n", path, strerror(errno));
			free(l);
			return 1;
		}
		fclose(f);
		printf("%s: dead-letter batch %s queued to be sent again\n", upstream, name);
		asked++;
	}
	free(l);
	if (!asked) {
		fprintf(stderr, "crashgatectl: %s has no dead-letter batch%s%s\n", upstream,
			only ? " starting at " : "", only ? only : "");
		return 4;
	}
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: crashgatectl [-c FILE | --data-dir DIR] [--json] COMMAND\n"
		"commands:\n"
		"  list                 dumps in the store (stored and open)\n"
		"  show ID              one dump: ID is the stable id, DEVICE/DUMP_ID or the sequence number\n"
		"  download ID [-o F]   the dump's bytes (to stdout unless -o)\n"
		"  signatures           crash groups: count, throttled, devices, first and last seen, reason\n"
		"  queue                per upstream (needs -c FILE): dumps waiting, bytes, oldest age,\n"
		"                       dead letters, last error, next retry\n"
		"  retry UPSTREAM [SEQ] send dead-letter batches again (all, or the one starting at SEQ);\n"
		"                       needs -c FILE; the running gateway picks the request up\n"
		"  check-config FILE    validate a configuration file\n"
		"exit: 0 ok, 1 error, 2 usage, 3 bad configuration, 4 not found\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "config", 1, 0, 'c' }, { "data-dir", 1, 0, 'D' }, { "json", 0, 0, 'j' },
		{ "output", 1, 0, 'o' }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 },
	};
	const char *cfg_path = NULL, *data_dir = NULL, *output = NULL;
	struct ctl c = { 0 };
	int o;
	/* GNU getopt permutes: options may stand before or after the command. */
	while ((o = getopt_long(argc, argv, "c:jo:h", lo, NULL)) != -1) {
		switch (o) {
		case 'c': cfg_path = optarg; break;
		case 'D': data_dir = optarg; break;
		case 'j': c.json = true; break;
		case 'o': output = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[optind++];
	const char *arg = optind < argc ? argv[optind] : NULL;

	char err[1024];
	if (strcmp(cmd, "check-config") == 0) {
		struct cg_config *cfg = NULL;
		const char *p = arg ? arg : cfg_path;
		if (!p) {
			usage(stderr);
			return 2;
		}
		if (cg_config_load(p, &cfg, err, sizeof err) != 0) {
			fprintf(stderr, "%s\n", err);
			return 3;
		}
		if (cg_outputs_check(cfg, err, sizeof err) != 0) {   /* plugins and their keys */
			fprintf(stderr, "%s\n", err);
			cg_config_free(cfg);
			return 3;
		}
		printf("%s: ok\n", p);
		cg_config_free(cfg);
		return 0;
	}
	struct cg_config *cfg = NULL;
	if (!data_dir && cfg_path) {
		if (cg_config_load(cfg_path, &cfg, err, sizeof err) != 0) {
			fprintf(stderr, "%s\n", err);
			return 3;
		}
		data_dir = cfg->gateway.data_dir;
	}
	if (!data_dir) {
		fprintf(stderr, "crashgatectl: say where the store is: -c FILE or --data-dir DIR\n");
		return 2;
	}
	if (strcmp(cmd, "retry") == 0) {
		if (!cfg || !arg) {
			fprintf(stderr, "crashgatectl: retry needs -c FILE and an upstream name\n");
			cg_config_free(cfg);
			return 2;
		}
		if (open_store(&c, data_dir) != 0) {
			cg_config_free(cfg);
			return 1;
		}
		int rrc = request_retry(&c, cfg, arg, optind + 1 < argc ? argv[optind + 1] : NULL);
		close_store(&c);
		cg_config_free(cfg);
		return rrc;
	}
	if (strcmp(cmd, "queue") == 0 && !cfg) {
		fprintf(stderr, "crashgatectl: queue needs the configuration (-c FILE) to know the upstreams\n");
		return 2;
	}
	if (strcmp(cmd, "list") != 0 && strcmp(cmd, "show") != 0 && strcmp(cmd, "download") != 0 &&
	    strcmp(cmd, "signatures") != 0 && strcmp(cmd, "queue") != 0) {
		fprintf(stderr, "crashgatectl: unknown command '%s'\n", cmd);
		usage(stderr);
		cg_config_free(cfg);
		return 2;
	}
	if ((strcmp(cmd, "show") == 0 || strcmp(cmd, "download") == 0) && !arg) {
		usage(stderr);
		cg_config_free(cfg);
		return 2;
	}
	if (open_store(&c, data_dir) != 0) {
		cg_config_free(cfg);
		return 1;
	}
	int rc = 0;
	if (strcmp(cmd, "queue") == 0) {
		print_queue(&c, cfg);
		close_store(&c);
		cg_config_free(cfg);
		return 0;
	}
	if (strcmp(cmd, "signatures") == 0) {
		json_t *groups = json_object();
		struct sig_ctx sc = { &c, groups };
		cg_policy_scan_sigs(c.st, collect_signature, &sc);
		print_signatures(groups, c.json);
		json_decref(groups);
	} else if (strcmp(cmd, "list") == 0) {
		c.rows = json_array();
		cg_store_scan_records(c.st, collect_record, &c);
		cg_store_scan_open(c.st, collect_open, &c);
		if (c.json) {
			json_dumpf(c.rows, stdout, JSON_INDENT(2));
			printf("\n");
		} else {
			print_table(c.rows);
		}
		json_decref(c.rows);
	} else {
		struct cg_dump_record *r = malloc(sizeof *r);
		if (!r || find_dump(&c, arg, r) != CG_OK) {
			fprintf(stderr, "crashgatectl: no dump '%s'\n", arg);
			rc = 4;
		} else if (strcmp(cmd, "show") == 0) {
			json_t *o2 = record_json(&c, r);
			if (c.json) {
				json_dumpf(o2, stdout, JSON_INDENT(2));
				printf("\n");
			} else {
				const char *k;
				json_t *v;
				json_object_foreach(o2, k, v) {
					char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY);
					printf("%-12s %s\n", k, s ? s : json_string_value(v));
					free(s);
				}
			}
			json_decref(o2);
		} else {
			uint8_t *body = NULL;
			size_t len = 0;
			if (cg_store_get_body(c.st, r->seq, &body, &len) != CG_OK) {
				fprintf(stderr, "crashgatectl: the body of '%s' is not in the store\n", arg);
				rc = 4;
			} else {
				FILE *f = output ? fopen(output, "wb") : stdout;
				if (!f || fwrite(body, 1, len, f) != len) {
					perror(output ? output : "stdout");
					rc = 1;
				}
				if (f && f != stdout && fclose(f) != 0)
					rc = 1;
				free(body);
			}
		}
		free(r);
	}
	close_store(&c);
	cg_config_free(cfg);
	return rc;
}
