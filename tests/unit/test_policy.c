/*
 * Policy (SPEC §5, §6) through the reassembler: groups and consent, the
 * consent signal, collection windows and quotas, duplicate throttling at
 * completion and at chunk 0, content deduplication, regions and retention.
 *
 * Real RocksDB in a temp dir; the configuration comes from YAML like an
 * operator's; both clocks are injected (monotonic for intervals, wall for
 * recorded times, windows and retention), so nothing sleeps. Every test that
 * claims persistence closes the reassembler and the store and reopens them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "policy.h"
#include "reassembly.h"
#include "store.h"

#define MAX_ACKS     512
#define MAX_CONSENTS 128
#define MAX_CFGS     8
#define HOUR_MS      (3600 * 1000LL)
#define DAY_MS       (24 * HOUR_MS)

struct rec_ack {
	char device[CG_DEVICE_ID_MAX + 1];
	uint64_t dump_id;
	uint32_t status;
	char reason[CG_PROTO_MAX_REASON + 1];
};

struct rec_consent {
	char device[CG_DEVICE_ID_MAX + 1];
	bool enabled;
	bool has_group;
	char group[CG_PROTO_MAX_GROUP + 1];
	uint64_t issued_at;
	uint64_t valid_for;
};

struct fx {
	char dir[64];
	struct cg_store *st;
	struct cg_reasm *rs;
	struct cg_config *cfgs[MAX_CFGS];  /* every configuration loaded, freed at teardown */
	size_t ncfgs;
	const struct cg_config *cfg;       /* the one in force */
	int64_t mono;                      /* monotonic ms */
	int64_t wall;                      /* unix ms */
	struct rec_ack acks[MAX_ACKS];
	size_t nacks;
	struct rec_consent consents[MAX_CONSENTS];
	size_t nconsents;
};

/* ---- fixture ---- */

static int64_t mono_clock(void *ctx)
{
	return ((struct fx *)ctx)->mono;
}

static int64_t wall_clock(void *ctx)
{
	return ((struct fx *)ctx)->wall;
}

static void ack_sink(void *ctx, const char *device, const uint8_t *msg, size_t len)
{
	struct fx *f = ctx;
	struct cg_range miss[64];
	struct cg_ack d = { .missing = miss, .missing_cap = 64 };
	assert_true(f->nacks < MAX_ACKS);
	assert_int_equal(cg_ack_decode(msg, len, &d), CG_OK);
	struct rec_ack *a = &f->acks[f->nacks++];
	snprintf(a->device, sizeof a->device, "%s", device);
	a->dump_id = d.dump_id;
	a->status = d.status;
	memcpy(a->reason, d.reason ? d.reason : "", d.reason ? d.reason_len : 0);
	a->reason[d.reason ? d.reason_len : 0] = '\0';
}

static void consent_sink(void *ctx, const char *device, const uint8_t *msg, size_t len)
{
	struct fx *f = ctx;
	struct cg_consent c;
	uint32_t type = 0;
	assert_true(f->nconsents < MAX_CONSENTS);
	assert_int_equal(cg_msg_type(msg, len, &type), CG_OK);
	assert_int_equal(type, CG_MSG_CONSENT);
	assert_int_equal(cg_consent_decode(msg, len, &c), CG_OK);
	struct rec_consent *r = &f->consents[f->nconsents++];
	memset(r, 0, sizeof *r);
	snprintf(r->device, sizeof r->device, "%s", device);
	r->enabled = c.enabled;
	r->issued_at = c.issued_at;
	r->valid_for = c.valid_for;
	r->has_group = (c.present & CG_HAS_GROUP) != 0;
	if (r->has_group) {
		assert_true(c.group_len <= CG_PROTO_MAX_GROUP);
		memcpy(r->group, c.group, c.group_len);
	}
}

/* Everything but the policy sections; each test appends its own. */
static const char base_yaml[] =
	"gateway: { id: gw-test, data_dir: /tmp/cg-policy-unused }\n"
	"limits: { max_dump_bytes: 1MiB, max_chunk_bytes: 4KiB, reassembly_timeout: 10m,\n"
	"          max_open_dumps: 64, max_open_dumps_per_device: 4, max_store_bytes: 64MiB }\n"
	"default_region: US\n"
	"regions:\n"
	"  EU: { upstreams: [ { name: eu-up, kind: file, path: /tmp/cg-policy-eu } ] }\n"
	"  US: { upstreams: [ { name: us-up, kind: file, path: /tmp/cg-policy-us } ] }\n";

static const struct cg_config *load_cfg(struct fx *f, const char *policy)
{
	char yaml[4096], err[512] = "";
	struct cg_config *c = NULL;
	int n = snprintf(yaml, sizeof yaml, "%s%s", base_yaml, policy);
	assert_true(n > 0 && (size_t)n < sizeof yaml);
	int rc = cg_config_load_string("policy.yaml", yaml, (size_t)n, &c, err, sizeof err);
	if (rc != 0)
		print_error("configuration refused: %s\n", err);
	assert_int_equal(rc, 0);
	assert_true(f->ncfgs < MAX_CFGS);
	f->cfgs[f->ncfgs++] = c;
	return c;
}

static void fx_start(struct fx *f)
{
	char err[256];
	assert_non_null(f->cfg);
	assert_int_equal(cg_store_open(f->dir, &f->st, err, sizeof err), CG_OK);
	struct cg_reasm_opts o = {
		.gateway_id = "gw-test",
		.max_dump_bytes = f->cfg->limits.max_dump_bytes,
		.max_chunk_bytes = f->cfg->limits.max_chunk_bytes,
		.reassembly_timeout_ms = f->cfg->limits.reassembly_timeout_ms,
		.max_store_bytes = f->cfg->limits.max_store_bytes,
		.max_open_dumps = f->cfg->limits.max_open_dumps,
		.max_open_dumps_per_device = f->cfg->limits.max_open_dumps_per_device,
		.cfg = f->cfg,
	};
	struct cg_ack_sink s = { .send = ack_sink, .consent = consent_sink, .ctx = f };
	assert_int_equal(cg_reasm_create(&o, f->st, &s, mono_clock, f, &f->rs), CG_OK);
	cg_reasm_set_wall_clock(f->rs, wall_clock, f);
}

static void fx_stop(struct fx *f)
{
	if (f->rs)
		cg_reasm_destroy(f->rs);
	if (f->st)
		cg_store_close(f->st);
	f->rs = NULL;
	f->st = NULL;
}

/* Destroy the reassembler and close the store, then open both again over
 * the same directory: what is checked afterwards had to be persisted. */
static void fx_restart(struct fx *f)
{
	fx_stop(f);
	fx_start(f);
}

static void fx_begin(struct fx *f, const char *policy)
{
	f->cfg = load_cfg(f, policy);
	fx_start(f);
}

/* A reload (SIGHUP): the old configuration stays alive until teardown. */
static void fx_reload(struct fx *f, const char *policy)
{
	f->cfg = load_cfg(f, policy);
	cg_reasm_set_config(f->rs, f->cfg);
}

static int rm_entry(const char *p, const struct stat *s, int fl, struct FTW *w)
{
	(void)s, (void)fl, (void)w;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/cg-policy-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->mono = 5000000;
	f->wall = 1893456000000LL + 42 * DAY_MS;   /* 2030-02-12T00:00:00Z */
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	fx_stop(f);
	for (size_t i = 0; i < f->ncfgs; i++)
		cg_config_free(f->cfgs[i]);
	nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- dumps ---- */

/* Random bytes that no format detector claims (raw: the signature is a
 * content hash). */
static uint8_t *make_raw(size_t n, uint32_t seed)
{
	uint8_t *d = malloc(n);
	assert_non_null(d);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		d[i] = (uint8_t)(seed >> 16);
	}
	d[0] = 0xa5;
	return d;
}

static void put_le(uint8_t *b, size_t *n, uint64_t v, unsigned width)
{
	for (unsigned i = 0; i < width; i++)
		b[(*n)++] = (uint8_t)(v >> (8 * i));
}

/* A Zephyr core dump as tests/tools/mkzephyr.c writes it: header v2,
 * Cortex-M register block, then memory blocks whose bytes depend on fill
 * (same crash, other memory: same signature, other content). */
