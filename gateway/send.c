/*
 * crashgate-send: publish a dump file as a device would, wait for the
 * gateway's acknowledgement, resend what it reports missing.
 *
 * Exit codes: 0 complete; 1 usage or connection error; 2 throttled;
 * 3 rejected; 4 consent_required; 5 busy after every attempt; 6 no final
 * answer after every attempt.
 */
#include <MQTTAsync.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "config.h"
#include "crashgate/proto.h"

struct sender {
	/* options */
	const char *uri, *device, *prefix, *file, *username, *password_file;
	const char *ca_file, *cert_file, *key_file, *fw_version;
	uint8_t build_id[CG_PROTO_MAX_BUILD_ID];
	size_t build_id_len;
	uint64_t dump_id;
	size_t chunk_size;
	int qos, repeat, attempts, format, connect_attempts;
	double timeout_s;
	bool spotflow, shuffle, no_crc, no_total, no_wait, verbose, consent_mode;
	uint32_t seed;
	const char *skip;               /* ordinals left out of the first pass: "3,5-7" */

	/* state */
	uint8_t *data;
	size_t size;
	uint32_t nchunks;
	MQTTAsync client;
	char ack_topic[320], chunk_topic[320], hello_topic[320], consent_topic[320];
	bool have_consent, consent_enabled;
	uint64_t consent_issued_at, consent_valid_for;
	char consent_group[CG_PROTO_MAX_GROUP + 1];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool have_ack, connected, conn_failed;
	uint32_t ack_status;
	char ack_reason[CG_PROTO_MAX_REASON + 1];
	struct cg_range missing[256];
	size_t nmissing;
	long inflight;                  /* publishes not yet confirmed (QoS 1) */
	long publish_failures;
};

static void die(const char *msg)
{
	fprintf(stderr, "crashgate-send: %s\n", msg);
	exit(1);
}

static void deadline_in(struct timespec *ts, double s)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += (time_t)s;
	ts->tv_nsec += (long)((s - (double)(time_t)s) * 1e9);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
	struct sender *s = ctx;
	(void)tlen;
	struct cg_range miss[256];
	struct cg_ack a = { .missing = miss, .missing_cap = 256 };
	struct cg_consent cs;
	size_t tl = strlen(topic);
	if (tl > 8 && strcmp(topic + tl - 8, "/consent") == 0) {
		if (m->payloadlen > 0 && cg_consent_decode(m->payload, (size_t)m->payloadlen, &cs) == CG_OK) {
			pthread_mutex_lock(&s->lock);
			s->have_consent = true;
			s->consent_enabled = cs.enabled;
			s->consent_issued_at = cs.issued_at;
			s->consent_valid_for = cs.valid_for;
			size_t gl = (cs.present & CG_HAS_GROUP) && cs.group_len <= CG_PROTO_MAX_GROUP ? cs.group_len : 0;
			memcpy(s->consent_group, gl ? cs.group : "", gl);
			s->consent_group[gl] = '\0';
			pthread_cond_broadcast(&s->cond);
			pthread_mutex_unlock(&s->lock);
		}
	} else if (cg_ack_decode(m->payload, (size_t)m->payloadlen, &a) == CG_OK && a.dump_id == s->dump_id) {
		pthread_mutex_lock(&s->lock);
		s->have_ack = true;
		s->ack_status = a.status;
		size_t rl = a.reason_len < CG_PROTO_MAX_REASON ? a.reason_len : CG_PROTO_MAX_REASON;
		memcpy(s->ack_reason, a.reason ? a.reason : "", a.reason ? rl : 0);
		s->ack_reason[a.reason ? rl : 0] = '\0';
		s->nmissing = a.n_missing;
		memcpy(s->missing, miss, a.n_missing * sizeof *miss);
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
	}
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void on_lost(void *ctx, char *cause)
{
	struct sender *s = ctx;
	if (s->verbose)
		fprintf(stderr, "crashgate-send: connection lost: %s\n", cause ? cause : "?");
}

