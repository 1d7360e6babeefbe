/*
 * Crash signatures (SPEC §7): the same crash gives the same signature across
 * devices, address-space layouts, re-uploads and chunk sizes.
 *
 * SHA-256 over a normalised tuple, as text fields separated by '\n':
 *   format, build id (hex), reason code, PC location, LR location
 * where a location is "module+0xOFFSET" when the module is known, otherwise
 * the address with its low 12 bits kept and the rest masked (page-relative,
 * so that ASLR moving whole pages does not change it), and "-" when absent.
 * Zephyr firmware runs at fixed addresses, so its PC and LR are used whole.
 * Raw dumps (or dumps nothing could be read from) use a hash of the content.
 * The signature is the first 16 hex digits.
 */
#ifndef CG_SIGNATURE_H
#define CG_SIGNATURE_H

#include <stddef.h>
#include <stdint.h>

#include "decode.h"

#define CG_SIGNATURE_LEN 16

/* Write the 16-hex-digit signature and a NUL into out[17]. */
void cg_crash_signature(const struct cg_crash *c, const uint8_t *dump, size_t len, char out[CG_SIGNATURE_LEN + 1]);

#endif
