/*
 * The EST client: configuration, the DTLS session behind each request, and
 * the exchange rules every operation shares (paths, 5.03 + Max-Age, errors).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "client_internal.h"

#define DEFAULT_PORT 5684
/* Exchanges that may end without any answer before an operation fails. */
#define ESTC__MAX_LOST_EXCHANGES 3

static estc_err dup_str(const char *s, char **out)
{
    char *copy = strdup(s);
    if (copy == NULL)
        return ESTC_ERR_NOMEM;
    free(*out);
    *out = copy;
    return ESTC_OK;
}

/* The addresses used when none is configured: objects in the first engine
 * whose objects live in process memory. */
static estc_err default_addresses(estc_client *c)
{
    const struct estc_driver *drv;
    char prefix[ESTC_SCHEME_MAX + 2];
    estc_err err = estc_engine_find_cap(c->ctx, ESTC_CAP_VOLATILE, &drv);
    if (err != ESTC_OK)
        return err;
    snprintf(prefix, sizeof(prefix), "%s:", drv->scheme);
    err = estc_address_derive(c->ctx, prefix, ESTC_OBJ_KEY, "estc-key", &c->key_addr);
    if (err == ESTC_OK)
        err = estc_address_derive(c->ctx, prefix, ESTC_OBJ_CERT, "estc-cert", &c->cert_addr);
    if (err == ESTC_OK)
        err = dup_str(c->key_addr, &c->key_base);
    if (err == ESTC_OK)
        err = dup_str(c->cert_addr, &c->cert_base);
    if (err == ESTC_OK)
        err = dup_str(prefix, &c->ca_prefix);
    return err;
}

estc_err estc_client_new(estc_ctx *ctx, estc_client **out)
{
    if (ctx == NULL || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return ESTC_ERR_NOMEM;
    c->ctx = ctx;
    c->port = DEFAULT_PORT;
    c->key_type = ESTC_KEY_EC_P256;
    c->accept = ESTC__CF_PKCS7_CERTS;
    c->timeout_ms = 30000;
    c->max_retries = 5;
    c->max_wait_s = 300;
    c->block_szx = 6;
    estc_err err = default_addresses(c);
    if (err == ESTC_OK)
        err = estc_lifecycle_new(ctx, &c->lc);
    c->own_lc = true;
    /* Engine keys reach OpenSSL (CSR signing, libcoap's DTLS) through the
     * provider in the default library context. */
    if (err == ESTC_OK)
        err = estc_provider_load(ctx, NULL, &c->provider);
    if (err != ESTC_OK) {
        estc_client_free(c);
        return err;
    }
    *out = c;
    return ESTC_OK;
}

static void remove_tmpdir(estc_client *c)
{
    if (c->tmpdir == NULL)
        return;
    const char *names[] = {"trust.pem", "cert.pem", "key.pem"};
    char path[4096];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", c->tmpdir, names[i]);
        unlink(path);
    }
    rmdir(c->tmpdir);
    free(c->tmpdir);
    c->tmpdir = NULL;
}

void estc__client_reset_transport(estc_client *c)
{
    if (c->custom_transport) {
        estc_transport_reset(c->transport);
        return;
    }
    estc_transport_free(c->transport);
    c->transport = NULL;
    c->transport_creds = ESTC__CREDS_NONE;
    remove_tmpdir(c);
}

void estc_client_free(estc_client *c)
{
    if (c == NULL)
        return;
    if (c->custom_transport)
        estc_transport_free(c->transport);
    else
        estc__client_reset_transport(c);
    estc_provider_unload(c->provider);
    free(c->host);
    free(c->root);
    free(c->identity);
    for (int i = 0; i < ESTC__EST_COUNT; i++)
        free(c->paths[i]);
    for (size_t i = 0; i < c->n_anchors; i++)
        estc__der_list_free(&c->anchors[i].certs);
    free(c->anchors);
    estc__der_list_free(&c->explicit_certs);
    for (size_t i = 0; i < c->n_ca_addrs; i++)
        free(c->ca_addrs[i]);
    free(c->ca_addrs);
    free(c->boot_cert);
    free(c->boot_key);
    free(c->key_addr);
    free(c->cert_addr);
    free(c->key_base);
    free(c->cert_base);
    free(c->ca_prefix);
    free(c->subject);
    free(c->pop_key);
    for (size_t i = 0; i < c->n_sans; i++)
        free(c->sans[i]);
    free(c->sans);
    estc__csr_hints_free(&c->hints);
    estc_buf_free(&c->att_der);
    if (c->own_lc)
        estc_lifecycle_free(c->lc);
    free(c);
}

