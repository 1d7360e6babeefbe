#include "signature.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

static void location(char *out, size_t cap, bool have, uint64_t addr, const char *module,
		     bool have_off, uint64_t off)
{
	if (!have)
		snprintf(out, cap, "-");
	else if (module && module[0] && have_off)
		snprintf(out, cap, "%s+0x%" PRIx64, module, off);
	else
		snprintf(out, cap, "?+0x%03" PRIx64, addr & 0xfff);
}

static void hex16(const uint8_t *digest, char out[CG_SIGNATURE_LEN + 1])
{
	for (int i = 0; i < CG_SIGNATURE_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

void cg_crash_signature(const struct cg_crash *c, const uint8_t *dump, size_t len, char out[CG_SIGNATURE_LEN + 1])
{
	uint8_t digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	bool decoded = c && c->format != CG_FORMAT_RAW && (c->present & CG_CRASH_HAS_PC);
	if (!decoded) {
		EVP_Digest(dump, len, digest, &dlen, EVP_sha256(), NULL);
		hex16(digest, out);
		return;
	}
	char bid[2 * CG_PROTO_MAX_BUILD_ID + 1] = "";
	for (size_t i = 0; i < c->build_id_len && i < CG_PROTO_MAX_BUILD_ID; i++)
		snprintf(bid + 2 * i, 3, "%02x", c->build_id[i]);
	char pc[200], lr[200];
	bool has_lr = (c->present & CG_CRASH_HAS_LR) != 0;
	if (c->format == CG_FORMAT_ZEPHYR) {
		/* Firmware runs at fixed addresses: the full address is stable. */
		snprintf(pc, sizeof pc, "0x%" PRIx64, c->pc);
		if (has_lr)
			snprintf(lr, sizeof lr, "0x%" PRIx64, c->lr);
		else
			snprintf(lr, sizeof lr, "-");
	} else {
		location(pc, sizeof pc, true, c->pc, c->module,
			 (c->present & CG_CRASH_HAS_MODULE_OFFSET) != 0, c->module_offset);
		/* The return address has no module of its own here: page-relative. */
		location(lr, sizeof lr, has_lr, c->lr, NULL, false, 0);
	}
	char tuple[640];
	int n = snprintf(tuple, sizeof tuple, "%u\n%s\n%" PRIu64 "\n%s\n%s", c->format, bid,
			 (c->present & CG_CRASH_HAS_REASON_CODE) ? c->reason_code : 0, pc, lr);
	EVP_Digest(tuple, (size_t)(n < 0 ? 0 : n), digest, &dlen, EVP_sha256(), NULL);
	hex16(digest, out);
}
