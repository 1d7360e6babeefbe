/*
 * bench_ingest: ingest throughput and memory of crashgated, each beside a
 * baseline measured in the same run against the same broker.
 *
 *  1. A backlog of N chunk messages (1 KiB content, QoS 1, dumps of 64
 *     chunks) waits in the broker for an offline persistent session.
 *     Baseline: a bare Paho MQTTAsync subscriber drains it.
 *     Gateway:  crashgated drains the same backlog into its durable store.
 *     Printed: chunks/s and MB/s of each and their ratio.
 *  2. M dumps are opened at once (first chunk only); printed: crashgated's
 *     peak RSS (VmHWM) with M dumps open, beside its RSS when idle.
 *
 * crashgated's progress is read from its own counters (SIGUSR1 makes it log
 * them), so what is measured is the real daemon, not a copy of its code.
 *
 * usage: bench_ingest --uri tcp://127.0.0.1:PORT --crashgated PATH --workdir DIR
 *                     [--chunks N] [--open-dumps M]
 */
#include <MQTTAsync.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crashgate/proto.h"

#define CHUNK_BYTES 1024
#define DUMP_CHUNKS 64

static const char *uri, *gwbin, *workdir;
static long nchunks = 100000, nopen = 10000;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static void fail(const char *msg)
{
	fprintf(stderr, "bench_ingest: %s\n", msg);
	exit(1);
}

/* ---- a Paho client used as publisher and as the bare subscriber ---- */

struct client {
	MQTTAsync c;
	atomic_long received;
	atomic_long inflight;
	atomic_bool connected;
};

static int on_msg(void *ctx, char *topic, int tl, MQTTAsync_message *m)
{
	struct client *cl = ctx;
	(void)tl;
	atomic_fetch_add(&cl->received, 1);
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void on_conn(void *ctx, MQTTAsync_successData *r)
{
	(void)r;
	atomic_store(&((struct client *)ctx)->connected, true);
}

static void on_pub(void *ctx, MQTTAsync_successData *r)
{
	(void)r;
	atomic_fetch_sub(&((struct client *)ctx)->inflight, 1);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r)
{
	(void)r;
	atomic_fetch_sub(&((struct client *)ctx)->inflight, 1);
}

static void client_connect(struct client *cl, const char *id, bool clean)
{
	memset(cl, 0, sizeof *cl);
	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
	co.sendWhileDisconnected = 0;
	if (MQTTAsync_createWithOptions(&cl->c, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co) != 0)
		fail("create client");
	MQTTAsync_setCallbacks(cl->c, cl, NULL, on_msg, NULL);
	MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
	o.cleansession = clean;
	o.keepAliveInterval = 30;
	o.maxInflight = 2000;
	o.onSuccess = on_conn;
	o.context = cl;
	if (MQTTAsync_connect(cl->c, &o) != 0)
		fail("connect");
	for (int i = 0; i < 1000 && !atomic_load(&cl->connected); i++)
		sleep_ms(10);
	if (!atomic_load(&cl->connected))
		fail("not connected to the broker");
}

static void client_close(struct client *cl)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
	d.timeout = 2000;
	MQTTAsync_disconnect(cl->c, &d);
	for (int i = 0; i < 300 && MQTTAsync_isConnected(cl->c); i++)
		sleep_ms(10);
	MQTTAsync_destroy(&cl->c);
}

static void subscribe(struct client *cl, const char *topic)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	if (MQTTAsync_subscribe(cl->c, topic, 1, &ro) != 0)
		fail("subscribe");
	sleep_ms(200);
}

static void publish(struct client *cl, const char *topic, const uint8_t *buf, size_t len)
{
	MQTTAsync_message m = MQTTAsync_message_initializer;
	m.payload = (void *)buf;
	m.payloadlen = (int)len;
	m.qos = 1;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	ro.onSuccess = on_pub;
	ro.onFailure = on_pub_fail;
	ro.context = cl;
	atomic_fetch_add(&cl->inflight, 1);
	for (int tries = 0; tries < 20000; tries++) {
		if (MQTTAsync_sendMessage(cl->c, topic, &m, &ro) == 0)
			return;
		sleep_ms(1);
	}
	fail("publish refused");
}

static void drain_inflight(struct client *cl)
{
	for (int i = 0; i < 120000 && atomic_load(&cl->inflight) > 0; i++)
		sleep_ms(1);
}

