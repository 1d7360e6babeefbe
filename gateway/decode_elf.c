/*
 * ELF core decoder (SPEC §7). A Linux core, as fs/binfmt_elf.c writes it, is
 * an ELF header, program headers, one PT_NOTE segment and PT_LOAD segments
 * holding memory. The notes give what a crash signature needs:
 *  - NT_PRSTATUS (one per thread, the signalled thread first): pr_cursig,
 *    pr_pid and the general registers (PC, SP, LR);
 *  - NT_SIGINFO: si_signo, si_code and, for faults, si_addr;
 *  - NT_FILE: the file-backed mappings, to name the module holding the PC;
 *  - NT_AUXV: AT_ENTRY (which mapping is the executable) and
 *    AT_SYSINFO_EHDR (the vDSO, which NT_FILE does not list).
 * The executable's build id is read from its own ELF header and PT_NOTE in
 * the core's memory (the kernel dumps the first page of every ELF mapping).
 *
 * ELF32 and ELF64, either byte order. Nothing here allocates: every note
 * and header is read in place, and every offset, size and count from the
 * file is checked against the buffer before use.
 */
#include "bytes.h"
#include "decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "crashgate/error.h"

#define ELF_ET_CORE        4
#define ELF_PT_LOAD        1
#define ELF_PT_NOTE        4
#define ELF_PN_XNUM        0xffffu

#define ELF_EM_386         3
#define ELF_EM_MIPS        8
#define ELF_EM_ARM         40
#define ELF_EM_X86_64      62
#define ELF_EM_AARCH64     183
#define ELF_EM_RISCV       243

#define ELF_NT_PRSTATUS    1
#define ELF_NT_AUXV        6
#define ELF_NT_SIGINFO     0x53494749u  /* "SIGI" */
#define ELF_NT_FILE        0x46494c45u  /* "FILE" */
#define ELF_NT_GNU_BUILD_ID 3

#define ELF_AT_NULL        0
#define ELF_AT_ENTRY       9
#define ELF_AT_SYSINFO_EHDR 33

/* Bounds on what the file may ask us to walk; real cores stay far below. */
#define MAX_PHDRS          (1u << 20)  /* program headers of the core */
#define MAX_NOTES          (1u << 20)  /* notes over all PT_NOTE segments */
#define MAX_FILES          (1u << 20)  /* NT_FILE entries */
#define MAX_MODULE_PHDRS   64          /* program headers of a mapped module */
#define MAX_MODULE_NOTE_SEGS 8         /* PT_NOTE segments of a module looked at */
#define MAX_MODULE_NOTES   (64u * 1024) /* bytes of one PT_NOTE in a module */

struct ehdr {
	bool is64, be;
	uint8_t osabi;
	uint16_t type, machine;
	uint64_t phoff, shoff;
	uint16_t phentsize, phnum;
};

struct phdr {
	uint32_t type;
	uint64_t offset, vaddr, filesz, memsz, align;
};

struct span {
	const uint8_t *p;
	size_t n;
};

struct note {
	uint32_t type;
	const uint8_t *name;
	size_t namesz;
	const uint8_t *desc;
	size_t descsz;
};

struct core {
	const uint8_t *buf;
	size_t len;
	struct ehdr eh;
	uint64_t phnum;                /* entries of the table that lie in the file */
	size_t word;                   /* 4 or 8: the size of a long in the notes */
	struct span prstatus, siginfo, file, auxv; /* the first of each */
	struct cg_crash *out;
	int rc;
};

/* ---- byte access --------------------------------------------------------- */

static uint16_t get16(const uint8_t *p, bool be)
{
	return (uint16_t)(be ? cg_load_be(p, 2) : cg_load_le(p, 2));
}

static uint32_t get32(const uint8_t *p, bool be)
{
	return (uint32_t)(be ? cg_load_be(p, 4) : cg_load_le(p, 4));
}

