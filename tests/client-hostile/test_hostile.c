/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hostile server answers: the EST client against a fake server (fake_server.c)
 * that sends what a real server cannot be made to send. Every case expects a
 * clear error code, a non-empty detail, and nothing changed: the engine
 * objects under the prefix (with their contents), the files in the store
 * folder, the client's key/certificate/CA addresses and the lifecycle record.
 * After each hostile answer a correct one must succeed, and the positive
 * controls show that the snapshot does see a change, so every case can fail.
 */
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <estc/client.h>

#include "fake_server.h"
#include "../fixtures/check_main.h"

static char dir[512];
static char store[600];
static struct fake_server fs;
static estc_ctx *ctx;
static estc_client *client;

enum op { OP_CRTS, OP_SEN, OP_SREN, OP_SREN_REKEY, OP_SKG, OP_SEN_CSR, OP_SREN_CSR };

static const char *op_name[] = {"cacerts",      "enroll",       "reenroll",      "reenroll --rekey",
                                "serverkeygen", "enroll --csr", "reenroll --csr"};

/* A key no engine holds (a secure element's, an offline station's), and
 * the CSR its holder made: the enrolled Subject and subjectAltName, signed
 * with that key. */
static EVP_PKEY *outside_key;

static void outside_csr(estc_buf *der)
{
    if (outside_key == NULL)
        outside_key = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(outside_key);
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    ck_assert_ptr_nonnull(req);
    ck_assert_ptr_nonnull(name);
    ck_assert_int_eq(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                                (const unsigned char *)"device-1", -1, -1, 0),
                     1);
    ck_assert_int_eq(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                                (const unsigned char *)"Example", -1, -1, 0),
                     1);
    ck_assert_int_eq(X509_REQ_set_subject_name(req, name), 1);
    ck_assert_int_eq(X509_REQ_set_pubkey(req, outside_key), 1);
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *san =
        X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "DNS:device-1.example");
    ck_assert_ptr_nonnull(san);
    ck_assert_int_gt(sk_X509_EXTENSION_push(exts, san), 0);
    ck_assert_int_eq(X509_REQ_add_extensions(req, exts), 1);
    ck_assert_int_gt(X509_REQ_sign(req, outside_key, EVP_sha256()), 0);
    unsigned char *out = NULL;
    int n = i2d_X509_REQ(req, &out);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(estc_buf_set(der, out, (size_t)n), ESTC_OK);
    OPENSSL_free(out);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(name);
    X509_REQ_free(req);
}

static estc_err run_csr(bool renew)
{
    estc_buf csr = {0};
    outside_csr(&csr);
    estc_err err = renew ? estc_client_reenroll_csr(client, csr.data, csr.len)
                         : estc_client_enroll_csr(client, csr.data, csr.len);
    estc_buf_free(&csr);
    return err;
}

static estc_err run(enum op op)
{
    switch (op) {
    case OP_SEN_CSR:
        return run_csr(false);
    case OP_SREN_CSR:
        return run_csr(true);
    case OP_CRTS:
        return estc_client_cacerts(client);
    case OP_SEN:
        return estc_client_enroll(client);
    case OP_SREN:
        return estc_client_reenroll(client, false);
    case OP_SREN_REKEY:
        return estc_client_reenroll(client, true);
    case OP_SKG:
        return estc_client_serverkeygen(client);
    }
    return ESTC_ERR_INVALID_ARG;
}

/* ---- the snapshot of everything a failed operation must leave alone -------- */

struct names {
    char **v;
    size_t n;
};

