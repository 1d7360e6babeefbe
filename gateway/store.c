#include "store.h"

#include <cbor.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { CF_DEFAULT, CF_CHUNKS, CF_OPEN, CF_RECORDS, CF_INDEX, CF_POLICY, CF__COUNT };
static const char *const cf_names[CF__COUNT] = {
	"default", "chunks", "open", "records", "index", "policy",
};

struct cg_store {
	rocksdb_t *db;
	rocksdb_options_t *opts;
	rocksdb_options_t *cf_opts[CF__COUNT];
	rocksdb_column_family_handle_t *cf[CF__COUNT];
	rocksdb_writeoptions_t *wo;       /* unsynced: survives SIGKILL, not power loss */
	rocksdb_readoptions_t *ro;
	bool secondary;
	rocksdb_env_t *env;               /* only for in-memory stores */
	/* next_seq is only touched under seq_lock so concurrent commits get
	 * distinct numbers. */
	pthread_mutex_t seq_lock;
	uint64_t next_seq;
	/* Committed records are changed by several threads (the forwarder marks
	 * them forwarded; retention and purge delete them or their bytes): each
	 * change re-reads the record under rec_lock, so none writes back a copy
	 * another has changed or deleted meanwhile. */
	pthread_mutex_t rec_lock;
};

static const char next_seq_key[] = "next_seq";

void cg_dumpkey_make(struct cg_dumpkey *k, const char *device, size_t devlen, uint64_t dump_id)
{
	if (devlen > CG_DEVICE_ID_MAX)
		devlen = CG_DEVICE_ID_MAX;
	k->b[0] = (uint8_t)devlen;
	memcpy(k->b + 1, device, devlen);
	for (int i = 0; i < 8; i++)
		k->b[1 + devlen + i] = (uint8_t)(dump_id >> (56 - 8 * i));
	k->len = (uint8_t)(1 + devlen + 8);
}

int cg_dumpkey_parse(const uint8_t *b, size_t len, char *dev, uint64_t *dump_id)
{
	if (len < 10 || b[0] == 0 || b[0] > CG_DEVICE_ID_MAX || len < (size_t)b[0] + 9)
		return CG_ERR_MALFORMED;
	size_t dl = b[0];
	memcpy(dev, b + 1, dl);
	dev[dl] = '\0';
	uint64_t id = 0;
	for (int i = 0; i < 8; i++)
		id = (id << 8) | b[1 + dl + i];
	*dump_id = id;
	return CG_OK;
}

static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t rd_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static size_t chunk_key(uint8_t *out, const struct cg_dumpkey *k, uint32_t ordinal)
{
	memcpy(out, k->b, k->len);
	out[k->len] = (uint8_t)(ordinal >> 24);
	out[k->len + 1] = (uint8_t)(ordinal >> 16);
	out[k->len + 2] = (uint8_t)(ordinal >> 8);
	out[k->len + 3] = (uint8_t)ordinal;
	return k->len + 4u;
}

const char *cg_dump_status_name(uint32_t status)
{
	static const char *const names[] = {
		"open", "stored", "forwarded", "throttled", "rejected", "expired", "dead_letter",
	};
	return status < sizeof names / sizeof names[0] ? names[status] : "unknown";
}

void cg_store_free(void *p)
{
	rocksdb_free(p);
}

static int set_err(char *err, size_t errlen, const char *what, char *rerr)
{
	if (err && errlen)
		snprintf(err, errlen, "%s: %s", what, rerr ? rerr : "unknown error");
	rocksdb_free(rerr);
	return CG_ERR_STORE;
}

static void store_free_handles(struct cg_store *st)
{
	for (int i = 0; i < CF__COUNT; i++) {
		if (st->cf[i])
			rocksdb_column_family_handle_destroy(st->cf[i]);
		if (st->cf_opts[i])
			rocksdb_options_destroy(st->cf_opts[i]);
	}
	if (st->db)
		rocksdb_close(st->db);
	if (st->opts)
		rocksdb_options_destroy(st->opts);
	if (st->env)
		rocksdb_env_destroy(st->env);
	if (st->wo)
		rocksdb_writeoptions_destroy(st->wo);
	if (st->ro)
		rocksdb_readoptions_destroy(st->ro);
	pthread_mutex_destroy(&st->seq_lock);
	pthread_mutex_destroy(&st->rec_lock);
	free(st);
}

/*
 * Options sized for a small edge box: modest memtables so RSS stays low with
 * thousands of open dumps. No value is larger than a chunk (64 KiB by
 * default), so no blob files are needed.
 */
static void make_options(struct cg_store *st)
{
	st->opts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(st->opts, 1);
	rocksdb_options_set_create_missing_column_families(st->opts, 1);
	rocksdb_options_set_max_open_files(st->opts, 256);
	rocksdb_options_set_keep_log_file_num(st->opts, 3);
	rocksdb_options_set_max_total_wal_size(st->opts, 64u << 20);
	rocksdb_options_increase_parallelism(st->opts, 2);
	for (int i = 0; i < CF__COUNT; i++) {
		rocksdb_options_t *o = rocksdb_options_create_copy(st->opts);
		rocksdb_options_set_write_buffer_size(o, i == CF_CHUNKS ? 16u << 20 : 4u << 20);
		rocksdb_options_set_max_write_buffer_number(o, 2);
		st->cf_opts[i] = o;
	}
}

/* One point read: CG_OK with *v set (free with rocksdb_free), CG_ERR_NOT_FOUND
 * or CG_ERR_STORE. */
static int store_get(struct cg_store *st, int cf, const void *key, size_t klen, char **v, size_t *vlen)
{
	char *rerr = NULL;
	*v = rocksdb_get_cf(st->db, st->ro, st->cf[cf], key, klen, vlen, &rerr);
	if (rerr) {
		rocksdb_free(rerr);
		return CG_ERR_STORE;
	}
	return *v ? CG_OK : CG_ERR_NOT_FOUND;
}