/* ---- configuration ------------------------------------------------------ */

estc_err estc_client_set_server(estc_client *c, const char *uri)
{
    if (c == NULL || uri == NULL)
        return ESTC_ERR_INVALID_ARG;
    const char *p = uri;
    if (strncmp(p, "coaps://", 8) != 0)
        return estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "server \"%s\": not a coaps:// URI", uri);
    p += 8;
    const char *host = p, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "server \"%s\": unclosed '['", uri);
        p = host_end + 1;
    } else {
        while (*p != '\0' && *p != ':' && *p != '/')
            p++;
        host_end = p;
    }
    if (host_end == host)
        return estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "server \"%s\": no host", uri);
    unsigned long port = DEFAULT_PORT;
    if (*p == ':') {
        char *end;
        errno = 0;
        port = strtoul(p + 1, &end, 10);
        if (end == p + 1 || errno != 0 || port == 0 || port > 65535 ||
            (*end != '\0' && *end != '/'))
            return estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "server \"%s\": bad port", uri);
        p = end;
    }
    if (*p != '\0' && *p != '/')
        return estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "server \"%s\": malformed", uri);
    for (const char *q = host; q < host_end; q++) {
        if (!(isalnum((unsigned char)*q) || *q == '.' || *q == '-' || *q == ':' || *q == '%'))
            return estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "server \"%s\": bad host", uri);
    }
    char *h = strndup(host, (size_t)(host_end - host));
    /* A root of "/" or nothing means: discover. */
    size_t rlen = strlen(p);
    while (rlen > 0 && p[rlen - 1] == '/')
        rlen--;
    char *root = rlen > 0 ? strndup(p, rlen) : NULL;
    if (h == NULL || (rlen > 0 && root == NULL)) {
        free(h);
        free(root);
        return ESTC_ERR_NOMEM;
    }
    free(c->host);
    free(c->root);
    c->host = h;
    c->root = root;
    c->port = (uint16_t)port;
    for (int i = 0; i < ESTC__EST_COUNT; i++) {
        free(c->paths[i]);
        c->paths[i] = NULL;
    }
    estc__client_reset_transport(c);
    return ESTC_OK;
}

estc_err estc_client_set_server_identity(estc_client *c, const char *identity)
{
    if (c == NULL || identity == NULL || identity[0] == '\0')
        return ESTC_ERR_INVALID_ARG;
    estc__client_reset_transport(c);
    return dup_str(identity, &c->identity);
}

bool estc__is_engine_address(estc_client *c, const char *s)
{
    const struct estc_driver *drv;
    char scheme[ESTC_SCHEME_MAX + 1];
    if (s[0] == '/' || s[0] == '.' || estc_address_scheme(s, scheme) != ESTC_OK)
        return false;
    estc_err err = estc_engine_find(c->ctx, s, &drv);
    estc_ctx_clear_error(c->ctx);
    return err == ESTC_OK;
}

estc_err estc__der_list_add(estc__der_list *list, const uint8_t *der, size_t len)
{
    estc_buf *grown = realloc(list->items, (list->n + 1) * sizeof(*grown));
    if (grown == NULL)
        return ESTC_ERR_NOMEM;
    list->items = grown;
    list->items[list->n] = (estc_buf){0};
    estc_err err = estc_buf_set(&list->items[list->n], der, len);
    if (err == ESTC_OK)
        list->n++;
    return err;
}

estc_err estc__read_pem_certs(estc_client *c, const char *path, estc__der_list *out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return estc_error(c->ctx, ESTC_ERR_IO, "%s: %s", path, strerror(errno));
    estc_err err = ESTC_OK;
    X509 *x;
    while (err == ESTC_OK && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        unsigned char *der = NULL;
        int n = i2d_X509(x, &der);
        err = n > 0 ? estc__der_list_add(out, der, (size_t)n) : ESTC_ERR_FORMAT;
        OPENSSL_free(der);
        X509_free(x);
    }
    ERR_clear_error();
    fclose(f);
    if (err == ESTC_OK && out->n == 0)
        err = estc_error(c->ctx, ESTC_ERR_FORMAT, "%s: no PEM certificate", path);
    return err;
}

