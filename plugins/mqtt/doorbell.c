/*
 * The doorbell: a way to wake Paho's receive thread, so that it finishes
 * large writes and connects without sleeping on them.
 *
 * Why. Paho MQTTAsync (1.3.12 as shipped here; the same in 1.3.13 and on
 * master: src/Socket.c, Socket_getReadySocket) writes a packet with one
 * non-blocking writev from its send thread. What the socket's send buffer
 * cannot take becomes a "pending write" that only the receive thread
 * continues -- and that thread sleeps in poll() for POLLIN alone, up to 1 s
 * at a time, checking writability only before each sleep. Unless something
 * arrives on one of Paho's sockets, every send buffer's worth of a large
 * message costs a second. strace of an 8 MiB publish on loopback: writev
 * 3.9 MB, 1.08 s of poll(POLLIN, 1000) timing out, writev 4.3 MB, another
 * 1.1 s, the last 169 KB. Measured with tests/test_mqtt.sh without the
 * doorbell: 4 MiB batches 35 MB/s (the first one 1.1 s, later ones fast once
 * the kernel had grown the buffer to tcp_wmem's 4 MiB), 8 MiB 4.7-9 MB/s
 * (1.1-2.2 s each), 15 MiB 6 MB/s, over TLS alike; with it, 260-430 MB/s
 * for 4 and 8 MiB, 105-220 MB/s over TLS. On a WAN, where the send buffer
 * is about the bandwidth-delay product, the link would idle most of each
 * second. The same sleep slows every connect: Paho notices a completed TCP
 * connect (POLLOUT) only when the thread wakes and sends CONNECT one wake-up
 * later, ~2 s when its thread is already running (in the gateway, for the
 * ingest client) and nothing else wakes it. A larger SO_SNDBUF is no way
 * out: Paho does not expose its socket, a set SO_SNDBUF is capped at
 * net.core.wmem_max (208 KiB by default) and it turns off the kernel's
 * autotuning, which already goes to 4 MiB.
 *
 * How. A connection that Paho polls and that we can make readable at will:
 * a second Paho client, connected to a listener of ours on 127.0.0.1 that
 * plays a broker just far enough to read the CONNECT and answer CONNACK.
 * Keepalive is off, so Paho never sends on it. An unsolicited PINGRESP (two
 * bytes, which Paho reads and ignores) ends the receive thread's poll, and
 * before its next one Paho continues every pending write its socket now
 * takes and moves connects along. While a flush waits for the connection or
 * for its PUBACK, the plugin rings every few milliseconds (mqtt.c, RING_MS).
 */
#include "doorbell.h"

#include <MQTTAsync.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Paho needs two wake-ups of its receive thread to finish a TCP connect, a
 * second apiece when its thread is already running and nothing else wakes it. */
#define OPEN_MS 5000

struct doorbell {
	MQTTAsync client;
	int fd;                       /* our end of the Paho client's connection */
	atomic_int state;             /* 0 connecting, 1 connected, -1 failed */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_ok(void *ctx, MQTTAsync_successData *d)
{
	(void)d;
	atomic_store(&((struct doorbell *)ctx)->state, 1);
}

static void on_fail(void *ctx, MQTTAsync_failureData *d)
{
	(void)d;
	atomic_store(&((struct doorbell *)ctx)->state, -1);
}

static bool readable(int fd, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - mono_ms();
		if (left <= 0)
			return false;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int n = poll(&p, 1, (int)left);
		if (n > 0)
			return true;
		if (n < 0 && errno != EINTR)
			return false;
	}
}

/* Read and discard one CONNECT packet (fixed header 0x10, remaining length,
 * body); Paho's is well under a kilobyte. */
static bool read_connect(int fd, int64_t deadline)
{
	uint8_t buf[1024];
	size_t have = 0;
	for (;;) {
		if (have >= 2) {
			if (buf[0] != 0x10)
				return false;
			size_t rem = 0, i = 1;
			bool complete = false;
			for (unsigned shift = 0; i < have && i < 5; i++, shift += 7) {
				rem |= (size_t)(buf[i] & 0x7f) << shift;
				if (!(buf[i] & 0x80)) {
					complete = true;
					break;
				}
			}
			if (complete) {
				if (i + 1 + rem > sizeof buf)
					return false;
				if (have >= i + 1 + rem)
					return true;
			} else if (i >= 5) {
				return false;
			}
		}
		if (have == sizeof buf || !readable(fd, deadline))
			return false;
		ssize_t n = read(fd, buf + have, sizeof buf - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		have += (size_t)n;
	}
}

void mqtt__say(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

struct doorbell *doorbell__open(char *err, size_t errlen)
{
	struct doorbell *db = calloc(1, sizeof *db);
	if (!db) {
		mqtt__say(err, errlen, "out of memory");
		return NULL;
	}
	db->fd = -1;
	int64_t deadline = mono_ms() + OPEN_MS;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof a;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
		mqtt__say(err, errlen, "loopback listener: %s", strerror(errno));
		goto fail;
	}
	char uri[64], id[64];
	mqtt__say(uri, sizeof uri, "tcp://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
	mqtt__say(id, sizeof id, "crashgate-doorbell-%ld-%p", (long)getpid(), (void *)db);
	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
	co.MQTTVersion = MQTTVERSION_3_1_1;
	int rc = MQTTAsync_createWithOptions(&db->client, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
	if (rc != MQTTASYNC_SUCCESS) {
		db->client = NULL;
		mqtt__say(err, errlen, "client: %s", MQTTAsync_strerror(rc));
		goto fail;
	}
	MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
	o.MQTTVersion = MQTTVERSION_3_1_1;
	o.keepAliveInterval = 0;      /* never a PINGREQ we would have to answer */
	o.cleansession = 1;
	o.connectTimeout = OPEN_MS / 1000;
	o.onSuccess = on_ok;
	o.onFailure = on_fail;
	o.context = db;
	rc = MQTTAsync_connect(db->client, &o);
	if (rc != MQTTASYNC_SUCCESS) {
		mqtt__say(err, errlen, "connect: %s", MQTTAsync_strerror(rc));
		goto fail;
	}
	if (!readable(lfd, deadline) || (db->fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
		mqtt__say(err, errlen, "Paho did not connect to its loopback listener");
		goto fail;
	}
	/* Something else on this host may have raced Paho to the port: then
	 * this is not a CONNECT and we go without. */
	static const uint8_t connack[4] = { 0x20, 0x02, 0x00, 0x00 };
	if (!read_connect(db->fd, deadline) || send(db->fd, connack, sizeof connack, MSG_NOSIGNAL) != sizeof connack) {
		mqtt__say(err, errlen, "no MQTT CONNECT on the loopback connection");
		goto fail;
	}
	while (atomic_load(&db->state) == 0 && mono_ms() < deadline) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&db->state) != 1) {
		mqtt__say(err, errlen, "Paho did not complete the loopback connection");
		goto fail;
	}
	close(lfd);
	return db;
fail:
	if (lfd >= 0)
		close(lfd);
	doorbell__close(db);
	return NULL;
}

void doorbell__ring(struct doorbell *db)
{
	static const uint8_t pingresp[2] = { 0xd0, 0x00 };
	if (!db)
		return;
	/* A full buffer means Paho has rings still to read: as good as one more. */
	ssize_t n = send(db->fd, pingresp, sizeof pingresp, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)n;
}

void doorbell__close(struct doorbell *db)
{
	if (!db)
		return;
	if (db->client)
		MQTTAsync_destroy(&db->client);
	if (db->fd >= 0)
		close(db->fd);
	free(db);
}