static uint8_t *make_zephyr(size_t size, uint32_t pc, uint32_t lr, uint32_t reason, uint32_t fill)
{
	uint8_t *b = calloc(1, size);
	size_t n = 0;
	assert_non_null(b);
	/* Header: magic, version 2, target 3 (Cortex-M), 2^5-bit pointers, flags, reason. */
	put_le(b, &n, 'Z', 1);
	put_le(b, &n, 'E', 1);
	put_le(b, &n, 2, 2);
	put_le(b, &n, 3, 2);
	put_le(b, &n, 5, 1);
	put_le(b, &n, 0, 1);
	put_le(b, &n, reason, 4);
	/* Register block v1: r0-r3 r12 lr pc xpsr sp. */
	put_le(b, &n, 'A', 1);
	put_le(b, &n, 1, 2);
	put_le(b, &n, 36, 2);
	uint32_t regs[9] = { 1, 2, 3, 4, 12, lr, pc, 0x61000000, 0x20001f80 };
	for (int i = 0; i < 9; i++)
		put_le(b, &n, regs[i], 4);
	uint32_t addr = 0x20000000;
	uint64_t x = (uint64_t)fill * 2654435761u + 1;
	while (n + 11 < size) {
		size_t room = size - n - 11, len = room > 4096 ? 4096 : room;
		put_le(b, &n, 'M', 1);
		put_le(b, &n, 1, 2);
		put_le(b, &n, addr, 4);
		put_le(b, &n, addr + (uint32_t)len, 4);
		for (size_t i = 0; i < len; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			b[n++] = (uint8_t)(x >> 56);
		}
		addr += (uint32_t)len;
	}
	return b;
}

static const uint8_t build_id[4] = { 0xde, 0xad, 0xbe, 0xef };

struct dump {
	const char *device;
	uint64_t id;
	const uint8_t *data;
	size_t size, csz;
	uint32_t n;
	uint32_t format;
};

static struct dump mk(const char *dev, uint64_t id, const uint8_t *data, size_t size, uint32_t format)
{
	struct dump d = { .device = dev, .id = id, .data = data, .size = size, .csz = 256,
			  .n = (uint32_t)((size + 255) / 256), .format = format };
	return d;
}

static void send_ord(struct fx *f, const struct dump *d, uint32_t ord)
{
	size_t off = (size_t)ord * d->csz;
	size_t len = d->size - off < d->csz ? d->size - off : d->csz;
	struct cg_chunk c = { .dump_id = d->id, .ordinal = ord, .content = d->data + off,
			      .content_len = len, .last = ord + 1 == d->n };
	if (ord == 0) {
		c.present |= CG_HAS_TOTAL_SIZE | CG_HAS_FORMAT | CG_HAS_BUILD_ID;
		c.total_size = d->size;
		c.format = d->format;
		c.build_id = build_id;
		c.build_id_len = sizeof build_id;
	}
	if (c.last) {
		c.present |= CG_HAS_CRC32;
		c.crc32 = cg_crc32(0, d->data, d->size);
	}
	uint8_t buf[1024];
	size_t n = 0;
	assert_int_equal(cg_chunk_encode(&c, 0, buf, sizeof buf, &n), CG_OK);
	assert_int_equal(cg_reasm_chunk(f->rs, d->device, buf, n), CG_OK);
}

/* Every chunk in order, then the group commit that releases final acks. */
static void send_all(struct fx *f, const struct dump *d)
{
	for (uint32_t i = 0; i < d->n; i++)
		send_ord(f, d, i);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
}

static void send_hello(struct fx *f, const char *device)
{
	struct cg_hello h = { .present = 0 };
	uint8_t buf[64];
	size_t n = 0;
	assert_int_equal(cg_hello_encode(&h, buf, sizeof buf, &n), CG_OK);
	assert_int_equal(cg_reasm_hello(f->rs, device, buf, n), CG_OK);
}

/* ---- what the device was told ---- */

static int acks_of(struct fx *f, const char *dev, uint64_t id, uint32_t status)
{
	int n = 0;
	for (size_t i = 0; i < f->nacks; i++)
		n += strcmp(f->acks[i].device, dev) == 0 && f->acks[i].dump_id == id &&
		     f->acks[i].status == status;
	return n;
}

/* The last answer about one dump; fails the test when there is none. */
static const struct rec_ack *last_ack_of(struct fx *f, const char *dev, uint64_t id)
{
	for (size_t i = f->nacks; i-- > 0;)
		if (strcmp(f->acks[i].device, dev) == 0 && f->acks[i].dump_id == id)
			return &f->acks[i];
	fail_msg("no answer for %s/%llu", dev, (unsigned long long)id);
	return NULL;
}

static int consents_of(struct fx *f, const char *dev)
{
	int n = 0;
	for (size_t i = 0; i < f->nconsents; i++)
		n += strcmp(f->consents[i].device, dev) == 0;
	return n;
}

static const struct rec_consent *last_consent_of(struct fx *f, const char *dev)
{
	for (size_t i = f->nconsents; i-- > 0;)
		if (strcmp(f->consents[i].device, dev) == 0)
			return &f->consents[i];
	fail_msg("no consent signal for %s", dev);
	return NULL;
}

/* ---- what the store holds ---- */

static int count_chunks_cb(void *ctx, uint32_t o, const uint8_t *d, size_t l)
{
	(void)o, (void)d, (void)l;
	(*(int *)ctx)++;
	return 0;
}

static int chunks_of(struct fx *f, const char *dev, uint64_t id)
{
	struct cg_dumpkey k;
	cg_dumpkey_make(&k, dev, strlen(dev), id);
	int n = 0;
	assert_int_equal(cg_store_each_chunk(f->st, &k, count_chunks_cb, &n), CG_OK);
	return n;
}

struct dev_count {
	const char *dev;
	int n;
};

static int open_cb(void *ctx, const struct cg_dumpkey *k, const struct cg_dump_record *rec)
{
	struct dev_count *c = ctx;
	(void)k;
	c->n += strcmp(rec->device, c->dev) == 0;
	return 0;
}

static int opens_of(struct fx *f, const char *dev)
{
	struct dev_count c = { dev, 0 };
	assert_int_equal(cg_store_scan_open(f->st, open_cb, &c), CG_OK);
	return c.n;
}

static int record_cb(void *ctx, const struct cg_dump_record *rec)
{
	struct dev_count *c = ctx;
	c->n += strcmp(rec->device, c->dev) == 0;
	return 0;
}

static int records_of(struct fx *f, const char *dev)
{
	struct dev_count c = { dev, 0 };
	assert_int_equal(cg_store_scan_records(f->st, record_cb, &c), CG_OK);
	return c.n;
}

/* The record a dump's index points at. */
static uint64_t record_of(struct fx *f, const char *dev, uint64_t id, struct cg_dump_record *rec)
{
	struct cg_dumpkey k;
	struct cg_index_entry ie;
	cg_dumpkey_make(&k, dev, strlen(dev), id);
	assert_int_equal(cg_store_index_get(f->st, &k, &ie), CG_OK);
	assert_true(ie.seq > 0);
	assert_int_equal(cg_store_get_record(f->st, ie.seq, rec), CG_OK);
	assert_int_equal(rec->seq, ie.seq);
	return ie.seq;
}

static void assert_body(struct fx *f, uint64_t seq, const struct dump *d)
{
	uint8_t *body = NULL;
	size_t len = 0;
	assert_int_equal(cg_store_get_body(f->st, seq, &body, &len), CG_OK);
	assert_int_equal(len, d->size);
	assert_memory_equal(body, d->data, d->size);
	free(body);
}

struct sig_list {
	int n;
	char sig[8][17];
	struct cg_sig_stats s[8];
};

static int sig_cb(void *ctx, const char *sig, const struct cg_sig_stats *s)
{
	struct sig_list *l = ctx;
	assert_true(l->n < 8);
	snprintf(l->sig[l->n], sizeof l->sig[l->n], "%s", sig);
	l->s[l->n] = *s;   /* only the counts are read; recent[] is copied whole */
	l->n++;
	return 0;
}

