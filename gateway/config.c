/*
 * crashgate configuration loader (SPEC §9, STYLE §7).
 *
 * Three stages, each bounded:
 *  1. libyaml's event parser builds a small tree of nodes that keep their
 *     1-based line and column. At most 1 MiB of input, 16 levels of nesting
 *     and MAX_NODES nodes. Aliases stay in the tree as nodes so the walker
 *     can reject them with the key path; anchors and tags are ignored.
 *  2. One walker checks each mapping against a key table (struct
 *     conf_key) and stores the converted values at base + offset. It
 *     stops at the first error, in document order.
 *  3. Checks that relate two keys run after the walk, using the positions
 *     the walker recorded, so their errors point at a key the operator wrote.
 * cg_config_print_reference() prints the same tables.
 *
 * Value syntax (also printed at the top of the reference):
 *  - size: whole bytes, or a whole number with B, KiB, MiB, GiB or TiB
 *    (powers of 1024, case matters). Decimal KB/MB/GB are rejected because
 *    "64KB" is read as both 64000 and 65536; fractions are rejected.
 *  - duration: a whole number with ms, s, m, h or d, optionally several
 *    largest first ("1h30m"). A bare number is rejected: "30" could mean
 *    seconds or milliseconds.
 *  - null (~, null or nothing) means "no value": allowed for a section (an
 *    empty section), a list or map (no entries) and an optional string
 *    without a default; anywhere else it is an error.
 */
#include "config.h"

#include "crashgate/plugin.h"

#include <errno.h>
#include <fnmatch.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#define MAX_INPUT   (1u << 20)   /* bytes of YAML */
#define MAX_DEPTH   16           /* nested mappings and sequences */
#define MAX_NODES   100000       /* bounds memory: a 1 MiB flow list has ~500k */
#define MAX_ROWS    64           /* rows in one table */
#define MAX_SECRET  (64u << 10)
#define PATH_LEN    4095         /* longest accepted path value */

/* ---- key tables (STYLE §7) ----------------------------------------------
 *
 * A section is an array of rows ending with a row whose name is NULL. A row
 * names a YAML key, the type it converts to, where the value is stored
 * (offset into the struct the table describes), its default as YAML text,
 * its bounds and one line of description. One walker validates a mapping
 * against a table and the same rows print the reference, so a new section
 * (groups: a LIST, regions: a MAP) is a new table plus one row in its
 * parent, never new parser code.
 */
enum conf_type {
	CONF_STRING,    /* char * (malloc'd); min/max bound the length */
	CONF_PATH,      /* char * (malloc'd), a file-system path, never empty */
	CONF_BOOL,      /* bool: true/false, yes/no, on/off */
	CONF_UINT32,    /* uint32_t, decimal digits */
	CONF_SIZE,      /* uint64_t bytes: 65536, 512B, 64KiB, 16MiB, 2GiB, 1TiB */
	CONF_DURATION,  /* uint64_t ms: 250ms, 5s, 10m, 24h, 29d, 1h30m */
	CONF_SECTION,   /* a mapping: the struct at offset, its keys in child */
	CONF_LIST,      /* a sequence of child mappings: array at offset + count */
	CONF_MAP,       /* a mapping name -> child mapping: array at offset + count */
	CONF_ENUM,      /* uint32_t: index of the value in `values` */
	CONF_TIME,      /* uint64_t unix ms from an RFC 3339 timestamp; 0 = unset */
	CONF_STRLIST,   /* a sequence of strings: char ** at offset + size_t count;
	                 * min/max bound the entries, check applies to each */
	CONF_EXTRA,     /* struct cg_conf_extras at offset: the mapping's other keys,
	                 * kept as text for a table that is not known yet (plugins) */
};

enum {
	CONF_REQUIRED = 1u << 0, /* the key must be present */
	CONF_EMPTY_OK = 1u << 1, /* STRING: "" is a valid value */
	CONF_PRESENCE = 1u << 2, /* SECTION: set the bool at present_off when present */
};

struct conf_key {
	const char *name;           /* YAML key; NULL ends the table */
	enum conf_type type;
	unsigned flags;             /* CONF_* */
	size_t offset;              /* the value (LIST/MAP: the element array pointer) */
	const char *def;            /* default as YAML text ("16MiB"); NULL = none */
	uint64_t min, max;          /* value bounds; strings: length; LIST/MAP: entries;
	                             * max 0 = none */
	const char *desc;           /* one line for the reference */
	/* Optional check of the converted value (a pointer to it): on rejection
	 * writes why into msg and returns -1. */
	int (*check)(const void *value, char *msg, size_t msglen);
	const struct conf_key *child; /* SECTION, LIST, MAP: the element's keys */
	size_t elem_size;           /* LIST, MAP: sizeof one element */
	size_t count_off;           /* LIST, MAP: offset of the size_t entry count */
	size_t name_off;            /* MAP: offset of the element's char *name (malloc'd) */
	size_t present_off;         /* SECTION with CONF_PRESENCE: offset of a bool */
	const char *const *values;  /* ENUM: accepted spellings, NULL-terminated */
};

/* ---- value syntax -------------------------------------------------------- */

/* Leading decimal digits of s into *v; *end points after them. */
static int parse_digits(const char *s, uint64_t *v, const char **end)
{
	uint64_t x = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (x > (UINT64_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*v = x;
	*end = p;
	return 0;
}

static const struct {
	const char *unit;
	unsigned shift;
} size_units[] = {
	{ "", 0 }, { "B", 0 }, { "KiB", 10 }, { "MiB", 20 }, { "GiB", 30 }, { "TiB", 40 },
};

int cg_parse_size(const char *s, uint64_t *bytes)
{
	uint64_t v;
	const char *p;

	if (!s || parse_digits(s, &v, &p) != 0)
		return -1;
	for (size_t i = 0; i < sizeof size_units / sizeof size_units[0]; i++) {
		if (strcmp(p, size_units[i].unit) != 0)
			continue;
		if (v > (UINT64_MAX >> size_units[i].shift))
			return -1;
		*bytes = v << size_units[i].shift;
		return 0;
	}
	return -1;
}

/* Largest first; "ms" before "m" so the longer unit matches first. */
static const struct {
	const char *unit;
	uint64_t ms;
	int rank;
} duration_units[] = {
	{ "ms", 1, 1 }, { "d", 86400000, 5 }, { "h", 3600000, 4 }, { "m", 60000, 3 }, { "s", 1000, 2 },
};

int cg_parse_duration(const char *s, uint64_t *ms)
{
	uint64_t total = 0;
	int last_rank = 6;
	const char *p = s;

	if (!s || !*s)
		return -1;
	while (*p) {
		uint64_t v;
		size_t i, n = sizeof duration_units / sizeof duration_units[0];

		if (parse_digits(p, &v, &p) != 0)
			return -1;
		for (i = 0; i < n; i++) {
			size_t ul = strlen(duration_units[i].unit);
			if (strncmp(p, duration_units[i].unit, ul) == 0)
				break;
		}
		if (i == n || duration_units[i].rank >= last_rank)
			return -1;
		last_rank = duration_units[i].rank;
		p += strlen(duration_units[i].unit);
		if (v > UINT64_MAX / duration_units[i].ms)
			return -1;
		v *= duration_units[i].ms;
		if (v > UINT64_MAX - total)
			return -1;
		total += v;
	}
	*ms = total;
	return 0;
}

/* n decimal digits at p into *v; -1 unless all n are digits. */
static int fixed_digits(const char *p, int n, int *v)
{
	int x = 0;

	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		x = x * 10 + (p[i] - '0');
	}
	*v = x;
	return 0;
}

int cg_parse_time(const char *s, int64_t *ms)
{
	int y, mo, d, h, mi, sec, oh = 0, om = 0, frac_ms = 0;
	const char *p = s;

	if (!s || strlen(s) < 20 || fixed_digits(p, 4, &y) || p[4] != '-' ||
	    fixed_digits(p + 5, 2, &mo) || p[7] != '-' || fixed_digits(p + 8, 2, &d) ||
	    (p[10] != 'T' && p[10] != 't' && p[10] != ' ') || fixed_digits(p + 11, 2, &h) ||
	    p[13] != ':' || fixed_digits(p + 14, 2, &mi) || p[16] != ':' ||
	    fixed_digits(p + 17, 2, &sec))
		return -1;
	p += 19;
	if (*p == '.') {
		int scale = 100, digits = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
			frac_ms += (*p - '0') * scale;
			scale /= 10;
		}
		if (digits == 0)
			return -1;
	}
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && !fixed_digits(p + 1, 2, &oh) &&
		   p[3] == ':' && !fixed_digits(p + 4, 2, &om) && oh < 24 && om < 60) {
		if (*p == '-') {
			oh = -oh;
			om = -om;
		}
	} else {
		return -1;
	}
	/* Leap seconds (:60) are not accepted: nothing downstream can use them. */
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59)
		return -1;
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
			 .tm_min = mi, .tm_sec = sec };
	time_t t = timegm(&tm);
	/* timegm normalises 31 April to 1 May: a round trip catches that. */
	if (tm.tm_mday != d || tm.tm_mon != mo - 1)
		return -1;
	*ms = ((int64_t)t - (int64_t)oh * 3600 - (int64_t)om * 60) * 1000 + frac_ms;
	return 0;
}

void cg_format_time(int64_t ms, char *out, size_t cap)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms < 0 || !gmtime_r(&t, &tm)) {
		snprintf(out, cap, "-");
		return;
	}
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int parse_bool(const char *s, bool *b)
{
	static const char *const yes[] = { "true", "yes", "on" };
	static const char *const no[] = { "false", "no", "off" };

	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*b = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*b = false;
			return 0;
		}
	}
	return -1;
}

/* The shortest exact spelling: 1048576 -> "1MiB", 1536 -> "1536B". */
static void fmt_size(uint64_t v, char *buf, size_t len)
{
	for (size_t i = sizeof size_units / sizeof size_units[0] - 1; i >= 2; i--) {
		uint64_t unit = (uint64_t)1 << size_units[i].shift;
		if (v >= unit && v % unit == 0) {
			snprintf(buf, len, "%" PRIu64 "%s", v / unit, size_units[i].unit);
			return;
		}
	}
	snprintf(buf, len, "%" PRIu64 "B", v);
}

static void fmt_duration(uint64_t ms, char *buf, size_t len)
{
	static const struct { const char *unit; uint64_t ms; } u[] = {
		{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 },
	};

	if (ms == 0) {
		snprintf(buf, len, "0s");
		return;
	}
	for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
		if (ms % u[i].ms == 0) {
			snprintf(buf, len, "%" PRIu64 "%s", ms / u[i].ms, u[i].unit);
			return;
		}
	}
	snprintf(buf, len, "%" PRIu64 "ms", ms);
}

static void fmt_value(enum conf_type t, uint64_t v, char *buf, size_t len)
{
	if (t == CONF_SIZE)
		fmt_size(v, buf, len);
	else if (t == CONF_DURATION)
		fmt_duration(v, buf, len);
	else
		snprintf(buf, len, "%" PRIu64, v);
}

