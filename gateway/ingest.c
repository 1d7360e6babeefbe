#include "ingest.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include "log.h"

/* prefix (at most 256, config.c) + "/dev/" + device (64) + "/chunk" + NUL */
#define CG_TOPIC_MAX (256 + 5 + CG_DEVICE_ID_MAX + 6 + 1)

/*
 * Messages to devices (acks, consent signals) wait in our own queue and are
 * handed to Paho a few at a time, the next one when Paho reports the last
 * one sent. Paho walks its whole queue of unsent messages for every message
 * it accepts (to find a free message id), so thousands of acks queued in
 * Paho at once cost quadratic CPU and delayed a crash storm's `throttled`
 * answers by tens of seconds; bounded here, they leave as fast as the broker
 * acknowledges them. An identical message still waiting is not queued twice.
 */
#define OUT_QUEUE_MAX 200000   /* beyond: dropped (a device asks again; consent is republished) */
#define STALL_MS      30000    /* no completion for this long: Paho lost some; reopen the window */

struct out_item {
	UT_hash_handle hh;         /* by (topic, payload) while queued */
	struct out_item *next;
	uint64_t key;              /* hash of topic and payload */
	bool indexed;              /* in out_index (a colliding key is not) */
	bool retained;
	size_t len;
	char *topic;
	uint8_t *payload;
	char buf[];                /* topic, NUL, payload */
};

struct cg_ingest {
	MQTTAsync client;
	pthread_mutex_t out_lock;  /* guards the queue; never held while calling Paho */
	/* Two FIFOs: acks first (a device waits for its answer, and in a storm
	 * every moment costs chunks), then consent signals. */
	struct out_item *out_head[2], *out_tail[2], *out_index;
	size_t out_queued;
	unsigned in_paho;
	unsigned in_paho_consent;  /* of those, consent signals: at most half the window */
	unsigned window;           /* mqtt.max_inflight: what Paho may have in flight */
	int64_t last_progress;     /* monotonic ms of the last completion */
	struct cg_reasm *rs;
	char *uri;
	char *client_id;
	char *prefix;
	size_t prefix_len;
	char *username;
	char *password;            /* from password_file; never logged */
	char sub_chunk[CG_TOPIC_MAX];
	char sub_hello[CG_TOPIC_MAX];
	const struct cg_config *cfg;
	atomic_bool connected;
	pthread_mutex_t stats_lock;
	struct cg_ingest_stats stats;
};

static void stat_add(struct cg_ingest *in, uint64_t *field)
{
	pthread_mutex_lock(&in->stats_lock);
	(*field)++;
	pthread_mutex_unlock(&in->stats_lock);
}

/*
 * Split "{prefix}/dev/{device}/{kind}" without copying more than the device
 * id. Returns 1 for chunk, 2 for hello, 0 for anything else.
 */
static int parse_topic(struct cg_ingest *in, const char *topic, size_t tlen, char *device)
{
	if (tlen <= in->prefix_len + 5 || memcmp(topic, in->prefix, in->prefix_len) != 0 ||
	    memcmp(topic + in->prefix_len, "/dev/", 5) != 0)
		return 0;
	const char *dev = topic + in->prefix_len + 5;
	const char *end = topic + tlen;
	const char *slash = memchr(dev, '/', (size_t)(end - dev));
	if (!slash || !cg_device_id_valid(dev, (size_t)(slash - dev)))
		return 0;
	size_t dlen = (size_t)(slash - dev);
	size_t klen = (size_t)(end - slash - 1);
	int kind = 0;
	if (klen == 5 && memcmp(slash + 1, "chunk", 5) == 0)
		kind = 1;
	else if (klen == 5 && memcmp(slash + 1, "hello", 5) == 0)
		kind = 2;
	if (kind) {
		memcpy(device, dev, dlen);
		device[dlen] = '\0';
	}
	return kind;
}

/* Paho's delivery callback: return only once the message is handled and its
 * chunk is in the WAL; always return 1 (0 would make Paho queue it in memory
 * and PUBACK it anyway). */
