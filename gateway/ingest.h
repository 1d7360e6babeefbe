/*
 * The MQTT side of the gateway: one Paho MQTTAsync client with a persistent
 * session (clean session off) subscribed at QoS 1 to every device's chunk and
 * hello topics, and the publisher of acknowledgements.
 *
 * Why nothing PUBACKed is lost on SIGKILL: Paho MQTT C (1.3.x, MQTTAsync)
 * hands an incoming QoS 1 PUBLISH to messageArrived *before* it writes the
 * PUBACK, and only when its delivery queue is empty does it deliver inline.
 * Our callback always returns true and returns only after the chunk is in
 * the store's WAL (in the kernel), so the PUBACK follows durability: a kill
 * before the write means no PUBACK, and the broker redelivers.
 */
#ifndef CG_INGEST_H
#define CG_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "reassembly.h"

struct cg_ingest;

struct cg_ingest_stats {
	uint64_t messages;       /* PUBLISH packets handed to us */
	uint64_t bad_topic;      /* topics that are not a device's chunk/hello */
	uint64_t connects;       /* successful (re)connections */
	uint64_t connection_lost;
	uint64_t acks_dropped;   /* acks Paho refused to queue */
};

/* Create the client (not connected). Reads the password file if configured. */
int cg_ingest_create(const struct cg_config *cfg, struct cg_ingest **out, char *err, size_t errlen);

/* The cg_ack_sink send function; ctx is the struct cg_ingest. */
void cg_ingest_send_ack(void *ctx, const char *device, const uint8_t *msg, size_t len);
/* The cg_ack_sink consent function: retained, QoS 1, on .../consent. */
void cg_ingest_send_consent(void *ctx, const char *device, const uint8_t *msg, size_t len);

/* Start connecting (with automatic reconnect) and route messages to rs. */
int cg_ingest_start(struct cg_ingest *in, struct cg_reasm *rs, char *err, size_t errlen);

bool cg_ingest_connected(struct cg_ingest *in);
void cg_ingest_get_stats(struct cg_ingest *in, struct cg_ingest_stats *out);

/* Disconnect cleanly, giving queued acks up to timeout_ms to leave. */
void cg_ingest_stop(struct cg_ingest *in, int timeout_ms);
void cg_ingest_destroy(struct cg_ingest *in);

#endif
