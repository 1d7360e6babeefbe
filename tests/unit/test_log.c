/*
 * Logging: one line per event whatever the message holds (a device's name
 * or reason may carry newlines or bytes that are not UTF-8), levels filter,
 * and every JSON line parses with the four fields.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Run fn with stderr going to a temp file; return what was written. */
static char *capture(void (*fn)(void))
{
	char path[] = "/tmp/cg-test-log.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stderr);
	int saved = dup(2);
	dup2(fd, 2);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	off_t n = lseek(fd, 0, SEEK_END);
	char *out = calloc(1, (size_t)n + 1);
	assert_int_equal(pread(fd, out, (size_t)n, 0), n);
	close(fd);
	unlink(path);
	return out;
}

static void hostile(void)
{
	log_info("reasm", "module %s", "evil\nline2\r\x1b[31m\xff\xfe\\x0a");
	log_debug("reasm", "not shown at info");
	log_warn("forward", "second event");
}

static size_t lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_text_one_line_per_event(void **state)
{
	(void)state;
	cg_log_setup(CG_LOG_INFO, CG_LOG_TEXT);
	char *out = capture(hostile);
	assert_int_equal(lines(out), 2);
	assert_non_null(strstr(out, "info  reasm: module evil\\x0aline2\\x0d\\x1b[31m\\xff\\xfe\\x5cx0a\n"));
	assert_null(strstr(out, "not shown"));
	assert_non_null(strstr(out, "warn  forward: second event\n"));
	free(out);
}

static void test_json_lines_parse(void **state)
{
	(void)state;
	cg_log_setup(CG_LOG_INFO, CG_LOG_JSON);
	char *out = capture(hostile);
	assert_int_equal(lines(out), 2);
	char *save = NULL;
	int n = 0;
	for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save), n++) {
		json_error_t e;
		json_t *j = json_loads(l, 0, &e);
		assert_non_null(j);
		assert_string_equal(json_string_value(json_object_get(j, "level")), n ? "warn" : "info");
		assert_non_null(json_string_value(json_object_get(j, "time")));
		assert_string_equal(json_string_value(json_object_get(j, "module")), n ? "forward" : "reasm");
		if (!n)
			assert_string_equal(json_string_value(json_object_get(j, "msg")),
					    "module evil\\x0aline2\\x0d\\x1b[31m\\xff\\xfe\\x5cx0a");
		json_decref(j);
	}
	assert_int_equal(n, 2);
	free(out);
}

static void debug_only(void)
{
	log_debug("main", "shown at debug");
}

static void test_levels(void **state)
{
	(void)state;
	enum cg_log_level l;
	assert_int_equal(cg_log_parse_level("debug", &l), 0);
	assert_int_equal(l, CG_LOG_DEBUG);
	assert_int_equal(cg_log_parse_level("loud", &l), -1);
	cg_log_setup(CG_LOG_DEBUG, CG_LOG_TEXT);
	char *out = capture(debug_only);
	assert_non_null(strstr(out, "debug main: shown at debug"));
	free(out);
	cg_log_setup(CG_LOG_ERROR, CG_LOG_TEXT);
	out = capture(debug_only);
	assert_string_equal(out, "");
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_one_line_per_event),
		cmocka_unit_test(test_json_lines_parse),
		cmocka_unit_test(test_levels),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