/* ---- the node tree ------------------------------------------------------- */

enum node_kind { N_SCALAR, N_MAP, N_SEQ, N_ALIAS };

struct node {
	enum node_kind kind;
	bool plain;             /* SCALAR: unquoted (only plain scalars can be null) */
	unsigned line, col;     /* 1-based */
	char *text;             /* SCALAR: the value, NUL-added; ALIAS: the anchor */
	size_t len;
	struct node **kids;     /* MAP: key, value, key, value, ...; SEQ: items */
	size_t n, cap;
};

static void node_free(struct node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++)
		node_free(n->kids[i]);
	free(n->kids);
	free(n->text);
	free(n);
}

static bool is_null(const struct node *n)
{
	if (n->kind != N_SCALAR || !n->plain)
		return false;
	return n->len == 0 || strcmp(n->text, "~") == 0 || strcmp(n->text, "null") == 0 ||
	       strcmp(n->text, "Null") == 0 || strcmp(n->text, "NULL") == 0;
}

static const char *kind_name(const struct node *n)
{
	if (n->kind == N_MAP)
		return "a mapping";
	if (n->kind == N_SEQ)
		return "a list";
	if (n->kind == N_ALIAS)
		return "an alias";
	return is_null(n) ? "null" : "a scalar";
}

/* "FILE:LINE:COL: PATH: message"; no position when line is 0, no path when empty. */
static void vfmt_err(char *err, size_t errlen, const char *file, unsigned line, unsigned col,
		     const char *path, const char *fmt, va_list ap)
{
	int n;

	if (!err || errlen == 0)
		return;
	if (line)
		n = snprintf(err, errlen, "%s:%u:%u: ", file, line, col);
	else
		n = snprintf(err, errlen, "%s: ", file);
	if (n >= 0 && (size_t)n < errlen && path && *path) {
		int m = snprintf(err + n, errlen - (size_t)n, "%s: ", path);
		n = m < 0 ? m : n + m;
	}
	if (n >= 0 && (size_t)n < errlen)
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
}

static void fmt_err(char *err, size_t errlen, const char *file, unsigned line, unsigned col,
		    const char *path, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void fmt_err(char *err, size_t errlen, const char *file, unsigned line, unsigned col,
		    const char *path, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfmt_err(err, errlen, file, line, col, path, fmt, ap);
	va_end(ap);
}

struct build {
	const char *file;
	char *err;
	size_t errlen;
	struct node *root;
	struct node *stack[MAX_DEPTH];
	int depth;
	size_t nodes;
	int docs;
};

static struct node *node_add(struct build *b, enum node_kind kind, yaml_mark_t m)
{
	struct node *n;

	if (++b->nodes > MAX_NODES) {
		fmt_err(b->err, b->errlen, b->file, (unsigned)m.line + 1, (unsigned)m.column + 1, NULL,
			"more than %d YAML nodes", MAX_NODES);
		return NULL;
	}
	n = calloc(1, sizeof *n);
	if (!n)
		goto nomem;
	n->kind = kind;
	n->line = (unsigned)m.line + 1;
	n->col = (unsigned)m.column + 1;
	if (b->depth == 0) {
		b->root = n;   /* one document, so one root */
		return n;
	}
	struct node *parent = b->stack[b->depth - 1];
	if (parent->n == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 8;
		struct node **k = realloc(parent->kids, cap * sizeof *k);
		if (!k) {
			free(n);
			goto nomem;
		}
		parent->kids = k;
		parent->cap = cap;
	}
	parent->kids[parent->n++] = n;
	return n;
nomem:
	fmt_err(b->err, b->errlen, b->file, 0, 0, NULL, "out of memory");
	return NULL;
}

static int set_text(struct build *b, struct node *n, const unsigned char *s, size_t len)
{
	n->text = malloc(len + 1);
	if (!n->text) {
		fmt_err(b->err, b->errlen, b->file, 0, 0, NULL, "out of memory");
		return -1;
	}
	if (len)
		memcpy(n->text, s, len);
	n->text[len] = '\0';
	n->len = len;
	return 0;
}

static int on_event(struct build *b, const yaml_event_t *ev)
{
	struct node *n;
	yaml_mark_t m = ev->start_mark;

	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		if (b->docs++ > 0) {
			fmt_err(b->err, b->errlen, b->file, (unsigned)m.line + 1, (unsigned)m.column + 1,
				NULL, "only one YAML document is allowed");
			return -1;
		}
		return 0;
	case YAML_SCALAR_EVENT:
		n = node_add(b, N_SCALAR, m);
		if (!n)
			return -1;
		n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		return set_text(b, n, ev->data.scalar.value, ev->data.scalar.length);
	case YAML_ALIAS_EVENT:
		n = node_add(b, N_ALIAS, m);
		if (!n)
			return -1;
		return set_text(b, n, ev->data.alias.anchor, strlen((const char *)ev->data.alias.anchor));
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT:
		if (b->depth == MAX_DEPTH) {
			fmt_err(b->err, b->errlen, b->file, (unsigned)m.line + 1, (unsigned)m.column + 1,
				NULL, "nesting deeper than %d levels", MAX_DEPTH);
			return -1;
		}
		n = node_add(b, ev->type == YAML_MAPPING_START_EVENT ? N_MAP : N_SEQ, m);
		if (!n)
			return -1;
		b->stack[b->depth++] = n;
		return 0;
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		b->depth--;
		return 0;
	default:
		return 0;
	}
}

static void syntax_error(struct build *b, const yaml_parser_t *p, const char *yaml, size_t len)
{
	yaml_mark_t m = p->problem_mark;
	const char *problem = p->problem ? p->problem : "malformed YAML";

	if (p->error == YAML_READER_ERROR) {
		/* The reader (bad UTF-8, control characters) reports a byte
		 * offset, not a mark: count lines up to it; the column is in bytes. */
		unsigned line = 1, col = 1;
		for (size_t i = 0; yaml && i < p->problem_offset && i < len; i++) {
			if (yaml[i] == '\n') {
				line++;
				col = 1;
			} else {
				col++;
			}
		}
		fmt_err(b->err, b->errlen, b->file, line, col, NULL, "YAML syntax error: %s", problem);
		return;
	}
	if (p->error == YAML_MEMORY_ERROR) {
		fmt_err(b->err, b->errlen, b->file, 0, 0, NULL, "out of memory");
		return;
	}
	if (p->context)
		fmt_err(b->err, b->errlen, b->file, (unsigned)m.line + 1, (unsigned)m.column + 1, NULL,
			"YAML syntax error: %s (%s at %zu:%zu)", problem, p->context,
			p->context_mark.line + 1, p->context_mark.column + 1);
	else
		fmt_err(b->err, b->errlen, b->file, (unsigned)m.line + 1, (unsigned)m.column + 1, NULL,
			"YAML syntax error: %s", problem);
}

/* Parse one YAML document into *root (NULL for an empty stream). */
static int build_tree(const char *file, const char *yaml, size_t len, struct node **root,
		      char *err, size_t errlen)
{
	struct build b = { .file = file, .err = err, .errlen = errlen };
	yaml_parser_t p;
	int rc = 0;

	*root = NULL;
	if (!yaml_parser_initialize(&p)) {
		fmt_err(err, errlen, file, 0, 0, NULL, "out of memory");
		return -1;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)(yaml ? yaml : ""), yaml ? len : 0);
	for (;;) {
		yaml_event_t ev;
		yaml_event_type_t type;

		if (!yaml_parser_parse(&p, &ev)) {
			syntax_error(&b, &p, yaml, len);
			rc = -1;
			break;
		}
		rc = on_event(&b, &ev);
		type = ev.type;
		yaml_event_delete(&ev);
		if (rc != 0 || type == YAML_STREAM_END_EVENT)
			break;
	}
	yaml_parser_delete(&p);
	if (rc != 0) {
		node_free(b.root);
		return -1;
	}
	*root = b.root;
	return 0;
}

/* ---- the walker ---------------------------------------------------------- */

/* Where the operator wrote a key, for checks that run after the walk. */
struct pos {
	const void *field;
	bool container;         /* a section shares its address with its first field */
	unsigned line, col;
};

struct walk {
	const char *file;
	char *err;
	size_t errlen;
	char path[320];
	size_t plen;
	struct pos *pos;
	size_t npos, cap;
};

