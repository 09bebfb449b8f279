/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The server's small certificate authority: created on first start in the
 * state folder (or given as files), issues client and server certificates
 * with random unique serial numbers and records them in an index file.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <estc/engine.h>

#define CA_VALIDITY_SECONDS (10L * 365 * 24 * 3600)
#define SERVER_VALIDITY_SECONDS (365L * 24 * 3600)
/* Certificates start a minute in the past so small clock offsets do not matter. */
#define BACKDATE_SECONDS 60

int srv_read_file(const char *path, uint8_t **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    if (f == NULL)
        return -1;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *nbuf = realloc(buf, ncap);
            if (nbuf == NULL || ncap > (64u << 20)) {
                free(nbuf != NULL ? nbuf : buf);
                fclose(f);
                return -1;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    *out = buf;
    *out_len = len;
    return 0;
}

/* Replaces @path all at once: the library's atomic write (temporary file
 * with the final mode, fsync, rename, fsync of the folder). */
static int write_file(const char *path, const void *data, size_t len, unsigned mode)
{
    return estc_file_write(NULL, path, data, len, mode, ESTC_FILE_REPLACE) == ESTC_OK ? 0 : -1;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static EVP_PKEY *load_key(const char *path)
{
    EVP_PKEY *k = NULL;
    BIO *b = BIO_new_file(path, "r");
    if (b == NULL)
        return NULL;
    k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    return k;
}

static X509 *load_cert(const char *path)
{
    X509 *x = NULL;
    BIO *b = BIO_new_file(path, "r");
    if (b == NULL)
        return NULL;
    x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return x;
}

static int write_pem_key(const char *path, EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    long len;
    int rc = -1;

    if (b == NULL)
        return -1;
    if (PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1) {
        len = BIO_get_mem_data(b, &data);
        if (len > 0)
            rc = write_file(path, data, (size_t)len, 0600);
    }
    BIO_free(b);
    return rc;
}

/* Writes the certificates in order as one PEM file. */
static int write_pem_certs(const char *path, X509 *const *certs, int n)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    long len;
    int rc = -1, i;

    if (b == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        if (PEM_write_bio_X509(b, certs[i]) != 1)
            goto out;
    }
    len = BIO_get_mem_data(b, &data);
    if (len > 0)
        rc = write_file(path, data, (size_t)len, 0644);
out:
    BIO_free(b);
    return rc;
}

/* Index lines: serial-hex TAB notAfter (YYYYMMDDHHMMSSZ) TAB subject. */
static int index_load(struct srv_ca *ca)
{
    FILE *f;
    char line[2048];

    if (ca->index_path == NULL)
        return 0;
    f = fopen(ca->index_path, "r");
    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *tab = strchr(line, '\t');
        if (tab == NULL)
            continue;
        *tab = '\0';
        if (srv_serials_add(&ca->serials, line) != 0) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

/*
 * One line per certificate, written with one write(2) on the descriptor kept
 * open in O_APPEND: lines of several workers never mix. Not synced per
 * certificate: a crash of the machine may lose the last lines, which costs
 * no uniqueness (the serials are 128-bit random).
 */
static int index_append(struct srv_ca *ca, const char *hex, X509 *x)
{
    char subject[1024], line[1200];
    const ASN1_TIME *na = X509_get0_notAfter(x);
    struct tm tm;
    char when[32] = "?";
    int n;

    if (ca->index_fd < 0)
        return 0;
    if (ASN1_TIME_to_tm(na, &tm) == 1)
        strftime(when, sizeof(when), "%Y%m%d%H%M%SZ", &tm);
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    n = snprintf(line, sizeof(line), "%s\t%s\t%s\n", hex, when, subject);
    if (n < 0 || (size_t)n >= sizeof(line))
        return -1;
    return write(ca->index_fd, line, (size_t)n) == n ? 0 : -1;
}

/* A random positive 128-bit serial not issued before, now taken. */
static ASN1_INTEGER *new_serial(struct srv_ca *ca, char **hex_out)
{
    int tries;
    for (tries = 0; tries < 16; tries++) {
        unsigned char raw[16];
        BIGNUM *bn;
        ASN1_INTEGER *ai;
        char *hex;

        if (RAND_bytes(raw, sizeof(raw)) != 1)
            return NULL;
        raw[0] &= 0x7f;
        raw[0] |= 0x40; /* fixed length, never zero, never negative */
        bn = BN_bin2bn(raw, sizeof(raw), NULL);
        if (bn == NULL)
            return NULL;
        hex = BN_bn2hex(bn);
        ai = BN_to_ASN1_INTEGER(bn, NULL);
        BN_free(bn);
        if (hex == NULL || ai == NULL) {
            OPENSSL_free(hex);
            ASN1_INTEGER_free(ai);
            return NULL;
        }
        /* Taken at once, under the lock: two workers never pick the same one. */
        pthread_mutex_lock(&ca->lock);
        if (!srv_serials_has(&ca->serials, hex)) {
            int ok = srv_serials_add(&ca->serials, hex) == 0;
            pthread_mutex_unlock(&ca->lock);
            if (!ok) {
                OPENSSL_free(hex);
                ASN1_INTEGER_free(ai);
                return NULL;
            }
            *hex_out = hex;
            return ai;
        }
        pthread_mutex_unlock(&ca->lock);
        OPENSSL_free(hex);
        ASN1_INTEGER_free(ai);
    }
    return NULL;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL)
        return 0;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

enum cert_kind { KIND_CA, KIND_CLIENT, KIND_SERVER };

enum { EXT_BC, EXT_EKU, EXT_KU_EC, EXT_KU_RSA, EXT_AKID };

/* The extensions every client certificate of this CA carries the same. */
static int client_exts_prepare(struct srv_ca *ca)
{
    static const struct {
        int nid;
        const char *value;
    } conf[] = {
        [EXT_BC] = {NID_basic_constraints, "critical,CA:FALSE"},
        [EXT_EKU] = {NID_ext_key_usage, "clientAuth"},
        [EXT_KU_EC] = {NID_key_usage, "critical,digitalSignature,keyAgreement"},
        [EXT_KU_RSA] = {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
        [EXT_AKID] = {NID_authority_key_identifier, "keyid:always"},
    };
    size_t i;

    for (i = 0; i < sizeof(conf) / sizeof(conf[0]); i++) {
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, ca->cert, NULL, NULL, NULL, 0);
        ca->client_ext[i] = X509V3_EXT_conf_nid(NULL, &ctx, conf[i].nid, conf[i].value);
        if (ca->client_ext[i] == NULL)
            return -1;
    }
    ca->sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    return ca->sha1 != NULL ? 0 : -1;
}

/*
 * A client certificate's extensions: the prepared ones and the
 * subjectKeyIdentifier, SHA-1 of the subjectPublicKey bits (RFC 5280
 * 4.2.1.2 method 1, as OpenSSL's "hash").
 */
static int client_exts_add(struct srv_ca *ca, X509 *x, EVP_PKEY *pub)
{
    const unsigned char *bits;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int bits_len, ok;
    ASN1_OCTET_STRING *skid;

    if (!X509_add_ext(x, ca->client_ext[EXT_BC], -1) ||
        !X509_add_ext(x, ca->client_ext[EXT_EKU], -1) ||
        !X509_add_ext(x, ca->client_ext[EVP_PKEY_is_a(pub, "RSA") ? EXT_KU_RSA : EXT_KU_EC], -1))
        return 0;
    if (!X509_PUBKEY_get0_param(NULL, &bits, &bits_len, NULL, X509_get_X509_PUBKEY(x)) ||
        EVP_Digest(bits, (size_t)bits_len, md, &md_len, ca->sha1, NULL) != 1)
        return 0;
    skid = ASN1_OCTET_STRING_new();
    ok = skid != NULL && ASN1_OCTET_STRING_set(skid, md, (int)md_len) &&
         X509_add1_ext_i2d(x, NID_subject_key_identifier, skid, 0, X509V3_ADD_APPEND) == 1 &&
         X509_add_ext(x, ca->client_ext[EXT_AKID], -1);
    ASN1_OCTET_STRING_free(skid);
    return ok;
}

/*
 * The one place certificates are made. `issuer` NULL means self-signed with
 * `sign_key`. `san` (may be NULL) is copied as the subjectAltName extension.
 */
/*
 * The subject public key of `x`: the SubjectPublicKeyInfo of `spki` (a
 * CSR's) copied as it is, else `pub` encoded. OpenSSL 3.0 encodes a key
 * through its provider machinery, which costs more than the signature.
 */
static int set_pubkey(X509 *x, EVP_PKEY *pub, const X509_PUBKEY *spki)
{
    ASN1_OBJECT *alg;
    const ASN1_OBJECT *aobj;
    const X509_ALGOR *pa;
    const unsigned char *bits;
    const void *pval;
    void *pval_copy = NULL;
    unsigned char *bits_copy;
    int bits_len, ptype;

    if (spki == NULL)
        return X509_set_pubkey(x, pub);
    if (!X509_PUBKEY_get0_param(NULL, &bits, &bits_len, (X509_ALGOR **)&pa, spki) || pa == NULL)
        return 0;
    X509_ALGOR_get0(&aobj, &ptype, &pval, pa);
    if (ptype == V_ASN1_OBJECT)
        pval_copy = OBJ_dup(pval);
    else if (ptype == V_ASN1_SEQUENCE)
        pval_copy = ASN1_STRING_dup(pval);
    else if (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF)
        return X509_set_pubkey(x, pub);
    alg = OBJ_dup(aobj);
    bits_copy = OPENSSL_memdup(bits, bits_len > 0 ? (size_t)bits_len : 1);
    if (alg == NULL || bits_copy == NULL ||
        (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF && pval_copy == NULL) ||
        !X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), alg, ptype, pval_copy, bits_copy,
                                bits_len)) {
        ASN1_OBJECT_free(alg);
        OPENSSL_free(bits_copy);
        if (ptype == V_ASN1_OBJECT)
            ASN1_OBJECT_free(pval_copy);
        else
            ASN1_STRING_free(pval_copy);
        return 0;
    }
    return 1;
}

