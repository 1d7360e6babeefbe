/*
 * Minidump decoder (SPEC §7): header, stream directory, SystemInfo,
 * Exception (with the crashing thread's context), ModuleList with CodeView
 * build ids, and the PC as module + offset.
 *
 * Layouts are those of Microsoft's MINIDUMP_* structures as Breakpad and
 * Crashpad write them (little endian; byte-swapped dumps are refused).
 * Every offset and size in the file is untrusted: all reads go through a
 * span clamped to the buffer, lengths are compared with subtraction, never
 * by adding file values, and nothing is allocated. Where a structure is cut
 * short, the fields that lie inside the buffer are still read and the first
 * problem is kept in decode_error.
 *
 * Interpretation follows Breakpad's minidump_processor where it is simple:
 * Windows exception names, Linux signals (exception code = signal number,
 * flags = si_code), macOS Mach exceptions. fault_address is Breakpad's
 * "crash address" when the crash is a fault, and absent for signals that the
 * process sent itself (see the fixture notes on SIGABRT and EXC_CRASH).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bytes.h"
#include "decode.h"

#define MD_SIGNATURE       0x504d444du /* "MDMP" read little endian */
#define MD_VERSION         0xa793u
#define MD_HEADER_SIZE     32u
#define MD_DIRENT_SIZE     12u
#define MD_MODULE_SIZE     108u
#define MD_THREAD_SIZE     48u
#define MD_MEMDESC_SIZE    16u
#define MD_SYSINFO_SIZE    56u
#define MD_EXCEPTION_SIZE  168u
#define MD_MAX_PARAMS      15u

/* Bounds on counts read from the file. Breakpad stops at 128 streams and
 * 2048 modules; we allow more but never loop over an unbounded number. */
#define MD_MAX_STREAMS     1024u
#define MD_MAX_MODULES     8192u
#define MD_MAX_THREADS     16384u
#define MD_MAX_RANGES      65536u

enum md_stream_type {
	MD_THREAD_LIST = 3,
	MD_MODULE_LIST = 4,
	MD_MEMORY_LIST = 5,
	MD_EXCEPTION = 6,
	MD_SYSTEM_INFO = 7,
	MD_MEMORY64_LIST = 9,
};

enum md_cpu {
	MD_CPU_X86 = 0,
	MD_CPU_ARM = 5,
	MD_CPU_AMD64 = 9,
	MD_CPU_X86_WIN64 = 10,
	MD_CPU_ARM64 = 12,
	MD_CPU_ARM64_OLD = 0x8003,
	MD_CPU_RISCV = 0x8005,
	MD_CPU_RISCV64 = 0x8006,
};
#define MD_CPU_NONE 0xffffffffu

enum md_os {
	MD_OS_WIN32_WINDOWS = 1,
	MD_OS_WIN32_NT = 2,
	MD_OS_MAC = 0x8101,
	MD_OS_IOS = 0x8102,
	MD_OS_LINUX = 0x8201,
	MD_OS_SOLARIS = 0x8202,
	MD_OS_ANDROID = 0x8203,
	MD_OS_PS3 = 0x8204,
	MD_OS_NACL = 0x8205,
	MD_OS_FUCHSIA = 0x8206,
};
#define MD_OS_NONE 0xffffffffu

/* context_flags CPU bits (the high 24 bits of the first word). */
#define MD_CTX_CPU_MASK    0xffffff00u
#define MD_CTX_X86         0x00010000u
#define MD_CTX_AMD64       0x00100000u
#define MD_CTX_ARM         0x40000000u
#define MD_CTX_ARM_LEGACY  0x00000040u
#define MD_CTX_ARM64       0x00400000u
#define MD_CTX_RISCV       0x00800000u
#define MD_CTX_RISCV64     0x08000000u

/* Context sizes that identify a layout by themselves (Breakpad relies on
 * these being unique), and the smallest size of each layout. */
#define MD_CTX_AMD64_SIZE      1232u
#define MD_CTX_ARM64_OLD_SIZE  796u
#define MD_CTX_X86_SIZE        716u
#define MD_CTX_ARM_SIZE        368u
#define MD_CTX_ARM64_SIZE      912u
#define MD_CTX_RISCV_SIZE      268u
#define MD_CTX_RISCV64_SIZE    528u

#define CV_RSDS 0x53445352u /* "RSDS" */
#define CV_BPEL 0x4270454cu /* "LEpB" read little endian: Breakpad's ELF record */

/* Bytes [off, off + len) of the buffer, clamped to what the file holds. */
struct span {
	const uint8_t *p;
	size_t len;      /* bytes available */
	uint32_t size;   /* bytes declared by the file */
};

struct loc {
	uint32_t size;
	uint32_t rva;
	bool present;
};

struct md {
	const uint8_t *buf;
	size_t len;
	struct cg_crash *out;
	int err;
	uint32_t cpu;  /* SystemInfo processor_architecture, MD_CPU_NONE if absent */
	uint32_t os;   /* SystemInfo platform_id, MD_OS_NONE if absent */
	struct loc stream[10]; /* by stream type, for the types listed above */
};

__attribute__((format(printf, 3, 4)))
static void md_fail(struct md *m, int err, const char *fmt, ...)
{
	va_list ap;

	if (m->err != CG_OK)
		return;
	m->err = err;
	va_start(ap, fmt);
	vsnprintf(m->out->decode_error, sizeof m->out->decode_error, fmt, ap);
	va_end(ap);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)cg_load_le(p, 4);
}

