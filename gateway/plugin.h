/*
 * Loading output plugins (include/crashgate/plugin.h) by kind from the
 * plugin directory, checking their ABI, and validating each upstream's
 * options against the plugin's own table.
 */
#ifndef CG_GATEWAY_PLUGIN_H
#define CG_GATEWAY_PLUGIN_H

#include <stddef.h>

#include "config.h"
#include "crashgate/plugin.h"

/* A plugin bound to one upstream: the shared object and the upstream's
 * parsed options. */
struct cg_output {
	void *dl;                        /* dlopen handle */
	const struct cg_plugin *plugin;
	void *options;                   /* plugin->options_size bytes, core-owned */
	const struct cg_upstream_config *upstream;
};

/*
 * Load crashgate_out_<u->kind>.so from dir, check its ABI version and size,
 * and parse u's options. On failure returns -1 with a message naming the
 * file (and for options, file:line:col and key) in err. Release with
 * cg_output_close (safe on a zeroed struct).
 */
int cg_output_open(struct cg_output *out, const struct cg_config *cfg,
		   const struct cg_upstream_config *u, const char *dir, char *err, size_t errlen);
void cg_output_close(struct cg_output *out);

/* Open and close every upstream's plugin: the check of `check-config` and
 * of the daemon's start. */
int cg_outputs_check(const struct cg_config *cfg, char *err, size_t errlen);

#endif
