/*
 * Zephyr core dump decoder (SPEC §7).
 *
 * Exports cg_decode_zephyr() and cg_zephyr_early() (decode.h).
 *
 * The layout was read from Zephyr's own sources (include/zephyr/debug/
 * coredump.h, subsys/debug/coredump/coredump_core.c, arch/{x86,arm,riscv,
 * arm64}/.../coredump.c and scripts/coredump). Everything is little endian
 * and packed:
 *
 *   header  "ZE", u16 hdr_version, u16 tgt_code, u8 ptr_size_bits (log2),
 *           u8 flag (0x01: a 'C' CRC trailer ends the dump), u32 reason
 *   'A'     u8 id, u16 version, u16 num_bytes, num_bytes of registers
 *   'T'     u8 id, u16 version, u16 num_bytes, num_bytes (struct z_kernel)
 *   'M'     u8 id, u16 version (1), uintptr start, uintptr end, end-start bytes
 *   'F'     u8 id, u16 version, u16 num_bytes, u32 cpu, uintptr thread,
 *           num_bytes of registers (a frozen CPU, same layout as 'A')
 *   'C'     u8 id, u16 version, u32 CRC-32 (IEEE) of every byte before it
 *
 * A block id this decoder does not know is assumed to carry the common
 * (id, version, num_bytes) header of 'A', 'T' and 'F' and is skipped by it.
 * Zephyr's own parser refuses such a dump; a gateway should not.
 *
 * Register blocks are versioned per target and read by their declared
 * length: a register is taken only when its slot lies inside the block, so a
 * short variant (x86_64 without CONFIG_EXCEPTION_DEBUG, RISC-V v1 without
 * SP) yields what it holds and a longer one (the 56-byte x86 block of
 * Zephyr's documentation, Cortex-M v3) is read as its known prefix. A block
 * cut short by the end of the buffer yields no registers at all: Zephyr's
 * stub rejects it too, and a partial block must not feed a signature.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bytes.h"
#include "decode.h"

#define ZE_HDR_SIZE      12u
#define ZE_BLK_HDR_SIZE  5u     /* id, u16 version, u16 num_bytes */
#define ZE_FLAG_CRC      0x01u

enum ze_target {
	ZE_TGT_UNKNOWN = 0,
	ZE_TGT_X86 = 1,
	ZE_TGT_X86_64 = 2,
	ZE_TGT_ARM_CORTEX_M = 3,
	ZE_TGT_RISC_V = 4,
	ZE_TGT_XTENSA = 5,
	ZE_TGT_ARM64 = 6,
};

/* Where PC, LR and SP sit in one version of a target's register block. */
struct ze_layout {
	unsigned word;          /* register width in bytes */
	int pc, lr, sp;         /* slot index, -1 when the block has none */
};

struct ze_dec {
	const uint8_t *buf;
	size_t len;
	size_t off;
	struct cg_crash *out;
	uint16_t target;
	unsigned ptr_size;      /* bytes, 0 while unknown */
	uint8_t flags;
	unsigned mem_blocks;
	uint32_t crc;           /* running CRC-32 of buf[0, crc_off) */
	size_t crc_off;
};

static void set_error(struct ze_dec *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_error(struct ze_dec *d, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->out->decode_error, sizeof d->out->decode_error, fmt, ap);
	va_end(ap);
}

static void set_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src);
}

static size_t avail(const struct ze_dec *d)
{
	return d->len - d->off;
}

static uint64_t le(const uint8_t *p, unsigned n)
{
	return cg_load_le(p, n);
}

/* Names of enum k_fatal_error_reason (include/zephyr/fatal_types.h) and,
 * from K_ERR_ARCH_START (16), of the Cortex-M part of
 * enum k_fatal_error_reason_arch (include/zephyr/arch/arm/arch.h). */
static const char *const generic_reasons[] = {
	"K_ERR_CPU_EXCEPTION", "K_ERR_SPURIOUS_IRQ", "K_ERR_STACK_CHK_FAIL",
	"K_ERR_KERNEL_OOPS", "K_ERR_KERNEL_PANIC",
};

