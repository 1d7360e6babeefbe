/*
 * The `mqtt` output plugin: one message per batch to a cloud broker through
 * Paho MQTTAsync (SPEC §8). The payload is the batch's CBOR document
 * (plugins/README.md), published at QoS 1 on one configured topic (MQTT 5:
 * content type application/cbor); a batch counts as delivered only once the
 * broker's PUBACK arrived.
 *
 * Outcomes: OK on the PUBACK. DROP when the batch can never go: larger than
 * max_message_bytes, than MQTT allows or than the broker's Maximum Packet
 * Size, or refused by the broker with a reason that would recur (not
 * authorized, topic invalid, too large). RETRY for everything else: broker
 * down or refusing our login, no PUBACK within `timeout`, connection lost.
 *
 * Connection: one per upstream, opened at the first flush and kept across
 * flushes. Clean session: the core redelivers whatever was not confirmed, so
 * no session state has to survive a reconnect. When the connection is lost,
 * one reconnect starts at once in the background; if that fails, the next
 * flush connects again (the core's backoff paces the attempts). Paho's own
 * automaticReconnect is not used: after the first failed attempt it reports
 * none of its retries, so a flush could not tell "refused" from "still
 * trying" and would sit out its whole timeout against a broker that is down.
 *
 * One publish at a time, and never one left behind: a flush that ends without
 * Paho having finished its publish (no PUBACK within `timeout`, or the
 * connection dropped while the message still sat in Paho's command queue)
 * destroys the Paho client. Otherwise the old message could be sent, and
 * acknowledged, after a later reconnect, and its late PUBACK be taken for the
 * next batch's.
 *
 * MQTT 5 by default, because only a v5 PUBACK says whether the broker took the
 * message: a v3.1.1 broker acknowledges a publish its ACL denied or its size
 * limit discarded with a plain PUBACK, indistinguishable from delivery.
 *
 * Paho's receive thread sleeps up to a second between looks at its sockets'
 * writability, which made connects take ~2 s and messages larger than the
 * socket buffer crawl (about a second per buffer-full); while a flush waits
 * it rings a doorbell to wake that thread (doorbell.c has the details and
 * the measurements).
 *
 * Threads: flush, init and destroy run on the forwarder's thread; Paho calls
 * the callbacks from its own threads, which therefore only record what
 * happened (the next flush logs it). `lock` guards the fields below it and is
 * never held while calling Paho (Paho holds its own mutex while calling us;
 * MQTTAsync_destroy takes it).
 */
#include <MQTTAsync.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crashgate/plugin.h"
#include "doorbell.h"

/* MQTT's largest packet: the remaining length is a 4-byte varint. */
#define MQTT_MAX_REMAINING 268435455u
#define CONTENT_TYPE "application/cbor"
/* While a flush waits for the connection or the PUBACK, wake Paho this
 * often (doorbell.c). */
#define RING_MS 5

struct mqtt_options {
	char *uri;
	char *topic;
	char *client_id;
	char *username;
	char *password_file;
	char *ca_file;
	char *cert_file;
	char *key_file;
	uint64_t keepalive;           /* ms */
	uint64_t timeout;             /* ms */
	uint64_t max_message_bytes;
	uint32_t protocol;            /* index into mqtt_protocols */
};

enum { PROTO_V5, PROTO_V311 };
static const char *const mqtt_protocols[] = { "5", "3.1.1", NULL };