static void werr(struct walk *w, unsigned line, unsigned col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void werr(struct walk *w, unsigned line, unsigned col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfmt_err(w->err, w->errlen, w->file, line, col, w->path, fmt, ap);
	va_end(ap);
}

/*
 * Append ".name" (or "name" at the top); returns the length to restore.
 * Long names are shortened, and control bytes (a quoted key can hold "\n" or
 * "\0") become '?' so a message stays one line.
 */
static size_t path_push(struct walk *w, const char *name, size_t len)
{
	size_t old = w->plen, n = old, cap = sizeof w->path - 4;   /* room for "..." */

	if (old && n < cap)
		w->path[n++] = '.';
	for (size_t i = 0; i < len && i < 64 && n < cap; i++)
		w->path[n++] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ? '?' : name[i];
	if (len > 64 || n == cap) {
		memcpy(w->path + n, "...", 3);
		n += 3;
	}
	w->path[n] = '\0';
	w->plen = n;
	return old;
}

static size_t path_index(struct walk *w, size_t i)
{
	size_t old = w->plen;

	snprintf(w->path + old, sizeof w->path - old, "[%zu]", i);
	w->plen = strlen(w->path);
	return old;
}

static void path_pop(struct walk *w, size_t old)
{
	w->plen = old;
	w->path[old] = '\0';
}

static int record(struct walk *w, const void *field, bool container, const struct node *key)
{
	if (w->npos == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 32;
		struct pos *p = realloc(w->pos, cap * sizeof *p);
		if (!p) {
			werr(w, 0, 0, "out of memory");
			return -1;
		}
		w->pos = p;
		w->cap = cap;
	}
	w->pos[w->npos++] = (struct pos){ field, container, key->line, key->col };
	return 0;
}

static const struct pos *find_pos(const struct walk *w, const void *field, bool container)
{
	for (size_t i = 0; i < w->npos; i++)
		if (w->pos[i].field == field && w->pos[i].container == container)
			return &w->pos[i];
	return NULL;
}

/* A short, printable copy of what the operator wrote, for messages. */
static const char *echo(const char *s, size_t len, char *buf, size_t size)
{
	size_t n = len < size - 4 ? len : size - 4;

	for (size_t i = 0; i < n; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	strcpy(buf + n, n < len ? "..." : "");
	return buf;
}

static const char *type_name(enum conf_type t)
{
	switch (t) {
	case CONF_STRING: return "string";
	case CONF_PATH: return "path";
	case CONF_BOOL: return "boolean";
	case CONF_UINT32: return "integer";
	case CONF_SIZE: return "size";
	case CONF_DURATION: return "duration";
	case CONF_SECTION: return "section";
	case CONF_LIST: return "list";
	case CONF_MAP: return "map";
	case CONF_ENUM: return "enum";
	case CONF_TIME: return "timestamp";
	case CONF_STRLIST: return "list of strings";
	case CONF_EXTRA: return "plugin keys";
	}
	return "?";
}

static const char *type_phrase(enum conf_type t)
{
	switch (t) {
	case CONF_STRING: return "a string";
	case CONF_PATH: return "a path";
	case CONF_BOOL: return "a boolean (true or false)";
	case CONF_UINT32: return "a whole number";
	case CONF_SIZE: return "a size such as 64KiB";
	case CONF_DURATION: return "a duration such as 30s";
	case CONF_SECTION: return "a mapping";
	case CONF_LIST: return "a list of mappings";
	case CONF_MAP: return "a mapping of names to mappings";
	case CONF_ENUM: return "one of the listed values";
	case CONF_TIME: return "an RFC 3339 timestamp such as 2026-01-31T00:00:00Z";
	case CONF_STRLIST: return "a list of strings";
	case CONF_EXTRA: return "the plugin's keys";
	}
	return "?";
}

static uint64_t type_max(enum conf_type t)
{
	return t == CONF_UINT32 ? UINT32_MAX : UINT64_MAX;
}

/*
 * Convert TEXT for row R and store it in FIELD. Used for defaults and for
 * values, so both obey the same syntax and bounds. On failure writes the
 * reason (without position or key) into msg.
 */
static int convert(const struct conf_key *r, const char *text, size_t len, void *field,
		   char *msg, size_t msglen)
{
	char shown[48], lo[32], hi[32];
	uint64_t v = 0, max = r->max ? r->max : type_max(r->type);
	bool b;

	if (memchr(text, '\0', len)) {
		snprintf(msg, msglen, "the value contains a NUL byte");
		return -1;
	}
	echo(text, len, shown, sizeof shown);
	switch (r->type) {
	case CONF_STRING:
	case CONF_PATH: {
		uint64_t lmax = r->max ? r->max : (r->type == CONF_PATH ? PATH_LEN : UINT64_MAX);
		if (len == 0 && (r->type == CONF_PATH || !(r->flags & CONF_EMPTY_OK))) {
			snprintf(msg, msglen, "the value is empty");
			return -1;
		}
		if (len < r->min) {
			snprintf(msg, msglen, "'%s' is shorter than %" PRIu64 " bytes", shown, r->min);
			return -1;
		}
		if (len > lmax) {
			snprintf(msg, msglen, "'%s' is longer than %" PRIu64 " bytes", shown, lmax);
			return -1;
		}
		char *s = strndup(text, len);
		if (!s) {
			snprintf(msg, msglen, "out of memory");
			return -1;
		}
		if (r->check && r->check(&s, msg, msglen) != 0) {
			free(s);
			return -1;
		}
		free(*(char **)field);
		*(char **)field = s;
		return 0;
	}
	case CONF_BOOL:
		if (parse_bool(text, &b) != 0) {
			snprintf(msg, msglen, "'%s' is not a boolean: write true or false", shown);
			return -1;
		}
		if (r->check && r->check(&b, msg, msglen) != 0)
			return -1;
		*(bool *)field = b;
		return 0;
	case CONF_ENUM:
		for (uint32_t i = 0; r->values && r->values[i]; i++) {
			if (strlen(r->values[i]) == len && memcmp(r->values[i], text, len) == 0) {
				*(uint32_t *)field = i;
				return 0;
			}
		}
		{
			char list[160] = "";
			for (size_t i = 0; r->values && r->values[i]; i++)
				snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
					 i ? ", " : "", r->values[i]);
			snprintf(msg, msglen, "'%s' is not one of: %s", shown, list);
		}
		return -1;
	case CONF_TIME: {
		int64_t t;
		if (cg_parse_time(text, &t) != 0 || t <= 0) {
			snprintf(msg, msglen, "'%s' is not an RFC 3339 timestamp after 1970: write e.g. "
				 "2026-01-31T00:00:00Z or 2026-01-31T01:00:00+01:00", shown);
			return -1;
		}
		*(uint64_t *)field = (uint64_t)t;
		return 0;
	}
	case CONF_UINT32: {
		const char *end;
		if (parse_digits(text, &v, &end) != 0 || *end) {
			snprintf(msg, msglen, "'%s' is not a whole number", shown);
			return -1;
		}
		break;
	}
	case CONF_SIZE:
		if (cg_parse_size(text, &v) != 0) {
			snprintf(msg, msglen, "'%s' is not a size: write bytes, or a whole number "
				 "with B, KiB, MiB, GiB or TiB, e.g. 64KiB", shown);
			return -1;
		}
		break;
	case CONF_DURATION:
		if (cg_parse_duration(text, &v) != 0) {
			snprintf(msg, msglen, "'%s' is not a duration: write a whole number with "
				 "ms, s, m, h or d, e.g. 30s or 1h30m", shown);
			return -1;
		}
		break;
	default:
		snprintf(msg, msglen, "not a scalar key");
		return -1;
	}
	if (v < r->min) {
		fmt_value(r->type, r->min, lo, sizeof lo);
		snprintf(msg, msglen, "%s is below the minimum %s", shown, lo);
		return -1;
	}
	if (v > max) {
		fmt_value(r->type, max, hi, sizeof hi);
		snprintf(msg, msglen, "%s is above the maximum %s", shown, hi);
		return -1;
	}
	if (r->type == CONF_UINT32) {
		uint32_t u = (uint32_t)v;
		if (r->check && r->check(&u, msg, msglen) != 0)
			return -1;
		*(uint32_t *)field = u;
	} else {
		if (r->check && r->check(&v, msg, msglen) != 0)
			return -1;
		*(uint64_t *)field = v;
	}
	return 0;
}

static size_t table_rows(const struct conf_key *t)
{
	size_t n = 0;

	while (t[n].name)
		n++;
	return n;
}

/* Defaults for every scalar of T in BASE (and its sections); lists start empty. */
static int apply_defaults(struct walk *w, const struct conf_key *t, char *base)
{
	for (const struct conf_key *r = t; r->name; r++) {
		char msg[200];

		if (r->type == CONF_SECTION) {
			size_t old = path_push(w, r->name, strlen(r->name));
			int rc = apply_defaults(w, r->child, base + r->offset);
			path_pop(w, old);
			if (rc != 0)
				return -1;
		} else if (r->type != CONF_LIST && r->type != CONF_MAP && r->type != CONF_STRLIST &&
			   r->def &&
			   convert(r, r->def, strlen(r->def), base + r->offset, msg, sizeof msg) != 0) {
			size_t old = path_push(w, r->name, strlen(r->name));
			werr(w, 0, 0, "internal error: bad default: %s", msg);
			path_pop(w, old);
			return -1;
		}
	}
	return 0;
}

static void free_table(const struct conf_key *t, void *base_)
{
	char *base = base_;

	if (!t || !base)
		return;
	for (const struct conf_key *r = t; r->name; r++) {
		void *field = base + r->offset;

		switch (r->type) {
		case CONF_STRING:
		case CONF_PATH:
			free(*(char **)field);
			*(char **)field = NULL;
			break;
		case CONF_SECTION:
			free_table(r->child, field);
			break;
		case CONF_EXTRA: {
			struct cg_conf_extras *x = field;
			for (size_t i = 0; i < x->n; i++) {
				free(x->items[i].key);
				free(x->items[i].value);
			}
			free(x->items);
			free(x->where);
			memset(x, 0, sizeof *x);
			break;
		}
		case CONF_STRLIST: {
			char **arr = *(char ***)field;
			size_t *count = (size_t *)(base + r->count_off);
			for (size_t i = 0; arr && i < *count; i++)
				free(arr[i]);
			free(arr);
			*(char ***)field = NULL;
			*count = 0;
			break;
		}
		case CONF_LIST:
		case CONF_MAP: {
			char *arr = *(char **)field;
			size_t *count = (size_t *)(base + r->count_off);
			for (size_t i = 0; arr && i < *count; i++) {
				char *elem = arr + i * r->elem_size;
				if (r->type == CONF_MAP)
					free(*(char **)(elem + r->name_off));
				free_table(r->child, elem);
			}
			free(arr);
			*(char **)field = NULL;
			*count = 0;
			break;
		}
		default:
			break;
		}
	}
}

/* Edit distance for "did you mean", on short keys only. */
static size_t distance(const char *a, size_t la, const char *b)
{
	size_t lb = strlen(b), row[65], prev, tmp;

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t best = prev + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			tmp = row[j];
			row[j] = best;
			prev = tmp;
		}
	}
	return row[lb];
}

static void unknown_key(struct walk *w, const struct conf_key *t, const struct node *k)
{
	const char *best = NULL;
	size_t bestd = 3;   /* suggest only close matches */

	for (const struct conf_key *r = t; r->name; r++) {
		size_t d = distance(k->text, k->len, r->name);
		if (d < bestd) {
			bestd = d;
			best = r->name;
		}
	}
	if (best)
		werr(w, k->line, k->col, "unknown key (did you mean %s?)", best);
	else
		werr(w, k->line, k->col, "unknown key");
}

static int walk_map(struct walk *w, const struct conf_key *t, char *base, const struct node *m);

static int alias_error(struct walk *w, const struct node *n)
{
	werr(w, n->line, n->col, "aliases (*%s) are not supported; write the value out", n->text);
	return -1;
}

/* A key that is absent: report it if required, and look into absent sections. */
static int check_missing(struct walk *w, const struct conf_key *r, unsigned line, unsigned col)
{
	size_t old = path_push(w, r->name, strlen(r->name));
	int rc = 0;

	if ((r->flags & CONF_REQUIRED) ||
	    ((r->type == CONF_LIST || r->type == CONF_MAP || r->type == CONF_STRLIST) &&
	     r->min > 0)) {
		werr(w, line, col, "required key is missing");
		rc = -1;
	} else if (r->type == CONF_SECTION) {
		for (const struct conf_key *c = r->child; c->name && rc == 0; c++)
			rc = check_missing(w, c, line, col);
	}
	path_pop(w, old);
	return rc;
}

static int check_count(struct walk *w, const struct conf_key *r, const struct node *v, size_t n)
{
	if (n < r->min) {
		werr(w, v->line, v->col, "%zu entries is below the minimum %" PRIu64, n, r->min);
		return -1;
	}
	if (r->max && n > r->max) {
		werr(w, v->line, v->col, "%zu entries is above the maximum %" PRIu64, n, r->max);
		return -1;
	}
	return 0;
}

/* Allocate N zeroed elements for a LIST/MAP row and hang them on BASE. */
static char *alloc_elems(struct walk *w, const struct conf_key *r, char *base, size_t n)
{
	char *arr;

	if (n == 0)
		return NULL;
	arr = calloc(n, r->elem_size);
	if (!arr) {
		werr(w, 0, 0, "out of memory");
		return NULL;
	}
	*(char **)(base + r->offset) = arr;
	*(size_t *)(base + r->count_off) = n;
	return arr;
}

/* One element of a LIST or MAP: defaults, then its mapping (null = empty). */
static int walk_elem(struct walk *w, const struct conf_key *r, char *elem, const struct node *v)
{
	if (v->kind == N_ALIAS)
		return alias_error(w, v);
	if (apply_defaults(w, r->child, elem) != 0)
		return -1;
	if (v->kind != N_MAP && !is_null(v)) {
		werr(w, v->line, v->col, "expected a mapping, got %s", kind_name(v));
		return -1;
	}
	return walk_map(w, r->child, elem, v);
}

