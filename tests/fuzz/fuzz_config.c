/*
 * Fuzz the configuration loader (YAML → key tables → cross-key checks) and
 * the plugin-option walker: any input either loads or fails with one
 * message of the form "name:LINE:COL: key: why" — never a crash, a leak or
 * an unterminated message. A loaded configuration's policy lookups must work.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "crashgate/plugin.h"

struct opts {
	char *url;
	bool flag;
	uint32_t n;
	uint64_t size, delay;
	uint32_t mode;
};

static const char *const modes[] = { "a", "b", NULL };

static const struct cg_plugin_option table[] = {
	{ .name = "url", .type = CG_OPT_STRING, .flags = CG_OPT_REQUIRED, .offset = offsetof(struct opts, url), .max = 64 },
	{ .name = "flag", .type = CG_OPT_BOOL, .offset = offsetof(struct opts, flag), .def = "false" },
	{ .name = "n", .type = CG_OPT_UINT32, .offset = offsetof(struct opts, n), .def = "3", .max = 100 },
	{ .name = "size", .type = CG_OPT_SIZE, .offset = offsetof(struct opts, size), .def = "1KiB" },
	{ .name = "delay", .type = CG_OPT_DURATION, .offset = offsetof(struct opts, delay), .def = "1s" },
	{ .name = "mode", .type = CG_OPT_ENUM, .offset = offsetof(struct opts, mode), .def = "a", .values = modes },
	{ 0 }
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cg_config *cfg = NULL;
	char err[256];
	memset(err, 'x', sizeof err);
	if (cg_config_load_string("f.yaml", (const char *)data, size, &cfg, err, sizeof err) != 0) {
		if (!memchr(err, '\0', sizeof err) || strncmp(err, "f.yaml", 6) != 0)
			abort();
		return 0;
	}
	(void)cg_config_group_for(cfg, "dev-1");
	for (size_t i = 0; i < cfg->n_groups; i++)
		(void)cg_config_group_region(cfg, &cfg->groups[i]);
	for (size_t i = 0; i < cfg->n_regions; i++) {
		for (size_t j = 0; j < cfg->regions[i].n_upstreams; j++) {
			struct opts o = { 0 };
			if (cg_config_apply_options(cfg, &cfg->regions[i].upstreams[j], "fuzz", table, &o, err,
						    sizeof err) != 0 && !memchr(err, '\0', sizeof err))
				abort();
			cg_config_free_options(table, &o);
		}
	}
	cg_config_free(cfg);
	return 0;
}