static uint64_t get64(const uint8_t *p, bool be)
{
	return be ? cg_load_be(p, 8) : cg_load_le(p, 8);
}

/* A long of the core's ABI: 4 bytes in ELF32, 8 in ELF64. */
static uint64_t get_long(const uint8_t *p, bool be, bool is64)
{
	return is64 ? get64(p, be) : get32(p, be);
}

/* [off, off + n) lies within a buffer of len bytes. */
static bool fits(uint64_t off, uint64_t n, size_t len)
{
	return off <= len && n <= len - off;
}

static void fail(struct core *c, int rc, const char *fmt, ...)
{
	va_list ap;

	if (c->rc != CG_OK)
		return;
	c->rc = rc;
	va_start(ap, fmt);
	vsnprintf(c->out->decode_error, sizeof c->out->decode_error, fmt, ap);
	va_end(ap);
}

/* ---- ELF structures ------------------------------------------------------ */

/* The ELF header at p (avail bytes readable). NULL, or what is wrong. */
static const char *parse_ehdr(const uint8_t *p, size_t avail, struct ehdr *e)
{
	memset(e, 0, sizeof *e);
	if (avail < 16 || memcmp(p, "\177ELF", 4) != 0)
		return "no ELF magic";
	if (p[4] != 1 && p[4] != 2)
		return "bad ELF class";
	if (p[5] != 1 && p[5] != 2)
		return "bad ELF byte order";
	e->is64 = p[4] == 2;
	e->be = p[5] == 2;
	e->osabi = p[7];
	if (avail < (e->is64 ? 64u : 52u))
		return "ELF header truncated";
	e->type = get16(p + 16, e->be);
	e->machine = get16(p + 18, e->be);
	if (e->is64) {
		e->phoff = get64(p + 32, e->be);
		e->shoff = get64(p + 40, e->be);
		p += 54;
	} else {
		e->phoff = get32(p + 28, e->be);
		e->shoff = get32(p + 32, e->be);
		p += 42;
	}
	e->phentsize = get16(p, e->be);
	e->phnum = get16(p + 2, e->be);
	if (e->phnum != 0 && e->phentsize < (e->is64 ? 56u : 32u))
		return "program header entries too small";
	return NULL;
}

static void parse_phdr(const uint8_t *p, bool is64, bool be, struct phdr *ph)
{
	ph->type = get32(p, be);
	if (is64) {
		ph->offset = get64(p + 8, be);
		ph->vaddr = get64(p + 16, be);
		ph->filesz = get64(p + 32, be);
		ph->memsz = get64(p + 40, be);
		ph->align = get64(p + 48, be);
	} else {
		ph->offset = get32(p + 4, be);
		ph->vaddr = get32(p + 8, be);
		ph->filesz = get32(p + 16, be);
		ph->memsz = get32(p + 20, be);
		ph->align = get32(p + 28, be);
	}
}

static void core_phdr(const struct core *c, uint64_t i, struct phdr *ph)
{
	parse_phdr(c->buf + c->eh.phoff + i * c->eh.phentsize, c->eh.is64, c->eh.be, ph);
}

/*
 * The next note of the segment seg[0..n) at *pos, whose notes are padded to
 * align (4, or 8 for some PT_NOTE segments of executables). 1: a note, 0: the
 * end, -1: a note that does not fit.
 */
static int next_note(const uint8_t *seg, size_t n, size_t *pos, size_t align, bool be,
		     struct note *nt)
{
	size_t at = *pos, pad;

	if (at >= n)
		return 0;
	if (n - at < 12)
		return -1;
	nt->namesz = get32(seg + at, be);
	nt->descsz = get32(seg + at + 4, be);
	nt->type = get32(seg + at + 8, be);
	at += 12;
	if (nt->namesz > n - at)
		return -1;
	nt->name = seg + at;
	at += nt->namesz;
	pad = (align - at % align) % align;
	if (pad > n - at)
		return -1;
	at += pad;
	if (nt->descsz > n - at)
		return -1;
	nt->desc = seg + at;
	at += nt->descsz;
	pad = (align - at % align) % align;
	*pos = pad > n - at ? n : at + pad; /* the last note may go unpadded */
	return 1;
}

