/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Address syntax: "scheme:body". Drivers that declare ESTC_CAP_ATTRIBUTES
 * get the body parsed as RFC 7512-style attributes ("a=1;b=2?c=3&d=4"); this
 * is the only place in the library that cuts an address apart.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util.h"

estc_err estc_address_scheme(const char *addr, char scheme[ESTC_SCHEME_MAX + 1])
{
    if (addr == NULL || scheme == NULL)
        return ESTC_ERR_INVALID_ARG;
    size_t len = strnlen(addr, ESTC_ADDRESS_MAX + 1);
    if (len == 0 || len > ESTC_ADDRESS_MAX)
        return ESTC_ERR_BAD_ADDRESS;
    for (size_t i = 0; i < len; i++) {
        if (iscntrl((unsigned char)addr[i]))
            return ESTC_ERR_BAD_ADDRESS;
    }
    if (!isalpha((unsigned char)addr[0]))
        return ESTC_ERR_BAD_ADDRESS;
    size_t n = 0;
    while (n < len && addr[n] != ':') {
        unsigned char c = (unsigned char)addr[n];
        if (!(isalnum(c) || c == '+' || c == '-' || c == '.'))
            return ESTC_ERR_BAD_ADDRESS;
        n++;
    }
    if (n == len || n > ESTC_SCHEME_MAX)
        return ESTC_ERR_BAD_ADDRESS;
    for (size_t i = 0; i < n; i++)
        scheme[i] = (char)tolower((unsigned char)addr[i]);
    scheme[n] = '\0';
    return ESTC_OK;
}

