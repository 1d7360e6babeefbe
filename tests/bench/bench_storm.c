/*
 * bench_storm: a crash storm. N devices (default 10,000) publish the same
 * 64 KiB Zephyr core dump at once, in 1 KiB chunks at QoS 1, each like a
 * firmware uploader: chunks in order, the next one only after the PUBACK of
 * the previous one, stop at the first final acknowledgement (complete,
 * throttled, rejected, consent_required), resend what an `incomplete` ack
 * lists, back off on `busy`.
 *
 *  1. Baseline, same broker, same devices, no gateway: a bare Paho
 *     subscriber counts the chunks; every device sends all 64 chunks. This is
 *     the traffic without early throttling and the broker's own rate.
 *  2. crashgated with consent for every device and throttle.max_identical 5:
 *     printed are the time until every device holds its final ack, the acks
 *     by status, the chunks that crossed the broker against the chunks of
 *     run 1 (target: at least 95 % saved), how many dumps crashgated stored,
 *     its CPU seconds and its peak RSS.
 *
 * The devices are multiplexed over a bounded number of MQTT connections
 * (--conns): the point is the number of devices, not of sockets. Each
 * connection subscribes to the ack topic of each of its devices, as the
 * devices themselves would; a `+` wildcard on every connection would make
 * the broker deliver every ack to every connection. At most --window chunks
 * per connection are in flight (see struct conn); the baseline's rate shows
 * what the simulated devices can push through the broker, so a gateway
 * figure far below it is the gateway's, not the simulator's.
 *
 * The bare subscriber runs in a process of its own (bare_fork), so that it
 * does not share Paho's receive thread with the devices.
 *
 * The storm uses its own topic prefix (default crashgate/storm), so that
 * offline persistent sessions of other benchmarks on the same broker (such
 * as bench_ingest's gateway on crashgate/v1) do not queue its chunks.
 *
 * Every wait is bounded (--timeout per run); a storm that does not finish
 * exits 1 saying how many devices are still waiting and for what.
 *
 * usage: bench_storm --uri tcp://127.0.0.1:PORT --crashgated PATH --workdir DIR
 *                    [--devices N] [--conns C] [--window W] [--timeout S] [--prefix P]
 *                    [--broker-pid PID]
 */
#include <MQTTAsync.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crashgate/proto.h"
#include "decode.h"

#define CHUNK_BYTES   1024
#define DUMP_CHUNKS   64
#define DUMP_BYTES    (CHUNK_BYTES * DUMP_CHUNKS)
#define DUMP_ID       0x2a
#define BUSY_DELAY_MS 200
#define HELLO_IDLE_MS 30000   /* all sent, no final ack: ask with a hello */
#define SUB_BATCH     100

static const char *uri, *gwbin, *workdir, *prefix = "crashgate/storm";
static long ndev = 10000, nconn = 50, window = 8, timeout_s = 300;
static pid_t broker_pid;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench_storm: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- the dump: one 64 KiB Zephyr core dump, the same for every device ---- */

static uint8_t dump[DUMP_BYTES];
static const uint8_t build_id[20] = {
	0x5f, 0x0a, 0x31, 0xc4, 0x92, 0x7e, 0x11, 0xd0, 0x3b, 0x68,
	0xa2, 0x4f, 0x90, 0x0c, 0xde, 0x71, 0x25, 0x8b, 0xe6, 0x17,
};
#define DUMP_PC 0x08004a3cu
#define DUMP_LR 0x08004a11u
#define DUMP_SP 0x20007f60u

static size_t put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return n;
}

/*
 * Header "ZE" v2, target 3 (Cortex-M), 32-bit pointers, no CRC trailer,
 * reason 30 (K_ERR_ARM_USAGE_DIV_0); an 'A' block v2 of 17 registers
 * (r0-r3 r12 lr pc xpsr sp r4-r11); one 'M' block of the stack region that
 * fills the dump to exactly 64 KiB.
 */
static void build_dump(void)
{
	static const uint32_t regs[17] = {
		0x00000000, 0x20001a40, 0x0000000a, 0x00000000, 0x20000c18, /* r0-r3 r12 */
		DUMP_LR, DUMP_PC, 0x61000000, DUMP_SP,                      /* lr pc xpsr sp */
		0x20001a40, 0x00000001, 0x08012f00, 0x00000000,             /* r4-r7 */
		0x20003000, 0x00000000, 0x00000000, 0x20007f80,             /* r8-r11 */
	};
	size_t n = 0;
	dump[n++] = 'Z';
	dump[n++] = 'E';
	n += put_le(dump + n, 2, 2);
	n += put_le(dump + n, 3, 2);
	dump[n++] = 5;
	dump[n++] = 0;
	n += put_le(dump + n, 30, 4);
	dump[n++] = 'A';
	n += put_le(dump + n, 2, 2);
	n += put_le(dump + n, sizeof regs, 2);
	for (size_t i = 0; i < 17; i++)
		n += put_le(dump + n, regs[i], 4);
	size_t mem = DUMP_BYTES - n - 11;
	uint32_t start = 0x20008000u - (uint32_t)mem;
	dump[n++] = 'M';
	n += put_le(dump + n, 1, 2);
	n += put_le(dump + n, start, 4);
	n += put_le(dump + n, start + (uint32_t)mem, 4);
	uint32_t x = 0x12345678u; /* stack-like filler: deterministic, not compressible */
	for (size_t i = 0; i < mem; i++) {
		x = x * 1103515245u + 12345u;
		dump[n++] = (uint8_t)(x >> 16);
	}
	if (n != DUMP_BYTES)
		fail("dump is %zu bytes, not %d", n, DUMP_BYTES);

	/* The gateway must read the crash from the whole dump and from chunk 0. */
	struct cg_crash c, e;
	if (cg_decode_zephyr(dump, sizeof dump, &c) != CG_OK || !(c.present & CG_CRASH_HAS_PC) ||
	    c.pc != DUMP_PC || c.lr != DUMP_LR)
		fail("the dump does not decode: %s", c.decode_error);
	if (cg_zephyr_early(dump, CHUNK_BYTES, &e) != CG_OK || e.pc != c.pc || e.lr != c.lr ||
	    strcmp(e.reason, c.reason) != 0)
		fail("chunk 0 does not decide the crash: %s", e.decode_error);
}