/* The record stored under key in cf, decoded into rec. */
static int store_get_record(struct cg_store *st, int cf, const void *key, size_t klen,
			    struct cg_dump_record *rec)
{
	char *v;
	size_t vlen;
	int rc = store_get(st, cf, key, klen, &v, &vlen);
	if (rc != CG_OK)
		return rc;
	rc = cg_record_decode((const uint8_t *)v, vlen, rec);
	rocksdb_free(v);
	return rc;
}

static int load_next_seq(struct cg_store *st, char *err, size_t errlen)
{
	char *v = NULL;
	size_t vlen = 0;
	int rc = store_get(st, CF_DEFAULT, next_seq_key, sizeof next_seq_key - 1, &v, &vlen);
	if (rc == CG_ERR_STORE) {
		if (err && errlen)
			snprintf(err, errlen, "cannot read next_seq");
		return rc;
	}
	st->next_seq = (v && vlen == 8) ? rd_be64((const uint8_t *)v) : 1;
	rocksdb_free(v);
	return CG_OK;
}

static int store_open(const char *dir, const char *scratch, bool memory, struct cg_store **out,
		      char *err, size_t errlen)
{
	struct cg_store *st = calloc(1, sizeof *st);
	if (!st)
		return CG_ERR_NOMEM;
	pthread_mutex_init(&st->seq_lock, NULL);
	pthread_mutex_init(&st->rec_lock, NULL);
	if (memory)
		st->env = rocksdb_create_mem_env();
	make_options(st);
	if (memory) {
		rocksdb_options_set_env(st->opts, st->env);
		for (int i = 0; i < CF__COUNT; i++)
			rocksdb_options_set_env(st->cf_opts[i], st->env);
	}
	st->wo = rocksdb_writeoptions_create();
	st->ro = rocksdb_readoptions_create();
	char *rerr = NULL;
	if (scratch) {
		st->secondary = true;
		rocksdb_options_set_max_open_files(st->opts, -1); /* required for secondaries */
		for (int i = 0; i < CF__COUNT; i++)
			rocksdb_options_set_max_open_files(st->cf_opts[i], -1);
		st->db = rocksdb_open_as_secondary_column_families(
			st->opts, dir, scratch, CF__COUNT, cf_names,
			(const rocksdb_options_t *const *)st->cf_opts, st->cf, &rerr);
	} else {
		if (!memory && mkdir(dir, 0700) != 0 && errno != EEXIST) {
			snprintf(err, errlen, "create %s: %s", dir, strerror(errno));
			store_free_handles(st);
			return CG_ERR_IO;
		}
		st->db = rocksdb_open_column_families(st->opts, dir, CF__COUNT, cf_names,
						      (const rocksdb_options_t *const *)st->cf_opts,
						      st->cf, &rerr);
	}
	if (rerr) {
		int rc = set_err(err, errlen, dir, rerr);
		st->db = NULL;
		memset(st->cf, 0, sizeof st->cf);
		store_free_handles(st);
		return rc;
	}
	int rc = load_next_seq(st, err, errlen);
	if (rc != CG_OK) {
		store_free_handles(st);
		return rc;
	}
	*out = st;
	return CG_OK;
}

int cg_store_open(const char *dir, struct cg_store **out, char *err, size_t errlen)
{
	return store_open(dir, NULL, false, out, err, errlen);
}

int cg_store_open_memory(const char *name, struct cg_store **out, char *err, size_t errlen)
{
	return store_open(name, NULL, true, out, err, errlen);
}

int cg_store_open_secondary(const char *dir, const char *scratch, struct cg_store **out,
			    char *err, size_t errlen)
{
	return store_open(dir, scratch, false, out, err, errlen);
}

int cg_store_refresh(struct cg_store *st)
{
	char *rerr = NULL;
	rocksdb_try_catch_up_with_primary(st->db, &rerr);
	if (rerr) {
		rocksdb_free(rerr);
		return CG_ERR_STORE;
	}
	return load_next_seq(st, NULL, 0);
}

void cg_store_close(struct cg_store *st)
{
	if (!st)
		return;
	if (!st->secondary)
		cg_store_sync(st);
	store_free_handles(st);
}

static int write_batch(struct cg_store *st, rocksdb_writebatch_t *b)
{
	char *rerr = NULL;
	rocksdb_write(st->db, st->wo, b, &rerr);
	rocksdb_writebatch_destroy(b);
	if (rerr) {
		rocksdb_free(rerr);
		return CG_ERR_STORE;
	}
	return CG_OK;
}

int cg_store_put_chunk(struct cg_store *st, const struct cg_dumpkey *k, uint32_t ordinal,
		       const uint8_t *data, size_t len, const struct cg_dump_record *rec)
{
	uint8_t key[CG_DUMPKEY_MAX + 4];
	size_t klen = chunk_key(key, k, ordinal);
	if (!rec) { /* the hot path: one put, no batch to allocate */
		char *rerr = NULL;
		rocksdb_put_cf(st->db, st->wo, st->cf[CF_CHUNKS], (const char *)key, klen,
			       (const char *)data, len, &rerr);
		if (rerr) {
			rocksdb_free(rerr);
			return CG_ERR_STORE;
		}
		return CG_OK;
	}
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(b, st->cf[CF_CHUNKS], (const char *)key, klen,
				  (const char *)data, len);
	if (rec) {
		uint8_t *enc = NULL;
		size_t elen = 0;
		int rc = cg_record_encode(rec, &enc, &elen);
		if (rc != CG_OK) {
			rocksdb_writebatch_destroy(b);
			return rc;
		}
		rocksdb_writebatch_put_cf(b, st->cf[CF_OPEN], (const char *)k->b, k->len,
					  (const char *)enc, elen);
		free(enc);
	}
	return write_batch(st, b);
}

