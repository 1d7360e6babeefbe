/*
 * Minidump decoder: the shared fixtures against the reference tools' values
 * in expected.json, every prefix of each fixture, and minidumps built here
 * (Windows x86, Linux ARM64, macOS with a padded module list, RISC-V 64,
 * thread-list context) cut at every byte and with every byte corrupted.
 *
 * Fixtures are found through $CG_FIXTURES, else at ROOT/../shared/fixtures
 * with ROOT three levels above this file; the fixture tests skip when they
 * are absent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CG_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(CG_TEST_ASAN)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* ---- helpers ------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;
	uint8_t *b;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
		fclose(f);
		return NULL;
	}
	b = malloc(n ? (size_t)n : 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

static const char *fixtures_dir(void)
{
	static char dir[4096];
	const char *env = getenv("CG_FIXTURES");

	if (env && *env) {
		snprintf(dir, sizeof dir, "%s", env);
	} else {
		char root[4000];
		snprintf(root, sizeof root, "%s", __FILE__);
		for (int i = 0; i < 3; i++) {
			char *slash = strrchr(root, '/');
			if (!slash)
				return NULL;
			*slash = '\0';
		}
		snprintf(dir, sizeof dir, "%s/../shared/fixtures", root[0] ? root : ".");
	}
	return dir;
}

static json_t *load_expected(void)
{
	const char *dir = fixtures_dir();
	char path[4200];

	if (!dir)
		return NULL;
	snprintf(path, sizeof path, "%s/expected.json", dir);
	return json_load_file(path, 0, NULL);
}

static uint64_t hexval(const json_t *v)
{
	assert_non_null(v);
	assert_true(json_is_string(v));
	return strtoull(json_string_value(v), NULL, 16);
}

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (s[0] && s[1] && n < cap) {
		unsigned v;
		assert_int_equal(sscanf(s, "%2x", &v), 1);
		out[n++] = (uint8_t)v;
		s += 2;
	}
	return n;
}

static const char *basename_any(const char *path)
{
	const char *b = path;

	for (const char *p = path; *p; p++)
		if (*p == '/' || *p == '\\')
			b = p + 1;
	return b;
}

/*
 * Breakpad's debug id for a CodeView identifier: the GUID's first three
 * fields byte-swapped, upper-case hex, then the age in hex. A BpEL build id
 * gives its first 16 bytes as the GUID and age 0 (README caveat 7).
 */
static void debug_id(const uint8_t *id, size_t len, bool rsds, char *out, size_t cap)
{
	static const int order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
	uint8_t g[16] = { 0 };
	size_t n = 0;

	memcpy(g, id, len < 16 ? len : 16);
	for (int i = 0; i < 16; i++)
		n += (size_t)snprintf(out + n, cap - n, "%02X", g[order[i]]);
	uint32_t age = 0;
	if (rsds && len >= 20)
		age = (uint32_t)id[16] | (uint32_t)id[17] << 8 | (uint32_t)id[18] << 16 |
		      (uint32_t)id[19] << 24;
	snprintf(out + n, cap - n, "%X", age);
}

static void first_token(const char *s, char *out, size_t cap)
{
	size_t n = strcspn(s, " /");
	if (n >= cap)
		n = cap - 1;
	memcpy(out, s, n);
	out[n] = '\0';
}

/*
 * Whatever a cut-off dump yields must agree with the whole dump: a field
 * that is present has the same value, a string is either the same or empty.
 */
static void assert_consistent(const struct cg_crash *part, const struct cg_crash *full)
{
	uint32_t p = part->present;

	assert_int_equal(part->format, CG_FORMAT_MINIDUMP);
	assert_int_equal(p & ~full->present, 0);
	if (part->arch[0])
		assert_string_equal(part->arch, full->arch);
	if (part->os[0])
		assert_string_equal(part->os, full->os);
	if (part->reason[0])
		assert_string_equal(part->reason, full->reason);
	if (part->module[0])
		assert_string_equal(part->module, full->module);
	if (p & CG_CRASH_HAS_SIGNAL)
		assert_int_equal(part->signal, full->signal);
	if (p & CG_CRASH_HAS_SI_CODE)
		assert_int_equal(part->si_code, full->si_code);
	if (p & CG_CRASH_HAS_EXCEPTION_CODE)
		assert_int_equal(part->exception_code, full->exception_code);
	if (p & CG_CRASH_HAS_REASON_CODE)
		assert_int_equal(part->reason_code, full->reason_code);
	if (p & CG_CRASH_HAS_FAULT_ADDRESS)
		assert_int_equal(part->fault_address, full->fault_address);
	if (p & CG_CRASH_HAS_PC)
		assert_int_equal(part->pc, full->pc);
	if (p & CG_CRASH_HAS_SP)
		assert_int_equal(part->sp, full->sp);
	if (p & CG_CRASH_HAS_LR)
		assert_int_equal(part->lr, full->lr);
	if (p & CG_CRASH_HAS_THREAD)
		assert_int_equal(part->thread, full->thread);
	if (p & CG_CRASH_HAS_MODULE_OFFSET)
		assert_int_equal(part->module_offset, full->module_offset);
	if (part->build_id_len) {
		assert_int_equal(part->build_id_len, full->build_id_len);
		assert_memory_equal(part->build_id, full->build_id, full->build_id_len);
	}
}