/* Encoded chunk messages, identical for every device (the device id is in
 * the topic, never in the payload). */
static uint8_t *chunk_msg[DUMP_CHUNKS];
static size_t chunk_len[DUMP_CHUNKS];
static uint8_t hello_msg[128];
static size_t hello_len;

static void encode_messages(void)
{
	for (int i = 0; i < DUMP_CHUNKS; i++) {
		struct cg_chunk c = { .dump_id = DUMP_ID, .ordinal = (uint32_t)i,
				      .content = dump + (size_t)i * CHUNK_BYTES, .content_len = CHUNK_BYTES,
				      .last = i == DUMP_CHUNKS - 1 };
		if (i == 0) {
			c.present = CG_HAS_BUILD_ID | CG_HAS_OS | CG_HAS_TOTAL_SIZE | CG_HAS_FORMAT |
				    CG_HAS_FW_VERSION;
			c.build_id = build_id;
			c.build_id_len = sizeof build_id;
			c.os = 1;
			c.total_size = DUMP_BYTES;
			c.format = CG_FORMAT_ZEPHYR;
			c.fw_version = "2.7.1";
			c.fw_version_len = 5;
		}
		if (c.last) {
			c.present |= CG_HAS_CRC32;
			c.crc32 = cg_crc32(0, dump, sizeof dump);
		}
		size_t cap = cg_chunk_encoded_max(CHUNK_BYTES) + 256;
		chunk_msg[i] = malloc(cap);
		if (!chunk_msg[i] || cg_chunk_encode(&c, 0, chunk_msg[i], cap, &chunk_len[i]) != CG_OK)
			fail("cannot encode chunk %d", i);
	}
	struct cg_hello h = { .present = CG_HAS_BUILD_ID | CG_HAS_OS, .build_id = build_id,
			      .build_id_len = sizeof build_id, .os = 1 };
	if (cg_hello_encode(&h, hello_msg, sizeof hello_msg, &hello_len) != CG_OK)
		fail("cannot encode hello");
}

/* ---- simulated devices over shared connections ---- */

struct conn;

struct device {
	struct conn *conn;
	uint64_t todo;          /* ordinals still to send, bit i = chunk i */
	int64_t retry_at;       /* ms; resume sending then (busy, refused publish) */
	int64_t idle_since;     /* ms; everything sent, no final ack yet */
	int64_t done_at;        /* ms */
	int inflight;           /* ordinal awaiting its PUBACK, -1 none */
	int last_sent;
	uint32_t sent;          /* chunks PUBACKed by the broker */
	uint8_t final;          /* final ack status, 0 none */
	bool done;
	bool queued;            /* waiting in its connection's queue */
};

/*
 * One MQTT connection carrying many devices. Devices ready to send wait in
 * a FIFO and at most `window` of them have a chunk handed to Paho at a time:
 * Paho keeps every queued command in one list that it walks for each
 * message, so handing it thousands at once makes the client, not the
 * broker or the gateway, the bottleneck. A device that waits in the FIFO is
 * what a device with its own socket would be while the broker is busy.
 */
struct conn {
	MQTTAsync c;
	pthread_mutex_t lock;   /* guards this connection's devices and queue */
	long first, n;          /* its devices */
	struct device **q;      /* FIFO ring of n slots: a device is in it once at most */
	long q_head, q_len;
	long outstanding;       /* chunks handed to Paho, PUBACK not yet seen */
	atomic_bool connected;
	atomic_bool lost;
	atomic_long subscribed; /* ack subscriptions granted */
	atomic_long sub_refused;
};

enum mode { BASELINE, GATEWAY };

static struct device *devs;
static struct conn *conns;
static enum mode mode;

/* Counters of one run. */
static atomic_long n_done, n_puback, n_inflight, n_refused, n_pub_failed, n_hello,
	n_acks, n_acks_status[8], n_acks_bad, n_final[8];

static void reset_run(enum mode m)
{
	mode = m;
	for (long i = 0; i < ndev; i++) {
		struct device *d = &devs[i];
		d->todo = ~(uint64_t)0;
		d->retry_at = d->idle_since = d->done_at = 0;
		d->inflight = d->last_sent = -1;
		d->sent = 0;
		d->final = 0;
		d->done = d->queued = false;
	}
	for (long c = 0; c < nconn; c++)
		conns[c].q_head = conns[c].q_len = conns[c].outstanding = 0;
	atomic_store(&n_done, 0);
	atomic_store(&n_puback, 0);
	atomic_store(&n_inflight, 0);
	atomic_store(&n_refused, 0);
	atomic_store(&n_pub_failed, 0);
	atomic_store(&n_hello, 0);
	atomic_store(&n_acks, 0);
	atomic_store(&n_acks_bad, 0);
	for (int i = 0; i < 8; i++) {
		atomic_store(&n_acks_status[i], 0);
		atomic_store(&n_final[i], 0);
	}
}

static void topic_of(long dev, const char *kind, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/dev/dev-%05ld/%s", prefix, dev, kind);
}

/* Under the connection's lock. */
static void mark_done(struct device *d, uint8_t status)
{
	if (d->done)
		return;
	d->done = true;
	d->final = status;
	d->done_at = now_ms();
	atomic_fetch_add(&n_final[status & 7], 1);
	atomic_fetch_add(&n_done, 1);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *r);
static void on_pub_fail(void *ctx, MQTTAsync_failureData *r);

/* Paho copies the payload, so the shared chunk messages serve every device. */
static int publish(struct device *d, const char *kind, const uint8_t *msg, size_t len, bool track)
{
	char topic[256];
	topic_of(d - devs, kind, topic, sizeof topic);
	MQTTAsync_message m = MQTTAsync_message_initializer;
	m.payload = (void *)msg;
	m.payloadlen = (int)len;
	m.qos = 1;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	if (track) {
		ro.onSuccess = on_pub_ok;
		ro.onFailure = on_pub_fail;
		ro.context = d;
	}
	return MQTTAsync_sendMessage(d->conn->c, topic, &m, &ro);
}