static bool collect(void *arg, const char *addr, estc_obj_kind kind)
{
    (void)kind;
    struct names *ns = arg;
    char **g = realloc(ns->v, (ns->n + 1) * sizeof(*g));
    ck_assert_ptr_nonnull(g);
    ns->v = g;
    ns->v[ns->n] = strdup(addr);
    ck_assert_ptr_nonnull(ns->v[ns->n]);
    ns->n++;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void hex_sha256(FILE *out, const uint8_t *data, size_t len)
{
    unsigned char md[32];
    unsigned int n = 0;
    ck_assert_int_eq(EVP_Digest(data, len, md, &n, EVP_sha256(), NULL), 1);
    for (unsigned i = 0; i < 8; i++)
        fprintf(out, "%02x", md[i]);
}

static void snap_kind(FILE *out, const char *prefix, estc_obj_kind kind, const char *label)
{
    struct names ns = {0};
    ck_assert_int_eq(estc_object_list(ctx, prefix, kind, collect, &ns), ESTC_OK);
    qsort(ns.v, ns.n, sizeof(*ns.v), cmp_str);
    for (size_t i = 0; i < ns.n; i++) {
        bool found = false;
        ck_assert_int_eq(estc_object_exists(ctx, ns.v[i], kind, &found), ESTC_OK);
        ck_assert(found);
        estc_buf b = {0};
        if (kind == ESTC_OBJ_KEY)
            ck_assert_int_eq(estc_key_public(ctx, ns.v[i], &b), ESTC_OK);
        else
            ck_assert_int_eq(estc_cert_load(ctx, ns.v[i], &b), ESTC_OK);
        fprintf(out, "%s %s ", label, ns.v[i]);
        hex_sha256(out, b.data, b.len);
        fputc('\n', out);
        estc_buf_free(&b);
        free(ns.v[i]);
    }
    free(ns.v);
}

/* Every object, file, address and lifecycle entry, as text. */
static char *snapshot(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(out);
    char prefix[700];
    snprintf(prefix, sizeof(prefix), "file:%s/", store);
    snap_kind(out, prefix, ESTC_OBJ_KEY, "key");
    snap_kind(out, prefix, ESTC_OBJ_CERT, "cert");
    snap_kind(out, prefix, ESTC_OBJ_TRUST, "trust");

    /* The folder itself: no stray temporary file, nothing rewritten. */
    struct names files = {0};
    DIR *d = opendir(store);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            collect(&files, e->d_name, ESTC_OBJ_KEY);
    }
    closedir(d);
    qsort(files.v, files.n, sizeof(*files.v), cmp_str);
    for (size_t i = 0; i < files.n; i++) {
        char path[1300];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", store, files.v[i]);
        ck_assert_int_eq(stat(path, &st), 0);
        fprintf(out, "file %s %o %lld %lld.%09ld\n", files.v[i], (unsigned)(st.st_mode & 07777),
                (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        free(files.v[i]);
    }
    free(files.v);

    fprintf(out, "client key %s\nclient cert %s\n", estc_client_key_address(client),
            estc_client_cert_address(client));
    for (size_t i = 0; i < estc_client_ca_count(client); i++)
        fprintf(out, "client ca %s\n", estc_client_ca_address(client, i));
    estc_buf cert = {0};
    ck_assert_int_eq(estc_client_certificate(client, &cert), ESTC_OK);
    fprintf(out, "client certificate ");
    hex_sha256(out, cert.data, cert.len);
    fputc('\n', out);
    estc_buf_free(&cert);

    estc_lifecycle *lc = estc_client_lifecycle(client);
    for (size_t i = 0; i < estc_lifecycle_count(lc); i++) {
        const char *addr;
        estc_obj_kind kind;
        estc_obj_state state;
        uint32_t gen;
        ck_assert_int_eq(estc_lifecycle_get(lc, i, &addr, &kind, &state, &gen), ESTC_OK);
        fprintf(out, "lifecycle %s kind %d state %d generation %u\n", addr, (int)kind, (int)state,
                gen);
    }
    ck_assert_int_eq(fclose(out), 0);
    return text;
}

/* ---- fixture ------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static estc_client *make_client(void)
{
    char path[700], key[700], cert[700], prefix[700];
    estc_client *c = NULL;
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    ck_assert_int_eq(estc_client_set_server(c, "coaps://est.fake.example/est"), ESTC_OK);
    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    ck_assert_int_eq(estc_client_add_trust_anchor(c, path, false), ESTC_OK);
    snprintf(key, sizeof(key), "file:%s/device.key.pem", store);
    snprintf(cert, sizeof(cert), "file:%s/device.crt.pem", store);
    snprintf(prefix, sizeof(prefix), "file:%s/", store);
    ck_assert_int_eq(estc_client_set_enrolled(c, key, cert, prefix), ESTC_OK);
    ck_assert_int_eq(estc_client_set_subject(c, "/CN=device-1/O=Example"), ESTC_OK);
    ck_assert_int_eq(estc_client_add_san(c, "DNS:device-1.example"), ESTC_OK);
    /* At most 3 waits on 5.03, of at most 30 s each. */
    ck_assert_int_eq(estc_client_set_limits(c, 5000, 3, 30), ESTC_OK);
    estc_transport *t = fake_server_transport(&fs);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(estc_client_set_transport(c, t), ESTC_OK);
    return c;
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/estc-hostile-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(store, sizeof(store), "%s/store", dir);
    ck_assert_int_eq(mkdir(store, 0700), 0);
    char path[700];
    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    ck_assert(fake_server_init(&fs, path));
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    client = make_client();
    /* The state every case starts from: trusted CAs and an enrolled device,
     * persisted (so the record reads as unchanged). */
    ck_assert_int_eq(estc_client_cacerts(client), ESTC_OK);
    ck_assert_int_eq(estc_client_enroll(client), ESTC_OK);
    estc_buf state = {0};
    ck_assert_int_eq(estc_lifecycle_serialize(estc_client_lifecycle(client), &state), ESTC_OK);
    estc_buf_free(&state);
}

static void teardown(void)
{
    estc_client_free(client);
    client = NULL;
    estc_ctx_free(ctx);
    ctx = NULL;
    fake_server_done(&fs);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    EVP_PKEY_free(outside_key);
    outside_key = NULL;
}

/* ---- the cases ------------------------------------------------------------------ */

struct hostile_case {
    enum op op;
    const char *target;
    enum fake_answer answer;
    estc_err want;
    const char *detail_has; /* NULL: any non-empty detail */
};

static const struct hostile_case cases[] = {
    /* /sen */
    {OP_SEN, "/est/sen", FAKE_OTHER_KEY, ESTC_ERR_VALIDATION, "another key"},
    {OP_SEN, "/est/sen", FAKE_UNTRUSTED, ESTC_ERR_VALIDATION, NULL},
    {OP_SEN, "/est/sen", FAKE_EXPIRED, ESTC_ERR_VALIDATION, "expired"},
    {OP_SEN, "/est/sen", FAKE_NOT_YET_VALID, ESTC_ERR_VALIDATION, "not yet valid"},
    {OP_SEN, "/est/sen", FAKE_WRONG_CF, ESTC_ERR_PROTOCOL, "Content-Format"},
    {OP_SEN, "/est/sen", FAKE_GARBAGE, ESTC_ERR_FORMAT, NULL},
    {OP_SEN, "/est/sen", FAKE_TRUNCATED, ESTC_ERR_FORMAT, NULL},
    {OP_SEN, "/est/sen", FAKE_ENDLESS_503, ESTC_ERR_LIMIT, "5.03"},
    {OP_SEN, "/est/sen", FAKE_LONG_503, ESTC_ERR_LIMIT, "Max-Age"},
    {OP_SEN, "/est/sen", FAKE_BAD_REQUEST, ESTC_ERR_SERVER, FAKE_DIAGNOSTIC},
    /* /sren with the same key and with a new one */
    {OP_SREN, "/est/sren", FAKE_WRONG_SUBJECT, ESTC_ERR_VALIDATION, "Subject"},
    {OP_SREN, "/est/sren", FAKE_CASE_SUBJECT, ESTC_ERR_VALIDATION, "Subject"},
    {OP_SREN, "/est/sren", FAKE_CHANGED_SAN, ESTC_ERR_VALIDATION, "subjectAltName"},
    {OP_SREN, "/est/sren", FAKE_OTHER_KEY, ESTC_ERR_VALIDATION, "another key"},
    {OP_SREN, "/est/sren", FAKE_EXPIRED, ESTC_ERR_VALIDATION, "expired"},
    {OP_SREN, "/est/sren", FAKE_TRUNCATED, ESTC_ERR_FORMAT, NULL},
    {OP_SREN, "/est/sren", FAKE_ENDLESS_503, ESTC_ERR_LIMIT, "5.03"},
    {OP_SREN, "/est/sren", FAKE_BAD_REQUEST, ESTC_ERR_SERVER, FAKE_DIAGNOSTIC},
    {OP_SREN_REKEY, "/est/sren", FAKE_WRONG_SUBJECT, ESTC_ERR_VALIDATION, "Subject"},
    {OP_SREN_REKEY, "/est/sren", FAKE_CASE_SUBJECT, ESTC_ERR_VALIDATION, "Subject"},
    {OP_SREN_REKEY, "/est/sren", FAKE_CHANGED_SAN, ESTC_ERR_VALIDATION, "subjectAltName"},
    {OP_SREN_REKEY, "/est/sren", FAKE_OTHER_KEY, ESTC_ERR_VALIDATION, "another key"},
    {OP_SREN_REKEY, "/est/sren", FAKE_UNTRUSTED, ESTC_ERR_VALIDATION, NULL},
    {OP_SREN_REKEY, "/est/sren", FAKE_GARBAGE, ESTC_ERR_FORMAT, NULL},
    {OP_SREN_REKEY, "/est/sren", FAKE_LONG_503, ESTC_ERR_LIMIT, "Max-Age"},
    /* /skg: the key arrives from the server */
    {OP_SKG, "/est/skg", FAKE_NO_KEY, ESTC_ERR_PROTOCOL, "key"},
    {OP_SKG, "/est/skg", FAKE_OTHER_KEY, ESTC_ERR_VALIDATION, "another key"},
    {OP_SKG, "/est/skg", FAKE_UNTRUSTED, ESTC_ERR_VALIDATION, NULL},
    {OP_SKG, "/est/skg", FAKE_EXPIRED, ESTC_ERR_VALIDATION, "expired"},
    {OP_SKG, "/est/skg", FAKE_ENDLESS_503, ESTC_ERR_LIMIT, "5.03"},
    {OP_SKG, "/est/skg", FAKE_BAD_REQUEST, ESTC_ERR_SERVER, FAKE_DIAGNOSTIC},
    /* CSRs made elsewhere: the certificate must be for the CSR's key */
    {OP_SEN_CSR, "/est/sen", FAKE_OTHER_KEY, ESTC_ERR_VALIDATION, "another key"},
    {OP_SEN_CSR, "/est/sen", FAKE_UNTRUSTED, ESTC_ERR_VALIDATION, NULL},
    {OP_SEN_CSR, "/est/sen", FAKE_GARBAGE, ESTC_ERR_FORMAT, NULL},
    {OP_SREN_CSR, "/est/sren", FAKE_OTHER_KEY, ESTC_ERR_VALIDATION, "another key"},
    {OP_SREN_CSR, "/est/sren", FAKE_WRONG_SUBJECT, ESTC_ERR_VALIDATION, "Subject"},
    {OP_SREN_CSR, "/est/sren", FAKE_EXPIRED, ESTC_ERR_VALIDATION, "expired"},
    /* /crts */
    {OP_CRTS, "/est/crts", FAKE_WRONG_CF, ESTC_ERR_PROTOCOL, "Content-Format"},
    {OP_CRTS, "/est/crts", FAKE_GARBAGE, ESTC_ERR_FORMAT, NULL},
    {OP_CRTS, "/est/crts", FAKE_TRUNCATED, ESTC_ERR_FORMAT, NULL},
    {OP_CRTS, "/est/crts", FAKE_ENDLESS_503, ESTC_ERR_LIMIT, "5.03"},
    {OP_CRTS, "/est/crts", FAKE_BAD_REQUEST, ESTC_ERR_SERVER, FAKE_DIAGNOSTIC},
};

#define N_CASES ((int)(sizeof(cases) / sizeof(cases[0])))

START_TEST(hostile_answer)
{
    const struct hostile_case *hc = &cases[_i];
    char *before = snapshot();
    fs.target = hc->target;
    fs.answer = hc->answer;
    fs.requests = 0;
    estc_ctx_clear_error(ctx);
    estc_err err = run(hc->op);
    const char *detail = estc_ctx_error_detail(ctx);
    ck_assert_msg(err == hc->want, "case %d (%s, answer %d): got %s \"%s\", want %s", _i,
                  op_name[hc->op], (int)hc->answer, estc_err_name(err), detail,
                  estc_err_name(hc->want));
    ck_assert_msg(detail[0] != '\0', "case %d: empty detail", _i);
    if (hc->detail_has != NULL)
        ck_assert_msg(strstr(detail, hc->detail_has) != NULL, "case %d: detail \"%s\" lacks \"%s\"",
                      _i, detail, hc->detail_has);
    /* The hostile answer was given (and 5.03 waited out the allowed times). */
    if (hc->answer == FAKE_ENDLESS_503)
        ck_assert_uint_eq(fs.requests, 3 + 1);
    else
        ck_assert_uint_ge(fs.requests, 1);
    if (hc->answer == FAKE_LONG_503)
        ck_assert_uint_eq(fs.requests, 1);
    char *after = snapshot();
    ck_assert_str_eq(after, before);
    free(after);
    free(before);

    /* The client is not left broken: a correct answer now succeeds. */
    fs.target = NULL;
    err = run(hc->op);
    ck_assert_msg(err == ESTC_OK, "case %d: good answer after the hostile one: %s \"%s\"", _i,
                  estc_err_name(err), estc_ctx_error_detail(ctx));
}
END_TEST

/* Positive controls: a correct answer succeeds and changes what it should. */
static void good_answer_changes(enum op op, bool cert_changes)
{
    char *before = snapshot();
    estc_buf old = {0}, now = {0};
    ck_assert_int_eq(estc_client_certificate(client, &old), ESTC_OK);
    fs.target = NULL;
    estc_err err = run(op);
    ck_assert_msg(err == ESTC_OK, "%s: %s \"%s\"", op_name[op], estc_err_name(err),
                  estc_ctx_error_detail(ctx));
    ck_assert_int_eq(estc_client_certificate(client, &now), ESTC_OK);
    bool same = old.len == now.len && memcmp(old.data, now.data, old.len) == 0;
    ck_assert(same != cert_changes);
    char *after = snapshot();
    if (cert_changes)
        ck_assert_str_ne(after, before);
    free(after);
    free(before);
    estc_buf_free(&old);
    estc_buf_free(&now);
}

START_TEST(control_enroll)
{
    const char *key = estc_client_key_address(client);
    char *old_key = strdup(key);
    ck_assert_ptr_nonnull(old_key);
    good_answer_changes(OP_SEN, true);
    /* A new key, and the old one superseded and gone. */
    ck_assert_str_ne(estc_client_key_address(client), old_key);
    bool found = true;
    ck_assert_int_eq(estc_object_exists(ctx, old_key, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found);
    free(old_key);
}
END_TEST

START_TEST(control_reenroll)
{
    char *key = strdup(estc_client_key_address(client));
    ck_assert_ptr_nonnull(key);
    good_answer_changes(OP_SREN, true);
    ck_assert_str_eq(estc_client_key_address(client), key);
    good_answer_changes(OP_SREN_REKEY, true);
    ck_assert_str_ne(estc_client_key_address(client), key);
    free(key);
}
END_TEST

START_TEST(control_serverkeygen)
{
    good_answer_changes(OP_SKG, true);
}
END_TEST

START_TEST(control_cacerts)
{
    good_answer_changes(OP_CRTS, false);
    ck_assert_uint_eq(estc_client_ca_count(client), 1);
    bool found = false;
    ck_assert_int_eq(
        estc_object_exists(ctx, estc_client_ca_address(client, 0), ESTC_OBJ_TRUST, &found),
        ESTC_OK);
    ck_assert(found);
}
END_TEST

/* The certificate the client holds is for the outside key. */
static void holds_outside_key(void)
{
    estc_buf der = {0};
    ck_assert_int_eq(estc_client_certificate(client, &der), ESTC_OK);
    const unsigned char *p = der.data;
    X509 *x = d2i_X509(NULL, &p, (long)der.len);
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(EVP_PKEY_eq(X509_get0_pubkey(x), outside_key), 1);
    X509_free(x);
    estc_buf_free(&der);
}

START_TEST(control_enroll_csr)
{
    char *key = strdup(estc_client_key_address(client));
    ck_assert_ptr_nonnull(key);
    good_answer_changes(OP_SEN_CSR, true);
    holds_outside_key();
    /* No key was made or replaced: the enrolled key address stays. */
    ck_assert_str_eq(estc_client_key_address(client), key);
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx, key, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(found);
    free(key);
}
END_TEST

START_TEST(control_reenroll_csr)
{
    good_answer_changes(OP_SREN_CSR, true);
    holds_outside_key();
}
END_TEST

/* CSRs that are not one, or whose signature is not their key's: refused
 * before anything is sent, nothing changed. */
START_TEST(bad_csr_refused)
{
    estc_buf good = {0};
    outside_csr(&good);
    uint8_t *bad_sig = malloc(good.len);
    ck_assert_ptr_nonnull(bad_sig);
    memcpy(bad_sig, good.data, good.len);
    bad_sig[good.len - 5] ^= 0x01; /* inside the signature value */
    uint8_t *trailing = malloc(good.len + 1);
    ck_assert_ptr_nonnull(trailing);
    memcpy(trailing, good.data, good.len);
    trailing[good.len] = 0;
    static const char garbage[] = "this is not a certificate request";
    static const char bad_pem[] = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                  "-----END CERTIFICATE REQUEST-----\n";
    const struct {
        const void *data;
        size_t len;
        estc_err want;
        const char *detail_has;
    } bad[] = {
        {bad_sig, good.len, ESTC_ERR_CRYPTO, "signature does not verify"},
        {trailing, good.len + 1, ESTC_ERR_FORMAT, "after the PKCS#10 request"},
        {garbage, sizeof(garbage) - 1, ESTC_ERR_FORMAT, "not a PKCS#10 request"},
        {bad_pem, sizeof(bad_pem) - 1, ESTC_ERR_FORMAT, "PEM"},
        {good.data, 0, ESTC_ERR_INVALID_ARG, "empty"},
    };
    char *before = snapshot();
    unsigned total = fs.total;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int renew = 0; renew < 2; renew++) {
            estc_ctx_clear_error(ctx);
            estc_err err = renew ? estc_client_reenroll_csr(client, bad[i].data, bad[i].len)
                                 : estc_client_enroll_csr(client, bad[i].data, bad[i].len);
            ck_assert_msg(err == bad[i].want, "bad CSR %zu: %s \"%s\"", i, estc_err_name(err),
                          estc_ctx_error_detail(ctx));
            ck_assert_msg(strstr(estc_ctx_error_detail(ctx), bad[i].detail_has) != NULL,
                          "bad CSR %zu: detail \"%s\"", i, estc_ctx_error_detail(ctx));
        }
        ck_assert_int_eq(estc_client_check_csr(client, bad[i].data, bad[i].len, NULL), bad[i].want);
    }
    ck_assert_uint_eq(fs.total, total); /* nothing sent */
    char *after = snapshot();
    ck_assert_str_eq(after, before);
    free(after);
    free(before);

    /* The same CSR as PEM is read; proof-of-possession refuses it. */
    X509_REQ *req = NULL;
    const unsigned char *p = good.data;
    req = d2i_X509_REQ(NULL, &p, (long)good.len);
    ck_assert_ptr_nonnull(req);
    BIO *bio = BIO_new(BIO_s_mem());
    ck_assert_int_eq(PEM_write_bio_X509_REQ(bio, req), 1);
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(bio, &pem);
    estc_buf der = {0};
    ck_assert_int_eq(estc_client_check_csr(client, pem, (size_t)pem_len, &der), ESTC_OK);
    ck_assert(der.len == good.len && memcmp(der.data, good.data, good.len) == 0);
    ck_assert_int_eq(estc_client_set_pop(client, true), ESTC_OK);
    ck_assert_int_eq(estc_client_enroll_csr(client, pem, (size_t)pem_len), ESTC_ERR_UNSUPPORTED);
    ck_assert_uint_eq(fs.total, total);
    ck_assert_int_eq(estc_client_set_pop(client, false), ESTC_OK);
    ck_assert_int_eq(estc_client_enroll_csr(client, pem, (size_t)pem_len), ESTC_OK);
    holds_outside_key();
    BIO_free(bio);
    X509_REQ_free(req);
    estc_buf_free(&der);
    estc_buf_free(&good);
    free(bad_sig);
    free(trailing);
}
END_TEST