estc_err estc_client_add_trust_anchor(estc_client *c, const char *source, bool implicit)
{
    if (c == NULL || source == NULL || source[0] == '\0')
        return ESTC_ERR_INVALID_ARG;
    estc__der_list certs = {0};
    estc_err err;
    if (estc__is_engine_address(c, source)) {
        estc_buf der = {0};
        err = estc_cert_load(c->ctx, source, &der);
        if (err == ESTC_OK)
            err = estc__der_list_add(&certs, der.data, der.len);
        estc_buf_free(&der);
    } else {
        err = estc__read_pem_certs(c, source, &certs);
    }
    struct estc__anchor *grown = NULL;
    if (err == ESTC_OK) {
        grown = realloc(c->anchors, (c->n_anchors + 1) * sizeof(*grown));
        if (grown == NULL)
            err = ESTC_ERR_NOMEM;
    }
    if (err != ESTC_OK) {
        estc__der_list_free(&certs);
        return err;
    }
    c->anchors = grown;
    c->anchors[c->n_anchors++] = (struct estc__anchor){.certs = certs, .implicit = implicit};
    estc__client_reset_transport(c);
    return ESTC_OK;
}

estc_err estc_client_set_credentials(estc_client *c, const char *cert, const char *key)
{
    if (c == NULL || cert == NULL || key == NULL || cert[0] == '\0' || key[0] == '\0')
        return ESTC_ERR_INVALID_ARG;
    estc_err err = dup_str(cert, &c->boot_cert);
    if (err == ESTC_OK)
        err = dup_str(key, &c->boot_key);
    estc__client_reset_transport(c);
    return err;
}

/* Checks that @addr is an address of a registered engine (NULL passes). */
static estc_err check_address(estc_client *c, const char *addr)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    if (addr == NULL)
        return ESTC_OK;
    if (estc_address_scheme(addr, scheme) != ESTC_OK)
        return estc_error(c->ctx, ESTC_ERR_BAD_ADDRESS, "\"%s\" is not an engine address", addr);
    const struct estc_driver *drv;
    return estc_engine_find(c->ctx, addr, &drv);
}

estc_err estc_client_set_enrolled(estc_client *c, const char *key, const char *cert,
                                  const char *ca_prefix)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    /* All or nothing: check and copy everything before changing anything. */
    estc_err err = check_address(c, key);
    if (err == ESTC_OK)
        err = check_address(c, cert);
    if (err == ESTC_OK)
        err = check_address(c, ca_prefix);
    if (err != ESTC_OK)
        return err;
    const char *in[5] = {key, key, cert, cert, ca_prefix};
    char **slot[5] = {&c->key_addr, &c->key_base, &c->cert_addr, &c->cert_base, &c->ca_prefix};
    char *copy[5] = {NULL};
    for (int i = 0; i < 5; i++) {
        if (in[i] != NULL && (copy[i] = strdup(in[i])) == NULL) {
            for (int j = 0; j < i; j++)
                free(copy[j]);
            return ESTC_ERR_NOMEM;
        }
    }
    for (int i = 0; i < 5; i++) {
        if (copy[i] != NULL) {
            free(*slot[i]);
            *slot[i] = copy[i];
        }
    }
    /* A session made with the old enrolled credentials must not be reused. */
    if (c->transport_creds == ESTC__CREDS_ENROLLED)
        estc__client_reset_transport(c);
    return ESTC_OK;
}

estc_err estc_client_set_subject(estc_client *c, const char *subject)
{
    if (c == NULL || subject == NULL)
        return ESTC_ERR_INVALID_ARG;
    X509_NAME *name = NULL;
    estc_err err = estc__parse_subject(c, subject, &name);
    X509_NAME_free(name);
    return err == ESTC_OK ? dup_str(subject, &c->subject) : err;
}

