/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tpm2: driver's addresses: the meaning of the attributes the framework
 * parsed (names, places, numbers and ranges), the handle ranges of derived
 * addresses and their composition. See docs/engines/tpm2.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "tpm2_internal.h"

/* ------------------------------------------------------------------------ */
/* Values                                                                    */
/* ------------------------------------------------------------------------ */

static bool parse_u32(const char *s, uint32_t *out)
{
    if (s == NULL || s[0] == '\0' || s[0] == '-' || s[0] == '+' || s[0] == ' ')
        return false;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 0);
    if (end == s || *end != '\0' || v > 0xFFFFFFFFull)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* "LO-HI" within [first, last], LO <= HI. */
static bool parse_range(const char *s, uint32_t first, uint32_t last, uint32_t *lo, uint32_t *hi)
{
    const char *dash = strchr(s, '-');
    if (dash == NULL || dash - s > 16)
        return false;
    char left[17];
    memcpy(left, s, (size_t)(dash - s));
    left[dash - s] = '\0';
    if (!parse_u32(left, lo) || !parse_u32(dash + 1, hi))
        return false;
    return *lo <= *hi && *lo >= first && *hi <= last;
}

/* A handle in [first, last]. */
static bool parse_handle(const estc_attr *v, uint32_t first, uint32_t last, uint32_t *out)
{
    return parse_u32(v->value, out) && *out >= first && *out <= last;
}

/* ------------------------------------------------------------------------ */
/* Attributes                                                                */
/* ------------------------------------------------------------------------ */

static const char *const path_names[] = {"handle",  "nv", "handle-range", "nv-range", "key-file",
                                         "key-dir", NULL};
static const char *const query_names[] = {"tcti", "srk", "owner-auth-source", "parent-auth-source",
                                          NULL};

/* The first attribute of @attrs that is not one of @names, NULL when none. */
static const estc_attr *unknown_attr(const estc_attr *attrs, size_t n, const char *const *names)
{
    for (size_t i = 0; i < n; i++) {
        bool ok = false;
        for (const char *const *name = names; *name != NULL && !ok; name++)
            ok = strcmp(attrs[i].name, *name) == 0;
        if (!ok)
            return &attrs[i];
    }
    return NULL;
}

/* The first attribute of @attrs whose value holds a NUL byte, NULL when none:
 * every value of this driver is text. */
static const estc_attr *nul_in_value(const estc_attr *attrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(attrs[i].value) != attrs[i].value_len)
            return &attrs[i];
    }
    return NULL;
}