/*
 * Under the connection's lock: queue the device if it has a chunk to send
 * and may send it now (nothing in flight, no delay to wait out, not
 * finished); note when it has nothing left to send.
 */
static void enqueue(struct device *d)
{
	struct conn *cn = d->conn;
	if (d->queued || d->done || d->inflight >= 0 || d->retry_at)
		return;
	if (!d->todo) {
		if (!d->idle_since)
			d->idle_since = now_ms();
		return;
	}
	d->idle_since = 0;
	d->queued = true;
	cn->q[(cn->q_head + cn->q_len++) % cn->n] = d;
}

/*
 * Hand queued devices' next chunks to Paho while the window has room. Each
 * device sends the lowest ordinal it still has to send, so the first pass
 * is in order and resends follow it. Called without the lock.
 */
static void drain(struct conn *cn)
{
	for (;;) {
		struct device *d = NULL;
		int ord = -1;
		pthread_mutex_lock(&cn->lock);
		while (!d && cn->outstanding < window && cn->q_len > 0) {
			struct device *x = cn->q[cn->q_head];
			cn->q_head = (cn->q_head + 1) % cn->n;
			cn->q_len--;
			x->queued = false;
			if (x->done || x->inflight >= 0 || x->retry_at || !x->todo)
				continue; /* changed while it waited; requeued when due */
			d = x;
			ord = __builtin_ctzll(d->todo);
			d->todo &= ~((uint64_t)1 << ord);
			d->inflight = ord;
			cn->outstanding++;
		}
		pthread_mutex_unlock(&cn->lock);
		if (!d)
			return;
		atomic_fetch_add(&n_inflight, 1);
		if (publish(d, "chunk", chunk_msg[ord], chunk_len[ord], true) != MQTTASYNC_SUCCESS) {
			atomic_fetch_add(&n_refused, 1);
			atomic_fetch_sub(&n_inflight, 1);
			pthread_mutex_lock(&cn->lock);
			cn->outstanding--;
			d->todo |= (uint64_t)1 << ord;
			d->inflight = -1;
			d->retry_at = now_ms() + 10;
			pthread_mutex_unlock(&cn->lock);
		}
	}
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *r)
{
	struct device *d = ctx;
	struct conn *cn = d->conn;
	(void)r;
	atomic_fetch_add(&n_puback, 1);
	atomic_fetch_sub(&n_inflight, 1);
	pthread_mutex_lock(&cn->lock);
	cn->outstanding--;
	d->sent++;
	d->last_sent = d->inflight;
	d->inflight = -1;
	/* Without a gateway nobody answers: a device is done with its last PUBACK. */
	if (mode == BASELINE && d->todo == 0)
		mark_done(d, CG_ACK_COMPLETE);
	enqueue(d);
	pthread_mutex_unlock(&cn->lock);
	drain(cn);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r)
{
	struct device *d = ctx;
	struct conn *cn = d->conn;
	(void)r;
	atomic_fetch_add(&n_pub_failed, 1);
	atomic_fetch_sub(&n_inflight, 1);
	pthread_mutex_lock(&cn->lock);
	cn->outstanding--;
	if (d->inflight >= 0)
		d->todo |= (uint64_t)1 << d->inflight;
	d->inflight = -1;
	d->retry_at = now_ms() + 100;
	pthread_mutex_unlock(&cn->lock);
	drain(cn);
}

/* The device an ack topic "{prefix}/dev/dev-NNNNN/ack" belongs to, or NULL. */
static struct device *ack_device(struct conn *cn, const char *topic)
{
	size_t pl = strlen(prefix);
	if (strncmp(topic, prefix, pl) != 0 || strncmp(topic + pl, "/dev/dev-", 9) != 0)
		return NULL;
	char *end;
	long i = strtol(topic + pl + 9, &end, 10);
	if (end == topic + pl + 9 || strcmp(end, "/ack") != 0 || i < cn->first || i >= cn->first + cn->n)
		return NULL;
	return &devs[i];
}

