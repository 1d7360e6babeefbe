/*
 * The `file` output plugin: one file per batch in a directory, for
 * air-gapped sites and tests. Each file is the batch's CBOR document
 * (plugins/README.md), written atomically: a temporary file in the same
 * directory, fsync, rename, fsync of the directory. A retried batch has the
 * same batch_id and so the same name: writing it again replaces it, never
 * duplicates it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crashgate/plugin.h"

struct file_options {
	char *path;
	bool fsync;
};

struct file_state {
	const struct cg_plugin_host *host;
	struct file_options opt;
};

static const struct cg_plugin_option file_options[] = {
	{ .name = "path", .type = CG_OPT_PATH, .flags = CG_OPT_REQUIRED,
	  .offset = offsetof(struct file_options, path),
	  .desc = "Directory that receives one file per batch (created if missing, mode 0700)." },
	{ .name = "fsync", .type = CG_OPT_BOOL, .offset = offsetof(struct file_options, fsync),
	  .def = "true", .desc = "Sync each file and the directory before the batch counts as delivered." },
	{ 0 }
};

static int file_init(const struct cg_plugin_host *host, const void *options, void **state,
		     char *err, size_t errlen)
{
	const struct file_options *o = options;
	if (mkdir(o->path, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", o->path, strerror(errno));
		return -1;
	}
	struct file_state *st = calloc(1, sizeof *st);
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	st->host = host;
	st->opt = *o;
	*state = st;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void fail(struct cg_flush_result *r, const char *what, const char *path)
{
	/* A full or failing disk may recover: retry, never drop. */
	r->status = CG_FLUSH_RETRY;
	snprintf(r->reason, sizeof r->reason, "%s %.160s: %s", what, path, strerror(errno));
}

static void file_flush(void *state, const struct cg_plugin_batch *batch, struct cg_flush_result *r)
{
	struct file_state *st = state;
	uint8_t *buf = NULL;
	size_t len = 0;
	char tmp[4096], final[4096];

	if (st->host->batch_cbor(st->host, batch, &buf, &len) != 0) {
		r->status = CG_FLUSH_RETRY;
		snprintf(r->reason, sizeof r->reason, "cannot encode the batch");
		return;
	}
	snprintf(final, sizeof final, "%s/batch-%020" PRIu64 ".cbor", st->opt.path, batch->batch_id);
	snprintf(tmp, sizeof tmp, "%s/.batch-%020" PRIu64 ".tmp", st->opt.path, batch->batch_id);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		fail(r, "open", tmp);
		free(buf);
		return;
	}
	int bad = write_all(fd, buf, len) != 0 || (st->opt.fsync && fsync(fd) != 0);
	int e = errno;
	free(buf);
	if (close(fd) != 0 && !bad) {
		bad = 1;
		e = errno;
	}
	if (bad) {
		errno = e;
		fail(r, "write", tmp);
		unlink(tmp);
		return;
	}
	if (rename(tmp, final) != 0) {
		fail(r, "rename", final);
		unlink(tmp);
		return;
	}
	if (st->opt.fsync) {   /* the rename itself must survive a power cut */
		int dfd = open(st->opt.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) != 0) {
			fail(r, "fsync", st->opt.path);
			if (dfd >= 0)
				close(dfd);
			return;
		}
		close(dfd);
	}
	r->status = CG_FLUSH_OK;
	snprintf(r->reason, sizeof r->reason, "wrote %.160s (%zu bytes, %zu records)", final, len, batch->n);
}

static void file_destroy(void *state)
{
	free(state);
}

CG_PLUGIN_EXPORT const struct cg_plugin crashgate_output_plugin = {
	.abi_version = CG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct cg_plugin),
	.kind = "file",
	.description = "One file per batch in a directory (atomic: temp file, fsync, rename).",
	.options = file_options,
	.options_size = sizeof(struct file_options),
	.init = file_init,
	.flush = file_flush,
	.destroy = file_destroy,
};