static X509 *make_cert(struct srv_ca *ca, const X509_NAME *subject, EVP_PKEY *pub,
                       const X509_PUBKEY *spki, X509 *issuer, EVP_PKEY *sign_key,
                       X509_EXTENSION *san, long validity, enum cert_kind kind)
{
    X509 *x = X509_new();
    ASN1_INTEGER *serial = NULL;
    char *hex = NULL;
    const char *ku;
    int ok = 0;

    if (x == NULL)
        return NULL;
    serial = new_serial(ca, &hex);
    if (serial == NULL)
        goto out;
    if (!X509_set_version(x, 2) || !X509_set_serialNumber(x, serial) ||
        !X509_set_subject_name(x, subject) ||
        !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) ||
        !set_pubkey(x, pub, spki))
        goto out;
    if (X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_SECONDS) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), 0, validity, NULL) == NULL)
        goto out;
    if (kind == KIND_CLIENT && ca->client_ext[0] != NULL) {
        if (!client_exts_add(ca, x, pub))
            goto out;
        goto extended;
    }
    if (kind == KIND_CA) {
        ku = "critical,keyCertSign,cRLSign,digitalSignature";
        if (!add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE"))
            goto out;
    } else {
        int is_rsa = EVP_PKEY_is_a(pub, "RSA");
        ku = is_rsa ? "critical,digitalSignature,keyEncipherment"
                    : "critical,digitalSignature,keyAgreement";
        if (!add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") ||
            !add_ext(x, issuer, NID_ext_key_usage,
                     kind == KIND_SERVER ? "serverAuth,clientAuth" : "clientAuth"))
            goto out;
    }
    if (!add_ext(x, issuer ? issuer : x, NID_key_usage, ku) ||
        !add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash"))
        goto out;
    if (issuer != NULL && !add_ext(x, issuer, NID_authority_key_identifier, "keyid:always"))
        goto out;
extended:
    if (san != NULL && !X509_add_ext(x, san, -1))
        goto out;
    /* A serial of a certificate that failed stays taken: it is never reused. */
    if (X509_sign(x, sign_key, EVP_sha256()) <= 0)
        goto out;
    /* One write(2) of one line in O_APPEND: lines of several workers never mix. */
    if (index_append(ca, hex, x) != 0)
        srv_log(SRV_LOG_ERR, "cannot append to the index %s", ca->index_path);
    ok = 1;
out:
    ASN1_INTEGER_free(serial);
    OPENSSL_free(hex);
    if (!ok) {
        srv_log_ssl_errors("certificate creation");
        X509_free(x);
        return NULL;
    }
    return x;
}

static int create_ca(struct srv *s, const char *key_path, const char *cert_path)
{
    X509_NAME *name = X509_NAME_new();
    int rc = -1;

    s->ca.key = EVP_EC_gen("P-256");
    if (name == NULL || s->ca.key == NULL)
        goto out;
    if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"estc", -1, -1,
                                    0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const unsigned char *)"estc-server test CA", -1, -1, 0))
        goto out;
    s->ca.cert = make_cert(&s->ca, name, s->ca.key, NULL, NULL, s->ca.key, NULL,
                           CA_VALIDITY_SECONDS, KIND_CA);
    if (s->ca.cert == NULL)
        goto out;
    if (write_pem_key(key_path, s->ca.key) != 0 ||
        write_pem_certs(cert_path, &s->ca.cert, 1) != 0) {
        srv_log(SRV_LOG_ERR, "cannot write the CA to %s", s->opt.state_dir);
        goto out;
    }
    srv_log(SRV_LOG_INFO, "created a new CA in %s", s->opt.state_dir);
    rc = 0;
