/*
 * The Zephyr core dump decoder against the shared fixtures (values from
 * Zephyr's own parser and GDB, see shared/fixtures/README.md) and against
 * dumps built here for every target and block version, including a cut at
 * every byte of each.
 *
 * Fixtures: $CG_FIXTURES, else ROOT/../shared/fixtures with ROOT three
 * levels above this file; missing fixtures skip those tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

/* Not yet in decode.h. */

/* ---- building dumps ---------------------------------------------------- */

#define N_FILES(a) (sizeof(a) / sizeof((a)[0]))
#define DUMP_MAX   4096
#define MAX_BOUNDS 32

struct dump {
	uint8_t b[DUMP_MAX];
	size_t n;
	size_t arch_end;            /* offset after the 'A' block, 0 if none */
	size_t bounds[MAX_BOUNDS];  /* offsets where a block ends */
	size_t nbounds;
};

static void put(struct dump *d, uint64_t v, unsigned width)
{
	assert_true(d->n + width <= DUMP_MAX);
	for (unsigned i = 0; i < width; i++)
		d->b[d->n++] = (uint8_t)(v >> (8 * i));
}

static void bound(struct dump *d)
{
	assert_true(d->nbounds < MAX_BOUNDS);
	d->bounds[d->nbounds++] = d->n;
}

static void hdr(struct dump *d, uint16_t version, uint16_t target, uint8_t ptr_bits,
		uint8_t flags, uint32_t reason)
{
	memset(d, 0, sizeof *d);
	put(d, 'Z', 1);
	put(d, 'E', 1);
	put(d, version, 2);
	put(d, target, 2);
	put(d, ptr_bits, 1);
	put(d, flags, 1);
	put(d, reason, 4);
	bound(d);
}

/* An 'A' block of nregs registers of `width` bytes, register i holding
 * base + i, declared as num_bytes (normally nregs * width). */
static void arch(struct dump *d, uint16_t version, unsigned width, unsigned nregs,
		 uint64_t base, uint16_t num_bytes)
{
	size_t start;

	put(d, 'A', 1);
	put(d, version, 2);
	put(d, num_bytes, 2);
	start = d->n;
	for (unsigned i = 0; i < nregs; i++)
		put(d, base + i, width);
	while (d->n < start + num_bytes)
		put(d, 0xa5, 1);
	d->arch_end = d->n;
	bound(d);
}

static void mem(struct dump *d, unsigned ptr, uint64_t start, size_t size)
{
	put(d, 'M', 1);
	put(d, 1, 2);
	put(d, start, ptr);
	put(d, start + size, ptr);
	for (size_t i = 0; i < size; i++)
		put(d, (uint8_t)i, 1);
	bound(d);
}

/* 'T' or any block with the common (id, version, num_bytes) header. */
static void generic(struct dump *d, uint8_t id, size_t size)
{
	put(d, id, 1);
	put(d, 1, 2);
	put(d, size, 2);
	for (size_t i = 0; i < size; i++)
		put(d, 0x5a, 1);
	bound(d);
}

static void cpu_snapshot(struct dump *d, unsigned ptr, size_t size)
{
	put(d, 'F', 1);
	put(d, 1, 2);
	put(d, size, 2);
	put(d, 1, 4);
	put(d, 0x80001000, ptr);
	for (size_t i = 0; i < size; i++)
		put(d, 0x33, 1);
	bound(d);
}

/* Reference CRC-32 (IEEE), bit by bit. */
static uint32_t crc32_ref(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;

	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
	}
	return ~c;
}

static void crc(struct dump *d)
{
	uint32_t c = crc32_ref(d->b, d->n);

	put(d, 'C', 1);
	put(d, 1, 2);
	put(d, c, 4);
	bound(d);
}

/* ---- checking ------------------------------------------------------------ */

static bool terminated(const char *s, size_t cap)
{
	return memchr(s, '\0', cap) != NULL;
}

static void check_strings(const struct cg_crash *c)
{
	assert_true(terminated(c->arch, sizeof c->arch));
	assert_true(terminated(c->os, sizeof c->os));
	assert_true(terminated(c->reason, sizeof c->reason));
	assert_true(terminated(c->module, sizeof c->module));
	assert_true(terminated(c->decode_error, sizeof c->decode_error));
}

