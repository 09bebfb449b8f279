/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writes a signed DER PKCS#10 CSR (fresh P-256 key) whose Subject and
 * subjectAltName hold exactly the given bytes, for the enrollment-policy
 * tests: `openssl req` cannot put an embedded NUL or invalid UTF-8 in a name.
 *
 *   csr-forge OUT.der ITEM...
 *
 *   subj:SN=TEXT            a Subject attribute, UTF8String TEXT
 *   subjhex:SN:TYPE:HEX     a Subject attribute of TYPE (utf8, printable, ia5,
 *                           bmp, t61) holding the bytes HEX
 *   dns:TEXT  dnshex:HEX  uri:TEXT  email:TEXT  ip:ADDR (IPv4 or IPv6)
 *                           one subjectAltName entry
 *   otherhex:OID:TYPE:HEX   an otherName whose value is a TYPE string of HEX
 *   dnsmany:N               N DNS names d1.example ... dN.example
 *   newsan                  start a second subjectAltName extension
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define MAX_SANS_EXT 4

/* Hex to bytes; returns the length or -1. */
static int unhex(const char *hex, unsigned char *out, size_t cap)
{
    size_t n = 0;
    return OPENSSL_hexstr2buf_ex(out, cap, &n, hex, '\0') == 1 ? (int)n : -1;
}

static int add_gen(GENERAL_NAMES *gens, int type, const unsigned char *data, int len)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();

    if (g == NULL || s == NULL || !ASN1_STRING_set(s, data, len)) {
        GENERAL_NAME_free(g);
        ASN1_IA5STRING_free(s);
        return -1;
    }
    if (type == GEN_IPADD)
        s->type = V_ASN1_OCTET_STRING;
    GENERAL_NAME_set0_value(g, type, s);
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return -1;
    }
    return 0;
}

static int string_type(const char *t)
{
    if (strcmp(t, "utf8") == 0)
        return V_ASN1_UTF8STRING;
    if (strcmp(t, "printable") == 0)
        return V_ASN1_PRINTABLESTRING;
    if (strcmp(t, "ia5") == 0)
        return V_ASN1_IA5STRING;
    if (strcmp(t, "bmp") == 0)
        return V_ASN1_BMPSTRING;
    if (strcmp(t, "t61") == 0)
        return V_ASN1_T61STRING;
    return -1;
}