out:
    X509_NAME_free(name);
    return rc;
}

static int load_extra(struct srv_ca *ca, const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    X509 *x;

    ca->extra = sk_X509_new_null();
    if (b == NULL || ca->extra == NULL) {
        BIO_free(b);
        return -1;
    }
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(ca->extra, x)) {
            X509_free(x);
            BIO_free(b);
            return -1;
        }
    }
    ERR_clear_error(); /* the end of the file reads as an error */
    BIO_free(b);
    return sk_X509_num(ca->extra) > 0 ? 0 : -1;
}

int srv_ca_setup(struct srv *s)
{
    char *key_path = NULL, *cert_path = NULL;
    int rc = -1;

    if (s->opt.state_dir != NULL) {
        if (mkdir(s->opt.state_dir, 0700) != 0 && errno != EEXIST) {
            srv_log(SRV_LOG_ERR, "cannot create the state folder %s: %s", s->opt.state_dir,
                    strerror(errno));
            return -1;
        }
        s->ca.index_path = path_join(s->opt.state_dir, "index.txt");
        if (s->ca.index_path == NULL || index_load(&s->ca) != 0) {
            srv_log(SRV_LOG_ERR, "cannot read the index in %s", s->opt.state_dir);
            return -1;
        }
        s->ca.index_fd = open(s->ca.index_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (s->ca.index_fd < 0) {
            srv_log(SRV_LOG_ERR, "cannot open the index %s: %s", s->ca.index_path, strerror(errno));
            return -1;
        }
    }
    if (s->opt.ca_cert_file != NULL || s->opt.ca_key_file != NULL) {
        if (s->opt.ca_cert_file == NULL || s->opt.ca_key_file == NULL) {
            srv_log(SRV_LOG_ERR, "--ca-cert and --ca-key go together");
            return -1;
        }
        key_path = strdup(s->opt.ca_key_file);
        cert_path = strdup(s->opt.ca_cert_file);
    } else if (s->opt.state_dir != NULL) {
        key_path = path_join(s->opt.state_dir, "ca.key");
        cert_path = path_join(s->opt.state_dir, "ca.crt");
    } else {
        srv_log(SRV_LOG_ERR, "give --state-dir DIR (or --ca-cert and --ca-key)");
        return -1;
    }
    if (key_path == NULL || cert_path == NULL)
        goto out;

    if (file_exists(key_path) || file_exists(cert_path)) {
        struct stat st;
        if (stat(key_path, &st) == 0 && (st.st_mode & 077) != 0)
            srv_log(SRV_LOG_ERR, "warning: the CA key %s is readable by others (mode %03o)",
                    key_path, (unsigned)(st.st_mode & 0777));
        s->ca.key = load_key(key_path);
        s->ca.cert = load_cert(cert_path);
        if (s->ca.key == NULL || s->ca.cert == NULL) {
            srv_log(SRV_LOG_ERR, "cannot load the CA from %s and %s", cert_path, key_path);
            goto out;
        }
        if (X509_check_private_key(s->ca.cert, s->ca.key) != 1) {
            srv_log(SRV_LOG_ERR, "the CA key does not match the CA certificate %s", cert_path);
            goto out;
        }
    } else if (s->opt.ca_cert_file != NULL) {
        srv_log(SRV_LOG_ERR, "cannot read %s", cert_path);
        goto out;
    } else if (create_ca(s, key_path, cert_path) != 0) {
        goto out;
    }
    if (s->opt.extra_ca != NULL && load_extra(&s->ca, s->opt.extra_ca) != 0) {
        srv_log(SRV_LOG_ERR, "cannot read certificates from --extra-ca %s", s->opt.extra_ca);
        goto out;
    }
    if (client_exts_prepare(&s->ca) != 0) {
        srv_log_ssl_errors("certificate extensions");
        goto out;
    }
    s->ca.cert_path = cert_path;
    cert_path = NULL;
    rc = 0;
out:
    free(key_path);
    free(cert_path);
    return rc;
}

void srv_ca_free(struct srv_ca *ca)
{
    if (ca->index_fd >= 0)
        close(ca->index_fd);
    ca->index_fd = -1;
    EVP_PKEY_free(ca->key);
    X509_free(ca->cert);
    sk_X509_pop_free(ca->extra, X509_free);
    free(ca->cert_path);
    free(ca->index_path);
    srv_serials_free(&ca->serials);
    for (size_t i = 0; i < sizeof(ca->client_ext) / sizeof(ca->client_ext[0]); i++)
        X509_EXTENSION_free(ca->client_ext[i]);
    EVP_MD_free(ca->sha1);
    memset(ca, 0, sizeof(*ca));
}

/* The subjectAltName of a CSR's extensionRequest, or NULL. */
static X509_EXTENSION *csr_san(const X509_REQ *req)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions((X509_REQ *)req);
    X509_EXTENSION *san = NULL;
    int i;

    for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name) {
            san = X509_EXTENSION_dup(e);
            break;
        }
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return san;
}