/* Decodes from an exactly-sized heap copy so that ASan sees any overread. */
static int decode_copy(const uint8_t *b, size_t n, struct cg_crash *c, bool early)
{
	uint8_t *copy = malloc(n ? n : 1);
	int rc;

	assert_non_null(copy);
	if (n)
		memcpy(copy, b, n);
	rc = early ? cg_zephyr_early(copy, n, c) : cg_decode_zephyr(copy, n, c);
	free(copy);
	check_strings(c);
	assert_int_equal(c->format, CG_FORMAT_ZEPHYR);
	assert_false(c->present & CG_CRASH_HAS_FAULT_ADDRESS);
	assert_true(rc == CG_OK || rc == CG_ERR_MALFORMED);
	assert_int_equal(rc == CG_OK, c->decode_error[0] == '\0');
	return rc;
}

static void decode_ok(const struct dump *d, struct cg_crash *c)
{
	int rc = decode_copy(d->b, d->n, c, false);

	if (rc != CG_OK)
		fail_msg("decode failed: %s", c->decode_error);
}

static void expect_regs(const struct cg_crash *c, const char *arch_name, bool has_pc,
			uint64_t pc, bool has_lr, uint64_t lr, bool has_sp, uint64_t sp)
{
	assert_string_equal(c->arch, arch_name);
	assert_string_equal(c->os, "Zephyr");
	assert_int_equal(!!(c->present & CG_CRASH_HAS_PC), has_pc);
	assert_int_equal(!!(c->present & CG_CRASH_HAS_LR), has_lr);
	assert_int_equal(!!(c->present & CG_CRASH_HAS_SP), has_sp);
	if (has_pc)
		assert_int_equal(c->pc, pc);
	if (has_lr)
		assert_int_equal(c->lr, lr);
	if (has_sp)
		assert_int_equal(c->sp, sp);
}

static bool is_bound(const struct dump *d, size_t off)
{
	for (size_t i = 0; i < d->nbounds; i++)
		if (d->bounds[i] == off)
			return true;
	return false;
}

/*
 * Every prefix of a valid dump: never an overread, CG_OK exactly where the
 * prefix ends on a block boundary (and, with a CRC trailer, only whole),
 * registers exactly when the arch block is whole, and the early decoder in
 * agreement with the full one.
 */
static void cut_everywhere(const struct dump *d, bool has_crc)
{
	struct cg_crash full, c, e;

	decode_ok(d, &full);
	for (size_t n = 0; n <= d->n; n++) {
		int rc = decode_copy(d->b, n, &c, false);
		int erc = decode_copy(d->b, n, &e, true);
		bool whole_arch = d->arch_end && n >= d->arch_end;
		bool want_ok = has_crc ? n == d->n : (n >= 12 && is_bound(d, n));

		if ((rc == CG_OK) != want_ok)
			fail_msg("cut at %zu of %zu: rc %d (%s)", n, d->n, rc, c.decode_error);
		if (n >= 12)
			assert_int_equal(c.reason_code, full.reason_code);
		if (whole_arch) {
			assert_int_equal(c.present & (CG_CRASH_HAS_PC | CG_CRASH_HAS_LR | CG_CRASH_HAS_SP),
					 full.present & (CG_CRASH_HAS_PC | CG_CRASH_HAS_LR | CG_CRASH_HAS_SP));
			assert_int_equal(c.pc, full.pc);
			assert_int_equal(c.lr, full.lr);
			assert_int_equal(c.sp, full.sp);
			assert_string_equal(c.arch, full.arch);
		} else {
			assert_false(c.present & (CG_CRASH_HAS_PC | CG_CRASH_HAS_LR | CG_CRASH_HAS_SP));
		}
		assert_int_equal(erc == CG_OK, whole_arch || (!d->arch_end && n > 12));
		if (erc == CG_OK) {
			assert_int_equal(e.present, full.present);
			assert_int_equal(e.pc, full.pc);
			assert_int_equal(e.lr, full.lr);
			assert_int_equal(e.sp, full.sp);
			assert_int_equal(e.reason_code, full.reason_code);
			assert_string_equal(e.reason, full.reason);
			assert_string_equal(e.arch, full.arch);
		}
	}
}

/* ---- fixtures -------------------------------------------------------------- */

