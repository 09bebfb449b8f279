/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The EST client: its creation, configuration and results. The DTLS session
 * and the exchanges are in client_transport.c.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "client_internal.h"

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
    c->port = ESTC__DEFAULT_PORT;
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
    if (err != ESTC_OK) {
        estc_client_free(c);
        return err;
    }
    *out = c;
    return ESTC_OK;
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
    estc__x509_cache_free(c);
    estc__client_drop_checked(c);
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
    unsigned long port = ESTC__DEFAULT_PORT;
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

/* Reads a PEM file of certificates into @out. */
static estc_err read_pem_certs(estc_client *c, const char *path, estc__der_list *out)
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
        /* Parsed once: the sessions and validations take this object. */
        if (err == ESTC_OK)
            estc__x509_remember(c, &out->items[out->n - 1], x);
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
        err = read_pem_certs(c, source, &certs);
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

/* @in with a relative path of an engine whose objects are files made
 * absolute, once, against the current folder, so that a later chdir does not
 * change what it names (and the state stores the absolute form); any other
 * address as it is. NULL stays NULL. */
static estc_err resolve_files(estc_client *c, const char *in, char **out)
{
    *out = NULL;
    if (in == NULL)
        return ESTC_OK;
    const char *body = strchr(in, ':');
    bool relative = body != NULL && body[1] != '\0' && body[1] != '/' &&
                    (estc_engine_caps(c->ctx, in) & ESTC_CAP_FILES) != 0;
    if (!relative) {
        *out = strdup(in);
        return *out != NULL ? ESTC_OK : ESTC_ERR_NOMEM;
    }
    body++;
    char *cwd = getcwd(NULL, 0);
    if (cwd == NULL)
        return estc_error(c->ctx, ESTC_ERR_IO, "%s: the current folder: %s", in, strerror(errno));
    size_t sl = (size_t)(body - in);
    size_t n = sl + strlen(cwd) + 1 + strlen(body) + 1;
    char *abs = n <= ESTC_ADDRESS_MAX + 1 ? malloc(n) : NULL;
    if (abs != NULL)
        snprintf(abs, n, "%.*s%s%s%s", (int)sl, in, cwd, strcmp(cwd, "/") == 0 ? "" : "/", body);
    free(cwd);
    if (abs == NULL)
        return n > ESTC_ADDRESS_MAX + 1
                   ? estc_error(c->ctx, ESTC_ERR_BAD_ADDRESS, "%s: too long once made absolute", in)
                   : ESTC_ERR_NOMEM;
    *out = abs;
    return ESTC_OK;
}

estc_err estc_client_set_credentials(estc_client *c, const char *cert, const char *key)
{
    if (c == NULL || cert == NULL || key == NULL || cert[0] == '\0' || key[0] == '\0')
        return ESTC_ERR_INVALID_ARG;
    char *cert_abs = NULL, *key_abs = NULL;
    estc_err err = resolve_files(c, cert, &cert_abs);
    if (err == ESTC_OK)
        err = resolve_files(c, key, &key_abs);
    if (err == ESTC_OK) {
        free(c->boot_cert);
        c->boot_cert = cert_abs;
        free(c->boot_key);
        c->boot_key = key_abs;
        cert_abs = key_abs = NULL;
    }
    free(cert_abs);
    free(key_abs);
    estc__client_drop_checked(c);
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
        err = resolve_files(c, in[i], &copy[i]);
        if (err != ESTC_OK) {
            for (int j = 0; j < i; j++)
                free(copy[j]);
            return err;
        }
    }
    for (int i = 0; i < 5; i++) {
        if (copy[i] != NULL) {
            free(*slot[i]);
            *slot[i] = copy[i];
        }
    }
    if (key != NULL || cert != NULL || ca_prefix != NULL)
        c->bases_configured = true;
    estc__client_drop_checked(c);
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

estc_err estc_client_set_cancel(estc_client *c, bool (*cancel)(void *arg), void *arg)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    c->cancel = cancel;
    c->cancel_arg = arg;
    estc__client_reset_transport(c); /* the transport takes it when made */
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

/* ---- results ------------------------------------------------------------- */

const char *estc_client_key_address(const estc_client *c)
{
    return c == NULL ? NULL : c->key_addr;
}

const char *estc_client_cert_address(const estc_client *c)
{
    return c == NULL ? NULL : c->cert_addr;
}

