/*
 * crashgate — the one error enum shared by the wire library, the gateway and
 * plugins. 0 is success; every other value names a cause an operator or a
 * device can act on. cg_strerror() never returns NULL.
 */
#ifndef CRASHGATE_ERROR_H
#define CRASHGATE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum cg_err {
	CG_OK = 0,
	CG_ERR_NOMEM,        /* an allocation failed */
	CG_ERR_MALFORMED,    /* not well-formed CBOR, or not the expected shape */
	CG_ERR_TYPE,         /* a known key carries a value of the wrong type */
	CG_ERR_MISSING,      /* a required key is absent */
	CG_ERR_RANGE,        /* a value is outside its allowed range */
	CG_ERR_TOO_LARGE,    /* a size limit was exceeded */
	CG_ERR_DEPTH,        /* nesting deeper than the decoder allows */
	CG_ERR_BUFFER,       /* the caller's output buffer is too small */
	CG_ERR_IO,           /* an operating-system call failed */
	CG_ERR_STORE,        /* the RocksDB store reported an error */
	CG_ERR_CONFIG,       /* the configuration is invalid */
	CG_ERR_NOT_FOUND,    /* no such object */
	CG_ERR_CONFLICT,     /* the input contradicts what is already held */
	CG_ERR_MQTT,         /* the MQTT client library reported an error */
	CG_ERR__COUNT
};

/* A static, human-readable description of err. */
const char *cg_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
