/*
 * The dump record of SPEC §12 as JSON, shared by crashgatectl, the
 * forwarder's upstream metadata and (later) the admin API, so that all of
 * them say the same thing: fields absent when unknown, addresses as "0x…".
 */
#include "record.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "policy.h"

void cg_record_time(int64_t ms, char *out, size_t cap)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, cap - n, ".%03dZ", (int)(ms % 1000));
}

const char *cg_record_format_name(const struct cg_dump_record *r)
{
	uint32_t f;
	if (r->has_crash)
		f = r->crash.format; /* what the decoder found beats what was declared */
	else if (r->has_format)
		f = r->format;
	else
		return NULL;
	switch (f) {
	case CG_FORMAT_ZEPHYR: return "zephyr";
	case CG_FORMAT_MINIDUMP: return "minidump";
	case CG_FORMAT_ELF_CORE: return "elf-core";
	case CG_FORMAT_RAW: return "raw";
	default: return NULL;
	}
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
	out[2 * n] = '\0';
}

static void set_addr(json_t *o, const char *key, uint64_t v)
{
	char buf[24];
	snprintf(buf, sizeof buf, "0x%" PRIx64, v);
	json_object_set_new(o, key, json_string(buf));
}

/* SPEC §12 `crash`: addresses as "0x…" strings, fields absent when unknown. */
static json_t *crash_json(const struct cg_crash *c)
{
	json_t *o = json_object();
	if (c->arch[0])
		json_object_set_new(o, "arch", json_string(c->arch));
	if (c->os[0])
		json_object_set_new(o, "os", json_string(c->os));
	if (c->reason[0])
		json_object_set_new(o, "reason", json_string(c->reason));
	if (c->present & CG_CRASH_HAS_SIGNAL)
		json_object_set_new(o, "signal", json_integer(c->signal));
	if (c->present & CG_CRASH_HAS_EXCEPTION_CODE) {
		char buf[16];
		snprintf(buf, sizeof buf, "0x%x", c->exception_code);
		json_object_set_new(o, "exception_code", json_string(buf));
	}
	if (c->present & CG_CRASH_HAS_FAULT_ADDRESS)
		set_addr(o, "fault_address", c->fault_address);
	if (c->present & CG_CRASH_HAS_PC)
		set_addr(o, "pc", c->pc);
	if (c->present & CG_CRASH_HAS_LR)
		set_addr(o, "lr", c->lr);
	if (c->present & CG_CRASH_HAS_SP)
		set_addr(o, "sp", c->sp);
	if (c->module[0])
		json_object_set_new(o, "module", json_string(c->module));
	if (c->present & CG_CRASH_HAS_MODULE_OFFSET)
		set_addr(o, "module_offset", c->module_offset);
	if (c->decode_error[0])
		json_object_set_new(o, "decode_error", json_string(c->decode_error));
	return o;
}

/* The dump record of SPEC §12; fields absent when unknown. */
json_t *cg_record_json(const char *gateway, struct cg_store *st, const struct cg_dump_record *r)
{
	json_t *o = json_object();
	char buf[512];
	if (r->status != CG_DUMP_OPEN) {
		cg_dump_stable_id(gateway, r, buf, sizeof buf);
		json_object_set_new(o, "id", json_string(buf));
		json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
	}
	json_object_set_new(o, "device", json_string(r->device));
	json_object_set_new(o, "dump_id", json_integer((json_int_t)r->dump_id));
	json_object_set_new(o, "status", json_string(cg_dump_status_name(r->status)));
	json_object_set_new(o, "size", json_integer((json_int_t)r->size));
	json_object_set_new(o, "chunks", json_integer(r->chunks));
	if (r->received_at_ms) {
		cg_record_time(r->received_at_ms, buf, sizeof buf);
		json_object_set_new(o, "received_at", json_string(buf));
	}
	if (r->first_seen_ms) {
		cg_record_time(r->first_seen_ms, buf, sizeof buf);
		json_object_set_new(o, "first_seen", json_string(buf));
	}
	if (cg_record_format_name(r))
		json_object_set_new(o, "format", json_string(cg_record_format_name(r)));
	if (r->build_id_len) {
		hex(r->build_id, r->build_id_len, buf);
		json_object_set_new(o, "build_id", json_string(buf));
	} else if (r->has_crash && r->crash.build_id_len) {
		hex(r->crash.build_id, r->crash.build_id_len, buf);
		json_object_set_new(o, "build_id", json_string(buf));
	}
	if (r->fw_version[0])
		json_object_set_new(o, "fw_version", json_string(r->fw_version));
	if (r->has_crc32) {
		snprintf(buf, sizeof buf, "0x%08x", r->crc32);
		json_object_set_new(o, "crc32", json_string(buf));
	}
	if (r->reason[0])
		json_object_set_new(o, "reason", json_string(r->reason));
	if (r->signature[0]) {
		json_object_set_new(o, "signature", json_string(r->signature));
		/* How often this crash happened (stored and throttled), from the
		 * gateway's counts; absent when they are gone (history retention). */
		struct cg_sig_stats *ss = malloc(sizeof *ss);
		if (ss && st && cg_sig_stats_load(st, r->signature, ss) == CG_OK && ss->stored + ss->throttled)
			json_object_set_new(o, "occurrences", json_integer((json_int_t)(ss->stored + ss->throttled)));
		free(ss);
	}
	if (r->group[0])
		json_object_set_new(o, "group", json_string(r->group));
	if (r->region[0])
		json_object_set_new(o, "region", json_string(r->region));
	if (r->body_deleted)
		json_object_set_new(o, "bytes_deleted", json_true());
	if (r->has_crash)
		json_object_set_new(o, "crash", crash_json(&r->crash));
	return o;
}