/*
 * Every proper prefix is an error consistent with the whole. Under
 * AddressSanitizer the bytes after the cut are poisoned, so a read past the
 * length the decoder was given stops the test.
 */
static void check_every_prefix(const uint8_t *buf, size_t len, const struct cg_crash *full)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	memcpy(p, buf, len);
	for (size_t cut = 0; cut < len; cut++) {
		struct cg_crash c;

		POISON(p + cut, len - cut);
		int rc = cg_decode_minidump(p, cut, &c);
		UNPOISON(p + cut, len - cut);
		if (rc == CG_OK || c.decode_error[0] == '\0') {
			free(p);
			fail_msg("prefix of %zu/%zu bytes: rc %d, decode_error '%s'", cut, len, rc,
				 c.decode_error);
		}
		assert_consistent(&c, full);
	}
	free(p);
}

/* ---- the shared fixtures ------------------------------------------------- */

static void check_build_id(const struct cg_crash *c, const json_t *pcm, const json_t *mainm)
{
	const json_t *rec = json_object_get(pcm, "codeview_record_hex");
	const char *main_name = json_string_value(json_object_get(mainm, "name"));
	const char *pc_name = json_string_value(json_object_get(pcm, "name"));
	uint8_t cv[256];
	size_t n;
	char did[64];

	/* The record of the PC's module: its own, or the main module's when the
	 * PC is in the main executable. */
	if (!rec && main_name && strcmp(basename_any(main_name), pc_name) == 0)
		rec = json_object_get(mainm, "codeview_record_hex");
	if (rec) {
		n = unhex(json_string_value(rec), cv, sizeof cv);
		assert_true(n > 4);
		if (memcmp(cv, "RSDS", 4) == 0) {
			assert_int_equal(c->build_id_len, 20);
			assert_memory_equal(c->build_id, cv + 4, 20);
		} else {
			assert_memory_equal(cv, "LEpB", 4); /* BpEL, little endian */
			assert_int_equal(c->build_id_len, n - 4);
			assert_memory_equal(c->build_id, cv + 4, n - 4);
		}
	}
	assert_true(c->build_id_len >= 16);
	debug_id(c->build_id, c->build_id_len, c->build_id_len == 20 && rec &&
		 strncmp(json_string_value(rec), "52534453", 8) == 0, did, sizeof did);
	assert_string_equal(did, json_string_value(json_object_get(pcm, "debug_id")));

	/* BpEL: the whole GNU build id, as minidump_dump prints it. */
	const json_t *bid = json_object_get(mainm, "build_id");
	if (bid && json_is_string(bid) && strcmp(basename_any(main_name), pc_name) == 0) {
		n = unhex(json_string_value(bid), cv, sizeof cv);
		assert_int_equal(c->build_id_len, n);
		assert_memory_equal(c->build_id, cv, n);
	}
}