X509 *srv_ca_issue(struct srv *s, const X509_REQ *req, EVP_PKEY *pub)
{
    X509_EXTENSION *san = csr_san(req);
    /* The CSR's own key: its SubjectPublicKeyInfo as it came. */
    const X509_PUBKEY *spki = pub == X509_REQ_get0_pubkey((X509_REQ *)req)
                                  ? X509_REQ_get_X509_PUBKEY((X509_REQ *)req)
                                  : NULL;
    X509 *x = make_cert(&s->ca, X509_REQ_get_subject_name(req), pub, spki, s->ca.cert, s->ca.key,
                        san, s->opt.validity, KIND_CLIENT);
    X509_EXTENSION_free(san);
    return x;
}

/* SAN for the server: localhost, the loopback addresses and every listen address. */
static X509_EXTENSION *server_san(struct srv *s)
{
    char buf[2048] = "DNS:localhost,IP:127.0.0.1,IP:::1";
    X509V3_CTX ctx;
    int i;

    for (i = 0; i < s->opt.n_listen; i++) {
        char host[128];
        const char *a = s->opt.listen[i];
        const char *end;
        unsigned char bin[16];
        size_t n;

        if (a[0] == '[') {
            end = strchr(a, ']');
            a++;
        } else {
            end = strrchr(a, ':');
        }
        n = end ? (size_t)(end - a) : strlen(a);
        if (n == 0 || n >= sizeof(host))
            continue;
        memcpy(host, a, n);
        host[n] = '\0';
        if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
            strcmp(host, "127.0.0.1") == 0 || strcmp(host, "::1") == 0)
            continue;
        if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1) {
            size_t used = strlen(buf);
            snprintf(buf + used, sizeof(buf) - used, ",IP:%s", host);
        } else if (strcmp(host, "localhost") != 0) {
            size_t used = strlen(buf);
            snprintf(buf + used, sizeof(buf) - used, ",DNS:%s", host);
        }
    }
    X509V3_set_ctx(&ctx, NULL, NULL, NULL, NULL, 0);
    return X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, buf);
}