/* "FIRST:TYPE:HEX": FIRST as a string, the string type, the bytes. */
static int typed_hex(const char *s, char *first, size_t cap, int *type, unsigned char *buf,
                     size_t buf_cap, int *n)
{
    const char *c1 = strchr(s, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char t[16];

    if (c2 == NULL || (size_t)(c1 - s) >= cap || (size_t)(c2 - c1 - 1) >= sizeof(t))
        return -1;
    memcpy(first, s, (size_t)(c1 - s));
    first[c1 - s] = '\0';
    memcpy(t, c1 + 1, (size_t)(c2 - c1 - 1));
    t[c2 - c1 - 1] = '\0';
    *type = string_type(t);
    *n = unhex(c2 + 1, buf, buf_cap);
    return *type < 0 || *n < 0 ? -1 : 0;
}

static int item(X509_NAME *name, GENERAL_NAMES *gens, const char *a)
{
    static unsigned char buf[4096];
    int n;

    if (strncmp(a, "subj:", 5) == 0) {
        const char *eq = strchr(a + 5, '=');
        char sn[64];
        if (eq == NULL || (size_t)(eq - a - 5) >= sizeof(sn))
            return -1;
        memcpy(sn, a + 5, (size_t)(eq - a - 5));
        sn[eq - a - 5] = '\0';
        return X509_NAME_add_entry_by_txt(name, sn, V_ASN1_UTF8STRING,
                                          (const unsigned char *)eq + 1, -1, -1, 0)
                   ? 0
                   : -1;
    }
    if (strncmp(a, "subjhex:", 8) == 0) {
        char sn[64];
        int t;
        if (typed_hex(a + 8, sn, sizeof(sn), &t, buf, sizeof(buf), &n) != 0)
            return -1;
        /* A string type (not MBSTRING_*): the bytes are taken as they are. */
        return X509_NAME_add_entry_by_txt(name, sn, t, buf, n, -1, 0) ? 0 : -1;
    }
    if (strncmp(a, "otherhex:", 9) == 0) {
        char oid[64];
        ASN1_OBJECT *obj;
        ASN1_TYPE *val;
        ASN1_STRING *str;
        GENERAL_NAME *g;
        int t;
        if (typed_hex(a + 9, oid, sizeof(oid), &t, buf, sizeof(buf), &n) != 0)
            return -1;
        obj = OBJ_txt2obj(oid, 1);
        val = ASN1_TYPE_new();
        str = ASN1_STRING_type_new(t);
        g = GENERAL_NAME_new();
        if (obj == NULL || val == NULL || str == NULL || g == NULL ||
            !ASN1_STRING_set(str, buf, n)) {
            ASN1_OBJECT_free(obj);
            ASN1_TYPE_free(val);
            ASN1_STRING_free(str);
            GENERAL_NAME_free(g);
            return -1;
        }
        ASN1_TYPE_set(val, t, str);
        if (!GENERAL_NAME_set0_othername(g, obj, val) || !sk_GENERAL_NAME_push(gens, g)) {
            GENERAL_NAME_free(g);
            return -1;
        }
        return 0;
    }
    if (strncmp(a, "dns:", 4) == 0)
        return add_gen(gens, GEN_DNS, (const unsigned char *)a + 4, (int)strlen(a + 4));
    if (strncmp(a, "uri:", 4) == 0)
        return add_gen(gens, GEN_URI, (const unsigned char *)a + 4, (int)strlen(a + 4));
    if (strncmp(a, "email:", 6) == 0)
        return add_gen(gens, GEN_EMAIL, (const unsigned char *)a + 6, (int)strlen(a + 6));
    if (strncmp(a, "dnshex:", 7) == 0) {
        n = unhex(a + 7, buf, sizeof(buf));
        return n < 0 ? -1 : add_gen(gens, GEN_DNS, buf, n);
    }
    if (strncmp(a, "ip:", 3) == 0) {
        if (inet_pton(AF_INET, a + 3, buf) == 1)
            return add_gen(gens, GEN_IPADD, buf, 4);
        if (inet_pton(AF_INET6, a + 3, buf) == 1)
            return add_gen(gens, GEN_IPADD, buf, 16);
        return -1;
    }
    if (strncmp(a, "dnsmany:", 8) == 0) {
        long i, count = strtol(a + 8, NULL, 10);
        for (i = 1; i <= count; i++) {
            char d[32];
            snprintf(d, sizeof(d), "d%ld.example", i);
            if (add_gen(gens, GEN_DNS, (const unsigned char *)d, (int)strlen(d)) != 0)
                return -1;
        }
        return 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    GENERAL_NAMES *gens[MAX_SANS_EXT] = {NULL};
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    EVP_PKEY *key = EVP_EC_gen("P-256");
    unsigned char *der = NULL;
    int i, n_gens = 1, len, rc = 1;
    FILE *f;

    if (argc < 2) {
        fprintf(stderr, "usage: csr-forge OUT.der ITEM...\n");
        return 2;
    }
    gens[0] = GENERAL_NAMES_new();
    if (req == NULL || name == NULL || exts == NULL || key == NULL || gens[0] == NULL)
        goto out;
    for (i = 2; i < argc; i++) {
        if (strcmp(argv[i], "newsan") == 0) {
            if (n_gens == MAX_SANS_EXT || (gens[n_gens] = GENERAL_NAMES_new()) == NULL)
                goto out;
            n_gens++;
        } else if (item(name, gens[n_gens - 1], argv[i]) != 0) {
            fprintf(stderr, "csr-forge: bad item '%s'\n", argv[i]);
            goto out;
        }
    }
    for (i = 0; i < n_gens; i++) {
        X509_EXTENSION *e;
        if (sk_GENERAL_NAME_num(gens[i]) == 0)
            continue;
        e = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens[i]);
        if (e == NULL || !sk_X509_EXTENSION_push(exts, e)) {
            X509_EXTENSION_free(e);
            goto out;
        }
    }
    if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_subject_name(req, name) ||
        !X509_REQ_set_pubkey(req, key) ||
        (sk_X509_EXTENSION_num(exts) > 0 && !X509_REQ_add_extensions(req, exts)) ||
        X509_REQ_sign(req, key, EVP_sha256()) <= 0)
        goto out;
    len = i2d_X509_REQ(req, &der);
    if (len <= 0 || (f = fopen(argv[1], "wb")) == NULL)
        goto out;
    {
        size_t w = fwrite(der, 1, (size_t)len, f);
        if (fclose(f) == 0 && w == (size_t)len)
            rc = 0;
    }
out:
    if (rc != 0)
        fprintf(stderr, "csr-forge: cannot make the CSR\n");
    OPENSSL_free(der);
    for (i = 0; i < MAX_SANS_EXT; i++)
        GENERAL_NAMES_free(gens[i]);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    EVP_PKEY_free(key);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return rc;
}
