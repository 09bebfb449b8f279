/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CoRE link-format (RFC 6690) for EST-coaps discovery (RFC 9148 §4.1), and
 * the Content-Format table.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"

/* ------------------------------------------------------------------------ */
/* Content-Format table                                                      */
/* ------------------------------------------------------------------------ */

static const struct {
    int cf;
    const char *type;
    size_t max;
} cf_table[] = {
    {ESTC__CF_LINK_FORMAT, "application/link-format", ESTC__MAX_LINK_FORMAT_SIZE},
    {ESTC__CF_MULTIPART_CORE, "application/multipart-core", ESTC__MAX_MULTIPART_SIZE},
    {ESTC__CF_PKCS7_SERVER_KEY, "application/pkcs7-mime; smime-type=server-generated-key",
     ESTC__MAX_MULTIPART_SIZE},
    {ESTC__CF_PKCS7_CERTS, "application/pkcs7-mime; smime-type=certs-only", ESTC__MAX_CERTS_SIZE},
    {ESTC__CF_PKCS8, "application/pkcs8", 16u * 1024u},
    {ESTC__CF_CSRATTRS, "application/csrattrs", ESTC__MAX_CSRATTRS_SIZE},
    {ESTC__CF_PKCS10, "application/pkcs10", 16u * 1024u},
    {ESTC__CF_PKIX_CERT, "application/pkix-cert", ESTC__MAX_CERTS_SIZE},
};

const char *estc__cf_media_type(int cf)
{
    for (size_t i = 0; i < sizeof(cf_table) / sizeof(cf_table[0]); i++)
        if (cf_table[i].cf == cf)
            return cf_table[i].type;
    return NULL;
}

bool estc__cf_is_cert(int cf)
{
    return cf == ESTC__CF_PKCS7_CERTS || cf == ESTC__CF_PKIX_CERT;
}