static struct sig_list *sigs(struct fx *f)
{
	static struct sig_list l;
	memset(&l, 0, sizeof l);
	assert_int_equal(cg_policy_scan_sigs(f->st, sig_cb, &l), CG_OK);
	return &l;
}

static struct cg_reasm_stats stats(struct fx *f)
{
	struct cg_reasm_stats s;
	cg_reasm_get_stats(f->rs, &s);
	return s;
}

/* ---- 1. groups and consent ---- */

static const char two_groups[] =
	"groups:\n"
	"  - { name: Lab/Off, devices: [\"off-*\"], crash_dumps: disabled }\n"
	"  - { name: Lab/On, devices: [\"on-*\"], crash_dumps: enabled }\n";

static void test_consent_required_stores_nothing(void **state)
{
	struct fx *f = *state;
	fx_begin(f, two_groups);
	uint8_t *data = make_raw(700, 1);
	struct dump off = mk("off-1", 1, data, 700, CG_FORMAT_RAW);
	struct dump stray = mk("stray-9", 1, data, 700, CG_FORMAT_RAW);
	struct cg_reasm_stats s0 = stats(f);

	/* Every chunk is answered (a second apart: answers about one dump are
	 * rate-limited) and none is written. */
	for (uint32_t i = 0; i < off.n; i++) {
		send_ord(f, &off, i);
		assert_int_equal(acks_of(f, "off-1", 1, CG_ACK_CONSENT_REQUIRED), (int)i + 1);
		assert_int_equal(chunks_of(f, "off-1", 1), 0);
		f->mono += 1000;
	}
	for (uint32_t i = 0; i < stray.n; i++) {
		send_ord(f, &stray, i);
		assert_int_equal(acks_of(f, "stray-9", 1, CG_ACK_CONSENT_REQUIRED), (int)i + 1);
		f->mono += 1000;
	}
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(acks_of(f, "off-1", 1, CG_ACK_COMPLETE), 0);
	assert_int_equal(acks_of(f, "stray-9", 1, CG_ACK_COMPLETE), 0);
	assert_non_null(strstr(last_ack_of(f, "off-1", 1)->reason, "consent"));
	assert_non_null(strstr(last_ack_of(f, "stray-9", 1)->reason, "consent"));

	struct cg_reasm_stats s = stats(f);
	assert_int_equal(s.chunks_stored, s0.chunks_stored);
	assert_int_equal(s.consent_refused, off.n + stray.n);
	assert_int_equal(s.open_dumps, 0);
	assert_int_equal(s.store_bytes, s0.store_bytes);
	assert_int_equal(s.dumps_completed, 0);
	for (int i = 0; i < 2; i++) {
		const char *dev = i ? "stray-9" : "off-1";
		assert_int_equal(chunks_of(f, dev, 1), 0);
		assert_int_equal(opens_of(f, dev), 0);
		assert_int_equal(records_of(f, dev), 0);
	}

	/* The consent signal: once, at first sight, with the group's answer. */
	assert_int_equal(consents_of(f, "off-1"), 1);
	const struct rec_consent *c = last_consent_of(f, "off-1");
	assert_false(c->enabled);
	assert_true(c->has_group);
	assert_string_equal(c->group, "Lab/Off");
	assert_int_equal(c->valid_for, f->cfg->consent.valid_for_ms / 1000);
	assert_int_equal(c->issued_at, f->wall / 1000);
	assert_int_equal(consents_of(f, "stray-9"), 1);
	c = last_consent_of(f, "stray-9");
	assert_false(c->enabled);
	assert_false(c->has_group);   /* no group matches and there is no `default` */

	/* A consenting group's device: enabled, and its dump is collected. */
	struct dump on = mk("on-1", 1, data, 700, CG_FORMAT_RAW);
	send_all(f, &on);
	assert_int_equal(last_ack_of(f, "on-1", 1)->status, CG_ACK_COMPLETE);
	assert_int_equal(consents_of(f, "on-1"), 1);
	c = last_consent_of(f, "on-1");
	assert_true(c->enabled);
	assert_string_equal(c->group, "Lab/On");
	struct cg_dump_record rec;
	uint64_t seq = record_of(f, "on-1", 1, &rec);
	assert_string_equal(rec.group, "Lab/On");
	assert_body(f, seq, &on);
	assert_int_equal(stats(f).chunks_stored, s0.chunks_stored + on.n);

	/* A hello is a sighting too: a new device gets its signal from it. */
	send_hello(f, "off-2");
	assert_int_equal(consents_of(f, "off-2"), 1);
	assert_false(last_consent_of(f, "off-2")->enabled);
	assert_int_equal(stats(f).devices_seen, 4);
	free(data);
}

static void test_default_group_takes_unmatched(void **state)
{
	struct fx *f = *state;
	fx_begin(f, "groups:\n"
		    "  - { name: Lab/Off, devices: [\"off-*\"], crash_dumps: disabled }\n"
		    "  - { name: default, crash_dumps: enabled }\n");
	uint8_t *data = make_raw(600, 2);
	struct dump stray = mk("stray-9", 3, data, 600, CG_FORMAT_RAW);
	send_all(f, &stray);
	assert_int_equal(last_ack_of(f, "stray-9", 3)->status, CG_ACK_COMPLETE);
	const struct rec_consent *c = last_consent_of(f, "stray-9");
	assert_true(c->enabled);
	assert_true(c->has_group);
	assert_string_equal(c->group, "default");
	struct cg_dump_record rec;
	uint64_t seq = record_of(f, "stray-9", 3, &rec);
	assert_string_equal(rec.group, "default");
	assert_string_equal(rec.region, "US");
	assert_body(f, seq, &stray);

	/* The first matching group wins over `default`, even a disabled one. */
	struct dump off = mk("off-1", 3, data, 600, CG_FORMAT_RAW);
	send_all(f, &off);
	assert_int_equal(last_ack_of(f, "off-1", 3)->status, CG_ACK_CONSENT_REQUIRED);
	assert_int_equal(acks_of(f, "off-1", 3, CG_ACK_COMPLETE), 0);
	assert_int_equal(chunks_of(f, "off-1", 3), 0);
	assert_false(last_consent_of(f, "off-1")->enabled);
	assert_string_equal(last_consent_of(f, "off-1")->group, "Lab/Off");
	free(data);
}

/* ---- 2. the consent signal over time and across reloads ---- */