/* The backlog: nchunks chunk messages from one device, dumps of 64 chunks. */
static void publish_backlog(uint64_t id_base)
{
	struct client pub;
	client_connect(&pub, "bench-pub", true);
	uint8_t content[CHUNK_BYTES], buf[CHUNK_BYTES + 64];
	for (int i = 0; i < CHUNK_BYTES; i++)
		content[i] = (uint8_t)(i * 7);
	for (long i = 0; i < nchunks; i++) {
		struct cg_chunk c = { .dump_id = id_base + (uint64_t)(i / DUMP_CHUNKS),
				      .ordinal = (uint32_t)(i % DUMP_CHUNKS), .content = content,
				      .content_len = CHUNK_BYTES,
				      .last = i % DUMP_CHUNKS == DUMP_CHUNKS - 1 || i == nchunks - 1 };
		/* Every dump distinct: identical dumps would be throttled (policy),
		 * and this measures ingest, not throttling. */
		content[0] = (uint8_t)i;
		for (int b = 0; b < 8; b++)
			content[1 + b] = (uint8_t)(c.dump_id >> (8 * b));
		size_t n;
		if (cg_chunk_encode(&c, 0, buf, sizeof buf, &n) != 0)
			fail("encode");
		publish(&pub, "crashgate/v1/dev/bench-dev/chunk", buf, n);
	}
	drain_inflight(&pub);
	client_close(&pub);
}

/* ---- the real daemon ---- */

struct gw {
	pid_t pid;
	int runs;
	char name[64];
	char log[512];  /* one per run, so that waits never match an older run */
	char cfg[512];
};

static void write_config(struct gw *g, const char *name)
{
	char dir[512];
	snprintf(dir, sizeof dir, "%s/%s", workdir, name);
	mkdir(dir, 0700);
	snprintf(g->cfg, sizeof g->cfg, "%s/%s.yaml", workdir, name);
	snprintf(g->name, sizeof g->name, "%s", name);
	g->runs = 0;
	FILE *f = fopen(g->cfg, "w");
	if (!f)
		fail("write config");
	fprintf(f,
		"gateway: { id: bench, data_dir: %s }\n"
		"mqtt: { uri: \"%s\", client_id: bench-gw }\n"
		"limits: { max_open_dumps: %ld, max_store_bytes: 8GiB }\n"
		"default_region: US\n"
		"regions: { US: { upstreams: [ { name: bench-out, kind: file, path: %s/out } ] } }\n"
		"groups: [ { name: all, devices: [\"*\"], crash_dumps: enabled } ]\n",
		dir, uri, nopen + 100, dir);
	fclose(f);
}

static void gw_start(struct gw *g)
{
	/* Paho's threads run in this process: between fork and exec only
	 * async-signal-safe calls (no stdio, no malloc) or the child may hang on
	 * a lock another thread held at the fork. */
	snprintf(g->log, sizeof g->log, "%s/%s.%d.log", workdir, g->name, ++g->runs);
	int fd = open(g->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	g->pid = fork();
	if (g->pid == 0) {
		dup2(fd, 2);
		execl(gwbin, gwbin, "-c", g->cfg, (char *)NULL);
		_exit(127);
	}
	close(fd);
}

static void gw_stop(struct gw *g)
{
	kill(g->pid, SIGTERM);
	int st;
	for (int i = 0; i < 1000; i++) {
		if (waitpid(g->pid, &st, WNOHANG) == g->pid)
			return;
		sleep_ms(10);
	}
	kill(g->pid, SIGKILL);
	waitpid(g->pid, &st, 0);
}

/* Ask the daemon for its counters and read the newest stats line. */
static bool gw_stat(struct gw *g, const char *key, long *val)
{
	FILE *f = fopen(g->log, "r");
	if (!f)
		return false;
	char line[2048], last[2048] = "";
	while (fgets(line, sizeof line, f))
		if (strstr(line, "stats: "))
			memcpy(last, line, sizeof last);
	fclose(f);
	char pat[64];
	snprintf(pat, sizeof pat, " %s=", key);
	char *p = strstr(last, pat);
	if (!p)
		return false;
	*val = strtol(p + strlen(pat), NULL, 10);
	return true;
}

static bool gw_wait_log(struct gw *g, const char *needle, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 20) {
		FILE *f = fopen(g->log, "r");
		char line[2048];
		bool found = false;
		while (f && fgets(line, sizeof line, f))
			found |= strstr(line, needle) != NULL;
		if (f)
			fclose(f);
		if (found)
			return true;
		sleep_ms(20);
	}
	return false;
}