/* The note's owner is `owner` (with or without its NUL). */
static bool note_owner(const struct note *nt, const char *owner)
{
	size_t k = strlen(owner);

	return nt->namesz >= k && memcmp(nt->name, owner, k) == 0 &&
	       (nt->namesz == k || nt->name[k] == '\0');
}

/* ---- the core's memory --------------------------------------------------- */

/*
 * A pointer to n bytes of the crashed process's memory at vaddr, when one
 * PT_LOAD segment holds all of them in the file; NULL otherwise (not
 * dumped, not mapped, or cut off with the file).
 */
static const uint8_t *mem_ptr(const struct core *c, uint64_t vaddr, uint64_t n)
{
	struct phdr ph;

	for (uint64_t i = 0; i < c->phnum; i++) {
		core_phdr(c, i, &ph);
		if (ph.type != ELF_PT_LOAD || ph.offset > c->len)
			continue;
		uint64_t avail = ph.filesz;
		if (avail > c->len - ph.offset)
			avail = c->len - ph.offset;
		if (vaddr < ph.vaddr || vaddr - ph.vaddr >= avail)
			continue;
		if (n > avail - (vaddr - ph.vaddr))
			continue;
		return c->buf + ph.offset + (vaddr - ph.vaddr);
	}
	return NULL;
}

/*
 * The GNU build id of the ELF image whose header is mapped at hdr: its
 * program headers give the PT_NOTE segments, placed relative to the first
 * PT_LOAD (which maps file offset 0 at hdr). Returns false when any of it
 * is not in the core. The header and its table lie in the first page, so
 * each is looked up once; at most MAX_MODULE_NOTE_SEGS note segments are.
 */
static bool module_build_id(const struct core *c, uint64_t hdr, uint8_t *id, size_t *idlen)
{
	const uint8_t *p = mem_ptr(c, hdr, 16), *table;
	struct ehdr e;
	struct phdr ph;
	uint64_t bias = 0, size;
	bool have_bias = false;
	unsigned segs = 0;

	if (p == NULL)
		return false;
	size = p[4] == 2 ? 64 : 52;
	p = mem_ptr(c, hdr, size);
	if (p == NULL || parse_ehdr(p, size, &e) != NULL)
		return false;
	if (e.phnum == 0 || e.phnum > MAX_MODULE_PHDRS || e.phoff > UINT64_MAX - hdr)
		return false;
	table = mem_ptr(c, hdr + e.phoff, (uint64_t)e.phnum * e.phentsize);
	if (table == NULL)
		return false;
	for (uint16_t i = 0; i < e.phnum && !have_bias; i++) {
		parse_phdr(table + (size_t)i * e.phentsize, e.is64, e.be, &ph);
		if (ph.type == ELF_PT_LOAD) {
			bias = hdr - (ph.vaddr - ph.offset);
			have_bias = true;
		}
	}
	for (uint16_t i = 0; i < e.phnum && have_bias && segs < MAX_MODULE_NOTE_SEGS; i++) {
		const uint8_t *seg;
		struct note nt;
		size_t pos = 0;

		parse_phdr(table + (size_t)i * e.phentsize, e.is64, e.be, &ph);
		if (ph.type != ELF_PT_NOTE || ph.filesz > MAX_MODULE_NOTES)
			continue;
		segs++;
		seg = mem_ptr(c, bias + ph.vaddr, ph.filesz);
		if (seg == NULL)
			continue;
		while (next_note(seg, ph.filesz, &pos, ph.align == 8 ? 8 : 4, e.be, &nt) > 0) {
			if (nt.type != ELF_NT_GNU_BUILD_ID || !note_owner(&nt, "GNU"))
				continue;
			if (nt.descsz == 0 || nt.descsz > CG_PROTO_MAX_BUILD_ID)
				return false;
			memcpy(id, nt.desc, nt.descsz);
			*idlen = nt.descsz;
			return true;
		}
	}
	return false;
}