estc_err estc_client_add_san(estc_client *c, const char *san)
{
    if (c == NULL || san == NULL || strchr(san, ',') != NULL)
        return ESTC_ERR_INVALID_ARG;
    char **grown = realloc(c->sans, (c->n_sans + 1) * sizeof(*grown));
    if (grown == NULL)
        return ESTC_ERR_NOMEM;
    c->sans = grown;
    c->sans[c->n_sans] = strdup(san);
    if (c->sans[c->n_sans] == NULL)
        return ESTC_ERR_NOMEM;
    c->n_sans++;
    GENERAL_NAMES *gens = NULL;
    estc_err err = estc__parse_sans(c, &gens);
    GENERAL_NAMES_free(gens);
    if (err != ESTC_OK) {
        free(c->sans[--c->n_sans]);
        return err;
    }
    return ESTC_OK;
}

estc_err estc_client_set_key_type(estc_client *c, estc_key_type type)
{
    if (c == NULL || type < ESTC_KEY_EC_P256 || type > ESTC_KEY_RSA_3072)
        return ESTC_ERR_INVALID_ARG;
    c->key_type = type;
    return ESTC_OK;
}

estc_err estc_client_set_accept(estc_client *c, int cf)
{
    if (c == NULL || (cf != ESTC__CF_PKCS7_CERTS && cf != ESTC__CF_PKIX_CERT && cf != ESTC_CF_NONE))
        return ESTC_ERR_INVALID_ARG;
    c->accept = cf;
    return ESTC_OK;
}

estc_err estc_client_set_limits(estc_client *c, unsigned timeout_ms, unsigned max_retries,
                                unsigned max_wait_s)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (timeout_ms != 0)
        c->timeout_ms = timeout_ms;
    c->max_retries = max_retries;
    c->max_wait_s = max_wait_s;
    estc__client_reset_transport(c);
    return ESTC_OK;
}

estc_err estc_client_set_block_size(estc_client *c, unsigned bytes)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    for (unsigned szx = 0; szx <= 6; szx++) {
        if (bytes == 1u << (szx + 4)) {
            c->block_szx = szx;
            estc__client_reset_transport(c);
            return ESTC_OK;
        }
    }
    return ESTC_ERR_INVALID_ARG;
}

estc_err estc_client_set_pop(estc_client *c, bool enable)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    c->pop = enable;
    return ESTC_OK;
}