static uint64_t le64(const uint8_t *p)
{
	return cg_load_le(p, 8);
}

static bool has(struct span s, size_t off, size_t n)
{
	return off <= s.len && n <= s.len - off;
}

static bool get16(struct span s, size_t off, uint32_t *v)
{
	if (!has(s, off, 2))
		return false;
	*v = (uint32_t)s.p[off] | (uint32_t)s.p[off + 1] << 8;
	return true;
}

static bool get32(struct span s, size_t off, uint32_t *v)
{
	if (!has(s, off, 4))
		return false;
	*v = le32(s.p + off);
	return true;
}

static bool get64(struct span s, size_t off, uint64_t *v)
{
	if (!has(s, off, 8))
		return false;
	*v = le64(s.p + off);
	return true;
}

/* True when [rva, rva + size) lies inside the buffer. */
static bool in_file(const struct md *m, uint64_t rva, uint64_t size)
{
	return rva <= m->len && size <= m->len - rva;
}

/*
 * The span at rva of size bytes. A span that runs past the end of the
 * buffer is cut to what is there and the truncation is recorded (once, as
 * the first error) with `what` naming the structure.
 */
static struct span md_span(struct md *m, uint32_t rva, uint32_t size, const char *what)
{
	struct span s = { NULL, 0, size };

	if (rva > m->len) {
		md_fail(m, CG_ERR_MALFORMED, "truncated: %s at 0x%x is past the end (%zu bytes)",
			what, rva, m->len);
		return s;
	}
	s.p = m->buf + rva;
	s.len = m->len - rva < size ? m->len - rva : size;
	if (s.len < size)
		md_fail(m, CG_ERR_MALFORMED, "truncated: %s at 0x%x needs %u bytes, %zu present",
			what, rva, size, s.len);
	return s;
}

/* A location descriptor that points outside the file is a truncation. */
static void md_check_loc(struct md *m, uint32_t size, uint32_t rva, const char *what)
{
	if (size != 0 && !in_file(m, rva, size))
		md_fail(m, CG_ERR_MALFORMED, "truncated: %s at 0x%x (%u bytes) ends past %zu",
			what, rva, size, m->len);
}

/*
 * Where the entries of a "count, then entries" list start. Writers for
 * 64-bit ABIs may put 4 bytes of padding after the 32-bit count (the module
 * list of Breakpad's macOS client does), which Breakpad accepts when the
 * stream is exactly 4 bytes longer than count entries need. A size that fits
 * neither is malformed; entries are then read from offset 4 as far as the
 * stream goes.
 */
static size_t list_start(struct md *m, uint32_t size, uint32_t count, uint32_t entry,
			 const char *what)
{
	uint64_t need = 4 + (uint64_t)count * entry;

	if (size == need)
		return 4;
	if (size == need + 4)
		return 8;
	md_fail(m, CG_ERR_MALFORMED, "%s: %u bytes for %u entries of %u", what, size, count,
		entry);
	return 4;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src);
}

/* ---- SystemInfo ---------------------------------------------------------- */

static const char *arch_name(uint32_t cpu)
{
	switch (cpu) {
	case MD_CPU_X86:
	case MD_CPU_X86_WIN64: return "x86";
	case MD_CPU_AMD64: return "x86_64";
	case MD_CPU_ARM: return "arm";
	case MD_CPU_ARM64:
	case MD_CPU_ARM64_OLD: return "arm64";
	case MD_CPU_RISCV: return "riscv32";
	case MD_CPU_RISCV64: return "riscv64";
	default: return "";
	}
}

/* Breakpad's names (MinidumpProcessor::GetOSInfo). */
static const char *os_name(uint32_t os)
{
	switch (os) {
	case MD_OS_WIN32_NT: return "Windows NT";
	case MD_OS_WIN32_WINDOWS: return "Windows";
	case MD_OS_MAC: return "Mac OS X";
	case MD_OS_IOS: return "iOS";
	case MD_OS_LINUX: return "Linux";
	case MD_OS_SOLARIS: return "Solaris";
	case MD_OS_ANDROID: return "Android";
	case MD_OS_PS3: return "PS3";
	case MD_OS_NACL: return "NaCl";
	case MD_OS_FUCHSIA: return "Fuchsia";
	default: return "";
	}
}

static void read_system_info(struct md *m)
{
	const struct loc *l = &m->stream[MD_SYSTEM_INFO];
	uint32_t v;

	if (!l->present)
		return;
	struct span s = md_span(m, l->rva, l->size, "system info stream");
	if (l->size < MD_SYSINFO_SIZE)
		md_fail(m, CG_ERR_MALFORMED, "system info stream is %u bytes, expected %u",
			l->size, MD_SYSINFO_SIZE);
	if (get16(s, 0, &v)) {
		m->cpu = v;
		copy_str(m->out->arch, sizeof m->out->arch, arch_name(v));
	}
	if (get32(s, 20, &v)) {
		m->os = v;
		copy_str(m->out->os, sizeof m->out->os, os_name(v));
	}
}

/* ---- Exception: reason and fault address --------------------------------- */

