/*
 * bench_e2e: end to end, devices -> broker -> crashgated -> the `http`
 * output plugin -> an HTTP server on 127.0.0.1 inside this process, each
 * figure beside the ingest-only figure of the same run.
 *
 * N dumps (default 2,000) of 64 KiB random bytes (format 4, raw; every dump
 * distinct, so none is throttled or deduplicated) from D devices (default
 * 100), in 4 KiB chunks at QoS 1 over C MQTT connections (default 4, at most
 * W chunks in flight on each). A connection sends its dumps one after the
 * other, each in order, so a device has at most one dump open at a time.
 * Kept per dump: when its last chunk was handed to the MQTT client ("last
 * chunk sent"), when that chunk's PUBACK came back, when its `complete` ack
 * arrived (a further connection subscribes to the devices' ack topics) and
 * when the upstream received it.
 *
 * The upstream (libmicrohttpd, a thread per connection) answers 200 to a
 * POST of application/cbor to /ingest. It decodes the batch document
 * (plugins/README.md) with libcbor and, for each record, keeps the time the
 * request had arrived whole (CLOCK_MONOTONIC) and checks that meta.device
 * and meta.dump_id name a dump that was sent and that the record's dump
 * bytes have its length and CRC-32. Anything else is answered 400 and fails
 * the run.
 *
 * Four runs, each with a fresh crashgated, store, MQTT session and topic
 * prefix:
 *  A.  ingest only, devices as fast as they can; the upstream is of kind
 *      `file`. Dumps/s and MB/s from the first publish until every dump is
 *      stored (its `complete` ack; crashgated's own "completed=" counter,
 *      read through SIGUSR1, must agree).
 *  B2. end to end, devices as fast as they can; kind `http`, batch
 *      max_dumps 32, max_bytes 4MiB, max_delay 200ms (--batch-dumps,
 *      --batch-delay-ms). Dumps/s and MB/s from the first publish until the
 *      upstream has received every dump.
 *  A'. ingest only, paced (--latency-rate, default half of run A's rate):
 *      latency to the complete ack without a backlog.
 *  B1. end to end, paced like A', batch max_dumps 1, max_delay 0ms: every
 *      dump is POSTed alone, so its latency to the receipt has no batch
 *      delay in it by configuration.
 * Latencies at full speed are printed too, but they are mostly time spent
 * behind earlier dumps (they grow with N); B2's also include the wait for a
 * batch to fill, which crashgated does not expose per dump and which
 * max_delay bounds (from the batch's oldest dump being stored).
 *
 * Why "last chunk sent" and not its PUBACK: with the shipped broker
 * configuration (set_tcp_nodelay off) mosquitto's PUBACKs, small packets,
 * reach the device late: in a paced run the last chunk's PUBACK came 13.7 ms
 * (p50) after the chunk was sent, while crashgated's complete ack for the
 * same dump, fsync included, came after 4.8 ms; with set_tcp_nodelay on, the
 * PUBACK came after 1.4 ms. The PUBACK time is printed beside the others.
 *
 * Every wait is bounded (--timeout per run, default 300 s); every socket is
 * on 127.0.0.1. crashgated finds its plugins through --plugin-dir (written
 * to gateway.plugin_dir) or the inherited CRASHGATE_PLUGIN_DIR.
 *
 * usage: bench_e2e --uri tcp://127.0.0.1:PORT --crashgated PATH --workdir DIR
 *                  [--plugin-dir DIR] [--dumps N] [--devices D] [--conns C]
 *                  [--window W] [--batch-dumps B] [--batch-delay-ms MS]
 *                  [--latency-rate DUMPS_PER_S] [--timeout S] [--keep]
 */
#include <MQTTAsync.h>
#include <arpa/inet.h>
#include <cbor.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crashgate/proto.h"

#define CHUNK_BYTES 4096
#define DUMP_BYTES  65536
#define DUMP_CHUNKS (DUMP_BYTES / CHUNK_BYTES)
#define MB(n)       ((double)(n) * DUMP_BYTES / 1e6)