static void fixtures_dir(char *dir, size_t cap)
{
	const char *env = getenv("CG_FIXTURES");
	char path[1024];
	char *slash;

	if (env && *env) {
		snprintf(dir, cap, "%s", env);
		return;
	}
	snprintf(path, sizeof path, "%s", __FILE__);
	for (int i = 0; i < 3; i++) {
		slash = strrchr(path, '/');
		if (!slash) {
			snprintf(path, sizeof path, ".");
			break;
		}
		*slash = '\0';
	}
	if ((size_t)snprintf(dir, cap, "%s/../shared/fixtures", path[0] ? path : "/") >= cap)
		dir[0] = '\0'; /* too long: treated as absent */
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long size;

	if (!f)
		return NULL;
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	size = ftell(f);
	assert_true(size >= 0);
	rewind(f);
	buf = malloc(size ? (size_t)size : 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	*len = (size_t)size;
	return buf;
}

static bool hex_field(json_t *fx, const char *key, uint64_t *v)
{
	json_t *j = json_object_get(fx, key);

	if (!json_is_string(j))
		return false;
	*v = strtoull(json_string_value(j), NULL, 16);
	return true;
}

static void check_fixture(const char *dir, json_t *fx)
{
	const char *file = json_string_value(json_object_get(fx, "file"));
	bool valid = json_is_true(json_object_get(fx, "valid"));
	char path[1200];
	struct cg_crash c, e;
	uint64_t want, got_reason;
	size_t len;
	uint8_t *buf;
	int rc;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	buf = read_file(path, &len);
	if (!buf)
		fail_msg("%s listed in expected.json but not readable", path);
	rc = decode_copy(buf, len, &c, false);
	print_message("  %-45s rc %d pc 0x%" PRIx64 " %s\n", file, rc, c.pc, c.decode_error);

	assert_int_equal(rc, valid ? CG_OK : CG_ERR_MALFORMED);
	assert_string_equal(c.arch, json_string_value(json_object_get(fx, "arch")));
	assert_string_equal(c.os, json_string_value(json_object_get(fx, "os")));
	assert_string_equal(c.reason, json_string_value(json_object_get(fx, "reason_name")));
	assert_true(hex_field(fx, "reason", &got_reason));
	assert_true(c.present & CG_CRASH_HAS_REASON_CODE);
	assert_int_equal(c.reason_code, got_reason);
	assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);

	if (hex_field(fx, "pc", &want)) {
		assert_true(c.present & CG_CRASH_HAS_PC);
		assert_int_equal(c.pc, want);
	} else {
		assert_false(c.present & CG_CRASH_HAS_PC);
	}
	if (hex_field(fx, "lr", &want)) {
		assert_true(c.present & CG_CRASH_HAS_LR);
		assert_int_equal(c.lr, want);
	} else {
		assert_false(c.present & CG_CRASH_HAS_LR);
	}
	if (hex_field(fx, "sp", &want)) {
		assert_true(c.present & CG_CRASH_HAS_SP);
		assert_int_equal(c.sp, want);
	} else {
		assert_false(c.present & CG_CRASH_HAS_SP);
	}
	if (!valid)
		assert_non_null(strstr(c.decode_error, "arch block"));

	/* The early decoder agrees wherever it can decide. */
	rc = decode_copy(buf, len, &e, true);
	assert_int_equal(rc, valid ? CG_OK : CG_ERR_MALFORMED);
	assert_int_equal(e.present, c.present);
	assert_int_equal(e.pc, c.pc);
	assert_int_equal(e.lr, c.lr);
	assert_int_equal(e.sp, c.sp);
	free(buf);
}

static void test_fixtures(void **state)
{
	char dir[1024], path[1100];
	json_error_t err;
	json_t *root, *list, *fx;
	size_t i, checked = 0;
	FILE *probe;

	(void)state;
	fixtures_dir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/expected.json", dir);
	probe = fopen(path, "r");
	if (!probe) {
		print_message("fixtures not found at %s: skipped\n", dir);
		skip();
	}
	fclose(probe);
	root = json_load_file(path, 0, &err);
	if (!root)
		fail_msg("%s:%d: %s", path, err.line, err.text);
	list = json_object_get(root, "fixtures");
	assert_true(json_is_array(list));
	json_array_foreach(list, i, fx) {
		const char *file = json_string_value(json_object_get(fx, "file"));
		const char *format = json_string_value(json_object_get(fx, "format"));
		size_t fl;

		if (!file || !format || strcmp(format, "zephyr") != 0)
			continue;
		fl = strlen(file);
		if (fl < 4 || strcmp(file + fl - 4, ".bin") != 0)
			continue;       /* the console log form of a dump */
		check_fixture(dir, fx);
		checked++;
	}
	json_decref(root);
	assert_true(checked >= 6);
}