/* The CSR enroll would send, for the enrolled key: configured Subject and
 * subjectAltName, signed by that key; no request sent. */
START_TEST(make_csr_for_engine_key)
{
    unsigned total = fs.total;
    estc_buf der = {0}, spki = {0};
    const char *key = estc_client_key_address(client);
    ck_assert_int_eq(estc_client_make_csr(client, key, &der), ESTC_OK);
    ck_assert_uint_eq(fs.total, total);
    ck_assert_int_eq(estc_client_check_csr(client, der.data, der.len, NULL), ESTC_OK);
    const unsigned char *p = der.data;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)der.len);
    ck_assert_ptr_nonnull(req);
    ck_assert_int_eq(estc_key_public(ctx, key, &spki), ESTC_OK);
    unsigned char *mine = NULL;
    int n = i2d_PUBKEY(X509_REQ_get0_pubkey(req), &mine);
    ck_assert(n > 0 && (size_t)n == spki.len && memcmp(mine, spki.data, spki.len) == 0);
    char line[256];
    X509_NAME_oneline(X509_REQ_get_subject_name(req), line, sizeof(line));
    ck_assert_str_eq(line, "/CN=device-1/O=Example");
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *sans = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    ck_assert_ptr_nonnull(sans);
    ck_assert_int_eq(sk_GENERAL_NAME_num(sans), 1);
    GENERAL_NAMES_free(sans);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    /* No such key; a NULL argument. */
    ck_assert_int_eq(estc_client_make_csr(client, "file:/nonexistent/key.pem", &der),
                     ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_client_make_csr(client, NULL, &der), ESTC_ERR_INVALID_ARG);
    OPENSSL_free(mine);
    X509_REQ_free(req);
    estc_buf_free(&der);
    estc_buf_free(&spki);
}
END_TEST

