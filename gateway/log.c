#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Process-wide logging settings: set once at start, read by every thread. */
static enum cg_log_level log_min = CG_LOG_INFO;
static enum cg_log_format log_fmt = CG_LOG_TEXT;
static const char *const level_names[] = { "debug", "info", "warn", "error" };

void cg_log_setup(enum cg_log_level min, enum cg_log_format fmt)
{
	log_min = min;
	log_fmt = fmt;
}

int cg_log_parse_level(const char *s, enum cg_log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum cg_log_level)i;
			return 0;
		}
	}
	return -1;
}

void cg_log(enum cg_log_level lvl, const char *module, const char *fmt, ...)
{
	if (lvl < log_min)
		return;
	char raw[1024], msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof raw, fmt, ap);
	va_end(ap);
	/* One line per event whatever a device put in a name or a reason:
	 * control and non-ASCII bytes become \xNN (this also keeps every JSON
	 * line valid UTF-8), and so does a backslash, so that no text can pass
	 * itself off as an escape. */
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)raw; *p && o + 5 < sizeof msg; p++) {
		if (*p < 0x20 || *p >= 0x7f || *p == '\\')
			o += (size_t)snprintf(msg + o, sizeof msg - o, "\\x%02x", *p);
		else
			msg[o++] = (char)*p;
	}
	msg[o] = '\0';

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[40];
	size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);

	if (log_fmt == CG_LOG_JSON) {
		json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "time", when, "level",
				      level_names[lvl], "module", module, "msg", msg);
		char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
		if (line)
			fprintf(stderr, "%s\n", line);
		free(line);
		json_decref(o);
	} else {
		/* One fprintf per line so that lines from threads do not interleave. */
		fprintf(stderr, "%s %-5s %s: %s\n", when, level_names[lvl], module, msg);
	}
}