static int walk_list(struct walk *w, const struct conf_key *r, char *base, const struct node *v)
{
	size_t n = v->kind == N_SEQ ? v->n : 0;
	char *arr;

	if (v->kind != N_SEQ && !is_null(v)) {
		werr(w, v->line, v->col, "expected %s, got %s", type_phrase(r->type), kind_name(v));
		return -1;
	}
	if (check_count(w, r, v, n) != 0)
		return -1;
	arr = alloc_elems(w, r, base, n);
	if (n && !arr)
		return -1;
	for (size_t i = 0; i < n; i++) {
		size_t old = path_index(w, i);
		int rc = walk_elem(w, r, arr + i * r->elem_size, v->kids[i]);
		path_pop(w, old);
		if (rc != 0)
			return -1;
	}
	return 0;
}

static int cmp_keys(const void *pa, const void *pb)
{
	const struct node *a = *(const struct node *const *)pa, *b = *(const struct node *const *)pb;
	size_t l = a->len < b->len ? a->len : b->len;
	int c = memcmp(a->text, b->text, l);

	if (c)
		return c;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	/* Equal names: document order, so neighbours are (first, repeat). */
	if (a->line != b->line)
		return a->line < b->line ? -1 : 1;
	return a->col < b->col ? -1 : a->col > b->col;
}

/* The earliest repeated name among the keys of M (sorting, not n^2). */
static int check_dup_names(struct walk *w, const struct node *m)
{
	size_t n = m->n / 2;
	const struct node **keys, *first = NULL, *repeat = NULL;

	if (n < 2)
		return 0;
	keys = malloc(n * sizeof *keys);
	if (!keys) {
		werr(w, 0, 0, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		keys[i] = m->kids[2 * i];
	qsort(keys, n, sizeof *keys, cmp_keys);
	for (size_t i = 1; i < n; i++) {
		const struct node *a = keys[i - 1], *b = keys[i];
		if (a->len != b->len || memcmp(a->text, b->text, a->len) != 0)
			continue;
		if (!repeat || b->line < repeat->line ||
		    (b->line == repeat->line && b->col < repeat->col)) {
			repeat = b;
			first = a;
		}
	}
	free(keys);
	if (repeat) {
		size_t old = path_push(w, repeat->text, repeat->len);
		werr(w, repeat->line, repeat->col, "duplicate key (first at %u:%u)", first->line,
		     first->col);
		path_pop(w, old);
		return -1;
	}
	return 0;
}

static int walk_named(struct walk *w, const struct conf_key *r, char *base, const struct node *v)
{
	size_t n = v->kind == N_MAP ? v->n / 2 : 0;
	char *arr;

	if (v->kind != N_MAP && !is_null(v)) {
		werr(w, v->line, v->col, "expected %s, got %s", type_phrase(r->type), kind_name(v));
		return -1;
	}
	if (check_count(w, r, v, n) != 0)
		return -1;
	/* Key shapes first, so duplicate detection compares only names. */
	for (size_t i = 0; i < n; i++) {
		const struct node *k = v->kids[2 * i];
		if (k->kind == N_ALIAS)
			return alias_error(w, k);
		if (k->kind != N_SCALAR || is_null(k) || memchr(k->text, '\0', k->len)) {
			werr(w, k->line, k->col, "a name must be a non-empty string, not %s",
			     kind_name(k));
			return -1;
		}
	}
	if (check_dup_names(w, v) != 0)
		return -1;
	arr = alloc_elems(w, r, base, n);
	if (n && !arr)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct node *k = v->kids[2 * i];
		char *elem = arr + i * r->elem_size;
		char **name = (char **)(elem + r->name_off);
		size_t old;
		int rc;

		*name = strndup(k->text, k->len);
		if (!*name) {
			werr(w, 0, 0, "out of memory");
			return -1;
		}
		if (record(w, name, false, k) != 0)   /* checks on the name point here */
			return -1;
		old = path_push(w, k->text, k->len);
		rc = walk_elem(w, r, elem, v->kids[2 * i + 1]);
		path_pop(w, old);
		if (rc != 0)
			return -1;
	}
	return 0;
}

/* A sequence of scalars: each converted as a string (length bounded by
 * STRLIST_ITEM_MAX) and checked by r->check. */
#define STRLIST_ITEM_MAX 256

static int walk_strlist(struct walk *w, const struct conf_key *r, char *base, const struct node *v)
{
	size_t n = v->kind == N_SEQ ? v->n : 0;
	char **arr;

	if (v->kind != N_SEQ && !is_null(v)) {
		werr(w, v->line, v->col, "expected %s, got %s", type_phrase(r->type), kind_name(v));
		return -1;
	}
	if (check_count(w, r, v, n) != 0)
		return -1;
	if (n == 0)
		return 0;
	arr = calloc(n, sizeof *arr);
	if (!arr) {
		werr(w, 0, 0, "out of memory");
		return -1;
	}
	*(char ***)(base + r->offset) = arr;
	*(size_t *)(base + r->count_off) = n;
	for (size_t i = 0; i < n; i++) {
		const struct node *e = v->kids[i];
		struct conf_key item = { .name = r->name, .type = CONF_STRING, .max = STRLIST_ITEM_MAX,
					 .check = r->check };
		char msg[240];
		size_t old = path_index(w, i);
		int rc = 0;

		if (e->kind == N_ALIAS)
			rc = alias_error(w, e);
		else if (e->kind != N_SCALAR || is_null(e)) {
			werr(w, e->line, e->col, "expected a string, got %s", kind_name(e));
			rc = -1;
		} else if (convert(&item, e->text, e->len, &arr[i], msg, sizeof msg) != 0) {
			werr(w, e->line, e->col, "%s", msg);
			rc = -1;
		}
		path_pop(w, old);
		if (rc != 0)
			return -1;
	}
	return 0;
}

static int walk_value(struct walk *w, const struct conf_key *r, char *base,
		      const struct node *k, const struct node *v)
{
	char *field = base + r->offset;
	char msg[240];

	if (v->kind == N_ALIAS)
		return alias_error(w, v);
	if (record(w, field, r->child != NULL, k) != 0)
		return -1;
	switch (r->type) {
	case CONF_SECTION:
		if (v->kind != N_MAP && !is_null(v)) {
			werr(w, v->line, v->col, "expected a mapping, got %s", kind_name(v));
			return -1;
		}
		if (r->flags & CONF_PRESENCE)
			*(bool *)(base + r->present_off) = true;
		return walk_map(w, r->child, field, v);
	case CONF_LIST:
		return walk_list(w, r, base, v);
	case CONF_MAP:
		return walk_named(w, r, base, v);
	case CONF_STRLIST:
		return walk_strlist(w, r, base, v);
	default:
		break;
	}
	if (v->kind != N_SCALAR) {
		werr(w, v->line, v->col, "expected %s, got %s", type_phrase(r->type), kind_name(v));
		return -1;
	}
	if (is_null(v)) {
		if ((r->type == CONF_STRING || r->type == CONF_PATH) && !r->def &&
		    !(r->flags & CONF_REQUIRED)) {
			free(*(char **)field);
			*(char **)field = NULL;
			return 0;
		}
		if (r->def)
			werr(w, v->line, v->col, "no value: write %s, or remove the key for the "
			     "default (%s)", type_phrase(r->type), r->def);
		else
			werr(w, v->line, v->col, "no value: write %s", type_phrase(r->type));
		return -1;
	}
	if (convert(r, v->text, v->len, field, msg, sizeof msg) != 0) {
		werr(w, v->line, v->col, "%s", msg);
		return -1;
	}
	return 0;
}

/* A key left to a plugin: scalars only, kept with their position. */
static int add_extra(struct walk *w, struct cg_conf_extras *x, const struct node *k,
		     const struct node *v)
{
	if (v->kind == N_ALIAS)
		return alias_error(w, v);
	if (v->kind != N_SCALAR || is_null(v) || memchr(v->text, '\0', v->len)) {
		werr(w, v->line, v->col, "expected a scalar value, got %s", kind_name(v));
		return -1;
	}
	for (size_t i = 0; i < x->n; i++) {
		if (strlen(x->items[i].key) == k->len && memcmp(x->items[i].key, k->text, k->len) == 0) {
			werr(w, k->line, k->col, "duplicate key (first at %u:%u)", x->items[i].line,
			     x->items[i].col);
			return -1;
		}
	}
	struct cg_conf_extra *n = realloc(x->items, (x->n + 1) * sizeof *n);
	if (!n) {
		werr(w, 0, 0, "out of memory");
		return -1;
	}
	x->items = n;
	struct cg_conf_extra *e = &x->items[x->n];
	e->key = strndup(k->text, k->len);
	e->value = strndup(v->text, v->len);
	e->line = v->line;
	e->col = v->col;
	if (!e->key || !e->value) {
		free(e->key);
		free(e->value);
		werr(w, 0, 0, "out of memory");
		return -1;
	}
	x->n++;
	return 0;
}

/* Validate mapping M (or a null node: an empty mapping) against table T. */
static int walk_map(struct walk *w, const struct conf_key *t, char *base, const struct node *m)
{
	const struct node *first[MAX_ROWS] = { 0 };
	size_t nrows = table_rows(t), npairs = m->kind == N_MAP ? m->n / 2 : 0;

	if (nrows > MAX_ROWS) {
		werr(w, m->line, m->col, "internal error: table has more than %d rows", MAX_ROWS);
		return -1;
	}
	const struct conf_key *extra = NULL;
	for (size_t j = 0; j < nrows; j++)
		if (t[j].type == CONF_EXTRA)
			extra = &t[j];
	if (extra) {
		struct cg_conf_extras *x = (struct cg_conf_extras *)(base + extra->offset);
		x->line = m->line;
		x->col = m->col;
		free(x->where);
		x->where = strdup(w->path);
		if (!x->where) {
			werr(w, 0, 0, "out of memory");
			return -1;
		}
	}
	for (size_t i = 0; i < npairs; i++) {
		const struct node *k = m->kids[2 * i], *v = m->kids[2 * i + 1];
		const struct conf_key *r = NULL;
		size_t old;
		int rc;

		if (k->kind == N_ALIAS)
			return alias_error(w, k);
		if (k->kind != N_SCALAR) {
			werr(w, k->line, k->col, "a key must be a string, not %s", kind_name(k));
			return -1;
		}
		if (k->len == 0) {
			werr(w, k->line, k->col, "empty key");
			return -1;
		}
		for (size_t j = 0; j < nrows; j++) {
			if (strlen(t[j].name) == k->len && memcmp(t[j].name, k->text, k->len) == 0) {
				r = &t[j];
				break;
			}
		}
		old = path_push(w, k->text, k->len);
		if (!r && extra) {
			rc = add_extra(w, (struct cg_conf_extras *)(base + extra->offset), k, v);
			path_pop(w, old);
			if (rc != 0)
				return -1;
			continue;
		}
		if (!r) {
			unknown_key(w, t, k);
			return -1;
		}
		if (first[r - t]) {
			werr(w, k->line, k->col, "duplicate key (first at %u:%u)", first[r - t]->line,
			     first[r - t]->col);
			return -1;
		}
		first[r - t] = k;
		rc = walk_value(w, r, base, k, v);
		path_pop(w, old);
		if (rc != 0)
			return -1;
	}
	for (size_t j = 0; j < nrows; j++)
		if (!first[j] && check_missing(w, &t[j], m->line, m->col) != 0)
			return -1;
	return 0;
}

/* Parse and walk; on failure the caller frees what the walk stored in BASE. */
static int walk_document(struct walk *w, const char *yaml, size_t len,
			 const struct conf_key *t, void *base)
{
	struct node *root;
	int rc;

	if (len > MAX_INPUT) {
		werr(w, 0, 0, "the file is larger than 1 MiB");
		return -1;
	}
	if (apply_defaults(w, t, base) != 0)
		return -1;
	if (build_tree(w->file, yaml, len, &root, w->err, w->errlen) != 0)
		return -1;
	if (!root || is_null(root)) {
		werr(w, 1, 1, "the file is empty");
		rc = -1;
	} else if (root->kind != N_MAP) {
		werr(w, root->line, root->col, "the top level must be a mapping of sections, not %s",
		     kind_name(root));
		rc = -1;
	} else {
		rc = walk_map(w, t, base, root);
	}
	node_free(root);
	return rc;
}

/*
 * Validate YAML text against TABLE into BASE, which must be zeroed. On
 * failure everything it stored in BASE is freed again; on success the caller
 * releases BASE with free_table() and W's positions with free(w->pos).
 */
static int walk_string(struct walk *w, const char *yaml, size_t len,
		       const struct conf_key *table, void *base)
{
	if (w->err && w->errlen)
		w->err[0] = '\0';
	if (walk_document(w, yaml, len, table, base) == 0)
		return 0;
	free_table(table, base);
	return -1;
}

/* ---- crashgate's tables -------------------------------------------------- */

static int check_gateway_id(const void *field, char *msg, size_t msglen)
{
	const char *s = *(char *const *)field;
	size_t n = strlen(s);

	for (size_t i = 0; n <= 64 && i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-')) {
			n = 0;
			break;
		}
	}
	if (n >= 1 && n <= 64)
		return 0;
	char shown[48];
	snprintf(msg, msglen, "'%s' must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
		 echo(s, strlen(s), shown, sizeof shown));
	return -1;
}