static void test_consent_republished(void **state)
{
	struct fx *f = *state;
	const char *policy = "consent: { valid_for: 1h }\n"
			     "groups:\n"
			     "  - { name: Lab/Off, devices: [\"off-*\"], crash_dumps: disabled }\n"
			     "  - { name: Lab/On, devices: [\"on-*\"], crash_dumps: enabled }\n";
	fx_begin(f, policy);
	send_hello(f, "off-1");
	send_hello(f, "on-1");
	assert_int_equal(f->nconsents, 2);
	assert_int_equal(last_consent_of(f, "off-1")->valid_for, 3600);
	assert_false(last_consent_of(f, "off-1")->enabled);
	assert_true(last_consent_of(f, "on-1")->enabled);

	/* Seen again: no new signal; a tick before valid_for / 2: none either. */
	send_hello(f, "on-1");
	cg_reasm_tick(f->rs);
	assert_int_equal(f->nconsents, 2);
	f->mono += HOUR_MS / 2 - 1;
	f->wall += HOUR_MS / 2 - 1;
	cg_reasm_tick(f->rs);
	assert_int_equal(f->nconsents, 2);

	/* valid_for / 2 after the last one: both again, issued now. */
	f->mono += 1;
	f->wall += 1;
	cg_reasm_tick(f->rs);
	assert_int_equal(f->nconsents, 4);
	assert_int_equal(consents_of(f, "off-1"), 2);
	assert_int_equal(consents_of(f, "on-1"), 2);
	assert_int_equal(last_consent_of(f, "on-1")->issued_at, f->wall / 1000);
	assert_false(last_consent_of(f, "off-1")->enabled);
	assert_true(last_consent_of(f, "on-1")->enabled);
	cg_reasm_tick(f->rs);
	assert_int_equal(f->nconsents, 4);

	/* A reload that gives Lab/Off consent: every seen device gets the new
	 * state at the next tick, though valid_for / 2 has not passed. */
	f->mono += 1000;
	fx_reload(f, "consent: { valid_for: 1h }\n"
		     "groups:\n"
		     "  - { name: Lab/Off, devices: [\"off-*\"], crash_dumps: enabled }\n"
		     "  - { name: Lab/On, devices: [\"on-*\"], crash_dumps: enabled }\n");
	assert_int_equal(stats(f).config_generation, 2);
	assert_int_equal(f->nconsents, 4);
	cg_reasm_tick(f->rs);
	assert_int_equal(f->nconsents, 6);
	assert_true(last_consent_of(f, "off-1")->enabled);
	assert_string_equal(last_consent_of(f, "off-1")->group, "Lab/Off");
	assert_true(last_consent_of(f, "on-1")->enabled);
	cg_reasm_tick(f->rs);
	assert_int_equal(f->nconsents, 6);

	/* And it applies to dumps at once. */
	uint8_t *data = make_raw(700, 3);
	struct dump d = mk("off-1", 5, data, 700, CG_FORMAT_RAW);
	send_all(f, &d);
	assert_int_equal(last_ack_of(f, "off-1", 5)->status, CG_ACK_COMPLETE);

	/* Consent withdrawn while a dump is open: its next chunk is refused and
	 * what it had stored is dropped. */
	uint8_t *data2 = make_raw(700, 4);
	struct dump o = mk("on-1", 7, data2, 700, CG_FORMAT_RAW);
	uint64_t bytes_before = stats(f).store_bytes;
	send_ord(f, &o, 0);
	assert_int_equal(chunks_of(f, "on-1", 7), 1);
	assert_int_equal(opens_of(f, "on-1"), 1);
	assert_int_equal(stats(f).open_dumps, 1);
	fx_reload(f, "consent: { valid_for: 1h }\n"
		     "groups:\n"
		     "  - { name: Lab/Off, devices: [\"off-*\"], crash_dumps: enabled }\n"
		     "  - { name: Lab/On, devices: [\"on-*\"], crash_dumps: disabled }\n");
	send_ord(f, &o, 1);
	assert_int_equal(last_ack_of(f, "on-1", 7)->status, CG_ACK_CONSENT_REQUIRED);
	assert_int_equal(chunks_of(f, "on-1", 7), 0);
	assert_int_equal(opens_of(f, "on-1"), 0);
	struct cg_reasm_stats s = stats(f);
	assert_int_equal(s.open_dumps, 0);
	assert_int_equal(s.store_bytes, bytes_before);
	f->mono += 1000;
	send_ord(f, &o, 2);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(acks_of(f, "on-1", 7, CG_ACK_COMPLETE), 0);
	assert_int_equal(chunks_of(f, "on-1", 7), 0);
	assert_int_equal(records_of(f, "on-1"), 0);
	cg_reasm_tick(f->rs);
	assert_false(last_consent_of(f, "on-1")->enabled);
	assert_true(last_consent_of(f, "off-1")->enabled);

	/* Seen devices are persisted: after a restart both get their signal at
	 * the first tick, though neither has spoken since. */
	size_t before = f->nconsents;
	fx_restart(f);
	cg_reasm_tick(f->rs);
	assert_int_equal(f->nconsents, before + 2);
	assert_false(last_consent_of(f, "on-1")->enabled);
	assert_true(last_consent_of(f, "off-1")->enabled);
	free(data);
	free(data2);
}

/* ---- 3. collection window and quota ---- */

static void test_collection_window(void **state)
{
	struct fx *f = *state;
	fx_begin(f, "groups:\n"
		    "  - { name: Win, devices: [\"win-*\"], crash_dumps: enabled,\n"
		    "      collection: { start: 2030-01-01T00:00:00Z, stop: 2030-02-01T00:00:00Z } }\n");
	int64_t start, stop;
	assert_int_equal(cg_parse_time("2030-01-01T00:00:00Z", &start), 0);
	assert_int_equal(cg_parse_time("2030-02-01T00:00:00Z", &stop), 0);
	uint8_t *data[4];
	for (int i = 0; i < 4; i++)
		data[i] = make_raw(600, 10 + (uint32_t)i);

	f->wall = start - 1;
	struct dump early = mk("win-1", 1, data[0], 600, CG_FORMAT_RAW);
	send_all(f, &early);
	const struct rec_ack *a = last_ack_of(f, "win-1", 1);
	assert_int_equal(a->status, CG_ACK_REJECTED);
	assert_non_null(strstr(a->reason, "collection window"));
	assert_int_equal(chunks_of(f, "win-1", 1), 0);

	f->wall = stop;
	struct dump late = mk("win-1", 2, data[1], 600, CG_FORMAT_RAW);
	send_all(f, &late);
	a = last_ack_of(f, "win-1", 2);
	assert_int_equal(a->status, CG_ACK_REJECTED);
	assert_non_null(strstr(a->reason, "collection window"));
	assert_int_equal(chunks_of(f, "win-1", 2), 0);
	assert_int_equal(records_of(f, "win-1"), 0);
	assert_int_equal(stats(f).chunks_stored, 0);

	f->wall = start;
	struct dump in1 = mk("win-1", 3, data[2], 600, CG_FORMAT_RAW);
	send_all(f, &in1);
	assert_int_equal(last_ack_of(f, "win-1", 3)->status, CG_ACK_COMPLETE);
	f->wall = stop - 1;
	struct dump in2 = mk("win-1", 4, data[3], 600, CG_FORMAT_RAW);
	send_all(f, &in2);
	assert_int_equal(last_ack_of(f, "win-1", 4)->status, CG_ACK_COMPLETE);
	assert_int_equal(records_of(f, "win-1"), 2);
	for (int i = 0; i < 4; i++)
		free(data[i]);
}

static void test_quota_persists(void **state)
{
	struct fx *f = *state;
	fx_begin(f, "groups:\n"
		    "  - { name: Quota, devices: [\"q-*\"], crash_dumps: enabled,\n"
		    "      collection: { max_dumps: 2 } }\n"
		    "  - { name: Free, devices: [\"free-*\"], crash_dumps: enabled }\n");
	uint8_t *data[6];
	for (int i = 0; i < 6; i++)
		data[i] = make_raw(600, 20 + (uint32_t)i);

	struct dump d1 = mk("q-1", 1, data[0], 600, CG_FORMAT_RAW);
	struct dump d2 = mk("q-2", 1, data[1], 600, CG_FORMAT_RAW);
	struct dump d3 = mk("q-1", 2, data[2], 600, CG_FORMAT_RAW);
	send_all(f, &d1);
	send_all(f, &d2);
	assert_int_equal(last_ack_of(f, "q-1", 1)->status, CG_ACK_COMPLETE);
	assert_int_equal(last_ack_of(f, "q-2", 1)->status, CG_ACK_COMPLETE);
	uint64_t stored = stats(f).chunks_stored;
	send_all(f, &d3);
	const struct rec_ack *a = last_ack_of(f, "q-1", 2);
	assert_int_equal(a->status, CG_ACK_REJECTED);
	assert_non_null(strstr(a->reason, "quota reached"));
	assert_int_equal(chunks_of(f, "q-1", 2), 0);
	assert_int_equal(stats(f).chunks_stored, stored);

	/* The quota is the group's: another group still collects. */
	struct dump other = mk("free-1", 1, data[3], 600, CG_FORMAT_RAW);
	send_all(f, &other);
	assert_int_equal(last_ack_of(f, "free-1", 1)->status, CG_ACK_COMPLETE);

	/* Counted across restarts. */
	fx_restart(f);
	struct dump d4 = mk("q-3", 1, data[4], 600, CG_FORMAT_RAW);
	send_all(f, &d4);
	a = last_ack_of(f, "q-3", 1);
	assert_int_equal(a->status, CG_ACK_REJECTED);
	assert_non_null(strstr(a->reason, "quota reached"));
	assert_int_equal(chunks_of(f, "q-3", 1), 0);
	assert_int_equal(records_of(f, "q-3"), 0);
	assert_int_equal(records_of(f, "q-1") + records_of(f, "q-2"), 2);
	for (int i = 0; i < 6; i++)
		free(data[i]);
}