static void check_valid_fixture(const json_t *fx, const uint8_t *buf, size_t len)
{
	struct cg_crash c;
	const char *file = json_string_value(json_object_get(fx, "file"));
	int rc = cg_decode_minidump(buf, len, &c);

	if (rc != CG_OK)
		fail_msg("%s: rc %d: %s", file, rc, c.decode_error);
	assert_string_equal(c.decode_error, "");
	assert_int_equal(c.format, CG_FORMAT_MINIDUMP);
	assert_string_equal(c.arch, json_string_value(json_object_get(fx, "arch")));
	assert_string_equal(c.os, json_string_value(json_object_get(fx, "os")));

	uint64_t code = hexval(json_object_get(fx, "exception_code"));
	assert_true(c.present & CG_CRASH_HAS_EXCEPTION_CODE);
	assert_int_equal(c.exception_code, code);
	assert_true(c.present & CG_CRASH_HAS_REASON_CODE);
	assert_int_equal(c.reason_code, code);

	/* Reason: Breakpad's name, or its first word where Breakpad appends the
	 * flags (Linux "SIGSEGV /0x00000000"); "0x..." means it has no name. */
	const char *want = json_string_value(json_object_get(fx, "crash_reason"));
	char tw[64], tg[64];
	if (strncmp(want, "0x", 2) != 0) {
		first_token(want, tw, sizeof tw);
		first_token(c.reason, tg, sizeof tg);
		assert_string_equal(tg, tw);
		if (!strstr(want, "0x"))
			assert_string_equal(c.reason, want);
	}
	if (strcmp(c.os, "Linux") == 0) {
		assert_true(c.present & CG_CRASH_HAS_SIGNAL);
		assert_int_equal(c.signal, (int32_t)code);
	}

	const json_t *fault = json_object_get(fx, "fault_address");
	if (json_is_null(fault)) {
		assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
	} else {
		assert_true(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
		assert_int_equal(c.fault_address, hexval(fault));
		assert_int_equal(c.fault_address, hexval(json_object_get(fx, "crash_address")));
	}

	const json_t *thr = json_object_get(fx, "crashing_thread");
	assert_true(c.present & CG_CRASH_HAS_THREAD);
	assert_int_equal(c.thread, hexval(json_object_get(thr, "id")));

	assert_true(c.present & CG_CRASH_HAS_PC);
	assert_int_equal(c.pc, hexval(json_object_get(fx, "pc")));
	assert_true(c.present & CG_CRASH_HAS_SP);
	assert_int_equal(c.sp, hexval(json_object_get(fx, "sp")));
	const json_t *lr = json_object_get(fx, "lr");
	if (lr && !json_is_null(lr)) {
		assert_true(c.present & CG_CRASH_HAS_LR);
		assert_int_equal(c.lr, hexval(lr));
	} else if (strncmp(c.arch, "arm", 3) != 0) {
		assert_false(c.present & CG_CRASH_HAS_LR);
	}

	const json_t *pcm = json_object_get(fx, "pc_module");
	if (json_is_null(pcm)) {
		assert_false(c.present & CG_CRASH_HAS_MODULE_OFFSET);
		assert_string_equal(c.module, "");
		assert_int_equal(c.build_id_len, 0);
	} else {
		assert_true(c.present & CG_CRASH_HAS_MODULE_OFFSET);
		assert_string_equal(c.module, json_string_value(json_object_get(pcm, "name")));
		assert_int_equal(c.module_offset, hexval(json_object_get(pcm, "pc_offset")));
		assert_int_equal(c.pc - c.module_offset, hexval(json_object_get(pcm, "base")));
		check_build_id(&c, pcm, json_object_get(fx, "main_module"));
	}

	check_every_prefix(buf, len, &c);
}

static void test_fixtures(void **state)
{
	(void)state;
	json_t *root = load_expected();
	const char *dir = fixtures_dir();
	size_t i, nvalid = 0, ninvalid = 0;
	json_t *fx;

	if (!root)
		skip();
	json_array_foreach(json_object_get(root, "fixtures"), i, fx) {
		const char *fmt = json_string_value(json_object_get(fx, "format"));
		const char *file = json_string_value(json_object_get(fx, "file"));
		char path[4200];
		size_t len = 0;

		if (!fmt || strcmp(fmt, "minidump") != 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, file);
		uint8_t *buf = slurp(path, &len);
		if (!buf)
			fail_msg("cannot read %s", path);
		assert_int_equal(len, json_integer_value(json_object_get(fx, "size")));
		if (json_is_true(json_object_get(fx, "valid"))) {
			check_valid_fixture(fx, buf, len);
			nvalid++;
		} else {
			struct cg_crash c;
			int rc = cg_decode_minidump(buf, len, &c);
			assert_int_not_equal(rc, CG_OK);
			assert_true(c.decode_error[0] != '\0');
			assert_int_equal(c.format, CG_FORMAT_MINIDUMP);
			ninvalid++;
		}
		free(buf);
	}
	json_decref(root);
	assert_int_equal(nvalid, 8);
	assert_int_equal(ninvalid, 2);
}

/* ---- minidumps built here ------------------------------------------------ */

struct mdb {
	uint8_t b[8192];
	size_t n;
};

static void w16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void w32(uint8_t *p, uint32_t v)
{
	w16(p, v);
	w16(p + 2, v >> 16);
}

static void w64(uint8_t *p, uint64_t v)
{
	w32(p, (uint32_t)v);
	w32(p + 4, (uint32_t)(v >> 32));
}

/* Reserves n zeroed bytes at a 4-byte boundary; returns their rva. */
static uint32_t reserve(struct mdb *d, size_t n)
{
	d->n = (d->n + 3) & ~(size_t)3;
	assert_true(d->n + n <= sizeof d->b);
	uint32_t rva = (uint32_t)d->n;
	memset(d->b + d->n, 0, n);
	d->n += n;
	return rva;
}

static uint32_t put_name(struct mdb *d, const char *ascii)
{
	size_t n = strlen(ascii);
	uint32_t rva = reserve(d, 4 + 2 * n + 2);

	w32(d->b + rva, (uint32_t)(2 * n));
	for (size_t i = 0; i < n; i++)
		w16(d->b + rva + 4 + 2 * i, (uint8_t)ascii[i]);
	return rva;
}

enum ctx_kind { CTX_X86, CTX_AMD64, CTX_ARM64, CTX_RISCV64 };

struct spec {
	uint16_t cpu;
	uint32_t os;
	enum ctx_kind ctx;
	uint32_t code, flags, nparams;
	uint64_t address, info[3];
	uint64_t pc, sp, lr;
	bool padded_modules;     /* count followed by 4 bytes (macOS writers) */
	bool context_in_threads; /* exception stream has no context */
	bool bpel;               /* BpEL records, else RSDS */
};

static const uint8_t BUILD_ID[20] = { 0xf1, 0xc3, 0xbc, 0xc0, 0x27, 0x98, 0x65, 0xfe, 0x30, 0x58,
				      0x40, 0x4b, 0x28, 0x31, 0xd9, 0xe6, 0x41, 0x35, 0x38, 0x6c };

/*
 * Header, directory (SystemInfo, Exception, ThreadList, ModuleList), the
 * streams, a context, then names and CodeView records, so that the last
 * byte of the file belongs to a record the decoder checks. Module 0 is the
 * executable at 0x400000 (0x20000 bytes), module 1 "libc.so.6" at
 * 0x7f0000000000 (0x1000000 bytes) with a different id.
 */
static void build(struct mdb *d, const struct spec *s)
{
	enum { NSTREAMS = 4 };
	static const uint32_t ctx_size[] = { 716, 1232, 912, 528 };
	uint32_t dir, sys, exc, ctx, thr, mods;
	uint32_t csize = ctx_size[s->ctx];

	memset(d, 0, sizeof *d);
	reserve(d, 32);
	dir = reserve(d, NSTREAMS * 12);
	sys = reserve(d, 56);
	exc = reserve(d, 168);
	ctx = reserve(d, csize);
	thr = reserve(d, 4 + 48);
	mods = reserve(d, 4 + (s->padded_modules ? 4 : 0) + 2 * 108);

	memcpy(d->b, "MDMP", 4);
	w32(d->b + 4, 0xa793);
	w32(d->b + 8, NSTREAMS);
	w32(d->b + 12, dir);

	w16(d->b + sys, s->cpu);
	w32(d->b + sys + 20, s->os);

	uint8_t *e = d->b + exc;
	w32(e, 0x1234);
	w32(e + 8, s->code);
	w32(e + 12, s->flags);
	w64(e + 24, s->address);
	w32(e + 32, s->nparams);
	for (uint32_t i = 0; i < s->nparams && i < 3; i++)
		w64(e + 40 + 8 * i, s->info[i]);
	if (!s->context_in_threads) {
		w32(e + 160, csize);
		w32(e + 164, ctx);
	}

	uint8_t *c = d->b + ctx;
	switch (s->ctx) {
	case CTX_X86:
		w32(c, 0x1003f);
		w32(c + 184, (uint32_t)s->pc);
		w32(c + 196, (uint32_t)s->sp);
		break;
	case CTX_AMD64:
		w32(c + 48, 0x10001f);
		w64(c + 248, s->pc);
		w64(c + 152, s->sp);
		break;
	case CTX_ARM64:
		w32(c, 0x400003);
		w64(c + 8 + 8 * 32, s->pc);
		w64(c + 8 + 8 * 31, s->sp);
		w64(c + 8 + 8 * 30, s->lr);
		break;
	case CTX_RISCV64:
		w32(c, 0x08000001);
		w64(c + 8, s->pc);
		w64(c + 16, s->lr);
		w64(c + 24, s->sp);
		break;
	}

	w32(d->b + thr, 1);
	w32(d->b + thr + 4, 0x1234);
	w64(d->b + thr + 4 + 24, s->sp & ~(uint64_t)0xfff);
	w32(d->b + thr + 4 + 40, csize);
	w32(d->b + thr + 4 + 44, ctx);

	w32(d->b + mods, 2);
	uint8_t *m0 = d->b + mods + 4 + (s->padded_modules ? 4 : 0);
	uint8_t *m1 = m0 + 108;
	w64(m0, 0x400000);
	w32(m0 + 8, 0x20000);
	w64(m1, 0x7f0000000000);
	w32(m1 + 8, 0x1000000);

	/* The thread's stack memory is the last thing before the names. */
	uint32_t stack = reserve(d, 64);
	w32(d->b + thr + 4 + 32, 64);
	w32(d->b + thr + 4 + 36, stack);

	w32(m0 + 20, put_name(d, s->os == 2 ? "C:\\app\\crashy.exe" : "/opt/app/bin/crashy"));
	w32(m1 + 20, put_name(d, "/lib/x86_64-linux-gnu/libc.so.6"));
	for (int i = 0; i < 2; i++) {
		uint8_t *m = i ? m1 : m0;
		uint32_t rva;
		if (s->bpel) {
			rva = reserve(d, 24);
			memcpy(d->b + rva, "LEpB", 4);
			memcpy(d->b + rva + 4, BUILD_ID, 20);
			d->b[rva + 4] ^= (uint8_t)i;
			w32(m + 76, 24);
		} else {
			rva = reserve(d, 24 + 11);
			memcpy(d->b + rva, "RSDS", 4);
			memcpy(d->b + rva + 4, BUILD_ID, 20);
			d->b[rva + 4] ^= (uint8_t)i;
			memcpy(d->b + rva + 24, "crashy.pdb", 11);
			w32(m + 76, 35);
		}
		w32(m + 80, rva);
	}
	/* No padding after the last record: it ends on the file's last byte. */

	const uint32_t types[NSTREAMS] = { 7, 6, 3, 4 };
	const uint32_t rvas[NSTREAMS] = { sys, exc, thr, mods };
	const uint32_t sizes[NSTREAMS] = { 56, 168, 4 + 48,
					   4 + (s->padded_modules ? 4u : 0u) + 2 * 108 };
	for (int i = 0; i < NSTREAMS; i++) {
		w32(d->b + dir + 12 * i, types[i]);
		w32(d->b + dir + 12 * i + 4, sizes[i]);
		w32(d->b + dir + 12 * i + 8, rvas[i]);
	}
}

static const struct spec WIN_X86 = {
	.cpu = 0, .os = 2, .ctx = CTX_X86, .code = 0xc0000005, .nparams = 2,
	.address = 0x40129e, .info = { 0, 0xdeadbeef }, .pc = 0x40129e, .sp = 0x12fe84,
};

static const struct spec LINUX_ARM64 = {
	.cpu = 12, .os = 0x8201, .ctx = CTX_ARM64, .code = 11, .flags = 2, .address = 0x45,
	.pc = 0x7f0000012344, .sp = 0x7ffc0000f000, .lr = 0x401000, .bpel = true,
};

static const struct spec MAC_AMD64 = {
	.cpu = 9, .os = 0x8101, .ctx = CTX_AMD64, .code = 1, .flags = 2, .address = 0x10,
	.pc = 0x401234, .sp = 0x7fff5000, .padded_modules = true,
};

static const struct spec LINUX_RISCV64 = {
	.cpu = 0x8006, .os = 0x8201, .ctx = CTX_RISCV64, .code = 6, .flags = 0xfffffffa,
	.address = 0x4d14400005be6, .pc = 0x400100, .sp = 0x3ffffff000, .lr = 0x400200,
	.context_in_threads = true, .bpel = true,
};

static void decode_ok(const struct mdb *d, struct cg_crash *c)
{
	int rc = cg_decode_minidump(d->b, d->n, c);
	if (rc != CG_OK)
		fail_msg("rc %d: %s", rc, c->decode_error);
	assert_string_equal(c->decode_error, "");
}

static void test_windows_x86(void **state)
{
	(void)state;
	struct mdb d;
	struct cg_crash c;

	build(&d, &WIN_X86);
	decode_ok(&d, &c);
	assert_string_equal(c.arch, "x86");
	assert_string_equal(c.os, "Windows NT");
	assert_string_equal(c.reason, "EXCEPTION_ACCESS_VIOLATION_READ");
	assert_int_equal(c.exception_code, 0xc0000005);
	assert_false(c.present & CG_CRASH_HAS_SIGNAL);
	assert_true(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
	assert_int_equal(c.fault_address, 0xdeadbeef);
	assert_int_equal(c.pc, 0x40129e);
	assert_int_equal(c.sp, 0x12fe84);
	assert_false(c.present & CG_CRASH_HAS_LR);
	assert_int_equal(c.thread, 0x1234);
	assert_string_equal(c.module, "crashy.exe");
	assert_int_equal(c.module_offset, 0x129e);
	assert_int_equal(c.build_id_len, 20);
	assert_memory_equal(c.build_id, BUILD_ID, 20);

	/* Write, execute, and the codes without an address. */
	struct spec s = WIN_X86;
	s.info[0] = 1;
	build(&d, &s);
	decode_ok(&d, &c);
	assert_string_equal(c.reason, "EXCEPTION_ACCESS_VIOLATION_WRITE");
	s.info[0] = 8;
	build(&d, &s);
	decode_ok(&d, &c);
	assert_string_equal(c.reason, "EXCEPTION_ACCESS_VIOLATION_EXEC");
	s.code = 0xc0000094;
	s.nparams = 0;
	build(&d, &s);
	decode_ok(&d, &c);
	assert_string_equal(c.reason, "EXCEPTION_INT_DIVIDE_BY_ZERO");
	assert_int_equal(c.fault_address, 0x40129e);
	s.code = 0xe06d7363;
	build(&d, &s);
	decode_ok(&d, &c);
	assert_string_equal(c.reason, "Unhandled C++ Exception");
	assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
	s.code = 0x12345678;
	build(&d, &s);
	decode_ok(&d, &c);
	assert_string_equal(c.reason, "");
	assert_int_equal(c.reason_code, 0x12345678);
}

static void test_linux_arm64(void **state)
{
	(void)state;
	struct mdb d;
	struct cg_crash c;

	build(&d, &LINUX_ARM64);
	decode_ok(&d, &c);
	assert_string_equal(c.arch, "arm64");
	assert_string_equal(c.os, "Linux");
	assert_string_equal(c.reason, "SIGSEGV");
	assert_int_equal(c.signal, 11);
	assert_true(c.present & CG_CRASH_HAS_SI_CODE);
	assert_int_equal(c.si_code, 2);
	assert_int_equal(c.fault_address, 0x45);
	assert_int_equal(c.pc, 0x7f0000012344);
	assert_int_equal(c.sp, 0x7ffc0000f000);
	assert_true(c.present & CG_CRASH_HAS_LR);
	assert_int_equal(c.lr, 0x401000);
	assert_string_equal(c.module, "libc.so.6");
	assert_int_equal(c.module_offset, 0x12344);
	assert_int_equal(c.build_id_len, 20);
	assert_int_equal(c.build_id[0], BUILD_ID[0] ^ 1);
	assert_memory_equal(c.build_id + 1, BUILD_ID + 1, 19);

	/* The PC in no module: no module, offset or build id. */
	struct spec s = LINUX_ARM64;
	s.pc = 0;
	build(&d, &s);
	decode_ok(&d, &c);
	assert_true(c.present & CG_CRASH_HAS_PC);
	assert_false(c.present & CG_CRASH_HAS_MODULE_OFFSET);
	assert_string_equal(c.module, "");
	assert_int_equal(c.build_id_len, 0);

	/* A signal the process sent itself has no fault address. */
	s = LINUX_ARM64;
	s.code = 11;
	s.flags = (uint32_t)-6; /* SI_TKILL */
	build(&d, &s);
	decode_ok(&d, &c);
	assert_int_equal(c.si_code, -6);
	assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);

	/* DUMP_REQUESTED is no signal. */
	s.code = 0xffffffff;
	build(&d, &s);
	decode_ok(&d, &c);
	assert_string_equal(c.reason, "DUMP_REQUESTED");
	assert_false(c.present & CG_CRASH_HAS_SIGNAL);
}

static void test_macos_padded_modules(void **state)
{
	(void)state;
	struct mdb d;
	struct cg_crash c;

	build(&d, &MAC_AMD64);
	decode_ok(&d, &c);
	assert_string_equal(c.arch, "x86_64");
	assert_string_equal(c.os, "Mac OS X");
	assert_string_equal(c.reason, "EXC_BAD_ACCESS / KERN_PROTECTION_FAILURE");
	assert_false(c.present & CG_CRASH_HAS_SIGNAL);
	assert_int_equal(c.fault_address, 0x10);
	assert_int_equal(c.pc, 0x401234);
	assert_int_equal(c.sp, 0x7fff5000);
	assert_string_equal(c.module, "crashy");
	assert_int_equal(c.module_offset, 0x1234);

	/* Crashpad's EXC_CRASH from abort(): code 0, signal in the parameters. */
	struct spec s = MAC_AMD64;
	s.code = 0;
	s.flags = 0;
	s.nparams = 3;
	s.info[0] = 0xa;
	s.info[1] = 0x6000000;
	build(&d, &s);
	decode_ok(&d, &c);
	assert_int_equal(c.exception_code, 0);
	assert_int_equal(c.signal, 6);
	assert_string_equal(c.reason, "EXC_CRASH / SIGABRT");
	assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);

	/* A module list 4 bytes off both accepted sizes is malformed. */
	build(&d, &MAC_AMD64);
	w32(d.b + 32 + 3 * 12 + 4, 4 + 4 + 2 * 108 + 2);
	assert_int_not_equal(cg_decode_minidump(d.b, d.n, &c), CG_OK);
	assert_non_null(strstr(c.decode_error, "module list"));
}