const char *estc_client_enrolled_base(const estc_client *c, estc_obj_kind kind)
{
    if (c == NULL)
        return NULL;
    switch (kind) {
    case ESTC_OBJ_KEY:
        return c->key_base;
    case ESTC_OBJ_CERT:
        return c->cert_base;
    case ESTC_OBJ_TRUST:
        return c->ca_prefix;
    default:
        return NULL;
    }
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

/* ---- derived names ---------------------------------------------------------- */

static const char *gen_word(estc_obj_kind kind)
{
    return kind == ESTC_OBJ_KEY ? "estc-key-" : kind == ESTC_OBJ_CERT ? "estc-cert-" : "estc-trust-";
}

/* Whether @s starts with 16 lowercase hex digits. */
static bool hex16(const char *s)
{
    for (int i = 0; i < 16; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

/* Whether deriving @name of @kind under @prefix gives exactly @want. */
static bool derives_to(estc_client *c, const char *prefix, estc_obj_kind kind, const char *name,
                       const char *want)
{
    char *got = NULL;
    bool same = estc_address_derive(c->ctx, prefix, kind, name, &got) == ESTC_OK &&
                strcmp(got, want) == 0;
    free(got);
    estc_ctx_clear_error(c->ctx);
    return same;
}

/* One step of estc__stable_base(): NULL when @base has no generated name. */
static char *strip_once(estc_client *c, const char *base, estc_obj_kind kind)
{
    const char *word = gen_word(kind);
    size_t wl = strlen(word), bl = strlen(base);
    const char *hit = NULL;
    for (const char *p = strstr(base, word); p != NULL; p = strstr(p + 1, word)) {
        if ((size_t)(p - base) + wl + 16 <= bl && hex16(p + wl))
            hit = p;
    }
    if (hit == NULL)
        return NULL;
    size_t at = (size_t)(hit - base), nl = wl + 16;
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)nl, hit);
    /* The engine appends after the name (file: ".key.pem"), or the name
     * sits inside the address (pkcs11: object=...;...): try both cuts and
     * keep the one from which the engine derives @base back. */
    char *cut = malloc(bl + 1);
    if (cut == NULL)
        return NULL;
    snprintf(cut, bl + 1, "%.*s", (int)at, base);
    if (at > 0 && derives_to(c, cut, kind, name, base))
        return cut;
    snprintf(cut, bl + 1, "%.*s%s", (int)at, base, base + at + nl);
    if (derives_to(c, cut, kind, name, base))
        return cut;
    free(cut);
    return NULL;
}

estc_err estc__stable_base(estc_client *c, const char *base, estc_obj_kind kind, char **out)
{
    char *cur = strdup(base);
    if (cur == NULL)
        return ESTC_ERR_NOMEM;
    /* Names grown by earlier versions lose one generated name per step. */
    for (int i = 0; i < 32; i++) {
        char *next = strip_once(c, cur, kind);
        if (next == NULL)
            break;
        free(cur);
        cur = next;
    }
    *out = cur;
    return ESTC_OK;
}

/* Whether @addr is a name derived under @prefix (1 to 64 name characters
 * where the engine puts the name). -1 when the engine does not put names
 * in its addresses as they are (it numbers its objects). */
static int matches_template(estc_client *c, const char *prefix, estc_obj_kind kind,
                            const char *addr)
{
    static const char marker[] = "estcQmarkerQ";
    char *t = NULL;
    if (estc_address_derive(c->ctx, prefix, kind, marker, &t) != ESTC_OK) {
        estc_ctx_clear_error(c->ctx);
        return 0;
    }
    const char *m = strstr(t, marker);
    if (m == NULL) {
        free(t);
        return -1;
    }
    size_t head = (size_t)(m - t), tail = strlen(m + sizeof(marker) - 1);
    size_t al = strlen(addr);
    int ok = 0;
    if (al > head + tail && strncmp(addr, t, head) == 0 &&
        strcmp(addr + al - tail, m + sizeof(marker) - 1) == 0) {
        size_t nl = al - head - tail;
        ok = nl <= 64 &&
             strspn(addr + head, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") >=
                 nl;
    }
    free(t);
    return ok;
}

bool estc__derived_from(estc_client *c, const char *addr, estc_obj_kind kind, const char *base)
{
    if (addr == NULL || base == NULL)
        return false;
    if (strcmp(addr, base) == 0)
        return true;
    char s1[ESTC_SCHEME_MAX + 1], s2[ESTC_SCHEME_MAX + 1];
    if (estc_address_scheme(addr, s1) != ESTC_OK || estc_address_scheme(base, s2) != ESTC_OK ||
        strcmp(s1, s2) != 0)
        return false;
    char *stable = NULL;
    if (estc__stable_base(c, base, kind, &stable) != ESTC_OK)
        return false;
    bool ok = strcmp(addr, stable) == 0;
    /* The bare scheme with the base's query: where engines that number
     * their objects place new ones (see enroll.c). */
    const char *query = strchr(base, '?');
    size_t n = strlen(s2) + 2 + (query != NULL ? strlen(query) : 0);
    char *bare = malloc(n);
    if (bare != NULL)
        snprintf(bare, n, "%s:%s", s2, query != NULL ? query : "");
    const char *prefixes[] = {base, stable, bare};
    bool numbered = false;
    for (size_t i = 0; !ok && i < 3; i++) {
        if (prefixes[i] == NULL)
            continue;
        int m = matches_template(c, prefixes[i], kind, addr);
        ok = m == 1;
        numbered = numbered || m == -1;
    }
    free(bare);
    free(stable);
    return ok || numbered;
}
