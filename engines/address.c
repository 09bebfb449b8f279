/*
 * Address syntax: "scheme:rest", with RFC 7512-style attributes in the rest
 * ("a=1;b=2?c=3&d=4") for the schemes that use them.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

estc_err estc_pct_decode(const char *in, size_t len, char **out, size_t *out_len)
{
    if ((in == NULL && len > 0) || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    char *buf = malloc(len + 1);
    if (buf == NULL)
        return ESTC_ERR_NOMEM;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != '%') {
            buf[o++] = in[i];
            continue;
        }
        int hi = i + 1 < len ? hex_value(in[i + 1]) : -1;
        int lo = i + 2 < len ? hex_value(in[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            free(buf);
            return ESTC_ERR_BAD_ADDRESS;
        }
        buf[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    buf[o] = '\0';
    *out = buf;
    if (out_len != NULL)
        *out_len = o;
    return ESTC_OK;
}

/* Looks for @name among the attributes in [p, end) separated by @sep. */
static estc_err find_in(const char *p, const char *end, char sep, const char *name,
                        const char **val, size_t *val_len)
{
    size_t name_len = strlen(name);
    bool found = false;
    while (p < end) {
        const char *stop = memchr(p, sep, (size_t)(end - p));
        if (stop == NULL)
            stop = end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (eq != NULL && (size_t)(eq - p) == name_len && memcmp(p, name, name_len) == 0) {
            if (found)
                return ESTC_ERR_BAD_ADDRESS; /* ambiguous: given twice */
            found = true;
            *val = eq + 1;
            *val_len = (size_t)(stop - eq - 1);
        }
        p = stop + 1;
    }
    return found ? ESTC_OK : ESTC_ERR_NOT_FOUND;
}

estc_err estc_address_attr(const char *addr, const char *name, char **value, size_t *value_len)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    if (addr == NULL || name == NULL || name[0] == '\0' || value == NULL)
        return ESTC_ERR_INVALID_ARG;
    *value = NULL;
    estc_err err = estc_address_scheme(addr, scheme);
    if (err != ESTC_OK)
        return err;
    const char *rest = strchr(addr, ':') + 1;
    const char *end = rest + strlen(rest);
    const char *query = strchr(rest, '?');
    const char *path_end = query != NULL ? query : end;
    const char *val = NULL;
    size_t len = 0;
    err = find_in(rest, path_end, ';', name, &val, &len);
    if (err == ESTC_ERR_NOT_FOUND && query != NULL)
        err = find_in(query + 1, end, '&', name, &val, &len);
    if (err != ESTC_OK)
        return err;
    return estc_pct_decode(val, len, value, value_len);
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