/* Every prefix of every fixture. */
static void test_fixtures_cut(void **state)
{
	static const char *const files[] = {
		"zephyr/zephyr_cortex_m_v2.bin", "zephyr/zephyr_riscv64.bin",
		"zephyr/qemu_x86_docs_coredump.bin",
	};
	char dir[1024], path[1200];
	struct cg_crash full, c;

	(void)state;
	fixtures_dir(dir, sizeof dir);
	for (size_t i = 0; i < N_FILES(files); i++) {
		size_t len;
		uint8_t *buf;

		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		buf = read_file(path, &len);
		if (!buf) {
			print_message("%s not found: skipped\n", path);
			skip();
		}
		assert_int_equal(decode_copy(buf, len, &full, false), CG_OK);
		for (size_t n = 0; n < len; n++) {
			int rc = decode_copy(buf, n, &c, false);

			if (c.present & CG_CRASH_HAS_PC)
				assert_int_equal(c.pc, full.pc);
			(void)rc;
		}
		free(buf);
	}
}

/* ---- each target ------------------------------------------------------------ */

static void test_x86_52_and_56(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	/* vector, code, eax ecx edx ebx esp ebp esi edi eip eflags cs */
	hdr(&d, 1, 1, 5, 0, 0);
	arch(&d, 1, 4, 13, 0x1000, 52);
	mem(&d, 4, 0x119000, 16);
	decode_ok(&d, &c);
	expect_regs(&c, "x86", true, 0x100a, false, 0, true, 0x1006);
	assert_string_equal(c.reason, "K_ERR_CPU_EXCEPTION");
	cut_everywhere(&d, false);

	/* The documentation's block: a 14th word (CR3) after cs. */
	hdr(&d, 1, 1, 5, 0, 0);
	arch(&d, 1, 4, 14, 0x1000, 56);
	mem(&d, 4, 0x119000, 16);
	decode_ok(&d, &c);
	expect_regs(&c, "x86", true, 0x100a, false, 0, true, 0x1006);
	cut_everywhere(&d, false);
}

static void test_x86_64(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	/* vector, code, rax rcx rdx rsi rdi rsp r8-r11 rip eflags cs ss rbp,
	 * then rbx r12-r15 with CONFIG_EXCEPTION_DEBUG */
	hdr(&d, 2, 2, 6, 0, 3);
	arch(&d, 1, 8, 22, 0xffff800000001000ull, 176);
	generic(&d, 'T', 40);
	mem(&d, 8, 0xffff800000200000ull, 32);
	decode_ok(&d, &c);
	expect_regs(&c, "x86_64", true, 0xffff80000000100cull, false, 0, true,
		    0xffff800000001007ull);
	assert_string_equal(c.reason, "K_ERR_KERNEL_OOPS");
	assert_int_equal(c.reason_code, 3);
	cut_everywhere(&d, false);

	hdr(&d, 2, 2, 6, 0, 3);
	arch(&d, 1, 8, 17, 0x2000, 136);
	decode_ok(&d, &c);
	expect_regs(&c, "x86_64", true, 0x200c, false, 0, true, 0x2007);
}

static void test_cortex_m(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	/* r0-r3 r12 lr pc xpsr sp */
	hdr(&d, 1, 3, 5, 0, 30);
	arch(&d, 1, 4, 9, 0x100, 36);
	mem(&d, 4, 0x20001000, 64);
	decode_ok(&d, &c);
	expect_regs(&c, "arm-cortex-m", true, 0x106, true, 0x105, true, 0x108);
	assert_string_equal(c.reason, "K_ERR_ARM_USAGE_DIV_0");
	cut_everywhere(&d, false);

	/* v2 adds r4-r11 */
	hdr(&d, 2, 3, 5, 0, 26);
	arch(&d, 2, 4, 17, 0x200, 68);
	mem(&d, 4, 0x20001000, 64);
	mem(&d, 4, 0x20002000, 8);
	decode_ok(&d, &c);
	expect_regs(&c, "arm-cortex-m", true, 0x206, true, 0x205, true, 0x208);
	assert_string_equal(c.reason, "K_ERR_ARM_BUS_IMPRECISE_DATA_BUS");
	cut_everywhere(&d, false);

	/* v3 (upstream today) adds the callee-saved validity/offset pair */
	hdr(&d, 2, 3, 5, 0, 0);
	arch(&d, 3, 4, 19, 0x300, 76);
	decode_ok(&d, &c);
	expect_regs(&c, "arm-cortex-m", true, 0x306, true, 0x305, true, 0x308);
}