/* ---- NT_FILE --------------------------------------------------------------- */

/*
 * NT_FILE (fs/binfmt_elf.c fill_files_note): long count, long page_size,
 * count x {long start, end, file_ofs (in pages)}, then count NUL-terminated
 * names in the same order.
 */
struct ntfile {
	const uint8_t *desc;
	size_t n;
	size_t w;
	bool be, is64;
	uint64_t count;                /* entries with a triple and a name */
	size_t names;                  /* offset of the first name */
};

struct mapping {
	uint64_t start, end, pgoff;
	const char *name;
	size_t name_len;
};

struct module {
	const char *name;
	size_t name_len;
	uint64_t base;                 /* lowest start of the module's mappings */
	uint64_t hdr;                  /* start of the mapping of file offset 0 */
	bool have_hdr;
};

static bool ntfile_init(struct core *c, struct ntfile *f)
{
	uint64_t count, triples, named = 0;
	size_t at;

	memset(f, 0, sizeof *f);
	if (c->file.p == NULL)
		return false;
	f->desc = c->file.p;
	f->n = c->file.n;
	f->w = c->word;
	f->be = c->eh.be;
	f->is64 = c->eh.is64;
	if (f->n < 2 * f->w) {
		fail(c, CG_ERR_MALFORMED, "NT_FILE note too short (%zu bytes)", f->n);
		return false;
	}
	count = get_long(f->desc, f->be, f->is64);
	triples = (f->n - 2 * f->w) / (3 * f->w);
	if (count > MAX_FILES) {
		fail(c, CG_ERR_TOO_LARGE, "NT_FILE lists %llu files (at most %u read)",
		     (unsigned long long)count, MAX_FILES);
		return false;
	}
	if (count > triples) {
		fail(c, CG_ERR_MALFORMED, "NT_FILE count %llu does not fit its %zu bytes",
		     (unsigned long long)count, f->n);
		return false;
	}
	f->names = 2 * f->w + (size_t)count * 3 * f->w;
	for (at = f->names; named < count && at < f->n; named++) {
		const uint8_t *nul = memchr(f->desc + at, '\0', f->n - at);
		if (nul == NULL)
			break;
		at = (size_t)(nul - f->desc) + 1;
	}
	if (named < count)
		fail(c, CG_ERR_MALFORMED, "NT_FILE has names for %llu of %llu files",
		     (unsigned long long)named, (unsigned long long)count);
	f->count = named;
	return true;
}

/* Entry i, for i = 0, 1, ... in order; *name_at carries the name cursor. */
static void ntfile_entry(const struct ntfile *f, uint64_t i, size_t *name_at, struct mapping *m)
{
	const uint8_t *t = f->desc + 2 * f->w + (size_t)i * 3 * f->w;

	if (i == 0)
		*name_at = f->names;
	m->start = get_long(t, f->be, f->is64);
	m->end = get_long(t + f->w, f->be, f->is64);
	m->pgoff = get_long(t + 2 * f->w, f->be, f->is64);
	m->name = (const char *)f->desc + *name_at;
	m->name_len = strlen(m->name);    /* terminated: checked by ntfile_init */
	*name_at += m->name_len + 1;
}

