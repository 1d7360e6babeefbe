/*
 * libFuzzer target for the minidump decoder. Beyond "no crash, no read
 * outside the buffer", it checks the contract of decode.h: CG_OK exactly
 * when decode_error is empty, bounded NUL-terminated strings and build id,
 * a module offset only with a PC at or above it, and that a prefix of an
 * input that decodes whole (cut where two of its bytes say) never reports a
 * value that differs from what the whole input gave.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

static void check_str(const char *s, size_t cap)
{
	check(memchr(s, '\0', cap) != NULL);
}

static int check_one(const uint8_t *data, size_t size, struct cg_crash *c)
{
	int rc = cg_decode_minidump(data, size, c);

	check((rc == CG_OK) == (c->decode_error[0] == '\0'));
	check(rc == CG_OK || rc == CG_ERR_MALFORMED || rc == CG_ERR_RANGE ||
	      rc == CG_ERR_TOO_LARGE);
	check(c->format == CG_FORMAT_MINIDUMP);
	check_str(c->arch, sizeof c->arch);
	check_str(c->os, sizeof c->os);
	check_str(c->reason, sizeof c->reason);
	check_str(c->module, sizeof c->module);
	check_str(c->decode_error, sizeof c->decode_error);
	check(c->build_id_len <= CG_PROTO_MAX_BUILD_ID);
	if (c->present & CG_CRASH_HAS_MODULE_OFFSET) {
		check(c->present & CG_CRASH_HAS_PC);
		check(c->module_offset <= c->pc);
	} else {
		check(c->module[0] == '\0' && c->build_id_len == 0);
	}
	return rc;
}

/* Fields the prefix has must equal the whole input's. */
static void check_prefix(const struct cg_crash *p, const struct cg_crash *f)
{
	uint32_t has = p->present;

	check((has & ~f->present) == 0);
	check(p->arch[0] == '\0' || strcmp(p->arch, f->arch) == 0);
	check(p->os[0] == '\0' || strcmp(p->os, f->os) == 0);
	check(p->reason[0] == '\0' || strcmp(p->reason, f->reason) == 0);
	check(p->module[0] == '\0' || strcmp(p->module, f->module) == 0);
	check(!(has & CG_CRASH_HAS_EXCEPTION_CODE) || p->exception_code == f->exception_code);
	check(!(has & CG_CRASH_HAS_SIGNAL) || p->signal == f->signal);
	check(!(has & CG_CRASH_HAS_FAULT_ADDRESS) || p->fault_address == f->fault_address);
	check(!(has & CG_CRASH_HAS_THREAD) || p->thread == f->thread);
	check(!(has & CG_CRASH_HAS_PC) || p->pc == f->pc);
	check(!(has & CG_CRASH_HAS_SP) || p->sp == f->sp);
	check(!(has & CG_CRASH_HAS_LR) || p->lr == f->lr);
	check(!(has & CG_CRASH_HAS_MODULE_OFFSET) || p->module_offset == f->module_offset);
	check(p->build_id_len == 0 ||
	      (p->build_id_len == f->build_id_len &&
	       memcmp(p->build_id, f->build_id, f->build_id_len) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cg_crash whole, part;

	/* Only a consistent whole is a reference: an inconsistent one (say a
	 * context that contradicts SystemInfo) may be read differently when the
	 * part that shows the contradiction is cut off. */
	if (check_one(data, size, &whole) != CG_OK || size == 0)
		return 0;

	/* A copy of exactly the prefix, so that a read past it is caught. */
	size_t sel = (size_t)data[size - 1] | (size_t)data[size / 2] << 8;
	size_t cut = sel % size;
	uint8_t *p = malloc(cut ? cut : 1);
	check(p != NULL);
	memcpy(p, data, cut);
	check_one(p, cut, &part);
	check_prefix(&part, &whole);
	free(p);
	return 0;
}
