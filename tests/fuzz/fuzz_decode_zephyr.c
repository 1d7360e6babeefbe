/*
 * libFuzzer target for the Zephyr core dump decoder. Every input goes
 * through cg_decode_zephyr() and cg_zephyr_early(); both must leave their
 * strings NUL-terminated, return CG_OK exactly when decode_error is empty,
 * and never claim a fault address. Where the early decoder decides, it must
 * agree with the full decode on every field a signature uses.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

/* Not yet in decode.h. */

#define SIG_BITS (CG_CRASH_HAS_PC | CG_CRASH_HAS_LR | CG_CRASH_HAS_SP | CG_CRASH_HAS_REASON_CODE)

static void check(int cond)
{
	if (!cond)
		abort();
}

static void check_crash(const struct cg_crash *c, int rc)
{
	check(memchr(c->arch, '\0', sizeof c->arch) != NULL);
	check(memchr(c->os, '\0', sizeof c->os) != NULL);
	check(memchr(c->reason, '\0', sizeof c->reason) != NULL);
	check(memchr(c->module, '\0', sizeof c->module) != NULL);
	check(memchr(c->decode_error, '\0', sizeof c->decode_error) != NULL);
	check(rc == CG_OK || rc == CG_ERR_MALFORMED || rc == CG_ERR_RANGE ||
	      rc == CG_ERR_TOO_LARGE);
	check((rc == CG_OK) == (c->decode_error[0] == '\0'));
	check(c->format == CG_FORMAT_ZEPHYR);
	check(!(c->present & CG_CRASH_HAS_FAULT_ADDRESS));
	check(c->build_id_len == 0);
	if (!(c->present & CG_CRASH_HAS_PC))
		check(c->pc == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cg_crash full, early;
	int rc, erc;

	rc = cg_decode_zephyr(data, size, &full);
	check_crash(&full, rc);
	erc = cg_zephyr_early(data, size, &early);
	check_crash(&early, erc);
	if (rc == CG_OK)
		check(erc == CG_OK || size == 12);
	if (erc == CG_OK) {
		check((early.present & SIG_BITS) == (full.present & SIG_BITS));
		check(early.pc == full.pc && early.lr == full.lr && early.sp == full.sp);
		check(early.reason_code == full.reason_code);
		check(strcmp(early.reason, full.reason) == 0);
		check(strcmp(early.arch, full.arch) == 0);
	}
	return 0;
}
