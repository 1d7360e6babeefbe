/*
 * crashgated: the daemon. Owns the process state (struct cg_daemon), wires
 * the store, the reassembler and the MQTT client together, runs the
 * committer thread (grouped fsyncs, `complete` acks after them, expiry of
 * idle dumps) and handles signals in the main thread.
 *
 * Exit codes: 0 clean stop; 1 runtime failure; 2 usage; 3 bad configuration;
 * 4 store cannot be opened.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "admin.h"
#include "config.h"
#include "forward.h"
#include "ingest.h"
#include "log.h"
#include "plugin.h"
#include "reassembly.h"
#include "store.h"

struct cg_daemon {
	struct cg_config *cfg;          /* as started: the store and the MQTT client use it */
	struct cg_config *active;       /* the policy in force (cfg, or the last reload) */
	struct cg_store *store;
	struct cg_reasm *reasm;
	struct cg_ingest *ingest;
	struct cg_forwarder *forwarder;
	struct cg_admin *admin;
	pthread_t committer;
	atomic_bool stopping;
};

/* The signals the main thread takes with sigwait (blocked everywhere). */
static void daemon_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Group commit: wake when a dump completed (or every sync_interval), fsync
 * the WAL once for everything written since the last sync, then send the
 * `complete` acks that were waiting for it. While one fsync runs, further
 * completions queue up and share the next one.
 */
static void *committer_main(void *arg)
{
	struct cg_daemon *d = arg;
	int64_t last_tick = mono_ms();
	while (!atomic_load(&d->stopping)) {
		bool completed = cg_reasm_wait(d->reasm, d->cfg->gateway.sync_interval_ms);
		cg_reasm_commit(d->reasm);
		if (completed)
			cg_forwarder_wake(d->forwarder);
		if (mono_ms() - last_tick >= 1000) {
			cg_reasm_tick(d->reasm);
			last_tick = mono_ms();
		}
	}
	return NULL;
}

static void log_stats(struct cg_daemon *d)
{
	struct cg_reasm_stats s;
	cg_reasm_get_stats(d->reasm, &s);
	struct cg_ingest_stats is;
	cg_ingest_get_stats(d->ingest, &is);
	log_info("main", "stats: messages=%" PRIu64 " chunks=%" PRIu64 " stored=%" PRIu64 " repeated=%" PRIu64
		 " malformed=%" PRIu64 " completed=%" PRIu64 " duplicate=%" PRIu64 " rejected=%" PRIu64
		 " expired=%" PRIu64 " busy=%" PRIu64 " open=%u store_bytes=%" PRIu64 " syncs=%" PRIu64
		 " reconnects=%" PRIu64 " throttled=%" PRIu64 " throttled_early=%" PRIu64
		 " deduplicated=%" PRIu64 " consent_refused=%" PRIu64 " consent_published=%" PRIu64
		 " devices=%" PRIu64 " config_generation=%" PRIu64,
		 is.messages, s.chunks_received, s.chunks_stored, s.chunks_repeated, s.messages_malformed,
		 s.dumps_completed, s.dumps_duplicate, s.dumps_rejected, s.dumps_expired, s.busy, s.open_dumps,
		 s.store_bytes, s.syncs, is.connects ? is.connects - 1 : 0, s.dumps_throttled,
		 s.dumps_throttled_early, s.dumps_deduplicated, s.consent_refused, s.consent_published,
		 s.devices_seen, s.config_generation);
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: crashgated -c FILE [--log-level debug|info|warn|error] [--log-format text|json]\n"
		"       crashgated --check-config FILE\n"
		"       crashgated --config-reference\n"
		"\n"
		"Signals: SIGTERM/SIGINT stop (pending syncs and acks finish first); SIGHUP reloads the\n"
		"configuration (a bad file keeps the running one); SIGUSR1 logs counters.\n"
		"Exit codes: 0 stopped cleanly, 1 runtime failure, 2 usage, 3 bad configuration, 4 store error.\n");
}

