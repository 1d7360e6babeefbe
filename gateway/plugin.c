#include "plugin.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fields this gateway calls: a plugin struct shorter than that was
 * built for an ABI we cannot use. */
#define CG_PLUGIN_MIN_SIZE (offsetof(struct cg_plugin, destroy) + sizeof(void (*)(void *)))

int cg_output_open(struct cg_output *out, const struct cg_config *cfg,
		   const struct cg_upstream_config *u, const char *dir, char *err, size_t errlen)
{
	char path[4096];
	memset(out, 0, sizeof *out);
	out->upstream = u;
	snprintf(path, sizeof path, "%s/crashgate_out_%s.so", dir, u->kind);
	out->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!out->dl) {
		snprintf(err, errlen, "upstream %s: cannot load the %s plugin: %s", u->name, u->kind,
			 dlerror());
		return -1;
	}
	const struct cg_plugin *p = dlsym(out->dl, CG_PLUGIN_SYMBOL);
	const char *why = NULL;
	char buf[160];
	if (!p)
		why = "it exports no " CG_PLUGIN_SYMBOL;
	else if (p->abi_version != CG_PLUGIN_ABI_VERSION) {
		snprintf(buf, sizeof buf, "it was built for plugin ABI version %u; this gateway speaks "
			 "version %u", p->abi_version, CG_PLUGIN_ABI_VERSION);
		why = buf;
	} else if (p->struct_size < CG_PLUGIN_MIN_SIZE) {
		snprintf(buf, sizeof buf, "its plugin struct has %u bytes, fewer than the %zu this "
			 "gateway needs", p->struct_size, CG_PLUGIN_MIN_SIZE);
		why = buf;
	} else if (!p->kind || strcmp(p->kind, u->kind) != 0)
		why = "it calls itself another kind";
	else if (!p->init || !p->flush || !p->destroy)
		why = "it lacks init, flush or destroy";
	else if (p->options_size > (1u << 20))
		why = "its options struct is implausibly large";
	if (why) {
		snprintf(err, errlen, "upstream %s: refusing %s: %s", u->name, path, why);
		cg_output_close(out);
		return -1;
	}
	out->plugin = p;
	out->options = calloc(1, p->options_size ? p->options_size : 1);
	if (!out->options) {
		snprintf(err, errlen, "out of memory");
		cg_output_close(out);
		return -1;
	}
	if (cg_config_apply_options(cfg, u, u->kind, p->options, out->options, err, errlen) != 0) {
		cg_output_close(out);
		return -1;
	}
	return 0;
}

void cg_output_close(struct cg_output *out)
{
	if (out->options && out->plugin)
		cg_config_free_options(out->plugin->options, out->options);
	free(out->options);
	if (out->dl)
		dlclose(out->dl);
	memset(out, 0, sizeof *out);
}

int cg_outputs_check(const struct cg_config *cfg, char *err, size_t errlen)
{
	const char *dir = cg_config_plugin_dir(cfg);
	for (size_t i = 0; i < cfg->n_regions; i++) {
		for (size_t j = 0; j < cfg->regions[i].n_upstreams; j++) {
			struct cg_output o;
			if (cg_output_open(&o, cfg, &cfg->regions[i].upstreams[j], dir, err, errlen) != 0)
				return -1;
			cg_output_close(&o);
		}
	}
	return 0;
}