static void test_riscv(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	/* v1, RV32: ra tp t0-t2 a0-a7 t3-t6 pc sp */
	hdr(&d, 2, 4, 5, 0, 4);
	arch(&d, 1, 4, 19, 0x80000000, 76);
	mem(&d, 4, 0x80003f00, 64);
	decode_ok(&d, &c);
	expect_regs(&c, "riscv32", true, 0x80000011, true, 0x80000000, true, 0x80000012);
	assert_string_equal(c.reason, "K_ERR_KERNEL_PANIC");
	cut_everywhere(&d, false);

	/* v1 as older Zephyr wrote it: 18 registers, no SP */
	hdr(&d, 2, 4, 5, 0, 4);
	arch(&d, 1, 4, 18, 0x80000000, 72);
	decode_ok(&d, &c);
	expect_regs(&c, "riscv32", true, 0x80000011, true, 0x80000000, false, 0);

	/* v2, RV64 */
	hdr(&d, 2, 4, 6, 0, 2);
	arch(&d, 2, 8, 19, 0x80200000, 152);
	mem(&d, 8, 0x80283e00, 64);
	decode_ok(&d, &c);
	expect_regs(&c, "riscv64", true, 0x80200011, true, 0x80200000, true, 0x80200012);
	cut_everywhere(&d, false);

	/* v3, RV32 in GDB order: x0 ra sp gp tp ... t6 pc */
	hdr(&d, 2, 4, 5, 0, 0);
	arch(&d, 3, 4, 33, 0x1000, 132);
	decode_ok(&d, &c);
	expect_regs(&c, "riscv32", true, 0x1020, true, 0x1001, true, 0x1002);

	/* v4, RV64 in GDB order */
	hdr(&d, 2, 4, 6, 0, 0);
	arch(&d, 4, 8, 33, 0x2000, 264);
	decode_ok(&d, &c);
	expect_regs(&c, "riscv64", true, 0x2020, true, 0x2001, true, 0x2002);

	/* the width follows the pointer size when the header gives it ... */
	hdr(&d, 2, 4, 6, 0, 0);
	arch(&d, 1, 8, 19, 0x3000, 152);
	decode_ok(&d, &c);
	expect_regs(&c, "riscv64", true, 0x3011, true, 0x3000, true, 0x3012);

	/* ... and the block version when it does not */
	hdr(&d, 2, 4, 0, 0, 0);
	arch(&d, 2, 8, 19, 0x4000, 152);
	decode_ok(&d, &c);
	expect_regs(&c, "riscv64", true, 0x4011, true, 0x4000, true, 0x4012);

	/* an unknown later version: the arch is known, the registers are not
	 * guessed, and the block is skipped by its length */
	hdr(&d, 2, 4, 5, 0, 0);
	arch(&d, 5, 4, 40, 0x5000, 160);
	mem(&d, 4, 0x1000, 4);
	decode_ok(&d, &c);
	expect_regs(&c, "riscv32", false, 0, false, 0, false, 0);
}