static void test_riscv64_thread_list_context(void **state)
{
	(void)state;
	struct mdb d;
	struct cg_crash c;

	build(&d, &LINUX_RISCV64);
	decode_ok(&d, &c);
	assert_string_equal(c.arch, "riscv64");
	assert_string_equal(c.reason, "SIGABRT");
	assert_int_equal(c.si_code, -6);
	assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
	assert_int_equal(c.pc, 0x400100);
	assert_int_equal(c.lr, 0x400200);
	assert_int_equal(c.sp, 0x3ffffff000);
	assert_string_equal(c.module, "crashy");
	assert_int_equal(c.module_offset, 0x100);
}

static void test_every_prefix_built(void **state)
{
	(void)state;
	const struct spec *specs[] = { &WIN_X86, &LINUX_ARM64, &MAC_AMD64, &LINUX_RISCV64 };
	struct mdb d;
	struct cg_crash full;

	for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
		build(&d, specs[i]);
		decode_ok(&d, &full);
		check_every_prefix(d.b, d.n, &full);

		/* Partial fields: once SystemInfo is in, arch and os are read. */
		struct cg_crash c;
		cg_decode_minidump(d.b, 32 + 4 * 12 + 56, &c);
		assert_string_equal(c.arch, full.arch);
		assert_string_equal(c.os, full.os);
		assert_false(c.present & CG_CRASH_HAS_THREAD);
		cg_decode_minidump(d.b, 32 + 4 * 12 + 56 + 168, &c);
		assert_true(c.present & CG_CRASH_HAS_EXCEPTION_CODE);
		assert_int_equal(c.exception_code, full.exception_code);
	}
}