static int check_topic_prefix(const void *field, char *msg, size_t msglen)
{
	const char *s = *(char *const *)field, *why = NULL;
	size_t n = strlen(s);
	char shown[48];

	if (n == 0)
		why = "must not be empty";
	else if (strpbrk(s, "+#"))
		why = "must not contain the wildcards + or #";
	else if (s[0] == '/' || s[n - 1] == '/')
		why = "must not start or end with /";
	if (!why)
		return 0;
	snprintf(msg, msglen, "'%s' %s", echo(s, n, shown, sizeof shown), why);
	return -1;
}

static const char *const uri_schemes[] = { "tcp://", "mqtt://", "ssl://", "mqtts://" };

static bool uri_is_tls(const char *uri)
{
	return strncmp(uri, "ssl://", 6) == 0 || strncmp(uri, "mqtts://", 8) == 0;
}

static int check_uri(const void *field, char *msg, size_t msglen)
{
	const char *s = *(char *const *)field;
	char shown[48];

	for (size_t i = 0; i < sizeof uri_schemes / sizeof uri_schemes[0]; i++) {
		size_t l = strlen(uri_schemes[i]);
		if (strncmp(s, uri_schemes[i], l) != 0)
			continue;
		if (s[l] && !strpbrk(s, " \t"))
			return 0;
		break;
	}
	snprintf(msg, msglen, "'%s' is not a broker address: write tcp://, mqtt://, ssl:// or "
		 "mqtts:// followed by host:port", echo(s, strlen(s), shown, sizeof shown));
	return -1;
}

#define GW(f)   (offsetof(struct cg_config, gateway.f) - offsetof(struct cg_config, gateway))
#define MQ(f)   (offsetof(struct cg_config, mqtt.f) - offsetof(struct cg_config, mqtt))
#define LIM(f)  (offsetof(struct cg_config, limits.f) - offsetof(struct cg_config, limits))
#define TLS(f)  offsetof(struct cg_tls_config, f)

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define SEC ((uint64_t)1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

static const struct conf_key gateway_keys[] = {
	{ .name = "id", .type = CONF_STRING, .flags = CONF_REQUIRED, .offset = GW(id),
	  .check = check_gateway_id,
	  .desc = "Name of this gateway (site): 1 to 64 of A-Z a-z 0-9 . _ -; it appears in "
		  "every dump record and upstream." },
	{ .name = "data_dir", .type = CONF_PATH, .flags = CONF_REQUIRED,
	  .offset = GW(data_dir),
	  .desc = "Directory for the gateway's state; the RocksDB store lives in data_dir/store." },
	{ .name = "sync_interval", .type = CONF_DURATION, .offset = GW(sync_interval_ms),
	  .def = "20ms", .min = 1, .max = 1000,
	  .desc = "Store group commit: how long written chunks may wait for one fsync before "
		  "they are acknowledged." },
	{ .name = "plugin_dir", .type = CONF_PATH, .offset = GW(plugin_dir),
	  .desc = "Directory of the output plugins; absent = $CRASHGATE_PLUGIN_DIR, else the "
		  "directory the build installs them to." },
	{ 0 }
};

static const struct conf_key tls_keys[] = {
	{ .name = "ca_file", .type = CONF_PATH, .offset = TLS(ca_file),
	  .desc = "CA certificates (PEM) that verify the broker; absent = the system store." },
	{ .name = "cert_file", .type = CONF_PATH, .offset = TLS(cert_file),
	  .desc = "Client certificate (PEM) for mutual TLS; needs key_file." },
	{ .name = "key_file", .type = CONF_PATH, .offset = TLS(key_file),
	  .desc = "Private key (PEM) of cert_file; needs cert_file." },
	{ .name = "verify_hostname", .type = CONF_BOOL, .offset = TLS(verify_hostname),
	  .def = "true", .desc = "Check that the broker's certificate names the host in mqtt.uri." },
	{ 0 }
};

static const struct conf_key mqtt_keys[] = {
	{ .name = "uri", .type = CONF_STRING, .offset = MQ(uri), .def = "tcp://127.0.0.1:1883",
	  .max = 1024, .check = check_uri,
	  .desc = "Broker the devices publish to: tcp:// or mqtt:// (plain), ssl:// or mqtts:// "
		  "(TLS), then host:port." },
	{ .name = "client_id", .type = CONF_STRING, .offset = MQ(client_id), .def = "crashgate",
	  .max = 256, .desc = "MQTT client id of the gateway; unique per broker." },
	{ .name = "topic_prefix", .type = CONF_STRING, .offset = MQ(topic_prefix),
	  .def = "crashgate/v1", .max = 256, .check = check_topic_prefix,
	  .desc = "Prefix of every topic (SPEC §2); no + or #, no leading or trailing /." },
	{ .name = "username", .type = CONF_STRING, .offset = MQ(username), .max = 1024,
	  .desc = "Broker user name; absent = connect without one." },
	{ .name = "password_file", .type = CONF_PATH, .offset = MQ(password_file),
	  .desc = "File whose first line is the broker password (read at start and on reload, "
		  "never logged)." },
	{ .name = "keepalive", .type = CONF_DURATION, .offset = MQ(keepalive_ms), .def = "30s",
	  .min = 5 * SEC, .max = HOUR, .desc = "MQTT keep-alive interval." },
	{ .name = "reconnect_min", .type = CONF_DURATION, .offset = MQ(reconnect_min_ms),
	  .def = "1s", .min = 100, .max = HOUR,
	  .desc = "First delay before reconnecting to the broker; doubles up to reconnect_max." },
	{ .name = "reconnect_max", .type = CONF_DURATION, .offset = MQ(reconnect_max_ms),
	  .def = "30s", .min = 100, .max = DAY,
	  .desc = "Longest delay between reconnect attempts; at least reconnect_min." },
	{ .name = "max_inflight", .type = CONF_UINT32, .offset = MQ(max_inflight), .def = "1000",
	  .min = 1, .max = 65535,
	  .desc = "Messages to devices (acks, consent) awaiting the broker's acknowledgement "
		  "(QoS 1); more leave as these are confirmed." },
	{ .name = "tls", .type = CONF_SECTION, .flags = CONF_PRESENCE, .offset = MQ(tls),
	  .present_off = MQ(tls_enabled), .child = tls_keys,
	  .desc = "Present = TLS to the broker (needs an ssl:// or mqtts:// uri); `tls: {}` uses "
		  "the system CA store." },
	{ 0 }
};

static const struct conf_key limits_keys[] = {
	{ .name = "max_dump_bytes", .type = CONF_SIZE, .offset = LIM(max_dump_bytes),
	  .def = "16MiB", .min = KiB, .max = GiB,
	  .desc = "Largest dump accepted from a device; at most max_store_bytes." },
	{ .name = "max_chunk_bytes", .type = CONF_SIZE, .offset = LIM(max_chunk_bytes),
	  .def = "64KiB", .min = 16, .max = MiB,
	  .desc = "Largest chunk payload; at most max_dump_bytes." },
	{ .name = "reassembly_timeout", .type = CONF_DURATION,
	  .offset = LIM(reassembly_timeout_ms), .def = "10m", .min = SEC, .max = 7 * DAY,
	  .desc = "An open dump with no new chunk for this long expires." },
	{ .name = "max_open_dumps", .type = CONF_UINT32, .offset = LIM(max_open_dumps),
	  .def = "10000", .min = 1, .max = 10000000,
	  .desc = "Dumps being reassembled at once, all devices together." },
	{ .name = "max_open_dumps_per_device", .type = CONF_UINT32,
	  .offset = LIM(max_open_dumps_per_device), .def = "4", .min = 1, .max = 10000000,
	  .desc = "Dumps one device may have open at once; at most max_open_dumps." },
	{ .name = "max_store_bytes", .type = CONF_SIZE, .offset = LIM(max_store_bytes),
	  .def = "2GiB", .min = KiB,
	  .desc = "Disk budget of the store; at least max_dump_bytes." },
	{ 0 }
};

static int check_region_name(const void *field, char *msg, size_t msglen)
{
	const char *s = *(char *const *)field;
	size_t n = strlen(s);
	char shown[48];

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			n = 0;
	}
	if (n >= 1 && n <= 32)
		return 0;
	snprintf(msg, msglen, "'%s' is not a region name: 1 to 32 of A-Z a-z 0-9 _ -",
		 echo(s, strlen(s), shown, sizeof shown));
	return -1;
}