int cg_store_get_chunk(struct cg_store *st, const struct cg_dumpkey *k, uint32_t ordinal,
		       uint8_t **data, size_t *len)
{
	uint8_t key[CG_DUMPKEY_MAX + 4];
	size_t klen = chunk_key(key, k, ordinal);
	char *v;
	int rc = store_get(st, CF_CHUNKS, key, klen, &v, len);
	if (rc == CG_OK)
		*data = (uint8_t *)v;
	return rc;
}

/* Iterate the chunk keys of one dump: [dumpkey‖0, dumpkey‖FFFFFFFF]. */
static rocksdb_iterator_t *chunk_iter(struct cg_store *st, const struct cg_dumpkey *k,
				      rocksdb_readoptions_t **ro_out, uint8_t *upper)
{
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	memcpy(upper, k->b, k->len);
	memset(upper + k->len, 0xff, 5); /* past every 4-byte ordinal */
	rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)upper, k->len + 5u);
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, ro, st->cf[CF_CHUNKS]);
	rocksdb_iter_seek(it, (const char *)k->b, k->len);
	*ro_out = ro;
	return it;
}

static uint32_t key_ordinal(const char *key, size_t klen)
{
	const uint8_t *p = (const uint8_t *)key + klen - 4;
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int cg_store_each_chunk(struct cg_store *st, const struct cg_dumpkey *k, cg_store_each_cb cb, void *ctx)
{
	uint8_t upper[CG_DUMPKEY_MAX + 5];
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it = chunk_iter(st, k, &ro, upper);
	int rc = CG_OK;
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const char *key = rocksdb_iter_key(it, &klen);
		const char *val = rocksdb_iter_value(it, &vlen);
		if (klen != k->len + 4u)
			continue;
		rc = cb(ctx, key_ordinal(key, klen), (const uint8_t *)val, vlen);
		if (rc != 0)
			break;
	}
	if (rc == CG_OK) {
		char *rerr = NULL;
		rocksdb_iter_get_error(it, &rerr);
		if (rerr) {
			rocksdb_free(rerr);
			rc = CG_ERR_STORE;
		}
	}
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	return rc;
}

/* Walks a dump checking that its chunks are exactly 0..n-1 and add up to
 * size, copying them into buf. */
struct walk {
	uint32_t expect;
	uint64_t off, size;
	uint8_t *buf;
};

static int walk_chunk(void *ctx, uint32_t ordinal, const uint8_t *data, size_t len)
{
	struct walk *w = ctx;
	if (ordinal != w->expect || w->off + len > w->size)
		return CG_ERR_CONFLICT;
	memcpy(w->buf + w->off, data, len);
	w->off += len;
	w->expect++;
	return CG_OK;
}

static int walk_dump(struct cg_store *st, const struct cg_dumpkey *k, uint32_t nchunks, struct walk *w)
{
	int rc = cg_store_each_chunk(st, k, walk_chunk, w);
	if (rc == CG_OK && (w->expect != nchunks || w->off != w->size))
		rc = CG_ERR_CONFLICT;
	return rc;
}

int cg_store_read_dump(struct cg_store *st, const struct cg_dumpkey *k, uint32_t nchunks,
		       uint64_t size, uint8_t **body)
{
	struct walk w = { .size = size, .buf = malloc(size ? size : 1) };
	if (!w.buf)
		return CG_ERR_NOMEM;
	int rc = walk_dump(st, k, nchunks, &w);
	if (rc != CG_OK) {
		free(w.buf);
		return rc;
	}
	*body = w.buf;
	return CG_OK;
}

/* Add deletes of every chunk of k to the batch. */
static int batch_delete_chunks(struct cg_store *st, rocksdb_writebatch_t *b, const struct cg_dumpkey *k)
{
	uint8_t upper[CG_DUMPKEY_MAX + 5];
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it = chunk_iter(st, k, &ro, upper);
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen;
		const char *key = rocksdb_iter_key(it, &klen);
		rocksdb_writebatch_delete_cf(b, st->cf[CF_CHUNKS], key, klen);
	}
	char *rerr = NULL;
	rocksdb_iter_get_error(it, &rerr);
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	if (rerr) {
		rocksdb_free(rerr);
		return CG_ERR_STORE;
	}
	return CG_OK;
}

static int index_encode(const struct cg_index_entry *e, uint8_t *out, size_t cap, size_t *len)
{
	size_t rl = strnlen(e->reason, CG_PROTO_MAX_REASON);
	if (cap < 1 + 8 + 8 + rl)
		return CG_ERR_BUFFER;
	out[0] = (uint8_t)e->status;
	be64(out + 1, e->seq);
	be64(out + 9, (uint64_t)e->at_ms);
	memcpy(out + 17, e->reason, rl);
	*len = 17 + rl;
	return CG_OK;
}

int cg_store_commit_dump(struct cg_store *st, const struct cg_dumpkey *k, struct cg_dump_record *rec)
{
	return cg_store_commit_dump_ex(st, k, rec, false, NULL, 0);
}