/* The module (all mappings of one file) whose mappings hold addr. */
static bool ntfile_module(const struct ntfile *f, uint64_t addr, struct module *mod)
{
	struct mapping m;
	size_t at = 0;
	uint64_t i;

	memset(mod, 0, sizeof *mod);
	for (i = 0; i < f->count; i++) {
		ntfile_entry(f, i, &at, &m);
		if (addr >= m.start && addr < m.end)
			break;
	}
	if (i == f->count)
		return false;
	mod->name = m.name;
	mod->name_len = m.name_len;
	mod->base = m.start;
	for (i = 0; i < f->count; i++) {
		ntfile_entry(f, i, &at, &m);
		if (m.name_len != mod->name_len || memcmp(m.name, mod->name, m.name_len) != 0)
			continue;
		if (m.start < mod->base)
			mod->base = m.start;
		if (m.pgoff == 0 && (!mod->have_hdr || m.start < mod->hdr)) {
			mod->hdr = m.start;
			mod->have_hdr = true;
		}
	}
	return true;
}

/* out->module = the last path component of name, without " (deleted)";
 * false when that is empty. */
static bool set_module_name(struct cg_crash *out, const char *name, size_t len)
{
	static const char deleted[] = " (deleted)";
	const size_t dl = sizeof deleted - 1;
	size_t start = 0;

	if (len > dl && memcmp(name + len - dl, deleted, dl) == 0)
		len -= dl;
	for (size_t i = 0; i < len; i++)
		if (name[i] == '/')
			start = i + 1;
	name += start;
	len -= start;
	if (len >= sizeof out->module)
		len = sizeof out->module - 1;
	memcpy(out->module, name, len);
	out->module[len] = '\0';
	return len > 0;
}

/* ---- the notes ------------------------------------------------------------- */

/* Signals whose si_addr is the faulting address when si_code > 0. */
static bool is_fault_signal(int sig)
{
	return sig == 4 || sig == 5 || sig == 7 || sig == 8 || sig == 11;
}

static void set_signal(struct cg_crash *out, int32_t sig)
{
	out->signal = sig;
	out->reason_code = (uint64_t)(uint32_t)sig;
	out->present |= CG_CRASH_HAS_SIGNAL | CG_CRASH_HAS_REASON_CODE;
	const char *name = sig > 0 ? cg_linux_signal_name((uint32_t)sig) : NULL;
	if (name)
		snprintf(out->reason, sizeof out->reason, "%s", name);
}

/*
 * Where PC, SP and LR sit in pr_reg (struct user_regs_struct of each
 * architecture), counted in longs; -1 when the register has no slot.
 */
struct regmap {
	uint16_t machine;
	bool is64;
	const char *arch;
	int pc, sp, lr;
};

static const struct regmap regmaps[] = {
	{ ELF_EM_X86_64, true, "x86_64", 16, 19, -1 },  /* rip, rsp */
	{ ELF_EM_386, false, "x86", 12, 15, -1 },       /* eip, esp */
	{ ELF_EM_AARCH64, true, "arm64", 32, 31, 30 },  /* pc, sp, x30 */
	{ ELF_EM_ARM, false, "arm", 15, 13, 14 },       /* r15, r13, r14 */
	{ ELF_EM_RISCV, true, "riscv64", 0, 2, 1 },     /* pc, sp, ra */
	{ ELF_EM_RISCV, false, "riscv32", 0, 2, 1 },
};

static const struct regmap *find_regmap(const struct ehdr *e)
{
	for (size_t i = 0; i < sizeof regmaps / sizeof regmaps[0]; i++)
		if (regmaps[i].machine == e->machine && regmaps[i].is64 == e->is64)
			return &regmaps[i];
	return NULL;
}

/*
 * struct elf_prstatus (include/uapi/linux/elfcore.h): pr_info (3 ints),
 * short pr_cursig, two longs of signal sets, then pr_pid; pr_reg after four
 * struct timevals (two longs each). With 4-byte longs pr_pid is at 24 and
 * pr_reg at 72; with 8-byte longs at 32 and 112.
 */