static void test_arm64(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	/* v1: x0-x18 lr spsr elr; no SP */
	hdr(&d, 2, 6, 6, 0, 0);
	arch(&d, 1, 8, 22, 0x40000000, 176);
	mem(&d, 8, 0x40100000, 32);
	decode_ok(&d, &c);
	expect_regs(&c, "arm64", true, 0x40000015, true, 0x40000013, false, 0);
	cut_everywhere(&d, false);

	/* v2: + fp sp */
	hdr(&d, 2, 6, 6, 0, 0);
	arch(&d, 2, 8, 24, 0x40000000, 192);
	cpu_snapshot(&d, 8, 192);
	cpu_snapshot(&d, 8, 0);
	mem(&d, 8, 0x40100000, 32);
	decode_ok(&d, &c);
	expect_regs(&c, "arm64", true, 0x40000015, true, 0x40000013, true, 0x40000017);
	cut_everywhere(&d, false);

	/* v3: x0-x28 lr spsr elr fp sp */
	hdr(&d, 2, 6, 6, 0, 0);
	arch(&d, 3, 8, 34, 0x40000000, 272);
	decode_ok(&d, &c);
	expect_regs(&c, "arm64", true, 0x4000001f, true, 0x4000001d, true, 0x40000021);

	/* v4 is unknown and reordered blocks before: no registers */
	hdr(&d, 2, 6, 6, 0, 0);
	arch(&d, 4, 8, 40, 0x40000000, 320);
	decode_ok(&d, &c);
	expect_regs(&c, "arm64", false, 0, false, 0, false, 0);
}

/* ---- blocks and versions -------------------------------------------------- */

static void test_newer_arch_version_longer_block(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	/* A hypothetical Cortex-M v9 that appended 8 more words: the known
	 * prefix is read, the rest skipped by num_bytes. */
	hdr(&d, 2, 3, 5, 0, 0);
	arch(&d, 9, 4, 25, 0x900, 100);
	mem(&d, 4, 0x20000000, 16);
	decode_ok(&d, &c);
	expect_regs(&c, "arm-cortex-m", true, 0x906, true, 0x905, true, 0x908);
	cut_everywhere(&d, false);

	/* A block shorter than its version says yields the registers it holds. */
	hdr(&d, 2, 3, 5, 0, 0);
	arch(&d, 2, 4, 7, 0xa00, 28);
	decode_ok(&d, &c);
	expect_regs(&c, "arm-cortex-m", true, 0xa06, true, 0xa05, false, 0);

	/* A newer header version is read as version 2. */
	hdr(&d, 3, 3, 5, 0, 0);
	arch(&d, 2, 4, 17, 0xb00, 68);
	decode_ok(&d, &c);
	expect_regs(&c, "arm-cortex-m", true, 0xb06, true, 0xb05, true, 0xb08);
}

static void test_unknown_block_skipped(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	hdr(&d, 2, 3, 5, 0, 1);
	arch(&d, 2, 4, 17, 0x100, 68);
	generic(&d, 'X', 21);
	generic(&d, 'T', 300);
	generic(&d, 0, 0);
	mem(&d, 4, 0x20000000, 8);
	generic(&d, 0xff, 3);
	decode_ok(&d, &c);
	expect_regs(&c, "arm-cortex-m", true, 0x106, true, 0x105, true, 0x108);
	assert_string_equal(c.reason, "K_ERR_SPURIOUS_IRQ");
	cut_everywhere(&d, false);

	/* An unknown block whose length runs past the end. */
	hdr(&d, 2, 3, 5, 0, 1);
	arch(&d, 2, 4, 17, 0x100, 68);
	put(&d, 'Q', 1);
	put(&d, 1, 2);
	put(&d, 500, 2);
	put(&d, 0, 4);
	assert_int_equal(decode_copy(d.b, d.n, &c, false), CG_ERR_MALFORMED);
	assert_string_equal(c.decode_error, "truncated in an unknown block: 4 of 500 bytes");
	expect_regs(&c, "arm-cortex-m", true, 0x106, true, 0x105, true, 0x108);
}

static void test_crc_trailer(void **state)
{
	struct dump d;
	struct cg_crash c;
	size_t at;

	(void)state;
	hdr(&d, 2, 6, 6, 0x01, 0);
	arch(&d, 2, 8, 24, 0x40000000, 192);
	mem(&d, 8, 0x40100000, 32);
	crc(&d);
	decode_ok(&d, &c);
	expect_regs(&c, "arm64", true, 0x40000015, true, 0x40000013, true, 0x40000017);
	cut_everywhere(&d, true);

	/* one flipped bit in the memory */
	at = d.n - 10;
	d.b[at] ^= 0x10;
	assert_int_equal(decode_copy(d.b, d.n, &c, false), CG_ERR_MALFORMED);
	assert_non_null(strstr(c.decode_error, "CRC-32 mismatch"));
	assert_true(c.present & CG_CRASH_HAS_PC);
	d.b[at] ^= 0x10;

	/* flag set, trailer lost */
	assert_int_equal(decode_copy(d.b, d.n - 7, &c, false), CG_ERR_MALFORMED);
	assert_non_null(strstr(c.decode_error, "CRC-32 trailer"));

	/* the flag is covered by the CRC too */
	d.b[7] = 0;
	assert_int_equal(decode_copy(d.b, d.n, &c, false), CG_ERR_MALFORMED);

	/* a trailer without the flag is checked all the same */
	hdr(&d, 2, 6, 6, 0, 0);
	arch(&d, 2, 8, 24, 0x40000000, 192);
	crc(&d);
	decode_ok(&d, &c);

	/* trailers in a row, each over all before it (the previous included) */
	mem(&d, 8, 0x40100000, 16);
	crc(&d);
	crc(&d);
	decode_ok(&d, &c);
	d.b[d.n - 8] ^= 1;
	assert_int_equal(decode_copy(d.b, d.n, &c, false), CG_ERR_MALFORMED);
	assert_non_null(strstr(c.decode_error, "CRC-32 mismatch"));
}