static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
	struct cg_ingest *in = ctx;
	size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
	char device[CG_DEVICE_ID_MAX + 1];
	stat_add(in, &in->stats.messages);
	int kind = parse_topic(in, topic, tlen, device);
	if (kind == 1)
		cg_reasm_chunk(in->rs, device, m->payload, (size_t)m->payloadlen);
	else if (kind == 2)
		cg_reasm_hello(in->rs, device, m->payload, (size_t)m->payloadlen);
	else
		stat_add(in, &in->stats.bad_topic);
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void on_subscribe_failure(void *ctx, MQTTAsync_failureData *resp)
{
	(void)ctx;
	log_error("mqtt", "subscribe failed: code %d%s%s", resp ? resp->code : -1,
		  resp && resp->message ? ": " : "", resp && resp->message ? resp->message : "");
}

static void on_subscribe(void *ctx, MQTTAsync_successData *resp)
{
	struct cg_ingest *in = ctx;
	/* A granted QoS of 0x80 means the broker's ACL refused the subscription. */
	if (resp && resp->alt.qosList) {
		for (int i = 0; i < 2; i++) {
			if (resp->alt.qosList[i] == 0x80)
				log_error("mqtt", "broker refused subscription %s (check the ACL)",
					  i ? in->sub_hello : in->sub_chunk);
		}
	}
	log_info("mqtt", "subscribed to %s and %s at QoS 1", in->sub_chunk, in->sub_hello);
}

/* On every (re)connect: subscribe again. The persistent session keeps the
 * subscription across our downtime; subscribing again is harmless and covers
 * a broker that lost its state. */
static void on_connected(void *ctx, char *cause)
{
	struct cg_ingest *in = ctx;
	(void)cause;
	atomic_store(&in->connected, true);
	stat_add(in, &in->stats.connects);
	log_info("mqtt", "connected to %s as %s", in->uri, in->client_id);
	char *topics[2] = { in->sub_chunk, in->sub_hello };
	int qos[2] = { 1, 1 };
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	ro.onSuccess = on_subscribe;
	ro.onFailure = on_subscribe_failure;
	ro.context = in;
	int rc = MQTTAsync_subscribeMany(in->client, 2, topics, qos, &ro);
	if (rc != MQTTASYNC_SUCCESS)
		log_error("mqtt", "subscribe request failed: %s", MQTTAsync_strerror(rc));
}

static void on_connection_lost(void *ctx, char *cause)
{
	struct cg_ingest *in = ctx;
	atomic_store(&in->connected, false);
	stat_add(in, &in->stats.connection_lost);
	log_warn("mqtt", "connection lost%s%s; reconnecting", cause ? ": " : "", cause ? cause : "");
}

static void on_connect_failure(void *ctx, MQTTAsync_failureData *resp)
{
	struct cg_ingest *in = ctx;
	log_warn("mqtt", "connect to %s failed: code %d%s%s; retrying", in->uri, resp ? resp->code : -1,
		 resp && resp->message ? ": " : "", resp && resp->message ? resp->message : "");
}

