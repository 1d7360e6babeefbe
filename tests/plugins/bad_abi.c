/* A plugin built for another ABI version: the loader must refuse it. */
#include "crashgate/plugin.h"

static void nop_flush(void *s, const struct cg_plugin_batch *b, struct cg_flush_result *r)
{
	(void)s, (void)b;
	r->status = CG_FLUSH_OK;
}

static void nop_destroy(void *s)
{
	(void)s;
}

static int nop_init(const struct cg_plugin_host *h, const void *o, void **s, char *e, size_t n)
{
	(void)h, (void)o, (void)e, (void)n;
	*s = (void *)1;
	return 0;
}

CG_PLUGIN_EXPORT const struct cg_plugin crashgate_output_plugin = {
	.abi_version = CG_PLUGIN_ABI_VERSION + 1,
	.struct_size = sizeof(struct cg_plugin),
	.kind = "badabi",
	.init = nop_init,
	.flush = nop_flush,
	.destroy = nop_destroy,
};