/* A device glob may only use what a device id can contain plus * ? [ ] ! */
static int check_device_glob(const void *field, char *msg, size_t msglen)
{
	const char *s = *(char *const *)field;
	char shown[48];
	int depth = 0;

	for (const char *p = s; *p; p++) {
		char c = *p;
		if (c == '[')
			depth++;
		else if (c == ']')
			depth--;
		if (depth < 0 || depth > 1 ||
		    !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      strchr("._-*?[]!", c))) {
			snprintf(msg, msglen, "'%s' is not a device glob: device ids are A-Z a-z 0-9 . _ -, "
				 "with * ? and [...] as wildcards", echo(s, strlen(s), shown, sizeof shown));
			return -1;
		}
	}
	if (depth != 0) {
		snprintf(msg, msglen, "'%s' has an unclosed [", echo(s, strlen(s), shown, sizeof shown));
		return -1;
	}
	return 0;
}

#define UP(f)   offsetof(struct cg_upstream_config, f)
#define RG(f)   offsetof(struct cg_region_config, f)
#define GR(f)   offsetof(struct cg_group_config, f)
#define CF(f)   offsetof(struct cg_config, f)

static const char *const consent_values[] = { "disabled", "enabled", NULL };

static const struct conf_key batch_keys[] = {
	{ .name = "max_dumps", .type = CONF_UINT32, .offset = UP(batch.max_dumps) - UP(batch),
	  .def = "32", .min = 1, .max = 10000, .desc = "Most dumps in one batch." },
	{ .name = "max_bytes", .type = CONF_SIZE, .offset = UP(batch.max_bytes) - UP(batch),
	  .def = "4MiB", .min = KiB, .max = GiB,
	  .desc = "Most dump bytes in one batch (a single larger dump goes alone)." },
	{ .name = "max_delay", .type = CONF_DURATION, .offset = UP(batch.max_delay_ms) - UP(batch),
	  .def = "5s", .max = HOUR,
	  .desc = "Longest a dump waits for its batch to fill before the batch is sent." },
	{ 0 }
};

static int check_kind(const void *field, char *msg, size_t msglen)
{
	const char *s = *(char *const *)field;
	size_t n = strlen(s);
	char shown[48];

	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			n = 0;
	if (n >= 1 && n <= 32)
		return 0;
	snprintf(msg, msglen, "'%s' is not a plugin kind: 1 to 32 of a-z 0-9 _ (http, sentry, mqtt, "
		 "file, ...)", echo(s, strlen(s), shown, sizeof shown));
	return -1;
}

static const struct conf_key retry_keys[] = {
	{ .name = "min", .type = CONF_DURATION, .offset = UP(retry.min_ms) - UP(retry), .def = "1s",
	  .min = 10, .max = HOUR, .desc = "First wait after a transient failure (full jitter)." },
	{ .name = "max", .type = CONF_DURATION, .offset = UP(retry.max_ms) - UP(retry), .def = "5m",
	  .min = 10, .max = DAY, .desc = "Longest wait between attempts; at least min." },
	{ 0 }
};

static const struct conf_key upstream_keys[] = {
	{ .name = "name", .type = CONF_STRING, .flags = CONF_REQUIRED, .offset = UP(name),
	  .max = 64, .check = check_gateway_id,
	  .desc = "Name of the upstream, unique across regions (A-Z a-z 0-9 . _ -)." },
	{ .name = "kind", .type = CONF_STRING, .flags = CONF_REQUIRED, .offset = UP(kind),
	  .max = 32, .check = check_kind,
	  .desc = "Output plugin that delivers to it: crashgate_out_<kind>.so in the plugin "
		  "directory (shipped: http, sentry, mqtt, file)." },
	{ .name = "batch", .type = CONF_SECTION, .offset = UP(batch), .child = batch_keys,
	  .desc = "When a batch is sent: whichever limit is reached first." },
	{ .name = "retry", .type = CONF_SECTION, .offset = UP(retry), .child = retry_keys,
	  .desc = "Backoff after transient failures (full jitter, honouring Retry-After)." },
	{ .name = "*", .type = CONF_EXTRA, .offset = UP(options),
	  .desc = "Every other key belongs to the plugin of `kind`; see its README "
		  "(plugins/<kind>/README.md). Checked at start and by check-config." },
	{ 0 }
};

static const struct conf_key region_keys[] = {
	{ .name = "upstreams", .type = CONF_LIST, .offset = RG(upstreams), .min = 1, .max = 16,
	  .child = upstream_keys, .elem_size = sizeof(struct cg_upstream_config),
	  .count_off = RG(n_upstreams),
	  .desc = "Where this region's dumps go; each gets every dump of the region." },
	{ 0 }
};

static const struct conf_key collection_keys[] = {
	{ .name = "start", .type = CONF_TIME,
	  .offset = GR(collection.start_ms) - GR(collection),
	  .desc = "No dumps are collected before this time; absent = no start." },
	{ .name = "stop", .type = CONF_TIME, .offset = GR(collection.stop_ms) - GR(collection),
	  .desc = "No dumps are collected from this time on; absent = no end." },
	{ .name = "max_dumps", .type = CONF_UINT32,
	  .offset = GR(collection.max_dumps) - GR(collection), .def = "0",
	  .desc = "Most dumps stored for the group between start and stop (counted across "
		  "restarts); 0 = no quota." },
	{ 0 }
};

static const struct conf_key group_keys[] = {
	{ .name = "name", .type = CONF_STRING, .flags = CONF_REQUIRED, .offset = GR(name),
	  .min = 1, .max = 128,
	  .desc = "Name of the group, unique; the group named `default` also takes every device "
		  "no other group matches." },
	{ .name = "devices", .type = CONF_STRLIST, .offset = GR(devices), .max = 1000,
	  .count_off = GR(n_devices), .check = check_device_glob,
	  .desc = "Device-id globs (`*`, `?`, `[a-f]`); the first group with a match wins. "
		  "Required except for the group named `default`." },
	{ .name = "crash_dumps", .type = CONF_ENUM, .offset = GR(crash_dumps), .def = "disabled",
	  .values = consent_values,
	  .desc = "Consent: `enabled` lets the gateway collect this group's dumps; `disabled` "
		  "answers consent_required and stores nothing." },
	{ .name = "regional_data_boundary", .type = CONF_STRING, .offset = GR(region),
	  .def = "None", .max = 32, .check = check_region_name,
	  .desc = "Region the group's dumps stay in (a key of `regions`); `None` = "
		  "default_region." },
	{ .name = "collection", .type = CONF_SECTION, .offset = GR(collection),
	  .child = collection_keys, .desc = "Collection window and quota of the group." },
	{ 0 }
};

static const struct conf_key throttle_keys[] = {
	{ .name = "max_identical", .type = CONF_UINT32,
	  .offset = CF(throttle.max_identical) - CF(throttle), .def = "5", .min = 1, .max = 1000,
	  .desc = "Full dumps stored per crash signature per window; beyond that only the "
		  "occurrence is counted (and devices answered `throttled`)." },
	{ .name = "window", .type = CONF_DURATION, .offset = CF(throttle.window_ms) - CF(throttle),
	  .def = "24h", .min = MIN, .max = 365 * DAY,
	  .desc = "Sliding window of max_identical; also the window of content deduplication." },
	{ 0 }
};

static const struct conf_key consent_keys[] = {
	{ .name = "valid_for", .type = CONF_DURATION,
	  .offset = CF(consent.valid_for_ms) - CF(consent), .def = "48h", .min = 2 * MIN,
	  .max = 365 * DAY,
	  .desc = "How long a consent signal stays valid on the device; republished every "
		  "valid_for / 2." },
	{ 0 }
};

static const struct conf_key retention_keys[] = {
	{ .name = "dumps", .type = CONF_DURATION, .offset = CF(retention.dumps_ms) - CF(retention),
	  .def = "29d", .min = MIN, .max = 3650 * DAY,
	  .desc = "A dump's bytes are deleted this long after receipt, forwarded or not." },
	{ .name = "history", .type = CONF_DURATION,
	  .offset = CF(retention.history_ms) - CF(retention), .def = "15d", .min = MIN,
	  .max = 3650 * DAY,
	  .desc = "Crash history (dump metadata, throttled occurrences, signature counts) is "
		  "kept this long after it was last touched; a record lives at least as long as "
		  "its dump's bytes." },
	{ 0 }
};

static int check_listen(const void *field, char *msg, size_t msglen)
{
	const char *s = *(char *const *)field, *colon = strrchr(s, ':');
	char shown[48];
	char *end = NULL;
	long port = colon ? strtol(colon + 1, &end, 10) : 0;
	if (colon && colon != s && end && !*end && port > 0 && port < 65536)
		return 0;
	snprintf(msg, msglen, "'%s' is not an address to listen on: write host:port, e.g. "
		 "127.0.0.1:8080", echo(s, strlen(s), shown, sizeof shown));
	return -1;
}

#define AD(f)   (offsetof(struct cg_config, admin.f) - offsetof(struct cg_config, admin))

static const struct conf_key admin_keys[] = {
	{ .name = "listen", .type = CONF_STRING, .offset = AD(listen), .def = "127.0.0.1:8080",
	  .max = 256, .check = check_listen,
	  .desc = "Address of the admin HTTP endpoint (IPv4 host:port)." },
	{ .name = "token_file", .type = CONF_PATH, .offset = AD(token_file),
	  .desc = "File whose first line is the bearer token every route but /healthz requires; "
		  "without it the endpoint only starts on a loopback address." },
	{ 0 }
};

static const struct conf_key config_keys[] = {
	{ .name = "gateway", .type = CONF_SECTION, .offset = offsetof(struct cg_config, gateway),
	  .child = gateway_keys, .desc = "This gateway." },
	{ .name = "mqtt", .type = CONF_SECTION, .offset = offsetof(struct cg_config, mqtt),
	  .child = mqtt_keys, .desc = "The local broker the devices publish to." },
	{ .name = "limits", .type = CONF_SECTION, .offset = offsetof(struct cg_config, limits),
	  .child = limits_keys, .desc = "Bounds on what devices may send (SPEC §11)." },
	{ .name = "default_region", .type = CONF_STRING, .offset = CF(default_region), .max = 32,
	  .check = check_region_name,
	  .desc = "Region of groups whose regional_data_boundary is None." },
	{ .name = "regions", .type = CONF_MAP, .offset = CF(regions), .max = 32,
	  .child = region_keys, .elem_size = sizeof(struct cg_region_config),
	  .count_off = CF(n_regions), .name_off = RG(name),
	  .desc = "Data boundaries, each with its upstreams (SPEC §8)." },
	{ .name = "groups", .type = CONF_LIST, .offset = CF(groups), .max = 1000,
	  .child = group_keys, .elem_size = sizeof(struct cg_group_config),
	  .count_off = CF(n_groups),
	  .desc = "Device groups with consent, region and collection window (SPEC §6)." },
	{ .name = "throttle", .type = CONF_SECTION, .offset = CF(throttle), .child = throttle_keys,
	  .desc = "Duplicate throttling per crash signature." },
	{ .name = "consent", .type = CONF_SECTION, .offset = CF(consent), .child = consent_keys,
	  .desc = "The consent signal sent to devices (SPEC §5)." },
	{ .name = "retention", .type = CONF_SECTION, .offset = CF(retention),
	  .child = retention_keys, .desc = "How long dumps and history are kept." },
	{ .name = "admin", .type = CONF_SECTION, .flags = CONF_PRESENCE, .offset = CF(admin),
	  .present_off = CF(admin_enabled), .child = admin_keys,
	  .desc = "Present = the admin HTTP endpoint (health, readiness, metrics) runs." },
	{ 0 }
};