int cg_store_commit_dump_ex(struct cg_store *st, const struct cg_dumpkey *k, struct cg_dump_record *rec,
			    bool drop_chunks, const struct cg_kv *puts, size_t nputs)
{
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	if (drop_chunks && batch_delete_chunks(st, b, k) != CG_OK) {
		rocksdb_writebatch_destroy(b);
		return CG_ERR_STORE;
	}
	for (size_t i = 0; i < nputs; i++) {
		if (puts[i].val)
			rocksdb_writebatch_put_cf(b, st->cf[CF_POLICY], (const char *)puts[i].key,
						  puts[i].klen, (const char *)puts[i].val, puts[i].vlen);
		else
			rocksdb_writebatch_delete_cf(b, st->cf[CF_POLICY], (const char *)puts[i].key,
						     puts[i].klen);
	}
	pthread_mutex_lock(&st->seq_lock);
	rec->seq = st->next_seq;
	uint8_t seqkey[8], nextv[8];
	be64(seqkey, rec->seq);
	be64(nextv, rec->seq + 1);
	uint8_t *enc = NULL;
	size_t elen = 0;
	int rc = cg_record_encode(rec, &enc, &elen);
	if (rc == CG_OK) {
		struct cg_index_entry ie = { .status = rec->status, .seq = rec->seq, .at_ms = rec->received_at_ms };
		uint8_t iv[17 + CG_PROTO_MAX_REASON];
		size_t ivlen = 0;
		index_encode(&ie, iv, sizeof iv, &ivlen);
		rocksdb_writebatch_put_cf(b, st->cf[CF_RECORDS], (const char *)seqkey, 8,
					  (const char *)enc, elen);
		rocksdb_writebatch_put_cf(b, st->cf[CF_INDEX], (const char *)k->b, k->len,
					  (const char *)iv, ivlen);
		rocksdb_writebatch_delete_cf(b, st->cf[CF_OPEN], (const char *)k->b, k->len);
		rocksdb_writebatch_put_cf(b, st->cf[CF_DEFAULT], next_seq_key, sizeof next_seq_key - 1,
					  (const char *)nextv, 8);
		free(enc);
		rc = write_batch(st, b);
		if (rc == CG_OK)
			st->next_seq++;
	} else {
		rocksdb_writebatch_destroy(b);
	}
	pthread_mutex_unlock(&st->seq_lock);
	return rc;
}

int cg_store_drop_open(struct cg_store *st, const struct cg_dumpkey *k)
{
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	int rc = batch_delete_chunks(st, b, k);
	if (rc != CG_OK) {
		rocksdb_writebatch_destroy(b);
		return rc;
	}
	rocksdb_writebatch_delete_cf(b, st->cf[CF_OPEN], (const char *)k->b, k->len);
	return write_batch(st, b);
}

int cg_store_delete_body(struct cg_store *st, struct cg_dump_record *rec)
{
	struct cg_dumpkey k;
	uint8_t seqkey[8], *enc = NULL;
	size_t elen = 0;
	struct cg_dump_record *cur = malloc(sizeof *cur);
	if (!cur)
		return CG_ERR_NOMEM;
	pthread_mutex_lock(&st->rec_lock);
	int rc = cg_store_get_record(st, rec->seq, cur);
	if (rc == CG_ERR_NOT_FOUND || (rc == CG_OK && cur->body_deleted)) {
		/* deleted meanwhile: nothing left to do, nothing freed */
		pthread_mutex_unlock(&st->rec_lock);
		free(cur);
		rec->body_deleted = true;
		return CG_ERR_NOT_FOUND;
	}
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	cg_dumpkey_make(&k, cur->device, strlen(cur->device), cur->dump_id);
	cur->body_deleted = true;
	if (rc == CG_OK)
		rc = batch_delete_chunks(st, b, &k);
	if (rc == CG_OK)
		rc = cg_record_encode(cur, &enc, &elen);
	if (rc == CG_OK) {
		be64(seqkey, cur->seq);
		rocksdb_writebatch_put_cf(b, st->cf[CF_RECORDS], (const char *)seqkey, 8, (const char *)enc, elen);
		free(enc);
		rc = write_batch(st, b);
	} else {
		rocksdb_writebatch_destroy(b);
	}
	pthread_mutex_unlock(&st->rec_lock);
	if (rc == CG_OK)
		*rec = *cur;
	free(cur);
	return rc;
}

int cg_store_delete_record(struct cg_store *st, const struct cg_dump_record *rec,
			   struct cg_dump_record *was)
{
	struct cg_dumpkey k;
	uint8_t seqkey[8];
	struct cg_dump_record *cur = malloc(sizeof *cur);
	if (!cur)
		return CG_ERR_NOMEM;
	pthread_mutex_lock(&st->rec_lock);
	int rc = cg_store_get_record(st, rec->seq, cur);
	if (rc != CG_OK) {   /* gone already (NOT_FOUND), or unreadable */
		pthread_mutex_unlock(&st->rec_lock);
		free(cur);
		return rc;
	}
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	cg_dumpkey_make(&k, cur->device, strlen(cur->device), cur->dump_id);
	if (!cur->body_deleted && batch_delete_chunks(st, b, &k) != CG_OK) {
		pthread_mutex_unlock(&st->rec_lock);
		rocksdb_writebatch_destroy(b);
		free(cur);
		return CG_ERR_STORE;
	}
	be64(seqkey, cur->seq);
	rocksdb_writebatch_delete_cf(b, st->cf[CF_RECORDS], (const char *)seqkey, 8);
	/* The index may point at another record (content duplicates share one). */
	struct cg_index_entry ie;
	if (cg_store_index_get(st, &k, &ie) == CG_OK && ie.seq == cur->seq)
		rocksdb_writebatch_delete_cf(b, st->cf[CF_INDEX], (const char *)k.b, k.len);
	rc = write_batch(st, b);
	pthread_mutex_unlock(&st->rec_lock);
	if (rc == CG_OK && was)
		*was = *cur;
	free(cur);
	return rc;
}

int cg_store_index_put(struct cg_store *st, const struct cg_dumpkey *k, const struct cg_index_entry *e)
{
	uint8_t iv[17 + CG_PROTO_MAX_REASON];
	size_t ivlen = 0;
	char *rerr = NULL;

	index_encode(e, iv, sizeof iv, &ivlen);
	rocksdb_put_cf(st->db, st->wo, st->cf[CF_INDEX], (const char *)k->b, k->len,
		       (const char *)iv, ivlen, &rerr);
	if (rerr) {
		rocksdb_free(rerr);
		return CG_ERR_STORE;
	}
	return CG_OK;
}