#define ZE_ARCH_REASON_START 16u

static const char *const cortex_m_reasons[] = {
	"K_ERR_ARM_MEM_GENERIC", "K_ERR_ARM_MEM_STACKING",
	"K_ERR_ARM_MEM_UNSTACKING", "K_ERR_ARM_MEM_DATA_ACCESS",
	"K_ERR_ARM_MEM_INSTRUCTION_ACCESS",
	"K_ERR_ARM_MEM_FP_LAZY_STATE_PRESERVATION",
	"K_ERR_ARM_BUS_GENERIC", "K_ERR_ARM_BUS_STACKING",
	"K_ERR_ARM_BUS_UNSTACKING", "K_ERR_ARM_BUS_PRECISE_DATA_BUS",
	"K_ERR_ARM_BUS_IMPRECISE_DATA_BUS", "K_ERR_ARM_BUS_INSTRUCTION_BUS",
	"K_ERR_ARM_BUS_FP_LAZY_STATE_PRESERVATION",
	"K_ERR_ARM_USAGE_GENERIC", "K_ERR_ARM_USAGE_DIV_0",
	"K_ERR_ARM_USAGE_UNALIGNED_ACCESS", "K_ERR_ARM_USAGE_STACK_OVERFLOW",
	"K_ERR_ARM_USAGE_NO_COPROCESSOR", "K_ERR_ARM_USAGE_ILLEGAL_EXC_RETURN",
	"K_ERR_ARM_USAGE_ILLEGAL_EPSR", "K_ERR_ARM_USAGE_UNDEFINED_INSTRUCTION",
	"K_ERR_ARM_SECURE_GENERIC", "K_ERR_ARM_SECURE_ENTRY_POINT",
	"K_ERR_ARM_SECURE_INTEGRITY_SIGNATURE",
	"K_ERR_ARM_SECURE_EXCEPTION_RETURN", "K_ERR_ARM_SECURE_ATTRIBUTION_UNIT",
	"K_ERR_ARM_SECURE_TRANSITION", "K_ERR_ARM_SECURE_LAZY_STATE_PRESERVATION",
	"K_ERR_ARM_SECURE_LAZY_STATE_ERROR",
};

#define N_ELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *reason_name(uint16_t target, uint32_t reason)
{
	if (reason < N_ELEM(generic_reasons))
		return generic_reasons[reason];
	if (target == ZE_TGT_ARM_CORTEX_M && reason >= ZE_ARCH_REASON_START &&
	    reason - ZE_ARCH_REASON_START < N_ELEM(cortex_m_reasons))
		return cortex_m_reasons[reason - ZE_ARCH_REASON_START];
	return "";
}

/* The RISC-V register width: the pointer size, or where the header leaves
 * it open, the arch block version (odd versions are RV32, even RV64). */
static unsigned riscv_word(const struct ze_dec *d, uint16_t version)
{
	if (d->ptr_size)
		return d->ptr_size;
	if (version == 1 || version == 3)
		return 4;
	if (version == 2 || version == 4)
		return 8;
	return 0;
}

static void set_arch(struct ze_dec *d, unsigned riscv_bytes)
{
	const char *a = "";

	switch (d->target) {
	case ZE_TGT_X86:          a = "x86"; break;
	case ZE_TGT_X86_64:       a = "x86_64"; break;
	case ZE_TGT_ARM_CORTEX_M: a = "arm-cortex-m"; break;
	case ZE_TGT_XTENSA:       a = "xtensa"; break;
	case ZE_TGT_ARM64:        a = "arm64"; break;
	case ZE_TGT_RISC_V:
		a = riscv_bytes == 4 ? "riscv32" : riscv_bytes == 8 ? "riscv64" : "";
		break;
	default: break;
	}
	set_str(d->out->arch, sizeof d->out->arch, a);
}

/*
 * The layout of (target, arch block version). Returns false when the
 * version's layout is unknown and cannot be assumed: versions that only
 * appended registers (x86, x86_64, Cortex-M v1..v3) let a newer version be
 * read as the newest known prefix; RISC-V v3 and ARM64 v3 reordered their
 * blocks, so a later version of those is not guessed at.
 */
