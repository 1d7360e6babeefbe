/*
 * cg_mkzephyr: write a well-formed Zephyr core dump (header v2, Cortex-M
 * register block, memory blocks) for tests and demos, so that identical or
 * distinct crashes can be made on any machine without fixtures.
 *
 * usage: cg_mkzephyr OUT [--pc HEX] [--lr HEX] [--reason N] [--size BYTES] [--fill N]
 *   --size  total size (at least 200 bytes; default 4096): memory blocks pad it
 *   --fill  byte pattern seed of the memory: same seed, same bytes
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *buf;
static size_t n, cap;

static void put(uint64_t v, unsigned width)
{
	for (unsigned i = 0; i < width; i++)
		buf[n++] = (uint8_t)(v >> (8 * i));
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pc", required_argument, NULL, 'p' }, { "lr", required_argument, NULL, 'l' },
		{ "reason", required_argument, NULL, 'r' }, { "size", required_argument, NULL, 's' },
		{ "fill", required_argument, NULL, 'f' }, { NULL, 0, NULL, 0 },
	};
	uint32_t pc = 0x0800123c, lr = 0x08000f11, reason = 0;
	unsigned long size = 4096, fill = 0;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'p': pc = (uint32_t)strtoul(optarg, NULL, 16); break;
		case 'l': lr = (uint32_t)strtoul(optarg, NULL, 16); break;
		case 'r': reason = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 's': size = strtoul(optarg, NULL, 0); break;
		case 'f': fill = strtoul(optarg, NULL, 0); break;
		default: return 2;
		}
	}
	if (optind != argc - 1 || size < 200 || size > (64ul << 20)) {
		fprintf(stderr, "usage: cg_mkzephyr OUT [--pc HEX] [--lr HEX] [--reason N] "
			"[--size 200..64MiB] [--fill N]\n");
		return 2;
	}
	cap = size;
	buf = calloc(1, cap);
	if (!buf)
		return 1;
	/* Header: magic, version 2, target 3 (Cortex-M), 32-bit pointers (2^5), flags, reason. */
	put('Z', 1), put('E', 1), put(2, 2), put(3, 2), put(5, 1), put(0, 1), put(reason, 4);
	/* Register block v1: r0-r3 r12 lr pc xpsr sp. */
	put('A', 1), put(1, 2), put(36, 2);
	uint32_t regs[9] = { 1, 2, 3, 4, 12, lr, pc, 0x61000000, 0x20001f80 };
	for (int i = 0; i < 9; i++)
		put(regs[i], 4);
	/* Memory blocks of at most 4 KiB until the size is reached. */
	uint32_t addr = 0x20000000;
	uint64_t x = fill * 2654435761u + 1;
	while (n + 11 < size) {
		size_t room = size - n - 11, len = room > 4096 ? 4096 : room;
		put('M', 1), put(1, 2), put(addr, 4), put(addr + (uint32_t)len, 4);
		for (size_t i = 0; i < len; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			buf[n++] = (uint8_t)(x >> 56);
		}
		addr += (uint32_t)len;
	}
	while (n < size)   /* fewer than 12 bytes left: a trailing pad the decoder reports */
		buf[n++] = 0;
	FILE *f = fopen(argv[optind], "wb");
	if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0) {
		perror(argv[optind]);
		return 1;
	}
	free(buf);
	return 0;
}