struct exc {
	uint32_t code, flags, nparams;
	uint64_t address;
	uint64_t info[MD_MAX_PARAMS];
	bool have_code, have_flags, have_address;
};

/* Darwin numbers the signals after 9 differently from Linux. */
static const char *darwin_signal_name(uint32_t sig)
{
	static const char *const names[] = {
		NULL, "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT",
		"SIGEMT", "SIGFPE", "SIGKILL", "SIGBUS", "SIGSEGV", "SIGSYS",
		"SIGPIPE", "SIGALRM", "SIGTERM", "SIGURG", "SIGSTOP", "SIGTSTP",
		"SIGCONT", "SIGCHLD", "SIGTTIN", "SIGTTOU", "SIGIO", "SIGXCPU",
		"SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGINFO", "SIGUSR1",
		"SIGUSR2",
	};
	return sig < sizeof names / sizeof names[0] ? names[sig] : NULL;
}

static void set_signal(struct cg_crash *o, uint32_t sig)
{
	o->signal = (int32_t)sig;
	o->present |= CG_CRASH_HAS_SIGNAL;
}

static void set_fault(struct cg_crash *o, uint64_t addr)
{
	o->fault_address = addr;
	o->present |= CG_CRASH_HAS_FAULT_ADDRESS;
}

/*
 * Linux and Android (Breakpad and Crashpad clients): the code is the signal,
 * the flags si_code, the address si_addr. Old Breakpad clients left the
 * flags 0, so 0 is taken as "not recorded" rather than SI_USER. A fault
 * signal carries an address unless a process sent it (si_code < 0, e.g.
 * SI_TKILL); SIGABRT and the other signals never do.
 */
static void interpret_linux(struct md *m, const struct exc *e)
{
	struct cg_crash *o = m->out;
	int32_t si_code = (int32_t)e->flags;

	if (e->code == 0xffffffffu) {
		copy_str(o->reason, sizeof o->reason, "DUMP_REQUESTED");
		return;
	}
	if (e->code == 0 || e->code > 64)
		return;
	set_signal(o, e->code);
	const char *name = cg_linux_signal_name(e->code);
	if (name)
		copy_str(o->reason, sizeof o->reason, name);
	if (e->have_flags && si_code != 0) {
		o->si_code = si_code;
		o->present |= CG_CRASH_HAS_SI_CODE;
	}
	switch (e->code) {
	case 4:  /* SIGILL */
	case 5:  /* SIGTRAP */
	case 7:  /* SIGBUS */
	case 8:  /* SIGFPE */
	case 11: /* SIGSEGV */
		if (e->have_address && si_code >= 0)
			set_fault(o, e->address);
		break;
	default:
		break;
	}
}

static const char *kern_name(uint32_t kr)
{
	switch (kr) {
	case 1: return "KERN_INVALID_ADDRESS";
	case 2: return "KERN_PROTECTION_FAILURE";
	case 8: return "KERN_NO_ACCESS";
	case 9: return "KERN_MEMORY_FAILURE";
	case 10: return "KERN_MEMORY_ERROR";
	case 50: return "KERN_CODESIGN_ERROR";
	default: return NULL;
	}
}

static const char *mach_exception_name(uint32_t code)
{
	switch (code) {
	case 1: return "EXC_BAD_ACCESS";
	case 2: return "EXC_BAD_INSTRUCTION";
	case 3: return "EXC_ARITHMETIC";
	case 4: return "EXC_EMULATION";
	case 5: return "EXC_SOFTWARE";
	case 6: return "EXC_BREAKPOINT";
	case 7: return "EXC_SYSCALL";
	case 8: return "EXC_MACH_SYSCALL";
	case 9: return "EXC_RPC_ALERT";
	case 10: return "EXC_CRASH";
	case 11: return "EXC_RESOURCE";
	case 12: return "EXC_GUARD";
	case 0x43507378: return "Simulated Exception";
	case 0x43506e78: return "Uncaught NSException";
	default: return NULL;
	}
}

/*
 * macOS and iOS: the code is the Mach exception, the flags its first code
 * word. Breakpad's client reports signals as EXC_SOFTWARE with 0x1000x codes.
 * Crashpad unwraps EXC_CRASH into the original exception (0 when a signal
 * such as abort() caused it) and keeps the raw codes as parameters:
 * information[0] = EXC_CRASH, information[1] = code[0] with the signal in
 * bits 24-31. The address is the data address for EXC_BAD_ACCESS and the
 * instruction for the other hardware exceptions; software exceptions have
 * none.
 */
static void interpret_mac(struct md *m, const struct exc *e)
{
	struct cg_crash *o = m->out;
	const char *name = mach_exception_name(e->code);
	const char *detail = NULL;
	uint32_t sig = 0;

	if (e->nparams >= 2 && e->info[0] == 10) {
		sig = (uint32_t)(e->info[1] >> 24) & 0xff;
		if (e->code == 0)
			name = "EXC_CRASH";
	}
	switch (e->code) {
	case 1:
		detail = kern_name(e->flags);
		/* fall through */
	case 2:
	case 3:
	case 6:
		if (e->have_address)
			set_fault(o, e->address);
		break;
	case 5:
		if (e->flags == 0x10000)
			sig = 12; /* SIGSYS */
		else if (e->flags == 0x10001)
			sig = 13; /* SIGPIPE */
		else if (e->flags == 0x10002)
			sig = 6;  /* SIGABRT */
		else if (e->flags == 0xdeadc0de)
			detail = "UNCAUGHT_NS_EXCEPTION";
		break;
	default:
		break;
	}
	if (sig >= 1 && sig <= 31) {
		set_signal(o, sig);
		if (!detail && e->code != 1)
			detail = darwin_signal_name(sig);
	}
	if (name && detail)
		snprintf(o->reason, sizeof o->reason, "%s / %s", name, detail);
	else if (name)
		copy_str(o->reason, sizeof o->reason, name);
}