estc_err estc_client_set_transport(estc_client *c, estc_transport *t)
{
    if (c == NULL || t == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (c->custom_transport)
        estc_transport_free(c->transport);
    else
        estc__client_reset_transport(c);
    c->transport = t;
    c->custom_transport = true;
    return ESTC_OK;
}

estc_err estc_client_set_lifecycle(estc_client *c, estc_lifecycle *lc)
{
    if (c == NULL || lc == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (c->own_lc)
        estc_lifecycle_free(c->lc);
    c->lc = lc;
    c->own_lc = false;
    return ESTC_OK;
}

/* ---- the DTLS session ---------------------------------------------------- */

static estc_err write_file(estc_client *c, const char *name, const void *data, size_t len,
                           char *path, size_t path_len)
{
    snprintf(path, path_len, "%s/%s", c->tmpdir, name);
    FILE *f = fopen(path, "wx");
    if (f == NULL)
        return estc_error(c->ctx, ESTC_ERR_IO, "%s: %s", path, strerror(errno));
    bool ok = fwrite(data, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    return ok ? ESTC_OK : estc_error(c->ctx, ESTC_ERR_IO, "%s: write failed", path);
}

/* PEM of every certificate in @list appended to @bio. */
static bool pem_append(BIO *bio, const estc__der_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        const unsigned char *p = list->items[i].data;
        X509 *x = d2i_X509(NULL, &p, (long)list->items[i].len);
        bool ok = x != NULL && PEM_write_bio_X509(bio, x) == 1;
        X509_free(x);
        if (!ok)
            return false;
    }
    return true;
}

static estc_err write_trust(estc_client *c, char *path, size_t path_len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    bool ok = bio != NULL;
    if (ok && c->have_explicit)
        ok = pem_append(bio, &c->explicit_certs);
    for (size_t i = 0; ok && i < c->n_anchors; i++) {
        if (!c->anchors[i].implicit || !c->have_explicit)
            ok = pem_append(bio, &c->anchors[i].certs);
    }
    char *data = NULL;
    long n = ok ? BIO_get_mem_data(bio, &data) : 0;
    estc_err err;
    if (!ok)
        err = estc_error(c->ctx, ESTC_ERR_FORMAT, "cannot write the trust anchors as PEM");
    else if (n <= 0)
        err = estc_error(c->ctx, ESTC_ERR_STATE, "no trust anchor: configure one");
    else
        err = write_file(c, "trust.pem", data, (size_t)n, path, path_len);
    BIO_free(bio);
    return err;
}

/* The certificate as a PEM file libcoap can read. */
static estc_err cert_file(estc_client *c, const char *src, char *path, size_t path_len)
{
    if (!estc__is_engine_address(c, src)) {
        snprintf(path, path_len, "%s", src);
        return ESTC_OK;
    }
    estc_buf der = {0};
    estc_err err = estc_cert_load(c->ctx, src, &der);
    if (err != ESTC_OK)
        return err;
    estc__der_list one = {.items = &der, .n = 1};
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n = 0;
    if (bio == NULL || !pem_append(bio, &one) || (n = BIO_get_mem_data(bio, &data)) <= 0)
        err = estc_error(c->ctx, ESTC_ERR_FORMAT, "%s: cannot write as PEM", src);
    else
        err = write_file(c, "cert.pem", data, (size_t)n, path, path_len);
    BIO_free(bio);
    estc_buf_free(&der);
    return err;
}

/* The key as a PEM file: keys of an engine whose objects are files are PEM
 * already; every other engine's key goes as a key reference that the
 * provider resolves. */
static estc_err key_file(estc_client *c, const char *src, char *path, size_t path_len)
{
    if (!estc__is_engine_address(c, src)) {
        snprintf(path, path_len, "%s", src);
        return ESTC_OK;
    }
    if ((estc_engine_caps(c->ctx, src) & ESTC_CAP_FILES) != 0) {
        char *p = NULL;
        estc_err err = estc_key_file_path(c->ctx, src, &p);
        if (err == ESTC_OK)
            snprintf(path, path_len, "%s", p);
        free(p);
        return err;
    }
    snprintf(path, path_len, "%s/key.pem", c->tmpdir);
    return estc_keyref_write(c->ctx, path, src);
}

/* The transport's lines go to the context's log. */
static void transport_log(void *arg, estc_log_level level, const char *msg)
{
    estc_log(arg, level, "coap: %s", msg);
}

static estc_err open_transport(estc_client *c, enum estc__creds creds)
{
    if (c->custom_transport)
        return ESTC_OK;
    if (c->transport != NULL && c->transport_creds == creds)
        return ESTC_OK;
    estc__client_reset_transport(c);
    if (c->host == NULL)
        return estc_error(c->ctx, ESTC_ERR_STATE, "no server configured");
    /* Without bootstrap credentials the session is anonymous on the client
     * side: enough for discovery, /crts and /att where the server allows it. */
    const char *cert = creds == ESTC__CREDS_ENROLLED ? c->cert_addr : c->boot_cert;
    const char *key = creds == ESTC__CREDS_ENROLLED ? c->key_addr : c->boot_key;

    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/estc-XXXXXX", base != NULL && base[0] != '\0' ? base : "/tmp");
    if (mkdtemp(tmpl) == NULL)
        return estc_error(c->ctx, ESTC_ERR_IO, "%s: %s", tmpl, strerror(errno));
    c->tmpdir = strdup(tmpl);
    if (c->tmpdir == NULL) {
        rmdir(tmpl);
        return ESTC_ERR_NOMEM;
    }
    char trust[4200], certp[4200] = "", keyp[4200] = "", uri[600];
    estc_err err = write_trust(c, trust, sizeof(trust));
    if (err == ESTC_OK && cert != NULL)
        err = cert_file(c, cert, certp, sizeof(certp));
    if (err == ESTC_OK && key != NULL)
        err = key_file(c, key, keyp, sizeof(keyp));
    if (err == ESTC_OK) {
        bool v6 = strchr(c->host, ':') != NULL;
        snprintf(uri, sizeof(uri), "coaps://%s%s%s:%u", v6 ? "[" : "", c->host, v6 ? "]" : "",
                 c->port);
        estc_coap_config cfg = {
            .server = uri,
            .trust_file = trust,
            .identity = c->identity,
            .cert_file = certp[0] != '\0' ? certp : NULL,
            .key_file = keyp[0] != '\0' ? keyp : NULL,
            .timeout_ms = c->timeout_ms,
            .block_szx = c->block_szx,
            .log_fn = transport_log,
            .log_arg = c->ctx,
        };
        err = estc_transport_coap_new(&cfg, &c->transport);
        if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "cannot set up CoAP/DTLS to %s", uri);
    }
    if (err != ESTC_OK) {
        estc__client_reset_transport(c);
        return err;
    }
    c->transport_creds = creds;
    return ESTC_OK;
}

/* ---- one exchange ------------------------------------------------------- */

static estc_err discover(estc_client *c, enum estc__creds creds);

static estc_err resource_path(estc_client *c, enum estc__creds creds, estc__est_resource res,
                              const char **path)
{
    if (c->paths[res] == NULL && c->root == NULL) {
        estc_err err = discover(c, creds);
        if (err != ESTC_OK)
            return err;
    }
    if (c->paths[res] == NULL && c->root != NULL) {
        size_t n = strlen(c->root) + 8;
        c->paths[res] = malloc(n);
        if (c->paths[res] == NULL)
            return ESTC_ERR_NOMEM;
        snprintf(c->paths[res], n, "%s/%s", c->root, estc__est_resource_name(res));
    }
    if (c->paths[res] == NULL)
        return estc_error(c->ctx, ESTC_ERR_UNSUPPORTED, "the server offers no /%s resource",
                          estc__est_resource_name(res));
    *path = c->paths[res];
    return ESTC_OK;
}

static const char *method_name(estc_coap_method m)
{
    return m == ESTC_COAP_GET ? "GET" : m == ESTC_COAP_POST ? "POST" : "?";
}

/* The server's diagnostic payload as printable text, for the detail. */
static void diagnostic(const estc_response *r, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < r->payload.len && o + 1 < n && i < 120; i++) {
        unsigned char ch = r->payload.data[i];
        out[o++] = isprint(ch) ? (char)ch : '.';
    }
    out[o] = '\0';
}