static void test_reasons(void **state)
{
	static const struct {
		uint16_t target;
		uint32_t reason;
		const char *name;
	} cases[] = {
		{ 1, 0, "K_ERR_CPU_EXCEPTION" }, { 2, 1, "K_ERR_SPURIOUS_IRQ" },
		{ 4, 2, "K_ERR_STACK_CHK_FAIL" }, { 6, 3, "K_ERR_KERNEL_OOPS" },
		{ 3, 4, "K_ERR_KERNEL_PANIC" }, { 3, 5, "" }, { 3, 15, "" },
		{ 3, 16, "K_ERR_ARM_MEM_GENERIC" }, { 3, 19, "K_ERR_ARM_MEM_DATA_ACCESS" },
		{ 3, 29, "K_ERR_ARM_USAGE_GENERIC" }, { 3, 36, "K_ERR_ARM_USAGE_UNDEFINED_INSTRUCTION" },
		{ 3, 44, "K_ERR_ARM_SECURE_LAZY_STATE_ERROR" }, { 3, 45, "" },
		{ 4, 16, "" }, { 6, 30, "" }, { 3, 0xffffffffu, "" },
	};
	struct dump d;
	struct cg_crash c;

	(void)state;
	for (size_t i = 0; i < N_FILES(cases); i++) {
		hdr(&d, 2, cases[i].target, 5, 0, cases[i].reason);
		decode_ok(&d, &c);
		assert_string_equal(c.reason, cases[i].name);
		assert_int_equal(c.reason_code, cases[i].reason);
		assert_true(c.present & CG_CRASH_HAS_REASON_CODE);
	}
}

static void test_bad_input(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	assert_int_equal(cg_decode_zephyr(NULL, 0, &c), CG_ERR_MALFORMED);
	assert_int_equal(c.format, CG_FORMAT_ZEPHYR);
	assert_int_equal(decode_copy((const uint8_t *)"MDMP", 4, &c, false), CG_ERR_MALFORMED);
	assert_string_equal(c.os, "");

	/* a short header keeps what it has */
	hdr(&d, 2, 3, 5, 0, 0);
	assert_int_equal(decode_copy(d.b, 7, &c, false), CG_ERR_MALFORMED);
	assert_string_equal(c.decode_error, "truncated in the header: 7 of 12 bytes");
	assert_string_equal(c.arch, "arm-cortex-m");
	assert_false(c.present & CG_CRASH_HAS_REASON_CODE);

	/* the fixture's case, built: 40 of 68 arch bytes */
	hdr(&d, 2, 3, 5, 0, 0);
	arch(&d, 2, 4, 17, 0x100, 68);
	assert_int_equal(decode_copy(d.b, 12 + 5 + 40, &c, false), CG_ERR_MALFORMED);
	assert_string_equal(c.decode_error, "truncated in the arch block: 40 of 68 bytes");
	assert_false(c.present & CG_CRASH_HAS_PC);
	assert_string_equal(c.reason, "K_ERR_CPU_EXCEPTION");

	hdr(&d, 0, 3, 5, 0, 0);
	assert_int_equal(decode_copy(d.b, d.n, &c, false), CG_ERR_MALFORMED);

	/* a memory block that ends before it starts */
	hdr(&d, 2, 3, 5, 0, 0);
	arch(&d, 2, 4, 17, 0x100, 68);
	put(&d, 'M', 1);
	put(&d, 1, 2);
	put(&d, 0x2000, 4);
	put(&d, 0x1000, 4);
	assert_int_equal(decode_copy(d.b, d.n, &c, false), CG_ERR_MALFORMED);
	assert_string_equal(c.decode_error, "memory block 1: end 0x1000 below start 0x2000");
	assert_true(c.present & CG_CRASH_HAS_PC);

	/* a memory block claiming 4 GiB */
	hdr(&d, 2, 3, 5, 0, 0);
	mem(&d, 4, 0x100, 4);
	put(&d, 'M', 1);
	put(&d, 1, 2);
	put(&d, 0, 4);
	put(&d, 0xffffffffu, 4);
	assert_int_equal(decode_copy(d.b, d.n, &c, false), CG_ERR_MALFORMED);
	assert_string_equal(c.decode_error,
			    "truncated in memory block 2: 0 of 4294967295 bytes");

	/* memory without a pointer size */
	hdr(&d, 2, 4, 0, 0, 0);
	mem(&d, 4, 0x100, 4);
	assert_int_equal(decode_copy(d.b, d.n, &c, false), CG_ERR_MALFORMED);
	assert_string_equal(c.decode_error, "memory block 1: pointer size unknown");

	/* an unknown target: no arch, blocks still walked */
	hdr(&d, 2, 9, 5, 0, 0);
	arch(&d, 1, 4, 9, 0x100, 36);
	mem(&d, 4, 0x100, 4);
	decode_ok(&d, &c);
	expect_regs(&c, "", false, 0, false, 0, false, 0);
}