int cg_store_sweep_index(struct cg_store *st, int64_t before_ms, uint64_t *deleted)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ro, st->cf[CF_INDEX]);
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	int rc = CG_OK;
	size_t pending = 0;
	for (rocksdb_iter_seek_to_first(it); rc == CG_OK && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const char *key = rocksdb_iter_key(it, &klen);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if (vlen < 17 || (int64_t)rd_be64(v + 9) >= before_ms)
			continue;
		uint8_t seqkey[8];
		char *rv;
		size_t rvlen;
		memcpy(seqkey, v + 1, 8);
		int g = store_get(st, CF_RECORDS, seqkey, 8, &rv, &rvlen);
		if (g == CG_OK) {
			rocksdb_free(rv);
			continue;
		}
		if (g != CG_ERR_NOT_FOUND) {
			rc = g;
			break;
		}
		rocksdb_writebatch_delete_cf(b, st->cf[CF_INDEX], key, klen);
		(*deleted)++;
		if (++pending == 256) {
			rc = write_batch(st, b);
			b = rocksdb_writebatch_create();
			pending = 0;
		}
	}
	rocksdb_iter_destroy(it);
	if (rc == CG_OK)
		rc = write_batch(st, b);
	else
		rocksdb_writebatch_destroy(b);
	return rc;
}

/* ---- policy state: small values under prefixed keys ---- */

int cg_store_policy_get(struct cg_store *st, const void *key, size_t klen, uint8_t **val, size_t *vlen)
{
	char *v;
	int rc = store_get(st, CF_POLICY, key, klen, &v, vlen);
	if (rc == CG_OK)
		*val = (uint8_t *)v;
	return rc;
}

int cg_store_policy_write(struct cg_store *st, const struct cg_kv *kv, size_t n)
{
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	for (size_t i = 0; i < n; i++) {
		if (kv[i].val)
			rocksdb_writebatch_put_cf(b, st->cf[CF_POLICY], (const char *)kv[i].key, kv[i].klen,
						  (const char *)kv[i].val, kv[i].vlen);
		else
			rocksdb_writebatch_delete_cf(b, st->cf[CF_POLICY], (const char *)kv[i].key,
						     kv[i].klen);
	}
	return write_batch(st, b);
}

int cg_store_scan_policy(struct cg_store *st, const void *prefix, size_t plen, cg_store_kv_cb cb,
			 void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ro, st->cf[CF_POLICY]);
	int rc = CG_OK;
	for (rocksdb_iter_seek(it, prefix, plen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const char *key = rocksdb_iter_key(it, &klen);
		const char *val = rocksdb_iter_value(it, &vlen);
		if (klen < plen || memcmp(key, prefix, plen) != 0)
			break;
		if (cb(ctx, (const uint8_t *)key, klen, (const uint8_t *)val, vlen) != 0)
			break;
	}
	char *rerr = NULL;
	rocksdb_iter_get_error(it, &rerr);
	if (rerr) {
		rocksdb_free(rerr);
		rc = CG_ERR_STORE;
	}
	rocksdb_iter_destroy(it);
	return rc;
}

int cg_store_get_open(struct cg_store *st, const struct cg_dumpkey *k, struct cg_dump_record *rec)
{
	return store_get_record(st, CF_OPEN, k->b, k->len, rec);
}

int cg_store_meta_put(struct cg_store *st, const char *key, const char *value)
{
	char *rerr = NULL;
	rocksdb_put_cf(st->db, st->wo, st->cf[CF_DEFAULT], key, strlen(key), value, strlen(value), &rerr);
	if (rerr) {
		rocksdb_free(rerr);
		return CG_ERR_STORE;
	}
	return CG_OK;
}

int cg_store_meta_get(struct cg_store *st, const char *key, char *out, size_t cap)
{
	char *v;
	size_t vlen;
	int rc = store_get(st, CF_DEFAULT, key, strlen(key), &v, &vlen);
	if (rc != CG_OK)
		return rc;
	rc = vlen < cap ? CG_OK : CG_ERR_BUFFER;
	if (rc == CG_OK) {
		memcpy(out, v, vlen);
		out[vlen] = '\0';
	}
	rocksdb_free(v);
	return rc;
}

int cg_store_index_get(struct cg_store *st, const struct cg_dumpkey *k, struct cg_index_entry *out)
{
	char *v;
	size_t vlen;
	int rc = store_get(st, CF_INDEX, k->b, k->len, &v, &vlen);
	if (rc != CG_OK)
		return rc;
	rc = CG_ERR_MALFORMED;
	if (vlen >= 17 && vlen <= 17 + CG_PROTO_MAX_REASON) {
		const uint8_t *p = (const uint8_t *)v;
		out->status = p[0];
		out->seq = rd_be64(p + 1);
		out->at_ms = (int64_t)rd_be64(p + 9);
		memcpy(out->reason, p + 17, vlen - 17);
		out->reason[vlen - 17] = '\0';
		rc = CG_OK;
	}
	rocksdb_free(v);
	return rc;
}

int cg_store_checkpoint(struct cg_store *st, const char *dir, char *err, size_t errlen)
{
	if (st->env || st->secondary) {
		snprintf(err, errlen, "a checkpoint needs the daemon's on-disk store");
		return CG_ERR_STORE;
	}
	char *rerr = NULL;
	rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(st->db, &rerr);
	/* log_size_for_flush 0: memtables are flushed first, so the copy is
	 * SST files only (hard links on the same file system) and opens fast. */
	if (!rerr)
		rocksdb_checkpoint_create(cp, dir, 0, &rerr);
	if (cp)
		rocksdb_checkpoint_object_destroy(cp);
	if (rerr) {
		snprintf(err, errlen, "%s", rerr);
		rocksdb_free(rerr);
		return CG_ERR_STORE;
	}
	return CG_OK;
}

int cg_store_sync(struct cg_store *st)
{
	if (st->env)
		return CG_OK; /* an in-memory store has no disk to sync to */
	char *rerr = NULL;
	rocksdb_flush_wal(st->db, 1, &rerr);
	if (rerr) {
		rocksdb_free(rerr);
		return CG_ERR_STORE;
	}
	return CG_OK;
}