static const char *win_exception_name(uint32_t code)
{
	switch (code) {
	case 0x40010005: return "DBG_CONTROL_C";
	case 0x80000001: return "EXCEPTION_GUARD_PAGE";
	case 0x80000002: return "EXCEPTION_DATATYPE_MISALIGNMENT";
	case 0x80000003: return "EXCEPTION_BREAKPOINT";
	case 0x80000004: return "EXCEPTION_SINGLE_STEP";
	case 0xc0000005: return "EXCEPTION_ACCESS_VIOLATION";
	case 0xc0000006: return "EXCEPTION_IN_PAGE_ERROR";
	case 0xc0000008: return "EXCEPTION_INVALID_HANDLE";
	case 0xc000001d: return "EXCEPTION_ILLEGAL_INSTRUCTION";
	case 0xc0000025: return "EXCEPTION_NONCONTINUABLE_EXCEPTION";
	case 0xc0000026: return "EXCEPTION_INVALID_DISPOSITION";
	case 0xc000008c: return "EXCEPTION_BOUNDS_EXCEEDED";
	case 0xc000008d: return "EXCEPTION_FLT_DENORMAL_OPERAND";
	case 0xc000008e: return "EXCEPTION_FLT_DIVIDE_BY_ZERO";
	case 0xc000008f: return "EXCEPTION_FLT_INEXACT_RESULT";
	case 0xc0000090: return "EXCEPTION_FLT_INVALID_OPERATION";
	case 0xc0000091: return "EXCEPTION_FLT_OVERFLOW";
	case 0xc0000092: return "EXCEPTION_FLT_STACK_CHECK";
	case 0xc0000093: return "EXCEPTION_FLT_UNDERFLOW";
	case 0xc0000094: return "EXCEPTION_INT_DIVIDE_BY_ZERO";
	case 0xc0000095: return "EXCEPTION_INT_OVERFLOW";
	case 0xc0000096: return "EXCEPTION_PRIV_INSTRUCTION";
	case 0xc00000fd: return "EXCEPTION_STACK_OVERFLOW";
	case 0xc00000ff: return "EXCEPTION_BAD_FUNCTION_TABLE";
	case 0xc0000194: return "EXCEPTION_POSSIBLE_DEADLOCK";
	case 0xc0000374: return "EXCEPTION_HEAP_CORRUPTION";
	case 0xc0000409: return "EXCEPTION_STACK_BUFFER_OVERRUN";
	case 0xe0000008: return "Out of Memory";
	case 0xe06d7363: return "Unhandled C++ Exception";
	case 0x0517a7ed: return "Simulated Exception";
	default: return NULL;
	}
}

/* Exceptions raised by the processor: their address is the faulting
 * instruction (or, for access violations, the data address). */
static bool win_is_hardware(uint32_t code)
{
	switch (code) {
	case 0x80000001: case 0x80000002: case 0x80000003: case 0x80000004:
	case 0xc0000005: case 0xc0000006: case 0xc000001d: case 0xc000008c:
	case 0xc000008d: case 0xc000008e: case 0xc000008f: case 0xc0000090:
	case 0xc0000091: case 0xc0000092: case 0xc0000093: case 0xc0000094:
	case 0xc0000095: case 0xc0000096: case 0xc00000fd:
		return true;
	default:
		return false;
	}
}

/*
 * Windows: for access violations and in-page errors information[0] says
 * read (0), write (1) or execute (8) and information[1] is the data address,
 * which Breakpad reports as the crash address.
 */
static void interpret_windows(struct md *m, const struct exc *e)
{
	struct cg_crash *o = m->out;
	const char *name = win_exception_name(e->code);

	if (!name)
		return;
	if ((e->code == 0xc0000005 || e->code == 0xc0000006) && e->nparams >= 1) {
		const char *how = e->info[0] == 0 ? "_READ" : e->info[0] == 1 ? "_WRITE" :
				  e->info[0] == 8 ? "_EXEC" : "";
		snprintf(o->reason, sizeof o->reason, "%s%s", name, how);
	} else {
		copy_str(o->reason, sizeof o->reason, name);
	}
	if (!win_is_hardware(e->code))
		return;
	if ((e->code == 0xc0000005 || e->code == 0xc0000006) && e->nparams >= 2)
		set_fault(o, e->info[1]);
	else if (e->have_address)
		set_fault(o, e->address);
}

/* ---- Thread context ------------------------------------------------------ */

struct regs_layout {
	uint32_t pc, sp, lr; /* offsets; lr 0 = none */
	unsigned width;      /* 4 or 8 bytes per register */
	uint32_t min_size;
	uint32_t cpu;        /* MD_CPU_* for the arch name when SystemInfo lacks it */
};