/* Dumps being received count against the quota: two open dumps fill a
 * quota of two, so a third cannot start. */
static void test_quota_counts_open_dumps(void **state)
{
	struct fx *f = *state;
	fx_begin(f, "groups:\n"
		    "  - { name: Quota, devices: [\"q-*\"], crash_dumps: enabled,\n"
		    "      collection: { max_dumps: 2 } }\n");
	uint8_t *data[3];
	for (int i = 0; i < 3; i++)
		data[i] = make_raw(600, 30 + (uint32_t)i);
	struct dump d[3] = { mk("q-1", 1, data[0], 600, CG_FORMAT_RAW),
			     mk("q-2", 1, data[1], 600, CG_FORMAT_RAW),
			     mk("q-3", 1, data[2], 600, CG_FORMAT_RAW) };
	send_ord(f, &d[0], 0);
	send_ord(f, &d[1], 0);
	send_ord(f, &d[2], 0);
	const struct rec_ack *a = last_ack_of(f, "q-3", 1);
	assert_int_equal(a->status, CG_ACK_REJECTED);
	assert_non_null(strstr(a->reason, "quota reached"));
	assert_int_equal(chunks_of(f, "q-3", 1), 0);
	for (int i = 0; i < 2; i++)
		for (uint32_t o = 1; o < d[i].n; o++)
			send_ord(f, &d[i], o);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(last_ack_of(f, "q-1", 1)->status, CG_ACK_COMPLETE);
	assert_int_equal(last_ack_of(f, "q-2", 1)->status, CG_ACK_COMPLETE);
	for (int i = 0; i < 3; i++)
		free(data[i]);
}

/* ---- 4. throttling at completion ---- */

static const char throttle_2_per_hour[] =
	"throttle: { max_identical: 2, window: 1h }\n"
	"groups:\n"
	"  - { name: All, devices: [\"*\"], crash_dumps: enabled }\n";

static void test_throttle_at_completion(void **state)
{
	struct fx *f = *state;
	fx_begin(f, throttle_2_per_hour);
	int64_t t0 = f->wall;
	uint8_t *data = make_raw(700, 40);
	struct dump a = mk("dev-a", 1, data, 700, CG_FORMAT_RAW);
	struct dump b = mk("dev-b", 1, data, 700, CG_FORMAT_RAW);
	struct dump c = mk("dev-c", 1, data, 700, CG_FORMAT_RAW);
	send_all(f, &a);
	send_all(f, &b);
	assert_int_equal(last_ack_of(f, "dev-a", 1)->status, CG_ACK_COMPLETE);
	assert_int_equal(last_ack_of(f, "dev-b", 1)->status, CG_ACK_COMPLETE);
	struct cg_dump_record ra, rb, rc;
	uint64_t sa = record_of(f, "dev-a", 1, &ra);
	uint64_t sb = record_of(f, "dev-b", 1, &rb);
	assert_true(sa != sb);
	assert_int_equal(strlen(ra.signature), 16);
	assert_string_equal(ra.signature, rb.signature);
	assert_body(f, sb, &b);

	/* The third identical crash within the window: counted, not stored. */
	uint64_t bytes = stats(f).store_bytes;
	for (uint32_t i = 0; i < c.n; i++)
		send_ord(f, &c, i);
	/* Answered at once: `throttled` reports nothing the gateway keeps. */
	assert_int_equal(acks_of(f, "dev-c", 1, CG_ACK_THROTTLED), 1);
	assert_int_equal(last_ack_of(f, "dev-c", 1)->status, CG_ACK_THROTTLED);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(acks_of(f, "dev-c", 1, CG_ACK_COMPLETE), 0);
	assert_int_equal(chunks_of(f, "dev-c", 1), 0);
	struct cg_reasm_stats s = stats(f);
	assert_int_equal(s.store_bytes, bytes);
	assert_int_equal(s.dumps_throttled, 1);
	assert_int_equal(s.dumps_throttled_early, 0);
	assert_int_equal(s.open_dumps, 0);
	uint64_t sc = record_of(f, "dev-c", 1, &rc);
	assert_int_equal(rc.status, CG_DUMP_THROTTLED);
	assert_string_equal(rc.signature, ra.signature);
	uint8_t *body = NULL;
	size_t blen = 0;
	assert_int_not_equal(cg_store_get_body(f->st, sc, &body, &blen), CG_OK);
	struct sig_list *l = sigs(f);
	assert_int_equal(l->n, 1);
	assert_string_equal(l->sig[0], ra.signature);
	assert_int_equal(l->s[0].stored, 2);
	assert_int_equal(l->s[0].throttled, 1);

	/* Resent: answered again, still nothing stored. */
	f->mono += 1000;
	send_ord(f, &c, 0);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(acks_of(f, "dev-c", 1, CG_ACK_THROTTLED), 2);
	assert_int_equal(chunks_of(f, "dev-c", 1), 0);

	/* The window and the counts survive a restart. */
	fx_restart(f);
	f->wall = t0 + HOUR_MS / 2;
	struct dump d = mk("dev-d", 1, data, 700, CG_FORMAT_RAW);
	send_all(f, &d);
	assert_int_equal(last_ack_of(f, "dev-d", 1)->status, CG_ACK_THROTTLED);
	assert_int_equal(chunks_of(f, "dev-d", 1), 0);
	l = sigs(f);
	assert_int_equal(l->n, 1);
	assert_int_equal(l->s[0].stored, 2);
	assert_int_equal(l->s[0].throttled, 2);

	/* Once the first two have left the window, the next is stored. */
	f->wall = t0 + HOUR_MS;
	struct dump e = mk("dev-e", 1, data, 700, CG_FORMAT_RAW);
	send_all(f, &e);
	assert_int_equal(last_ack_of(f, "dev-e", 1)->status, CG_ACK_COMPLETE);
	struct cg_dump_record re;
	assert_body(f, record_of(f, "dev-e", 1, &re), &e);
	assert_int_equal(re.status, CG_DUMP_STORED);

	fx_restart(f);
	l = sigs(f);
	assert_int_equal(l->n, 1);
	assert_int_equal(l->s[0].stored, 3);
	assert_int_equal(l->s[0].throttled, 2);
	assert_int_equal(l->s[0].first_seen_ms, t0);
	assert_int_equal(l->s[0].last_seen_ms, t0 + HOUR_MS);
	free(data);
}

/* ---- 5. throttling at chunk 0 (Zephyr) ---- */

static const char throttle_1[] =
	"throttle: { max_identical: 1, window: 24h }\n"
	"groups:\n"
	"  - { name: All, devices: [\"*\"], crash_dumps: enabled }\n";