static bool layout_of(const struct ze_dec *d, uint16_t version, struct ze_layout *l)
{
	if (version == 0)
		return false;
	switch (d->target) {
	case ZE_TGT_X86:
		/* vector, code, eax ecx edx ebx esp ebp esi edi eip eflags cs */
		*l = (struct ze_layout){ 4, 10, -1, 6 };
		return true;
	case ZE_TGT_X86_64:
		/* vector, code, rax rcx rdx rsi rdi rsp r8-r11 rip eflags cs ss
		 * rbp [rbx r12-r15] */
		*l = (struct ze_layout){ 8, 12, -1, 7 };
		return true;
	case ZE_TGT_ARM_CORTEX_M:
		/* r0-r3 r12 lr pc xpsr sp [r4-r11 [callee valid, offset]] */
		*l = (struct ze_layout){ 4, 6, 5, 8 };
		return true;
	case ZE_TGT_RISC_V:
		l->word = riscv_word(d, version);
		if (l->word == 0)
			return false;
		if (version <= 2) {
			/* ra tp t0-t2 a0-a7 t3-t6 pc [sp] */
			l->pc = 17, l->lr = 0, l->sp = 18;
		} else if (version <= 4) {
			/* x0-x31 in GDB order, pc */
			l->pc = 32, l->lr = 1, l->sp = 2;
		} else {
			return false;
		}
		return true;
	case ZE_TGT_ARM64:
		l->word = 8;
		if (version == 1) {
			/* x0-x18 lr spsr elr: no SP (Zephyr's stub shows SPSR as SP) */
			l->pc = 21, l->lr = 19, l->sp = -1;
		} else if (version == 2) {
			/* x0-x18 lr spsr elr fp sp */
			l->pc = 21, l->lr = 19, l->sp = 23;
		} else if (version == 3) {
			/* x0-x28 lr spsr elr fp sp */
			l->pc = 31, l->lr = 29, l->sp = 33;
		} else {
			return false;
		}
		return true;
	default:
		return false;
	}
}

static bool reg_at(const uint8_t *blk, size_t n, unsigned word, int slot, uint64_t *v)
{
	if (slot < 0 || ((size_t)slot + 1) * word > n)
		return false;
	*v = le(blk + (size_t)slot * word, word);
	return true;
}

/* Whether the next n bytes (the fixed part of a block) are in the buffer;
 * sets the error when they are not. */
static bool need(struct ze_dec *d, size_t n, const char *what)
{
	if (avail(d) >= n)
		return true;
	set_error(d, "truncated in %s: %zu of %zu bytes", what, avail(d), n);
	return false;
}

static int arch_block(struct ze_dec *d)
{
	const uint8_t *p = d->buf + d->off;
	bool first = d->off == ZE_HDR_SIZE;
	uint16_t version, num;
	struct ze_layout l;

	if (!need(d, ZE_BLK_HDR_SIZE, "the arch block header"))
		return CG_ERR_MALFORMED;
	version = (uint16_t)le(p + 1, 2);
	num = (uint16_t)le(p + 3, 2);
	d->off += ZE_BLK_HDR_SIZE;
	if (first && d->target == ZE_TGT_RISC_V)
		set_arch(d, riscv_word(d, version));
	if (avail(d) < num) {
		set_error(d, "truncated in the arch block: %zu of %u bytes", avail(d),
			  (unsigned)num);
		d->off = d->len;
		return CG_ERR_MALFORMED;
	}
	if (first && layout_of(d, version, &l)) {
		struct cg_crash *o = d->out;
		const uint8_t *blk = d->buf + d->off;

		if (reg_at(blk, num, l.word, l.pc, &o->pc))
			o->present |= CG_CRASH_HAS_PC;
		if (reg_at(blk, num, l.word, l.lr, &o->lr))
			o->present |= CG_CRASH_HAS_LR;
		if (reg_at(blk, num, l.word, l.sp, &o->sp))
			o->present |= CG_CRASH_HAS_SP;
	}
	d->off += num;
	return CG_OK;
}