static const struct regs_layout L_X86 = { 184, 196, 0, 4, MD_CTX_X86_SIZE, MD_CPU_X86 };
static const struct regs_layout L_AMD64 = { 248, 152, 0, 8, MD_CTX_AMD64_SIZE, MD_CPU_AMD64 };
static const struct regs_layout L_ARM = { 64, 56, 60, 4, MD_CTX_ARM_SIZE, MD_CPU_ARM };
static const struct regs_layout L_ARM64 = { 264, 256, 248, 8, MD_CTX_ARM64_SIZE, MD_CPU_ARM64 };
static const struct regs_layout L_ARM64_OLD = { 264, 256, 248, 8, MD_CTX_ARM64_OLD_SIZE,
						MD_CPU_ARM64_OLD };
static const struct regs_layout L_RISCV = { 8, 16, 12, 4, MD_CTX_RISCV_SIZE, MD_CPU_RISCV };
static const struct regs_layout L_RISCV64 = { 8, 24, 16, 8, MD_CTX_RISCV64_SIZE, MD_CPU_RISCV64 };

static const struct regs_layout *layout_for_cpu(uint32_t cpu)
{
	switch (cpu) {
	case MD_CPU_X86: return &L_X86;
	case MD_CPU_AMD64: return &L_AMD64;
	case MD_CPU_ARM: return &L_ARM;
	case MD_CPU_ARM64: return &L_ARM64;
	case MD_CPU_RISCV: return &L_RISCV;
	case MD_CPU_RISCV64: return &L_RISCV64;
	default: return NULL;
	}
}

/* Whether SystemInfo's CPU agrees with a context layout (Breakpad's
 * CheckAgainstSystemInfo): a 32-bit x86 context also under WOW64. */
static bool cpu_matches(const struct regs_layout *l, uint32_t cpu)
{
	switch (l->cpu) {
	case MD_CPU_X86: return cpu == MD_CPU_X86 || cpu == MD_CPU_X86_WIN64;
	case MD_CPU_ARM64:
	case MD_CPU_ARM64_OLD: return cpu == MD_CPU_ARM64 || cpu == MD_CPU_ARM64_OLD;
	default: return cpu == l->cpu;
	}
}

/*
 * Which layout a context has, the way Breakpad decides: the AMD64 context
 * (whose flags are not at offset 0) and the old Breakpad ARM64 context (64-
 * bit flags) by their unique sizes, every other one by the CPU bits of its
 * flags; SystemInfo's CPU decides when the flags carry none and for a larger
 * AMD64 context (XSAVE data appended). Without SystemInfo those cases stay
 * undecided rather than guessed, so that a dump cut before its SystemInfo
 * never reads registers at other offsets than the whole dump. A context
 * that contradicts SystemInfo is not read.
 */
static const struct regs_layout *context_layout(struct md *m, struct span s)
{
	const struct regs_layout *l = NULL;
	uint32_t flags;

	if (s.size == MD_CTX_AMD64_SIZE) {
		l = &L_AMD64;
	} else if (s.size == MD_CTX_ARM64_OLD_SIZE) {
		l = &L_ARM64_OLD;
	} else if (s.size > MD_CTX_AMD64_SIZE && m->cpu == MD_CPU_AMD64) {
		l = &L_AMD64;
	} else if (s.size > MD_CTX_AMD64_SIZE && m->cpu == MD_CPU_NONE) {
		l = NULL;
	} else if (get32(s, 0, &flags)) {
		switch (flags & MD_CTX_CPU_MASK) {
		case MD_CTX_X86: l = &L_X86; break;
		case MD_CTX_AMD64: l = &L_AMD64; break;
		case MD_CTX_ARM: l = &L_ARM; break;
		case MD_CTX_ARM64: l = &L_ARM64; break;
		case MD_CTX_RISCV: l = &L_RISCV; break;
		case MD_CTX_RISCV64: l = &L_RISCV64; break;
		case 0:
			l = (flags & MD_CTX_ARM_LEGACY) ? &L_ARM : layout_for_cpu(m->cpu);
			break;
		default:
			break;
		}
	}
	if (!l) {
		md_fail(m, CG_ERR_MALFORMED, "thread context of %u bytes: unknown CPU", s.size);
		return NULL;
	}
	if (m->cpu != MD_CPU_NONE && !cpu_matches(l, m->cpu)) {
		md_fail(m, CG_ERR_MALFORMED, "thread context does not match CPU 0x%x of system info",
			m->cpu);
		return NULL;
	}
	return l;
}

static bool get_reg(struct span s, uint32_t off, unsigned width, uint64_t *v)
{
	uint32_t v32;

	if (width == 8)
		return get64(s, off, v);
	if (!get32(s, off, &v32))
		return false;
	*v = v32;
	return true;
}

static void read_context(struct md *m, uint32_t size, uint32_t rva)
{
	struct cg_crash *o = m->out;
	struct span s = md_span(m, rva, size, "thread context");
	const struct regs_layout *l = context_layout(m, s);
	uint64_t v;

	if (!l)
		return;
	if (size < l->min_size) {
		md_fail(m, CG_ERR_MALFORMED, "thread context is %u bytes, expected %u", size,
			l->min_size);
		return;
	}
	if (o->arch[0] == '\0')
		copy_str(o->arch, sizeof o->arch, arch_name(l->cpu));
	if (get_reg(s, l->pc, l->width, &v)) {
		o->pc = v;
		o->present |= CG_CRASH_HAS_PC;
	}
	if (get_reg(s, l->sp, l->width, &v)) {
		o->sp = v;
		o->present |= CG_CRASH_HAS_SP;
	}
	if (l->lr && get_reg(s, l->lr, l->width, &v)) {
		o->lr = v;
		o->present |= CG_CRASH_HAS_LR;
	}
}