static void test_throttle_early_zephyr(void **state)
{
	struct fx *f = *state;
	fx_begin(f, throttle_1);
	uint8_t *za = make_zephyr(1024, 0x0800123c, 0x08000f11, 0, 1);
	uint8_t *zb = make_zephyr(1024, 0x0800123c, 0x08000f11, 0, 2);
	assert_memory_not_equal(za, zb, 1024);
	struct dump a = mk("zephyr-a", 1, za, 1024, CG_FORMAT_ZEPHYR);
	struct dump b = mk("zephyr-b", 1, zb, 1024, CG_FORMAT_ZEPHYR);
	send_all(f, &a);
	assert_int_equal(last_ack_of(f, "zephyr-a", 1)->status, CG_ACK_COMPLETE);
	struct cg_dump_record ra, rb;
	record_of(f, "zephyr-a", 1, &ra);
	assert_true(ra.has_crash);
	assert_int_equal(ra.crash.format, CG_FORMAT_ZEPHYR);
	assert_int_equal(ra.crash.pc, 0x0800123c);
	uint64_t stored = stats(f).chunks_stored;
	assert_int_equal(stored, a.n);

	/* The same crash from another device: refused at its first chunk. */
	send_ord(f, &b, 0);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(last_ack_of(f, "zephyr-b", 1)->status, CG_ACK_THROTTLED);
	struct cg_reasm_stats s = stats(f);
	assert_int_equal(s.dumps_throttled_early, 1);
	assert_int_equal(s.dumps_throttled, 1);
	assert_int_equal(s.chunks_stored, stored);
	assert_int_equal(s.open_dumps, 0);
	assert_int_equal(chunks_of(f, "zephyr-b", 1), 0);
	record_of(f, "zephyr-b", 1, &rb);
	assert_int_equal(rb.status, CG_DUMP_THROTTLED);
	/* Decided from chunk 0, the signature is the full dump's. */
	assert_string_equal(rb.signature, ra.signature);

	/* The device keeps sending: answered, nothing stored. */
	for (uint32_t i = 1; i < b.n; i++) {
		f->mono += 1000;
		send_ord(f, &b, i);
	}
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(acks_of(f, "zephyr-b", 1, CG_ACK_COMPLETE), 0);
	assert_int_equal(last_ack_of(f, "zephyr-b", 1)->status, CG_ACK_THROTTLED);
	assert_int_equal(chunks_of(f, "zephyr-b", 1), 0);
	assert_int_equal(stats(f).chunks_stored, stored);
	struct sig_list *l = sigs(f);
	assert_int_equal(l->n, 1);
	assert_string_equal(l->sig[0], ra.signature);
	assert_int_equal(l->s[0].stored, 1);
	assert_int_equal(l->s[0].throttled, 1);

	/* Another crash (other PC) is not affected. */
	uint8_t *zc = make_zephyr(1024, 0x08002000, 0x08000f11, 0, 3);
	struct dump c = mk("zephyr-b", 2, zc, 1024, CG_FORMAT_ZEPHYR);
	send_all(f, &c);
	assert_int_equal(last_ack_of(f, "zephyr-b", 2)->status, CG_ACK_COMPLETE);
	free(za);
	free(zb);
	free(zc);
}

static void test_throttle_early_concurrent(void **state)
{
	struct fx *f = *state;
	fx_begin(f, throttle_1);
	uint8_t *z[4];
	for (int i = 0; i < 4; i++)
		z[i] = make_zephyr(1024, 0x08004444, 0x08000f11, 3, 10 + (uint32_t)i);
	struct dump a = mk("zephyr-a", 1, z[0], 1024, CG_FORMAT_ZEPHYR);
	struct dump b = mk("zephyr-b", 1, z[1], 1024, CG_FORMAT_ZEPHYR);

	/* A opens the crash; before it completes, B starts the same one. */
	send_ord(f, &a, 0);
	send_ord(f, &b, 0);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(last_ack_of(f, "zephyr-b", 1)->status, CG_ACK_THROTTLED);
	assert_int_equal(stats(f).dumps_throttled_early, 1);
	assert_int_equal(chunks_of(f, "zephyr-b", 1), 0);
	assert_int_equal(chunks_of(f, "zephyr-a", 1), 1);

	/* A, admitted, completes and is stored. */
	for (uint32_t i = 1; i < a.n; i++)
		send_ord(f, &a, i);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(last_ack_of(f, "zephyr-a", 1)->status, CG_ACK_COMPLETE);
	struct cg_dump_record ra;
	assert_body(f, record_of(f, "zephyr-a", 1, &ra), &a);
	struct sig_list *l = sigs(f);
	assert_int_equal(l->n, 1);
	assert_int_equal(l->s[0].stored, 1);
	assert_int_equal(l->s[0].throttled, 1);
	free(z[0]);
	free(z[1]);

	/* An admitted dump that goes away gives its place back; one that
	 * survives a restart keeps it. */
	uint8_t *y[3];
	for (int i = 0; i < 3; i++)
		y[i] = make_zephyr(1024, 0x08005555, 0x08000f11, 3, 20 + (uint32_t)i);
	struct dump c = mk("zephyr-c", 1, y[0], 1024, CG_FORMAT_ZEPHYR);
	struct dump d = mk("zephyr-d", 1, y[1], 1024, CG_FORMAT_ZEPHYR);
	struct dump e = mk("zephyr-e", 1, y[2], 1024, CG_FORMAT_ZEPHYR);
	send_ord(f, &c, 0);
	f->mono += (int64_t)f->cfg->limits.reassembly_timeout_ms;
	cg_reasm_tick(f->rs);
	assert_int_equal(stats(f).dumps_expired, 1);
	send_ord(f, &d, 0);
	assert_int_equal(chunks_of(f, "zephyr-d", 1), 1);
	fx_restart(f);
	send_ord(f, &e, 0);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(last_ack_of(f, "zephyr-e", 1)->status, CG_ACK_THROTTLED);
	assert_int_equal(chunks_of(f, "zephyr-e", 1), 0);
	for (uint32_t i = 1; i < d.n; i++)
		send_ord(f, &d, i);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(last_ack_of(f, "zephyr-d", 1)->status, CG_ACK_COMPLETE);
	for (int i = 0; i < 3; i++)
		free(y[i]);
	free(z[2]);
	free(z[3]);
}

/* ---- 6. content deduplication ---- */

static bool indexed(struct fx *f, const char *dev, uint64_t id);

static void test_content_dedup(void **state)
{
	struct fx *f = *state;
	fx_begin(f, "throttle: { max_identical: 5, window: 1h }\n"
		    "groups:\n"
		    "  - { name: All, devices: [\"*\"], crash_dumps: enabled }\n");
	uint8_t *data = make_raw(900, 50);
	struct dump d1 = mk("dev-1", 100, data, 900, CG_FORMAT_RAW);
	struct dump d2 = mk("dev-1", 200, data, 900, CG_FORMAT_RAW);
	send_all(f, &d1);
	uint64_t bytes = stats(f).store_bytes;
	send_all(f, &d2);
	assert_int_equal(last_ack_of(f, "dev-1", 100)->status, CG_ACK_COMPLETE);
	assert_int_equal(last_ack_of(f, "dev-1", 200)->status, CG_ACK_COMPLETE);
	struct cg_dump_record r1, r2;
	uint64_t s1 = record_of(f, "dev-1", 100, &r1);
	uint64_t s2 = record_of(f, "dev-1", 200, &r2);
	assert_int_equal(s1, s2);                   /* the second points at the first */
	assert_int_equal(records_of(f, "dev-1"), 1);
	assert_int_equal(chunks_of(f, "dev-1", 100), d1.n);
	assert_int_equal(chunks_of(f, "dev-1", 200), 0);
	assert_body(f, s1, &d1);
	struct cg_reasm_stats s = stats(f);
	assert_int_equal(s.dumps_deduplicated, 1);
	assert_int_equal(s.store_bytes, bytes);
	assert_int_equal(s.open_dumps, 0);

	/* Stored once means one record, also after a restart. */
	fx_restart(f);
	assert_int_equal(records_of(f, "dev-1"), 1);
	assert_int_equal(stats(f).store_bytes, bytes);

	/* Only the same device's content is its own dump again. */
	struct dump other = mk("dev-2", 100, data, 900, CG_FORMAT_RAW);
	send_all(f, &other);
	assert_int_equal(last_ack_of(f, "dev-2", 100)->status, CG_ACK_COMPLETE);
	assert_int_equal(records_of(f, "dev-2"), 1);
	assert_int_equal(chunks_of(f, "dev-2", 100), other.n);

	/* When retention deletes the record, the duplicate's index entry that
	 * points at it goes too (default retention: 29 d). */
	assert_true(indexed(f, "dev-1", 200));
	f->wall += 30ll * 24 * 3600 * 1000;
	cg_reasm_retention(f->rs);
	assert_false(indexed(f, "dev-1", 100));
	assert_false(indexed(f, "dev-1", 200));
	free(data);
}

/*
 * A device that draws a new dump id per attempt (Spotflow) sends the same
 * dump again: answered `complete` and stored once (SPEC §3), even when the
 * crash's throttle window is full and the dump is a Zephyr dump whose
 * signature is known at chunk 0. The resend is not another occurrence.
 */