static void on_connected(void *ctx, char *cause)
{
	struct sender *s = ctx;
	(void)cause;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	MQTTAsync_subscribe(s->client, s->consent_mode ? s->consent_topic : s->ack_topic, 1, &ro);
	pthread_mutex_lock(&s->lock);
	s->connected = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void on_conn_fail(void *ctx, MQTTAsync_failureData *r)
{
	struct sender *s = ctx;
	pthread_mutex_lock(&s->lock);
	s->conn_failed = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	if (s->verbose)
		fprintf(stderr, "crashgate-send: connect to %s failed: %s\n", s->uri,
			r && r->message ? r->message : MQTTAsync_strerror(r ? r->code : -1));
}

static void on_sub(void *ctx, MQTTAsync_successData *r)
{
	(void)ctx;
	(void)r;
}

static void on_pub_done(void *ctx, MQTTAsync_successData *r)
{
	struct sender *s = ctx;
	(void)r;
	pthread_mutex_lock(&s->lock);
	s->inflight--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r)
{
	struct sender *s = ctx;
	(void)r;
	pthread_mutex_lock(&s->lock);
	s->inflight--;
	s->publish_failures++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void publish(struct sender *s, const char *topic, const uint8_t *buf, size_t len)
{
	MQTTAsync_message m = MQTTAsync_message_initializer;
	m.payload = (void *)buf;
	m.payloadlen = (int)len;
	m.qos = s->qos;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	ro.context = s;
	ro.onSuccess = on_pub_done;
	ro.onFailure = on_pub_fail;
	pthread_mutex_lock(&s->lock);
	s->inflight++;
	pthread_mutex_unlock(&s->lock);
	/* Paho refuses new messages while its in-flight window is full: retry
	 * with a short pause, bounded. */
	for (int tries = 0; tries < 2000; tries++) {
		int rc = MQTTAsync_sendMessage(s->client, topic, &m, &ro);
		if (rc == MQTTASYNC_SUCCESS)
			return;
		if (rc != MQTTASYNC_MAX_BUFFERED_MESSAGES && rc != MQTTASYNC_DISCONNECTED &&
		    rc != MQTTASYNC_OPERATION_INCOMPLETE)
			break;
		struct timespec ts = { 0, 5 * 1000000L };
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&s->lock);
	s->inflight--;
	s->publish_failures++;
	pthread_mutex_unlock(&s->lock);
}

static void send_chunk(struct sender *s, uint32_t ord)
{
	size_t off = (size_t)ord * s->chunk_size;
	size_t len = s->size - off < s->chunk_size ? s->size - off : s->chunk_size;
	struct cg_chunk c = { .dump_id = s->dump_id, .ordinal = ord, .content = s->data + off,
			      .content_len = len, .last = ord + 1 == s->nchunks };
	if (ord == 0) {
		c.present |= CG_HAS_OS;
		c.os = 3;
		if (s->build_id_len) {
			c.present |= CG_HAS_BUILD_ID;
			c.build_id = s->build_id;
			c.build_id_len = s->build_id_len;
		}
		if (!s->no_total) {
			c.present |= CG_HAS_TOTAL_SIZE;
			c.total_size = s->size;
		}
		if (s->format >= 0) {
			c.present |= CG_HAS_FORMAT;
			c.format = (uint32_t)s->format;
		}
		if (s->fw_version) {
			c.present |= CG_HAS_FW_VERSION;
			c.fw_version = s->fw_version;
			c.fw_version_len = strlen(s->fw_version);
		}
	}
	if (c.last && !s->no_crc) {
		c.present |= CG_HAS_CRC32;
		c.crc32 = cg_crc32(0, s->data, s->size);
	}
	size_t cap = cg_chunk_encoded_max(len);
	uint8_t *buf = malloc(cap);
	size_t n = 0;
	if (!buf || cg_chunk_encode(&c, s->spotflow ? CG_ENC_SPOTFLOW : 0, buf, cap, &n) != CG_OK)
		die("cannot encode chunk");
	publish(s, s->chunk_topic, buf, n);
	free(buf);
}

/* Wait until every QoS 1 publish is confirmed by the broker (bounded). */
static void wait_published(struct sender *s, double timeout)
{
	struct timespec dl;
	deadline_in(&dl, timeout);
	pthread_mutex_lock(&s->lock);
	while (s->inflight > 0 && pthread_cond_timedwait(&s->cond, &s->lock, &dl) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&s->lock);
}

static bool skipped(const char *spec, uint32_t ord)
{
	if (!spec)
		return false;
	const char *p = spec;
	while (*p) {
		char *end;
		unsigned long a = strtoul(p, &end, 10), b = a;
		if (*end == '-')
			b = strtoul(end + 1, &end, 10);
		if (ord >= a && ord <= b)
			return true;
		p = *end == ',' ? end + 1 : end + strlen(end);
	}
	return false;
}

static uint32_t rnd(uint32_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 17;
	*st ^= *st << 5;
	return *st;
}

static void send_all(struct sender *s, bool first_pass)
{
	uint32_t *order = malloc(s->nchunks * sizeof *order);
	if (!order)
		die("out of memory");
	for (uint32_t i = 0; i < s->nchunks; i++)
		order[i] = i;
	uint32_t st = s->seed ? s->seed : 0x9e3779b9u;
	if (s->shuffle) {
		for (uint32_t i = s->nchunks; i > 1; i--) {
			uint32_t j = rnd(&st) % i;
			uint32_t t = order[i - 1];
			order[i - 1] = order[j];
			order[j] = t;
		}
	}
	for (uint32_t i = 0; i < s->nchunks; i++) {
		if (first_pass && skipped(s->skip, order[i]))
			continue;
		send_chunk(s, order[i]);
		for (int r = 0; first_pass && r < s->repeat; r++)
			send_chunk(s, order[rnd(&st) % (i + 1)]);
	}
	free(order);
}

/* Wait for an answer about our dump; copies what it says (status, missing
 * ranges) out under the lock, since Paho's thread writes them. */
struct answer {
	int status;
	struct cg_range missing[256];
	size_t nmissing;
};

static void wait_ack(struct sender *s, double timeout, struct answer *a)
{
	struct timespec dl;
	deadline_in(&dl, timeout);
	pthread_mutex_lock(&s->lock);
	while (!s->have_ack && pthread_cond_timedwait(&s->cond, &s->lock, &dl) != ETIMEDOUT)
		;
	a->status = s->have_ack ? (int)s->ack_status : 0;
	a->nmissing = s->nmissing;
	memcpy(a->missing, s->missing, s->nmissing * sizeof *a->missing);
	s->have_ack = false;
	pthread_mutex_unlock(&s->lock);
}

static void parse_hex(const char *hex, uint8_t *out, size_t *len)
{
	size_t n = strlen(hex);
	if (n % 2 || n / 2 > CG_PROTO_MAX_BUILD_ID || n == 0)
		die("--build-id wants 2..128 hex digits");
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			die("--build-id wants hex digits");
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
}

static void load_file(struct sender *s)
{
	FILE *f = fopen(s->file, "rb");
	if (!f) {
		fprintf(stderr, "crashgate-send: %s: %s\n", s->file, strerror(errno));
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (sz <= 0)
		die("the dump file is empty");
	s->data = malloc((size_t)sz);
	if (!s->data || fread(s->data, 1, (size_t)sz, f) != (size_t)sz)
		die("cannot read the dump file");
	fclose(f);
	s->size = (size_t)sz;
	s->nchunks = (uint32_t)((s->size + s->chunk_size - 1) / s->chunk_size);
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: crashgate-send [options] --device ID FILE\n"
		"       crashgate-send [options] --device ID --consent   (print the consent signal)\n"
		"  -u, --uri URI           broker (default tcp://127.0.0.1:1883; ssl://… for TLS)\n"
		"  -d, --device ID         device id (also the MQTT username unless --username)\n"
		"      --dump-id N         dump id (default: random)\n"
		"  -s, --chunk-size N      content bytes per chunk (default 1024)\n"
		"  -q, --qos 0|1           QoS of chunk publishes (default 1)\n"
		"      --spotflow          Spotflow-compatible keys only (no total_size, crc32, format, …)\n"
		"      --shuffle           send chunks in random order (--seed N)\n"
		"      --repeat N          after each chunk, resend N random earlier chunks\n"
		"      --skip LIST         leave ordinals out of the first pass, e.g. 2,5-9\n"
		"      --no-crc, --no-total-size, --format N, --build-id HEX, --fw-version S\n"
		"      --timeout S         seconds to wait for an acknowledgement (default 10)\n"
		"      --attempts N        rounds of waiting / resending (default 5)\n"
		"      --no-wait           publish and exit without waiting for an answer\n"
		"      --connect-attempts N  first-connection attempts, 1 s apart (default 30)\n"
		"      --username U, --password-file F, --prefix P (default crashgate/v1)\n"
		"      --cafile F, --cert F, --key F   TLS\n"
		"  -v, --verbose\n"
		"Exit: 0 complete, 1 error, 2 throttled, 3 rejected, 4 consent_required,\n"
		"      5 busy, 6 no final answer.\n"
		"With --consent: waits --timeout seconds for the device's retained consent signal and\n"
		"prints it; exit 0 enabled, 4 disabled, 6 none.\n");
}

int main(int argc, char **argv)
{
	struct sender s = { .uri = "tcp://127.0.0.1:1883", .prefix = "crashgate/v1", .chunk_size = 1024,
			    .qos = 1, .attempts = 5, .connect_attempts = 30, .timeout_s = 10, .format = -1 };
	bool have_id = false;
	static const struct option lo[] = {
		{ "uri", 1, 0, 'u' }, { "device", 1, 0, 'd' }, { "dump-id", 1, 0, 'i' },
		{ "chunk-size", 1, 0, 's' }, { "qos", 1, 0, 'q' }, { "spotflow", 0, 0, 'S' },
		{ "shuffle", 0, 0, 'X' }, { "seed", 1, 0, 'e' }, { "repeat", 1, 0, 'r' },
		{ "skip", 1, 0, 'k' }, { "no-crc", 0, 0, 'C' }, { "no-total-size", 0, 0, 'T' },
		{ "format", 1, 0, 'F' }, { "build-id", 1, 0, 'b' }, { "fw-version", 1, 0, 'w' },
		{ "timeout", 1, 0, 't' }, { "attempts", 1, 0, 'a' }, { "no-wait", 0, 0, 'N' },
		{ "username", 1, 0, 'U' }, { "password-file", 1, 0, 'P' }, { "prefix", 1, 0, 'p' },
		{ "cafile", 1, 0, 'A' }, { "cert", 1, 0, 'E' }, { "key", 1, 0, 'K' },
		{ "connect-attempts", 1, 0, 'c' }, { "consent", 0, 0, 'O' }, { "verbose", 0, 0, 'v' }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "u:d:s:q:vh", lo, NULL)) != -1) {
		switch (o) {
		case 'u': s.uri = optarg; break;
		case 'd': s.device = optarg; break;
		case 'i': s.dump_id = strtoull(optarg, NULL, 0); have_id = true; break;
		case 's': s.chunk_size = strtoul(optarg, NULL, 0); break;
		case 'q': s.qos = atoi(optarg); break;
		case 'S': s.spotflow = true; break;
		case 'X': s.shuffle = true; break;
		case 'e': s.seed = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'r': s.repeat = atoi(optarg); break;
		case 'k': s.skip = optarg; break;
		case 'C': s.no_crc = true; break;
		case 'T': s.no_total = true; break;
		case 'F': s.format = atoi(optarg); break;
		case 'b': parse_hex(optarg, s.build_id, &s.build_id_len); break;
		case 'w': s.fw_version = optarg; break;
		case 't': s.timeout_s = atof(optarg); break;
		case 'a': s.attempts = atoi(optarg); break;
		case 'N': s.no_wait = true; break;
		case 'U': s.username = optarg; break;
		case 'P': s.password_file = optarg; break;
		case 'p': s.prefix = optarg; break;
		case 'A': s.ca_file = optarg; break;
		case 'E': s.cert_file = optarg; break;
		case 'K': s.key_file = optarg; break;
		case 'c': s.connect_attempts = atoi(optarg); break;
		case 'O': s.consent_mode = true; break;
		case 'v': s.verbose = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind != argc - (s.consent_mode ? 0 : 1) || !s.device) {
		usage(stderr);
		return 1;
	}
	s.file = s.consent_mode ? NULL : argv[optind];
	if (!cg_device_id_valid(s.device, strlen(s.device)))
		die("--device must be 1-64 characters of [A-Za-z0-9._-]");
	if (s.chunk_size < 1 || s.chunk_size > 1u << 20 || (s.qos != 0 && s.qos != 1) || s.attempts < 1 ||
	    !(s.timeout_s > 0 && s.timeout_s <= 3600) || s.repeat < 0 || s.connect_attempts < 1)
		die("an option is out of range (see --help)");
	if (s.spotflow) {
		s.no_crc = s.no_total = true;
		s.format = -1;
		s.fw_version = NULL;
	}
	if (!have_id) {
		if (getrandom(&s.dump_id, sizeof s.dump_id, 0) != sizeof s.dump_id)
			die("getrandom failed");
		s.dump_id >>= 1;
	}
	if (!s.consent_mode)
		load_file(&s);
	snprintf(s.consent_topic, sizeof s.consent_topic, "%s/dev/%s/consent", s.prefix, s.device);
	snprintf(s.ack_topic, sizeof s.ack_topic, "%s/dev/%s/ack", s.prefix, s.device);
	snprintf(s.chunk_topic, sizeof s.chunk_topic, "%s/dev/%s/chunk", s.prefix, s.device);
	snprintf(s.hello_topic, sizeof s.hello_topic, "%s/dev/%s/hello", s.prefix, s.device);
	pthread_mutex_init(&s.lock, NULL);
	pthread_cond_init(&s.cond, NULL);

	char client_id[96];
	snprintf(client_id, sizeof client_id, "%s-send", s.device);
	MQTTAsync_createOptions cro = MQTTAsync_createOptions_initializer;
	cro.sendWhileDisconnected = 1;
	cro.maxBufferedMessages = 100000;
	if (MQTTAsync_createWithOptions(&s.client, s.uri, client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &cro) !=
	    MQTTASYNC_SUCCESS)
		die("cannot create MQTT client (bad --uri?)");
	MQTTAsync_setCallbacks(s.client, &s, on_lost, on_message, NULL);
	MQTTAsync_setConnected(s.client, &s, on_connected);
	MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
	co.cleansession = 1;
	co.keepAliveInterval = 20;
	co.automaticReconnect = 1;
	co.minRetryInterval = 1;
	co.maxRetryInterval = 4;
	co.maxInflight = 1000;
	co.username = s.username ? s.username : s.device;
	char *password = NULL;
	if (s.password_file) {
		password = cg_read_secret_file(s.password_file);
		if (!password)
			die("cannot read --password-file");
		co.password = password;
	}
	co.onFailure = on_conn_fail;
	co.context = &s;
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	if (strncmp(s.uri, "ssl://", 6) == 0 || strncmp(s.uri, "mqtts://", 8) == 0) {
		ssl.trustStore = s.ca_file;
		ssl.keyStore = s.cert_file;
		ssl.privateKey = s.key_file;
		ssl.enableServerCertAuth = 1;
		ssl.verify = 1;
		co.ssl = &ssl;
	}
	(void)on_sub;
	/* The first connection is retried (--connect-attempts, 1 s apart) (a broker restarting);
	 * after it, Paho's automatic reconnect takes over. */
	bool ok = false;
	for (int tries = 0; tries < s.connect_attempts && !ok; tries++) {
		pthread_mutex_lock(&s.lock);
		s.conn_failed = false;
		pthread_mutex_unlock(&s.lock);
		if (MQTTAsync_connect(s.client, &co) != MQTTASYNC_SUCCESS)
			die("connect request failed");
		struct timespec dl;
		deadline_in(&dl, 15);
		pthread_mutex_lock(&s.lock);
		while (!s.connected && !s.conn_failed &&
		       pthread_cond_timedwait(&s.cond, &s.lock, &dl) != ETIMEDOUT)
			;
		ok = s.connected;
		pthread_mutex_unlock(&s.lock);
		if (!ok) {
			struct timespec one = { 1, 0 };
			nanosleep(&one, NULL);
		}
	}
	if (!ok) {
		fprintf(stderr, "crashgate-send: cannot connect to %s\n", s.uri);
		exit(1);
	}
	/* The ack subscription is requested in on_connected; give it a moment to
	 * be in place before the last chunk can trigger an answer. */
	struct timespec pause = { 0, 50 * 1000000L };
	nanosleep(&pause, NULL);

	if (s.consent_mode) {
		struct timespec dl;
		deadline_in(&dl, s.timeout_s);
		pthread_mutex_lock(&s.lock);
		while (!s.have_consent && pthread_cond_timedwait(&s.cond, &s.lock, &dl) != ETIMEDOUT)
			;
		bool have = s.have_consent;
		pthread_mutex_unlock(&s.lock);
		int crc = 6;
		if (have) {
			printf("enabled=%s group=%s issued_at=%" PRIu64 " valid_for=%" PRIu64 "\n",
			       s.consent_enabled ? "true" : "false", s.consent_group[0] ? s.consent_group : "-",
			       s.consent_issued_at, s.consent_valid_for);
			crc = s.consent_enabled ? 0 : 4;
		} else {
			fprintf(stderr, "crashgate-send: no consent signal for %s\n", s.device);
		}
		MQTTAsync_disconnectOptions dc = MQTTAsync_disconnectOptions_initializer;
		dc.timeout = 1000;
		MQTTAsync_disconnect(s.client, &dc);
		for (int i = 0; i < 100 && MQTTAsync_isConnected(s.client); i++)
			nanosleep(&pause, NULL);
		MQTTAsync_destroy(&s.client);
		free(password);
		return crc;
	}
	struct answer *ans = calloc(1, sizeof *ans);
	if (!ans)
		die("out of memory");
	send_all(&s, true);
	wait_published(&s, 60);
	int status = 0;
	if (s.no_wait) {
		status = CG_ACK_COMPLETE;
		printf("published %u chunks of dump %" PRIu64 " (%zu bytes)\n", s.nchunks, s.dump_id, s.size);
		goto out;
	}
	int progress_rounds = 0;
	bool have_answer = false;
	for (int attempt = 0; attempt < s.attempts; attempt++) {
		if (!have_answer)
			wait_ack(&s, s.timeout_s, ans);
		have_answer = false;
		status = ans->status;
		if (s.verbose)
			fprintf(stderr, "crashgate-send: attempt %d: status %d %s\n", attempt, status, s.ack_reason);
		if (status == CG_ACK_INCOMPLETE) {
			for (size_t i = 0; i < ans->nmissing; i++) {
				uint32_t last = ans->missing[i].last;
				if (last >= s.nchunks)
					last = s.nchunks - 1;
				for (uint32_t o2 = ans->missing[i].first; o2 <= last && o2 < s.nchunks; o2++)
					send_chunk(&s, o2);
			}
			send_chunk(&s, s.nchunks - 1); /* the last chunk again asks for the next answer */
			wait_published(&s, 60);
			if (++progress_rounds < 1000)
				attempt--; /* progress, not a failed attempt */
			continue;
		}
		if (status == 0) {
			/* No answer: ask where we stand; a gateway that lost the dump
			 * entirely gets all of it again. */
			uint8_t hb[64];
			size_t hn = 0;
			struct cg_hello h = { 0 };
			cg_hello_encode(&h, hb, sizeof hb, &hn);
			publish(&s, s.hello_topic, hb, hn);
			wait_ack(&s, s.timeout_s / 2 > 1 ? s.timeout_s / 2 : 1, ans);
			status = ans->status;
			if (status == CG_ACK_INCOMPLETE) {
				if (++progress_rounds < 1000)
					attempt--;
				have_answer = true; /* handle it on the next turn */
				continue;
			}
			if (status == 0) {
				send_all(&s, false);
				wait_published(&s, 60);
				continue;
			}
		}
		if (status == CG_ACK_BUSY) {
			struct timespec b = { 1 + attempt, 0 };
			nanosleep(&b, NULL);
			send_all(&s, false);
			wait_published(&s, 60);
			continue;
		}
		break;
	}
out:;
	free(ans);
	int rc;
	const char *name;
	switch (status) {
	case CG_ACK_COMPLETE: rc = 0; name = "complete"; break;
	case CG_ACK_THROTTLED: rc = 2; name = "throttled"; break;
	case CG_ACK_REJECTED: rc = 3; name = "rejected"; break;
	case CG_ACK_CONSENT_REQUIRED: rc = 4; name = "consent_required"; break;
	case CG_ACK_BUSY: rc = 5; name = "busy"; break;
	default: rc = 6; name = "no final answer"; break;
	}
	if (!s.no_wait) {
		if (rc == 0)
			printf("dump %" PRIu64 " complete (%zu bytes, %u chunks)\n", s.dump_id, s.size, s.nchunks);
		else
			fprintf(stderr, "crashgate-send: dump %" PRIu64 ": %s%s%s\n", s.dump_id, name,
				s.ack_reason[0] ? ": " : "", s.ack_reason);
	}
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
	d.timeout = 1000;
	MQTTAsync_disconnect(s.client, &d);
	for (int i = 0; i < 100 && MQTTAsync_isConnected(s.client); i++)
		nanosleep(&pause, NULL);
	MQTTAsync_destroy(&s.client);
	free(password);
	free(s.data);
	return rc;
}