/* 'T', 'F' and unknown blocks: skipped by their declared length. */
static int skip_block(struct ze_dec *d, size_t fixed, const char *what)
{
	size_t num;

	if (!need(d, fixed, what))
		return CG_ERR_MALFORMED;
	num = (size_t)le(d->buf + d->off + 3, 2);
	d->off += fixed;
	if (avail(d) < num) {
		set_error(d, "truncated in %s: %zu of %zu bytes", what, avail(d), num);
		d->off = d->len;
		return CG_ERR_MALFORMED;
	}
	d->off += num;
	return CG_OK;
}

static int memory_block(struct ze_dec *d)
{
	const uint8_t *p = d->buf + d->off;
	unsigned n = ++d->mem_blocks;
	uint16_t version;
	uint64_t start, end;
	char what[40];

	snprintf(what, sizeof what, "the header of memory block %u", n);
	if (!need(d, 3, what))
		return CG_ERR_MALFORMED;
	version = (uint16_t)le(p + 1, 2);
	if (version != 1) {
		set_error(d, "memory block %u: unknown version %u", n, (unsigned)version);
		return CG_ERR_MALFORMED;
	}
	if (d->ptr_size == 0) {
		set_error(d, "memory block %u: pointer size unknown", n);
		return CG_ERR_MALFORMED;
	}
	if (!need(d, 3 + 2 * (size_t)d->ptr_size, what))
		return CG_ERR_MALFORMED;
	start = le(p + 3, d->ptr_size);
	end = le(p + 3 + d->ptr_size, d->ptr_size);
	if (end < start) {
		set_error(d, "memory block %u: end 0x%" PRIx64 " below start 0x%" PRIx64,
			  n, end, start);
		return CG_ERR_MALFORMED;
	}
	d->off += 3 + 2 * (size_t)d->ptr_size;
	if (avail(d) < end - start) {
		set_error(d, "truncated in memory block %u: %zu of %" PRIu64 " bytes",
			  n, avail(d), end - start);
		d->off = d->len;
		return CG_ERR_MALFORMED;
	}
	d->off += (size_t)(end - start);
	return CG_OK;
}

/*
 * A 'C' trailer covers every byte before it. The running CRC is carried
 * from one trailer to the next, so a dump made of many trailers costs one
 * pass, not one per trailer.
 */
static int crc_block(struct ze_dec *d, bool *seen)
{
	uint32_t want, got;

	if (!need(d, 7, "the CRC trailer"))
		return CG_ERR_MALFORMED;
	/* Zephyr's crc32_ieee() is the zlib CRC-32 (cg_crc32), incremental. */
	d->crc = cg_crc32(d->crc, d->buf + d->crc_off, d->off - d->crc_off);
	d->crc_off = d->off;
	want = (uint32_t)le(d->buf + d->off + 3, 4);
	got = d->crc;
	if (want != got) {
		set_error(d, "CRC-32 mismatch: trailer 0x%08" PRIx32 ", dump 0x%08" PRIx32,
			  want, got);
		return CG_ERR_MALFORMED;
	}
	*seen = true;
	d->off += 7;
	return CG_OK;
}

