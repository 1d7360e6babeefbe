/*
 * A way to wake Paho's receive thread (doorbell.c says why that is needed).
 * Internal to the mqtt plugin.
 */
#ifndef CG_MQTT_DOORBELL_H
#define CG_MQTT_DOORBELL_H

#include <stddef.h>

struct doorbell;

/* Open a doorbell: blocks up to about two seconds. Returns NULL with the
 * reason in err when it cannot; the caller then goes without (publishes
 * larger than the socket buffer are slow, not wrong). Not from a Paho
 * callback. Release with doorbell__close(). */
struct doorbell *doorbell__open(char *err, size_t errlen);

/* Wake Paho's receive thread now. Never blocks; safe from any thread. */
void doorbell__ring(struct doorbell *db);

/* Close the doorbell (NULL is fine). Not from a Paho callback. */
void doorbell__close(struct doorbell *db);

/* snprintf for messages (the plugin's and the doorbell's): cut short when
 * long, which is fine for a reason. */
void mqtt__say(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
