/*
 * Unit tests for the ELF core decoder (gateway/decode_elf.c) and format
 * detection / dispatch (gateway/decode.c).
 *
 * Two kinds of input:
 *  - the real cores in the shared fixtures, each compared with the values
 *    the reference tools read from it (expected.json; README.md there says
 *    what each field means). Found through $CG_FIXTURES, else
 *    ROOT/../shared/fixtures with ROOT three levels above this file; the
 *    tests skip when they are absent;
 *  - cores built here in memory, field by field from the kernel's layouts
 *    (include/uapi/linux/elfcore.h, fs/binfmt_elf.c): ELF32/ELF64, both byte
 *    orders, with and without NT_FILE/NT_AUXV and the executable's header,
 *    and every truncation of them.
 * Only ELF cores and raw bytes go through cg_decode(): the Zephyr and
 * minidump decoders have their own tests, so only their detection is
 * checked here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "crashgate/error.h"
#include "decode.h"

/* ---- the shared fixtures ------------------------------------------------- */

static const char *fixtures_dir(void)
{
	static char dir[4096];
	const char *env = getenv("CG_FIXTURES");
	char here[4096];

	if (env != NULL && *env != '\0') {
		snprintf(dir, sizeof dir, "%s", env);
		return dir;
	}
	snprintf(here, sizeof here, "%s", __FILE__);
	/* tests/unit/test_decode_elf.c -> tests/unit -> tests -> root */
	snprintf(dir, sizeof dir, "%s/../shared/fixtures", dirname(dirname(dirname(here))));
	return dir;
}

/* The whole file, or NULL when it does not exist. */
static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (f == NULL)
		return NULL;
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* expected.json, or a cmocka skip when the fixtures are not there. */
static json_t *load_expected(void)
{
	char path[4200];
	struct stat st;
	json_error_t err;
	json_t *root;

	snprintf(path, sizeof path, "%s/expected.json", fixtures_dir());
	if (stat(path, &st) != 0) {
		print_message("fixtures not found at %s (set CG_FIXTURES); skipping\n", path);
		skip();
	}
	root = json_load_file(path, 0, &err);
	if (root == NULL)
		print_error("%s:%d: %s\n", path, err.line, err.text);
	assert_non_null(root);
	return root;
}

static json_t *expected_for(json_t *root, const char *file)
{
	json_t *list = json_object_get(root, "fixtures"), *fx;
	size_t i;

	json_array_foreach(list, i, fx) {
		const char *f = json_string_value(json_object_get(fx, "file"));
		if (f != NULL && strcmp(f, file) == 0)
			return fx;
	}
	print_error("%s is not in expected.json\n", file);
	fail();
	return NULL;
}

static uint64_t hex_value(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	if (s == NULL)
		print_error("expected.json: \"%s\" is not a string\n", key);
	assert_non_null(s);
	return strtoull(s, NULL, 16);
}

static void hex_string(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
	out[2 * n] = '\0';
}

static const char *last_component(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash != NULL ? slash + 1 : path;
}

