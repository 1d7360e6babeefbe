/*
 * Format detection and dispatch to the decoders (SPEC §7). The decoders
 * live in decode_zephyr.c, decode_minidump.c and decode_elf.c.
 */
#include "decode.h"

#include <stdio.h>
#include <string.h>

#include "crashgate/error.h"

#define ELF_ET_CORE 4

/* ELF magic and e_type ET_CORE, read in the byte order EI_DATA names. */
static bool is_elf_core(const uint8_t *buf, size_t len)
{
	uint16_t type;

	if (len < 18 || memcmp(buf, "\177ELF", 4) != 0)
		return false;
	if (buf[5] == 1)
		type = (uint16_t)(buf[17] << 8 | buf[16]);
	else if (buf[5] == 2)
		type = (uint16_t)(buf[16] << 8 | buf[17]);
	else
		return false;
	return type == ELF_ET_CORE;
}

uint32_t cg_detect_format(const uint8_t *buf, size_t len)
{
	if (buf == NULL)
		return CG_FORMAT_RAW;
	if (len >= 4 && memcmp(buf, "MDMP", 4) == 0)
		return CG_FORMAT_MINIDUMP;
	if (len >= 2 && memcmp(buf, "ZE", 2) == 0)
		return CG_FORMAT_ZEPHYR;
	if (is_elf_core(buf, len))
		return CG_FORMAT_ELF_CORE;
	return CG_FORMAT_RAW;
}

int cg_decode(const uint8_t *buf, size_t len, uint32_t declared_format, struct cg_crash *out)
{
	uint32_t format = declared_format;

	if (format == CG_FORMAT_DETECT)
		format = cg_detect_format(buf, len);
	switch (format) {
	case CG_FORMAT_ZEPHYR:
		return cg_decode_zephyr(buf, len, out);
	case CG_FORMAT_MINIDUMP:
		return cg_decode_minidump(buf, len, out);
	case CG_FORMAT_ELF_CORE:
		return cg_decode_elf_core(buf, len, out);
	case CG_FORMAT_RAW:
		memset(out, 0, sizeof *out);
		out->format = CG_FORMAT_RAW;
		return CG_OK;
	default:
		/* Not a format the wire protocol knows: keep the bytes, decode nothing. */
		memset(out, 0, sizeof *out);
		out->format = CG_FORMAT_RAW;
		snprintf(out->decode_error, sizeof out->decode_error, "unknown format %u",
			 (unsigned)declared_format);
		return CG_ERR_RANGE;
	}
}

const char *cg_linux_signal_name(uint32_t sig)
{
	static const char *const names[] = {
		NULL, "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT",
		"SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2",
		"SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT",
		"SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU",
		"SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR",
		"SIGSYS",
	};
	return sig < sizeof names / sizeof names[0] ? names[sig] : NULL;
}
