/*
 * Loads of fixed-width integers from untrusted byte buffers, in a stated
 * byte order, without alignment requirements. The caller has checked that
 * n bytes are there. Shared by the decoders.
 */
#ifndef CG_BYTES_H
#define CG_BYTES_H

#include <stdint.h>

static inline uint64_t cg_load_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = n; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

static inline uint64_t cg_load_be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

#endif