static void test_resend_under_new_id_not_throttled(void **state)
{
	struct fx *f = *state;
	fx_begin(f, throttle_1);
	uint8_t *z = make_zephyr(1024, 0x08007777, 0x08000f11, 0, 1);
	struct dump d1 = mk("zephyr-a", 1, z, 1024, CG_FORMAT_ZEPHYR);
	struct dump d2 = mk("zephyr-a", 2, z, 1024, CG_FORMAT_ZEPHYR);
	send_all(f, &d1);
	assert_int_equal(last_ack_of(f, "zephyr-a", 1)->status, CG_ACK_COMPLETE);
	send_all(f, &d2);
	assert_int_equal(last_ack_of(f, "zephyr-a", 2)->status, CG_ACK_COMPLETE);
	assert_int_equal(acks_of(f, "zephyr-a", 2, CG_ACK_THROTTLED), 0);
	assert_int_equal(records_of(f, "zephyr-a"), 1);
	struct cg_dump_record r1, r2;
	assert_int_equal(record_of(f, "zephyr-a", 1, &r1), record_of(f, "zephyr-a", 2, &r2));
	struct sig_list *l = sigs(f);
	assert_int_equal(l->n, 1);
	assert_int_equal(l->s[0].stored, 1);
	assert_int_equal(l->s[0].throttled, 0);

	/* A genuine repeat of the crash on the same device is still throttled:
	 * other memory, at chunk 0; the same first chunk but another tail, at
	 * completion. Neither is stored. */
	uint8_t *z3 = make_zephyr(1024, 0x08007777, 0x08000f11, 0, 9);
	uint8_t *z4 = malloc(1024);
	assert_non_null(z4);
	memcpy(z4, z, 1024);
	z4[1000] ^= 0xff;
	struct dump d3 = mk("zephyr-a", 3, z3, 1024, CG_FORMAT_ZEPHYR);
	struct dump d4 = mk("zephyr-a", 4, z4, 1024, CG_FORMAT_ZEPHYR);
	send_all(f, &d3);
	assert_int_equal(last_ack_of(f, "zephyr-a", 3)->status, CG_ACK_THROTTLED);
	assert_int_equal(stats(f).dumps_throttled_early, 1);
	send_all(f, &d4);
	assert_int_equal(last_ack_of(f, "zephyr-a", 4)->status, CG_ACK_THROTTLED);
	assert_int_equal(chunks_of(f, "zephyr-a", 4), 0);
	struct cg_dump_record r4;
	record_of(f, "zephyr-a", 4, &r4);
	assert_int_equal(r4.status, CG_DUMP_THROTTLED);
	l = sigs(f);
	assert_int_equal(l->s[0].stored, 1);
	assert_int_equal(l->s[0].throttled, 2);
	assert_int_equal(records_of(f, "zephyr-a"), 3);   /* one stored, two throttled */

	/* An upload restarted under a new id while the first attempt is still
	 * open: the device's own attempt must not crowd out the second (the
	 * first may never complete, and the device erases a throttled dump).
	 * If the first does complete, it is the same content: stored once. */
	uint8_t *w = make_zephyr(1024, 0x08008888, 0x08000f11, 0, 2);
	struct dump b1 = mk("zephyr-b", 1, w, 1024, CG_FORMAT_ZEPHYR);
	struct dump b2 = mk("zephyr-b", 2, w, 1024, CG_FORMAT_ZEPHYR);
	send_ord(f, &b1, 0);
	send_ord(f, &b1, 1);
	send_all(f, &b2);
	assert_int_equal(last_ack_of(f, "zephyr-b", 2)->status, CG_ACK_COMPLETE);
	struct cg_dump_record rb;
	uint64_t sb = record_of(f, "zephyr-b", 2, &rb);
	assert_body(f, sb, &b2);
	for (uint32_t i = 2; i < b1.n; i++)
		send_ord(f, &b1, i);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(last_ack_of(f, "zephyr-b", 1)->status, CG_ACK_COMPLETE);
	assert_int_equal(record_of(f, "zephyr-b", 1, &rb), sb);
	assert_int_equal(records_of(f, "zephyr-b"), 1);

	/* The first attempt never completes: the second is stored all the same
	 * and the first expires. */
	uint8_t *v = make_zephyr(1024, 0x08009999, 0x08000f11, 0, 3);
	struct dump c1 = mk("zephyr-c", 1, v, 1024, CG_FORMAT_ZEPHYR);
	struct dump c2 = mk("zephyr-c", 2, v, 1024, CG_FORMAT_ZEPHYR);
	send_ord(f, &c1, 0);
	send_all(f, &c2);
	assert_int_equal(last_ack_of(f, "zephyr-c", 2)->status, CG_ACK_COMPLETE);
	f->mono += (int64_t)f->cfg->limits.reassembly_timeout_ms;
	cg_reasm_tick(f->rs);
	assert_int_equal(stats(f).open_dumps, 0);
	assert_int_equal(records_of(f, "zephyr-c"), 1);

	/* Two different dumps of one crash open on one device: the place the
	 * first held does not let it in once the second filled the window. */
	uint8_t *u1 = make_zephyr(1024, 0x0800aaaa, 0x08000f11, 0, 4);
	uint8_t *u2 = make_zephyr(1024, 0x0800aaaa, 0x08000f11, 0, 5);
	struct dump e1 = mk("zephyr-e", 1, u1, 1024, CG_FORMAT_ZEPHYR);
	struct dump e2 = mk("zephyr-e", 2, u2, 1024, CG_FORMAT_ZEPHYR);
	send_ord(f, &e1, 0);
	send_all(f, &e2);
	assert_int_equal(last_ack_of(f, "zephyr-e", 2)->status, CG_ACK_COMPLETE);
	for (uint32_t i = 1; i < e1.n; i++)
		send_ord(f, &e1, i);
	assert_int_equal(cg_reasm_commit(f->rs), CG_OK);
	assert_int_equal(last_ack_of(f, "zephyr-e", 1)->status, CG_ACK_THROTTLED);
	assert_int_equal(chunks_of(f, "zephyr-e", 1), 0);
	struct cg_dump_record re;
	assert_body(f, record_of(f, "zephyr-e", 2, &re), &e2);
	free(z);
	free(z3);
	free(z4);
	free(w);
	free(v);
	free(u1);
	free(u2);
}

/* ---- 7. regions ---- */

static void test_region_recorded(void **state)
{
	struct fx *f = *state;
	fx_begin(f, "throttle: { max_identical: 1, window: 1h }\n"
		    "groups:\n"
		    "  - { name: Fleet/EU, devices: [\"eu-*\"], crash_dumps: enabled,\n"
		    "      regional_data_boundary: EU }\n"
		    "  - { name: Fleet/Any, devices: [\"any-*\"], crash_dumps: enabled,\n"
		    "      regional_data_boundary: None }\n");
	uint8_t *x = make_raw(600, 60), *y = make_raw(600, 61);
	struct dump eu = mk("eu-1", 1, x, 600, CG_FORMAT_RAW);
	struct dump any = mk("any-1", 1, y, 600, CG_FORMAT_RAW);
	send_all(f, &eu);
	send_all(f, &any);
	struct cg_dump_record r;
	record_of(f, "eu-1", 1, &r);
	assert_int_equal(r.status, CG_DUMP_STORED);
	assert_string_equal(r.region, "EU");
	assert_string_equal(r.group, "Fleet/EU");
	record_of(f, "any-1", 1, &r);
	assert_string_equal(r.region, f->cfg->default_region);
	assert_string_equal(r.region, "US");
	assert_string_equal(r.group, "Fleet/Any");

	/* A throttled occurrence is history of its region too. */
	struct dump eu2 = mk("eu-2", 1, x, 600, CG_FORMAT_RAW);
	send_all(f, &eu2);
	assert_int_equal(last_ack_of(f, "eu-2", 1)->status, CG_ACK_THROTTLED);
	record_of(f, "eu-2", 1, &r);
	assert_int_equal(r.status, CG_DUMP_THROTTLED);
	assert_string_equal(r.region, "EU");
	assert_string_equal(r.group, "Fleet/EU");

	/* Persisted with the record. */
	fx_restart(f);
	record_of(f, "eu-1", 1, &r);
	assert_string_equal(r.region, "EU");
	record_of(f, "any-1", 1, &r);
	assert_string_equal(r.region, "US");
	free(x);
	free(y);
}