int srv_ca_make_server_creds(struct srv *s)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    X509_NAME *name = NULL;
    X509_EXTENSION *san = NULL;
    int rc = -1;

    if (s->opt.cert_file != NULL || s->opt.key_file != NULL) {
        if (s->opt.cert_file == NULL || s->opt.key_file == NULL) {
            srv_log(SRV_LOG_ERR, "--cert and --key go together");
            return -1;
        }
        /* libcoap reads them only at each handshake: check them now. */
        key = load_key(s->opt.key_file);
        cert = load_cert(s->opt.cert_file);
        if (key == NULL || cert == NULL || X509_check_private_key(cert, key) != 1) {
            srv_log(SRV_LOG_ERR, "cannot use --cert %s with --key %s", s->opt.cert_file,
                    s->opt.key_file);
            ERR_clear_error();
            goto out;
        }
        s->server_cert_path = strdup(s->opt.cert_file);
        s->server_key_path = strdup(s->opt.key_file);
        rc = s->server_cert_path && s->server_key_path ? 0 : -1;
        goto out;
    }
    if (s->opt.state_dir == NULL) {
        srv_log(SRV_LOG_ERR, "give --state-dir DIR or --cert and --key");
        return -1;
    }
    s->server_cert_path = path_join(s->opt.state_dir, "server.crt");
    s->server_key_path = path_join(s->opt.state_dir, "server.key");
    key = EVP_EC_gen("P-256");
    name = X509_NAME_new();
    san = server_san(s);
    if (s->server_cert_path == NULL || s->server_key_path == NULL || key == NULL || name == NULL ||
        san == NULL)
        goto out;
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost",
                                    -1, -1, 0))
        goto out;
    cert = make_cert(&s->ca, name, key, NULL, s->ca.cert, s->ca.key, san, SERVER_VALIDITY_SECONDS,
                     KIND_SERVER);
    if (cert == NULL)
        goto out;
    {
        X509 *chain[2] = {cert, s->ca.cert};
        if (write_pem_key(s->server_key_path, key) != 0 ||
            write_pem_certs(s->server_cert_path, chain, 2) != 0) {
            srv_log(SRV_LOG_ERR, "cannot write the server credentials to %s", s->opt.state_dir);
            goto out;
        }
    }
    rc = 0;
