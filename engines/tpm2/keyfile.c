/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TSS2 PRIVATE KEY files: the PEM ("-----BEGIN TSS2 PRIVATE KEY-----") or
 * DER encoding of the TSSPrivKey ASN.1 structure that tpm2-openssl and
 * tpm2-tss-engine read and write:
 *
 *   TPMKey ::= SEQUENCE {
 *       type       OBJECT IDENTIFIER,      -- 2.23.133.10.1.3 loadable key
 *       emptyAuth  [0] EXPLICIT BOOLEAN OPTIONAL,
 *       parent     INTEGER,                -- 0x40000001 or a persistent handle
 *       pubkey     OCTET STRING,           -- marshalled TPM2B_PUBLIC
 *       privkey    OCTET STRING            -- marshalled TPM2B_PRIVATE
 *   }
 *
 * Only this codec: no TPM, no library context, so that it can be fuzzed on
 * its own (tests/fuzz/fuzz_tpm2_keyfile.c).
 */
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include <tss2/tss2_mu.h>

#include "tpm2_keyfile.h"

typedef struct {
    ASN1_OBJECT *type;
    ASN1_BOOLEAN emptyAuth;
    ASN1_INTEGER *parent;
    ASN1_OCTET_STRING *pubkey;
    ASN1_OCTET_STRING *privkey;
} TSS2KEY;

/* clang-format off */
ASN1_SEQUENCE(TSS2KEY) = {
    ASN1_SIMPLE(TSS2KEY, type, ASN1_OBJECT),
    ASN1_EXP_OPT(TSS2KEY, emptyAuth, ASN1_BOOLEAN, 0),
    ASN1_SIMPLE(TSS2KEY, parent, ASN1_INTEGER),
    ASN1_SIMPLE(TSS2KEY, pubkey, ASN1_OCTET_STRING),
    ASN1_SIMPLE(TSS2KEY, privkey, ASN1_OCTET_STRING),
} static_ASN1_SEQUENCE_END(TSS2KEY)

/* File-local: no symbol of this codec leaves the library. */
IMPLEMENT_STATIC_ASN1_ALLOC_FUNCTIONS(TSS2KEY)
IMPLEMENT_STATIC_ASN1_ENCODE_FUNCTIONS(TSS2KEY)

#define OID_LOADABLE "2.23.133.10.1.3"
#define PEM_NAME "TSS2 PRIVATE KEY"

bool estc__tpm2_keyfile_parent_ok(uint32_t parent)
{
    return parent == TPM2_RH_OWNER || (parent >= 0x81000000u && parent <= 0x81FFFFFFu);
}
/* clang-format on */