estc_err estc__tpm2_addr_read(estc_ctx *ctx, const estc_address *addr, struct tpm2_addr *a)
{
    const char *text = addr->text;
    memset(a, 0, sizeof(*a));
    a->type = ADDR_PREFIX;
    a->srk = DEFAULT_SRK;
    a->key_lo = DEFAULT_KEY_LO;
    a->key_hi = DEFAULT_KEY_HI;
    a->nv_lo = DEFAULT_NV_LO;
    a->nv_hi = DEFAULT_NV_HI;

    const estc_attr *bad = unknown_attr(addr->path, addr->n_path, path_names);
    if (bad == NULL)
        bad = unknown_attr(addr->query, addr->n_query, query_names);
    if (bad != NULL)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: unknown or misplaced attribute '%s' (path: handle, nv, key-file, "
                          "handle-range, nv-range, key-dir; query: tcti, srk, "
                          "owner-auth-source, parent-auth-source)",
                          text, bad->name);
    bad = nul_in_value(addr->path, addr->n_path);
    if (bad == NULL)
        bad = nul_in_value(addr->query, addr->n_query);
    if (bad != NULL)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: NUL byte in attribute '%s'", text,
                          bad->name);

    /* Each name is in its own place (checked above) and given once (the
     * framework refuses repeats). */
    const estc_attr *handle = estc_address_get(addr, "handle");
    const estc_attr *nv = estc_address_get(addr, "nv");
    const estc_attr *key_range = estc_address_get(addr, "handle-range");
    const estc_attr *nv_range = estc_address_get(addr, "nv-range");
    const estc_attr *srk = estc_address_get(addr, "srk");
    const estc_attr *tcti = estc_address_get(addr, "tcti");
    const estc_attr *key_file = estc_address_get(addr, "key-file");
    const estc_attr *key_dir = estc_address_get(addr, "key-dir");
    const estc_attr *owner_src = estc_address_get(addr, "owner-auth-source");
    const estc_attr *parent_src = estc_address_get(addr, "parent-auth-source");

    if (handle != NULL) {
        if (!parse_handle(handle, PERSISTENT_OWNER_FIRST, PERSISTENT_OWNER_LAST, &a->handle))
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                              "%s: handle must be a persistent owner handle 0x81000000-0x817fffff",
                              text);
        a->type = ADDR_KEY;
    }
    if (nv != NULL) {
        if (!parse_handle(nv, NV_FIRST, NV_LAST, &a->handle))
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                              "%s: nv must be an NV index 0x01000000-0x01ffffff", text);
        a->type = ADDR_NV;
    }
    if (key_range != NULL && !parse_range(key_range->value, PERSISTENT_OWNER_FIRST,
                                          PERSISTENT_OWNER_LAST, &a->key_lo, &a->key_hi))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: handle-range must be LOW-HIGH within 0x81000000-0x817fffff", text);
    if (nv_range != NULL &&
        (!parse_range(nv_range->value, NV_FIRST, NV_LAST, &a->nv_lo, &a->nv_hi) ||
         a->nv_lo == a->nv_hi))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: nv-range must be LOW-HIGH (two indices or more) within "
                          "0x01000000-0x01ffffff",
                          text);
    if (srk != NULL && !parse_handle(srk, PERSISTENT_OWNER_FIRST, PERSISTENT_OWNER_LAST, &a->srk))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: srk must be a persistent owner handle 0x81000000-0x817fffff", text);
    if (tcti != NULL) {
        if (tcti->value[0] == '\0')
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty tcti", text);
        a->tcti = tcti->value;
    }

    if (key_file != NULL) {
        if (key_file->value[0] == '\0')
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty key-file", text);
        a->key_file = key_file->value;
        a->type = ADDR_FILE;
    }
    if (key_dir != NULL) {
        if (key_dir->value[0] == '\0')
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty key-dir", text);
        a->key_dir = key_dir->value;
    }
    if (owner_src != NULL) {
        if (owner_src->value[0] == '\0')
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty owner-auth-source", text);
        a->owner_auth_src = owner_src->value;
    }
    if (parent_src != NULL) {
        if (parent_src->value[0] == '\0')
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty parent-auth-source", text);
        a->parent_auth_src = parent_src->value;
    }

    int objects = (handle != NULL) + (nv != NULL) + (key_file != NULL);
    if (objects > 1 || (objects == 1 && (key_range != NULL || nv_range != NULL || key_dir != NULL)))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: give one of handle=, nv=, key-file= (an object) or ranges and "
                          "key-dir= (a prefix)",
                          text);
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Derived addresses                                                         */
/* ------------------------------------------------------------------------ */

void estc__tpm2_kind_range(const struct tpm2_addr *a, estc_obj_kind kind, uint32_t *lo,
                           uint32_t *hi)
{
    uint32_t half = (a->nv_hi - a->nv_lo + 1u) / 2u; /* nv_hi > nv_lo: at least 1 */
    if (a->nv_hi - a->nv_lo == 0xFFFFFFFFu)
        half = 0x80000000u;
    switch (kind) {
    case ESTC_OBJ_KEY:
        *lo = a->key_lo;
        *hi = a->key_hi;
        break;
    case ESTC_OBJ_CERT:
        *lo = a->nv_lo;
        *hi = a->nv_lo + half - 1u;
        break;
    default:
        *lo = a->nv_lo + half;
        *hi = a->nv_hi;
        break;
    }
}