/*
 * After a refused operation the record equals the persisted one, so a
 * cleanup at shutdown must keep the objects the persisted state refers to
 * (DESIGN: the engine and the persisted references never disagree).
 */
START_TEST(cleanup_after_refusal_keeps_persisted)
{
    const enum op ops[] = {OP_SEN, OP_SREN_REKEY, OP_SKG};
    const char *targets[] = {"/est/sen", "/est/sren", "/est/skg"};
    char *before = snapshot();
    estc_lifecycle *lc = estc_client_lifecycle(client);
    ck_assert(!estc_lifecycle_changed(lc));
    fs.answer = FAKE_OTHER_KEY;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        fs.target = targets[i];
        ck_assert_int_eq(run(ops[i]), ESTC_ERR_VALIDATION);
        ck_assert_msg(!estc_lifecycle_changed(lc),
                      "%s refused: the record reads as changed since the persist", op_name[ops[i]]);
    }
    ck_assert_int_eq(estc_lifecycle_cleanup(lc), ESTC_OK);
    char *after = snapshot();
    ck_assert_str_eq(after, before);
    free(after);
    free(before);
}
END_TEST

/* The very first enrollment refused: no key, no certificate left behind. */
START_TEST(first_enrollment_refused)
{
    estc_client_free(client);
    client = make_client();
    ck_assert_int_eq(estc_client_cacerts(client), ESTC_OK);
    char prefix[700];
    snprintf(prefix, sizeof(prefix), "file:%s/", store);
    fs.target = "/est/sen";
    const enum fake_answer bad[] = {FAKE_OTHER_KEY, FAKE_UNTRUSTED, FAKE_EXPIRED, FAKE_TRUNCATED,
                                    FAKE_ENDLESS_503};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* The device's own key and certificate from the fixture are gone
         * with the old client only in the record; remove them from disk. */
        struct names keys = {0}, certs = {0};
        ck_assert_int_eq(estc_object_list(ctx, prefix, ESTC_OBJ_KEY, collect, &keys), ESTC_OK);
        ck_assert_int_eq(estc_object_list(ctx, prefix, ESTC_OBJ_CERT, collect, &certs), ESTC_OK);
        for (size_t k = 0; k < keys.n; k++) {
            ck_assert_int_eq(estc_key_remove(ctx, keys.v[k]), ESTC_OK);
            free(keys.v[k]);
        }
        for (size_t k = 0; k < certs.n; k++) {
            ck_assert_int_eq(estc_cert_remove(ctx, certs.v[k]), ESTC_OK);
            free(certs.v[k]);
        }
        free(keys.v);
        free(certs.v);
        fs.answer = bad[i];
        ck_assert_int_ne(estc_client_enroll(client), ESTC_OK);
        keys = (struct names){0};
        certs = (struct names){0};
        ck_assert_int_eq(estc_object_list(ctx, prefix, ESTC_OBJ_KEY, collect, &keys), ESTC_OK);
        ck_assert_int_eq(estc_object_list(ctx, prefix, ESTC_OBJ_CERT, collect, &certs), ESTC_OK);
        ck_assert_msg(keys.n == 0 && certs.n == 0, "answer %d left %zu key(s), %zu cert(s)",
                      (int)bad[i], keys.n, certs.n);
        free(keys.v);
        free(certs.v);
    }
    fs.target = NULL;
    ck_assert_int_eq(estc_client_enroll(client), ESTC_OK);
}
END_TEST