out:
    if (rc != 0)
        srv_log_ssl_errors("server credentials");
    EVP_PKEY_free(key);
    X509_free(cert);
    X509_NAME_free(name);
    X509_EXTENSION_free(san);
    return rc;
}

int srv_x509_der(X509 *x, uint8_t **out, size_t *out_len)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    uint8_t *copy;

    if (n <= 0)
        return -1;
    copy = malloc((size_t)n);
    if (copy == NULL) {
        OPENSSL_free(der);
        return -1;
    }
    memcpy(copy, der, (size_t)n);
    OPENSSL_free(der);
    *out = copy;
    *out_len = (size_t)n;
    return 0;
}

int srv_pkcs7_certs(X509 *leaf, struct srv_ca *ca, int with_ca, uint8_t **out, size_t *out_len)
{
    PKCS7 *p7 = PKCS7_new();
    unsigned char *der = NULL;
    int n = -1, i;
    int rc = -1;

    if (p7 == NULL || !PKCS7_set_type(p7, NID_pkcs7_signed) ||
        !PKCS7_content_new(p7, NID_pkcs7_data))
        goto out;
    if (leaf != NULL && !PKCS7_add_certificate(p7, leaf))
        goto out;
    if (with_ca) {
        if (!PKCS7_add_certificate(p7, ca->cert))
            goto out;
        for (i = 0; i < sk_X509_num(ca->extra); i++) {
            if (!PKCS7_add_certificate(p7, sk_X509_value(ca->extra, i)))
                goto out;
        }
    }
    n = i2d_PKCS7(p7, &der);
    if (n <= 0)
        goto out;
    *out = malloc((size_t)n);
    if (*out == NULL)
        goto out;
    memcpy(*out, der, (size_t)n);
    *out_len = (size_t)n;
    rc = 0;
out:
    OPENSSL_free(der);
    PKCS7_free(p7);
    return rc;
}