static void decode_prstatus(struct core *c)
{
	const uint8_t *d = c->prstatus.p;
	size_t n = c->prstatus.n, w = c->word;
	size_t pid_at = c->eh.is64 ? 32 : 24, reg_at = c->eh.is64 ? 112 : 72;
	const struct regmap *rm = find_regmap(&c->eh);
	struct cg_crash *out = c->out;
	int16_t cursig;

	if (n < 14) {
		fail(c, CG_ERR_MALFORMED, "NT_PRSTATUS too short (%zu bytes)", n);
		return;
	}
	cursig = (int16_t)get16(d + 12, c->eh.be);
	if (cursig != 0)
		set_signal(out, cursig);
	if (n >= pid_at + 4) {
		out->thread = get32(d + pid_at, c->eh.be);
		out->present |= CG_CRASH_HAS_THREAD;
	}
	if (rm == NULL)
		return;
	int need = rm->pc > rm->sp ? rm->pc : rm->sp;
	if (rm->lr > need)
		need = rm->lr;
	if (n < reg_at + ((size_t)need + 1) * w) {
		fail(c, CG_ERR_MALFORMED, "NT_PRSTATUS too short for %s registers (%zu bytes)",
		     rm->arch, n);
		return;
	}
	out->pc = get_long(d + reg_at + (size_t)rm->pc * w, c->eh.be, c->eh.is64);
	out->sp = get_long(d + reg_at + (size_t)rm->sp * w, c->eh.be, c->eh.is64);
	out->present |= CG_CRASH_HAS_PC | CG_CRASH_HAS_SP;
	if (rm->lr >= 0) {
		out->lr = get_long(d + reg_at + (size_t)rm->lr * w, c->eh.be, c->eh.is64);
		out->present |= CG_CRASH_HAS_LR;
	}
}

/*
 * siginfo_t as the kernel copies it: si_signo, si_errno, si_code (MIPS:
 * si_signo, si_code, si_errno), then the union, aligned to a long; its
 * first member for SIGILL/SIGFPE/SIGSEGV/SIGBUS/SIGTRAP is si_addr. si_addr
 * is a fault address only when si_code > 0: a signal sent by a process
 * (kill, tgkill, abort) has si_code <= 0 and si_pid/si_uid there instead.
 */
static void decode_siginfo(struct core *c)
{
	const uint8_t *d = c->siginfo.p;
	size_t n = c->siginfo.n, addr_at = c->eh.is64 ? 16 : 12;
	size_t code_at = c->eh.machine == ELF_EM_MIPS ? 4 : 8;
	struct cg_crash *out = c->out;
	int32_t signo;

	if (n < 12) {
		fail(c, CG_ERR_MALFORMED, "NT_SIGINFO too short (%zu bytes)", n);
		return;
	}
	signo = (int32_t)get32(d, c->eh.be);
	if (!(out->present & CG_CRASH_HAS_SIGNAL) && signo != 0)
		set_signal(out, signo);
	out->si_code = (int32_t)get32(d + code_at, c->eh.be);
	out->present |= CG_CRASH_HAS_SI_CODE;
	if (out->si_code > 0 && is_fault_signal(signo)) {
		if (n < addr_at + c->word) {
			fail(c, CG_ERR_MALFORMED, "NT_SIGINFO too short for si_addr (%zu bytes)", n);
			return;
		}
		out->fault_address = get_long(d + addr_at, c->eh.be, c->eh.is64);
		out->present |= CG_CRASH_HAS_FAULT_ADDRESS;
	}
}

/* Auxiliary vector: {long type, long value} pairs up to AT_NULL. */
static void decode_auxv(const struct core *c, uint64_t *entry, bool *have_entry,
			uint64_t *vdso, bool *have_vdso)
{
	const uint8_t *d = c->auxv.p;
	size_t w = c->word;

	for (size_t at = 0; d != NULL && c->auxv.n - at >= 2 * w; at += 2 * w) {
		uint64_t type = get_long(d + at, c->eh.be, c->eh.is64);
		uint64_t val = get_long(d + at + w, c->eh.be, c->eh.is64);
		if (type == ELF_AT_NULL)
			break;
		if (type == ELF_AT_ENTRY) {
			*entry = val;
			*have_entry = true;
		} else if (type == ELF_AT_SYSINFO_EHDR && val != 0) {
			*vdso = val;
			*have_vdso = true;
		}
	}
}