/* The cancel callback: asked between slices of CoAP I/O; cancels at its
 * third question. */
static bool cancel_third(void *arg)
{
    unsigned *asked = arg;
    return ++*asked >= 3;
}

/* A server that never answers (a bound UDP socket on loopback nobody
 * reads: no fake transport, the real CoAP/DTLS one): the handshake waits,
 * and the cancel callback ends it with ESTC_ERR_CANCELLED rather than the
 * timeouts and retries of a lost exchange. */
START_TEST(silent_server_cancelled)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    ck_assert_int_ge(s, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
    char uri[64], path[700];
    snprintf(uri, sizeof(uri), "coaps://127.0.0.1:%u/est", (unsigned)ntohs(sa.sin_port));
    /* One client per context: this one replaces the fake server's. */
    estc_client_free(client);
    client = NULL;
    estc_client *c = NULL;
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    client = c; /* freed by teardown() */
    ck_assert_int_eq(estc_client_set_server(c, uri), ESTC_OK);
    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    ck_assert_int_eq(estc_client_add_trust_anchor(c, path, false), ESTC_OK);
    ck_assert_int_eq(estc_client_set_limits(c, 2000, 3, 30), ESTC_OK);
    unsigned asked = 0;
    ck_assert_int_eq(estc_client_set_cancel(c, cancel_third, &asked), ESTC_OK);
    ck_assert_int_eq(estc_client_cacerts(c), ESTC_ERR_CANCELLED);
    ck_assert_uint_eq(asked, 3);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "cancelled"));
    close(s);
}
END_TEST

static Suite *suite(void)
{
    TCase *tc;
    Suite *s = check_suite("client-hostile", "fake-server", setup, teardown, 60, &tc);
    tcase_add_loop_test(tc, hostile_answer, 0, N_CASES);
    tcase_add_test(tc, control_enroll);
    tcase_add_test(tc, control_reenroll);
    tcase_add_test(tc, control_serverkeygen);
    tcase_add_test(tc, control_cacerts);
    tcase_add_test(tc, control_enroll_csr);
    tcase_add_test(tc, control_reenroll_csr);
    tcase_add_test(tc, bad_csr_refused);
    tcase_add_test(tc, make_csr_for_engine_key);
    tcase_add_test(tc, first_enrollment_refused);
    tcase_add_test(tc, cleanup_after_refusal_keeps_persisted);
    tcase_add_test(tc, silent_server_cancelled);
    return s;
}

int main(void)
{
    return check_run(suite());
}
