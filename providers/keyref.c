/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PEM key reference: a PEM block "ESTC KEY REFERENCE" whose body is an
 * engine address. Written for code that loads keys only from PEM files.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <estc/provider.h>

#include "internal.h"

static bool valid_addr(const char *addr)
{
    char scheme[ESTC_SCHEME_MAX + 1];

    return estc_address_scheme(addr, scheme) == ESTC_OK && strlen(addr) <= ESTC_ADDRESS_MAX;
}

estc_err estc_keyref_pem(const char *addr, estc_buf *pem)
{
    BIO *mem;
    char *data;
    long len;
    estc_err err = ESTC_OK;

    if (addr == NULL || pem == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (!valid_addr(addr))
        return ESTC_ERR_BAD_ADDRESS;
    mem = BIO_new(BIO_s_mem());
    if (mem == NULL)
        return ESTC_ERR_NOMEM;
    if (PEM_write_bio(mem, ESTC_KEYREF_PEM_LABEL, "", (const unsigned char *)addr,
                      (long)strlen(addr)) <= 0) {
        err = ESTC_ERR_NOMEM;
    } else {
        len = BIO_get_mem_data(mem, &data);
        err = estc_buf_set(pem, data, (size_t)len);
    }
    BIO_free(mem);
    return err;
}

estc_err estc_keyref_write(estc_ctx *ctx, const char *path, const char *addr)
{
    estc_buf pem = {0};
    estc_err err;

    if (path == NULL || addr == NULL || path[0] == '\0')
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "estc_keyref_write: NULL or empty argument");
    err = estc_keyref_pem(addr, &pem);
    if (err == ESTC_ERR_BAD_ADDRESS)
        return estc_error(ctx, err, "key reference: not an engine address");
    if (err != ESTC_OK)
        return estc_error(ctx, err, "key reference: %s", estc_strerror(err));
    /* Mode 0600 from the start: the address may carry a PIN. */
    err = estc_file_write(ctx, path, pem.data, pem.len, 0600, ESTC_FILE_REPLACE);
    estc_buf_free(&pem);
    /* Whatever the system's reason (in the detail), the file was not written. */
    if (err != ESTC_OK && err != ESTC_ERR_NOMEM)
        err = ESTC_ERR_IO;
    return err;
}

estc_err estc_keyref_read(const uint8_t *pem, size_t len, char **addr)
{
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long dlen = 0;
    estc_err err = ESTC_ERR_FORMAT;
    BIO *in;

    if (pem == NULL || addr == NULL || len > INT32_MAX)
        return ESTC_ERR_INVALID_ARG;
    in = BIO_new_mem_buf(pem, (int)len);
    if (in == NULL)
        return ESTC_ERR_NOMEM;
    ERR_set_mark();
    /* Other PEM blocks (a certificate beside it) are skipped. */
    while (PEM_read_bio(in, &name, &header, &data, &dlen) > 0) {
        bool ours = strcmp(name, ESTC_KEYREF_PEM_LABEL) == 0;

        if (ours && estc__valid_address((const char *)data, (size_t)dlen)) {
            *addr = strndup((const char *)data, (size_t)dlen);
            err = *addr != NULL ? ESTC_OK : ESTC_ERR_NOMEM;
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_clear_free(data, (size_t)dlen);
        name = header = NULL;
        data = NULL;
        if (ours)
            break;
    }
    ERR_pop_to_mark();
    BIO_free(in);
    return err;
}