/* ---- checks across keys -------------------------------------------------- */

/*
 * Require lo <= hi. The message goes to the key the operator wrote: BLAME_HI
 * prefers hi's key, otherwise lo's; a value that was not written is marked as
 * the default.
 */
static int require_le(struct walk *w, enum conf_type t, const void *lo_f, const char *lo_path,
		      uint64_t lo, const void *hi_f, const char *hi_path, uint64_t hi, bool blame_hi)
{
	const struct pos *plo = find_pos(w, lo_f, false), *phi = find_pos(w, hi_f, false);
	char los[32], his[32];

	if (lo <= hi)
		return 0;
	fmt_value(t, lo, los, sizeof los);
	fmt_value(t, hi, his, sizeof his);
	if (phi && (blame_hi || !plo))
		fmt_err(w->err, w->errlen, w->file, phi->line, phi->col, hi_path,
			"%s is below %s (%s%s)", his, lo_path, los, plo ? "" : ", the default");
	else if (plo)
		fmt_err(w->err, w->errlen, w->file, plo->line, plo->col, lo_path,
			"%s is above %s (%s%s)", los, hi_path, his, phi ? "" : ", the default");
	else
		fmt_err(w->err, w->errlen, w->file, 0, 0, lo_path, "internal error: defaults "
			"contradict %s", hi_path);
	return -1;
}