static const struct cg_plugin_option mqtt_option_table[] = {
	{ .name = "uri", .type = CG_OPT_STRING, .flags = CG_OPT_REQUIRED,
	  .offset = offsetof(struct mqtt_options, uri), .min = 1, .max = 1024,
	  .desc = "Broker address: tcp://host:port, or ssl://host:port / mqtts://host:port for TLS." },
	{ .name = "topic", .type = CG_OPT_STRING, .flags = CG_OPT_REQUIRED,
	  .offset = offsetof(struct mqtt_options, topic), .min = 1, .max = 65535,
	  .desc = "Topic each batch is published on (QoS 1); no wildcards." },
	{ .name = "client_id", .type = CG_OPT_STRING,
	  .offset = offsetof(struct mqtt_options, client_id), .min = 1, .max = 65535,
	  .desc = "MQTT client id (default crashgate-<gateway id>-<upstream>); unique per broker." },
	{ .name = "username", .type = CG_OPT_STRING,
	  .offset = offsetof(struct mqtt_options, username), .min = 1, .max = 65535,
	  .desc = "User name to log in with." },
	{ .name = "password_file", .type = CG_OPT_PATH,
	  .offset = offsetof(struct mqtt_options, password_file),
	  .desc = "File whose first line is the password (read once at start; never logged)." },
	{ .name = "ca_file", .type = CG_OPT_PATH, .offset = offsetof(struct mqtt_options, ca_file),
	  .desc = "PEM CA bundle that verifies the broker (TLS; default: the system's CA store)." },
	{ .name = "cert_file", .type = CG_OPT_PATH, .offset = offsetof(struct mqtt_options, cert_file),
	  .desc = "PEM client certificate (TLS client authentication)." },
	{ .name = "key_file", .type = CG_OPT_PATH, .offset = offsetof(struct mqtt_options, key_file),
	  .desc = "PEM private key of cert_file (default: the key inside cert_file)." },
	{ .name = "keepalive", .type = CG_OPT_DURATION,
	  .offset = offsetof(struct mqtt_options, keepalive), .def = "30s",
	  .min = 1000, .max = 65535000, .desc = "MQTT keepalive interval (whole seconds)." },
	{ .name = "timeout", .type = CG_OPT_DURATION,
	  .offset = offsetof(struct mqtt_options, timeout), .def = "30s",
	  .min = 100, .max = 3600000,
	  .desc = "How long a flush waits to connect and for the PUBACK before it asks for a retry." },
	{ .name = "max_message_bytes", .type = CG_OPT_SIZE,
	  .offset = offsetof(struct mqtt_options, max_message_bytes), .def = "16MiB",
	  .min = 1024, .max = 256u * 1024 * 1024 - 64 * 1024,
	  .desc = "Largest message (encoded batch); a larger batch is dead-lettered." },
	{ .name = "protocol", .type = CG_OPT_ENUM,
	  .offset = offsetof(struct mqtt_options, protocol), .def = "5", .values = mqtt_protocols,
	  .desc = "MQTT version. 3.1.1 cannot tell a refused publish from a delivered one." },
	{ 0 }
};

enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_UP };
enum pub_state { PUB_IDLE, PUB_WAITING, PUB_ACKED, PUB_REFUSED, PUB_FAILED };

struct mqtt_state;

/* One Paho client and the context of its callbacks; freed only after
 * MQTTAsync_destroy, after which Paho calls none of them. */
struct mqtt_conn {
	struct mqtt_state *st;
	MQTTAsync client;
};

struct mqtt_state {
	const struct cg_plugin_host *host;
	struct mqtt_options opt;
	char *client_id;
	char *password;               /* from password_file; never logged */
	size_t topic_len;
	bool tls;
	bool v5;
	struct mqtt_conn *conn;       /* NULL before the first flush and after an abandon */
	struct doorbell *bell;        /* NULL when it could not be opened */
	bool bell_tried;