/*
 * The crashing thread's context when the exception stream does not carry
 * one: the thread list entry with that thread id. The whole list is also
 * checked so that a cut-off stack or context shows as a truncation.
 */
static void read_thread_list(struct md *m, bool want_context, uint32_t tid)
{
	const struct loc *l = &m->stream[MD_THREAD_LIST];
	uint32_t count, csize = 0, crva = 0;
	bool found = false;

	if (!l->present)
		return;
	struct span s = md_span(m, l->rva, l->size, "thread list");
	if (!get32(s, 0, &count))
		return;
	size_t off = list_start(m, l->size, count, MD_THREAD_SIZE, "thread list");
	if (count > MD_MAX_THREADS)
		count = MD_MAX_THREADS;
	for (uint32_t i = 0; i < count && has(s, off, MD_THREAD_SIZE); i++, off += MD_THREAD_SIZE) {
		const uint8_t *e = s.p + off;
		uint32_t cs = le32(e + 40), cr = le32(e + 44);

		md_check_loc(m, le32(e + 32), le32(e + 36), "thread stack");
		md_check_loc(m, cs, cr, "thread context");
		if (le32(e) == tid && !found) {
			found = true;
			csize = cs;
			crva = cr;
		}
	}
	if (want_context && found && csize != 0)
		read_context(m, csize, crva);
}

static void read_exception(struct md *m)
{
	const struct loc *l = &m->stream[MD_EXCEPTION];
	struct cg_crash *o = m->out;
	struct exc e;
	uint32_t tid = 0, csize = 0, crva = 0;
	bool have_tid;

	memset(&e, 0, sizeof e);
	if (!l->present) {
		read_thread_list(m, false, 0);
		return;
	}
	struct span s = md_span(m, l->rva, l->size, "exception stream");
	if (l->size < MD_EXCEPTION_SIZE)
		md_fail(m, CG_ERR_MALFORMED, "exception stream is %u bytes, expected %u", l->size,
			MD_EXCEPTION_SIZE);
	have_tid = get32(s, 0, &tid);
	if (have_tid) {
		o->thread = tid;
		o->present |= CG_CRASH_HAS_THREAD;
	}
	e.have_code = get32(s, 8, &e.code);
	e.have_flags = get32(s, 12, &e.flags);
	e.have_address = get64(s, 24, &e.address);
	/* The interpretation needs the whole record: a record cut inside its
	 * parameters would give a vaguer reason than the whole dump. */
	bool whole = e.have_code && e.have_flags && e.have_address &&
		     get32(s, 32, &e.nparams);
	if (whole) {
		if (e.nparams > MD_MAX_PARAMS)
			e.nparams = MD_MAX_PARAMS;
		for (uint32_t i = 0; i < e.nparams && whole; i++)
			whole = get64(s, 40 + 8 * (size_t)i, &e.info[i]);
	}
	if (e.have_code) {
		o->exception_code = e.code;
		o->reason_code = e.code;
		o->present |= CG_CRASH_HAS_EXCEPTION_CODE | CG_CRASH_HAS_REASON_CODE;
	}
	if (whole) {
		switch (m->os) {
		case MD_OS_LINUX:
		case MD_OS_ANDROID:
			interpret_linux(m, &e);
			break;
		case MD_OS_MAC:
		case MD_OS_IOS:
			interpret_mac(m, &e);
			break;
		case MD_OS_WIN32_NT:
		case MD_OS_WIN32_WINDOWS:
			interpret_windows(m, &e);
			break;
		default:
			break;
		}
	}
	/* The exception's own context; the thread list's only when the stream
	 * says it has none (a cut-off stream gives no PC rather than another
	 * context of the thread). */
	bool have_loc = get32(s, 160, &csize) && get32(s, 164, &crva);
	if (have_loc && csize != 0) {
		read_context(m, csize, crva);
		read_thread_list(m, false, tid);
	} else {
		read_thread_list(m, have_tid && have_loc, tid);
	}
}

/* ---- Modules ------------------------------------------------------------- */

static size_t put_utf8(char *dst, size_t cap, size_t n, uint32_t cp)
{
	uint8_t b[4];
	size_t k;

	if (cp < 0x20 || cp == 0x7f)
		cp = '?'; /* the name ends up in logs and JSON */
	if (cp < 0x80) {
		b[0] = (uint8_t)cp;
		k = 1;
	} else if (cp < 0x800) {
		b[0] = (uint8_t)(0xc0 | cp >> 6);
		b[1] = (uint8_t)(0x80 | (cp & 0x3f));
		k = 2;
	} else if (cp < 0x10000) {
		b[0] = (uint8_t)(0xe0 | cp >> 12);
		b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (uint8_t)(0x80 | (cp & 0x3f));
		k = 3;
	} else {
		b[0] = (uint8_t)(0xf0 | cp >> 18);
		b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (uint8_t)(0x80 | (cp & 0x3f));
		k = 4;
	}
	if (n + k >= cap)
		return 0; /* no partial characters; the caller stops */
	memcpy(dst + n, b, k);
	return k;
}

