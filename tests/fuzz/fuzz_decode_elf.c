/*
 * libFuzzer target for the ELF core decoder (gateway/decode_elf.c). Any
 * input must decode without crashing, reading out of bounds or hanging, and
 * the result must keep the decoder's contract: the format set, an error
 * text exactly when the return is not CG_OK, strings terminated, the build
 * id within bounds, a module offset only with a PC it does not exceed, and
 * the same result twice. Any difference aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crashgate/error.h"
#include "decode.h"

#define KNOWN_PRESENT (CG_CRASH_HAS_SIGNAL | CG_CRASH_HAS_EXCEPTION_CODE |                \
		       CG_CRASH_HAS_FAULT_ADDRESS | CG_CRASH_HAS_PC | CG_CRASH_HAS_LR |   \
		       CG_CRASH_HAS_SP | CG_CRASH_HAS_MODULE_OFFSET |                     \
		       CG_CRASH_HAS_REASON_CODE | CG_CRASH_HAS_SI_CODE | CG_CRASH_HAS_THREAD)

static void check(int cond)
{
	if (!cond)
		abort();
}

static void terminated(const char *s, size_t size)
{
	check(memchr(s, '\0', size) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cg_crash a, b;
	int rc = cg_decode_elf_core(data, size, &a);

	check(rc == CG_OK || rc == CG_ERR_MALFORMED || rc == CG_ERR_RANGE ||
	      rc == CG_ERR_TOO_LARGE);
	check(a.format == CG_FORMAT_ELF_CORE);
	terminated(a.arch, sizeof a.arch);
	terminated(a.os, sizeof a.os);
	terminated(a.reason, sizeof a.reason);
	terminated(a.module, sizeof a.module);
	terminated(a.decode_error, sizeof a.decode_error);
	check((rc == CG_OK) == (a.decode_error[0] == '\0'));
	check(a.build_id_len <= CG_PROTO_MAX_BUILD_ID);
	check((a.present & ~KNOWN_PRESENT) == 0);
	if (a.present & CG_CRASH_HAS_MODULE_OFFSET)
		check((a.present & CG_CRASH_HAS_PC) && a.module_offset <= a.pc &&
		      a.module[0] != '\0');
	else
		check(a.module[0] == '\0' && a.module_offset == 0);

	check(cg_decode_elf_core(data, size, &b) == rc);
	check(memcmp(&a, &b, sizeof a) == 0);
	return 0;
}