static long proc_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, field, strlen(field)) == 0)
			v = strtol(line + strlen(field) + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "uri", 1, 0, 'u' }, { "crashgated", 1, 0, 'g' }, { "workdir", 1, 0, 'w' },
		{ "chunks", 1, 0, 'n' }, { "open-dumps", 1, 0, 'o' }, { 0, 0, 0, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'u': uri = optarg; break;
		case 'g': gwbin = optarg; break;
		case 'w': workdir = optarg; break;
		case 'n': nchunks = atol(optarg); break;
		case 'o': nopen = atol(optarg); break;
		default: return 2;
		}
	}
	if (!uri || !gwbin || !workdir || nchunks < DUMP_CHUNKS || nopen < 1)
		fail("usage: bench_ingest --uri URI --crashgated PATH --workdir DIR [--chunks N] [--open-dumps M]");
	double mb = (double)nchunks * CHUNK_BYTES / 1e6;

	/* 1a. baseline: a bare Paho subscriber drains the backlog */
	struct client bare;
	client_connect(&bare, "bench-bare", false);
	subscribe(&bare, "crashgate/v1/dev/+/chunk");
	client_close(&bare);
	publish_backlog(1);
	client_connect(&bare, "bench-bare", false);
	double t0 = now_s();
	while (atomic_load(&bare.received) < nchunks && now_s() - t0 < 300)
		sleep_ms(1);
	double t_bare = now_s() - t0;
	long got = atomic_load(&bare.received);
	client_close(&bare);
	struct client clean;
	client_connect(&clean, "bench-bare", true); /* drop the baseline's session */
	client_close(&clean);
	if (got < nchunks)
		fail("the bare subscriber did not receive the whole backlog");

	/* 1b. crashgated drains the same backlog into its store */
	struct gw g;
	write_config(&g, "ingest");
	gw_start(&g);
	if (!gw_wait_log(&g, "subscribed", 20000))
		fail("crashgated did not subscribe");
	gw_stop(&g);
	publish_backlog(1);
	long dumps = (nchunks + DUMP_CHUNKS - 1) / DUMP_CHUNKS, completed = 0, stored = 0;
	gw_start(&g);
	t0 = now_s();
	/* SIGUSR1 kills a process that has not yet blocked it: poll only once
	 * crashgated says it runs. */
	if (!gw_wait_log(&g, "running:", 20000))
		fail("crashgated did not start");
	while (now_s() - t0 < 120) {
		kill(g.pid, SIGUSR1);
		sleep_ms(10);
		if (gw_stat(&g, "completed", &completed) && completed >= dumps)
			break;
	}
	double t_gw = now_s() - t0;
	gw_stat(&g, "stored", &stored);
	long peak_ingest = proc_kb(g.pid, "VmHWM:");
	gw_stop(&g);
	if (completed < dumps)
		fail("crashgated did not complete every dump of the backlog");

	printf("ingest: %ld chunks of %d B (%.1f MB) at QoS 1 from a broker backlog\n", nchunks, CHUNK_BYTES, mb);
	printf("  bare Paho subscriber : %9.0f chunks/s  %7.1f MB/s  (%.3f s)\n", nchunks / t_bare, mb / t_bare, t_bare);
	printf("  crashgated -> store  : %9.0f chunks/s  %7.1f MB/s  (%.3f s, %ld dumps complete and synced, %ld chunks stored)\n",
	       nchunks / t_gw, mb / t_gw, t_gw, completed, stored);
	printf("  ratio gateway/bare   : %.2f   (target >= 0.85; the gateway time includes its start-up)\n", t_bare / t_gw);
	printf("  crashgated peak RSS during ingest: %.1f MiB\n", peak_ingest / 1024.0);

	/* 2. memory with many dumps open at once */
	struct gw g2;
	write_config(&g2, "open");
	gw_start(&g2);
	if (!gw_wait_log(&g2, "subscribed", 20000))
		fail("crashgated did not subscribe");
	sleep_ms(200);
	long idle_kb = proc_kb(g2.pid, "VmRSS:");
	struct client pub;
	client_connect(&pub, "bench-pub-open", true);
	uint8_t content[CHUNK_BYTES], buf[CHUNK_BYTES + 64];
	memset(content, 0x5a, sizeof content);
	for (long i = 0; i < nopen; i++) {
		char topic[128];
		snprintf(topic, sizeof topic, "crashgate/v1/dev/open-%05ld/chunk", i / 4);
		struct cg_chunk c = { .dump_id = (uint64_t)i, .ordinal = 0, .content = content,
				      .content_len = CHUNK_BYTES };
		size_t n;
		cg_chunk_encode(&c, 0, buf, sizeof buf, &n);
		publish(&pub, topic, buf, n);
	}
	drain_inflight(&pub);
	client_close(&pub);
	long open_now = 0;
	t0 = now_s();
	while (now_s() - t0 < 120) {
		kill(g2.pid, SIGUSR1);
		sleep_ms(50);
		if (gw_stat(&g2, "open", &open_now) && open_now >= nopen)
			break;
	}
	long hwm = proc_kb(g2.pid, "VmHWM:");
	gw_stop(&g2);
	printf("memory: %ld dumps open at once (%ld confirmed open by crashgated)\n", nopen, open_now);
	printf("  crashgated RSS idle       : %7.1f MiB\n", idle_kb / 1024.0);
	printf("  crashgated peak RSS (HWM) : %7.1f MiB   (target < 64 MiB)\n", hwm / 1024.0);
	return open_now >= nopen ? 0 : 1;
}