int cg_store_scan_open(struct cg_store *st, cg_store_open_cb cb, void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ro, st->cf[CF_OPEN]);
	struct cg_dump_record *rec = malloc(sizeof *rec);
	int rc = rec ? CG_OK : CG_ERR_NOMEM;
	for (rocksdb_iter_seek_to_first(it); rc == CG_OK && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const char *key = rocksdb_iter_key(it, &klen);
		const char *val = rocksdb_iter_value(it, &vlen);
		struct cg_dumpkey k;
		if (klen > CG_DUMPKEY_MAX)
			continue;
		k.len = (uint8_t)klen;
		memcpy(k.b, key, klen);
		if (cg_record_decode((const uint8_t *)val, vlen, rec) != CG_OK)
			continue; /* unreadable: its chunks expire with the reassembly timeout */
		if (cb(ctx, &k, rec) != 0)
			break;
	}
	free(rec);
	rocksdb_iter_destroy(it);
	return rc;
}

int cg_store_scan_records(struct cg_store *st, cg_store_record_cb cb, void *ctx)
{
	return cg_store_scan_records_from(st, 0, cb, ctx);   /* seqs start at 1 */
}

int cg_store_scan_records_from(struct cg_store *st, uint64_t from_seq, cg_store_record_cb cb, void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ro, st->cf[CF_RECORDS]);
	struct cg_dump_record *rec = malloc(sizeof *rec);
	int rc = rec ? CG_OK : CG_ERR_NOMEM;
	uint8_t key[8];
	be64(key, from_seq);
	for (rocksdb_iter_seek(it, (const char *)key, 8); rc == CG_OK && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t vlen;
		const char *val = rocksdb_iter_value(it, &vlen);
		if (cg_record_decode((const uint8_t *)val, vlen, rec) != CG_OK)
			continue;
		if (cb(ctx, rec) != 0)
			break;
	}
	free(rec);
	rocksdb_iter_destroy(it);
	return rc;
}

int cg_store_set_status(struct cg_store *st, uint64_t seq, uint32_t status)
{
	uint8_t key[8], *enc = NULL;
	size_t elen = 0;
	char *rerr = NULL;
	struct cg_dump_record *cur = malloc(sizeof *cur);
	if (!cur)
		return CG_ERR_NOMEM;
	pthread_mutex_lock(&st->rec_lock);
	int rc = cg_store_get_record(st, seq, cur);
	if (rc == CG_OK && cur->status != status) {
		cur->status = status;
		rc = cg_record_encode(cur, &enc, &elen);
		if (rc == CG_OK) {
			be64(key, seq);
			rocksdb_put_cf(st->db, st->wo, st->cf[CF_RECORDS], (const char *)key, 8,
				       (const char *)enc, elen, &rerr);
			free(enc);
			if (rerr) {
				rocksdb_free(rerr);
				rc = CG_ERR_STORE;
			}
		}
	}
	pthread_mutex_unlock(&st->rec_lock);
	free(cur);
	return rc;
}

int cg_store_get_record(struct cg_store *st, uint64_t seq, struct cg_dump_record *rec)
{
	uint8_t key[8];
	be64(key, seq);
	return store_get_record(st, CF_RECORDS, key, 8, rec);
}

int cg_store_get_body(struct cg_store *st, uint64_t seq, uint8_t **body, size_t *len)
{
	struct cg_dump_record *rec = malloc(sizeof *rec);
	if (!rec)
		return CG_ERR_NOMEM;
	int rc = cg_store_get_record(st, seq, rec);
	if (rc == CG_OK) {
		struct cg_dumpkey k;
		cg_dumpkey_make(&k, rec->device, strlen(rec->device), rec->dump_id);
		rc = cg_store_read_dump(st, &k, rec->chunks, rec->size, body);
		if (rc == CG_OK)
			*len = (size_t)rec->size;
	}
	free(rec);
	return rc;
}

/* ---- record codec: a CBOR map with small integer keys ---- */

enum {
	R_SEQ = 1, R_DEVICE, R_DUMP_ID, R_STATUS, R_FIRST_SEEN, R_RECEIVED_AT, R_SIZE,
	R_CHUNKS, R_LAST_ORDINAL, R_TOTAL_SIZE, R_CRC32, R_OS, R_FORMAT, R_BUILD_ID,
	R_FW_VERSION, R_META, R_REASON, R_HAS_CHUNK0, R_SIGNATURE, R_CRASH, R_GROUP, R_REGION,
	R_BODY_DELETED,
};

/* Keys of the nested crash map. */
enum {
	C_FORMAT = 1, C_PRESENT, C_ARCH, C_OS, C_REASON, C_REASON_CODE, C_SIGNAL, C_SI_CODE,
	C_EXCEPTION_CODE, C_FAULT_ADDRESS, C_PC, C_LR, C_SP, C_THREAD, C_MODULE, C_MODULE_OFFSET,
	C_BUILD_ID, C_DECODE_ERROR,
};

static bool map_add(cbor_item_t *map, uint8_t key, cbor_item_t *val)
{
	if (!val)
		return false;
	bool ok = cbor_map_add(map, (struct cbor_pair){ .key = cbor_move(cbor_build_uint8(key)),
						       .value = cbor_move(val) });
	return ok;
}

static cbor_item_t *build_int(int64_t v)
{
	return v >= 0 ? cbor_build_uint64((uint64_t)v) : cbor_build_negint64((uint64_t)(-1 - v));
}