/* The tls-unique value of the open session, in base64. */
static estc_err session_pop_value(estc_client *c, char b64[ESTC__POP_B64_MAX])
{
    uint8_t raw[ESTC_TLS_UNIQUE_MAX];
    size_t n = 0;
    estc_err err = estc_transport_tls_unique(c->transport, raw, sizeof(raw), &n);
    if (err == ESTC_OK && (n == 0 || n > sizeof(raw)))
        err = ESTC_ERR_PROTOCOL;
    if (err == ESTC_OK)
        EVP_EncodeBlock((unsigned char *)b64, raw, (int)n);
    OPENSSL_cleanse(raw, sizeof(raw));
    return err;
}

estc_err estc__client_pop_value(estc_client *c, enum estc__creds creds, char b64[ESTC__POP_B64_MAX])
{
    for (unsigned lost = 0;;) {
        estc_err err = open_transport(c, creds);
        if (err != ESTC_OK)
            return err;
        err = session_pop_value(c, b64);
        if (err == ESTC_OK)
            return ESTC_OK;
        estc_err e = estc_error(c->ctx, err, "proof-of-possession: %s",
                                estc_transport_error_detail(c->transport));
        estc__client_reset_transport(c);
        if ((err != ESTC_ERR_TIMEOUT && err != ESTC_ERR_TRANSPORT) ||
            ++lost >= ESTC__MAX_LOST_EXCHANGES)
            return e;
    }
}