static int on_msg(void *ctx, char *topic, int tl, MQTTAsync_message *m)
{
	struct conn *cn = ctx;
	(void)tl;
	struct device *d = ack_device(cn, topic);
	struct cg_range miss[64];
	struct cg_ack a = { .missing = miss, .missing_cap = 64 };
	atomic_fetch_add(&n_acks, 1);
	if (!d || cg_ack_decode(m->payload, (size_t)m->payloadlen, &a) != CG_OK || a.dump_id != DUMP_ID) {
		atomic_fetch_add(&n_acks_bad, 1);
		d = NULL;
	}
	if (d) {
		atomic_fetch_add(&n_acks_status[a.status & 7], 1);
		pthread_mutex_lock(&cn->lock);
		switch (a.status) {
		case CG_ACK_COMPLETE:
		case CG_ACK_THROTTLED:
		case CG_ACK_REJECTED:
		case CG_ACK_CONSENT_REQUIRED:
			mark_done(d, (uint8_t)a.status);
			break;
		case CG_ACK_INCOMPLETE:
			for (size_t i = 0; i < a.n_missing; i++) {
				uint32_t lo = miss[i].first, hi = miss[i].last;
				for (uint32_t o = lo; o <= hi && o < DUMP_CHUNKS; o++)
					d->todo |= (uint64_t)1 << o;
			}
			break;
		case CG_ACK_BUSY:
			/* The ack names no chunk: resend the latest one after a pause;
			 * an earlier one refused meanwhile comes back in `incomplete`. */
			if (d->last_sent >= 0)
				d->todo |= (uint64_t)1 << d->last_sent;
			d->retry_at = now_ms() + BUSY_DELAY_MS;
			break;
		default:
			break;
		}
		enqueue(d);
		pthread_mutex_unlock(&cn->lock);
		drain(cn);
	}
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void on_lost(void *ctx, char *cause)
{
	(void)cause;
	atomic_store(&((struct conn *)ctx)->lost, true);
}

static void on_conn(void *ctx, MQTTAsync_successData *r)
{
	(void)r;
	atomic_store(&((struct conn *)ctx)->connected, true);
}

static void on_sub(void *ctx, MQTTAsync_successData *r)
{
	struct conn *cn = ctx;
	long n = cn->n - atomic_load(&cn->subscribed);
	if (n > SUB_BATCH)
		n = SUB_BATCH;
	if (r && r->alt.qosList)
		for (long i = 0; i < n; i++)
			if (r->alt.qosList[i] == 0x80)
				atomic_fetch_add(&cn->sub_refused, 1);
	atomic_fetch_add(&cn->subscribed, n);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData *r)
{
	(void)r;
	atomic_fetch_add(&((struct conn *)ctx)->sub_refused, 1);
}

/*
 * Connect every connection, then subscribe each to the ack topic of each of
 * its devices, SUB_BATCH topics at a time (on_sub counts by batch). All
 * connections proceed together: Paho notices a new socket only when its
 * receive thread next wakes, so connecting one after the other costs
 * seconds per connection.
 */
static void conns_open(void)
{
	for (long c = 0; c < nconn; c++) {
		struct conn *cn = &conns[c];
		char id[64];
		snprintf(id, sizeof id, "bench-storm-%ld-%ld", (long)getpid(), c);
		pthread_mutex_init(&cn->lock, NULL);
		if (MQTTAsync_create(&cn->c, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) != 0)
			fail("create client %s", id);
		MQTTAsync_setCallbacks(cn->c, cn, on_lost, on_msg, NULL);
		MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
		o.cleansession = 1;
		o.keepAliveInterval = 60;
		o.connectTimeout = 10;
		o.onSuccess = on_conn;
		o.context = cn;
		if (MQTTAsync_connect(cn->c, &o) != 0)
			fail("connect %s", id);
	}
	int64_t by = now_ms() + 30000;
	for (long c = 0; c < nconn; c++)
		while (!atomic_load(&conns[c].connected)) {
			if (now_ms() > by)
				fail("connection %ld: not connected to %s within 30 s", c, uri);
			sleep_ms(10);
		}
	long most = ndev / nconn + 1;
	for (long b = 0; b < most; b += SUB_BATCH) {
		for (long c = 0; c < nconn; c++) {
			struct conn *cn = &conns[c];
			long k = cn->n - b < SUB_BATCH ? cn->n - b : SUB_BATCH;
			if (k <= 0)
				continue;
			char *topics[SUB_BATCH], store[SUB_BATCH][256];
			int qos[SUB_BATCH];
			for (long i = 0; i < k; i++) {
				topic_of(cn->first + b + i, "ack", store[i], sizeof store[i]);
				topics[i] = store[i];
				qos[i] = 1;
			}
			MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
			ro.onSuccess = on_sub;
			ro.onFailure = on_sub_fail;
			ro.context = cn;
			if (MQTTAsync_subscribeMany(cn->c, (int)k, topics, qos, &ro) != 0)
				fail("connection %ld: subscribe failed", c);
		}
		by = now_ms() + 30000;
		for (long c = 0; c < nconn; c++) {
			struct conn *cn = &conns[c];
			long want = cn->n < b + SUB_BATCH ? cn->n : b + SUB_BATCH;
			while (atomic_load(&cn->subscribed) < want && !atomic_load(&cn->sub_refused) && now_ms() < by)
				sleep_ms(5);
			if (atomic_load(&cn->sub_refused) || atomic_load(&cn->subscribed) < want)
				fail("connection %ld: ack subscriptions refused or unanswered", c);
		}
	}
}

static void conn_close(MQTTAsync *c)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
	d.timeout = 2000;
	MQTTAsync_disconnect(*c, &d);
	for (int i = 0; i < 300 && MQTTAsync_isConnected(*c); i++)
		sleep_ms(10);
	MQTTAsync_destroy(c);
}

/* ---- the bare subscriber of the baseline, in a process of its own ----
 *
 * Paho runs one receive thread for all clients of a process: beside the
 * devices' connections the subscriber would be starved and the broker would
 * queue (and at its limits drop) what it cannot deliver. So it is forked
 * before this process starts any Paho thread and talks to us through a
 * shared page.
 */

struct bare_shared {
	atomic_long received;
	atomic_llong last_ms;   /* CLOCK_MONOTONIC, comparable across processes */
	atomic_int cmd;         /* 1 subscribe, 2 disconnect and exit */
	atomic_int state;       /* 1 subscribed, -1 failed */
};

static struct bare_shared *bare;
static pid_t bare_pid;
static atomic_bool bare_connected;
static atomic_int bare_granted = -1;

static int bare_msg(void *ctx, char *topic, int tl, MQTTAsync_message *m)
{
	(void)ctx;
	(void)tl;
	atomic_fetch_add(&bare->received, 1);
	atomic_store(&bare->last_ms, now_ms());
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void bare_conn(void *ctx, MQTTAsync_successData *r)
{
	(void)ctx;
	(void)r;
	atomic_store(&bare_connected, true);
}

static void bare_sub(void *ctx, MQTTAsync_successData *r)
{
	(void)ctx;
	atomic_store(&bare_granted, r ? r->alt.qos : 0x80);
}

static void bare_child(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent) /* the parent died before prctl */
		_exit(1);
	while (atomic_load(&bare->cmd) == 0)
		sleep_ms(10);
	char id[64], topic[256];
	MQTTAsync c;
	snprintf(id, sizeof id, "bench-storm-bare-%ld", (long)getpid());
	snprintf(topic, sizeof topic, "%s/dev/+/chunk", prefix);
	if (MQTTAsync_create(&c, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) != 0)
		goto failed;
	MQTTAsync_setCallbacks(c, NULL, NULL, bare_msg, NULL);
	MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
	o.cleansession = 1;
	o.keepAliveInterval = 60;
	o.onSuccess = bare_conn;
	if (MQTTAsync_connect(c, &o) != 0)
		goto failed;
	for (int i = 0; i < 1000 && !atomic_load(&bare_connected); i++)
		sleep_ms(10);
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	ro.onSuccess = bare_sub;
	if (!atomic_load(&bare_connected) || MQTTAsync_subscribe(c, topic, 1, &ro) != 0)
		goto failed;
	for (int i = 0; i < 1000 && atomic_load(&bare_granted) < 0; i++)
		sleep_ms(10);
	if (atomic_load(&bare_granted) != 1)
		goto failed;
	atomic_store(&bare->state, 1);
	while (atomic_load(&bare->cmd) != 2)
		sleep_ms(10);
	conn_close(&c);
	_exit(0);
failed:
	atomic_store(&bare->state, -1);
	_exit(1);
}