static cbor_item_t *crash_encode(const struct cg_crash *c)
{
	cbor_item_t *m = cbor_new_definite_map(18);
	if (!m)
		return NULL;
	bool ok = map_add(m, C_FORMAT, cbor_build_uint32(c->format)) &&
		  map_add(m, C_PRESENT, cbor_build_uint32(c->present)) &&
		  map_add(m, C_ARCH, cbor_build_string(c->arch)) &&
		  map_add(m, C_OS, cbor_build_string(c->os)) &&
		  map_add(m, C_REASON, cbor_build_string(c->reason)) &&
		  map_add(m, C_REASON_CODE, cbor_build_uint64(c->reason_code)) &&
		  map_add(m, C_SIGNAL, build_int(c->signal)) &&
		  map_add(m, C_SI_CODE, build_int(c->si_code)) &&
		  map_add(m, C_EXCEPTION_CODE, cbor_build_uint32(c->exception_code)) &&
		  map_add(m, C_FAULT_ADDRESS, cbor_build_uint64(c->fault_address)) &&
		  map_add(m, C_PC, cbor_build_uint64(c->pc)) &&
		  map_add(m, C_LR, cbor_build_uint64(c->lr)) &&
		  map_add(m, C_SP, cbor_build_uint64(c->sp)) &&
		  map_add(m, C_THREAD, cbor_build_uint32(c->thread)) &&
		  map_add(m, C_MODULE, cbor_build_string(c->module)) &&
		  map_add(m, C_MODULE_OFFSET, cbor_build_uint64(c->module_offset)) &&
		  map_add(m, C_BUILD_ID, cbor_build_bytestring(c->build_id, c->build_id_len)) &&
		  map_add(m, C_DECODE_ERROR, cbor_build_string(c->decode_error));
	if (!ok)
		cbor_decref(&m);
	return m;
}

int cg_record_encode(const struct cg_dump_record *r, uint8_t **buf, size_t *len)
{
	cbor_item_t *m = cbor_new_definite_map(24);
	if (!m)
		return CG_ERR_NOMEM;
	bool ok = map_add(m, R_SEQ, cbor_build_uint64(r->seq)) &&
		  map_add(m, R_DEVICE, cbor_build_string(r->device)) &&
		  map_add(m, R_DUMP_ID, cbor_build_uint64(r->dump_id)) &&
		  map_add(m, R_STATUS, cbor_build_uint32(r->status)) &&
		  map_add(m, R_FIRST_SEEN, build_int(r->first_seen_ms)) &&
		  map_add(m, R_RECEIVED_AT, build_int(r->received_at_ms)) &&
		  map_add(m, R_SIZE, cbor_build_uint64(r->size)) &&
		  map_add(m, R_CHUNKS, cbor_build_uint32(r->chunks)) &&
		  map_add(m, R_LAST_ORDINAL, build_int(r->last_ordinal)) &&
		  map_add(m, R_HAS_CHUNK0, cbor_build_bool(r->has_chunk0));
	if (ok && r->has_total_size)
		ok = map_add(m, R_TOTAL_SIZE, cbor_build_uint64(r->total_size));
	if (ok && r->has_crc32)
		ok = map_add(m, R_CRC32, cbor_build_uint32(r->crc32));
	if (ok && r->has_os)
		ok = map_add(m, R_OS, cbor_build_uint32(r->os));
	if (ok && r->has_format)
		ok = map_add(m, R_FORMAT, cbor_build_uint32(r->format));
	if (ok && r->build_id_len)
		ok = map_add(m, R_BUILD_ID, cbor_build_bytestring(r->build_id, r->build_id_len));
	if (ok && r->fw_version[0])
		ok = map_add(m, R_FW_VERSION, cbor_build_string(r->fw_version));
	if (ok && r->meta_len)
		ok = map_add(m, R_META, cbor_build_bytestring(r->meta, r->meta_len));
	if (ok && r->reason[0])
		ok = map_add(m, R_REASON, cbor_build_string(r->reason));
	if (ok && r->signature[0])
		ok = map_add(m, R_SIGNATURE, cbor_build_string(r->signature));
	if (ok && r->has_crash)
		ok = map_add(m, R_CRASH, crash_encode(&r->crash));
	if (ok && r->group[0])
		ok = map_add(m, R_GROUP, cbor_build_string(r->group));
	if (ok && r->region[0])
		ok = map_add(m, R_REGION, cbor_build_string(r->region));
	if (ok && r->body_deleted)
		ok = map_add(m, R_BODY_DELETED, cbor_build_bool(true));
	size_t cap = 0;
	*len = ok ? cbor_serialize_alloc(m, buf, &cap) : 0;
	cbor_decref(&m);
	return *len ? CG_OK : CG_ERR_NOMEM;
}

static bool get_u64(cbor_item_t *v, uint64_t *out)
{
	if (!cbor_isa_uint(v))
		return false;
	*out = cbor_get_int(v);
	return true;
}

static bool get_i64(cbor_item_t *v, int64_t *out)
{
	if (cbor_isa_uint(v)) {
		*out = (int64_t)cbor_get_int(v);
		return true;
	}
	if (cbor_isa_negint(v)) {
		*out = -1 - (int64_t)cbor_get_int(v);
		return true;
	}
	return false;
}

static bool get_str(cbor_item_t *v, char *out, size_t cap)
{
	if (!cbor_isa_string(v) || !cbor_string_is_definite(v) || cbor_string_length(v) >= cap)
		return false;
	memcpy(out, cbor_string_handle(v), cbor_string_length(v));
	out[cbor_string_length(v)] = '\0';
	return true;
}

static bool get_bytes(cbor_item_t *v, uint8_t *out, size_t cap, size_t *len)
{
	if (!cbor_isa_bytestring(v) || !cbor_bytestring_is_definite(v) || cbor_bytestring_length(v) > cap)
		return false;
	*len = cbor_bytestring_length(v);
	memcpy(out, cbor_bytestring_handle(v), *len);
	return true;
}