int cg_record_find(struct cg_store *st, const char *gateway, const char *id, struct cg_dump_record *out)
{
	char *end;
	uint64_t seq = strtoull(id, &end, 10);
	if (*end == '\0' && seq > 0)
		return cg_store_get_record(st, seq, out);
	char dev[CG_DEVICE_ID_MAX + 1];
	uint64_t dump_id;
	const char *p = id;
	size_t glen = strlen(gateway), slashes = 0;
	for (const char *q = id; *q; q++)
		slashes += *q == '/';
	/* DEVICE/DUMP_ID has one slash; a stable id GATEWAY/DEVICE/DUMP_ID[/MS]
	 * more (counting, not the prefix alone, lets a device share the
	 * gateway's name). */
	if (slashes >= 2 && strncmp(p, gateway, glen) == 0 && p[glen] == '/')
		p += glen + 1;
	const char *slash = strchr(p, '/');
	if (!slash || (size_t)(slash - p) > CG_DEVICE_ID_MAX)
		return CG_ERR_NOT_FOUND;
	memcpy(dev, p, (size_t)(slash - p));
	dev[slash - p] = '\0';
	dump_id = strtoull(slash + 1, &end, 10);
	if (end == slash + 1 || (*end != '\0' && *end != '/'))
		return CG_ERR_NOT_FOUND;
	/* A stable id ends in the receipt time: it names that dump, not a
	 * later one the device sent under the same dump id. */
	bool timed = *end == '/';
	int64_t at = 0;
	if (timed) {
		const char *t = end + 1;
		at = strtoll(t, &end, 10);
		if (end == t || *end != '\0')
			return CG_ERR_NOT_FOUND;
	}
	struct cg_dumpkey k;
	cg_dumpkey_make(&k, dev, strlen(dev), dump_id);
	struct cg_index_entry ie;
	if (cg_store_index_get(st, &k, &ie) != CG_OK || ie.seq == 0)
		return CG_ERR_NOT_FOUND;
	int rc = cg_store_get_record(st, ie.seq, out);
	if (rc == CG_OK && timed && out->received_at_ms != at)
		return CG_ERR_NOT_FOUND;
	return rc;
}


int cg_record_filter_set(struct cg_record_filter *f, const char *key, const char *val, char *err,
			 size_t errlen)
{
	char *end;
	const char **str = strcmp(key, "device") == 0	 ? &f->device
			   : strcmp(key, "group") == 0	 ? &f->group
			   : strcmp(key, "region") == 0	 ? &f->region
			   : strcmp(key, "signature") == 0 ? &f->signature
			   : strcmp(key, "status") == 0	 ? &f->status
							 : NULL;
	if (str) {
		if (str == &f->status && strcmp(val, "open") != 0) {
			bool known = false;
			for (uint32_t s = 0; s < 16 && !known; s++)
				known = strcmp(val, cg_dump_status_name(s)) == 0 && strcmp(val, "unknown") != 0;
			if (!known) {
				snprintf(err, errlen, "status: one of open, stored, forwarded, throttled, rejected, expired, dead_letter");
				return -1;
			}
		}
		*str = val;
		return 0;
	}
	if (strcmp(key, "since") == 0 || strcmp(key, "until") == 0) {
		if (cg_parse_time(val, key[0] == 's' ? &f->since : &f->until) != 0) {
			snprintf(err, errlen, "%s: an RFC 3339 time, e.g. 2026-11-23T08:00:00Z", key);
			return -1;
		}
		*(key[0] == 's' ? &f->has_since : &f->has_until) = true;
		return 0;
	}
	if (strcmp(key, "after") == 0 || strcmp(key, "through") == 0) {
		uint64_t v = strtoull(val, &end, 10);
		if (!*val || *end || val[0] == '-') {
			snprintf(err, errlen, "%s: a sequence number", key);
			return -1;
		}
		*(key[0] == 'a' ? &f->after : &f->through) = v;
		return 0;
	}
	return 1;
}