	pthread_mutex_t lock;
	pthread_cond_t cond;          /* CLOCK_MONOTONIC */
	enum link_state link;
	uint64_t lost;                /* connections lost so far */
	uint32_t max_packet;          /* the broker's Maximum Packet Size (v5 CONNACK); 0 = none */
	char link_why[200];           /* why the last connect failed / the link was lost */
	char tls_why[96];             /* OpenSSL's reason for the last failed handshake */
	enum pub_state pub;
	int pub_rc;                   /* PUB_REFUSED: v5 reason code; PUB_FAILED: Paho code */
	/* What happened on Paho's threads, logged by the next flush (log_notes):
	 * host->log is promised only to the forwarder's thread. */
	bool note_connected;
	unsigned note_lost;
	char note_lost_why[200];
	int note_server_rc;           /* reason of a v5 DISCONNECT from the broker; 0 = none */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait on st->cond until `deadline` (monotonic ms); false once it passed. */
static bool wait_until(struct mqtt_state *st, int64_t deadline)
{
	int64_t now = mono_ms();
	if (now >= deadline)
		return false;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = ts.tv_nsec + (deadline - now) % 1000 * 1000000;
	ts.tv_sec += (deadline - now) / 1000 + ns / 1000000000;
	ts.tv_nsec = ns % 1000000000;
	pthread_cond_timedwait(&st->cond, &st->lock, &ts);
	return true;
}

/*
 * Wait like wait_until, but for at most RING_MS at a time, ringing the
 * doorbell after each step: Paho notices a completed TCP connect or a socket
 * that takes more of a pending write only when its receive thread wakes
 * (doorbell.c). False once the deadline passed.
 */
static bool wait_ringing(struct mqtt_state *st, int64_t deadline)
{
	int64_t now = mono_ms();
	if (now >= deadline)
		return false;
	if (!st->bell) {
		wait_until(st, deadline);
		return true;
	}
	int64_t until = deadline - now > RING_MS ? now + RING_MS : deadline;
	wait_until(st, until);
	if (mono_ms() >= until)
		doorbell__ring(st->bell);   /* a send(2), not Paho: fine under the lock */
	return true;
}

static void fmt_ms(char *buf, size_t len, uint64_t ms)
{
	if (ms % 1000 == 0)
		snprintf(buf, len, "%" PRIu64 " s", ms / 1000);
	else
		snprintf(buf, len, "%" PRIu64 " ms", ms);
}

/* ---- Paho callbacks (Paho's threads) ---- */

static void set_link_why(struct mqtt_state *st, const char *what, int code, const char *msg)
{
	/* Paho's connect failure code is its own (negative, with a message) or
	 * the broker's CONNACK return / reason code. */
	char detail[112] = "";
	if (code > 0 && st->v5)
		snprintf(detail, sizeof detail, "%s (0x%02x)", MQTTReasonCode_toString(code), (unsigned)code);
	else if (code > 0)
		snprintf(detail, sizeof detail, "CONNACK return code %d%s", code,
			 code == 4 ? " (bad user name or password)" : code == 5 ? " (not authorized)" : "");
	else if (msg && *msg)
		snprintf(detail, sizeof detail, "%s", msg);
	else if (code < 0)
		snprintf(detail, sizeof detail, "%s", MQTTAsync_strerror(code));
	/* OpenSSL's reason, when there is one, says more than "TCP/TLS connect
	 * failure"; Paho's own host name check leaves none. */
	const char *tls = st->tls_why[0] ? st->tls_why
			  : st->tls && code < 0 ? "TLS handshake failed, or the server's certificate "
						  "does not verify or does not name the host" : "";
	mqtt__say(st->link_why, sizeof st->link_why, "%s%s%s%s%s%s", what, detail[0] ? ": " : "", detail,
	    tls[0] ? " (" : "", tls, tls[0] ? ")" : "");
	st->tls_why[0] = '\0';
}

static void connect_ok(struct mqtt_conn *c, MQTTProperties *props)
{
	struct mqtt_state *st = c->st;
	uint32_t max_packet = 0;
	if (props && MQTTProperties_hasProperty(props, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE))
		max_packet = (uint32_t)MQTTProperties_getNumericValue(props, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE);
	pthread_mutex_lock(&st->lock);
	st->link = LINK_UP;
	st->max_packet = max_packet;
	st->link_why[0] = '\0';
	st->note_connected = true;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
	(void)d;
	connect_ok(ctx, NULL);
}

static void on_connect_ok5(void *ctx, MQTTAsync_successData5 *d)
{
	connect_ok(ctx, d ? &d->properties : NULL);
}

static void connect_failed(struct mqtt_conn *c, int code, const char *msg)
{
	struct mqtt_state *st = c->st;
	pthread_mutex_lock(&st->lock);
	st->link = LINK_DOWN;
	set_link_why(st, "connect failed", code, msg);
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *d)
{
	connect_failed(ctx, d ? d->code : MQTTASYNC_FAILURE, d ? d->message : NULL);
}

static void on_connect_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
	connect_failed(ctx, d ? (d->reasonCode ? (int)d->reasonCode : d->code) : MQTTASYNC_FAILURE,
		       d ? d->message : NULL);
}

/* OpenSSL's reason for a failed handshake ("certificate verify failed"),
 * kept until set_link_why folds it into the connect failure. */
static int on_ssl_error(const char *str, size_t len, void *ctx)
{
	struct mqtt_conn *c = ctx;
	struct mqtt_state *st = c->st;
	/* "<thread>:error:0A000086:SSL routines:<function>:certificate verify failed:<file>:<line>:":
	 * the reason is the fifth field from "error". */
	const char *end = str + len, *p = memmem(str, len, "error:", 6);
	for (int colons = 0; p && p < end && colons < 4; p++)
		if (*p == ':')
			colons++;
	if (!p)
		p = end;
	const char *q = p;
	while (q < end && *q != ':' && *q != '\n')
		q++;
	if (q == p) {   /* not that shape: the first line */
		p = q = str;
		while (q < end && *q != '\n' && *q != '\r')
			q++;
	}
	pthread_mutex_lock(&st->lock);
	mqtt__say(st->tls_why, sizeof st->tls_why, "%.*s", (int)(q - p), p);
	pthread_mutex_unlock(&st->lock);
	return 1;
}

static int start_connect(struct mqtt_state *st, struct mqtt_conn *c);

static void on_lost(void *ctx, char *cause)
{
	struct mqtt_conn *c = ctx;
	struct mqtt_state *st = c->st;
	pthread_mutex_lock(&st->lock);
	st->lost++;
	st->link = LINK_CONNECTING;
	mqtt__say(st->link_why, sizeof st->link_why, "connection lost%s%s", cause ? ": " : "", cause ? cause : "");
	st->note_lost++;
	mqtt__say(st->note_lost_why, sizeof st->note_lost_why, "%s", st->link_why);
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
	/* One attempt now, so the next batch finds the link up; if it fails,
	 * the next flush tries again. */
	int rc = start_connect(st, c);
	if (rc != MQTTASYNC_SUCCESS) {
		pthread_mutex_lock(&st->lock);
		st->link = LINK_DOWN;
		set_link_why(st, "reconnect not started", rc, NULL);
		pthread_cond_broadcast(&st->cond);
		pthread_mutex_unlock(&st->lock);
	}
}