static void check_fixture(void **state)
{
	const char *file = *state;
	json_t *root = load_expected(), *fx, *mm, *pm, *fa;
	char path[4200], hex[2 * CG_PROTO_MAX_BUILD_ID + 1];
	struct cg_crash c;
	uint8_t *buf;
	size_t len;
	int rc;

	fx = expected_for(root, file);
	snprintf(path, sizeof path, "%s/%s", fixtures_dir(), file);
	buf = read_file(path, &len);
	if (buf == NULL)
		print_error("missing fixture %s\n", path);
	assert_non_null(buf);

	assert_int_equal(cg_detect_format(buf, len), CG_FORMAT_ELF_CORE);
	rc = cg_decode(buf, len, CG_FORMAT_DETECT, &c);
	if (rc != CG_OK)
		print_error("%s: %s\n", file, c.decode_error);
	assert_int_equal(rc, CG_OK);
	assert_string_equal(c.decode_error, "");
	assert_int_equal(c.format, CG_FORMAT_ELF_CORE);

	assert_string_equal(c.arch, json_string_value(json_object_get(fx, "arch")));
	assert_string_equal(c.os, json_string_value(json_object_get(fx, "os")));

	assert_true(c.present & CG_CRASH_HAS_SIGNAL);
	assert_int_equal(c.signal, hex_value(fx, "signal"));
	assert_string_equal(c.reason, json_string_value(json_object_get(fx, "signal_name")));
	assert_true(c.present & CG_CRASH_HAS_REASON_CODE);
	assert_int_equal(c.reason_code, hex_value(fx, "signal"));

	assert_true(c.present & CG_CRASH_HAS_SI_CODE);
	assert_int_equal(c.si_code, strtol(json_string_value(json_object_get(fx, "si_code")), NULL, 10));

	fa = json_object_get(fx, "fault_address");
	if (json_is_null(fa)) {
		assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
	} else {
		assert_true(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
		assert_int_equal(c.fault_address, hex_value(fx, "fault_address"));
	}

	assert_true(c.present & CG_CRASH_HAS_PC);
	assert_int_equal(c.pc, hex_value(fx, "pc"));
	assert_true(c.present & CG_CRASH_HAS_SP);
	assert_int_equal(c.sp, hex_value(fx, "sp"));
	if (json_object_get(fx, "lr") != NULL && !json_is_null(json_object_get(fx, "lr"))) {
		assert_true(c.present & CG_CRASH_HAS_LR);
		assert_int_equal(c.lr, hex_value(fx, "lr"));
	} else {
		assert_false(c.present & CG_CRASH_HAS_LR);
	}
	assert_true(c.present & CG_CRASH_HAS_THREAD);

	mm = json_object_get(fx, "main_module");
	assert_non_null(mm);
	hex_string(c.build_id, c.build_id_len, hex);
	assert_string_equal(hex, json_string_value(json_object_get(mm, "build_id")));

	pm = json_object_get(fx, "pc_module");
	if (json_is_null(pm)) {
		assert_false(c.present & CG_CRASH_HAS_MODULE_OFFSET);
		assert_string_equal(c.module, "");
	} else {
		assert_string_equal(c.module,
				    last_component(json_string_value(json_object_get(pm, "name"))));
		assert_true(c.present & CG_CRASH_HAS_MODULE_OFFSET);
		assert_int_equal(c.module_offset, hex_value(pm, "pc_offset"));
	}

	free(buf);
	json_decref(root);
}

static const char *const fixture_cores[] = {
	"elf-core/core_linux64.elf", "elf-core/core_linux32.elf", "elf-core/crash_segv.core",
	"elf-core/crash_abort.core", "elf-core/crash_fpe.core",
};

/* Every ELF core of expected.json has a test above. */
static void test_fixture_list_complete(void **state)
{
	json_t *root = load_expected(), *fx;
	size_t i, seen = 0;

	(void)state;
	json_array_foreach(json_object_get(root, "fixtures"), i, fx) {
		const char *fmt = json_string_value(json_object_get(fx, "format"));
		const char *file = json_string_value(json_object_get(fx, "file"));
		bool listed = false;

		if (fmt == NULL || strcmp(fmt, "elf-core") != 0)
			continue;
		for (size_t k = 0; k < sizeof fixture_cores / sizeof fixture_cores[0]; k++)
			listed |= strcmp(file, fixture_cores[k]) == 0;
		if (!listed)
			print_error("%s has no test\n", file);
		assert_true(listed);
		seen++;
	}
	assert_int_equal(seen, sizeof fixture_cores / sizeof fixture_cores[0]);
	json_decref(root);
}

/* The crasher's executable is an ELF file but no core. */
static void test_fixture_executable_is_raw(void **state)
{
	json_t *root = load_expected();
	char path[4200];
	struct cg_crash c;
	uint8_t *buf;
	size_t len;

	(void)state;
	snprintf(path, sizeof path, "%s/elf-core/crash", fixtures_dir());
	buf = read_file(path, &len);
	assert_non_null(buf);
	assert_memory_equal(buf, "\177ELF", 4);
	assert_int_equal(cg_detect_format(buf, len), CG_FORMAT_RAW);
	assert_int_equal(cg_decode(buf, len, CG_FORMAT_DETECT, &c), CG_OK);
	assert_int_equal(c.format, CG_FORMAT_RAW);
	assert_int_equal(c.present, 0);
	/* Declared as a core, it is refused with a reason. */
	assert_int_equal(cg_decode(buf, len, CG_FORMAT_ELF_CORE, &c), CG_ERR_MALFORMED);
	assert_int_equal(c.format, CG_FORMAT_ELF_CORE);
	assert_non_null(strstr(c.decode_error, "not an ELF core"));
	free(buf);
	json_decref(root);
}

/* ---- cores built here ---------------------------------------------------- */

#define PT_LOAD_ 1
#define PT_NOTE_ 4
#define NT_PRSTATUS_ 1
#define NT_AUXV_ 6
#define NT_SIGINFO_ 0x53494749u
#define NT_FILE_ 0x46494c45u

/* struct elf_prstatus per architecture: its size and where PC/SP/LR sit in
 * pr_reg (in longs). pr_reg starts at 112 (ELF64) or 72 (ELF32). */
struct layout {
	uint16_t machine;
	bool is64;
	size_t prstatus_size;
	int pc, sp, lr;
	const char *arch;
};

static const struct layout L_X86_64 = { 62, true, 336, 16, 19, -1, "x86_64" };
static const struct layout L_I386 = { 3, false, 144, 12, 15, -1, "x86" };
static const struct layout L_ARM64 = { 183, true, 392, 32, 31, 30, "arm64" };
static const struct layout L_ARM = { 40, false, 148, 15, 13, 14, "arm" };

struct spec {
	const struct layout *l;
	bool be;
	int16_t cursig;
	uint32_t pid;
	uint64_t pc, sp, lr;
	bool siginfo;
	int32_t si_signo, si_code;
	uint64_t si_addr;
	/* NT_AUXV, NT_FILE, a second thread, and PT_LOADs holding the
	 * executable's first page and the vDSO */
	bool rich;
	bool exe_fixed;                /* ET_EXEC linked at its base, not PIE */
	bool xnum;                     /* e_phnum = PN_XNUM, count in section 0 */
};

/* Addresses of the rich cores' mappings (fit in 32 bits for ELF32). */
struct addrs {
	uint64_t exe, lib, vdso;
};

static struct addrs addrs_for(const struct spec *s)
{
	if (s->l->is64)
		return (struct addrs){ 0x555555554000, 0x7ffff7dd0000, 0x7ffff7fc1000 };
	return (struct addrs){ 0x56550000, 0xf7d10000, 0xf7f37000 };
}

static const uint8_t test_build_id[20] = {
	0xd3, 0x18, 0xae, 0x92, 0x2b, 0x07, 0x42, 0x94, 0xf3, 0x20,
	0x92, 0xb0, 0x59, 0x64, 0x21, 0x9e, 0xf1, 0x5a, 0x0e, 0x0f,
};

struct gen {
	uint8_t buf[16384];
	size_t len;
	bool be, is64;
	size_t prstatus_end;           /* first byte after the first NT_PRSTATUS */
	size_t file_desc;              /* NT_FILE's descriptor (rich cores) */
};

static void put(struct gen *g, size_t at, uint64_t v, size_t n)
{
	assert_true(at + n <= sizeof g->buf);
	for (size_t i = 0; i < n; i++)
		g->buf[at + (g->be ? n - 1 - i : i)] = (uint8_t)(v >> (8 * i));
	if (at + n > g->len)
		g->len = at + n;
}

static size_t word(const struct gen *g)
{
	return g->is64 ? 8 : 4;
}

static void put_long(struct gen *g, size_t at, uint64_t v)
{
	put(g, at, v, word(g));
}

static size_t align4(size_t n)
{
	return (n + 3) & ~(size_t)3;
}

/* Appends a note with a zeroed descriptor; returns the descriptor's offset. */
static size_t add_note(struct gen *g, const char *name, uint32_t type, size_t descsz)
{
	size_t at = g->len, namesz = strlen(name) + 1, desc;

	put(g, at, namesz, 4);
	put(g, at + 4, descsz, 4);
	put(g, at + 8, type, 4);
	memcpy(g->buf + at + 12, name, namesz);
	desc = at + 12 + align4(namesz);
	memset(g->buf + desc, 0, align4(descsz));
	g->len = desc + align4(descsz);
	return desc;
}

static void put_ehdr(struct gen *g, size_t at, uint16_t type, uint16_t machine,
		     uint64_t phoff, uint16_t phnum)
{
	memcpy(g->buf + at, "\177ELF", 4);
	g->buf[at + 4] = g->is64 ? 2 : 1;
	g->buf[at + 5] = g->be ? 2 : 1;
	g->buf[at + 6] = 1;
	put(g, at + 16, type, 2);
	put(g, at + 18, machine, 2);
	put(g, at + 20, 1, 4);
	if (g->is64) {
		put(g, at + 32, phoff, 8);
		put(g, at + 52, 64, 2);
		put(g, at + 54, 56, 2);
		put(g, at + 56, phnum, 2);
	} else {
		put(g, at + 28, phoff, 4);
		put(g, at + 40, 52, 2);
		put(g, at + 42, 32, 2);
		put(g, at + 44, phnum, 2);
	}
}

static void put_phdr(struct gen *g, size_t at, uint32_t type, uint64_t offset, uint64_t vaddr,
		     uint64_t filesz, uint64_t memsz, uint64_t align)
{
	put(g, at, type, 4);
	if (g->is64) {
		put(g, at + 8, offset, 8);
		put(g, at + 16, vaddr, 8);
		put(g, at + 32, filesz, 8);
		put(g, at + 40, memsz, 8);
		put(g, at + 48, align, 8);
	} else {
		put(g, at + 4, offset, 4);
		put(g, at + 8, vaddr, 4);
		put(g, at + 16, filesz, 4);
		put(g, at + 20, memsz, 4);
		put(g, at + 28, align, 4);
	}
}

static void put_prstatus(struct gen *g, const struct layout *l, int16_t cursig, uint32_t pid,
			 uint64_t pc, uint64_t sp, uint64_t lr)
{
	size_t d = add_note(g, "CORE", NT_PRSTATUS_, l->prstatus_size);
	size_t regs = d + (l->is64 ? 112 : 72);

	put(g, d, (uint64_t)(int64_t)cursig, 4);     /* pr_info.si_signo */
	put(g, d + 12, (uint16_t)cursig, 2);
	put(g, d + (l->is64 ? 32 : 24), pid, 4);
	put(g, d + (l->is64 ? 36 : 28), pid - 1, 4); /* pr_ppid */
	put_long(g, regs + (size_t)l->pc * word(g), pc);
	put_long(g, regs + (size_t)l->sp * word(g), sp);
	if (l->lr >= 0)
		put_long(g, regs + (size_t)l->lr * word(g), lr);
	/* Fill the other slots so that a wrong slot is not 0 by luck. */
	for (int r = 0; r < (l->is64 ? 27 : 17); r++)
		if (r != l->pc && r != l->sp && r != l->lr)
			put_long(g, regs + (size_t)r * word(g), 0x1111 * (uint64_t)(r + 1));
}

/* The executable's first page as the core holds it: ELF header, PT_LOAD,
 * PT_NOTE with a property note and then the GNU build id. */
static size_t put_exe_page(struct gen *g, const struct spec *s, uint64_t base)
{
	size_t at = (g->len + 15) & ~(size_t)15, eh = g->is64 ? 64 : 52, ph = g->is64 ? 56 : 32;
	uint64_t link = s->exe_fixed ? base : 0;
	size_t notes = eh + 2 * ph, end;
	struct gen sub;

	put_ehdr(g, at, s->exe_fixed ? 2 : 3, s->l->machine, eh, 2);
	/* The notes, built at the end of g and then placed. */
	sub = (struct gen){ .be = g->be, .is64 = g->is64, .len = 0 };
	size_t d = add_note(&sub, "GNU", 5, 16);
	put(&sub, d, 0xc0000002, 4);
	d = add_note(&sub, "GNU", 3, sizeof test_build_id);
	memcpy(sub.buf + d, test_build_id, sizeof test_build_id);
	memcpy(g->buf + at + notes, sub.buf, sub.len);
	end = notes + sub.len;
	put_phdr(g, at + eh, PT_NOTE_, notes, link + notes, sub.len, sub.len, 4);
	put_phdr(g, at + eh + ph, PT_LOAD_, 0, link, 0x1000, 0x1000, 0x1000);
	g->len = at + end;
	return at;
}

static void build(struct gen *g, const struct spec *s)
{
	const struct layout *l = s->l;
	struct addrs a = addrs_for(s);
	size_t eh = l->is64 ? 64 : 52, ph = l->is64 ? 56 : 32;
	uint16_t nph = s->rich ? 3 : 1;
	size_t notes;

	memset(g, 0, sizeof *g);
	g->be = s->be;
	g->is64 = l->is64;
	put_ehdr(g, 0, 4, l->machine, eh, s->xnum ? 0xffff : nph);
	notes = eh + nph * ph;
	if (s->xnum) {
		/* Section header 0 after the program headers; sh_info = phnum. */
		size_t sh = notes, shsize = l->is64 ? 64 : 40;
		put(g, l->is64 ? 40 : 32, sh, word(g));        /* e_shoff */
		put(g, l->is64 ? 58 : 46, shsize, 2);          /* e_shentsize */
		put(g, l->is64 ? 60 : 48, 1, 2);               /* e_shnum */
		put(g, sh + (l->is64 ? 44 : 28), nph, 4);
		notes += shsize;
	}
	g->len = notes;

	put_prstatus(g, l, s->cursig, s->pid, s->pc, s->sp, s->lr);
	g->prstatus_end = g->len;
	if (s->siginfo) {
		size_t d = add_note(g, "CORE", NT_SIGINFO_, 128);
		put(g, d, (uint32_t)s->si_signo, 4);
		put(g, d + 8, (uint32_t)s->si_code, 4);
		put_long(g, d + (l->is64 ? 16 : 12), s->si_addr);
	}
	if (s->rich) {
		size_t w = word(g), d;

		d = add_note(g, "CORE", NT_AUXV_, 5 * 2 * w);
		put_long(g, d + 0 * w, 33);                     /* AT_SYSINFO_EHDR */
		put_long(g, d + 1 * w, a.vdso);
		put_long(g, d + 2 * w, 6);                      /* AT_PAGESZ */
		put_long(g, d + 3 * w, 4096);
		put_long(g, d + 4 * w, 9);                      /* AT_ENTRY */
		put_long(g, d + 5 * w, a.exe + 0x1060);
		/* AT_NULL, then a pair after it that must be ignored */
		put_long(g, d + 8 * w, 9);
		put_long(g, d + 9 * w, a.lib);

		static const char names[] = "/usr/lib/libfoo.so.1 (deleted)\0/opt/app/bin/app\0"
					    "/opt/app/bin/app\0/usr/lib/libfoo.so.1 (deleted)";
		const uint64_t map[4][3] = {
			{ a.lib + 0x1000, a.lib + 0x3000, 1 },  /* listed before its lowest */
			{ a.exe + 0x1000, a.exe + 0x3000, 1 },
			{ a.exe, a.exe + 0x1000, 0 },
			{ a.lib, a.lib + 0x1000, 0 },
		};
		d = add_note(g, "CORE", NT_FILE_, 2 * w + 12 * w + sizeof names);
		g->file_desc = d;
		put_long(g, d, 4);
		put_long(g, d + w, 4096);
		for (size_t i = 0; i < 4; i++)
			for (size_t k = 0; k < 3; k++)
				put_long(g, d + 2 * w + (3 * i + k) * w, map[i][k]);
		memcpy(g->buf + d + 14 * w, names, sizeof names);

		/* A second thread: its registers must not be taken. */
		put_prstatus(g, l, 0, s->pid + 1, s->pc + 0x40, s->sp + 0x1000, s->lr + 4);
	}
	put_phdr(g, eh, PT_NOTE_, notes, 0, g->len - notes, 0, 4);
	if (s->rich) {
		size_t page = put_exe_page(g, s, a.exe);
		put_phdr(g, eh + ph, PT_LOAD_, g->len, a.vdso, 0, 0x2000, 0x1000); /* not dumped */
		put_phdr(g, eh + 2 * ph, PT_LOAD_, page, a.exe, g->len - page, 0x1000, 0x1000);
	}
}

static const struct spec base_spec = {
	.l = &L_X86_64, .cursig = 11, .pid = 4242,
	.pc = 0x555555555149, .sp = 0x7fffffffe3a0, .lr = 0x55555555517e,
	.siginfo = true, .si_signo = 11, .si_code = 1, .si_addr = 0x45,
};

static int decode(const struct gen *g, struct cg_crash *c)
{
	int rc = cg_decode_elf_core(g->buf, g->len, c);

	if (rc != CG_OK)
		print_message("decode_error: %s\n", c->decode_error);
	return rc;
}

static void test_minimal_core(void **state)
{
	struct gen g;
	struct cg_crash c;

	(void)state;
	build(&g, &base_spec);
	assert_int_equal(cg_detect_format(g.buf, g.len), CG_FORMAT_ELF_CORE);
	assert_int_equal(decode(&g, &c), CG_OK);
	assert_string_equal(c.decode_error, "");
	assert_int_equal(c.format, CG_FORMAT_ELF_CORE);
	assert_string_equal(c.arch, "x86_64");
	assert_string_equal(c.os, "Linux");
	assert_int_equal(c.signal, 11);
	assert_string_equal(c.reason, "SIGSEGV");
	assert_int_equal(c.reason_code, 11);
	assert_int_equal(c.si_code, 1);
	assert_int_equal(c.fault_address, 0x45);
	assert_int_equal(c.pc, 0x555555555149);
	assert_int_equal(c.sp, 0x7fffffffe3a0);
	assert_int_equal(c.thread, 4242);
	assert_int_equal(c.present, CG_CRASH_HAS_SIGNAL | CG_CRASH_HAS_REASON_CODE |
				    CG_CRASH_HAS_SI_CODE | CG_CRASH_HAS_FAULT_ADDRESS |
				    CG_CRASH_HAS_PC | CG_CRASH_HAS_SP | CG_CRASH_HAS_THREAD);
	/* No NT_FILE: no module, no build id. */
	assert_string_equal(c.module, "");
	assert_int_equal(c.build_id_len, 0);
}

/* A signal sent by a process (si_code <= 0) has no fault address. */
static void test_sent_signal_has_no_fault_address(void **state)
{
	struct spec s = base_spec;
	struct gen g;
	struct cg_crash c;

	(void)state;
	s.cursig = s.si_signo = 6;
	s.si_code = -6;                                        /* SI_TKILL */
	s.si_addr = 0x4d14400005be6;                           /* si_pid, si_uid */
	build(&g, &s);
	assert_int_equal(decode(&g, &c), CG_OK);
	assert_string_equal(c.reason, "SIGABRT");
	assert_int_equal(c.si_code, -6);
	assert_true(c.present & CG_CRASH_HAS_SI_CODE);
	assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
	assert_int_equal(c.fault_address, 0);

	/* kill -SEGV: SI_USER (0) carries no address either. */
	s.cursig = s.si_signo = 11;
	s.si_code = 0;
	build(&g, &s);
	assert_int_equal(decode(&g, &c), CG_OK);
	assert_string_equal(c.reason, "SIGSEGV");
	assert_true(c.present & CG_CRASH_HAS_SI_CODE);
	assert_int_equal(c.si_code, 0);
	assert_false(c.present & CG_CRASH_HAS_FAULT_ADDRESS);
}

/* Without NT_SIGINFO: signal from pr_cursig, no si_code. */
static void test_no_siginfo(void **state)
{
	struct spec s = base_spec;
	struct gen g;
	struct cg_crash c;

	(void)state;
	s.siginfo = false;
	build(&g, &s);
	assert_int_equal(decode(&g, &c), CG_OK);
	assert_int_equal(c.signal, 11);
	assert_false(c.present & (CG_CRASH_HAS_SI_CODE | CG_CRASH_HAS_FAULT_ADDRESS));
}

struct rich_case {
	const struct layout *l;
	bool be, exe_fixed;
	uint64_t pc_at;                /* 0: exe, 1: lib, 2: vdso, 3: none */
};

static void check_rich(const struct rich_case *rc)
{
	struct spec s = base_spec;
	struct addrs a;
	struct gen g;
	struct cg_crash c;

	s.l = rc->l;
	s.be = rc->be;
	s.rich = true;
	s.exe_fixed = rc->exe_fixed;
	a = addrs_for(&s);
	s.sp = a.lib - 0x100;
	s.lr = a.exe + 0x117e;
	s.si_addr = a.exe + 0x2004;
	switch (rc->pc_at) {
	case 0: s.pc = a.exe + 0x1149; break;
	case 1: s.pc = a.lib + 0x2ffc; break;
	case 2: s.pc = a.vdso + 0x1079; break;
	default: s.pc = a.vdso + 0x2000; break;              /* just past the vDSO */
	}
	build(&g, &s);
	assert_int_equal(cg_detect_format(g.buf, g.len), CG_FORMAT_ELF_CORE);
	assert_int_equal(decode(&g, &c), CG_OK);
	assert_string_equal(c.arch, rc->l->arch);
	assert_int_equal(c.signal, 11);
	assert_int_equal(c.thread, 4242);
	assert_int_equal(c.pc, s.pc);
	assert_int_equal(c.sp, s.sp);
	assert_int_equal(c.fault_address, s.si_addr);
	if (rc->l->lr >= 0) {
		assert_true(c.present & CG_CRASH_HAS_LR);
		assert_int_equal(c.lr, s.lr);
	} else {
		assert_false(c.present & CG_CRASH_HAS_LR);
	}
	assert_int_equal(c.build_id_len, sizeof test_build_id);
	assert_memory_equal(c.build_id, test_build_id, sizeof test_build_id);
	switch (rc->pc_at) {
	case 0:
		assert_string_equal(c.module, "app");
		assert_int_equal(c.module_offset, 0x1149);
		break;
	case 1:
		assert_string_equal(c.module, "libfoo.so.1");
		assert_int_equal(c.module_offset, 0x2ffc);
		break;
	case 2:
		assert_string_equal(c.module,
				    rc->l == &L_I386 ? "linux-gate.so.1" : "linux-vdso.so.1");
		assert_int_equal(c.module_offset, 0x1079);
		break;
	default:
		assert_string_equal(c.module, "");
		assert_false(c.present & CG_CRASH_HAS_MODULE_OFFSET);
		return;
	}
	assert_true(c.present & CG_CRASH_HAS_MODULE_OFFSET);
}

/* One test per architecture and byte order (state: its layout, be in the name). */
struct rich_arch {
	const struct layout *l;
	bool be;
};

static void test_rich_core(void **state)
{
	const struct rich_arch *ra = *state;

	for (int fixed = 0; fixed < 2; fixed++)
		for (uint64_t at = 0; at < 4; at++) {
			struct rich_case rc = { ra->l, ra->be, fixed, at };
			check_rich(&rc);
		}
}

static const struct rich_arch rich_x86_64_le = { &L_X86_64, false };
static const struct rich_arch rich_x86_64_be = { &L_X86_64, true };
static const struct rich_arch rich_i386_le = { &L_I386, false };
static const struct rich_arch rich_i386_be = { &L_I386, true };
static const struct rich_arch rich_arm64_le = { &L_ARM64, false };
static const struct rich_arch rich_arm64_be = { &L_ARM64, true };
static const struct rich_arch rich_arm_le = { &L_ARM, false };
static const struct rich_arch rich_arm_be = { &L_ARM, true };

static void test_pn_xnum(void **state)
{
	struct spec s = base_spec;
	struct gen g;
	struct cg_crash c;

	(void)state;
	s.xnum = true;
	s.rich = true;
	s.pc = addrs_for(&s).exe + 0x1149;
	build(&g, &s);
	assert_int_equal(decode(&g, &c), CG_OK);
	assert_string_equal(c.module, "app");
	assert_int_equal(c.build_id_len, sizeof test_build_id);
}

/*
 * Every prefix of a core is refused with a reason, never read past, and
 * yields only values the whole core also yields.
 */
static void check_truncations(const struct spec *s)
{
	struct gen g;
	struct cg_crash full, c;

	build(&g, s);
	assert_int_equal(decode(&g, &full), CG_OK);
	for (size_t n = 0; n < g.len; n++) {
		/* An exact-size heap copy, so ASan sees a read past the end. */
		uint8_t *p = malloc(n ? n : 1);
		assert_non_null(p);
		memcpy(p, g.buf, n);
		int rc = cg_decode_elf_core(n ? p : NULL, n, &c);
		free(p);
		if (rc == CG_OK)
			print_error("prefix of %zu of %zu bytes decoded without error\n", n, g.len);
		assert_int_not_equal(rc, CG_OK);
		assert_true(c.decode_error[0] != '\0');
		assert_int_equal(c.format, CG_FORMAT_ELF_CORE);
		assert_int_equal(c.present & ~full.present, 0);
		if (c.present & CG_CRASH_HAS_SIGNAL)
			assert_int_equal(c.signal, full.signal);
		if (c.present & CG_CRASH_HAS_SI_CODE)
			assert_int_equal(c.si_code, full.si_code);
		if (c.present & CG_CRASH_HAS_FAULT_ADDRESS)
			assert_int_equal(c.fault_address, full.fault_address);
		if (c.present & CG_CRASH_HAS_PC)
			assert_int_equal(c.pc, full.pc);
		if (c.present & CG_CRASH_HAS_SP)
			assert_int_equal(c.sp, full.sp);
		if (c.present & CG_CRASH_HAS_LR)
			assert_int_equal(c.lr, full.lr);
		if (c.present & CG_CRASH_HAS_THREAD)
			assert_int_equal(c.thread, full.thread);
		if (c.present & CG_CRASH_HAS_MODULE_OFFSET) {
			assert_string_equal(c.module, full.module);
			assert_int_equal(c.module_offset, full.module_offset);
		}
		if (c.build_id_len != 0) {
			assert_int_equal(c.build_id_len, full.build_id_len);
			assert_memory_equal(c.build_id, full.build_id, c.build_id_len);
		}
		if (n >= (g.is64 ? 64u : 52u))
			assert_string_equal(c.arch, full.arch);
		/* Partial fields: once the first NT_PRSTATUS is whole, its values are there. */
		if (n >= g.prstatus_end)
			assert_int_equal(c.present & (CG_CRASH_HAS_SIGNAL | CG_CRASH_HAS_PC |
						      CG_CRASH_HAS_SP | CG_CRASH_HAS_THREAD),
					 CG_CRASH_HAS_SIGNAL | CG_CRASH_HAS_PC |
					 CG_CRASH_HAS_SP | CG_CRASH_HAS_THREAD);
	}
}

static void test_truncated_minimal(void **state)
{
	(void)state;
	check_truncations(&base_spec);
}

static void test_truncated_rich(void **state)
{
	struct spec s = base_spec;

	(void)state;
	s.rich = true;
	s.pc = addrs_for(&s).exe + 0x1149;
	check_truncations(&s);
	s.l = &L_ARM;
	s.be = true;
	s.pc = addrs_for(&s).exe + 0x1149;
	check_truncations(&s);
}

/* ---- malformed cores ----------------------------------------------------- */

static void expect_error(const struct gen *g, int want, const char *text)
{
	struct cg_crash c;
	int rc = cg_decode_elf_core(g->buf, g->len, &c);

	if (strstr(c.decode_error, text) == NULL)
		print_error("decode_error \"%s\" lacks \"%s\"\n", c.decode_error, text);
	assert_int_equal(rc, want);
	assert_non_null(strstr(c.decode_error, text));
	assert_int_equal(c.format, CG_FORMAT_ELF_CORE);
}

static void test_malformed(void **state)
{
	struct spec s = base_spec;
	struct gen g;
	struct cg_crash c;
	size_t eh = 64;

	(void)state;
	/* Not an ELF file at all, or not a core. */
	memset(&g, 0, sizeof g);
	memcpy(g.buf, "MDMP", 4);
	g.len = 100;
	expect_error(&g, CG_ERR_MALFORMED, "no ELF magic");
	build(&g, &s);
	g.buf[4] = 3;
	expect_error(&g, CG_ERR_MALFORMED, "class");
	build(&g, &s);
	g.buf[16] = 2;                                         /* ET_EXEC */
	expect_error(&g, CG_ERR_MALFORMED, "not an ELF core");

	/* Program header entries too small to be one. */
	build(&g, &s);
	put(&g, 54, 8, 2);
	expect_error(&g, CG_ERR_MALFORMED, "too small");

	/* The program header table beyond the file. */
	build(&g, &s);
	put(&g, 32, UINT64_MAX - 8, 8);
	expect_error(&g, CG_ERR_MALFORMED, "program headers truncated");

	/* A note whose name size runs past its segment. */
	build(&g, &s);
	put(&g, eh + 56, 0xffffffff, 4);
	expect_error(&g, CG_ERR_MALFORMED, "does not fit");

	/* PT_NOTE and PT_LOAD placed beyond the end of the file. */
	build(&g, &s);
	put(&g, eh + 8, UINT64_MAX - 4, 8);
	expect_error(&g, CG_ERR_MALFORMED, "PT_NOTE 0 beyond the end");
	build(&g, &s);
	put(&g, eh, PT_LOAD_, 4);
	put(&g, eh + 32, 0x100000, 8);
	expect_error(&g, CG_ERR_MALFORMED, "PT_LOAD 0");

	/* No NT_PRSTATUS: the note's owner is not CORE. */
	build(&g, &s);
	memcpy(g.buf + eh + 56 + 12, "LINUX", 4);
	expect_error(&g, CG_ERR_MALFORMED, "no NT_PRSTATUS");

	/* An NT_PRSTATUS too short for the registers keeps signal and pid. */
	build(&g, &s);
	put(&g, eh + 56 + 4, 40, 4);                          /* descsz 336 -> 40 */
	put(&g, eh + 56 + 12 + 8 + 40, 336 - 40 - 12, 4);    /* the rest becomes a note */
	assert_int_equal(cg_decode_elf_core(g.buf, g.len, &c), CG_ERR_MALFORMED);
	assert_non_null(strstr(c.decode_error, "registers"));
	assert_int_equal(c.signal, 11);
	assert_int_equal(c.thread, 4242);
	assert_false(c.present & CG_CRASH_HAS_PC);

	/* PN_XNUM with no section header. */
	build(&g, &s);
	put(&g, 56, 0xffff, 2);
	expect_error(&g, CG_ERR_MALFORMED, "PN_XNUM");
}

/* NT_FILE whose count does not fit its note, or whose names are missing:
 * an error, but the registers still come through. */
static void test_bad_nt_file(void **state)
{
	struct spec s = base_spec;
	struct gen g;
	struct cg_crash c;
	size_t file_desc;

	(void)state;
	s.rich = true;
	s.pc = addrs_for(&s).exe + 0x1149;
	build(&g, &s);
	file_desc = g.file_desc;
	assert_int_equal(g.buf[file_desc], 4);

	put(&g, file_desc, 1000, 8);
	assert_int_equal(cg_decode_elf_core(g.buf, g.len, &c), CG_ERR_MALFORMED);
	assert_non_null(strstr(c.decode_error, "NT_FILE count"));
	assert_int_equal(c.pc, s.pc);
	assert_string_equal(c.module, "");

	put(&g, file_desc, (uint64_t)1 << 40, 8);
	assert_int_equal(cg_decode_elf_core(g.buf, g.len, &c), CG_ERR_TOO_LARGE);

	/* Count 5: the triples fit (the names take their place) but there are
	 * not five names. */
	build(&g, &s);
	put(&g, file_desc, 5, 8);
	assert_int_equal(cg_decode_elf_core(g.buf, g.len, &c), CG_ERR_MALFORMED);
	assert_non_null(strstr(c.decode_error, "names"));
	assert_int_equal(c.pc, s.pc);
}

/* ---- detection and dispatch ---------------------------------------------- */

static void test_detect(void **state)
{
	struct spec s = base_spec;
	struct gen g;
	uint8_t elf[64] = "\177ELF\2\1\1";

	(void)state;
	assert_int_equal(cg_detect_format(NULL, 0), CG_FORMAT_RAW);
	assert_int_equal(cg_detect_format((const uint8_t *)"", 0), CG_FORMAT_RAW);
	assert_int_equal(cg_detect_format((const uint8_t *)"ZE", 2), CG_FORMAT_ZEPHYR);
	assert_int_equal(cg_detect_format((const uint8_t *)"ZE\2\0\3\0", 6), CG_FORMAT_ZEPHYR);
	assert_int_equal(cg_detect_format((const uint8_t *)"Z", 1), CG_FORMAT_RAW);
	assert_int_equal(cg_detect_format((const uint8_t *)"ze", 2), CG_FORMAT_RAW);
	assert_int_equal(cg_detect_format((const uint8_t *)"MDMP\x93\xa7", 6), CG_FORMAT_MINIDUMP);
	assert_int_equal(cg_detect_format((const uint8_t *)"MDMP", 4), CG_FORMAT_MINIDUMP);
	assert_int_equal(cg_detect_format((const uint8_t *)"MDM", 3), CG_FORMAT_RAW);
	assert_int_equal(cg_detect_format((const uint8_t *)"PMDM", 4), CG_FORMAT_RAW);

	/* ELF: e_type in the header's byte order decides. */
	elf[16] = 4;
	assert_int_equal(cg_detect_format(elf, sizeof elf), CG_FORMAT_ELF_CORE);
	assert_int_equal(cg_detect_format(elf, 18), CG_FORMAT_ELF_CORE);
	assert_int_equal(cg_detect_format(elf, 17), CG_FORMAT_RAW);
	elf[16] = 2;                                           /* ET_EXEC */
	assert_int_equal(cg_detect_format(elf, sizeof elf), CG_FORMAT_RAW);
	elf[16] = 3;                                           /* ET_DYN */
	assert_int_equal(cg_detect_format(elf, sizeof elf), CG_FORMAT_RAW);
	elf[5] = 2;                                            /* big endian */
	elf[16] = 0;
	elf[17] = 4;
	assert_int_equal(cg_detect_format(elf, sizeof elf), CG_FORMAT_ELF_CORE);
	elf[5] = 1;                                            /* 0x0400 little endian */
	assert_int_equal(cg_detect_format(elf, sizeof elf), CG_FORMAT_RAW);
	elf[5] = 0;                                            /* no byte order */
	assert_int_equal(cg_detect_format(elf, sizeof elf), CG_FORMAT_RAW);

	s.l = &L_ARM;
	s.be = true;
	build(&g, &s);
	assert_int_equal(cg_detect_format(g.buf, g.len), CG_FORMAT_ELF_CORE);
	assert_int_equal(cg_detect_format((const uint8_t *)"hello world, not a dump", 23),
			 CG_FORMAT_RAW);
}

static void test_dispatch(void **state)
{
	static const uint8_t raw[] = "\x00\x01just bytes";
	struct gen g;
	struct cg_crash c;

	(void)state;
	memset(&c, 0xa5, sizeof c);
	assert_int_equal(cg_decode(raw, sizeof raw, CG_FORMAT_DETECT, &c), CG_OK);
	assert_int_equal(c.format, CG_FORMAT_RAW);
	assert_int_equal(c.present, 0);
	assert_string_equal(c.arch, "");
	assert_string_equal(c.module, "");
	assert_int_equal(c.build_id_len, 0);
	assert_string_equal(c.decode_error, "");

	build(&g, &base_spec);
	/* Declared RAW wins over the magic. */
	assert_int_equal(cg_decode(g.buf, g.len, CG_FORMAT_RAW, &c), CG_OK);
	assert_int_equal(c.format, CG_FORMAT_RAW);
	assert_int_equal(c.present, 0);
	assert_int_equal(cg_decode(g.buf, g.len, CG_FORMAT_DETECT, &c), CG_OK);
	assert_int_equal(c.format, CG_FORMAT_ELF_CORE);
	assert_int_equal(c.pc, base_spec.pc);
	assert_int_equal(cg_decode(g.buf, g.len, CG_FORMAT_ELF_CORE, &c), CG_OK);
	assert_int_equal(c.signal, 11);

	/* Declared ELF core, but raw bytes. */
	assert_int_equal(cg_decode(raw, sizeof raw, CG_FORMAT_ELF_CORE, &c), CG_ERR_MALFORMED);
	assert_int_equal(c.format, CG_FORMAT_ELF_CORE);
	assert_true(c.decode_error[0] != '\0');

	/* A format number the protocol does not define. */
	assert_int_equal(cg_decode(raw, sizeof raw, 99, &c), CG_ERR_RANGE);
	assert_int_equal(c.format, CG_FORMAT_RAW);
	assert_non_null(strstr(c.decode_error, "99"));
}

int main(void)
{
#define WITH_STATE(name, fn, state) { name, fn, NULL, NULL, (void *)(state) }
	const struct CMUnitTest tests[] = {
		WITH_STATE("fixture core_linux64.elf", check_fixture, "elf-core/core_linux64.elf"),
		WITH_STATE("fixture core_linux32.elf", check_fixture, "elf-core/core_linux32.elf"),
		WITH_STATE("fixture crash_segv.core", check_fixture, "elf-core/crash_segv.core"),
		WITH_STATE("fixture crash_abort.core", check_fixture, "elf-core/crash_abort.core"),
		WITH_STATE("fixture crash_fpe.core", check_fixture, "elf-core/crash_fpe.core"),
		cmocka_unit_test(test_fixture_list_complete),
		cmocka_unit_test(test_fixture_executable_is_raw),
		cmocka_unit_test(test_minimal_core),
		cmocka_unit_test(test_sent_signal_has_no_fault_address),
		cmocka_unit_test(test_no_siginfo),
		WITH_STATE("rich core x86_64 LE", test_rich_core, &rich_x86_64_le),
		WITH_STATE("rich core x86_64 BE", test_rich_core, &rich_x86_64_be),
		WITH_STATE("rich core i386 LE", test_rich_core, &rich_i386_le),
		WITH_STATE("rich core i386 BE", test_rich_core, &rich_i386_be),
		WITH_STATE("rich core arm64 LE", test_rich_core, &rich_arm64_le),
		WITH_STATE("rich core arm64 BE", test_rich_core, &rich_arm64_be),
		WITH_STATE("rich core arm LE", test_rich_core, &rich_arm_le),
		WITH_STATE("rich core arm BE", test_rich_core, &rich_arm_be),
		cmocka_unit_test(test_pn_xnum),
		cmocka_unit_test(test_truncated_minimal),
		cmocka_unit_test(test_truncated_rich),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_bad_nt_file),
		cmocka_unit_test(test_detect),
		cmocka_unit_test(test_dispatch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