static estc_err send_path(estc_client *c, enum estc__creds creds, const char *path,
                          estc_coap_method method, int cf, int accept, const uint8_t *payload,
                          size_t len, bool pop, estc_response *resp)
{
    estc_request req = {.method = method,
                        .path = path,
                        .content_format = cf,
                        .accept = accept,
                        .payload = payload,
                        .payload_len = len};
    estc_buf bound = {0}; /* the CSR signed again for a newer session */
    unsigned lost = 0, waits = 0;
    estc_err err;
    for (;;) {
        err = open_transport(c, creds);
        if (err != ESTC_OK)
            break;
        char b64[ESTC__POP_B64_MAX];
        err = pop ? session_pop_value(c, b64) : ESTC_OK;
        if (err == ESTC_OK && pop) {
            /* RFC 7030 §3.5: the CSR names the session that carries it. */
            estc_buf csr = {.data = (uint8_t *)req.payload, .len = req.payload_len};
            estc_buf fresh = {0};
            bool changed = false;
            err = estc__csr_rebind(c, &csr, b64, &fresh, &changed);
            if (err != ESTC_OK)
                break;
            if (changed) {
                estc_buf_free(&bound);
                bound = fresh;
                req.payload = bound.data;
                req.payload_len = bound.len;
            }
        }
        if (err == ESTC_OK)
            err = estc_transport_request(c->transport, &req, resp);
        if (err != ESTC_OK) {
            estc_err e = estc_error(c->ctx, err, "%s %s: %s", method_name(method), path,
                                    estc_transport_error_detail(c->transport));
            /* A failed handshake or session is not reused. */
            estc__client_reset_transport(c);
            /* libcoap gives up a handshake after five time-outs however long
             * the exchange may take: on a lossy link try again a few times.
             * Resending is safe: a server answers the same CSR alike. */
            if ((err == ESTC_ERR_TIMEOUT || err == ESTC_ERR_TRANSPORT) &&
                ++lost < ESTC__MAX_LOST_EXCHANGES) {
                estc_log(c->ctx, ESTC_LOG_WARNING, "%s %s: no answer, trying again",
                         method_name(method), path);
                continue;
            }
            err = e;
            break;
        }
        lost = 0;
        if (resp->code / 100 == 2)
            break;
        if (resp->code != 503) {
            char diag[128];
            diagnostic(resp, diag, sizeof(diag));
            err = estc_error(c->ctx, ESTC_ERR_SERVER, "%s %s: %d.%02d%s%s", method_name(method),
                             path, resp->code / 100, resp->code % 100, diag[0] ? ": " : "", diag);
            break;
        }
        /* 5.03 + Max-Age (RFC 9148 §4.7): wait, then resend the same request. */
        uint32_t wait = resp->max_age;
        if (waits >= c->max_retries) {
            err = estc_error(c->ctx, ESTC_ERR_LIMIT,
                             "%s %s: still 5.03 Service Unavailable after %u retries",
                             method_name(method), path, waits);
            break;
        }
        waits++;
        if (wait > c->max_wait_s) {
            err = estc_error(c->ctx, ESTC_ERR_LIMIT,
                             "%s %s: 5.03 with Max-Age %u s, over the %u s allowed",
                             method_name(method), path, wait, c->max_wait_s);
            break;
        }
        estc_log(c->ctx, ESTC_LOG_INFO, "%s %s: 5.03, retrying in %u s", method_name(method), path,
                 wait);
        struct timespec ts = {.tv_sec = wait, .tv_nsec = 0};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    estc_buf_free(&bound);
    return err;
}

estc_err estc__client_exchange(estc_client *c, enum estc__creds creds, estc__est_resource res,
                               estc_coap_method method, int cf, int accept, const uint8_t *payload,
                               size_t len, estc_response *resp)
{
    const char *path = NULL;
    estc_err err = resource_path(c, creds, res, &path);
    if (err != ESTC_OK)
        return err;
    bool pop = c->pop && cf == ESTC__CF_PKCS10 && len > 0;
    return send_path(c, creds, path, method, cf, accept, payload, len, pop, resp);
}

estc_err estc_client_discover(estc_client *c)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    return discover(c, c->boot_cert != NULL ? ESTC__CREDS_BOOTSTRAP : ESTC__CREDS_ENROLLED);
}