size_t estc__cf_max_size(int cf)
{
    for (size_t i = 0; i < sizeof(cf_table) / sizeof(cf_table[0]); i++)
        if (cf_table[i].cf == cf)
            return cf_table[i].max;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Link-format                                                               */
/* ------------------------------------------------------------------------ */

static const char *const resource_names[ESTC__EST_COUNT] = {
    [ESTC__EST_CRTS] = "crts", [ESTC__EST_SEN] = "sen", [ESTC__EST_SREN] = "sren",
    [ESTC__EST_SKG] = "skg",   [ESTC__EST_SKC] = "skc", [ESTC__EST_ATT] = "att",
};

const char *estc__est_resource_name(estc__est_resource res)
{
    if ((unsigned)res >= ESTC__EST_COUNT)
        return NULL;
    return resource_names[res];
}

void estc__discovery_free(estc__discovery *disc)
{
    if (disc == NULL)
        return;
    for (size_t i = 0; i < ESTC__EST_COUNT; i++) {
        free(disc->res[i].host);
        free(disc->res[i].path);
    }
    memset(disc, 0, sizeof(*disc));
}

/* A span of the input. */
typedef struct span {
    const char *p;
    size_t len;
} span;

typedef struct lexer {
    const char *p;
    size_t len;
} lexer;

static bool is_parmname_char(char c)
{
    return isalnum((unsigned char)c) || strchr("!#$&+-.^_`|~", c) != NULL;
}

static bool is_ptoken_char(char c)
{
    return isalnum((unsigned char)c) || strchr("!#$%&'()*+-./:<=>?@[]^_`{|}~", c) != NULL;
}

/* Characters allowed in a URI-Reference (RFC 3986), percent signs included. */
static bool is_uri_char(char c)
{
    return isalnum((unsigned char)c) || strchr("-._~:/?#[]@!$&'()*+,;=%", c) != NULL;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool eat(lexer *lx, char c)
{
    if (lx->len > 0 && lx->p[0] == c) {
        lx->p++;
        lx->len--;
        return true;
    }
    return false;
}

static void skip_ws(lexer *lx)
{
    while (lx->len > 0 && is_ws(lx->p[0])) {
        lx->p++;
        lx->len--;
    }
}

/* A parameter value: a ptoken or a quoted-string. Quoted values keep their
 * escapes in @raw; @quoted tells which. */
static estc_err param_value(lexer *lx, span *raw, bool *quoted)
{
    if (eat(lx, '"')) {
        *quoted = true;
        raw->p = lx->p;
        while (lx->len > 0 && lx->p[0] != '"') {
            char c = lx->p[0];
            if ((unsigned char)c < 0x20 || c == 0x7f)
                return ESTC_ERR_FORMAT;
            if (c == '\\') {
                if (lx->len < 2 || (unsigned char)lx->p[1] < 0x20 || lx->p[1] == 0x7f)
                    return ESTC_ERR_FORMAT;
                lx->p++;
                lx->len--;
            }
            lx->p++;
            lx->len--;
        }
        raw->len = (size_t)(lx->p - raw->p);
        if (!eat(lx, '"'))
            return ESTC_ERR_FORMAT;
        return ESTC_OK;
    }
    *quoted = false;
    raw->p = lx->p;
    while (lx->len > 0 && is_ptoken_char(lx->p[0])) {
        lx->p++;
        lx->len--;
    }
    raw->len = (size_t)(lx->p - raw->p);
    return raw->len > 0 ? ESTC_OK : ESTC_ERR_FORMAT;
}

static bool span_is(span s, const char *text)
{
    size_t n = strlen(text);
    return s.len == n && memcmp(s.p, text, n) == 0;
}

/* The next space-separated word of a value (escapes are not expected in
 * rt or ct words; a backslash makes the word not match anything). */
static bool next_word(span *rest, span *word)
{
    while (rest->len > 0 && rest->p[0] == ' ') {
        rest->p++;
        rest->len--;
    }
    if (rest->len == 0)
        return false;
    word->p = rest->p;
    while (rest->len > 0 && rest->p[0] != ' ') {
        rest->p++;
        rest->len--;
    }
    word->len = (size_t)(rest->p - word->p);
    return true;
}

/* The EST resource named by an rt value, or ESTC__EST_COUNT. */
static estc__est_resource resource_of(span rt)
{
    span rest = rt, word;
    while (next_word(&rest, &word)) {
        static const char prefix[] = "ace.est.";
        if (word.len <= sizeof(prefix) - 1 || memcmp(word.p, prefix, sizeof(prefix) - 1) != 0)
            continue;
        span name = {word.p + sizeof(prefix) - 1, word.len - (sizeof(prefix) - 1)};
        for (int r = 0; r < ESTC__EST_COUNT; r++)
            if (span_is(name, resource_names[r]))
                return (estc__est_resource)r;
    }
    return ESTC__EST_COUNT;
}

/* ct values: decimal 0..65535 without leading zeros. */
static estc_err parse_ct(span value, estc__est_link *link)
{
    span rest = value, word;
    link->n_ct = 0;
    while (next_word(&rest, &word)) {
        if (word.len > 5 || (word.len > 1 && word.p[0] == '0'))
            return ESTC_ERR_FORMAT;
        unsigned long v = 0;
        for (size_t i = 0; i < word.len; i++) {
            if (!isdigit((unsigned char)word.p[i]))
                return ESTC_ERR_FORMAT;
            v = v * 10 + (unsigned long)(word.p[i] - '0');
        }
        if (v > 65535)
            return ESTC_ERR_FORMAT;
        if (link->n_ct < ESTC__MAX_LINK_CT)
            link->ct[link->n_ct++] = (int)v;
    }
    return ESTC_OK;
}

static char *span_dup(const char *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

/* Whether a path holds "." or ".." segments (which we do not resolve). */
static bool has_dot_segment(const char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (p[i] == '?')
            return false;
        size_t start = i;
        while (i < len && p[i] != '/' && p[i] != '?')
            i++;
        size_t seg = i - start;
        if ((seg == 1 && p[start] == '.') || (seg == 2 && p[start] == '.' && p[start + 1] == '.'))
            return true;
        if (i < len && p[i] == '/')
            i++;
    }
    return false;
}

/*
 * Resolve a link target into @link. ESTC_OK with @link->found false means the
 * link is not usable (other scheme, user info, dot segments).
 */
static estc_err resolve_target(span uri, estc__est_link *link)
{
    static const char scheme[] = "coaps://";
    static const char base[] = "/.well-known/";
    const char *p = uri.p;
    size_t len = uri.len;
    char *fragment = memchr(p, '#', len);
    if (fragment != NULL)
        len = (size_t)(fragment - p);

    if (len >= sizeof(scheme) - 1 && strncasecmp(p, scheme, sizeof(scheme) - 1) == 0) {
        const char *a = p + sizeof(scheme) - 1;
        size_t alen = len - (sizeof(scheme) - 1);
        size_t auth_len = 0;
        while (auth_len < alen && a[auth_len] != '/' && a[auth_len] != '?')
            auth_len++;
        if (memchr(a, '@', auth_len) != NULL || auth_len == 0)
            return ESTC_OK;
        const char *host = a;
        size_t host_len;
        const char *after;
        if (a[0] == '[') {
            const char *close = memchr(a, ']', auth_len);
            if (close == NULL)
                return ESTC_ERR_FORMAT;
            host = a + 1;
            host_len = (size_t)(close - host);
            after = close + 1;
        } else {
            const char *colon = memchr(a, ':', auth_len);
            host_len = colon != NULL ? (size_t)(colon - a) : auth_len;
            after = a + host_len;
        }
        if (host_len == 0)
            return ESTC_ERR_FORMAT;
        for (size_t i = 0; i < host_len; i++)
            if (host[i] == '%' || host[i] == '[' || host[i] == ']')
                return ESTC_ERR_FORMAT; /* zone ids and stray brackets */
        unsigned long port = 5684;
        const char *auth_end = a + auth_len;
        if (after < auth_end) {
            if (*after != ':')
                return ESTC_ERR_FORMAT;
            after++;
            if (after == auth_end || auth_end - after > 5)
                return ESTC_ERR_FORMAT;
            port = 0;
            for (; after < auth_end; after++) {
                if (!isdigit((unsigned char)*after))
                    return ESTC_ERR_FORMAT;
                port = port * 10 + (unsigned long)(*after - '0');
            }
            if (port == 0 || port > 65535)
                return ESTC_ERR_FORMAT;
        }
        const char *path = auth_end;
        size_t path_len = alen - auth_len;
        if (has_dot_segment(path, path_len))
            return ESTC_OK;
        link->host = span_dup(host, host_len);
        if (path_len == 0 || path[0] == '?') {
            /* An empty path is "/" (RFC 3986 §6.2.3). */
            char *full = malloc(path_len + 2);
            if (full != NULL) {
                full[0] = '/';
                memcpy(full + 1, path, path_len);
                full[path_len + 1] = '\0';
            }
            link->path = full;
        } else {
            link->path = span_dup(path, path_len);
        }
        if (link->host == NULL || link->path == NULL) {
            free(link->host);
            free(link->path);
            link->host = link->path = NULL;
            return ESTC_ERR_NOMEM;
        }
        link->port = (uint16_t)port;
        link->found = true;
        return ESTC_OK;
    }

    /* Other schemes (a ':' before any '/', '?') and network-path references. */
    for (size_t i = 0; i < len && p[i] != '/' && p[i] != '?'; i++)
        if (p[i] == ':')
            return ESTC_OK;
    if (len >= 2 && p[0] == '/' && p[1] == '/')
        return ESTC_OK;
    if (has_dot_segment(p, len))
        return ESTC_OK;
    if (len > 0 && p[0] == '/') {
        link->path = span_dup(p, len);
    } else {
        /* Relative path: the base is /.well-known/core, so its folder. An
         * empty reference or a bare query means the base itself. */
        if (len == 0 || p[0] == '?') {
            static const char core[] = "/.well-known/core";
            link->path = malloc(sizeof(core) + len);
            if (link->path != NULL) {
                memcpy(link->path, core, sizeof(core) - 1);
                memcpy(link->path + sizeof(core) - 1, p, len);
                link->path[sizeof(core) - 1 + len] = '\0';
            }
        } else {
            link->path = malloc(sizeof(base) + len);
            if (link->path != NULL) {
                memcpy(link->path, base, sizeof(base) - 1);
                memcpy(link->path + sizeof(base) - 1, p, len);
                link->path[sizeof(base) - 1 + len] = '\0';
            }
        }
    }
    if (link->path == NULL)
        return ESTC_ERR_NOMEM;
    link->found = true;
    return ESTC_OK;
}

static estc_err parse_links(const char *in, size_t len, estc__discovery *out)
{
    lexer lx = {in, len};
    for (size_t i = 0; i < len; i++)
        if (in[i] == '\0' || ((unsigned char)in[i] < 0x20 && !is_ws(in[i])) || in[i] == 0x7f)
            return ESTC_ERR_FORMAT;
    skip_ws(&lx);
    if (lx.len == 0)
        return ESTC_OK; /* an empty list */
    for (;;) {
        if (!eat(&lx, '<'))
            return ESTC_ERR_FORMAT;
        span uri = {lx.p, 0};
        while (lx.len > 0 && lx.p[0] != '>') {
            if (!is_uri_char(lx.p[0]))
                return ESTC_ERR_FORMAT;
            lx.p++;
            lx.len--;
        }
        uri.len = (size_t)(lx.p - uri.p);
        if (!eat(&lx, '>'))
            return ESTC_ERR_FORMAT;

        span rt = {NULL, 0}, ct = {NULL, 0};
        bool have_rt = false, have_ct = false, ct_quoted = false;
        while (eat(&lx, ';')) {
            span name = {lx.p, 0};
            while (lx.len > 0 && is_parmname_char(lx.p[0])) {
                lx.p++;
                lx.len--;
            }
            name.len = (size_t)(lx.p - name.p);
            if (name.len == 0)
                return ESTC_ERR_FORMAT;
            span value = {NULL, 0};
            bool quoted = false;
            if (eat(&lx, '=')) {
                estc_err err = param_value(&lx, &value, &quoted);
                if (err != ESTC_OK)
                    return err;
            }
            /* Parameter names are case-insensitive; the first one counts. */
            if (name.len == 2 && strncasecmp(name.p, "rt", 2) == 0 && !have_rt) {
                rt = value;
                have_rt = true;
            } else if (name.len == 2 && strncasecmp(name.p, "ct", 2) == 0 && !have_ct) {
                ct = value;
                have_ct = true;
                ct_quoted = quoted;
            }
        }

        estc__est_resource res = have_rt ? resource_of(rt) : ESTC__EST_COUNT;
        if (res != ESTC__EST_COUNT && !out->res[res].found) {
            estc__est_link *link = &out->res[res];
            if (have_ct) {
                /* An unquoted ct holds one value; several need quotes. */
                if (!ct_quoted && ct.len > 0 && memchr(ct.p, ' ', ct.len) != NULL)
                    return ESTC_ERR_FORMAT;
                estc_err err = parse_ct(ct, link);
                if (err != ESTC_OK)
                    return err;
            }
            estc_err err = resolve_target(uri, link);
            if (err != ESTC_OK)
                return err;
            if (!link->found)
                link->n_ct = 0;
        }

        skip_ws(&lx);
        if (lx.len == 0)
            return ESTC_OK;
        if (!eat(&lx, ','))
            return ESTC_ERR_FORMAT;
        skip_ws(&lx);
    }
}

estc_err estc__codec_link_format(const char *in, size_t len, estc__discovery *out)
{
    if (out == NULL || (in == NULL && len != 0))
        return ESTC_ERR_INVALID_ARG;
    memset(out, 0, sizeof(*out));
    if (len > ESTC__MAX_LINK_FORMAT_SIZE)
        return ESTC_ERR_LIMIT;
    estc_err err = parse_links(in, len, out);
    if (err != ESTC_OK)
        estc__discovery_free(out);
    return err;
}
