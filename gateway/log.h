/*
 * One line per event on stderr: "2026-11-22T10:00:00.123Z info store: opened …"
 * or, with CG_LOG_JSON, one JSON object per line. Messages never carry
 * secrets or dump bytes: callers log sizes, ids and causes only.
 */
#ifndef CG_LOG_H
#define CG_LOG_H

enum cg_log_level { CG_LOG_DEBUG, CG_LOG_INFO, CG_LOG_WARN, CG_LOG_ERROR };
enum cg_log_format { CG_LOG_TEXT, CG_LOG_JSON };

void cg_log_setup(enum cg_log_level min, enum cg_log_format fmt);
int cg_log_parse_level(const char *s, enum cg_log_level *out);
void cg_log(enum cg_log_level lvl, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(mod, ...) cg_log(CG_LOG_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...)  cg_log(CG_LOG_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...)  cg_log(CG_LOG_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) cg_log(CG_LOG_ERROR, mod, __VA_ARGS__)

#endif
