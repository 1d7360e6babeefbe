/* Crash signatures: stable where SPEC §7 says they must be, distinct where
 * crashes differ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "signature.h"

static struct cg_crash elf_crash(uint64_t base, uint64_t off)
{
	struct cg_crash c;
	memset(&c, 0, sizeof c);
	c.format = CG_FORMAT_ELF_CORE;
	c.present = CG_CRASH_HAS_PC | CG_CRASH_HAS_MODULE_OFFSET | CG_CRASH_HAS_REASON_CODE | CG_CRASH_HAS_SP;
	c.reason_code = 11;
	c.pc = base + off;
	c.sp = 0x7ffc0000 + base / 7; /* the stack moves too */
	c.module_offset = off;
	strcpy(c.module, "crash");
	c.build_id_len = 4;
	memcpy(c.build_id, "\xd3\x18\xae\x92", 4);
	return c;
}

static void test_stable_across_aslr(void **state)
{
	(void)state;
	char a[17], b[17];
	struct cg_crash x = elf_crash(0x55601e00f000, 0x1149), y = elf_crash(0x55aade4c1000, 0x1149);
	cg_crash_signature(&x, NULL, 0, a);
	cg_crash_signature(&y, NULL, 0, b);
	assert_string_equal(a, b);
	assert_int_equal(strlen(a), 16);
	assert_int_equal(strspn(a, "0123456789abcdef"), 16);
}

static void test_differs_by_offset_reason_and_build(void **state)
{
	(void)state;
	char a[17], b[17];
	struct cg_crash x = elf_crash(0x400000, 0x1149), y = elf_crash(0x400000, 0x1161);
	cg_crash_signature(&x, NULL, 0, a);
	cg_crash_signature(&y, NULL, 0, b);
	assert_string_not_equal(a, b);
	y = x;
	y.reason_code = 8;
	cg_crash_signature(&y, NULL, 0, b);
	assert_string_not_equal(a, b);
	y = x;
	y.build_id[0] ^= 1;
	cg_crash_signature(&y, NULL, 0, b);
	assert_string_not_equal(a, b);
}

static void test_zephyr_uses_whole_addresses(void **state)
{
	(void)state;
	struct cg_crash z;
	memset(&z, 0, sizeof z);
	z.format = CG_FORMAT_ZEPHYR;
	z.present = CG_CRASH_HAS_PC | CG_CRASH_HAS_LR | CG_CRASH_HAS_REASON_CODE;
	z.pc = 0xb44;
	z.lr = 0xb3f;
	char a[17], b[17];
	cg_crash_signature(&z, NULL, 0, a);
	z.pc = 0x1b44; /* same low 12 bits, other function */
	cg_crash_signature(&z, NULL, 0, b);
	assert_string_not_equal(a, b);
}

static void test_raw_hashes_content(void **state)
{
	(void)state;
	struct cg_crash r;
	memset(&r, 0, sizeof r);
	r.format = CG_FORMAT_RAW;
	const uint8_t d1[] = "the same bytes", d2[] = "other bytes";
	char a[17], b[17], c[17];
	cg_crash_signature(&r, d1, sizeof d1, a);
	cg_crash_signature(&r, d1, sizeof d1, b);
	cg_crash_signature(&r, d2, sizeof d2, c);
	assert_string_equal(a, b);
	assert_string_not_equal(a, c);
	/* SHA-256("abc") starts ba7816bf8f01cfea */
	cg_crash_signature(&r, (const uint8_t *)"abc", 3, a);
	assert_string_equal(a, "ba7816bf8f01cfea");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stable_across_aslr),
		cmocka_unit_test(test_differs_by_offset_reason_and_build),
		cmocka_unit_test(test_zephyr_uses_whole_addresses),
		cmocka_unit_test(test_raw_hashes_content),
	};
	return cmocka_run_group_tests_name("signature", tests, NULL, NULL);
}