/* A v5 broker closed the connection with a reason (e.g. 0x95: a packet
 * above its limit). Paho calls on_lost as well. */
static void on_disconnected(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
	struct mqtt_state *st = ((struct mqtt_conn *)ctx)->st;
	(void)props;
	pthread_mutex_lock(&st->lock);
	st->note_server_rc = (int)rc;
	if (st->pub == PUB_WAITING && rc == MQTTREASONCODE_PACKET_TOO_LARGE) {
		st->pub = PUB_REFUSED;
		st->pub_rc = rc;
		pthread_cond_broadcast(&st->cond);
	}
	pthread_mutex_unlock(&st->lock);
}

static void pub_done(struct mqtt_conn *c, enum pub_state result, int rc)
{
	struct mqtt_state *st = c->st;
	pthread_mutex_lock(&st->lock);
	if (st->pub == PUB_WAITING) {
		st->pub = result;
		st->pub_rc = rc;
		pthread_cond_broadcast(&st->cond);
	}
	pthread_mutex_unlock(&st->lock);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *d)
{
	(void)d;
	pub_done(ctx, PUB_ACKED, 0);
}

static void on_pub_ok5(void *ctx, MQTTAsync_successData5 *d)
{
	(void)d;
	pub_done(ctx, PUB_ACKED, 0);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *d)
{
	pub_done(ctx, PUB_FAILED, d ? d->code : MQTTASYNC_FAILURE);
}

static void on_pub_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
	/* A PUBACK with a reason code >= 0x80 arrives here with the code;
	 * a publish cut off by a lost connection with reasonCode 0. */
	if (d && d->reasonCode >= MQTTREASONCODE_UNSPECIFIED_ERROR)
		pub_done(ctx, PUB_REFUSED, d->reasonCode);
	else
		pub_done(ctx, PUB_FAILED, d ? d->code : MQTTASYNC_FAILURE);
}

static void log_notes(struct mqtt_state *st)
{
	pthread_mutex_lock(&st->lock);
	bool connected = st->note_connected;
	unsigned lost = st->note_lost;
	int server_rc = st->note_server_rc;
	uint32_t max_packet = st->max_packet;
	char why[sizeof st->note_lost_why];
	mqtt__say(why, sizeof why, "%s", st->note_lost_why);
	st->note_connected = false;
	st->note_lost = 0;
	st->note_server_rc = 0;
	pthread_mutex_unlock(&st->lock);
	if (server_rc)
		st->host->log(st->host, CG_PLOG_WARN, "%s closed the connection: %s (0x%02x)", st->opt.uri,
			      MQTTReasonCode_toString(server_rc), (unsigned)server_rc);
	if (lost)
		st->host->log(st->host, CG_PLOG_WARN, "%s: %s%s", st->opt.uri, why,
			      lost > 1 ? " (and more times before)" : "");
	if (connected) {
		char limit[64] = "";
		if (max_packet)
			mqtt__say(limit, sizeof limit, "; the broker takes packets up to %" PRIu32 " bytes", max_packet);
		st->host->log(st->host, CG_PLOG_INFO, "connected to %s as %s (MQTT %s)%s", st->opt.uri,
			      st->client_id, mqtt_protocols[st->opt.protocol], limit);
	}
}

/* ---- connection ---- */

/* Ask Paho to connect; the outcome arrives in on_connect_ok / _fail. Safe
 * from a Paho callback. The options are copied by Paho. */