/* Each byte set to 0x00, 0xff and 0x80 in turn: no crash, no read outside. */
static void test_corrupt_every_byte(void **state)
{
	(void)state;
	const struct spec *specs[] = { &WIN_X86, &LINUX_ARM64, &MAC_AMD64, &LINUX_RISCV64 };
	static const uint8_t vals[] = { 0x00, 0xff, 0x80 };
	struct mdb d;
	struct cg_crash c;

	for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
		build(&d, specs[i]);
		uint8_t *p = malloc(d.n);
		assert_non_null(p);
		for (size_t k = 0; k < d.n; k++) {
			for (size_t v = 0; v < sizeof vals; v++) {
				memcpy(p, d.b, d.n);
				p[k] = vals[v];
				int rc = cg_decode_minidump(p, d.n, &c);
				assert_true((rc == CG_OK) == (c.decode_error[0] == '\0'));
				assert_true(c.build_id_len <= CG_PROTO_MAX_BUILD_ID);
				assert_non_null(memchr(c.module, 0, sizeof c.module));
				assert_non_null(memchr(c.reason, 0, sizeof c.reason));
			}
		}
		free(p);
	}
}

static uint32_t le32_at(const struct mdb *d, size_t off)
{
	return (uint32_t)d->b[off] | (uint32_t)d->b[off + 1] << 8 |
	       (uint32_t)d->b[off + 2] << 16 | (uint32_t)d->b[off + 3] << 24;
}

