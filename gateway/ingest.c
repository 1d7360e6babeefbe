#include "ingest.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* prefix (at most 256, config.c) + "/dev/" + device (64) + "/chunk" + NUL */
#define CG_TOPIC_MAX (256 + 5 + CG_DEVICE_ID_MAX + 6 + 1)

struct cg_ingest {
	MQTTAsync client;
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

void cg_ingest_send_ack(void *ctx, const char *device, const uint8_t *msg, size_t len)
{
	struct cg_ingest *in = ctx;
	char topic[CG_TOPIC_MAX];
	snprintf(topic, sizeof topic, "%s/dev/%s/ack", in->prefix, device);
	MQTTAsync_message m = MQTTAsync_message_initializer;
	m.payload = (void *)msg;
	m.payloadlen = (int)len;
	m.qos = 1;
	int rc = MQTTAsync_sendMessage(in->client, topic, &m, NULL);
	if (rc != MQTTASYNC_SUCCESS) {
		/* The device asks again (hello or resend); nothing is lost but a reply. */
		stat_add(in, &in->stats.acks_dropped);
		log_debug("mqtt", "ack to %s not queued: %s", device, MQTTAsync_strerror(rc));
	}
}

void cg_ingest_send_consent(void *ctx, const char *device, const uint8_t *msg, size_t len)
{
	struct cg_ingest *in = ctx;
	char topic[CG_TOPIC_MAX + 2];
	snprintf(topic, sizeof topic, "%s/dev/%s/consent", in->prefix, device);
	MQTTAsync_message m = MQTTAsync_message_initializer;
	m.payload = (void *)msg;
	m.payloadlen = (int)len;
	m.qos = 1;
	m.retained = 1;   /* a device that connects later finds it waiting (SPEC §5) */
	int rc = MQTTAsync_sendMessage(in->client, topic, &m, NULL);
	if (rc != MQTTASYNC_SUCCESS) {
		/* Republished every valid_for / 2 and on reload; nothing is lost. */
		stat_add(in, &in->stats.acks_dropped);
		log_debug("mqtt", "consent to %s not queued: %s", device, MQTTAsync_strerror(rc));
	}
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
	pthread_mutex_destroy(&in->stats_lock);
	free(in);
}