/* The prefix's query (tcti=, srk=) as the prefix spelled it, "" when it has
 * none: derived addresses carry it byte for byte, whatever percent-encoding
 * the user chose, so that they stay the same as they always were. */
static const char *prefix_query(const estc_address *prefix)
{
    return prefix->query_text;
}

/* "tpm2:handle=0x..." or "tpm2:nv=0x...", with the prefix's query. */
estc_err estc__tpm2_compose(const struct tpm2_op *op, estc_obj_kind kind, uint32_t h, char **out)
{
    const char *q = prefix_query(op->addr);
    size_t len = 32 + strlen(q);
    char *s = malloc(len);
    if (s == NULL)
        return ESTC_ERR_NOMEM;
    snprintf(s, len, "tpm2:%s=0x%08x%s%s", kind == ESTC_OBJ_KEY ? "handle" : "nv", (unsigned)h,
             q[0] != '\0' ? "?" : "", q);
    *out = s;
    return ESTC_OK;
}

/* Appends @s percent-encoded (all but unreserved characters and '/') to
 * @out at *@o; @out has room for 3 * strlen(@s). */
static void append_encoded(char *out, size_t *o, const char *s)
{
    static const char hexd[] = "0123456789ABCDEF";
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '/') {
            out[(*o)++] = (char)ch;
        } else {
            out[(*o)++] = '%';
            out[(*o)++] = hexd[ch >> 4];
            out[(*o)++] = hexd[ch & 15];
        }
    }
}

estc_err estc__tpm2_compose_file(const struct tpm2_op *op, const char *dir, const char *file,
                                 char **out)
{
    const char *q = prefix_query(op->addr);
    size_t len = 32 + 3 * (strlen(dir) + strlen(file)) + strlen(q);
    char *s = malloc(len);
    if (s == NULL)
        return ESTC_ERR_NOMEM;
    size_t o = 0;
    memcpy(s, "tpm2:key-file=", 14);
    o = 14;
    append_encoded(s, &o, dir);
    if (o > 14 && s[o - 1] != '/')
        s[o++] = '/';
    append_encoded(s, &o, file);
    if (q[0] != '\0') {
        s[o++] = '?';
        memcpy(s + o, q, strlen(q));
        o += strlen(q);
    }
    s[o] = '\0';
    if (o > ESTC_ADDRESS_MAX) {
        free(s);
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: the key file's address is too long",
                          op->text);
    }
    *out = s;
    return ESTC_OK;
}

estc_err estc__tpm2_derive(const struct tpm2_op *op, estc_obj_kind kind, const char *name,
                           char **out)
{
    if (kind == ESTC_OBJ_KEY && op->a.key_dir != NULL) {
        /* A key file KEY-DIR/NAME.pem: the name is one file name. */
        if (name[0] == '\0' || name[0] == '.' || strchr(name, '/') != NULL || strlen(name) > 200)
            return estc_error(op->ctx, ESTC_ERR_INVALID_ARG,
                              "%s: a key name under key-dir must be a plain file name", op->text);
        char file[256];
        snprintf(file, sizeof(file), "%s.pem", name);
        return estc__tpm2_compose_file(op, op->a.key_dir, file, out);
    }
    uint32_t lo, hi;
    estc__tpm2_kind_range(&op->a, kind, &lo, &hi);
    /* The kind is part of the hashed text, so a key and a certificate of the
     * same name land on unrelated slots. */
    char text[96];
    snprintf(text, sizeof(text), "estc-tpm2/%d/%s", (int)kind, name);
    char hex[9];
    estc_err err = estc__sha256_hex(text, strlen(text), hex, 8);
    if (err != ESTC_OK)
        return err;
    uint32_t v = (uint32_t)strtoul(hex, NULL, 16);
    uint64_t size = (uint64_t)hi - lo + 1u;
    return estc__tpm2_compose(op, kind, lo + (uint32_t)(v % size), out);
}