static int header(struct ze_dec *d)
{
	const uint8_t *p = d->buf;
	struct cg_crash *o = d->out;
	unsigned bits;
	uint16_t version;
	uint32_t reason;

	if (d->len < 2 || p[0] != 'Z' || p[1] != 'E') {
		set_error(d, "not a Zephyr core dump: no \"ZE\" magic");
		return CG_ERR_MALFORMED;
	}
	set_str(o->os, sizeof o->os, "Zephyr");
	if (d->len >= 6) {
		d->target = (uint16_t)le(p + 4, 2);
		if (d->target != ZE_TGT_RISC_V)
			set_arch(d, 0);
	}
	if (d->len < ZE_HDR_SIZE) {
		set_error(d, "truncated in the header: %zu of %u bytes", d->len, ZE_HDR_SIZE);
		return CG_ERR_MALFORMED;
	}
	version = (uint16_t)le(p + 2, 2);
	bits = p[6];
	d->flags = p[7];
	reason = (uint32_t)le(p + 8, 4);

	o->reason_code = reason;
	o->present |= CG_CRASH_HAS_REASON_CODE;
	set_str(o->reason, sizeof o->reason, reason_name(d->target, reason));

	if (bits == 5 || bits == 6)
		d->ptr_size = 1u << (bits - 3);
	else if (bits == 0 && (d->target == ZE_TGT_X86 || d->target == ZE_TGT_ARM_CORTEX_M))
		d->ptr_size = 4;
	else if (bits == 0 && (d->target == ZE_TGT_X86_64 || d->target == ZE_TGT_ARM64))
		d->ptr_size = 8;
	if (d->target == ZE_TGT_RISC_V)
		set_arch(d, d->ptr_size);

	d->off = ZE_HDR_SIZE;
	if (version == 0) {
		set_error(d, "unknown header version 0");
		return CG_ERR_MALFORMED;
	}
	return CG_OK;
}

static void init(struct ze_dec *d, const uint8_t *buf, size_t len, struct cg_crash *out)
{
	memset(out, 0, sizeof *out);
	memset(d, 0, sizeof *d);
	out->format = CG_FORMAT_ZEPHYR;
	d->buf = buf;
	d->len = buf ? len : 0;
	d->out = out;
	d->crc = 0;
}

/*
 * The whole dump. The registers are those of an 'A' block right after the
 * header, where coredump() writes it; a later 'A' block is only skipped, so
 * that cg_zephyr_early() can decide from the first chunk. Other blocks may
 * come in any order. Stops at the first block that cannot be read, keeping
 * what came before it.
 */
int cg_decode_zephyr(const uint8_t *buf, size_t len, struct cg_crash *out)
{
	struct ze_dec d;
	bool crc_seen = false;
	int rc;

	init(&d, buf, len, out);
	rc = header(&d);
	while (rc == CG_OK && avail(&d) > 0) {
		switch (d.buf[d.off]) {
		case 'A':
			rc = arch_block(&d);
			break;
		case 'M':
			rc = memory_block(&d);
			break;
		case 'T':
			rc = skip_block(&d, ZE_BLK_HDR_SIZE, "the threads metadata block");
			break;
		case 'F':
			if (d.ptr_size == 0) {
				set_error(&d, "CPU snapshot block: pointer size unknown");
				rc = CG_ERR_MALFORMED;
				break;
			}
			rc = skip_block(&d, ZE_BLK_HDR_SIZE + 4 + d.ptr_size,
					"a CPU snapshot block");
			break;
		case 'C':
			rc = crc_block(&d, &crc_seen);
			break;
		default:
			rc = skip_block(&d, ZE_BLK_HDR_SIZE, "an unknown block");
			break;
		}
	}
	if (rc == CG_OK && (d.flags & ZE_FLAG_CRC) && !crc_seen) {
		set_error(&d, "truncated: the header announces a CRC-32 trailer, none found");
		rc = CG_ERR_MALFORMED;
	}
	return rc;
}

/*
 * The header and register block from the first chunk of a dump, for
 * throttling before the rest arrives. CG_OK means every field that
 * cg_decode_zephyr() reads from the header and the arch block (arch,
 * reason, pc, lr, sp) is final; a dump without an arch block (Zephyr writes
 * none when it has no exception frame) is recognised by the block that
 * follows the header. Any other return means the chunk cannot decide
 * (it ends too early or is no Zephyr dump), with decode_error saying why.
 */
int cg_zephyr_early(const uint8_t *buf, size_t len, struct cg_crash *out)
{
	struct ze_dec d;
	int rc;

	init(&d, buf, len, out);
	rc = header(&d);
	if (rc != CG_OK)
		return rc;
	if (avail(&d) == 0) {
		set_error(&d, "truncated after the header");
		return CG_ERR_MALFORMED;
	}
	if (d.buf[d.off] != 'A')
		return CG_OK;
	return arch_block(&d);
}