/* ---- 8. retention ---- */

struct ret_fx {
	uint64_t stored_seq, throttled_seq;
	struct dump stored;
	uint8_t *data;
};

/* One stored dump and one throttled occurrence of it, both received now. */
static void retention_setup(struct fx *f, struct ret_fx *r)
{
	r->data = make_raw(700, 70);
	r->stored = mk("keep-a", 1, r->data, 700, CG_FORMAT_RAW);
	struct dump t = mk("keep-b", 1, r->data, 700, CG_FORMAT_RAW);
	send_all(f, &r->stored);
	send_all(f, &t);
	assert_int_equal(last_ack_of(f, "keep-a", 1)->status, CG_ACK_COMPLETE);
	assert_int_equal(last_ack_of(f, "keep-b", 1)->status, CG_ACK_THROTTLED);
	struct cg_dump_record rec;
	r->stored_seq = record_of(f, "keep-a", 1, &rec);
	assert_int_equal(rec.status, CG_DUMP_STORED);
	assert_int_equal(rec.received_at_ms, f->wall);
	r->throttled_seq = record_of(f, "keep-b", 1, &rec);
	assert_int_equal(rec.status, CG_DUMP_THROTTLED);
	assert_int_equal(sigs(f)->n, 1);
	assert_true(stats(f).store_bytes > 0);
}

static bool has_record(struct fx *f, uint64_t seq, struct cg_dump_record *rec)
{
	int rc = cg_store_get_record(f->st, seq, rec);
	assert_true(rc == CG_OK || rc == CG_ERR_NOT_FOUND);
	return rc == CG_OK;
}

static bool has_body(struct fx *f, uint64_t seq)
{
	uint8_t *body = NULL;
	size_t len = 0;
	int rc = cg_store_get_body(f->st, seq, &body, &len);
	free(body);
	return rc == CG_OK;
}

static bool indexed(struct fx *f, const char *dev, uint64_t id)
{
	struct cg_dumpkey k;
	struct cg_index_entry ie;
	cg_dumpkey_make(&k, dev, strlen(dev), id);
	return cg_store_index_get(f->st, &k, &ie) == CG_OK;
}

/* History shorter than dumps: the record lives as long as its bytes. */
static void test_retention_history_shorter(void **state)
{
	struct fx *f = *state;
	fx_begin(f, "throttle: { max_identical: 1, window: 1h }\n"
		    "retention: { dumps: 2d, history: 1d }\n"
		    "groups:\n"
		    "  - { name: All, devices: [\"*\"], crash_dumps: enabled }\n");
	int64_t t0 = f->wall;
	struct ret_fx r;
	retention_setup(f, &r);
	struct cg_dump_record rec;
	assert_int_equal(stats(f).devices_seen, 2);

	f->wall = t0 + DAY_MS - 1;
	cg_reasm_retention(f->rs);
	assert_true(has_record(f, r.stored_seq, &rec));
	assert_true(has_body(f, r.stored_seq));
	assert_true(has_record(f, r.throttled_seq, &rec));
	assert_int_equal(sigs(f)->n, 1);
	assert_int_equal(stats(f).devices_seen, 2);

	/* History is due: the throttled occurrence, the signature counts and
	 * the devices go; the stored dump stays whole. */
	f->wall = t0 + DAY_MS;
	cg_reasm_retention(f->rs);
	assert_false(has_record(f, r.throttled_seq, &rec));
	assert_false(indexed(f, "keep-b", 1));
	assert_int_equal(sigs(f)->n, 0);
	assert_int_equal(stats(f).devices_seen, 0);
	assert_true(has_record(f, r.stored_seq, &rec));
	assert_false(rec.body_deleted);
	assert_body(f, r.stored_seq, &r.stored);
	assert_int_equal(stats(f).retention_bodies, 0);

	/* After a restart, at 2d, the dump goes with its record; the first
	 * tick of a new process runs retention. */
	fx_restart(f);
	assert_true(stats(f).store_bytes > 0);
	f->wall = t0 + 2 * DAY_MS - 1;
	cg_reasm_tick(f->rs);
	assert_true(has_body(f, r.stored_seq));
	f->wall = t0 + 2 * DAY_MS;
	cg_reasm_retention(f->rs);
	assert_false(has_record(f, r.stored_seq, &rec));
	assert_false(has_body(f, r.stored_seq));
	assert_false(indexed(f, "keep-a", 1));
	assert_int_equal(chunks_of(f, "keep-a", 1), 0);
	assert_int_equal(records_of(f, "keep-a"), 0);
	struct cg_reasm_stats s = stats(f);
	assert_int_equal(s.retention_bodies, 1);
	assert_int_equal(s.retention_records, 1);
	assert_int_equal(s.store_bytes, 0);
	free(r.data);
}

/* History longer than dumps: the bytes go first, the record stays as
 * history until its own time. */
static void test_retention_history_longer(void **state)
{
	struct fx *f = *state;
	fx_begin(f, "throttle: { max_identical: 1, window: 1h }\n"
		    "retention: { dumps: 1d, history: 3d }\n"
		    "groups:\n"
		    "  - { name: All, devices: [\"*\"], crash_dumps: enabled }\n");
	int64_t t0 = f->wall;
	struct ret_fx r;
	retention_setup(f, &r);
	struct cg_dump_record rec;

	f->wall = t0 + DAY_MS - 1;
	cg_reasm_retention(f->rs);
	assert_true(has_body(f, r.stored_seq));

	f->wall = t0 + DAY_MS;
	cg_reasm_retention(f->rs);
	assert_false(has_body(f, r.stored_seq));
	assert_int_equal(chunks_of(f, "keep-a", 1), 0);
	assert_true(has_record(f, r.stored_seq, &rec));
	assert_true(rec.body_deleted);
	assert_int_equal(rec.size, 700);             /* the history keeps what it was */
	assert_true(has_record(f, r.throttled_seq, &rec));
	assert_int_equal(sigs(f)->n, 1);
	struct cg_reasm_stats s = stats(f);
	assert_int_equal(s.retention_bodies, 1);
	assert_int_equal(s.retention_records, 0);
	assert_int_equal(s.store_bytes, 0);
	/* The dump is still known: sent again, it is answered, not stored. */
	f->mono += 1000;
	send_all(f, &r.stored);
	assert_int_equal(acks_of(f, "keep-a", 1, CG_ACK_COMPLETE), 2);
	assert_int_equal(chunks_of(f, "keep-a", 1), 0);

	fx_restart(f);
	assert_int_equal(stats(f).store_bytes, 0);
	f->wall = t0 + 3 * DAY_MS - 1;
	cg_reasm_tick(f->rs);
	assert_true(has_record(f, r.stored_seq, &rec));
	assert_true(has_record(f, r.throttled_seq, &rec));
	assert_int_equal(sigs(f)->n, 1);

	f->wall = t0 + 3 * DAY_MS;
	cg_reasm_retention(f->rs);
	assert_false(has_record(f, r.stored_seq, &rec));
	assert_false(has_record(f, r.throttled_seq, &rec));
	assert_false(indexed(f, "keep-a", 1));
	assert_false(indexed(f, "keep-b", 1));
	assert_int_equal(sigs(f)->n, 0);
	assert_int_equal(stats(f).retention_records, 2);

	/* And a restart finds nothing to bring back. */
	fx_restart(f);
	assert_int_equal(records_of(f, "keep-a") + records_of(f, "keep-b"), 0);
	assert_int_equal(stats(f).store_bytes, 0);
	free(r.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_consent_required_stores_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_group_takes_unmatched, setup, teardown),
		cmocka_unit_test_setup_teardown(test_consent_republished, setup, teardown),
		cmocka_unit_test_setup_teardown(test_collection_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota_persists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota_counts_open_dumps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_throttle_at_completion, setup, teardown),
		cmocka_unit_test_setup_teardown(test_throttle_early_zephyr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_throttle_early_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_content_dedup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resend_under_new_id_not_throttled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_region_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention_history_shorter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention_history_longer, setup, teardown),
	};
	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