/* Report at the position of FIELD (or of FALLBACK when FIELD was not written). */
static void err_at(struct walk *w, const void *field, bool container, const void *fallback,
		   const char *key, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void err_at(struct walk *w, const void *field, bool container, const void *fallback,
		   const char *key, const char *fmt, ...)
{
	const struct pos *p = find_pos(w, field, container);
	va_list ap;

	/* An element's first field shares its address: a scalar first. */
	if (!p && fallback)
		p = find_pos(w, fallback, false);
	if (!p && fallback)
		p = find_pos(w, fallback, true);
	va_start(ap, fmt);
	vfmt_err(w->err, w->errlen, w->file, p ? p->line : 0, p ? p->col : 0, key, fmt, ap);
	va_end(ap);
}

/*
 * Regions, upstreams and groups (SPEC §6, §8). A consenting group whose
 * region has no upstream is refused here, so that no dump is ever stored
 * with nowhere it may go. A group without consent stores nothing, so its
 * region is not checked until it is enabled.
 */
static int check_policy(struct walk *w, const struct cg_config *c)
{
	char key[200], msg[120];

	for (size_t i = 0; i < c->n_regions; i++) {
		const struct cg_region_config *r = &c->regions[i];
		const char *name = r->name;
		snprintf(key, sizeof key, "regions.%s", name);
		if (strcmp(name, "None") == 0 || check_region_name(&name, msg, sizeof msg) != 0) {
			err_at(w, &r->name, false, NULL, key, "%s",
			       strcmp(name, "None") == 0 ? "'None' is reserved: it means default_region" : msg);
			return -1;
		}
		for (size_t j = 0; j < r->n_upstreams; j++) {
			const struct cg_upstream_config *u = &r->upstreams[j];
			snprintf(key, sizeof key, "regions.%s.upstreams[%zu].retry", name, j);
			if (u->retry.min_ms > u->retry.max_ms) {
				err_at(w, &u->retry.max_ms, false, &u->retry, key,
				       "max is below min");
				return -1;
			}
			snprintf(key, sizeof key, "regions.%s.upstreams[%zu]", name, j);
			/* Names identify queues and dead letters: unique across regions. */
			for (size_t a = 0; a <= i; a++) {
				for (size_t b = 0; b < c->regions[a].n_upstreams; b++) {
					const struct cg_upstream_config *o = &c->regions[a].upstreams[b];
					if (o == u)
						goto next_upstream;
					if (strcmp(o->name, u->name) == 0) {
						err_at(w, &u->name, false, u, key,
						       "upstream name '%s' is already used in regions.%s",
						       u->name, c->regions[a].name);
						return -1;
					}
				}
			}
next_upstream:;
		}
	}
	for (size_t i = 0; i < c->n_groups; i++) {
		const struct cg_group_config *g = &c->groups[i];
		snprintf(key, sizeof key, "groups[%zu]", i);
		for (size_t j = 0; j < i; j++) {
			if (strcmp(c->groups[j].name, g->name) == 0) {
				err_at(w, &g->name, false, g, key, "group name '%s' is already used by "
				       "groups[%zu]", g->name, j);
				return -1;
			}
		}
		if (g->n_devices == 0 && strcmp(g->name, "default") != 0) {
			err_at(w, &g->devices, false, &g->name, key,
			       "devices is required (at least one glob; only the group named default "
			       "may have none)");
			return -1;
		}
		if (g->collection.start_ms && g->collection.stop_ms &&
		    g->collection.start_ms >= g->collection.stop_ms) {
			snprintf(key, sizeof key, "groups[%zu].collection.stop", i);
			err_at(w, &g->collection.stop_ms, false, NULL, key, "stop is not after start");
			return -1;
		}
		if (g->crash_dumps != CG_CONSENT_ENABLED)
			continue;
		const char *region = cg_config_group_region(c, g);
		snprintf(key, sizeof key, "groups[%zu].regional_data_boundary", i);
		if (!region) {
			err_at(w, &g->region, false, &g->crash_dumps, key,
			       "group '%s' collects dumps with regional_data_boundary None, but "
			       "default_region is not set", g->name);
			return -1;
		}
		if (!cg_config_region(c, region)) {
			err_at(w, &g->region, false, &g->crash_dumps, key,
			       "group '%s' collects dumps in region %s, which has no upstream: add "
			       "regions.%s.upstreams", g->name, region, region);
			return -1;
		}
	}
	return 0;
}

static int check_config(struct walk *w, const struct cg_config *c)
{
	const struct pos *p;

	if (require_le(w, CONF_SIZE, &c->limits.max_chunk_bytes, "limits.max_chunk_bytes",
		       c->limits.max_chunk_bytes, &c->limits.max_dump_bytes,
		       "limits.max_dump_bytes", c->limits.max_dump_bytes, false) ||
	    require_le(w, CONF_SIZE, &c->limits.max_dump_bytes, "limits.max_dump_bytes",
		       c->limits.max_dump_bytes, &c->limits.max_store_bytes,
		       "limits.max_store_bytes", c->limits.max_store_bytes, true) ||
	    require_le(w, CONF_UINT32, &c->limits.max_open_dumps_per_device,
		       "limits.max_open_dumps_per_device", c->limits.max_open_dumps_per_device,
		       &c->limits.max_open_dumps, "limits.max_open_dumps",
		       c->limits.max_open_dumps, false) ||
	    require_le(w, CONF_DURATION, &c->mqtt.reconnect_min_ms, "mqtt.reconnect_min",
		       c->mqtt.reconnect_min_ms, &c->mqtt.reconnect_max_ms, "mqtt.reconnect_max",
		       c->mqtt.reconnect_max_ms, true))
		return -1;

	/* ssl:// without a tls section is fine (system CA store); the reverse
	 * would silently send in the clear. */
	if (c->mqtt.tls_enabled && !uri_is_tls(c->mqtt.uri)) {
		char shown[48];
		p = find_pos(w, &c->mqtt.tls, true);
		fmt_err(w->err, w->errlen, w->file, p ? p->line : 0, p ? p->col : 0, "mqtt.tls",
			"a tls section needs an ssl:// or mqtts:// uri, but mqtt.uri is %s",
			echo(c->mqtt.uri, strlen(c->mqtt.uri), shown, sizeof shown));
		return -1;
	}
	if (!c->mqtt.tls.cert_file != !c->mqtt.tls.key_file) {
		bool cert = c->mqtt.tls.cert_file != NULL;
		p = find_pos(w, cert ? (const void *)&c->mqtt.tls.cert_file :
				       (const void *)&c->mqtt.tls.key_file, false);
		fmt_err(w->err, w->errlen, w->file, p ? p->line : 0, p ? p->col : 0,
			cert ? "mqtt.tls.cert_file" : "mqtt.tls.key_file",
			cert ? "a client certificate needs key_file too" :
			       "a client key needs cert_file too");
		return -1;
	}
	return check_policy(w, c);
}

/* ---- public entry points ------------------------------------------------- */

int cg_config_load_string(const char *name, const char *yaml, size_t len,
			  struct cg_config **out, char *err, size_t errlen)
{
	struct walk w = { .file = name, .err = err, .errlen = errlen };
	struct cg_config *c;
	int rc;

	*out = NULL;
	c = calloc(1, sizeof *c);
	if (!c || !(c->path = strdup(name))) {
		free(c);
		fmt_err(err, errlen, name, 0, 0, NULL, "out of memory");
		return -1;
	}
	rc = walk_string(&w, yaml, len, config_keys, c);
	if (rc == 0)
		rc = check_config(&w, c);
	free(w.pos);
	if (rc != 0) {
		cg_config_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

/* Read at most MAX+1 bytes of PATH into a malloc'd buffer. */
static char *read_bounded(const char *path, size_t max, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	char *buf;
	size_t n = 0;

	if (fd < 0)
		return NULL;
	buf = malloc(max + 1);
	if (!buf) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	while (n <= max) {
		ssize_t r = read(fd, buf + n, max + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			explicit_bzero(buf, n);
			free(buf);
			close(fd);
			errno = e;
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	return buf;
}

int cg_config_load(const char *path, struct cg_config **out, char *err, size_t errlen)
{
	size_t len;
	char *buf;
	int rc;

	*out = NULL;
	buf = read_bounded(path, MAX_INPUT, &len);
	if (!buf) {
		fmt_err(err, errlen, path, 0, 0, NULL, "cannot read: %s", strerror(errno));
		return -1;
	}
	if (len > MAX_INPUT) {
		fmt_err(err, errlen, path, 0, 0, NULL, "the file is larger than 1 MiB");
		free(buf);
		return -1;
	}
	rc = cg_config_load_string(path, buf, len, out, err, errlen);
	free(buf);
	return rc;
}

const struct cg_group_config *cg_config_group_for(const struct cg_config *cfg, const char *device)
{
	const struct cg_group_config *fallback = NULL;

	for (size_t i = 0; i < cfg->n_groups; i++) {
		const struct cg_group_config *g = &cfg->groups[i];
		for (size_t j = 0; j < g->n_devices; j++)
			if (fnmatch(g->devices[j], device, 0) == 0)
				return g;
		if (!fallback && strcmp(g->name, "default") == 0)
			fallback = g;
	}
	return fallback;
}

const struct cg_region_config *cg_config_region(const struct cg_config *cfg, const char *name)
{
	for (size_t i = 0; name && i < cfg->n_regions; i++)
		if (strcmp(cfg->regions[i].name, name) == 0)
			return &cfg->regions[i];
	return NULL;
}

const char *cg_config_group_region(const struct cg_config *cfg, const struct cg_group_config *g)
{
	if (!g || !g->region || strcmp(g->region, "None") == 0)
		return cfg->default_region;
	return g->region;
}

/* ---- plugin options -------------------------------------------------------- */

#define MAX_PLUGIN_ROWS 64

/* A plugin's row as one of ours, so that plugin keys obey the same syntax,
 * bounds and messages as the core's. Returns -1 on a type we do not know. */
static int plugin_row(const struct cg_plugin_option *o, struct conf_key *r)
{
	static const enum conf_type map[] = {
		[CG_OPT_STRING] = CONF_STRING, [CG_OPT_PATH] = CONF_PATH, [CG_OPT_BOOL] = CONF_BOOL,
		[CG_OPT_UINT32] = CONF_UINT32, [CG_OPT_SIZE] = CONF_SIZE,
		[CG_OPT_DURATION] = CONF_DURATION, [CG_OPT_ENUM] = CONF_ENUM,
	};
	if (o->type < CG_OPT_STRING || o->type > CG_OPT_ENUM)
		return -1;
	*r = (struct conf_key){ .name = o->name, .type = map[o->type],
				.flags = (o->flags & CG_OPT_REQUIRED) ? CONF_REQUIRED : 0,
				.offset = o->offset, .def = o->def, .min = o->min, .max = o->max,
				.desc = o->desc, .values = o->values };
	return 0;
}

static int plugin_table(const struct cg_plugin_option *table, struct conf_key *rows, size_t *n)
{
	size_t i = 0;
	for (; table && table[i].name; i++)
		if (i + 1 >= MAX_PLUGIN_ROWS || plugin_row(&table[i], &rows[i]) != 0)
			return -1;
	rows[i] = (struct conf_key){ 0 };
	*n = i;
	return 0;
}

int cg_config_apply_options(const struct cg_config *cfg, const struct cg_upstream_config *u,
			    const char *kind, const struct cg_plugin_option *table, void *base_,
			    char *err, size_t errlen)
{
	const struct cg_conf_extras *x = &u->options;
	const char *where = x->where ? x->where : u->name;
	struct conf_key rows[MAX_PLUGIN_ROWS];
	char *base = base_, key[400], msg[240];
	size_t n;

	if (plugin_table(table, rows, &n) != 0) {
		fmt_err(err, errlen, cfg->path, x->line, x->col, where,
			"the %s plugin declares an option table this gateway cannot read", kind);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (rows[i].def && convert(&rows[i], rows[i].def, strlen(rows[i].def),
					   base + rows[i].offset, msg, sizeof msg) != 0) {
			fmt_err(err, errlen, cfg->path, x->line, x->col, where,
				"the %s plugin's default for %s is invalid: %s", kind, rows[i].name, msg);
			return -1;
		}
	}
	for (size_t e = 0; e < x->n; e++) {
		const struct cg_conf_extra *it = &x->items[e];
		const struct conf_key *r = NULL;
		for (size_t i = 0; i < n && !r; i++)
			if (strcmp(rows[i].name, it->key) == 0)
				r = &rows[i];
		snprintf(key, sizeof key, "%s.%s", where, it->key);
		if (!r) {
			char known[200] = "";
			for (size_t i = 0; i < n; i++)
				snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s",
					 i ? ", " : "", rows[i].name);
			fmt_err(err, errlen, cfg->path, it->line, it->col, key,
				"unknown key (the %s plugin takes: %s)", kind, n ? known : "no keys");
			return -1;
		}
		if (convert(r, it->value, strlen(it->value), base + r->offset, msg, sizeof msg) != 0) {
			fmt_err(err, errlen, cfg->path, it->line, it->col, key, "%s", msg);
			return -1;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (!(rows[i].flags & CONF_REQUIRED))
			continue;
		bool given = false;
		for (size_t e = 0; e < x->n && !given; e++)
			given = strcmp(x->items[e].key, rows[i].name) == 0;
		if (!given) {
			snprintf(key, sizeof key, "%s.%s", where, rows[i].name);
			fmt_err(err, errlen, cfg->path, x->line, x->col, key,
				"required key is missing (the %s plugin needs it)", kind);
			return -1;
		}
	}
	return 0;
}

void cg_config_free_options(const struct cg_plugin_option *table, void *base)
{
	struct conf_key rows[MAX_PLUGIN_ROWS];
	size_t n;
	if (base && plugin_table(table, rows, &n) == 0)
		free_table(rows, base);
}

#ifndef CG_PLUGIN_DEFAULT_DIR
#define CG_PLUGIN_DEFAULT_DIR "/usr/local/lib/crashgate/plugins"
#endif

const char *cg_config_plugin_dir(const struct cg_config *cfg)
{
	const char *env = getenv("CRASHGATE_PLUGIN_DIR");
	if (cfg && cfg->gateway.plugin_dir)
		return cfg->gateway.plugin_dir;
	return env && *env ? env : CG_PLUGIN_DEFAULT_DIR;
}

void cg_config_free(struct cg_config *cfg)
{
	if (!cfg)
		return;
	free_table(config_keys, cfg);
	free(cfg->path);
	free(cfg);
}

char *cg_read_secret_file(const char *path)
{
	size_t len, n;
	char *buf, *nl, *s;

	buf = read_bounded(path, MAX_SECRET, &len);
	if (!buf)
		return NULL;
	if (len > MAX_SECRET) {
		explicit_bzero(buf, len);
		free(buf);
		errno = EFBIG;
		return NULL;
	}
	nl = memchr(buf, '\n', len);
	n = nl ? (size_t)(nl - buf) : len;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (memchr(buf, '\0', n)) {
		s = NULL;
		errno = EINVAL;
	} else if ((s = malloc(n + 1)) != NULL) {
		memcpy(s, buf, n);
		s[n] = '\0';
	}
	explicit_bzero(buf, len);
	free(buf);
	return s;
}

/* ---- the reference ------------------------------------------------------- */

static void print_bounds(FILE *out, const struct conf_key *r)
{
	char lo[32], hi[32];

	switch (r->type) {
	case CONF_UINT32:
	case CONF_SIZE:
	case CONF_DURATION:
		fmt_value(r->type, r->min, lo, sizeof lo);
		fmt_value(r->type, r->max, hi, sizeof hi);
		if (r->max)
			fprintf(out, "%s .. %s", lo, hi);
		else
			fprintf(out, ">= %s", lo);
		break;
	case CONF_STRING:
	case CONF_PATH:
		if (r->max)
			fprintf(out, "%" PRIu64 " .. %" PRIu64 " bytes",
				r->min ? r->min : (r->type == CONF_PATH || !(r->flags & CONF_EMPTY_OK)),
				r->max);
		else if (r->type == CONF_PATH)
			fprintf(out, "1 .. %d bytes", PATH_LEN);
		break;
	case CONF_ENUM:
		for (size_t i = 0; r->values && r->values[i]; i++)
			fprintf(out, "%s`%s`", i ? ", " : "", r->values[i]);
		break;
	case CONF_LIST:
	case CONF_MAP:
	case CONF_STRLIST:
		if (r->max)
			fprintf(out, "%" PRIu64 " .. %" PRIu64 " entries", r->min, r->max);
		else if (r->min)
			fprintf(out, ">= %" PRIu64 " entries", r->min);
		break;
	default:
		break;
	}
}

/* Where the child table of a container row is printed. */
static void child_heading(char *buf, size_t len, const char *prefix, const struct conf_key *r)
{
	const char *sep = prefix && *prefix ? "." : "";

	if (!prefix)
		prefix = "";
	if (r->type == CONF_LIST)
		snprintf(buf, len, "%s%s%s[]", prefix, sep, r->name);
	else if (r->type == CONF_MAP)
		snprintf(buf, len, "%s%s%s.<name>", prefix, sep, r->name);
	else
		snprintf(buf, len, "%s%s%s", prefix, sep, r->name);
}

static void print_rows(FILE *out, const char *prefix, const struct conf_key *t)
{
	fprintf(out, "| Key | Type | Default | Bounds | Description |\n");
	fprintf(out, "|---|---|---|---|---|\n");
	for (const struct conf_key *r = t; r->name; r++) {
		char where[256];

		fprintf(out, "| `%s` | %s | ", r->name, type_name(r->type));
		if (r->flags & CONF_REQUIRED)
			fprintf(out, "required");
		else if (r->def)
			fprintf(out, "`%s`", r->def);
		else if (r->type == CONF_LIST || r->type == CONF_MAP || r->type == CONF_STRLIST)
			fprintf(out, "empty");
		else if (r->type != CONF_SECTION)
			fprintf(out, "none");
		fprintf(out, " | ");
		print_bounds(out, r);
		fprintf(out, " | %s", r->desc ? r->desc : "");
		if (r->child) {
			child_heading(where, sizeof where, prefix, r);
			fprintf(out, " See `%s`.", where);
		}
		fprintf(out, " |\n");
	}
}

static void print_children(FILE *out, const char *prefix, const struct conf_key *t)
{
	for (const struct conf_key *r = t; r->name; r++) {
		char where[256];

		if (!r->child)
			continue;
		child_heading(where, sizeof where, prefix, r);
		fprintf(out, "\n## `%s`\n\n", where);
		if (r->desc)
			fprintf(out, "%s\n\n", r->desc);
		print_rows(out, where, r->child);
		print_children(out, where, r->child);
	}
}

static void print_table(FILE *out, const char *prefix, const struct conf_key *t)
{
	bool scalars = false;

	for (const struct conf_key *r = t; r->name; r++)
		scalars |= r->child == NULL;
	/* A top-level table of sections only needs no table of its own. */
	if (prefix && *prefix)
		fprintf(out, "\n## `%s`\n\n", prefix);
	else if (scalars)
		fprintf(out, "\n## Top level\n\n");
	if ((prefix && *prefix) || scalars)
		print_rows(out, prefix, t);
	print_children(out, prefix, t);
}

void cg_config_print_reference(FILE *out)
{
	fprintf(out,
		"# crashgate configuration reference\n\n"
		"Generated from the key tables in `gateway/config.c`; `crashgatectl check-config` "
		"validates a file against the same tables.\n\n"
		"- Unknown keys, duplicate keys and YAML aliases are errors; every error names "
		"`file:line:column` and the key.\n"
		"- **size**: whole bytes (`65536`) or a whole number with `B`, `KiB`, `MiB`, `GiB` or "
		"`TiB` (powers of 1024; case matters). Decimal `KB`/`MB`/`GB` and fractions are "
		"rejected.\n"
		"- **duration**: a whole number with `ms`, `s`, `m`, `h` or `d`, several allowed "
		"largest first (`1h30m`). A bare number is rejected.\n"
		"- **boolean**: `true`/`false` (also `yes`/`no`, `on`/`off`).\n"
		"- **null** (`~`, `null` or nothing) is accepted for a section (empty), a list or "
		"map (no entries) and an optional string without a default (unset).\n");
	print_table(out, NULL, config_keys);
}