/* The vDSO's extent: the PT_LOAD segment of the core that holds its header. */
static bool vdso_holds(const struct core *c, uint64_t vdso, uint64_t addr)
{
	struct phdr ph;

	for (uint64_t i = 0; i < c->phnum; i++) {
		core_phdr(c, i, &ph);
		if (ph.type != ELF_PT_LOAD || vdso < ph.vaddr || vdso - ph.vaddr >= ph.memsz)
			continue;
		return addr >= vdso && addr - ph.vaddr < ph.memsz;
	}
	return false;
}

/* ---- the file ------------------------------------------------------------- */

/* The program header table: count (PN_XNUM: section header 0's sh_info) and bounds. */
static void read_phdrs(struct core *c)
{
	uint64_t n = c->eh.phnum, fit;

	if (n == ELF_PN_XNUM) {
		uint64_t at = c->eh.shoff + (c->eh.is64 ? 44 : 28);
		if (c->eh.shoff == 0 || c->eh.shoff > UINT64_MAX - 64 || !fits(at, 4, c->len)) {
			fail(c, CG_ERR_MALFORMED, "PN_XNUM without section header 0");
			return;
		}
		n = get32(c->buf + at, c->eh.be);
	}
	if (n == 0)
		return;
	if (n > MAX_PHDRS) {
		fail(c, CG_ERR_TOO_LARGE, "%llu program headers (at most %u read)",
		     (unsigned long long)n, MAX_PHDRS);
		n = MAX_PHDRS;
	}
	fit = c->eh.phoff <= c->len ? (c->len - c->eh.phoff) / c->eh.phentsize : 0;
	if (fit < n) {
		fail(c, CG_ERR_MALFORMED, "program headers truncated (%llu of %llu in the file)",
		     (unsigned long long)fit, (unsigned long long)n);
		n = fit;
	}
	c->phnum = n;
}

static void keep_first(struct span *s, const struct note *nt)
{
	if (s->p == NULL) {
		s->p = nt->desc;
		s->n = nt->descsz;
	}
}

/* Walk the program headers: check PT_LOAD bounds, collect the first notes. */
static void scan(struct core *c)
{
	struct phdr ph;
	struct note nt;
	uint64_t notes = 0;

	for (uint64_t i = 0; i < c->phnum; i++) {
		core_phdr(c, i, &ph);
		if (ph.type == ELF_PT_LOAD && !fits(ph.offset, ph.filesz, c->len)) {
			fail(c, CG_ERR_MALFORMED,
			     "PT_LOAD %llu (0x%llx bytes at offset 0x%llx) beyond the end of the file",
			     (unsigned long long)i, (unsigned long long)ph.filesz,
			     (unsigned long long)ph.offset);
			continue;
		}
		if (ph.type != ELF_PT_NOTE)
			continue;
		size_t n = (size_t)ph.filesz, pos = 0;
		if (!fits(ph.offset, ph.filesz, c->len)) {
			fail(c, CG_ERR_MALFORMED, "PT_NOTE %llu beyond the end of the file",
			     (unsigned long long)i);
			if (ph.offset >= c->len)
				continue;
			n = c->len - (size_t)ph.offset;
		}
		const uint8_t *seg = c->buf + ph.offset;
		int r;
		while ((r = next_note(seg, n, &pos, 4, c->eh.be, &nt)) > 0) {
			if (++notes > MAX_NOTES) {
				fail(c, CG_ERR_TOO_LARGE, "more than %u notes", MAX_NOTES);
				return;
			}
			if (!note_owner(&nt, "CORE"))
				continue;
			if (nt.type == ELF_NT_PRSTATUS)
				keep_first(&c->prstatus, &nt);
			else if (nt.type == ELF_NT_SIGINFO)
				keep_first(&c->siginfo, &nt);
			else if (nt.type == ELF_NT_FILE)
				keep_first(&c->file, &nt);
			else if (nt.type == ELF_NT_AUXV)
				keep_first(&c->auxv, &nt);
		}
		if (r < 0)
			fail(c, CG_ERR_MALFORMED, "PT_NOTE %llu: note at offset 0x%llx does not fit",
			     (unsigned long long)i, (unsigned long long)(ph.offset + pos));
	}
}