/*
 * The last path component of the MINIDUMP_STRING (u32 byte length, then
 * UTF-16LE) at rva, as UTF-8 in dst. A NUL ends the string; unpaired
 * surrogates become U+FFFD; a name longer than dst is cut at a character
 * boundary. Returns false when the string is not inside the file.
 */
static bool read_name(struct md *m, uint32_t rva, char *dst, size_t cap)
{
	struct span s = md_span(m, rva, 4, "module name");
	uint32_t bytes;
	size_t units, start = 0, n = 0;

	dst[0] = '\0';
	if (!get32(s, 0, &bytes))
		return false;
	if (!in_file(m, (uint64_t)rva + 4, bytes)) {
		md_fail(m, CG_ERR_MALFORMED, "truncated: module name at 0x%x (%u bytes)", rva,
			bytes);
		return false;
	}
	const uint8_t *p = m->buf + rva + 4;
	units = bytes / 2;
	for (size_t i = 0; i < units; i++) {
		uint32_t u = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
		if (u == 0) {
			units = i;
			break;
		}
		if (u == '/' || u == '\\')
			start = i + 1;
	}
	for (size_t i = start; i < units; i++) {
		uint32_t cp = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
		if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < units) {
			uint32_t lo = (uint32_t)p[2 * i + 2] | (uint32_t)p[2 * i + 3] << 8;
			if (lo >= 0xdc00 && lo <= 0xdfff) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i++;
			} else {
				cp = 0xfffd;
			}
		} else if (cp >= 0xd800 && cp <= 0xdfff) {
			cp = 0xfffd;
		}
		size_t k = put_utf8(dst, cap, n, cp);
		if (k == 0)
			break;
		n += k;
	}
	dst[n] = '\0';
	return true;
}

/*
 * The module's CodeView identifier (decode.h): RSDS -> GUID and age as
 * they lie in the file (20 bytes); BpEL -> the build id bytes after the
 * signature. Other records (NB10, ...) give no build id.
 */
static void read_codeview(struct md *m, uint32_t size, uint32_t rva)
{
	struct cg_crash *o = m->out;
	uint32_t sig;

	if (size == 0)
		return;
	struct span s = md_span(m, rva, size, "CodeView record");
	if (!get32(s, 0, &sig))
		return;
	if (sig == CV_RSDS) {
		if (has(s, 4, 20)) {
			memcpy(o->build_id, s.p + 4, 20);
			o->build_id_len = 20;
		} else if (size < 24) {
			md_fail(m, CG_ERR_MALFORMED, "RSDS CodeView record of %u bytes", size);
		}
	} else if (sig == CV_BPEL) {
		size_t n = size - 4;
		if (n > CG_PROTO_MAX_BUILD_ID) {
			md_fail(m, CG_ERR_TOO_LARGE, "build id of %zu bytes (at most %d)", n,
				CG_PROTO_MAX_BUILD_ID);
		} else if (n > 0 && has(s, 4, n)) {
			memcpy(o->build_id, s.p + 4, n);
			o->build_id_len = n;
		}
	}
}

/*
 * Walks the module list once: checks that every module's name and records
 * are inside the file and, when the PC is known, takes the first module
 * whose [base, base + size) holds it.
 */
static void read_modules(struct md *m)
{
	const struct loc *l = &m->stream[MD_MODULE_LIST];
	struct cg_crash *o = m->out;
	uint32_t count;
	bool found = false;

	if (!l->present)
		return;
	struct span s = md_span(m, l->rva, l->size, "module list");
	if (!get32(s, 0, &count))
		return;
	size_t off = list_start(m, l->size, count, MD_MODULE_SIZE, "module list");
	if (count > MD_MAX_MODULES) {
		md_fail(m, CG_ERR_TOO_LARGE, "module list of %u modules (at most %u read)", count,
			MD_MAX_MODULES);
		count = MD_MAX_MODULES;
	}
	for (uint32_t i = 0; i < count && has(s, off, MD_MODULE_SIZE); i++, off += MD_MODULE_SIZE) {
		uint64_t base;
		uint32_t size, name_rva, cv_size, cv_rva, misc_size, misc_rva, name_len;
		const uint8_t *e = s.p + off;

		base = le64(e);
		size = le32(e + 8);
		name_rva = le32(e + 20);
		cv_size = le32(e + 76);
		cv_rva = le32(e + 80);
		misc_size = le32(e + 84);
		misc_rva = le32(e + 88);
		if (!in_file(m, name_rva, 4)) {
			md_fail(m, CG_ERR_MALFORMED, "truncated: module %u name at 0x%x", i,
				name_rva);
		} else {
			name_len = le32(m->buf + name_rva);
			if (!in_file(m, (uint64_t)name_rva + 4, name_len))
				md_fail(m, CG_ERR_MALFORMED,
					"truncated: module %u name at 0x%x (%u bytes)", i, name_rva,
					name_len);
		}
		md_check_loc(m, cv_size, cv_rva, "CodeView record");
		md_check_loc(m, misc_size, misc_rva, "misc debug record");

		if (found || !(o->present & CG_CRASH_HAS_PC))
			continue;
		if (o->pc < base || o->pc - base >= size)
			continue;
		found = true;
		o->module_offset = o->pc - base;
		o->present |= CG_CRASH_HAS_MODULE_OFFSET;
		read_name(m, name_rva, o->module, sizeof o->module);
		read_codeview(m, cv_size, cv_rva);
	}
}