static bool crash_decode(cbor_item_t *m, struct cg_crash *c)
{
	if (!cbor_isa_map(m))
		return false;
	memset(c, 0, sizeof *c);
	size_t n = cbor_map_size(m);
	struct cbor_pair *pairs = cbor_map_handle(m);
	bool ok = true;
	for (size_t i = 0; ok && i < n; i++) {
		uint64_t key, u = 0;
		int64_t v64 = 0;
		if (!get_u64(pairs[i].key, &key))
			continue;
		cbor_item_t *v = pairs[i].value;
		switch (key) {
		case C_FORMAT: ok = get_u64(v, &u); c->format = (uint32_t)u; break;
		case C_PRESENT: ok = get_u64(v, &u); c->present = (uint32_t)u; break;
		case C_ARCH: ok = get_str(v, c->arch, sizeof c->arch); break;
		case C_OS: ok = get_str(v, c->os, sizeof c->os); break;
		case C_REASON: ok = get_str(v, c->reason, sizeof c->reason); break;
		case C_REASON_CODE: ok = get_u64(v, &c->reason_code); break;
		case C_SIGNAL: ok = get_i64(v, &v64); c->signal = (int32_t)v64; break;
		case C_SI_CODE: ok = get_i64(v, &v64); c->si_code = (int32_t)v64; break;
		case C_EXCEPTION_CODE: ok = get_u64(v, &u); c->exception_code = (uint32_t)u; break;
		case C_FAULT_ADDRESS: ok = get_u64(v, &c->fault_address); break;
		case C_PC: ok = get_u64(v, &c->pc); break;
		case C_LR: ok = get_u64(v, &c->lr); break;
		case C_SP: ok = get_u64(v, &c->sp); break;
		case C_THREAD: ok = get_u64(v, &u); c->thread = (uint32_t)u; break;
		case C_MODULE: ok = get_str(v, c->module, sizeof c->module); break;
		case C_MODULE_OFFSET: ok = get_u64(v, &c->module_offset); break;
		case C_BUILD_ID: ok = get_bytes(v, c->build_id, sizeof c->build_id, &c->build_id_len); break;
		case C_DECODE_ERROR: ok = get_str(v, c->decode_error, sizeof c->decode_error); break;
		default: break;
		}
	}
	return ok;
}

int cg_record_decode(const uint8_t *buf, size_t len, struct cg_dump_record *r)
{
	struct cbor_load_result res;
	cbor_item_t *m = cbor_load(buf, len, &res);
	if (!m)
		return CG_ERR_MALFORMED;
	memset(r, 0, sizeof *r);
	r->last_ordinal = -1;
	bool ok = cbor_isa_map(m);
	size_t n = ok ? cbor_map_size(m) : 0;
	struct cbor_pair *pairs = ok ? cbor_map_handle(m) : NULL;
	for (size_t i = 0; ok && i < n; i++) {
		uint64_t key, u = 0;
		if (!get_u64(pairs[i].key, &key))
			continue;
		cbor_item_t *v = pairs[i].value;
		switch (key) {
		case R_SEQ: ok = get_u64(v, &r->seq); break;
		case R_DEVICE: ok = get_str(v, r->device, sizeof r->device); break;
		case R_DUMP_ID: ok = get_u64(v, &r->dump_id); break;
		case R_STATUS: ok = get_u64(v, &u); r->status = (uint32_t)u; break;
		case R_FIRST_SEEN: ok = get_i64(v, &r->first_seen_ms); break;
		case R_RECEIVED_AT: ok = get_i64(v, &r->received_at_ms); break;
		case R_SIZE: ok = get_u64(v, &r->size); break;
		case R_CHUNKS: ok = get_u64(v, &u); r->chunks = (uint32_t)u; break;
		case R_LAST_ORDINAL: ok = get_i64(v, &r->last_ordinal); break;
		case R_TOTAL_SIZE: ok = get_u64(v, &r->total_size); r->has_total_size = true; break;
		case R_CRC32: ok = get_u64(v, &u); r->crc32 = (uint32_t)u; r->has_crc32 = true; break;
		case R_OS: ok = get_u64(v, &u); r->os = (uint32_t)u; r->has_os = true; break;
		case R_FORMAT: ok = get_u64(v, &u); r->format = (uint32_t)u; r->has_format = true; break;
		case R_BUILD_ID: ok = get_bytes(v, r->build_id, sizeof r->build_id, &r->build_id_len); break;
		case R_FW_VERSION: ok = get_str(v, r->fw_version, sizeof r->fw_version); break;
		case R_META: ok = get_bytes(v, r->meta, sizeof r->meta, &r->meta_len); break;
		case R_REASON: ok = get_str(v, r->reason, sizeof r->reason); break;
		case R_HAS_CHUNK0: ok = cbor_isa_float_ctrl(v) && cbor_is_bool(v); r->has_chunk0 = ok && cbor_get_bool(v); break;
		case R_SIGNATURE: ok = get_str(v, r->signature, sizeof r->signature); break;
		case R_CRASH: ok = crash_decode(v, &r->crash); r->has_crash = ok; break;
		case R_GROUP: ok = get_str(v, r->group, sizeof r->group); break;
		case R_REGION: ok = get_str(v, r->region, sizeof r->region); break;
		case R_BODY_DELETED: ok = cbor_isa_float_ctrl(v) && cbor_is_bool(v); r->body_deleted = ok && cbor_get_bool(v); break;
		default: break; /* written by a newer version: ignore */
		}
	}
	cbor_decref(&m);
	/* Values that feed arithmetic are checked: a damaged record must not
	 * become an overflow later. */
	if (ok && (r->last_ordinal < -1 || r->last_ordinal > (int64_t)UINT32_MAX || !r->device[0]))
		ok = false;
	return ok ? CG_OK : CG_ERR_MALFORMED;
}

void cg_dump_stable_id(const char *gateway, const struct cg_dump_record *rec, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s/%" PRIu64 "/%" PRId64, gateway, rec->device, rec->dump_id,
		 rec->received_at_ms);
}