static void test_arch_block_not_first(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	/* Zephyr writes the arch block right after the header; one found later
	 * is skipped, so that the first chunk alone decides the signature. */
	hdr(&d, 2, 3, 5, 0, 0);
	mem(&d, 4, 0x100, 4);
	arch(&d, 2, 4, 17, 0x100, 68);
	decode_ok(&d, &c);
	expect_regs(&c, "arm-cortex-m", false, 0, false, 0, false, 0);
	assert_int_equal(decode_copy(d.b, d.n, &c, true), CG_OK);
	expect_regs(&c, "arm-cortex-m", false, 0, false, 0, false, 0);
}

static void test_early(void **state)
{
	struct dump d;
	struct cg_crash c;

	(void)state;
	hdr(&d, 2, 3, 5, 0, 3);
	arch(&d, 2, 4, 17, 0x100, 68);
	mem(&d, 4, 0x20000000, 1000);

	/* the first chunk: header and arch block, memory still to come */
	assert_int_equal(decode_copy(d.b, d.arch_end + 10, &c, true), CG_OK);
	expect_regs(&c, "arm-cortex-m", true, 0x106, true, 0x105, true, 0x108);
	assert_string_equal(c.reason, "K_ERR_KERNEL_OOPS");
	assert_int_equal(decode_copy(d.b, d.arch_end + 10, &c, false), CG_ERR_MALFORMED);

	assert_int_equal(decode_copy(d.b, 12, &c, true), CG_ERR_MALFORMED);
	assert_string_equal(c.decode_error, "truncated after the header");
	assert_int_equal(decode_copy(d.b, 30, &c, true), CG_ERR_MALFORMED);
	assert_string_equal(c.decode_error, "truncated in the arch block: 13 of 68 bytes");

	/* a dump without an arch block */
	hdr(&d, 2, 3, 5, 0, 4);
	generic(&d, 'T', 100);
	assert_int_equal(decode_copy(d.b, 13, &c, true), CG_OK);
	expect_regs(&c, "arm-cortex-m", false, 0, false, 0, false, 0);
	assert_string_equal(c.reason, "K_ERR_KERNEL_PANIC");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_fixtures_cut),
		cmocka_unit_test(test_x86_52_and_56),
		cmocka_unit_test(test_x86_64),
		cmocka_unit_test(test_cortex_m),
		cmocka_unit_test(test_riscv),
		cmocka_unit_test(test_arm64),
		cmocka_unit_test(test_newer_arch_version_longer_block),
		cmocka_unit_test(test_unknown_block_skipped),
		cmocka_unit_test(test_crc_trailer),
		cmocka_unit_test(test_reasons),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_arch_block_not_first),
		cmocka_unit_test(test_early),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
