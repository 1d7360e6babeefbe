/*
 * Crash analysis at the edge (SPEC §7): one decoder per format, none of which
 * trusts its input. Each decoder reads a whole dump from memory (no I/O, no
 * allocation beyond what it documents) and fills a struct cg_crash. A
 * truncated or malformed dump yields what could be read plus decode_error;
 * no input may crash, hang or read out of bounds (every decoder has a fuzz
 * target).
 *
 * Conventions shared by all decoders (so signatures compare across formats):
 *  - addresses and registers are unsigned 64-bit values, zero-extended;
 *  - `module` is the file name of the module that holds the PC (the last
 *    path component), `module_offset` = pc - that module's base (the
 *    lowest mapped address of the module, as in a minidump's base_of_image);
 *  - build ids are raw bytes: the GNU build id note for ELF, the CodeView
 *    record's identifier for minidumps (RSDS: GUID (16) + age (4, little
 *    endian); BpEL: the build id bytes that follow the signature);
 *  - `arch` is one of "x86", "x86_64", "arm", "arm64", "arm-cortex-m",
 *    "riscv32", "riscv64", "xtensa"; `os` e.g. "Linux", "Windows NT", "Mac OS X",
 *    "Zephyr";
 *  - `reason` is a symbolic name where the format defines one
 *    ("K_ERR_CPU_EXCEPTION", "SIGSEGV", "EXCEPTION_ACCESS_VIOLATION_WRITE"),
 *    `reason_code` its number.
 */
#ifndef CG_DECODE_H
#define CG_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crashgate/proto.h"

#define CG_CRASH_HAS_SIGNAL         (1u << 0)
#define CG_CRASH_HAS_EXCEPTION_CODE (1u << 1)
#define CG_CRASH_HAS_FAULT_ADDRESS  (1u << 2)
#define CG_CRASH_HAS_PC             (1u << 3)
#define CG_CRASH_HAS_LR             (1u << 4)
#define CG_CRASH_HAS_SP             (1u << 5)
#define CG_CRASH_HAS_MODULE_OFFSET  (1u << 6)
#define CG_CRASH_HAS_REASON_CODE    (1u << 7)
#define CG_CRASH_HAS_SI_CODE        (1u << 8)
#define CG_CRASH_HAS_THREAD         (1u << 9)

struct cg_crash {
	uint32_t format;                 /* enum cg_format */
	uint32_t present;                /* CG_CRASH_HAS_* */
	char arch[16];
	char os[32];
	char reason[64];                 /* symbolic reason, "" when unknown */
	uint64_t reason_code;            /* Zephyr reason, minidump exception code, signal */
	int32_t signal;                  /* POSIX signal number (ELF cores, Linux/macOS minidumps) */
	int32_t si_code;
	uint32_t exception_code;         /* minidump MDException code */
	uint64_t fault_address;
	uint64_t pc, lr, sp;
	uint32_t thread;                 /* crashing thread id where known */
	char module[128];                /* file name of the module holding the PC */
	uint64_t module_offset;
	uint8_t build_id[CG_PROTO_MAX_BUILD_ID]; /* main executable (ELF) / PC module (minidump) */
	size_t build_id_len;
	char decode_error[128];          /* "" when the whole dump was read */
};

/* Format by magic: "ZE" (Zephyr), "MDMP" (minidump), ELF with e_type
 * ET_CORE (ELF core); CG_FORMAT_RAW otherwise. */
uint32_t cg_detect_format(const uint8_t *buf, size_t len);

/*
 * Decoders. Return CG_OK when the dump was read whole; CG_ERR_MALFORMED (or
 * CG_ERR_RANGE, CG_ERR_TOO_LARGE) with every field that could be read set and
 * decode_error saying what stopped it. *out is always initialised.
 */
int cg_decode_zephyr(const uint8_t *buf, size_t len, struct cg_crash *out);
int cg_decode_minidump(const uint8_t *buf, size_t len, struct cg_crash *out);
int cg_decode_elf_core(const uint8_t *buf, size_t len, struct cg_crash *out);

/*
 * Zephyr only: decode header and architecture block from the first chunk of
 * a dump (they lead it), for throttling at chunk 0. CG_OK means arch,
 * reason, pc, lr and sp are final and equal to what cg_decode_zephyr()
 * reports for the whole dump; anything else means the chunk cannot decide.
 */
int cg_zephyr_early(const uint8_t *buf, size_t len, struct cg_crash *out);

/* Name of a Linux signal number ("SIGSEGV"), NULL when unknown. Shared by
 * the ELF-core and minidump decoders. */
const char *cg_linux_signal_name(uint32_t sig);

/* Dispatch: the declared format unless it is CG_FORMAT_DETECT. */
int cg_decode(const uint8_t *buf, size_t len, uint32_t declared_format, struct cg_crash *out);

#endif