static int check_config(const char *path)
{
	struct cg_config *cfg = NULL;
	char err[1024];
	if (cg_config_load(path, &cfg, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		return 3;
	}
	/* Each upstream's plugin is loaded and its options checked too. */
	if (cg_outputs_check(cfg, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		cg_config_free(cfg);
		return 3;
	}
	printf("%s: ok\n", path);
	cg_config_free(cfg);
	return 0;
}

/* mkdir -p with owner-only permissions: dumps are private data. */
static int make_dirs(const char *dir)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s", dir);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			return -1;
		*s = '/';
	}
	return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static bool str_differs(const char *a, const char *b)
{
	return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/*
 * SIGHUP: validate the whole file, then switch the policy and limits in one
 * step under the reassembler's lock. A bad file changes nothing. Settings
 * that belong to open resources (store directory, broker connection) keep
 * their running values; the log says which need a restart.
 */
static void reload(struct cg_daemon *d)
{
	char err[1024];
	struct cg_config *n = NULL;
	if (cg_config_load(d->cfg->path, &n, err, sizeof err) != 0) {
		log_error("main", "reload refused, keeping the running configuration: %s", err);
		return;
	}
	const struct cg_config *o = d->cfg;
	if (str_differs(o->gateway.id, n->gateway.id) || str_differs(o->gateway.data_dir, n->gateway.data_dir))
		log_warn("main", "reload: gateway.id and gateway.data_dir take effect at the next start");
	if (str_differs(o->mqtt.uri, n->mqtt.uri) || str_differs(o->mqtt.client_id, n->mqtt.client_id) ||
	    str_differs(o->mqtt.topic_prefix, n->mqtt.topic_prefix) ||
	    str_differs(o->mqtt.username, n->mqtt.username) ||
	    str_differs(o->mqtt.password_file, n->mqtt.password_file) ||
	    o->mqtt.tls_enabled != n->mqtt.tls_enabled)
		log_warn("main", "reload: the mqtt section takes effect at the next start");
	if (n->n_regions != o->n_regions)
		log_warn("main", "reload: regions and upstreams take effect at the next start");
	cg_reasm_set_config(d->reasm, n);
	/* The reassembler no longer reads the previous policy. The startup
	 * configuration stays: the store and the MQTT client hold its values. */
	if (d->active != d->cfg)
		cg_config_free(d->active);
	d->active = n;
	log_info("main", "configuration %s reloaded: %zu groups, %zu regions", n->path, n->n_groups,
		 n->n_regions);
}

static int run(struct cg_daemon *d)
{
	char err[1024];
	char path[PATH_MAX];
	if (make_dirs(d->cfg->gateway.data_dir) != 0) {
		log_error("main", "cannot create data_dir %s: %s", d->cfg->gateway.data_dir, strerror(errno));
		return 4;
	}
	snprintf(path, sizeof path, "%s/store", d->cfg->gateway.data_dir);
	int rc = cg_store_open(path, &d->store, err, sizeof err);
	if (rc != CG_OK) {
		log_error("main", "cannot open store: %s", err);
		return 4;
	}
	cg_store_meta_put(d->store, "gateway_id", d->cfg->gateway.id);
	rc = cg_ingest_create(d->cfg, &d->ingest, err, sizeof err);
	if (rc != CG_OK) {
		log_error("main", "%s", err);
		return rc == CG_ERR_CONFIG ? 3 : 1;
	}
	struct cg_reasm_opts ro = {
		.gateway_id = d->cfg->gateway.id,
		.max_dump_bytes = d->cfg->limits.max_dump_bytes,
		.max_chunk_bytes = d->cfg->limits.max_chunk_bytes,
		.reassembly_timeout_ms = d->cfg->limits.reassembly_timeout_ms,
		.max_store_bytes = d->cfg->limits.max_store_bytes,
		.max_open_dumps = d->cfg->limits.max_open_dumps,
		.max_open_dumps_per_device = d->cfg->limits.max_open_dumps_per_device,
		.cfg = d->cfg,
	};
	struct cg_ack_sink sink = { .send = cg_ingest_send_ack, .consent = cg_ingest_send_consent,
				    .ctx = d->ingest };
	rc = cg_reasm_create(&ro, d->store, &sink, NULL, NULL, &d->reasm);
	if (rc != CG_OK) {
		log_error("main", "reassembly: %s", cg_strerror(rc));
		return 1;
	}
	/* Upstreams: every plugin loads and starts, or the gateway does not. */
	rc = cg_forwarder_start(d->cfg, d->store, &d->forwarder, err, sizeof err);
	if (rc != CG_OK) {
		log_error("main", "%s", err);
		return rc == CG_ERR_CONFIG ? 3 : 1;
	}
	if (pthread_create(&d->committer, NULL, committer_main, d) != 0) {
		log_error("main", "cannot start committer thread");
		return 1;
	}
	rc = cg_ingest_start(d->ingest, d->reasm, err, sizeof err);
	if (rc != CG_OK) {
		log_error("main", "%s", err);
		atomic_store(&d->stopping, true);
		cg_reasm_wake(d->reasm);
		pthread_join(d->committer, NULL);
		return 1;
	}
	if (d->cfg->admin_enabled) {
		rc = cg_admin_start(d->cfg, d->store, d->reasm, d->ingest, d->forwarder, &d->admin, err, sizeof err);
		if (rc != CG_OK) {
			log_error("main", "%s", err);
			cg_ingest_stop(d->ingest, 0);
			atomic_store(&d->stopping, true);
			cg_reasm_wake(d->reasm);
			pthread_join(d->committer, NULL);
			return rc == CG_ERR_CONFIG ? 3 : 1;
		}
	}
	log_info("main", "crashgated %s running: gateway %s, store %s", PROJECT_VERSION, d->cfg->gateway.id, path);

	sigset_t set;
	daemon_signals(&set);
	for (;;) {
		int sig = 0;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			log_stats(d);
			continue;
		}
		if (sig == SIGHUP) {
			reload(d);
			continue;
		}
		log_info("main", "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		break;
	}
	/* Stop: make what was stored durable and let its acks leave, then
	 * disconnect (chunks not yet PUBACKed stay with the broker), then sync
	 * once more for anything that arrived meanwhile. */
	cg_reasm_commit(d->reasm);
	cg_ingest_stop(d->ingest, 2000);
	atomic_store(&d->stopping, true);
	cg_reasm_wake(d->reasm);
	pthread_join(d->committer, NULL);
	cg_reasm_commit(d->reasm);
	cg_admin_stop(d->admin);           /* it reads the forwarder's figures */
	d->admin = NULL;
	cg_forwarder_stop(d->forwarder);   /* the flush in flight finishes first */
	d->forwarder = NULL;
	log_stats(d);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", required_argument, NULL, 'C' },
		{ "config-reference", no_argument, NULL, 'R' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "log-format", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	/* Signals are taken by sigwait in the main thread only: block them
	 * first thing, before any thread (ours or Paho's) starts so that all inherit the mask. */
	sigset_t set;
	daemon_signals(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	const char *cfg_path = NULL;
	enum cg_log_level level = CG_LOG_INFO;
	enum cg_log_format fmt = CG_LOG_TEXT;
	int opt;
	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': cfg_path = optarg; break;
		case 'C': return check_config(optarg);
		case 'R': cg_config_print_reference(stdout); return 0;
		case 'l':
			if (cg_log_parse_level(optarg, &level) != 0) {
				fprintf(stderr, "unknown log level '%s'\n", optarg);
				return 2;
			}
			break;
		case 'f':
			if (strcmp(optarg, "json") == 0)
				fmt = CG_LOG_JSON;
			else if (strcmp(optarg, "text") != 0) {
				fprintf(stderr, "unknown log format '%s'\n", optarg);
				return 2;
			}
			break;
		case 'V': printf("crashgated %s\n", PROJECT_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!cfg_path) {
		usage(stderr);
		return 2;
	}
	cg_log_setup(level, fmt);


	struct cg_daemon d = { 0 };
	char err[1024];
	if (cg_config_load(cfg_path, &d.cfg, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		return 3;
	}
	d.active = d.cfg;
	int rc = run(&d);
	if (d.ingest)
		cg_ingest_stop(d.ingest, 0);
	cg_admin_stop(d.admin);
	cg_ingest_destroy(d.ingest);
	cg_forwarder_stop(d.forwarder);
	cg_reasm_destroy(d.reasm);
	cg_store_close(d.store);
	if (d.active != d.cfg)
		cg_config_free(d.active);
	cg_config_free(d.cfg);
	return rc;
}
