/*
 * Library-internal access to mem: keys, for the persisted client state: a
 * mem: key lives only in process memory, so the state carries it.
 */
#ifndef ESTC_ENGINES_SOFTWARE_MEM_INTERNAL_H
#define ESTC_ENGINES_SOFTWARE_MEM_INTERNAL_H

#include <estc/engine.h>

/* The private key at the mem: address @addr as PKCS#8 DER into @pkcs8
 * (wipe it with estc_buf_free()). ESTC_ERR_UNSUPPORTED when @addr is not
 * handled by the built-in mem: driver, ESTC_ERR_NOT_FOUND without a key. */
estc_err estc__mem_export(estc_ctx *ctx, const char *addr, estc_buf *pkcs8);

/* Re-creates a key exported by estc__mem_export() at @addr (the same
 * checks as a key import: ESTC_ERR_EXISTS, ESTC_ERR_FORMAT...). */
estc_err estc__mem_import(estc_ctx *ctx, const char *addr, const uint8_t *pkcs8, size_t len);

#endif