static void set_arch(struct cg_crash *out, const struct ehdr *e)
{
	const char *arch = NULL;

	switch (e->machine) {
	case ELF_EM_386: arch = "x86"; break;
	case ELF_EM_X86_64: arch = "x86_64"; break;
	case ELF_EM_ARM: arch = "arm"; break;
	case ELF_EM_AARCH64: arch = "arm64"; break;
	case ELF_EM_RISCV: arch = e->is64 ? "riscv64" : "riscv32"; break;
	}
	if (arch != NULL)
		snprintf(out->arch, sizeof out->arch, "%s", arch);
	/* ELFOSABI_NONE or ELFOSABI_LINUX: other systems mark their cores. */
	if (e->osabi == 0 || e->osabi == 3)
		snprintf(out->os, sizeof out->os, "Linux");
}

/* PC as module + offset, and the executable's build id. */
static void decode_modules(struct core *c)
{
	struct cg_crash *out = c->out;
	uint64_t entry = 0, vdso = 0;
	bool have_entry = false, have_vdso = false;
	struct ntfile f;
	struct module mod;
	bool have_file;

	decode_auxv(c, &entry, &have_entry, &vdso, &have_vdso);
	have_file = ntfile_init(c, &f);
	if (have_file && have_entry && ntfile_module(&f, entry, &mod)) {
		size_t idlen = 0;
		if (mod.have_hdr && module_build_id(c, mod.hdr, out->build_id, &idlen))
			out->build_id_len = idlen;
	}
	if (!(out->present & CG_CRASH_HAS_PC))
		return;
	if (have_file && ntfile_module(&f, out->pc, &mod)) {
		if (set_module_name(out, mod.name, mod.name_len)) {
			out->module_offset = out->pc - mod.base;
			out->present |= CG_CRASH_HAS_MODULE_OFFSET;
		}
	} else if (have_vdso && vdso_holds(c, vdso, out->pc)) {
		/* The kernel's vDSO sonames: vdso32 on x86 is linux-gate.so.1. */
		snprintf(out->module, sizeof out->module, "%s",
			 c->eh.machine == ELF_EM_386 ? "linux-gate.so.1" : "linux-vdso.so.1");
		out->module_offset = out->pc - vdso;
		out->present |= CG_CRASH_HAS_MODULE_OFFSET;
	}
}

int cg_decode_elf_core(const uint8_t *buf, size_t len, struct cg_crash *out)
{
	struct core c = { .buf = buf, .len = buf != NULL ? len : 0, .out = out, .rc = CG_OK };
	const char *err;

	memset(out, 0, sizeof *out);
	out->format = CG_FORMAT_ELF_CORE;
	err = parse_ehdr(buf, c.len, &c.eh);
	if (err != NULL) {
		fail(&c, CG_ERR_MALFORMED, "%s", err);
		return c.rc;
	}
	c.word = c.eh.is64 ? 8 : 4;
	set_arch(out, &c.eh);
	if (c.eh.type != ELF_ET_CORE) {
		fail(&c, CG_ERR_MALFORMED, "not an ELF core (e_type %u)", c.eh.type);
		return c.rc;
	}
	read_phdrs(&c);
	scan(&c);
	if (c.prstatus.p == NULL)
		fail(&c, CG_ERR_MALFORMED, "no NT_PRSTATUS note");
	else
		decode_prstatus(&c);
	if (c.siginfo.p != NULL)
		decode_siginfo(&c);
	decode_modules(&c);
	return c.rc;
}