bool cg_record_filter_any(const struct cg_record_filter *f)
{
	return f->device || f->group || f->region || f->signature || f->status || f->has_since ||
	       f->has_until || f->after || f->through;
}

bool cg_record_filter_match(const struct cg_record_filter *f, const struct cg_dump_record *r)
{
	return r->seq > f->after && (!f->through || r->seq <= f->through) &&
	       (!f->device || strcmp(f->device, r->device) == 0) &&
	       (!f->group || strcmp(f->group, r->group) == 0) &&
	       (!f->region || strcmp(f->region, r->region) == 0) &&
	       (!f->signature || strcmp(f->signature, r->signature) == 0) &&
	       (!f->status || strcmp(f->status, cg_dump_status_name(r->status)) == 0) &&
	       (!f->has_since || r->received_at_ms >= f->since) &&
	       (!f->has_until || r->received_at_ms < f->until);
}

/* ---- crash groups ---- */

static int count_key(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	(*(json_int_t *)ctx)++;
	return 0;
}

struct sig_ctx {
	struct cg_store *st;
	json_t *rows;
};

static int sig_visit(void *ctx, const char *sig, const struct cg_sig_stats *s)
{
	struct sig_ctx *sc = ctx;
	char t1[40], t2[40];
	cg_record_time(s->first_seen_ms, t1, sizeof t1);
	cg_record_time(s->last_seen_ms, t2, sizeof t2);
	uint8_t prefix[17] = { 'd' };
	memcpy(prefix + 1, sig, 16);
	json_int_t devices = 0;
	cg_store_scan_policy(sc->st, prefix, sizeof prefix, count_key, &devices);
	json_t *g = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s, s:s}", "signature", sig, "count",
			      (json_int_t)s->stored, "throttled", (json_int_t)s->throttled, "occurrences",
			      (json_int_t)(s->stored + s->throttled), "devices", devices, "first_seen", t1,
			      "last_seen", t2);
	if (s->reason[0])
		json_object_set_new(g, "reason", json_string(s->reason));
	json_array_append_new(sc->rows, g);
	return 0;
}

json_t *cg_signatures_json(struct cg_store *st)
{
	struct sig_ctx sc = { st, json_array() };
	cg_policy_scan_sigs(st, sig_visit, &sc);
	return sc.rows;
}

/* ---- dumps being received ---- */

struct open_ctx {
	struct cg_store *st;
	const char *gateway;
	const struct cg_record_filter *f;
	json_t *rows;
	json_int_t size, chunks;
};

static int count_chunk(void *ctx, uint32_t ordinal, const uint8_t *data, size_t len)
{
	struct open_ctx *o = ctx;
	(void)ordinal, (void)data;
	o->size += (json_int_t)len;
	o->chunks++;
	return 0;
}

static int open_visit(void *ctx, const struct cg_dumpkey *k, const struct cg_dump_record *r)
{
	struct open_ctx *o = ctx;
	const struct cg_record_filter *f = o->f;
	if (f && ((f->device && strcmp(f->device, r->device)) || (f->group && strcmp(f->group, r->group)) ||
		  (f->region && strcmp(f->region, r->region))))
		return 0;
	o->size = o->chunks = 0;
	cg_store_each_chunk(o->st, k, count_chunk, o);
	json_t *row = cg_record_json(o->gateway, NULL, r);
	json_object_set_new(row, "status", json_string("open"));
	json_object_set_new(row, "size", json_integer(o->size));
	json_object_set_new(row, "chunks", json_integer(o->chunks));
	json_array_append_new(o->rows, row);
	return 0;
}

json_t *cg_open_dumps_json(struct cg_store *st, const char *gateway, const struct cg_record_filter *f)
{
	struct open_ctx o = { .st = st, .gateway = gateway, .f = f, .rows = json_array() };
	cg_store_scan_open(st, open_visit, &o);
	return o.rows;
}