static int start_connect(struct mqtt_state *st, struct mqtt_conn *c)
{
	MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
	MQTTAsync_connectOptions co5 = MQTTAsync_connectOptions_initializer5;
	if (st->v5) {
		co = co5;
		co.cleanstart = 1;
		co.onSuccess5 = on_connect_ok5;
		co.onFailure5 = on_connect_fail5;
	} else {
		co.cleansession = 1;
		co.MQTTVersion = MQTTVERSION_3_1_1;
		co.onSuccess = on_connect_ok;
		co.onFailure = on_connect_fail;
	}
	co.context = c;
	co.keepAliveInterval = (int)((st->opt.keepalive + 999) / 1000);
	/* Longer than a flush waits: the flush's own deadline decides (and
	 * abandons the attempt); Paho's only bounds a background reconnect. */
	co.connectTimeout = (int)((st->opt.timeout + 999) / 1000) + 10;
	co.retryInterval = 0;
	co.automaticReconnect = 0;
	co.username = st->opt.username;
	if (st->password) {
		/* binary: a password need not be valid UTF-8 */
		co.binarypwd.data = st->password;
		co.binarypwd.len = (int)strlen(st->password);
	}
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	if (st->tls) {
		ssl.enableServerCertAuth = 1;   /* the broker's chain must verify ... */
		ssl.verify = 1;                 /* ... and name the host we dialled */
		ssl.trustStore = st->opt.ca_file;
		ssl.keyStore = st->opt.cert_file;
		ssl.privateKey = st->opt.key_file ? st->opt.key_file : st->opt.cert_file;
		ssl.ssl_error_cb = on_ssl_error;
		ssl.ssl_error_context = c;
		co.ssl = &ssl;
	}
	return MQTTAsync_connect(c->client, &co);
}

static void conn_free(struct mqtt_conn *c)
{
	if (c->client)
		MQTTAsync_destroy(&c->client);
	free(c);
}

/* Drop the client with whatever Paho still holds for it (an unfinished
 * publish, a connect in progress). Not from a Paho callback. */
static void abandon(struct mqtt_state *st)
{
	struct mqtt_conn *c = st->conn;
	st->conn = NULL;
	if (c)
		conn_free(c);   /* may call our callbacks; they take st->lock, we do not hold it */
	pthread_mutex_lock(&st->lock);
	st->link = LINK_DOWN;
	st->pub = PUB_IDLE;
	pthread_mutex_unlock(&st->lock);
}