int cg_ingest_create(const struct cg_config *cfg, struct cg_ingest **out, char *err, size_t errlen)
{
	struct cg_ingest *in = calloc(1, sizeof *in);
	if (!in)
		return CG_ERR_NOMEM;
	pthread_mutex_init(&in->stats_lock, NULL);
	pthread_mutex_init(&in->out_lock, NULL);
	in->window = cfg->mqtt.max_inflight;
	in->cfg = cfg;
	in->uri = strdup(cfg->mqtt.uri);
	in->client_id = strdup(cfg->mqtt.client_id);
	in->prefix = strdup(cfg->mqtt.topic_prefix);
	in->prefix_len = strlen(cfg->mqtt.topic_prefix);
	snprintf(in->sub_chunk, sizeof in->sub_chunk, "%s/dev/+/chunk", cfg->mqtt.topic_prefix);
	snprintf(in->sub_hello, sizeof in->sub_hello, "%s/dev/+/hello", cfg->mqtt.topic_prefix);
	if (cfg->mqtt.username)
		in->username = strdup(cfg->mqtt.username);
	if (cfg->mqtt.password_file) {
		in->password = cg_read_secret_file(cfg->mqtt.password_file);
		if (!in->password) {
			snprintf(err, errlen, "mqtt.password_file %s: cannot read", cfg->mqtt.password_file);
			cg_ingest_destroy(in);
			return CG_ERR_CONFIG;
		}
	}
	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
	co.MQTTVersion = MQTTVERSION_3_1_1;
	/* Acks produced while the broker is away are queued, bounded. */
	co.sendWhileDisconnected = 1;
	co.maxBufferedMessages = 10000;
	co.deleteOldestMessages = 1;
	int rc = MQTTAsync_createWithOptions(&in->client, in->uri, in->client_id,
					     MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
	if (rc != MQTTASYNC_SUCCESS) {
		snprintf(err, errlen, "mqtt client for %s: %s", in->uri, MQTTAsync_strerror(rc));
		in->client = NULL;
		cg_ingest_destroy(in);
		return CG_ERR_MQTT;
	}
	rc = MQTTAsync_setCallbacks(in->client, in, on_connection_lost, on_message, NULL);
	if (rc == MQTTASYNC_SUCCESS)
		rc = MQTTAsync_setConnected(in->client, in, on_connected);
	if (rc != MQTTASYNC_SUCCESS) {
		snprintf(err, errlen, "mqtt callbacks: %s", MQTTAsync_strerror(rc));
		cg_ingest_destroy(in);
		return CG_ERR_MQTT;
	}
	*out = in;
	return CG_OK;
}

int cg_ingest_start(struct cg_ingest *in, struct cg_reasm *rs, char *err, size_t errlen)
{
	const struct cg_config *cfg = in->cfg;
	in->rs = rs;
	MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
	co.keepAliveInterval = (int)(cfg->mqtt.keepalive_ms / 1000);
	co.cleansession = 0;          /* persistent session: chunks wait in the broker while we are down */
	co.automaticReconnect = 1;
	co.minRetryInterval = (int)(cfg->mqtt.reconnect_min_ms / 1000) ? (int)(cfg->mqtt.reconnect_min_ms / 1000) : 1;
	co.maxRetryInterval = (int)(cfg->mqtt.reconnect_max_ms / 1000) ? (int)(cfg->mqtt.reconnect_max_ms / 1000) : 1;
	co.maxInflight = (int)cfg->mqtt.max_inflight;
	co.connectTimeout = 10;
	co.username = in->username;
	co.password = in->password;
	co.onFailure = on_connect_failure;
	co.context = in;
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	bool tls = strncmp(in->uri, "ssl://", 6) == 0 || strncmp(in->uri, "mqtts://", 8) == 0;
	if (tls) {
		ssl.enableServerCertAuth = 1;
		ssl.verify = cfg->mqtt.tls.verify_hostname;
		ssl.trustStore = cfg->mqtt.tls.ca_file;
		ssl.keyStore = cfg->mqtt.tls.cert_file;
		ssl.privateKey = cfg->mqtt.tls.key_file;
		ssl.sslVersion = MQTT_SSL_VERSION_TLS_1_2;
		co.ssl = &ssl;
	}
	int rc = MQTTAsync_connect(in->client, &co);
	if (rc != MQTTASYNC_SUCCESS) {
		snprintf(err, errlen, "mqtt connect to %s: %s", in->uri, MQTTAsync_strerror(rc));
		return CG_ERR_MQTT;
	}
	return CG_OK;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

static void pump(struct cg_ingest *in);

static void sent(struct cg_ingest *in, bool consent)
{
	pthread_mutex_lock(&in->out_lock);
	if (in->in_paho)
		in->in_paho--;
	if (consent && in->in_paho_consent)
		in->in_paho_consent--;
	in->last_progress = mono_ms();
	pthread_mutex_unlock(&in->out_lock);
	pump(in);
}

static void on_sent_ack(void *ctx, MQTTAsync_successData *r)
{
	(void)r;
	sent(ctx, false);
}

static void on_sent_consent(void *ctx, MQTTAsync_successData *r)
{
	(void)r;
	sent(ctx, true);
}

static void send_failed(struct cg_ingest *in, MQTTAsync_failureData *r, bool consent)
{
	stat_add(in, &in->stats.acks_dropped);
	log_debug("mqtt", "message to a device not delivered: code %d", r ? r->code : -1);
	sent(in, consent);
}

static void on_failed_ack(void *ctx, MQTTAsync_failureData *r)
{
	send_failed(ctx, r, false);
}

static void on_failed_consent(void *ctx, MQTTAsync_failureData *r)
{
	send_failed(ctx, r, true);
}

/* Hand queued messages to Paho while fewer than max_inflight are inside it:
 * beyond that Paho would only queue them (and scan that queue). */
static void pump(struct cg_ingest *in)
{
	for (;;) {
		pthread_mutex_lock(&in->out_lock);
		if (in->in_paho >= in->window && mono_ms() - in->last_progress >= STALL_MS) {
			/* Paho reports neither success nor failure for some messages
			 * (lost with a connection): do not let them close the window. */
			log_warn("mqtt", "%u messages to devices unconfirmed for %d s; sending more",
				 in->in_paho, STALL_MS / 1000);
			in->in_paho = in->in_paho_consent = 0;
			in->last_progress = mono_ms();
		}
		/* Acks first; consent signals fill at most half the window, so a
		 * burst of them (10,000 new devices) never delays an answer. */
		int q = in->out_head[0] ? 0 : 1;
		struct out_item *it = in->in_paho < in->window ? in->out_head[q] : NULL;
		if (q == 1 && in->in_paho_consent >= (in->window + 1) / 2)
			it = NULL;
		if (it) {
			in->out_head[q] = it->next;
			if (!in->out_head[q])
				in->out_tail[q] = NULL;
			if (it->indexed)
				HASH_DEL(in->out_index, it);
			in->out_queued--;
			if (in->in_paho++ == 0)
				in->last_progress = mono_ms();
			if (q == 1)
				in->in_paho_consent++;
		}
		pthread_mutex_unlock(&in->out_lock);
		if (!it)
			return;
		MQTTAsync_message m = MQTTAsync_message_initializer;
		m.payload = it->payload;
		m.payloadlen = (int)it->len;
		m.qos = 1;
		m.retained = it->retained;
		MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
		ro.onSuccess = it->retained ? on_sent_consent : on_sent_ack;
		ro.onFailure = it->retained ? on_failed_consent : on_failed_ack;
		ro.context = in;
		int rc = MQTTAsync_sendMessage(in->client, it->topic, &m, &ro);
		if (rc != MQTTASYNC_SUCCESS) {
			/* The device asks again (hello or resend); consent is republished. */
			stat_add(in, &in->stats.acks_dropped);
			log_debug("mqtt", "message to %s not queued: %s", it->topic, MQTTAsync_strerror(rc));
			pthread_mutex_lock(&in->out_lock);
			in->in_paho--;
			if (it->retained)
				in->in_paho_consent--;
			pthread_mutex_unlock(&in->out_lock);
		}
		free(it);
	}
}

static void enqueue(struct cg_ingest *in, const char *device, const char *kind, bool retained,
		    const uint8_t *msg, size_t len)
{
	char topic[CG_TOPIC_MAX + 2];
	int tl = snprintf(topic, sizeof topic, "%s/dev/%s/%s", in->prefix, device, kind);
	if (tl < 0 || (size_t)tl >= sizeof topic)
		return;
	uint64_t key = fnv1a(fnv1a(14695981039346656037ull, topic, (size_t)tl + 1), msg, len);
	pthread_mutex_lock(&in->out_lock);
	struct out_item *dup = NULL;
	HASH_FIND(hh, in->out_index, &key, sizeof key, dup);
	bool same = dup && dup->len == len && dup->retained == retained &&
		    strcmp(dup->topic, topic) == 0 && memcmp(dup->payload, msg, len) == 0;
	struct out_item *it = NULL;
	if (!same && in->out_queued < OUT_QUEUE_MAX)
		it = malloc(sizeof *it + (size_t)tl + 1 + len);
	if (it) {
		memset(it, 0, sizeof *it);
		it->key = key;
		it->retained = retained;
		it->len = len;
		it->topic = it->buf;
		memcpy(it->topic, topic, (size_t)tl + 1);
		it->payload = (uint8_t *)it->buf + tl + 1;
		memcpy(it->payload, msg, len);
		if (!dup) {   /* a colliding key keeps the first in the index */
			HASH_ADD(hh, in->out_index, key, sizeof it->key, it);
			it->indexed = true;
		}
		int q = retained ? 1 : 0;
		if (in->out_tail[q])
			in->out_tail[q]->next = it;
		else
			in->out_head[q] = it;
		in->out_tail[q] = it;
		in->out_queued++;
	}
	pthread_mutex_unlock(&in->out_lock);
	if (!same && !it)
		stat_add(in, &in->stats.acks_dropped);
	pump(in);
}

void cg_ingest_send_ack(void *ctx, const char *device, const uint8_t *msg, size_t len)
{
	enqueue(ctx, device, "ack", false, msg, len);
}

void cg_ingest_send_consent(void *ctx, const char *device, const uint8_t *msg, size_t len)
{
	/* Retained: a device that connects later finds it waiting (SPEC §5). */
	enqueue(ctx, device, "consent", true, msg, len);
}

bool cg_ingest_connected(struct cg_ingest *in)
{
	return atomic_load(&in->connected);
}

void cg_ingest_get_stats(struct cg_ingest *in, struct cg_ingest_stats *out)
{
	pthread_mutex_lock(&in->stats_lock);
	*out = in->stats;
	pthread_mutex_unlock(&in->stats_lock);
}

void cg_ingest_stop(struct cg_ingest *in, int timeout_ms)
{
	if (!in || !in->client)
		return;
	/* Let the queued acks reach the broker first, bounded. */
	for (int i = 0; i < timeout_ms / 10 && MQTTAsync_isConnected(in->client); i++) {
		pthread_mutex_lock(&in->out_lock);
		bool idle = in->out_queued == 0 && in->in_paho == 0;
		pthread_mutex_unlock(&in->out_lock);
		if (idle)
			break;
		pump(in);
		struct timespec ts = { 0, 10 * 1000000L };
		nanosleep(&ts, NULL);
	}
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
	d.timeout = timeout_ms;
	if (MQTTAsync_isConnected(in->client))
		MQTTAsync_disconnect(in->client, &d);
	/* Paho's disconnect is asynchronous: wait, bounded, until it is done. */
	for (int i = 0; i < timeout_ms / 10 + 50 && MQTTAsync_isConnected(in->client); i++) {
		struct timespec ts = { 0, 10 * 1000000L };
		nanosleep(&ts, NULL);
	}
	atomic_store(&in->connected, false);
}

void cg_ingest_destroy(struct cg_ingest *in)
{
	if (!in)
		return;
	if (in->client)
		MQTTAsync_destroy(&in->client);
	if (in->password) {
		explicit_bzero(in->password, strlen(in->password));
		free(in->password);
	}
	free(in->username);
	free(in->uri);
	free(in->client_id);
	free(in->prefix);
	HASH_CLEAR(hh, in->out_index);
	for (int q = 0; q < 2; q++) {
		for (struct out_item *it = in->out_head[q], *next; it; it = next) {
			next = it->next;
			free(it);
		}
	}
	pthread_mutex_destroy(&in->out_lock);
	pthread_mutex_destroy(&in->stats_lock);
	free(in);
}