/* ---- Completeness of the memory lists ------------------------------------ */

static void check_memory_lists(struct md *m)
{
	const struct loc *l = &m->stream[MD_MEMORY_LIST];
	uint32_t count;

	if (l->present) {
		struct span s = md_span(m, l->rva, l->size, "memory list");
		if (get32(s, 0, &count)) {
			size_t off = list_start(m, l->size, count, MD_MEMDESC_SIZE, "memory list");
			if (count > MD_MAX_RANGES)
				count = MD_MAX_RANGES;
			for (uint32_t i = 0; i < count && has(s, off, MD_MEMDESC_SIZE);
			     i++, off += MD_MEMDESC_SIZE)
				md_check_loc(m, le32(s.p + off + 8), le32(s.p + off + 12),
					     "memory range");
		}
	}

	/* Memory64List: u64 count, u64 base rva, then (start, size) pairs whose
	 * bytes follow each other from the base rva. */
	l = &m->stream[MD_MEMORY64_LIST];
	if (l->present) {
		struct span s = md_span(m, l->rva, l->size, "memory64 list");
		uint64_t n, at, total = 0, sz;
		if (get64(s, 0, &n) && get64(s, 8, &at)) {
			if (n > MD_MAX_RANGES)
				n = MD_MAX_RANGES;
			for (uint64_t i = 0; i < n && get64(s, 16 + 16 * i + 8, &sz); i++) {
				if (sz > UINT64_MAX - total) {
					total = UINT64_MAX;
					break;
				}
				total += sz;
			}
			if (!in_file(m, at, total))
				md_fail(m, CG_ERR_MALFORMED,
					"truncated: memory64 data at 0x%llx (%llu bytes) ends past %zu",
					(unsigned long long)at, (unsigned long long)total, m->len);
		}
	}
}

/* ---- Header and directory ------------------------------------------------ */

static bool read_directory(struct md *m)
{
	uint32_t version, count, dir_rva;

	if (m->len < 4 || le32(m->buf) != MD_SIGNATURE) {
		md_fail(m, CG_ERR_MALFORMED, "not a minidump: no MDMP signature");
		return false;
	}
	if (m->len < MD_HEADER_SIZE) {
		md_fail(m, CG_ERR_MALFORMED, "truncated: header needs %u bytes, %zu present",
			MD_HEADER_SIZE, m->len);
		return false;
	}
	version = le32(m->buf + 4);
	count = le32(m->buf + 8);
	dir_rva = le32(m->buf + 12);
	if ((version & 0xffff) != MD_VERSION) {
		md_fail(m, CG_ERR_MALFORMED, "unsupported minidump version 0x%x", version);
		return false;
	}
	if (count > MD_MAX_STREAMS) {
		md_fail(m, CG_ERR_TOO_LARGE, "%u streams (at most %u)", count, MD_MAX_STREAMS);
		return false;
	}
	if (count != 0 && dir_rva < MD_HEADER_SIZE) {
		md_fail(m, CG_ERR_MALFORMED, "stream directory at 0x%x overlaps the header",
			dir_rva);
		return false;
	}
	struct span d = md_span(m, dir_rva, count * MD_DIRENT_SIZE, "stream directory");
	for (size_t off = 0; has(d, off, MD_DIRENT_SIZE); off += MD_DIRENT_SIZE) {
		uint32_t type = le32(d.p + off);
		uint32_t size = le32(d.p + off + 4);
		uint32_t rva = le32(d.p + off + 8);

		if (type == 0) /* MD_UNUSED_STREAM */
			continue;
		if (size != 0 && !in_file(m, rva, size))
			md_fail(m, CG_ERR_MALFORMED,
				"truncated: stream type 0x%x at 0x%x (%u bytes) ends past %zu",
				type, rva, size, m->len);
		switch (type) {
		case MD_THREAD_LIST:
		case MD_MODULE_LIST:
		case MD_MEMORY_LIST:
		case MD_EXCEPTION:
		case MD_SYSTEM_INFO:
		case MD_MEMORY64_LIST:
			if (m->stream[type].present) {
				md_fail(m, CG_ERR_MALFORMED, "duplicate stream type %u", type);
				break;
			}
			m->stream[type] = (struct loc){ size, rva, true };
			break;
		default:
			break;
		}
	}
	return true;
}

int cg_decode_minidump(const uint8_t *buf, size_t len, struct cg_crash *out)
{
	struct md m;

	memset(out, 0, sizeof *out);
	out->format = CG_FORMAT_MINIDUMP;
	memset(&m, 0, sizeof m);
	m.buf = buf;
	m.len = buf ? len : 0;
	m.out = out;
	m.err = CG_OK;
	m.cpu = MD_CPU_NONE;
	m.os = MD_OS_NONE;

	if (!read_directory(&m))
		return m.err;
	read_system_info(&m);
	read_exception(&m);
	read_modules(&m);
	check_memory_lists(&m);
	return m.err;
}