static int conn_open(struct mqtt_state *st, char *err, size_t errlen)
{
	struct mqtt_conn *c = calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->st = st;
	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
	co.MQTTVersion = st->v5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
	co.sendWhileDisconnected = 0;   /* a batch is published on a live connection or not at all */
	int rc = MQTTAsync_createWithOptions(&c->client, st->opt.uri, st->client_id,
					     MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
	if (rc != MQTTASYNC_SUCCESS) {
		snprintf(err, errlen, "cannot create an MQTT client for %s: %s", st->opt.uri, MQTTAsync_strerror(rc));
		free(c);
		return -1;
	}
	rc = MQTTAsync_setConnectionLostCallback(c->client, c, on_lost);
	if (rc == MQTTASYNC_SUCCESS && st->v5)
		rc = MQTTAsync_setDisconnected(c->client, c, on_disconnected);
	if (rc != MQTTASYNC_SUCCESS) {
		snprintf(err, errlen, "cannot set MQTT callbacks: %s", MQTTAsync_strerror(rc));
		conn_free(c);
		return -1;
	}
	st->conn = c;
	return 0;
}

/*
 * Make sure the link is up by `deadline`: start a connect if none is under
 * way, wait for its outcome. On false, r says why (always RETRY): a broker
 * that is down or refuses us is no fault of the batch.
 */
static bool ensure_link(struct mqtt_state *st, int64_t deadline, struct cg_flush_result *r)
{
	if (!st->conn && conn_open(st, r->reason, sizeof r->reason) != 0)
		return false;
	pthread_mutex_lock(&st->lock);
	bool start = st->link == LINK_DOWN;
	if (start) {
		st->link = LINK_CONNECTING;
		st->link_why[0] = st->tls_why[0] = '\0';
	}
	pthread_mutex_unlock(&st->lock);
	if (start) {
		int rc = start_connect(st, st->conn);
		if (rc != MQTTASYNC_SUCCESS) {
			mqtt__say(r->reason, sizeof r->reason, "cannot connect to %.120s: %s", st->opt.uri,
			    MQTTAsync_strerror(rc));
			abandon(st);
			return false;
		}
	}
	pthread_mutex_lock(&st->lock);
	while (st->link == LINK_CONNECTING && wait_ringing(st, deadline))
		;
	enum link_state link = st->link;
	char why[sizeof st->link_why];
	snprintf(why, sizeof why, "%s", st->link_why);
	pthread_mutex_unlock(&st->lock);
	if (link == LINK_UP)
		return true;
	if (link == LINK_CONNECTING) {
		char t[32];
		fmt_ms(t, sizeof t, st->opt.timeout);
		mqtt__say(r->reason, sizeof r->reason, "not connected to %.120s within %s%s%s", st->opt.uri, t,
		    why[0] ? ": " : "", why);
		abandon(st);   /* the next flush starts afresh */
	} else {
		mqtt__say(r->reason, sizeof r->reason, "%.120s: %s", st->opt.uri, why[0] ? why : "connect failed");
	}
	return false;
}

/* ---- flush ---- */

static size_t varint_len(size_t n)
{
	return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

/* Remaining length of the PUBLISH packet that carries `len` payload bytes. */
static uint64_t publish_remaining(const struct mqtt_state *st, size_t len)
{
	uint64_t n = 2 + st->topic_len + 2 + len;   /* topic, packet id, payload */
	if (st->v5) {
		size_t props = 1 + 2 + strlen(CONTENT_TYPE);
		n += varint_len(props) + props;
	}
	return n;
}

static void drop_too_large(struct cg_flush_result *r, uint64_t size, const char *what, uint64_t limit,
			   const char *limit_name)
{
	r->status = CG_FLUSH_DROP;
	mqtt__say(r->reason, sizeof r->reason, "%s is %" PRIu64 " bytes, above %s (%" PRIu64 " bytes)", what,
	    size, limit_name, limit);
}

/* PUBACK reason codes that the same message would get again: dead letter.
 * The rest (0x80 unspecified, 0x83 implementation specific, 0x91 packet id
 * in use, 0x97 quota exceeded) may pass on a later try. */
static bool reason_permanent(int rc)
{
	switch (rc) {
	case MQTTREASONCODE_NOT_AUTHORIZED:
	case MQTTREASONCODE_TOPIC_NAME_INVALID:
	case MQTTREASONCODE_PACKET_TOO_LARGE:
	case MQTTREASONCODE_PAYLOAD_FORMAT_INVALID:
		return true;
	default:
		return false;
	}
}

/*
 * Publish one message on the live link and wait for its PUBACK until
 * `deadline`; the outcome in r. True when Paho found itself disconnected
 * before it took the message: nothing was sent, a reconnect may try again.
 */
static bool publish(struct mqtt_state *st, const struct cg_plugin_batch *batch, uint8_t *buf, size_t len,
		    int64_t deadline, struct cg_flush_result *r)
{
	MQTTAsync_message m = MQTTAsync_message_initializer;
	m.payload = buf;
	m.payloadlen = (int)len;
	m.qos = 1;
	m.retained = 0;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	ro.context = st->conn;
	MQTTProperty ct = { .identifier = MQTTPROPERTY_CODE_CONTENT_TYPE };
	if (st->v5) {
		ct.value.data.data = CONTENT_TYPE;
		ct.value.data.len = (int)strlen(CONTENT_TYPE);
		if (MQTTProperties_add(&m.properties, &ct) != 0) {
			mqtt__say(r->reason, sizeof r->reason, "out of memory");
			return false;
		}
		ro.onSuccess5 = on_pub_ok5;
		ro.onFailure5 = on_pub_fail5;
	} else {
		ro.onSuccess = on_pub_ok;
		ro.onFailure = on_pub_fail;
	}

	pthread_mutex_lock(&st->lock);
	st->pub = PUB_WAITING;
	uint64_t lost = st->lost;
	pthread_mutex_unlock(&st->lock);
	int64_t t0 = mono_ms();
	int rc = MQTTAsync_sendMessage(st->conn->client, st->opt.topic, &m, &ro);   /* copies payload and properties */
	MQTTProperties_free(&m.properties);
	if (rc != MQTTASYNC_SUCCESS) {
		pthread_mutex_lock(&st->lock);
		st->pub = PUB_IDLE;
		if (rc == MQTTASYNC_DISCONNECTED && st->link == LINK_UP)
			st->link = LINK_DOWN;
		pthread_mutex_unlock(&st->lock);
		mqtt__say(r->reason, sizeof r->reason, "publish to %.120s not accepted: %s", st->opt.uri,
		    MQTTAsync_strerror(rc));
		return rc == MQTTASYNC_DISCONNECTED;
	}

	/* Paho reports a publish cut off by a lost connection (onFailure)
	 * before it reports the loss; a loss with no word on the publish means
	 * it was still queued inside Paho. */
	pthread_mutex_lock(&st->lock);
	while (st->pub == PUB_WAITING && st->lost == lost && wait_ringing(st, deadline))
		;
	enum pub_state result = st->pub;
	int prc = st->pub_rc;
	bool was_lost = st->lost != lost;
	char why[sizeof st->link_why];
	snprintf(why, sizeof why, "%s", st->link_why);
	if (result != PUB_WAITING)
		st->pub = PUB_IDLE;
	pthread_mutex_unlock(&st->lock);
	int64_t ms = mono_ms() - t0;

	switch (result) {
	case PUB_ACKED:
		r->status = CG_FLUSH_OK;
		mqtt__say(r->reason, sizeof r->reason, "published %zu bytes (%zu records, batch %" PRIu64
		    ") to %.100s in %" PRId64 " ms", len, batch->n, batch->batch_id, st->opt.topic, ms);
		return false;
	case PUB_REFUSED:
		r->status = reason_permanent(prc) ? CG_FLUSH_DROP : CG_FLUSH_RETRY;
		mqtt__say(r->reason, sizeof r->reason, "broker refused the message on %.100s: %s (0x%02x)",
		    st->opt.topic, MQTTReasonCode_toString(prc), (unsigned)prc);
		if (prc == MQTTREASONCODE_PACKET_TOO_LARGE)
			abandon(st);   /* a broker that closed on it: start clean */
		return false;
	case PUB_FAILED:
		mqtt__say(r->reason, sizeof r->reason, "no PUBACK from %.120s: %s%s%s", st->opt.uri,
		    MQTTAsync_strerror(prc), why[0] ? "; " : "", why);
		return false;
	case PUB_WAITING:
	case PUB_IDLE:
		break;
	}
	char t[32];
	fmt_ms(t, sizeof t, st->opt.timeout);
	if (was_lost)
		mqtt__say(r->reason, sizeof r->reason, "no PUBACK from %.120s: %s", st->opt.uri, why);
	else
		mqtt__say(r->reason, sizeof r->reason, "no PUBACK from %.120s within %s (%zu bytes)", st->opt.uri, t, len);
	st->host->log(st->host, CG_PLOG_WARN, "%s; dropping the connection so the message is not sent later",
		      r->reason);
	abandon(st);
	return false;
}

static void mqtt_flush(void *state, const struct cg_plugin_batch *batch, struct cg_flush_result *r)
{
	struct mqtt_state *st = state;
	r->status = CG_FLUSH_RETRY;
	r->retry_after_ms = 0;
	r->reason[0] = '\0';
	log_notes(st);   /* what happened since the last flush */

	/* The dumps alone too large: no need to encode to know. */
	if (batch->body_bytes > st->opt.max_message_bytes) {
		drop_too_large(r, batch->body_bytes, "the batch's dump data", st->opt.max_message_bytes,
			       "max_message_bytes");
		return;
	}
	uint8_t *buf = NULL;
	size_t len = 0;
	if (st->host->batch_cbor(st->host, batch, &buf, &len) != 0) {
		mqtt__say(r->reason, sizeof r->reason, "cannot encode the batch");
		return;
	}
	if (len > st->opt.max_message_bytes) {
		drop_too_large(r, len, "the encoded batch", st->opt.max_message_bytes, "max_message_bytes");
		free(buf);
		return;
	}
	uint64_t remaining = publish_remaining(st, len);
	if (remaining > MQTT_MAX_REMAINING) {
		drop_too_large(r, remaining, "the PUBLISH packet", MQTT_MAX_REMAINING, "MQTT's limit");
		free(buf);
		return;
	}

	if (!st->bell_tried) {   /* once; not part of the flush's timeout */
		char e[128];
		st->bell_tried = true;
		st->bell = doorbell__open(e, sizeof e);
		if (!st->bell)
			st->host->log(st->host, CG_PLOG_WARN, "no doorbell for Paho (%s): connecting and sending a "
				      "message larger than the socket buffer will take a second or more", e);
	}
	int64_t deadline = mono_ms() + (int64_t)st->opt.timeout;
	/* Twice at most: a link that went down unnoticed (Paho refused the
	 * message as disconnected before taking it) gets one reconnect. */
	for (int attempt = 0; attempt < 2; attempt++) {
		bool up = ensure_link(st, deadline, r);
		log_notes(st);
		if (!up) {
			st->host->log(st->host, CG_PLOG_DEBUG, "batch %" PRIu64 ": %s", batch->batch_id, r->reason);
			break;
		}
		pthread_mutex_lock(&st->lock);
		uint32_t max_packet = st->max_packet;
		pthread_mutex_unlock(&st->lock);
		uint64_t packet = 1 + varint_len((size_t)remaining) + remaining;
		if (max_packet && packet > max_packet) {
			/* Sending it would only get us disconnected, every time. */
			drop_too_large(r, packet, "the PUBLISH packet", max_packet, "the broker's maximum packet size");
			break;
		}
		bool again = publish(st, batch, buf, len, deadline, r);
		log_notes(st);
		st->host->log(st->host, CG_PLOG_DEBUG,   /* the core logs the outcome */
			      "batch %" PRIu64 ": %s", batch->batch_id, r->reason);
		if (!again)
			break;
	}
	free(buf);
}

/* ---- init / destroy ---- */

/* Well-formed UTF-8 without U+0000, as MQTT requires of topic names. */
static bool utf8_ok(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s++;
		int n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
		if (n < 0 || (n == 1 && c < 0xc2) || (n == 3 && c > 0xf4))
			return false;
		unsigned cp = c & (0x3f >> n);
		for (int i = 0; i < n; i++, s++) {
			if ((*s & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (*s & 0x3f);
		}
		if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
	}
	return true;
}

static void state_free(struct mqtt_state *st)
{
	if (st->conn)
		conn_free(st->conn);
	doorbell__close(st->bell);
	if (st->password) {
		explicit_bzero(st->password, strlen(st->password));
		free(st->password);
	}
	free(st->client_id);
	pthread_cond_destroy(&st->cond);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

static int mqtt_init(const struct cg_plugin_host *host, const void *options, void **state, char *err,
		     size_t errlen)
{
	const struct mqtt_options *o = options;
	bool tls = strncmp(o->uri, "ssl://", 6) == 0 || strncmp(o->uri, "mqtts://", 8) == 0;
	if (!tls && strncmp(o->uri, "tcp://", 6) != 0) {
		snprintf(err, errlen, "uri %.200s: must start with tcp://, ssl:// or mqtts://", o->uri);
		return -1;
	}
	if (strpbrk(o->topic, "+#")) {
		snprintf(err, errlen, "topic %.200s: wildcards (+, #) are for subscriptions, not a topic to publish on",
			 o->topic);
		return -1;
	}
	if (!utf8_ok((const unsigned char *)o->topic)) {
		snprintf(err, errlen, "topic: not valid UTF-8");
		return -1;
	}
	if (!tls && (o->ca_file || o->cert_file || o->key_file)) {
		snprintf(err, errlen, "ca_file, cert_file and key_file need a TLS uri (ssl:// or mqtts://), not %.200s",
			 o->uri);
		return -1;
	}
	if (o->key_file && !o->cert_file) {
		snprintf(err, errlen, "key_file needs cert_file");
		return -1;
	}
	if (o->password_file && !o->username && o->protocol == PROTO_V311) {
		snprintf(err, errlen, "password_file needs username with protocol 3.1.1");
		return -1;
	}

	struct mqtt_state *st = calloc(1, sizeof *st);
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&st->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->cond, &ca);
	pthread_condattr_destroy(&ca);
	st->host = host;
	st->opt = *o;
	st->tls = tls;
	st->v5 = o->protocol == PROTO_V5;
	st->topic_len = strlen(o->topic);
	if (o->client_id) {
		st->client_id = strdup(o->client_id);
	} else {
		size_t n = strlen("crashgate--") + strlen(host->gateway_id) + strlen(host->upstream) + 1;
		st->client_id = malloc(n);
		if (st->client_id)
			snprintf(st->client_id, n, "crashgate-%s-%s", host->gateway_id, host->upstream);
	}
	if (!st->client_id) {
		snprintf(err, errlen, "out of memory");
		state_free(st);
		return -1;
	}
	if (o->password_file) {
		st->password = host->read_secret(o->password_file);
		if (!st->password) {
			snprintf(err, errlen, "password_file %.200s: cannot read", o->password_file);
			state_free(st);
			return -1;
		}
	}
	*state = st;
	return 0;
}

static void on_disconnect_done(void *ctx, MQTTAsync_successData *d)
{
	(void)d;
	struct mqtt_state *st = ((struct mqtt_conn *)ctx)->st;
	pthread_mutex_lock(&st->lock);
	st->link = LINK_DOWN;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void on_disconnect_done5(void *ctx, MQTTAsync_successData5 *d)
{
	(void)d;
	on_disconnect_done(ctx, NULL);
}

static void mqtt_destroy(void *state)
{
	struct mqtt_state *st = state;
	if (!st)
		return;
	pthread_mutex_lock(&st->lock);
	bool up = st->conn && st->link == LINK_UP;
	pthread_mutex_unlock(&st->lock);
	if (up) {
		/* A polite DISCONNECT (nothing is in flight between flushes), bounded. */
		MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
		d.timeout = 0;
		d.context = st->conn;
		if (st->v5) {
			d.struct_version = 1;
			d.onSuccess5 = on_disconnect_done5;
		} else {
			d.onSuccess = on_disconnect_done;
		}
		if (MQTTAsync_disconnect(st->conn->client, &d) == MQTTASYNC_SUCCESS) {
			int64_t deadline = mono_ms() + 2000;
			pthread_mutex_lock(&st->lock);
			while (st->link == LINK_UP && wait_until(st, deadline))
				;
			pthread_mutex_unlock(&st->lock);
		}
	}
	state_free(st);
}

CG_PLUGIN_EXPORT const struct cg_plugin crashgate_output_plugin = {
	.abi_version = CG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct cg_plugin),
	.kind = "mqtt",
	.description = "One message per batch to an MQTT broker (QoS 1, TLS; delivered once the PUBACK arrives).",
	.options = mqtt_option_table,
	.options_size = sizeof(struct mqtt_options),
	.init = mqtt_init,
	.flush = mqtt_flush,
	.destroy = mqtt_destroy,
};