/* The DER of a PEM text of type PEM_NAME; NULL with the reason in *@why. */
static uint8_t *pem_to_der(const uint8_t *data, size_t len, long *der_len, const char **why)
{
    if (len > 0x7FFFFFFF) {
        *why = "file too large";
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL) {
        *why = "out of memory";
        return NULL;
    }
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    uint8_t *out = NULL;
    if (PEM_read_bio(bio, &name, &header, &der, der_len) != 1)
        *why = "not a PEM file";
    else if (strcmp(name, PEM_NAME) != 0)
        *why = "not a TSS2 PRIVATE KEY (another PEM type)";
    else if (header != NULL && header[0] != '\0')
        *why = "PEM headers (an encrypted file?) are not supported";
    else {
        out = der;
        der = NULL;
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(bio);
    return out;
}

const char *estc__tpm2_keyfile_parse(const uint8_t *data, size_t len, struct tpm2_keyfile *kf)
{
    memset(kf, 0, sizeof(*kf));
    if (data == NULL || len == 0)
        return "empty file";
    const char *why = NULL;
    uint8_t *pem_der = NULL;
    const uint8_t *der = data;
    long der_len = (long)len;
    if (data[0] != 0x30) {
        pem_der = pem_to_der(data, len, &der_len, &why);
        if (pem_der == NULL)
            return why;
        der = pem_der;
    } else if (len > 0x7FFFFFFF) {
        return "file too large";
    }
    const uint8_t *p = der;
    TSS2KEY *k = d2i_TSS2KEY(NULL, &p, der_len);
    char oid[64] = "";
    uint64_t parent = 0;
    size_t off = 0;
    if (k == NULL)
        why = "malformed TSSPrivKey ASN.1 (or fields this reader does not support)";
    else if (p != der + der_len)
        why = "trailing bytes after the TSSPrivKey structure";
    else if (OBJ_obj2txt(oid, sizeof(oid), k->type, 1) <= 0 || strcmp(oid, OID_LOADABLE) != 0)
        why = "not a loadable key (type OID is not 2.23.133.10.1.3)";
    else if (!ASN1_INTEGER_get_uint64(&parent, k->parent) || parent > 0xFFFFFFFFu)
        why = "parent is not a TPM handle";
    else {
        /* tpm2-openssl reads 0 as the owner hierarchy too. */
        kf->parent = parent == 0 ? TPM2_RH_OWNER : (uint32_t)parent;
        kf->empty_auth = k->emptyAuth > 0;
        if (!estc__tpm2_keyfile_parent_ok(kf->parent))
            why = "unsupported parent (only 0x40000001, the owner hierarchy, or a persistent "
                  "handle 0x81......)";
        else if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(k->pubkey->data, (size_t)k->pubkey->length, &off,
                                                &kf->pub) != TSS2_RC_SUCCESS ||
                 off != (size_t)k->pubkey->length || (size_t)kf->pub.size + 2 != off)
            why = "malformed public part (TPM2B_PUBLIC)";
        else if ((off = 0,
                  Tss2_MU_TPM2B_PRIVATE_Unmarshal(k->privkey->data, (size_t)k->privkey->length,
                                                  &off, &kf->priv)) != TSS2_RC_SUCCESS ||
                 off != (size_t)k->privkey->length)
            why = "malformed private part (TPM2B_PRIVATE)";
    }
    TSS2KEY_free(k);
    if (pem_der != NULL) {
        OPENSSL_cleanse(pem_der, (size_t)der_len);
        OPENSSL_free(pem_der);
    }
    if (why != NULL)
        memset(kf, 0, sizeof(*kf));
    return why;
}

const char *estc__tpm2_keyfile_encode(const struct tpm2_keyfile *kf, char **pem, size_t *pem_len)
{
    *pem = NULL;
    *pem_len = 0;
    uint8_t pubbuf[sizeof(TPM2B_PUBLIC)];
    uint8_t privbuf[sizeof(TPM2B_PRIVATE)];
    size_t pub_len = 0, priv_len = 0;
    if (Tss2_MU_TPM2B_PUBLIC_Marshal(&kf->pub, pubbuf, sizeof(pubbuf), &pub_len) !=
            TSS2_RC_SUCCESS ||
        Tss2_MU_TPM2B_PRIVATE_Marshal(&kf->priv, privbuf, sizeof(privbuf), &priv_len) !=
            TSS2_RC_SUCCESS)
        return "cannot marshal the key";
    const char *why = "out of memory";
    TSS2KEY *k = TSS2KEY_new();
    BIO *bio = NULL;
    unsigned char *der = NULL;
    int der_len = 0;
    if (k == NULL)
        goto out;
    k->type = OBJ_txt2obj(OID_LOADABLE, 1);
    k->emptyAuth = kf->empty_auth ? 0xFF : -1; /* -1: absent (DER omits FALSE anyway) */
    if (k->type == NULL || !ASN1_INTEGER_set_uint64(k->parent, kf->parent) ||
        !ASN1_OCTET_STRING_set(k->pubkey, pubbuf, (int)pub_len) ||
        !ASN1_OCTET_STRING_set(k->privkey, privbuf, (int)priv_len))
        goto out;
    der_len = i2d_TSS2KEY(k, &der);
    if (der_len <= 0)
        goto out;
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio(bio, PEM_NAME, "", der, der_len) <= 0)
        goto out;
    char *text = NULL;
    long n = BIO_get_mem_data(bio, &text);
    if (n <= 0)
        goto out;
    *pem = OPENSSL_malloc((size_t)n);
    if (*pem == NULL)
        goto out;
    memcpy(*pem, text, (size_t)n);
    *pem_len = (size_t)n;
    why = NULL;
out:
    OPENSSL_cleanse(privbuf, sizeof(privbuf));
    if (der != NULL) {
        OPENSSL_cleanse(der, (size_t)der_len);
        OPENSSL_free(der);
    }
    BIO_free(bio);
    TSS2KEY_free(k);
    return why;
}