static uint32_t le_stream_rva(const struct mdb *d, uint32_t type)
{
	uint32_t dir = le32_at(d, 12);

	for (uint32_t i = 0; i < le32_at(d, 8); i++)
		if (le32_at(d, dir + 12 * i) == type)
			return le32_at(d, dir + 12 * i + 8);
	fail_msg("no stream of type %u", type);
	return 0;
}

static uint32_t le_module_list_rva(const struct mdb *d)
{
	return le_stream_rva(d, 4);
}

static void test_hostile_values(void **state)
{
	(void)state;
	struct mdb d;
	struct cg_crash c;
	uint8_t *mod0;

	/* Not a minidump, empty, NULL. */
	assert_int_equal(cg_decode_minidump((const uint8_t *)"ZE\x01\x00", 4, &c), CG_ERR_MALFORMED);
	assert_int_equal(c.format, CG_FORMAT_MINIDUMP);
	assert_true(c.decode_error[0] != '\0');
	assert_int_not_equal(cg_decode_minidump(NULL, 0, &c), CG_OK);
	assert_int_not_equal(cg_decode_minidump(NULL, 100, &c), CG_OK);

	/* Wrong version. */
	build(&d, &WIN_X86);
	w32(d.b + 4, 0xa794);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);

	/* Too many streams; a directory past the end or near 4 GiB. */
	build(&d, &WIN_X86);
	w32(d.b + 8, 0xffffffff);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_TOO_LARGE);
	build(&d, &WIN_X86);
	w32(d.b + 12, 0xfffffff8);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);

	/* Stream rva + size wrapping 32 bits. */
	build(&d, &WIN_X86);
	w32(d.b + 32 + 4, 0xffffffff);
	w32(d.b + 32 + 8, 0x10);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);

	/* Duplicate stream. */
	build(&d, &WIN_X86);
	w32(d.b + 32 + 12, 7);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);
	assert_non_null(strstr(c.decode_error, "duplicate"));

	/* Module count near 2^32: capped, nothing read past the stream. */
	build(&d, &WIN_X86);
	mod0 = d.b + le_module_list_rva(&d);
	w32(mod0, 0xffffffff);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);

	/* A module whose base + size wraps: still no module for a low PC. */
	build(&d, &WIN_X86);
	mod0 = d.b + le_module_list_rva(&d) + 4;
	w64(mod0, 0xfffffffffffff000);
	w32(mod0 + 8, 0xffffffff);
	decode_ok(&d, &c);
	assert_false(c.present & CG_CRASH_HAS_MODULE_OFFSET);

	/* Name and CodeView rvas near 4 GiB. */
	build(&d, &WIN_X86);
	mod0 = d.b + le_module_list_rva(&d) + 4;
	w32(mod0 + 20, 0xfffffffe);
	w32(mod0 + 76, 0xffffffff);
	w32(mod0 + 80, 0xfffffff0);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);
	assert_true(c.present & CG_CRASH_HAS_MODULE_OFFSET);
	assert_string_equal(c.module, "");
	assert_int_equal(c.build_id_len, 0);

	/* A context too small for its CPU, and one of no known CPU. */
	build(&d, &WIN_X86);
	w32(d.b + le_stream_rva(&d, 6) + 160, 100);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);
	assert_false(c.present & CG_CRASH_HAS_PC);
	build(&d, &WIN_X86);
	w32(d.b + le32_at(&d, le_stream_rva(&d, 6) + 164), 0x02000000);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);
	assert_false(c.present & CG_CRASH_HAS_PC);

	/* A context that contradicts SystemInfo is not read; WOW64 is no
	 * contradiction for an x86 context. */
	build(&d, &WIN_X86);
	w16(d.b + le_stream_rva(&d, 7), 9);
	assert_int_equal(cg_decode_minidump(d.b, d.n, &c), CG_ERR_MALFORMED);
	assert_non_null(strstr(c.decode_error, "does not match"));
	assert_false(c.present & CG_CRASH_HAS_PC);
	assert_string_equal(c.arch, "x86_64");
	w16(d.b + le_stream_rva(&d, 7), 10);
	decode_ok(&d, &c);
	assert_string_equal(c.arch, "x86");
	assert_int_equal(c.pc, 0x40129e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_windows_x86),
		cmocka_unit_test(test_linux_arm64),
		cmocka_unit_test(test_macos_padded_modules),
		cmocka_unit_test(test_riscv64_thread_list_context),
		cmocka_unit_test(test_every_prefix_built),
		cmocka_unit_test(test_corrupt_every_byte),
		cmocka_unit_test(test_hostile_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