/* Decodes @len bytes of @in into @out (room for @len + 1); the length out. */
static bool decode_into(const char *in, size_t len, char *out, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != '%') {
            out[o++] = in[i];
            continue;
        }
        int hi = i + 1 < len ? estc__hex_digit(in[i + 1]) : -1;
        int lo = i + 2 < len ? estc__hex_digit(in[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return false;
        out[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    out[o] = '\0';
    *out_len = o;
    return true;
}

estc_err estc_pct_decode(const char *in, size_t len, char **out, size_t *out_len)
{
    if ((in == NULL && len > 0) || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    char *buf = malloc(len + 1);
    if (buf == NULL)
        return ESTC_ERR_NOMEM;
    size_t n = 0;
    if (!decode_into(in != NULL ? in : "", len, buf, &n)) {
        free(buf);
        return ESTC_ERR_BAD_ADDRESS;
    }
    *out = buf;
    if (out_len != NULL)
        *out_len = n;
    return ESTC_OK;
}

/* The address, its attribute arrays and every decoded string live in one
 * allocation: freeing the address is one free(). */
struct parsed {
    estc_address pub;
    estc_attr attrs[]; /* path attributes, then query attributes */
};

static bool valid_name(const char *p, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(isalnum(c) || c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* Counts the non-empty segments of [p, end) separated by @sep. */
static size_t count_segments(const char *p, const char *end, char sep)
{
    size_t n = 0;
    while (p < end) {
        const char *stop = memchr(p, sep, (size_t)(end - p));
        if (stop == NULL)
            stop = end;
        if (stop > p)
            n++;
        p = stop + 1;
    }
    return n;
}

/* Parses the segments of [p, end) into @attrs, copying names and decoded
 * values to *@strings. */
static bool parse_segments(const char *p, const char *end, char sep, estc_attr *attrs,
                           char **strings)
{
    size_t i = 0;
    while (p < end) {
        const char *stop = memchr(p, sep, (size_t)(end - p));
        if (stop == NULL)
            stop = end;
        if (stop > p) {
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            if (eq == NULL || !valid_name(p, (size_t)(eq - p)))
                return false;
            char *name = *strings;
            memcpy(name, p, (size_t)(eq - p));
            name[eq - p] = '\0';
            char *value = name + (eq - p) + 1;
            size_t vlen = 0;
            if (!decode_into(eq + 1, (size_t)(stop - eq - 1), value, &vlen))
                return false;
            attrs[i++] = (estc_attr){.name = name, .value = value, .value_len = vlen};
            *strings = value + vlen + 1;
        }
        p = stop + 1;
    }
    return true;
}

estc_err estc_address_parse(const char *text, bool attributes, estc_address **out)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    if (text == NULL || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_err err = estc_address_scheme(text, scheme);
    if (err != ESTC_OK)
        return err;
    size_t len = strlen(text);
    const char *body = strchr(text, ':') + 1;
    const char *end = text + len;
    const char *query = attributes ? strchr(body, '?') : NULL;
    const char *path_end = query != NULL ? query : end;
    size_t n_path = attributes ? count_segments(body, path_end, ';') : 0;
    size_t n_query = query != NULL ? count_segments(query + 1, end, '&') : 0;

    /* Room: the text, its redacted copy and every name and value (each at
     * most its encoded length plus a NUL). */
    size_t n = n_path + n_query;
    size_t red_size = 2 * len + 8; /* "pin-value=1" grows to "pin-value=***" */
    size_t size = sizeof(struct parsed) + n * sizeof(estc_attr) + 2 * (len + 1) + red_size + 2 * n;
    struct parsed *p = calloc(1, size);
    if (p == NULL)
        return ESTC_ERR_NOMEM;
    char *strings = (char *)&p->attrs[n];
    char *copy = strings;
    memcpy(copy, text, len + 1);
    char *redacted = copy + len + 1;
    estc_redact(text, redacted, red_size);
    strings = redacted + red_size;

    p->pub.text = copy;
    p->pub.redacted = redacted;
    memcpy(p->pub.scheme, scheme, sizeof(scheme));
    p->pub.body = copy + (body - text);
    p->pub.query_text = query != NULL ? copy + (query - text) + 1 : copy + len;
    p->pub.path = p->attrs;
    p->pub.n_path = n_path;
    p->pub.query = p->attrs + n_path;
    p->pub.n_query = n_query;
    bool ok = !attributes ||
              (parse_segments(body, path_end, ';', p->attrs, &strings) &&
               (query == NULL || parse_segments(query + 1, end, '&', p->attrs + n_path, &strings)));
    /* A name given twice is ambiguous, wherever the two stand. */
    for (size_t i = 0; ok && i < n; i++) {
        for (size_t j = i + 1; ok && j < n; j++)
            ok = strcmp(p->attrs[i].name, p->attrs[j].name) != 0;
    }
    if (!ok) {
        free(p);
        return ESTC_ERR_BAD_ADDRESS;
    }
    *out = &p->pub;
    return ESTC_OK;
}

void estc_address_free(estc_address *addr)
{
    /* The public part is the first member: the allocation starts there. */
    free(addr);
}

const estc_attr *estc_address_get(const estc_address *addr, const char *name)
{
    if (addr == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < addr->n_path; i++) {
        if (strcmp(addr->path[i].name, name) == 0)
            return &addr->path[i];
    }
    for (size_t i = 0; i < addr->n_query; i++) {
        if (strcmp(addr->query[i].name, name) == 0)
            return &addr->query[i];
    }
    return NULL;
}

estc_err estc_address_attr(const char *addr, const char *name, char **value, size_t *value_len)
{
    if (addr == NULL || name == NULL || name[0] == '\0' || value == NULL)
        return ESTC_ERR_INVALID_ARG;
    *value = NULL;
    estc_address *a = NULL;
    estc_err err = estc_address_parse(addr, true, &a);
    if (err != ESTC_OK)
        return err;
    const estc_attr *at = estc_address_get(a, name);
    if (at == NULL) {
        err = ESTC_ERR_NOT_FOUND;
    } else {
        *value = malloc(at->value_len + 1);
        if (*value == NULL) {
            err = ESTC_ERR_NOMEM;
        } else {
            memcpy(*value, at->value, at->value_len + 1);
            if (value_len != NULL)
                *value_len = at->value_len;
        }
    }
    estc_address_free(a);
    return err;
}

bool estc__valid_object_name(const char *name)
{
    size_t n = 0;
    if (name == NULL)
        return false;
    for (; name[n] != '\0'; n++) {
        unsigned char c = (unsigned char)name[n];
        if (!(isalnum(c) || c == '-' || c == '_') || n >= 64)
            return false;
    }
    return n > 0;
}

estc_err estc__address_parse_defaults(const char *text, const char *defaults, estc_address **out)
{
    estc_address *a = NULL;
    estc_err err = estc_address_parse(text, true, &a);
    if (err != ESTC_OK || defaults == NULL)
        goto done;
    estc_address *d = NULL;
    /* The defaults as an address of their own, to read them one by one. */
    size_t dn = strlen(defaults) + 4; /* "d:?" and the NUL */
    char *dtext = malloc(dn);
    if (dtext == NULL) {
        err = ESTC_ERR_NOMEM;
        goto done;
    }
    snprintf(dtext, dn, "d:?%s", defaults);
    err = estc_address_parse(dtext, true, &d);
    free(dtext);
    if (err != ESTC_OK)
        goto done;
    /* Append what is missing, still percent-encoded, and parse again. */
    size_t len = strlen(text);
    size_t cap = len + strlen(defaults) + d->n_query + 2;
    char *aug = malloc(cap);
    if (aug == NULL) {
        estc_address_free(d);
        err = ESTC_ERR_NOMEM;
        goto done;
    }
    memcpy(aug, text, len + 1);
    size_t n = len;
    bool has_query = strchr(a->body, '?') != NULL;
    const char *p = defaults;
    for (size_t i = 0; i < d->n_query; i++) {
        const char *seg = p;
        const char *amp = strchr(p, '&');
        size_t seg_len = amp != NULL ? (size_t)(amp - p) : strlen(p);
        /* Segments and parsed attributes pair up: the defaults are written
         * by estc_engine_set_default() alone, never with an empty one. */
        p = amp != NULL ? amp + 1 : p + seg_len;
        if (estc_address_get(a, d->query[i].name) != NULL)
            continue;
        aug[n++] = has_query ? '&' : '?';
        has_query = true;
        memcpy(aug + n, seg, seg_len);
        n += seg_len;
        aug[n] = '\0';
    }
    estc_address_free(d);
    if (n > len) {
        estc_address *b = NULL;
        err = estc_address_parse(aug, true, &b);
        if (err == ESTC_OK) {
            /* Shown and derived from as given: cut the copy back. */
            char *copy = (char *)b->text;
            copy[len] = '\0';
            if (b->query_text > copy + len)
                b->query_text = copy + len; /* the defaults are not the address's own */
            estc_redact(copy, (char *)b->redacted, 2 * len + 8);
            estc_address_free(a);
            a = b;
        }
    }
    free(aug);
done:
    if (err != ESTC_OK) {
        estc_address_free(a);
        return err;
    }
    *out = a;
    return ESTC_OK;
}