static estc_err discover(estc_client *c, enum estc__creds creds)
{
    estc_response resp = {0};
    estc_err err = send_path(c, creds, "/.well-known/core?rt=ace.est*", ESTC_COAP_GET, ESTC_CF_NONE,
                             ESTC__CF_LINK_FORMAT, NULL, 0, false, &resp);
    if (err != ESTC_OK) {
        estc_response_clear(&resp);
        return err;
    }
    if (resp.content_format != ESTC__CF_LINK_FORMAT) {
        estc_response_clear(&resp);
        return estc_error(c->ctx, ESTC_ERR_PROTOCOL, "discovery answered with Content-Format %d",
                          resp.content_format);
    }
    estc__discovery disc = {0};
    err = estc__codec_link_format((const char *)resp.payload.data, resp.payload.len, &disc);
    estc_response_clear(&resp);
    if (err != ESTC_OK)
        return estc_error(c->ctx, err, "discovery: malformed link-format");
    if (!disc.res[ESTC__EST_CRTS].found || !disc.res[ESTC__EST_SEN].found) {
        estc__discovery_free(&disc);
        return estc_error(c->ctx, ESTC_ERR_PROTOCOL, "discovery: no ace.est.crts or ace.est.sen");
    }
    for (int i = 0; i < ESTC__EST_COUNT && err == ESTC_OK; i++) {
        free(c->paths[i]);
        c->paths[i] = NULL;
        if (disc.res[i].found) {
            c->paths[i] = strdup(disc.res[i].path);
            if (c->paths[i] == NULL)
                err = ESTC_ERR_NOMEM;
        }
    }
    /* Absolute links (RFC 9148 §4.1): the resources live at another
     * endpoint, typically another port of the same host. */
    const estc__est_link *sen = &disc.res[ESTC__EST_SEN];
    if (err == ESTC_OK && sen->host != NULL) {
        /* All resources on that one endpoint, and the certificate there
         * must still name the host the user configured. */
        for (int i = 0; i < ESTC__EST_COUNT && err == ESTC_OK; i++) {
            const estc__est_link *l = &disc.res[i];
            if (l->found &&
                (l->host == NULL || strcasecmp(l->host, sen->host) != 0 || l->port != sen->port))
                err = estc_error(c->ctx, ESTC_ERR_PROTOCOL,
                                 "discovery: EST resources on different endpoints");
        }
        if (err == ESTC_OK && c->identity == NULL)
            err = dup_str(c->host, &c->identity);
    }
    if (err == ESTC_OK && sen->host != NULL) {
        char *h = strdup(sen->host);
        if (h == NULL)
            err = ESTC_ERR_NOMEM;
        else {
            free(c->host);
            c->host = h;
            c->port = sen->port != 0 ? sen->port : DEFAULT_PORT;
            estc__client_reset_transport(c);
        }
    }
    estc__discovery_free(&disc);
    return err;
}

/* ---- results ------------------------------------------------------------- */

const char *estc_client_key_address(const estc_client *c)
{
    return c == NULL ? NULL : c->key_addr;
}

const char *estc_client_cert_address(const estc_client *c)
{
    return c == NULL ? NULL : c->cert_addr;
}

estc_err estc_client_certificate(estc_client *c, estc_buf *der)
{
    if (c == NULL || der == NULL)
        return ESTC_ERR_INVALID_ARG;
    return estc_cert_load(c->ctx, c->cert_addr, der);
}

size_t estc_client_ca_count(const estc_client *c)
{
    return c == NULL ? 0 : c->n_ca_addrs;
}

const char *estc_client_ca_address(const estc_client *c, size_t i)
{
    return c == NULL || i >= c->n_ca_addrs ? NULL : c->ca_addrs[i];
}

const char *estc_client_resource_path(estc_client *c, const char *name)
{
    if (c == NULL || name == NULL)
        return NULL;
    for (int i = 0; i < ESTC__EST_COUNT; i++) {
        if (strcmp(name, estc__est_resource_name(i)) == 0)
            return c->paths[i];
    }
    return NULL;
}

estc_err estc_client_csrattrs_der(estc_client *c, estc_buf *der)
{
    if (c == NULL || der == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (c->att_der.data == NULL)
        return estc_error(c->ctx, ESTC_ERR_NOT_FOUND, "no CSR attributes received yet");
    return estc_buf_set(der, c->att_der.data, c->att_der.len);
}

estc_lifecycle *estc_client_lifecycle(estc_client *c)
{
    return c == NULL ? NULL : c->lc;
}