/* Fork the subscriber; it waits for bare_open(). */
static void bare_fork(void)
{
	bare = mmap(NULL, sizeof *bare, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (bare == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	memset(bare, 0, sizeof *bare);
	fflush(NULL);
	pid_t parent = getpid();
	bare_pid = fork();
	if (bare_pid < 0)
		fail("fork: %s", strerror(errno));
	if (bare_pid == 0)
		bare_child(parent);
}

static void bare_open(void)
{
	atomic_store(&bare->cmd, 1);
	for (int i = 0; i < 3000 && atomic_load(&bare->state) == 0; i++)
		sleep_ms(10);
	if (atomic_load(&bare->state) != 1)
		fail("the bare subscriber could not connect to %s or subscribe to %s/dev/+/chunk", uri, prefix);
}

static void bare_close(void)
{
	atomic_store(&bare->cmd, 2);
	int st;
	for (int i = 0; i < 1000; i++) {
		if (waitpid(bare_pid, &st, WNOHANG) == bare_pid)
			return;
		sleep_ms(10);
	}
	kill(bare_pid, SIGKILL);
	waitpid(bare_pid, &st, 0);
}

/* ---- the real daemon ---- */

static char gw_dir[512], gw_log[600], gw_cfg[600];
static pid_t gw_pid;

static void write_config(void)
{
	char path[700];
	snprintf(gw_dir, sizeof gw_dir, "%s/storm-%ld", workdir, (long)getpid());
	if (mkdir(gw_dir, 0700) != 0)
		fail("mkdir %s: %s", gw_dir, strerror(errno));
	snprintf(path, sizeof path, "%s/out", gw_dir);
	mkdir(path, 0700);
	snprintf(gw_cfg, sizeof gw_cfg, "%s/crashgated.yaml", gw_dir);
	snprintf(gw_log, sizeof gw_log, "%s/crashgated.log", gw_dir);
	FILE *f = fopen(gw_cfg, "w");
	if (!f)
		fail("write %s", gw_cfg);
	fprintf(f,
		"gateway: { id: bench, data_dir: %s/gw }\n"
		"mqtt: { uri: \"%s\", client_id: crashgate-bench-storm, topic_prefix: \"%s\" }\n"
		"limits: { max_open_dumps: 20000, max_open_dumps_per_device: 4, max_store_bytes: 4GiB }\n"
		"default_region: US\n"
		"regions: { US: { upstreams: [ { name: local, kind: file, path: %s/out } ] } }\n"
		"groups: [ { name: all, devices: [\"*\"], crash_dumps: enabled } ]\n"
		"throttle: { max_identical: 5, window: 24h }\n",
		gw_dir, uri, prefix, gw_dir);
	fclose(f);
}

static void gw_start(void)
{
	/* Paho's threads run in this process: between fork and exec only
	 * async-signal-safe calls, or the child may hang on a lock another
	 * thread held at the fork. */
	int fd = open(gw_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		fail("open %s: %s", gw_log, strerror(errno));
	gw_pid = fork();
	if (gw_pid == 0) {
		dup2(fd, 2);
		execl(gwbin, gwbin, "-c", gw_cfg, (char *)NULL);
		_exit(127);
	}
	close(fd);
	if (gw_pid < 0)
		fail("fork: %s", strerror(errno));
}

/* Print the daemon's last log lines (why it stopped or refused to start). */
static void gw_log_tail(void)
{
	FILE *f = fopen(gw_log, "r");
	char lines[8][1024];
	int n = 0;
	while (f && fgets(lines[n % 8], sizeof lines[0], f))
		n++;
	if (f)
		fclose(f);
	fprintf(stderr, "--- last lines of %s ---\n", gw_log);
	for (int i = n > 8 ? n - 8 : 0; i < n; i++)
		fputs(lines[i % 8], stderr);
	fprintf(stderr, "---\n");
}

static bool gw_alive(void)
{
	int st;
	if (waitpid(gw_pid, &st, WNOHANG) != gw_pid)
		return true;
	gw_log_tail();
	if (WIFEXITED(st))
		fprintf(stderr, "bench_storm: crashgated exited with status %d\n", WEXITSTATUS(st));
	else
		fprintf(stderr, "bench_storm: crashgated died of signal %d\n", WTERMSIG(st));
	gw_pid = 0;
	return false;
}

static void gw_stop(void)
{
	if (gw_pid <= 0)
		return;
	kill(gw_pid, SIGTERM);
	int st;
	for (int i = 0; i < 1000; i++) {
		if (waitpid(gw_pid, &st, WNOHANG) == gw_pid) {
			gw_pid = 0;
			return;
		}
		sleep_ms(10);
	}
	fprintf(stderr, "bench_storm: crashgated ignored SIGTERM for 10 s, killing it\n");
	kill(gw_pid, SIGKILL);
	waitpid(gw_pid, &st, 0);
	gw_pid = 0;
}

static bool gw_log_has(const char *needle)
{
	FILE *f = fopen(gw_log, "r");
	char line[2048];
	bool found = false;
	while (f && !found && fgets(line, sizeof line, f))
		found = strstr(line, needle) != NULL;
	if (f)
		fclose(f);
	return found;
}

/* The newest "stats: " line the daemon logged (SIGUSR1), "" if none. */
static void gw_stats_line(char *out, size_t cap)
{
	FILE *f = fopen(gw_log, "r");
	char line[2048];
	out[0] = '\0';
	while (f && fgets(line, sizeof line, f)) {
		char *p = strstr(line, "stats: ");
		if (p) {
			snprintf(out, cap, "%s", p + 7);
			out[strcspn(out, "\n")] = '\0';
		}
	}
	if (f)
		fclose(f);
}

static bool stat_of(const char *line, const char *key, long *val)
{
	char pat[64];
	snprintf(pat, sizeof pat, " %s=", key);
	char buf[2100];
	snprintf(buf, sizeof buf, " %s", line); /* so the first key matches too */
	char *p = strstr(buf, pat);
	if (!p)
		return false;
	*val = strtol(p + strlen(pat), NULL, 10);
	return true;
}

static int gw_stats_count(void)
{
	FILE *f = fopen(gw_log, "r");
	char line[2048];
	int n = 0;
	while (f && fgets(line, sizeof line, f))
		n += strstr(line, "stats: ") != NULL;
	if (f)
		fclose(f);
	return n;
}

/* Ask for the counters and wait (bounded, 1 s) for the line they produce. */
static bool gw_stat_fresh(char *line, size_t cap)
{
	int before = gw_stats_count();
	kill(gw_pid, SIGUSR1);
	for (int i = 0; i < 100; i++) {
		sleep_ms(10);
		if (gw_stats_count() > before) {
			gw_stats_line(line, cap);
			return true;
		}
	}
	return false;
}

/* ---- /proc ---- */

/* utime + stime of a process in seconds, -1 if unreadable. */
static double proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* the command name may hold spaces */
	if (!p)
		return -1;
	unsigned long ut, st;
	/* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, field, strlen(field)) == 0)
			v = strtol(line + strlen(field), NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/* ---- one storm ---- */

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

/* Median, 90th and 99th percentile and maximum of v[0..n) (sorted in place). */
static void quantiles(long *v, long n, long q[4])
{
	if (n == 0) {
		q[0] = q[1] = q[2] = q[3] = 0;
		return;
	}
	qsort(v, (size_t)n, sizeof *v, cmp_long);
	q[0] = v[n / 2];
	q[1] = v[n * 9 / 10];
	q[2] = v[n * 99 / 100];
	q[3] = v[n - 1];
}

/* When the devices that ended with `status` got their final ack (ms after
 * t0) and how many chunks each had sent by then. */
static long final_quantiles(uint8_t status, int64_t t0, long at[4], long chunks[4])
{
	long *a = malloc(sizeof *a * (size_t)ndev), *c = malloc(sizeof *c * (size_t)ndev), n = 0;
	if (!a || !c)
		fail("out of memory");
	for (long i = 0; i < ndev; i++) {
		struct device *d = &devs[i];
		pthread_mutex_lock(&d->conn->lock);
		if (d->done && d->final == status) {
			a[n] = (long)(d->done_at - t0);
			c[n++] = (long)d->sent;
		}
		pthread_mutex_unlock(&d->conn->lock);
	}
	quantiles(a, n, at);
	quantiles(c, n, chunks);
	free(a);
	free(c);
	return n;
}

/* Why the storm did not finish: devices by what they are waiting for. */
static void report_stuck(void)
{
	long sending = 0, waiting_ack = 0, delayed = 0;
	for (long i = 0; i < ndev; i++) {
		struct device *d = &devs[i];
		pthread_mutex_lock(&d->conn->lock);
		if (!d->done) {
			if (d->retry_at)
				delayed++;
			else if (d->todo || d->inflight >= 0)
				sending++;
			else
				waiting_ack++;
		}
		pthread_mutex_unlock(&d->conn->lock);
	}
	fprintf(stderr,
		"bench_storm: %ld of %ld devices unfinished after %ld s: %ld still sending chunks, %ld sent everything "
		"and wait for an ack, %ld wait out a delay; %ld chunks PUBACKed, %ld in flight, %ld acks received "
		"(%ld incomplete, %ld busy, %ld unusable), %ld hellos\n",
		ndev - atomic_load(&n_done), ndev, timeout_s, sending, waiting_ack, delayed, atomic_load(&n_puback),
		atomic_load(&n_inflight), atomic_load(&n_acks), atomic_load(&n_acks_status[CG_ACK_INCOMPLETE]),
		atomic_load(&n_acks_status[CG_ACK_BUSY]), atomic_load(&n_acks_bad), atomic_load(&n_hello));
}

/*
 * Start every device at once and wait until each holds its final ack (in
 * the baseline: its last PUBACK). Meanwhile resume devices whose delay is
 * over and let idle devices say hello. Returns the seconds from the start to
 * the last device done; exits on timeout, a lost connection or a dead
 * gateway.
 */
static double storm(int64_t *t0_out)
{
	int64_t t0 = now_ms(), deadline = t0 + timeout_s * 1000;
	*t0_out = t0;
	for (long c = 0; c < nconn; c++) {
		pthread_mutex_lock(&conns[c].lock);
		for (long i = conns[c].first; i < conns[c].first + conns[c].n; i++)
			enqueue(&devs[i]);
		pthread_mutex_unlock(&conns[c].lock);
	}
	for (long c = 0; c < nconn; c++)
		drain(&conns[c]);
	struct device **hello = malloc(sizeof *hello * (size_t)ndev);
	if (!hello)
		fail("out of memory");
	while (atomic_load(&n_done) < ndev) {
		sleep_ms(20);
		int64_t now = now_ms();
		if (now > deadline) {
			report_stuck();
			if (mode == GATEWAY && gw_alive())
				gw_log_tail();
			gw_stop();
			fail("the storm did not finish within %ld s", timeout_s);
		}
		if (mode == GATEWAY && !gw_alive())
			fail("crashgated stopped during the storm");
		long nh = 0;
		for (long c = 0; c < nconn; c++) {
			struct conn *cn = &conns[c];
			bool due = false;
			if (atomic_load(&cn->lost))
				fail("connection %ld to the broker lost during the storm", c);
			pthread_mutex_lock(&cn->lock);
			for (long i = cn->first; i < cn->first + cn->n; i++) {
				struct device *d = &devs[i];
				if (d->done)
					continue;
				if (d->retry_at && now >= d->retry_at) {
					d->retry_at = 0;
					enqueue(d);
					due = true;
				} else if (mode == GATEWAY && d->idle_since && now - d->idle_since >= HELLO_IDLE_MS) {
					d->idle_since = now;
					hello[nh++] = d;
				}
			}
			pthread_mutex_unlock(&cn->lock);
			if (due)
				drain(cn);
		}
		for (long i = 0; i < nh; i++)
			if (publish(hello[i], "hello", hello_msg, hello_len, false) == MQTTASYNC_SUCCESS)
				atomic_fetch_add(&n_hello, 1);
	}
	free(hello);
	int64_t last = t0;
	for (long i = 0; i < ndev; i++)
		if (devs[i].done_at > last)
			last = devs[i].done_at;
	/* PUBACKs of chunks sent before the final ack arrived come later; count them. */
	for (int i = 0; i < 3000 && atomic_load(&n_inflight) > 0; i++)
		sleep_ms(10);
	return (double)(last - t0) / 1000.0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "uri", 1, 0, 'u' }, { "crashgated", 1, 0, 'g' }, { "workdir", 1, 0, 'w' },
		{ "devices", 1, 0, 'n' }, { "conns", 1, 0, 'c' }, { "timeout", 1, 0, 't' },
		{ "prefix", 1, 0, 'p' }, { "broker-pid", 1, 0, 'b' }, { "window", 1, 0, 'W' }, { 0, 0, 0, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'u': uri = optarg; break;
		case 'g': gwbin = optarg; break;
		case 'w': workdir = optarg; break;
		case 'n': ndev = atol(optarg); break;
		case 'c': nconn = atol(optarg); break;
		case 't': timeout_s = atol(optarg); break;
		case 'p': prefix = optarg; break;
		case 'b': broker_pid = (pid_t)atol(optarg); break;
		case 'W': window = atol(optarg); break;
		default: return 2;
		}
	}
	if (!uri || !gwbin || !workdir || ndev < 1 || ndev > 99999 || nconn < 1 || window < 1 || timeout_s < 1 ||
	    strlen(prefix) > 200) {
		fprintf(stderr, "usage: bench_storm --uri URI --crashgated PATH --workdir DIR [--devices N (1..99999)] "
				"[--conns C] [--window W] [--timeout S] [--prefix P] [--broker-pid PID]\n");
		return 2;
	}
	if (nconn > ndev)
		nconn = ndev;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	build_dump();
	encode_messages();
	bare_fork(); /* before any Paho thread exists in this process */
	struct cg_crash crash;
	cg_decode_zephyr(dump, sizeof dump, &crash);

	devs = calloc((size_t)ndev, sizeof *devs);
	conns = calloc((size_t)nconn, sizeof *conns);
	if (!devs || !conns)
		fail("out of memory");
	for (long c = 0, next = 0; c < nconn; c++) {
		conns[c].first = next;
		conns[c].n = ndev / nconn + (c < ndev % nconn);
		conns[c].q = calloc((size_t)conns[c].n, sizeof *conns[c].q);
		if (!conns[c].q)
			fail("out of memory");
		for (long i = next; i < next + conns[c].n; i++)
			devs[i].conn = &conns[c];
		next += conns[c].n;
	}
	conns_open();

	long without = ndev * DUMP_CHUNKS;
	printf("storm: %ld devices, each one %d KiB Zephyr core dump (%s, %s, pc 0x%" PRIx64 ") in %d chunks of "
	       "%d B at QoS 1, over %ld connections (at most %ld chunks in flight on each)\n",
	       ndev, DUMP_BYTES / 1024, crash.arch, crash.reason, crash.pc, DUMP_CHUNKS, CHUNK_BYTES, nconn, window);
	fflush(stdout);

	/* 1. baseline: no gateway, a bare subscriber counts what crosses the broker */
	bare_open();
	reset_run(BASELINE);
	double b_cpu0 = broker_pid ? proc_cpu_s(broker_pid) : -1;
	int64_t t0;
	double t_base = storm(&t0);
	for (int i = 0; i < 6000 && atomic_load(&bare->received) < atomic_load(&n_puback); i++)
		sleep_ms(10);
	double t_bare = (double)(atomic_load(&bare->last_ms) - t0) / 1000.0;
	double b_cpu_base = broker_pid ? proc_cpu_s(broker_pid) - b_cpu0 : -1;
	long base_pub = atomic_load(&n_puback), base_recv = atomic_load(&bare->received);
	bare_close();
	printf("  baseline, no gateway (a bare Paho subscriber counts the chunks):\n");
	printf("    every device sent its last chunk : %8.3f s\n", t_base);
	printf("    chunks across the broker         : %8ld (%ld expected; the bare subscriber received %ld, "
	       "the last at %.3f s)\n", base_pub, without, base_recv, t_bare);
	printf("    broker rate                      : %8.0f chunks/s  %.1f MB/s\n", base_pub / t_base,
	       base_pub * (double)CHUNK_BYTES / 1e6 / t_base);
	if (b_cpu_base >= 0)
		printf("    broker CPU                       : %8.2f s\n", b_cpu_base);
	if (atomic_load(&n_refused) || atomic_load(&n_pub_failed))
		printf("    publishes refused by Paho        : %ld, failed: %ld (retried)\n",
		       atomic_load(&n_refused), atomic_load(&n_pub_failed));
	if (base_recv < base_pub)
		printf("    WARNING: the broker delivered %ld fewer chunks than it acknowledged\n",
		       base_pub - base_recv);
	fflush(stdout);

	/* 2. the real daemon: consent for every device, throttle 5 identical */
	write_config();
	gw_start();
	atexit(gw_stop); /* also when a failure exits mid-storm */
	int64_t ready_by = now_ms() + 30000;
	while (!(gw_log_has("subscribed") && gw_log_has("running:"))) {
		if (!gw_alive())
			fail("crashgated did not start with %s (see its log above)", gw_cfg);
		if (now_ms() > ready_by) {
			gw_log_tail();
			gw_stop();
			fail("crashgated did not subscribe within 30 s");
		}
		sleep_ms(20);
	}
	reset_run(GATEWAY);
	b_cpu0 = broker_pid ? proc_cpu_s(broker_pid) : -1;
	double gw_cpu0 = proc_cpu_s(gw_pid);
	double t_gw = storm(&t0);
	long pub = atomic_load(&n_puback), hellos = atomic_load(&n_hello);
	/* What crossed the broker may still wait for the gateway: let it drain
	 * (bounded) before reading its CPU time, so the figure covers the storm.
	 * Drained means every message read, or no progress for 3 s: the broker
	 * drops what exceeds its queue limits for the gateway's session. */
	char stats[2048] = "";
	long msgs = 0, seen = -1;
	int64_t drain_by = now_ms() + 60000, last_change = now_ms();
	while (now_ms() < drain_by && gw_alive()) {
		if (gw_stat_fresh(stats, sizeof stats) && stat_of(stats, "messages", &msgs)) {
			if (msgs != seen) {
				seen = msgs;
				last_change = now_ms();
			}
			if (msgs >= pub + hellos || now_ms() - last_change >= 3000)
				break;
		}
		sleep_ms(100);
	}
	if (gw_pid <= 0)
		fail("crashgated stopped after the storm");
	double t_drain = (double)(last_change - t0) / 1000.0;
	bool drained = msgs >= pub + hellos || now_ms() - last_change >= 3000;
	double gw_cpu = proc_cpu_s(gw_pid) - gw_cpu0;
	long hwm = proc_kb(gw_pid, "VmHWM:");
	double b_cpu_gw = broker_pid ? proc_cpu_s(broker_pid) - b_cpu0 : -1;
	gw_stop();

	/* Drop the gateway's persistent session, so that a later run on this
	 * broker does not queue the baseline's chunks for it. */
	MQTTAsync gone;
	if (MQTTAsync_create(&gone, uri, "crashgate-bench-storm", MQTTCLIENT_PERSISTENCE_NONE, NULL) == 0) {
		MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
		co.cleansession = 1;
		MQTTAsync_connect(gone, &co);
		for (int i = 0; i < 300 && !MQTTAsync_isConnected(gone); i++)
			sleep_ms(10);
		conn_close(&gone);
	}

	long complete = atomic_load(&n_final[CG_ACK_COMPLETE]), throttled = atomic_load(&n_final[CG_ACK_THROTTLED]);
	long refused = atomic_load(&n_final[CG_ACK_REJECTED]) + atomic_load(&n_final[CG_ACK_CONSENT_REQUIRED]);
	long stored = -1, gw_throttled = -1;
	bool have_stored = stat_of(stats, "completed", &stored);
	bool have_thr = stat_of(stats, "throttled", &gw_throttled);
	printf("  crashgated (consent for every device, throttle.max_identical 5):\n");
	printf("    every device holds its final ack : %8.3f s   (baseline: every device sent all: %.3f s)\n",
	       t_gw, t_base);
	printf("    final acks                       : complete %ld, throttled %ld, rejected %ld, "
	       "consent_required %ld\n", complete, throttled, atomic_load(&n_final[CG_ACK_REJECTED]),
	       atomic_load(&n_final[CG_ACK_CONSENT_REQUIRED]));
	printf("    acks received in all             : %ld (incomplete %ld, busy %ld, repeats of final %ld, "
	       "unusable %ld); hellos sent %ld\n", atomic_load(&n_acks),
	       atomic_load(&n_acks_status[CG_ACK_INCOMPLETE]), atomic_load(&n_acks_status[CG_ACK_BUSY]),
	       atomic_load(&n_acks) - atomic_load(&n_acks_bad) - atomic_load(&n_acks_status[CG_ACK_INCOMPLETE]) -
		       atomic_load(&n_acks_status[CG_ACK_BUSY]) - (complete + throttled + refused),
	       atomic_load(&n_acks_bad), hellos);
	printf("    chunks across the broker         : %8ld of %ld without early throttling (baseline run: %ld)\n",
	       pub, without, base_pub);
	printf("    saved                            : %8.1f %%   (target >= 95 %%)\n",
	       100.0 * (double)(without - pub) / (double)without);
	for (uint8_t st = CG_ACK_COMPLETE; st <= CG_ACK_THROTTLED; st++) {
		long at[4], ch[4];
		if (!final_quantiles(st, t0, at, ch))
			continue;
		printf("    %-9s devices: final ack after: median %.3f s, p90 %.3f s, p99 %.3f s, last %.3f s;\n"
		       "                       chunks sent:     median %ld, p90 %ld, p99 %ld, most %ld\n",
		       st == CG_ACK_COMPLETE ? "complete" : "throttled", at[0] / 1e3, at[1] / 1e3, at[2] / 1e3,
		       at[3] / 1e3, ch[0], ch[1], ch[2], ch[3]);
	}
	if (have_stored)
		printf("    dumps stored by crashgated       : %8ld   (expected 5)\n", stored);
	if (have_thr)
		printf("    dumps throttled by crashgated    : %8ld\n", gw_throttled);
	printf("    crashgated CPU (user+system)     : %8.2f s   (from the storm's start until it had read "
	       "its last message at %.3f s%s)\n", gw_cpu, t_drain, drained ? "" : "; NOT drained within 60 s");
	printf("    messages crashgated read         : %8ld of %ld published (chunks and hellos)%s\n", msgs,
	       pub + hellos, msgs < pub + hellos ? "; the broker dropped the rest (queue limits of the "
						   "gateway's session, see the broker log)" : "");
	printf("    crashgated peak RSS (VmHWM)      : %8.1f MiB\n", hwm / 1024.0);
	if (b_cpu_gw >= 0)
		printf("    broker CPU                       : %8.2f s   (baseline: %.2f s)\n", b_cpu_gw, b_cpu_base);
	if (atomic_load(&n_refused) || atomic_load(&n_pub_failed))
		printf("    publishes refused by Paho        : %ld, failed: %ld (retried)\n",
		       atomic_load(&n_refused), atomic_load(&n_pub_failed));
	printf("    crashgated stats: %s\n", stats[0] ? stats : "(none logged)");
	if (refused)
		printf("    WARNING: %ld devices were refused (rejected or consent_required): see %s\n", refused, gw_log);
	if (!have_stored || stored != 5)
		printf("    WARNING: crashgated stored %ld dumps, expected exactly 5\n", stored);
	fflush(stdout);

	for (long c = 0; c < nconn; c++)
		conn_close(&conns[c].c);
	return 0;
}