static const char *uri, *gwbin, *workdir, *plugin_dir;
static long ndumps = 2000, ndev = 100, nconn = 4, window = 32, timeout_s = 300;
static long batch_dumps = 32, batch_delay_ms = 200, latency_rate;
static bool keep;
static int64_t pace_us;      /* a paced run starts dump i at t_start + i * pace_us */
static atomic_llong t_start;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fflush(stdout);
	fprintf(stderr, "bench_e2e: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- the dumps of one run ---- */

struct conn;

struct dump {
	struct conn *conn;
	long dev;
	uint64_t dump_id;
	atomic_uint crc;         /* CRC-32 of its bytes, set when its first chunk is built */
	atomic_int acked;        /* chunks PUBACKed by the broker */
	atomic_llong sent_us;    /* its last chunk was handed to the MQTT client */
	atomic_llong done_us;    /* the PUBACK of its last chunk */
	atomic_llong ack_us;     /* its final ack reached the devices' side */
	atomic_int ack_status;
	/* under recv_lock */
	int64_t recv_us;         /* the POST that brought it first had arrived whole */
	int recv_count;
	long batch, batch_pos, batch_len;
};

static struct dump *dumps;
static int run_no;
static char prefix[128];
static uint64_t id_base;

/* Counters of one run. */
static atomic_long n_done, n_acked, n_ack_status[8], n_ack_other, n_ack_bad, n_refused;
static atomic_bool pub_failed;

static void dev_name(long dev, char *buf, size_t cap)
{
	snprintf(buf, cap, "e2e-%04ld", dev);
}

/* The bytes of dump i of this run: random, different for every dump and run. */
static void dump_bytes(long i, uint8_t *out)
{
	uint64_t x = ((uint64_t)run_no << 40) ^ (uint64_t)i ^ 0x9e3779b97f4a7c15u;
	for (size_t k = 0; k < DUMP_BYTES; k += 8) {
		x += 0x9e3779b97f4a7c15u; /* splitmix64 */
		uint64_t z = x;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
		z ^= z >> 31;
		memcpy(out + k, &z, 8);
	}
}

/* ---- devices: MQTT connections that publish the chunks ---- */

struct conn {
	MQTTAsync c;
	pthread_mutex_t lock;    /* guards the fields below */
	long *list, nlist;       /* its dumps, in the order it sends them */
	long next;               /* list[next] is the dump being sent */
	int ord;                 /* its next chunk */
	long outstanding;        /* chunks handed to Paho, PUBACK not yet seen */
	bool draining, again;    /* one thread sends at a time, in order */
	bool retry;              /* Paho refused a publish: the main loop tries again */
	atomic_bool connected, lost;
	/* used only by the thread that drains */
	long body_of;
	uint8_t body[DUMP_BYTES];
	uint8_t msg[CHUNK_BYTES + 256];
};

static struct conn *conns;

static void on_pub_ok(void *ctx, MQTTAsync_successData *r);
static void on_pub_fail(void *ctx, MQTTAsync_failureData *r);

/* Build and hand to Paho chunk `ord` of dump i; false if Paho refused it. */
static bool send_chunk(struct conn *cn, long i, int ord)
{
	struct dump *d = &dumps[i];
	if (cn->body_of != i) {
		dump_bytes(i, cn->body);
		atomic_store(&d->crc, cg_crc32(0, cn->body, DUMP_BYTES));
		cn->body_of = i;
	}
	struct cg_chunk c = { .dump_id = d->dump_id, .ordinal = (uint32_t)ord,
			      .content = cn->body + (size_t)ord * CHUNK_BYTES, .content_len = CHUNK_BYTES,
			      .last = ord == DUMP_CHUNKS - 1 };
	if (ord == 0) {
		c.present |= CG_HAS_TOTAL_SIZE | CG_HAS_FORMAT;
		c.total_size = DUMP_BYTES;
		c.format = CG_FORMAT_RAW;
	}
	if (c.last) {
		c.present |= CG_HAS_CRC32;
		c.crc32 = atomic_load(&d->crc);
	}
	size_t n;
	if (cg_chunk_encode(&c, 0, cn->msg, sizeof cn->msg, &n) != CG_OK)
		fail("cannot encode a chunk");
	char dev[32], topic[256];
	dev_name(d->dev, dev, sizeof dev);
	snprintf(topic, sizeof topic, "%s/dev/%s/chunk", prefix, dev);
	MQTTAsync_message m = MQTTAsync_message_initializer;
	m.payload = cn->msg;
	m.payloadlen = (int)n;
	m.qos = 1;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	ro.onSuccess = on_pub_ok;
	ro.onFailure = on_pub_fail;
	ro.context = d;
	if (c.last)
		atomic_store(&d->sent_us, now_us());
	return MQTTAsync_sendMessage(cn->c, topic, &m, &ro) == MQTTASYNC_SUCCESS; /* Paho copies it */
}

/*
 * Hand the connection's next chunks to Paho while fewer than `window` are in
 * flight. Only one thread sends at a time (a caller that finds another one
 * sending leaves the work to it), and never under the lock, which Paho's
 * callbacks take.
 */
static void drain(struct conn *cn)
{
	pthread_mutex_lock(&cn->lock);
	if (cn->draining) {
		cn->again = true;
		pthread_mutex_unlock(&cn->lock);
		return;
	}
	cn->draining = true;
	cn->retry = false;
	for (;;) {
		bool not_yet = pace_us && cn->next < cn->nlist && cn->ord == 0 &&
			       now_us() < atomic_load(&t_start) + cn->list[cn->next] * pace_us;
		if (cn->outstanding >= window || cn->next >= cn->nlist || not_yet) {
			if (!cn->again)
				break;
			cn->again = false;
			continue;
		}
		long i = cn->list[cn->next];
		int ord = cn->ord;
		cn->outstanding++;
		pthread_mutex_unlock(&cn->lock);
		bool ok = send_chunk(cn, i, ord);
		pthread_mutex_lock(&cn->lock);
		if (!ok) {
			cn->outstanding--;
			cn->retry = true;
			atomic_fetch_add(&n_refused, 1);
			break;
		}
		if (++cn->ord == DUMP_CHUNKS) {
			cn->ord = 0;
			cn->next++;
		}
	}
	cn->draining = false;
	cn->again = false;
	pthread_mutex_unlock(&cn->lock);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData *r)
{
	struct dump *d = ctx;
	(void)r;
	if (atomic_fetch_add(&d->acked, 1) + 1 == DUMP_CHUNKS) {
		atomic_store(&d->done_us, now_us());
		atomic_fetch_add(&n_done, 1);
	}
	pthread_mutex_lock(&d->conn->lock);
	d->conn->outstanding--;
	pthread_mutex_unlock(&d->conn->lock);
	drain(d->conn);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData *r)
{
	struct dump *d = ctx;
	(void)r;
	atomic_store(&pub_failed, true); /* the main loop fails the run */
	pthread_mutex_lock(&d->conn->lock);
	d->conn->outstanding--;
	pthread_mutex_unlock(&d->conn->lock);
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

/* Paho sets no callbacks at all without a message callback. */
static int on_no_msg(void *ctx, char *topic, int tl, MQTTAsync_message *m)
{
	(void)ctx;
	(void)tl;
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void conn_open(struct conn *cn, const char *id, MQTTAsync_messageArrived *on_msg)
{
	if (MQTTAsync_create(&cn->c, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) != 0)
		fail("cannot create the MQTT client %s", id);
	if (MQTTAsync_setCallbacks(cn->c, cn, on_lost, on_msg ? on_msg : on_no_msg, NULL) != MQTTASYNC_SUCCESS)
		fail("cannot set the callbacks of %s", id);
	MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
	o.cleansession = 1; /* nothing of an earlier benchmark's session */
	o.keepAliveInterval = 60;
	o.connectTimeout = 10;
	o.maxInflight = (int)window + 16;
	o.onSuccess = on_conn;
	o.context = cn;
	if (MQTTAsync_connect(cn->c, &o) != 0)
		fail("cannot connect %s to %s", id, uri);
}

static void conn_wait(struct conn *cn, const char *what)
{
	int64_t by = now_us() + 30000000;
	while (!atomic_load(&cn->connected)) {
		if (now_us() > by)
			fail("%s: not connected to %s within 30 s", what, uri);
		sleep_ms(10);
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

/* ---- the acks, on a connection of their own ---- */

static struct conn acks;
static atomic_int ack_granted = -1;

static int on_ack(void *ctx, char *topic, int tl, MQTTAsync_message *m)
{
	(void)ctx;
	(void)tl;
	int64_t t = now_us();
	struct cg_range miss[8];
	struct cg_ack a = { .missing = miss, .missing_cap = 8 };
	char want[64];
	size_t pl = strlen(prefix);
	struct dump *d = NULL;
	if (cg_ack_decode(m->payload, (size_t)m->payloadlen, &a) == CG_OK && a.dump_id >= id_base &&
	    a.dump_id < id_base + (uint64_t)ndumps) {
		d = &dumps[a.dump_id - id_base];
		dev_name(d->dev, want, sizeof want);
		/* "{prefix}/dev/{device}/ack" */
		if (strncmp(topic, prefix, pl) != 0 || strncmp(topic + pl, "/dev/", 5) != 0 ||
		    strncmp(topic + pl + 5, want, strlen(want)) != 0 || strcmp(topic + pl + 5 + strlen(want), "/ack") != 0)
			d = NULL;
	}
	if (!d) {
		atomic_fetch_add(&n_ack_bad, 1);
	} else if (a.status == CG_ACK_COMPLETE || a.status == CG_ACK_THROTTLED || a.status == CG_ACK_REJECTED ||
		   a.status == CG_ACK_CONSENT_REQUIRED) {
		long long zero = 0;
		if (atomic_compare_exchange_strong(&d->ack_us, &zero, t)) {
			atomic_store(&d->ack_status, (int)a.status);
			atomic_fetch_add(&n_ack_status[a.status & 7], 1);
			atomic_fetch_add(&n_acked, 1);
		}
	} else {
		atomic_fetch_add(&n_ack_other, 1); /* incomplete or busy: reported */
		atomic_fetch_add(&n_ack_status[a.status & 7], 1);
	}
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void on_ack_sub(void *ctx, MQTTAsync_successData *r)
{
	(void)ctx;
	atomic_store(&ack_granted, r ? r->alt.qos : 0x80);
}

static void on_ack_sub_fail(void *ctx, MQTTAsync_failureData *r)
{
	(void)ctx;
	(void)r;
	atomic_store(&ack_granted, 0x80);
}

/* ---- the upstream: an HTTP server on 127.0.0.1 ---- */

static struct MHD_Daemon *httpd;
static int http_port;
static pthread_mutex_t recv_lock = PTHREAD_MUTEX_INITIALIZER;
static long n_posts, n_received, n_repeats, n_bad, n_records;
static char bad_why[256];

struct req {
	uint8_t *buf;
	size_t len, cap;
	const char *bad; /* why it is refused, NULL if not */
};

static void bad_request(const char *why)
{
	pthread_mutex_lock(&recv_lock);
	if (!n_bad++)
		snprintf(bad_why, sizeof bad_why, "%s", why);
	pthread_mutex_unlock(&recv_lock);
}

/* The value of text key `key` in a CBOR map, NULL if absent. */
static cbor_item_t *map_get(cbor_item_t *map, const char *key)
{
	if (!map || !cbor_isa_map(map))
		return NULL;
	size_t kl = strlen(key), n = cbor_map_size(map);
	struct cbor_pair *p = cbor_map_handle(map);
	for (size_t i = 0; i < n; i++)
		if (cbor_isa_string(p[i].key) && cbor_string_is_definite(p[i].key) &&
		    cbor_string_length(p[i].key) == kl && memcmp(cbor_string_handle(p[i].key), key, kl) == 0)
			return p[i].value;
	return NULL;
}

/* Take one batch document that arrived whole at t; NULL or why it is refused. */
static const char *take_batch(const uint8_t *buf, size_t len, int64_t t)
{
	struct cbor_load_result res;
	cbor_item_t *root = cbor_load(buf, len, &res);
	const char *why = NULL;
	cbor_item_t *recs = map_get(root, "records");
	if (!root || res.error.code != CBOR_ERR_NONE || res.read != len)
		why = "the body is not one CBOR document";
	else if (!recs || !cbor_isa_array(recs) || !map_get(root, "batch_id"))
		why = "the document has no records array or no batch_id";
	size_t n = why ? 0 : cbor_array_size(recs);
	pthread_mutex_lock(&recv_lock);
	long batch = n_posts++;
	for (size_t k = 0; k < n && !why; k++) {
		cbor_item_t *rec = cbor_array_get(recs, k);
		cbor_item_t *meta = map_get(rec, "meta"), *dev = map_get(meta, "device");
		cbor_item_t *id = map_get(meta, "dump_id"), *bytes = map_get(rec, "dump");
		if (!dev || !cbor_isa_string(dev) || !cbor_string_is_definite(dev) || !id || !cbor_isa_uint(id) ||
		    !bytes || !cbor_isa_bytestring(bytes) || !cbor_bytestring_is_definite(bytes))
			why = "a record lacks meta.device, meta.dump_id or dump";
		uint64_t dump_id = why ? 0 : cbor_get_int(id);
		if (!why && (dump_id < id_base || dump_id >= id_base + (uint64_t)ndumps))
			why = "a record names a dump this run did not send";
		struct dump *d = why ? NULL : &dumps[dump_id - id_base];
		char name[32];
		if (d) {
			dev_name(d->dev, name, sizeof name);
			if (cbor_string_length(dev) != strlen(name) ||
			    memcmp(cbor_string_handle(dev), name, strlen(name)) != 0)
				why = "a record's device is not the one that sent its dump";
			else if (cbor_bytestring_length(bytes) != DUMP_BYTES)
				why = "a record's dump bytes do not have the length that was sent";
			else if (cg_crc32(0, cbor_bytestring_handle(bytes), DUMP_BYTES) != atomic_load(&d->crc))
				why = "a record's dump bytes are not the bytes that were sent (CRC-32)";
		}
		if (!why) {
			n_records++;
			if (d->recv_count++ == 0) {
				d->recv_us = t;
				d->batch = batch;
				d->batch_pos = (long)k;
				d->batch_len = (long)n;
				n_received++;
			} else {
				n_repeats++;
			}
		}
		if (rec)
			cbor_decref(&rec);
	}
	pthread_mutex_unlock(&recv_lock);
	if (root)
		cbor_decref(&root);
	return why;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	(void)cls;
	(void)version;
	struct req *r = *con_cls;
	if (!r) {
		r = calloc(1, sizeof *r);
		if (!r)
			return MHD_NO;
		*con_cls = r;
		const char *ct = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
		if (strcmp(method, "POST") != 0 || strcmp(url, "/ingest") != 0)
			r->bad = "not a POST to /ingest";
		else if (!ct || strncmp(ct, "application/cbor", 16) != 0)
			r->bad = "Content-Type is not application/cbor";
		else if (MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Encoding"))
			r->bad = "a Content-Encoding (the bench configures none)";
		return MHD_YES;
	}
	if (*upload_size) {
		if (!r->bad) {
			if (r->len + *upload_size > r->cap) {
				size_t cap = r->cap ? r->cap : 1 << 20;
				while (cap < r->len + *upload_size)
					cap *= 2;
				uint8_t *b = realloc(r->buf, cap);
				if (!b)
					return MHD_NO;
				r->buf = b;
				r->cap = cap;
			}
			memcpy(r->buf + r->len, upload, *upload_size);
			r->len += *upload_size;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	int64_t t = now_us(); /* the whole request is here */
	const char *why = r->bad ? r->bad : take_batch(r->buf, r->len, t);
	if (why)
		bad_request(why);
	struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	enum MHD_Result ret = MHD_queue_response(con, why ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode tc)
{
	(void)cls;
	(void)con;
	(void)tc;
	struct req *r = *con_cls;
	if (r) {
		free(r->buf);
		free(r);
	}
	*con_cls = NULL;
}

static void http_start(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) != 0)
		fail("cannot listen on 127.0.0.1: %s", strerror(errno));
	http_port = ntohs(a.sin_port);
	httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
				 0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
				 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
				 (unsigned int)120, MHD_OPTION_END);
	if (!httpd)
		fail("libmicrohttpd did not start on 127.0.0.1:%d", http_port);
}

/* ---- the real daemon ---- */

static char run_dir[512], gw_log[600], gw_cfg[600], gw_client[128];
static pid_t gw_pid;

/* upstream: the YAML of the region's one upstream; NULL: a `file` upstream. */
static void write_config(const char *upstream)
{
	char path[700];
	snprintf(run_dir, sizeof run_dir, "%s/e2e-%ld-%d", workdir, (long)getpid(), run_no);
	if (mkdir(run_dir, 0700) != 0)
		fail("mkdir %s: %s", run_dir, strerror(errno));
	snprintf(path, sizeof path, "%s/gw", run_dir);
	mkdir(path, 0700);
	snprintf(gw_cfg, sizeof gw_cfg, "%s/crashgated.yaml", run_dir);
	snprintf(gw_log, sizeof gw_log, "%s/crashgated.log", run_dir);
	snprintf(gw_client, sizeof gw_client, "crashgate-bench-e2e-%ld-%d", (long)getpid(), run_no);
	char file_up[800];
	if (!upstream) {
		snprintf(file_up, sizeof file_up, "{ name: bench-file, kind: file, path: \"%s/out\" }", run_dir);
		upstream = file_up;
	}
	FILE *f = fopen(gw_cfg, "w");
	if (!f)
		fail("write %s", gw_cfg);
	fprintf(f, "gateway: { id: bench-e2e, data_dir: %s/gw", run_dir);
	if (plugin_dir)
		fprintf(f, ", plugin_dir: \"%s\"", plugin_dir);
	fprintf(f,
		" }\n"
		"mqtt: { uri: \"%s\", client_id: %s, topic_prefix: \"%s\" }\n"
		"limits: { max_open_dumps: 10000, max_open_dumps_per_device: 8, max_store_bytes: 8GiB }\n"
		"default_region: US\n"
		"regions: { US: { upstreams: [ %s ] } }\n"
		"groups: [ { name: all, devices: [\"*\"], crash_dumps: enabled } ]\n"
		"throttle: { max_identical: 1000, window: 1m }\n",
		uri, gw_client, prefix, upstream);
	fclose(f);
}

static void gw_start(void)
{
	/* Paho's and libmicrohttpd's threads run in this process: between fork
	 * and exec only async-signal-safe calls. The environment (with
	 * CRASHGATE_PLUGIN_DIR) is inherited. */
	int fd = open(gw_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
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

static void gw_log_tail(void)
{
	FILE *f = fopen(gw_log, "r");
	char lines[10][1024];
	int n = 0;
	while (f && fgets(lines[n % 10], sizeof lines[0], f))
		n++;
	if (f)
		fclose(f);
	fprintf(stderr, "--- last lines of %s ---\n", gw_log);
	for (int i = n > 10 ? n - 10 : 0; i < n; i++)
		fputs(lines[i % 10], stderr);
	fprintf(stderr, "---\n");
}

static bool gw_alive(void)
{
	int st;
	if (gw_pid <= 0)
		return false;
	if (waitpid(gw_pid, &st, WNOHANG) != gw_pid)
		return true;
	gw_log_tail();
	if (WIFEXITED(st))
		fprintf(stderr, "bench_e2e: crashgated exited with status %d\n", WEXITSTATUS(st));
	else
		fprintf(stderr, "bench_e2e: crashgated died of signal %d\n", WTERMSIG(st));
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
	fprintf(stderr, "bench_e2e: crashgated ignored SIGTERM for 10 s, killing it\n");
	kill(gw_pid, SIGKILL);
	waitpid(gw_pid, &st, 0);
	gw_pid = 0;
}

static int gw_log_count(const char *needle, char *last, size_t cap)
{
	FILE *f = fopen(gw_log, "r");
	char line[4096];
	int n = 0;
	while (f && fgets(line, sizeof line, f)) {
		char *p = strstr(line, needle);
		if (!p)
			continue;
		n++;
		if (last) {
			snprintf(last, cap, "%s", p + strlen(needle));
			last[strcspn(last, "\n")] = '\0';
		}
	}
	if (f)
		fclose(f);
	return n;
}

/* Ask for the counters and wait (bounded, 2 s) for the line they produce. */
static bool gw_stats(char *line, size_t cap)
{
	int before = gw_log_count("stats: ", NULL, 0);
	kill(gw_pid, SIGUSR1);
	for (int i = 0; i < 200; i++) {
		sleep_ms(10);
		if (gw_log_count("stats: ", line, cap) > before)
			return true;
	}
	return false;
}

static bool stat_of(const char *line, const char *key, long *val)
{
	char pat[64], buf[4200];
	snprintf(pat, sizeof pat, " %s=", key);
	snprintf(buf, sizeof buf, " %s", line);
	char *p = strstr(buf, pat);
	if (!p)
		return false;
	*val = strtol(p + strlen(pat), NULL, 10);
	return true;
}

/* Forget the gateway's persistent session, so that the broker queues
 * nothing more for it. */
static void gw_forget_session(void)
{
	struct conn tmp;
	memset(&tmp, 0, sizeof tmp);
	conn_open(&tmp, gw_client, NULL);
	conn_wait(&tmp, "dropping the gateway's session");
	conn_close(&tmp.c);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* ---- one run ---- */

enum run_kind { INGEST, E2E };

struct quant {
	long n;
	double p50, p99, max; /* ms */
};

struct result {
	const char *title;
	enum run_kind kind;
	double rate;         /* dumps/s the devices offer; 0: as fast as they can */
	double t_pub, t_stored, t_recv; /* s from the first publish */
	struct quant puback, ack, recv, fwd, newest;
	struct quant ack_pa, recv_pa; /* the same, counted from the last chunk's PUBACK */
	long max_dumps;      /* the upstream's batch.max_dumps */
	long posts, records, repeats, full_posts;
	long refused, ack_other, ack_bad;
	char stats[4096];
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentiles of v[0..n), in ms (v in µs; sorted in place). */
static struct quant quant_of(double *v, long n)
{
	struct quant q = { .n = n };
	if (n == 0)
		return q;
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	long i50 = (n * 50 + 99) / 100 - 1, i99 = (n * 99 + 99) / 100 - 1;
	q.p50 = v[i50 < 0 ? 0 : i50] / 1e3;
	q.p99 = v[i99 < 0 ? 0 : i99] / 1e3;
	q.max = v[n - 1] / 1e3;
	return q;
}

static void reset_run(void)
{
	run_no++;
	snprintf(prefix, sizeof prefix, "crashgate/e2e-%ld-%d", (long)getpid(), run_no);
	id_base = (uint64_t)run_no * 100000000u + 1;
	for (long i = 0; i < ndumps; i++) {
		struct dump *d = &dumps[i];
		d->dump_id = id_base + (uint64_t)i;
		atomic_store(&d->crc, 0);
		atomic_store(&d->acked, 0);
		atomic_store(&d->sent_us, 0);
		atomic_store(&d->done_us, 0);
		atomic_store(&d->ack_us, 0);
		atomic_store(&d->ack_status, 0);
		d->recv_us = 0;
		d->recv_count = 0;
		d->batch = d->batch_pos = d->batch_len = 0;
	}
	for (long c = 0; c < nconn; c++) {
		struct conn *cn = &conns[c];
		cn->next = 0;
		cn->ord = 0;
		cn->outstanding = 0;
		cn->draining = cn->again = cn->retry = false;
		cn->body_of = -1;
	}
	atomic_store(&n_done, 0);
	atomic_store(&n_acked, 0);
	atomic_store(&n_ack_other, 0);
	atomic_store(&n_ack_bad, 0);
	atomic_store(&n_refused, 0);
	for (int i = 0; i < 8; i++)
		atomic_store(&n_ack_status[i], 0);
	pthread_mutex_lock(&recv_lock);
	n_posts = n_received = n_repeats = n_bad = n_records = 0;
	bad_why[0] = '\0';
	pthread_mutex_unlock(&recv_lock);
}

static long received(void)
{
	pthread_mutex_lock(&recv_lock);
	long n = n_received;
	pthread_mutex_unlock(&recv_lock);
	return n;
}

static void report_stuck(struct result *r)
{
	long pending = 0, unsent = 0;
	for (long c = 0; c < nconn; c++) {
		pthread_mutex_lock(&conns[c].lock);
		pending += conns[c].outstanding;
		unsent += conns[c].nlist - conns[c].next;
		pthread_mutex_unlock(&conns[c].lock);
	}
	fprintf(stderr,
		"bench_e2e: %s did not finish within %ld s: %ld of %ld dumps published whole (%ld not yet sent whole, "
		"%ld chunks awaiting a PUBACK), %ld final acks (%ld complete; %ld incomplete/busy acks), "
		"%ld dumps received upstream in %ld POSTs\n",
		r->title, timeout_s, atomic_load(&n_done), ndumps, unsent, pending, atomic_load(&n_acked),
		atomic_load(&n_ack_status[CG_ACK_COMPLETE]), atomic_load(&n_ack_other), received(), n_posts);
	char line[4096];
	if (gw_alive() && gw_stats(line, sizeof line))
		fprintf(stderr, "bench_e2e: crashgated stats: %s\n", line);
	if (gw_pid > 0)
		gw_log_tail();
}

/*
 * One run: a fresh crashgated with `upstream` (NULL: kind file), every dump
 * published, then wait (bounded) until crashgated has stored every dump and,
 * for an E2E run, the server has received every dump. r->rate > 0 paces the
 * devices: dump i starts no sooner than i / rate seconds after the first.
 */
static void run(struct result *r, const char *upstream)
{
	reset_run();
	pace_us = r->rate > 0 ? (int64_t)(1e6 / r->rate) : 0;
	write_config(upstream);
	gw_start();
	int64_t ready_by = now_us() + 30000000;
	while (gw_log_count("subscribed", NULL, 0) == 0 || gw_log_count("running:", NULL, 0) == 0) {
		if (!gw_alive())
			fail("crashgated did not start with %s (see its log above)", gw_cfg);
		if (now_us() > ready_by) {
			gw_log_tail();
			fail("crashgated did not subscribe within 30 s");
		}
		sleep_ms(20);
	}
	/* The devices' side hears the acks of this run's prefix. */
	char topic[256];
	snprintf(topic, sizeof topic, "%s/dev/+/ack", prefix);
	atomic_store(&ack_granted, -1);
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	ro.onSuccess = on_ack_sub;
	ro.onFailure = on_ack_sub_fail;
	if (MQTTAsync_subscribe(acks.c, topic, 1, &ro) != 0)
		fail("cannot subscribe to %s", topic);
	for (int i = 0; i < 1000 && atomic_load(&ack_granted) < 0; i++)
		sleep_ms(10);
	if (atomic_load(&ack_granted) != 1)
		fail("subscription to %s refused or unanswered", topic);

	int64_t t0 = now_us(), deadline = t0 + timeout_s * 1000000;
	atomic_store(&t_start, t0);
	for (long c = 0; c < nconn; c++)
		drain(&conns[c]);
	int64_t stored_at = 0, last_poll = 0;
	char line[4096] = "";
	for (;;) {
		sleep_ms(pace_us ? 1 : 5);
		int64_t now = now_us();
		if (atomic_load(&pub_failed))
			fail("%s: the broker refused or lost a publish", r->title);
		for (long c = 0; c < nconn; c++) {
			if (atomic_load(&conns[c].lost))
				fail("%s: connection %ld to the broker lost", r->title, c);
			pthread_mutex_lock(&conns[c].lock);
			bool retry = conns[c].retry || (pace_us && conns[c].next < conns[c].nlist);
			pthread_mutex_unlock(&conns[c].lock);
			if (retry)
				drain(&conns[c]);
		}
		if (atomic_load(&acks.lost))
			fail("%s: the ack connection to the broker was lost", r->title);
		if (!gw_alive())
			fail("%s: crashgated stopped", r->title);
		pthread_mutex_lock(&recv_lock);
		long bad = n_bad;
		pthread_mutex_unlock(&recv_lock);
		if (bad)
			fail("%s: the upstream refused %ld requests; the first because %s", r->title, bad, bad_why);
		long other = atomic_load(&n_acked) - atomic_load(&n_ack_status[CG_ACK_COMPLETE]);
		if (other > 0)
			fail("%s: %ld dumps were not stored (final acks: throttled %ld, rejected %ld, consent_required %ld)",
			     r->title, other, atomic_load(&n_ack_status[CG_ACK_THROTTLED]),
			     atomic_load(&n_ack_status[CG_ACK_REJECTED]),
			     atomic_load(&n_ack_status[CG_ACK_CONSENT_REQUIRED]));
		bool published = atomic_load(&n_done) == ndumps;
		bool acked = atomic_load(&n_acked) == ndumps;
		/* crashgated's own count, once everything is published (SIGUSR1
		 * costs it little, but not during the measurement). */
		if (published && !stored_at && now - last_poll >= 250000) {
			last_poll = now;
			long completed = 0;
			if (gw_stats(line, sizeof line) && stat_of(line, "completed", &completed) && completed >= ndumps)
				stored_at = now_us();
		}
		bool done = published && stored_at && (r->kind == INGEST || received() == ndumps);
		/* The acks travel through the broker: a few seconds' grace for them. */
		if (done && (acked || now - stored_at > 5000000))
			break;
		if (now > deadline) {
			report_stuck(r);
			gw_stop();
			fail("%s did not finish within %ld s", r->title, timeout_s);
		}
	}
	if (gw_stats(r->stats, sizeof r->stats) == false)
		snprintf(r->stats, sizeof r->stats, "%s", line);
	gw_stop();
	gw_forget_session();
	MQTTAsync_unsubscribe(acks.c, topic, NULL);

	/* Figures: times from the first publish; latencies per dump from the
	 * moment its last chunk was handed to the MQTT client. */
	enum { PUBACK, ACK, RECV, FWD, NEWEST, ACK_PA, RECV_PA, NQ };
	double *v[NQ];
	long nv[NQ] = { 0 };
	for (int k = 0; k < NQ; k++)
		if (!(v[k] = malloc(sizeof *v[k] * (size_t)ndumps)))
			fail("out of memory");
	int64_t last_done = t0, last_ack = t0, last_recv = t0;
	pthread_mutex_lock(&recv_lock);
	for (long i = 0; i < ndumps; i++) {
		struct dump *d = &dumps[i];
		int64_t sent = atomic_load(&d->sent_us), done = atomic_load(&d->done_us), ack = atomic_load(&d->ack_us);
		if (done > last_done)
			last_done = done;
		v[PUBACK][nv[PUBACK]++] = (double)(done - sent);
		if (ack > last_ack)
			last_ack = ack;
		if (ack) {
			v[ACK][nv[ACK]++] = (double)(ack - sent);
			v[ACK_PA][nv[ACK_PA]++] = (double)(ack - done);
		}
		if (!d->recv_count)
			continue;
		if (d->recv_us > last_recv)
			last_recv = d->recv_us;
		v[RECV][nv[RECV]++] = (double)(d->recv_us - sent);
		v[RECV_PA][nv[RECV_PA]++] = (double)(d->recv_us - done);
		if (ack)
			v[FWD][nv[FWD]++] = (double)(d->recv_us - ack);
		if (d->batch_pos == d->batch_len - 1)
			v[NEWEST][nv[NEWEST]++] = (double)(d->recv_us - sent);
		if (d->batch_pos == 0 && d->batch_len >= r->max_dumps)
			r->full_posts++;
	}
	r->refused = atomic_load(&n_refused);
	r->ack_other = atomic_load(&n_ack_other);
	r->ack_bad = atomic_load(&n_ack_bad);
	r->posts = n_posts;
	r->records = n_records;
	r->repeats = n_repeats;
	pthread_mutex_unlock(&recv_lock);
	r->t_pub = (double)(last_done - t0) / 1e6;
	/* Stored: the last complete ack, or crashgated's counter if acks were lost. */
	r->t_stored = (double)((nv[ACK] == ndumps ? last_ack : stored_at) - t0) / 1e6;
	r->t_recv = (double)(last_recv - t0) / 1e6;
	r->puback = quant_of(v[PUBACK], nv[PUBACK]);
	r->ack = quant_of(v[ACK], nv[ACK]);
	r->recv = quant_of(v[RECV], nv[RECV]);
	r->fwd = quant_of(v[FWD], nv[FWD]);
	r->newest = quant_of(v[NEWEST], nv[NEWEST]);
	r->ack_pa = quant_of(v[ACK_PA], nv[ACK_PA]);
	r->recv_pa = quant_of(v[RECV_PA], nv[RECV_PA]);
	for (int k = 0; k < NQ; k++)
		free(v[k]);
	if (!keep) {
		char path[700];
		snprintf(path, sizeof path, "%s/gw", run_dir);
		nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		snprintf(path, sizeof path, "%s/out", run_dir);
		nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
}

static void print_quant(const char *label, const struct quant *q, const char *note)
{
	if (!q->n)
		return;
	printf("    %-36s: p50 %8.1f ms   p99 %8.1f ms   max %8.1f ms%s%s\n", label, q->p50, q->p99, q->max,
	       note ? "   " : "", note ? note : "");
}

static void print_rate(const char *label, double t, const char *note)
{
	printf("    %-36s: %8.3f s   %7.0f dumps/s  %6.1f MB/s%s%s\n", label, t, ndumps / t, MB(ndumps) / t,
	       note ? "   " : "", note ? note : "");
}

static void print_run(const struct result *r, const struct result *base)
{
	char note[160];
	printf("  %s\n", r->title);
	if (r->rate > 0)
		printf("    paced: dump i starts %.2f ms after dump i-1 (%.0f dumps/s offered)\n", 1e3 / r->rate, r->rate);
	print_rate("devices' last chunks PUBACKed", r->t_pub, "(what the devices pushed into the broker)");
	note[0] = '\0';
	if (base != r && r->rate <= 0)
		snprintf(note, sizeof note, "(ingest only, same run: %.0f dumps/s)", ndumps / base->t_stored);
	print_rate("every dump stored (complete ack)", r->t_stored, note[0] ? note : NULL);
	if (r->kind == E2E) {
		snprintf(note, sizeof note, "(%.2f x ingest only)", base->t_stored / r->t_recv);
		print_rate("every dump received upstream", r->t_recv, r->rate <= 0 ? note : "(paced: the offered rate)");
		printf("    %-36s: %8ld   %.1f records each, %ld of them with max_dumps (%ld); %ld records received "
		       "again; every record's dump checked (length and CRC-32 of what was sent)\n", "POSTs", r->posts,
		       r->posts ? (double)r->records / (double)r->posts : 0.0, r->full_posts, r->max_dumps, r->repeats);
	}
	const char *sat = r->rate > 0 ? NULL : "(as fast as they can: mostly waiting behind earlier dumps)";
	print_quant("last chunk sent -> its PUBACK", &r->puback, "(the broker's answer to the device)");
	print_quant("last chunk sent -> complete ack", &r->ack, sat);
	if (r->kind == E2E) {
		print_quant("last chunk sent -> receipt upstream", &r->recv, sat);
		print_quant("  receipt minus complete ack", &r->fwd,
			    "(< 0: the upstream had the dump before its device had the ack, which crosses the broker)");
		if (r->max_dumps > 1)
			print_quant("  each POST's newest dump -> receipt", &r->newest,
				    "(the newest waited for no later dump)");
	}
	if (r->refused || r->ack_other || r->ack_bad)
		printf("    NOTE: %ld publishes refused by Paho (sent again), %ld incomplete or busy acks, %ld acks that "
		       "named no dump of this run\n", r->refused, r->ack_other, r->ack_bad);
	if (r->stats[0])
		printf("    crashgated stats: %s\n", r->stats);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "uri", 1, 0, 'u' }, { "crashgated", 1, 0, 'g' }, { "workdir", 1, 0, 'w' },
		{ "plugin-dir", 1, 0, 'P' }, { "dumps", 1, 0, 'n' }, { "devices", 1, 0, 'd' },
		{ "conns", 1, 0, 'c' }, { "window", 1, 0, 'W' }, { "batch-dumps", 1, 0, 'b' },
		{ "batch-delay-ms", 1, 0, 'D' }, { "latency-rate", 1, 0, 'r' }, { "timeout", 1, 0, 't' },
		{ "keep", 0, 0, 'k' }, { 0, 0, 0, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'u': uri = optarg; break;
		case 'g': gwbin = optarg; break;
		case 'w': workdir = optarg; break;
		case 'P': plugin_dir = optarg; break;
		case 'n': ndumps = atol(optarg); break;
		case 'd': ndev = atol(optarg); break;
		case 'c': nconn = atol(optarg); break;
		case 'W': window = atol(optarg); break;
		case 'b': batch_dumps = atol(optarg); break;
		case 'D': batch_delay_ms = atol(optarg); break;
		case 'r': latency_rate = atol(optarg); break;
		case 't': timeout_s = atol(optarg); break;
		case 'k': keep = true; break;
		default: return 2;
		}
	}
	if (!uri || !gwbin || !workdir || ndumps < 1 || ndumps > 10000000 || ndev < 1 || ndev > 9999 || nconn < 1 ||
	    window < 1 || batch_dumps < 1 || batch_dumps > 10000 || batch_delay_ms < 0 || latency_rate < 0 ||
	    latency_rate > 1000000 || timeout_s < 1 || (plugin_dir && strchr(plugin_dir, '"'))) {
		fprintf(stderr, "usage: bench_e2e --uri URI --crashgated PATH --workdir DIR [--plugin-dir DIR] [--dumps N] "
				"[--devices D (1..9999)] [--conns C] [--window W] [--batch-dumps B] [--batch-delay-ms MS] "
				"[--latency-rate DUMPS_PER_S] [--timeout S] [--keep]\n");
		return 2;
	}
	if (ndev > ndumps)
		ndev = ndumps;
	if (nconn > ndev)
		nconn = ndev;
	if (!plugin_dir && !getenv("CRASHGATE_PLUGIN_DIR"))
		fprintf(stderr, "bench_e2e: neither --plugin-dir nor CRASHGATE_PLUGIN_DIR: crashgated looks for its "
				"plugins where the build installs them\n");
	signal(SIGPIPE, SIG_IGN);

	dumps = calloc((size_t)ndumps, sizeof *dumps);
	conns = calloc((size_t)nconn, sizeof *conns);
	if (!dumps || !conns)
		fail("out of memory");
	/* Dump i comes from device i % D, which sends over connection dev % C. */
	for (long c = 0; c < nconn; c++) {
		pthread_mutex_init(&conns[c].lock, NULL);
		conns[c].list = malloc(sizeof(long) * (size_t)(ndumps / nconn + 1));
		if (!conns[c].list)
			fail("out of memory");
	}
	for (long i = 0; i < ndumps; i++) {
		struct conn *cn = &conns[(i % ndev) % nconn];
		dumps[i].dev = i % ndev;
		dumps[i].conn = cn;
		cn->list[cn->nlist++] = i;
	}
	http_start();
	for (long c = 0; c < nconn; c++) {
		char id[64];
		snprintf(id, sizeof id, "bench-e2e-%ld-%ld", (long)getpid(), c);
		conn_open(&conns[c], id, NULL);
	}
	char id[64];
	snprintf(id, sizeof id, "bench-e2e-%ld-acks", (long)getpid());
	conn_open(&acks, id, on_ack);
	for (long c = 0; c < nconn; c++)
		conn_wait(&conns[c], "a device connection");
	conn_wait(&acks, "the ack connection");
	atexit(gw_stop); /* also when a failure exits mid-run */

	printf("e2e: %ld dumps of %d KiB (%.1f MB, random bytes, format raw) from %ld devices, %d chunks of %d B at "
	       "QoS 1 over %ld connections (at most %ld chunks in flight on each); the upstream is an HTTP server on "
	       "127.0.0.1:%d in this process; %ld CPUs shared by all\n",
	       ndumps, DUMP_BYTES / 1024, MB(ndumps), ndev, DUMP_CHUNKS, CHUNK_BYTES, nconn, window, http_port,
	       sysconf(_SC_NPROCESSORS_ONLN));
	printf("  latency of a dump: from the moment its device handed the last chunk to its MQTT client (\"last chunk "
	       "sent\") to its complete ack (seen on the devices' side) or to the moment the POST carrying it had "
	       "arrived whole at the upstream\n");
	fflush(stdout);

	char http_url[128], up[1024], t_b1[200], t_b2[200], t_al[200];
	snprintf(http_url, sizeof http_url, "http://127.0.0.1:%d/ingest", http_port);

	/* A: ingest only, as fast as the devices can: the throughput baseline. */
	struct result a = { .title = "A. ingest only, devices as fast as they can (upstream kind file, default batches)",
			    .kind = INGEST };
	run(&a, NULL);
	print_run(&a, &a);

	/* B2: end to end, batched, as fast as the devices can. */
	snprintf(t_b2, sizeof t_b2, "B2. end to end, http, batched (max_dumps %ld, max_bytes 4MiB, max_delay %ldms), "
		 "devices as fast as they can", batch_dumps, batch_delay_ms);
	struct result b2 = { .title = t_b2, .kind = E2E, .max_dumps = batch_dumps };
	snprintf(up, sizeof up, "{ name: bench-http, kind: http, url: \"%s\", batch: { max_dumps: %ld, max_bytes: 4MiB, "
		 "max_delay: %ldms } }", http_url, batch_dumps, batch_delay_ms);
	run(&b2, up);
	print_run(&b2, &a);
	printf("    (the latency of a batched dump includes its wait for the batch to fill, at most max_delay %ld ms "
	       "after the batch's oldest dump was stored; crashgated does not expose that wait per dump)\n",
	       batch_delay_ms);

	/* Latency runs: paced below what ingest sustained, so that a dump does
	 * not wait behind a backlog; half the rate of run A unless given. */
	double rate = latency_rate > 0 ? (double)latency_rate : 0.5 * ndumps / a.t_stored;
	if (rate < 1)
		rate = 1;
	snprintf(t_al, sizeof t_al, "A'. ingest only, paced at %.0f dumps/s (%s)", rate,
		 latency_rate > 0 ? "--latency-rate" : "half the rate of run A");
	struct result al = { .title = t_al, .kind = INGEST, .rate = rate };
	run(&al, NULL);
	print_run(&al, &a);

	snprintf(t_b1, sizeof t_b1, "B1. end to end, http, no batching (max_dumps 1, max_delay 0ms), paced at %.0f "
		 "dumps/s", rate);
	struct result b1 = { .title = t_b1, .kind = E2E, .max_dumps = 1, .rate = rate };
	snprintf(up, sizeof up, "{ name: bench-http, kind: http, url: \"%s\", batch: { max_dumps: 1, max_bytes: 4MiB, "
		 "max_delay: 0ms } }", http_url);
	run(&b1, up);
	print_run(&b1, &a);
	printf("    (no batch delay, by configuration: every dump is POSTed alone as soon as the forwarder sees it)\n");

	printf("  summary, same run, same broker:\n");
	printf("    throughput, devices as fast as they can             dumps/s     MB/s\n");
	printf("      A.  ingest only: stored                         %9.0f  %7.1f\n", ndumps / a.t_stored,
	       MB(ndumps) / a.t_stored);
	printf("      B2. end to end, batched: received upstream      %9.0f  %7.1f   %.2f x ingest only\n",
	       ndumps / b2.t_recv, MB(ndumps) / b2.t_recv, a.t_stored / b2.t_recv);
	printf("    latency from a dump's last chunk sent, paced at %.0f dumps/s p50        p99\n", rate);
	printf("      A'. ingest only: to the complete ack            %8.1f ms %8.1f ms\n", al.ack.p50, al.ack.p99);
	printf("      B1. end to end, no batch delay: to the receipt  %8.1f ms %8.1f ms\n", b1.recv.p50, b1.recv.p99);
	printf("      (counted from the last chunk's PUBACK instead: A' %.1f / %.1f ms, B1 %.1f / %.1f ms)\n",
	       al.ack_pa.p50, al.ack_pa.p99, b1.recv_pa.p50, b1.recv_pa.p99);
	printf("      (B2 at full speed, batch wait and backlog included: %.1f / %.1f ms)\n", b2.recv.p50, b2.recv.p99);
	if (al.puback.p50 > al.ack.p50)
		printf("      NOTE: a device's PUBACK arrived later (p50 %.1f ms) than crashgated's complete ack "
		       "(p50 %.1f ms): the broker holds back small packets (Nagle; likely set_tcp_nodelay off in the broker's "
		       "configuration), which is why latencies count from the last chunk sent, not from its PUBACK\n",
		       al.puback.p50, al.ack.p50);
	if (b1.t_recv > b1.t_pub + 1.0)
		printf("      WARNING: B1's last dump arrived %.1f s after the last chunk: the paced rate exceeds what "
		       "unbatched forwarding sustains, so its latency includes a backlog (try --latency-rate)\n",
		       b1.t_recv - b1.t_pub);
	fflush(stdout);

	for (long c = 0; c < nconn; c++)
		conn_close(&conns[c].c);
	conn_close(&acks.c);
	MHD_stop_daemon(httpd);
	return 0;
}
