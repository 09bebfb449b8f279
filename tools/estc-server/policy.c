/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The enrollment policy: which Subject and subjectAltName a CSR may ask for.
 *
 * - every string in the Subject and in the SAN is a known string type, holds
 *   no control character (C0, DEL, C1, so also no embedded NUL), and a
 *   UTF8String, BMPString or UniversalString is valid in its encoding;
 * - the SAN parses, appears once, holds at most max_sans names, only of the
 *   allowed kinds; DNS names are plain host names (no wildcard), IP
 *   addresses are 4 or 16 bytes;
 * - no DNS name, IP address or CN that is the server's own, unless allowed;
 * - with a CN rule, the CN is the client certificate's CN or serialNumber;
 * - sren keeps the Subject and SAN byte for byte (same_identity).
 *
 * Only OpenSSL is used here (the fuzz build compiles this file alone).
 */
#include "policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/objects.h>

static const struct {
    const char *name;
    int gen;
} san_type_names[] = {
    {"othername", GEN_OTHERNAME},
    {"email", GEN_EMAIL},
    {"dns", GEN_DNS},
    {"x400", GEN_X400},
    {"dirname", GEN_DIRNAME},
    {"edipartyname", GEN_EDIPARTY},
    {"uri", GEN_URI},
    {"ip", GEN_IPADD},
    {"rid", GEN_RID},
};

static const char *san_type_name(int gen)
{
    size_t i;
    for (i = 0; i < sizeof(san_type_names) / sizeof(san_type_names[0]); i++) {
        if (san_type_names[i].gen == gen)
            return san_type_names[i].name;
    }
    return "unknown";
}

void srv_policy_init(struct srv_policy *p)
{
    memset(p, 0, sizeof(*p));
    p->max_csr_size = SRV_POLICY_MAX_CSR_SIZE;
    p->max_sans = SRV_POLICY_MAX_SANS;
    p->cn_rule = SRV_CN_ANY;
    p->san_types = SRV_SAN_ALL;
    p->allow_server_names = 0;
}

void srv_policy_free(struct srv_policy *p)
{
    GENERAL_NAMES_free(p->server_sans);
    X509_NAME_free(p->server_subject);
    p->server_sans = NULL;
    p->server_subject = NULL;
}

static int parse_count(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_san_types(const char *s, unsigned *out)
{
    unsigned bits = 0;

    if (strcmp(s, "all") == 0) {
        *out = SRV_SAN_ALL;
        return 0;
    }
    if (strcmp(s, "none") == 0) {
        *out = 0;
        return 0;
    }
    while (*s != '\0') {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        size_t i;
        int found = 0;

        for (i = 0; i < sizeof(san_type_names) / sizeof(san_type_names[0]); i++) {
            if (strlen(san_type_names[i].name) == n && memcmp(san_type_names[i].name, s, n) == 0) {
                bits |= SRV_SAN_TYPE(san_type_names[i].gen);
                found = 1;
            }
        }
        if (!found)
            return -1;
        s += n;
        if (*s == ',') {
            s++;
            if (*s == '\0')
                return -1;
        }
    }
    *out = bits;
    return 0;
}

int srv_policy_option(struct srv_policy *p, const char *name, const char *value)
{
    long v;

    if (strcmp(name, "max-sans") == 0) {
        if (parse_count(value, 0, 10000, &v) != 0) {
            fprintf(stderr, "estc-server: --max-sans wants a count from 0 to 10000\n");
            return -1;
        }
        p->max_sans = (int)v;
    } else if (strcmp(name, "max-csr-size") == 0) {
        if (parse_count(value, 64, 1L << 20, &v) != 0) {
            fprintf(stderr, "estc-server: --max-csr-size wants bytes from 64 to 1048576\n");
            return -1;
        }
        p->max_csr_size = (size_t)v;
    } else if (strcmp(name, "cn-must-match") == 0) {
        if (value != NULL && strcmp(value, "none") == 0)
            p->cn_rule = SRV_CN_ANY;
        else if (value != NULL && strcmp(value, "client-cn") == 0)
            p->cn_rule = SRV_CN_CLIENT_CN;
        else if (value != NULL && strcmp(value, "client-serial") == 0)
            p->cn_rule = SRV_CN_CLIENT_SERIAL;
        else {
            fprintf(stderr, "estc-server: --cn-must-match is client-cn, client-serial or none\n");
            return -1;
        }
    } else if (strcmp(name, "allowed-san-types") == 0) {
        if (value == NULL || parse_san_types(value, &p->san_types) != 0) {
            fprintf(stderr, "estc-server: --allowed-san-types is all, none or a list of dns,ip,"
                            "uri,email,othername,dirname,rid,x400,edipartyname\n");
            return -1;
        }
    } else if (strcmp(name, "allow-server-names") == 0) {
        p->allow_server_names = 1;
    } else {
        fprintf(stderr, "estc-server: unknown policy option --%s\n", name);
        return -1;
    }
    return 0;
}

int srv_policy_set_server(struct srv_policy *p, const X509 *server_cert)
{
    srv_policy_free(p);
    if (server_cert == NULL)
        return 0;
    p->server_subject = X509_NAME_dup(X509_get_subject_name(server_cert));
    if (p->server_subject == NULL)
        return -1;
    /* No SAN is not an error; a SAN that does not parse leaves only the CN. */
    p->server_sans = X509_get_ext_d2i(server_cert, NID_subject_alt_name, NULL, NULL);
    ERR_clear_error();
    return 0;
}

static enum srv_policy_verdict refuse(struct srv_policy_refusal *why, enum srv_policy_verdict v,
                                      const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum srv_policy_verdict refuse(struct srv_policy_refusal *why, enum srv_policy_verdict v,
                                      const char *rule, const char *fmt, ...)
{
    va_list ap;
    int n;

    why->rule = rule;
    n = snprintf(why->diag, sizeof(why->diag), "policy %s: ", rule);
    if (n < 0 || (size_t)n >= sizeof(why->diag))
        return v;
    va_start(ap, fmt);
    vsnprintf(why->diag + n, sizeof(why->diag) - (size_t)n, fmt, ap);
    va_end(ap);
    return v;
}

enum srv_policy_verdict srv_policy_check_size(const struct srv_policy *p, size_t der_len,
                                              struct srv_policy_refusal *why)
{
    if (der_len > p->max_csr_size)
        return refuse(why, SRV_POLICY_TOO_LARGE, "max-csr-size",
                      "the CSR is %zu bytes, at most %zu", der_len, p->max_csr_size);
    return SRV_POLICY_OK;
}

/* ----- strings ---------------------------------------------------------- */

enum str_problem { STR_OK = 0, STR_CONTROL, STR_ENCODING, STR_TYPE };

static int is_control(unsigned long cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);
}

/* One code point of strict UTF-8 (no overlong forms, no surrogates, at most
 * U+10FFFF); returns the bytes used or 0. */
static size_t utf8_next(const unsigned char *s, size_t n, unsigned long *cp)
{
    unsigned long c;
    size_t len, i;

    if (n == 0)
        return 0;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        c = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        c = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        c = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) || c > 0x10ffff ||
        (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

static enum str_problem check_string(const ASN1_STRING *str)
{
    const unsigned char *d = ASN1_STRING_get0_data(str);
    size_t n = (size_t)ASN1_STRING_length(str), i;
    unsigned long cp;

    if (n > 0 && d == NULL)
        return STR_ENCODING;
    switch (ASN1_STRING_type(str)) {
    case V_ASN1_UTF8STRING:
        for (i = 0; i < n;) {
            size_t used = utf8_next(d + i, n - i, &cp);
            if (used == 0)
                return STR_ENCODING;
            if (is_control(cp))
                return STR_CONTROL;
            i += used;
        }
        return STR_OK;
    case V_ASN1_BMPSTRING:
        if (n % 2 != 0)
            return STR_ENCODING;
        for (i = 0; i < n; i += 2) {
            cp = ((unsigned long)d[i] << 8) | d[i + 1];
            if (cp >= 0xd800 && cp <= 0xdfff)
                return STR_ENCODING;
            if (is_control(cp))
                return STR_CONTROL;
        }
        return STR_OK;
    case V_ASN1_UNIVERSALSTRING:
        if (n % 4 != 0)
            return STR_ENCODING;
        for (i = 0; i < n; i += 4) {
            cp = ((unsigned long)d[i] << 24) | ((unsigned long)d[i + 1] << 16) |
                 ((unsigned long)d[i + 2] << 8) | d[i + 3];
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return STR_ENCODING;
            if (is_control(cp))
                return STR_CONTROL;
        }
        return STR_OK;
    case V_ASN1_PRINTABLESTRING:
    case V_ASN1_IA5STRING:
    case V_ASN1_NUMERICSTRING:
    case V_ASN1_VISIBLESTRING:
        /* 7-bit types */
        for (i = 0; i < n; i++) {
            if (is_control(d[i]))
                return STR_CONTROL;
            if (d[i] > 0x7f)
                return STR_ENCODING;
        }
        return STR_OK;
    case V_ASN1_T61STRING:
        for (i = 0; i < n; i++) {
            if (is_control(d[i]))
                return STR_CONTROL;
        }
        return STR_OK;
    default:
        return STR_TYPE;
    }
}

static const char *attr_name(const ASN1_OBJECT *obj)
{
    int nid = OBJ_obj2nid(obj);
    const char *sn = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
    return sn != NULL ? sn : "an attribute";
}

static enum srv_policy_verdict string_refusal(struct srv_policy_refusal *why, enum str_problem pr,
                                              const char *where, const char *what)
{
    switch (pr) {
    case STR_CONTROL:
        return refuse(why, SRV_POLICY_BAD_REQUEST, "control-chars",
                      "%s %s holds a control character", where, what);
    case STR_ENCODING:
        return refuse(why, SRV_POLICY_BAD_REQUEST, "string-encoding",
                      "%s %s is not valid in its string type", where, what);
    case STR_TYPE:
    default:
        return refuse(why, SRV_POLICY_BAD_REQUEST, "string-type", "%s %s is not a directory string",
                      where, what);
    }
}

/* Every attribute value of a name (the Subject, or a directoryName). */
static enum srv_policy_verdict check_name_strings(const X509_NAME *name, const char *where,
                                                  struct srv_policy_refusal *why)
{
    int i, n = X509_NAME_entry_count(name);

    for (i = 0; i < n; i++) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
        const ASN1_STRING *v = e ? X509_NAME_ENTRY_get_data(e) : NULL;
        enum str_problem pr = v ? check_string(v) : STR_TYPE;
        if (pr != STR_OK)
            return string_refusal(why, pr, where,
                                  e ? attr_name(X509_NAME_ENTRY_get_object(e)) : "an attribute");
    }
    return SRV_POLICY_OK;
}

/* ----- the server's own names -------------------------------------------- */

/* DNS names compare without case and without one trailing dot. */
static int dns_equal(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
    size_t i;

    if (an > 0 && a[an - 1] == '.')
        an--;
    if (bn > 0 && b[bn - 1] == '.')
        bn--;
    if (an != bn || an == 0)
        return 0;
    for (i = 0; i < an; i++) {
        unsigned char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return 0;
    }
    return 1;
}

/* An IPv4-mapped IPv6 address counts as the IPv4 address. */
static size_t ip_norm(const unsigned char *in, size_t n, unsigned char out[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (n == 16 && memcmp(in, mapped, sizeof(mapped)) == 0) {
        memcpy(out, in + 12, 4);
        return 4;
    }
    if (n != 4 && n != 16)
        return 0;
    memcpy(out, in, n);
    return n;
}

static int server_has_ip(const struct srv_policy *p, const unsigned char *ip, size_t n)
{
    unsigned char want[16], have[16];
    size_t wn = ip_norm(ip, n, want);
    int i;

    if (wn == 0)
        return 0;
    for (i = 0; i < sk_GENERAL_NAME_num(p->server_sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(p->server_sans, i);
        if (g->type == GEN_IPADD) {
            size_t hn = ip_norm(ASN1_STRING_get0_data(g->d.iPAddress),
                                (size_t)ASN1_STRING_length(g->d.iPAddress), have);
            if (hn == wn && memcmp(have, want, wn) == 0)
                return 1;
        }
    }
    return 0;
}

/* A DNS name, or the text of a CN, that is one of the server's DNS names or
 * the CN of its certificate. */
static int server_has_dns(const struct srv_policy *p, const unsigned char *name, size_t n)
{
    int i;

    for (i = 0; i < sk_GENERAL_NAME_num(p->server_sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(p->server_sans, i);
        if (g->type == GEN_DNS && dns_equal(name, n, ASN1_STRING_get0_data(g->d.dNSName),
                                            (size_t)ASN1_STRING_length(g->d.dNSName)))
            return 1;
    }
    for (i = -1; p->server_subject != NULL &&
                 (i = X509_NAME_get_index_by_NID(p->server_subject, NID_commonName, i)) >= 0;) {
        const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(p->server_subject, i));
        unsigned char *u = NULL;
        int un = ASN1_STRING_to_UTF8(&u, cn);
        int same = un > 0 && dns_equal(name, n, u, (size_t)un);
        OPENSSL_free(u);
        if (same)
            return 1;
    }
    return 0;
}

/* A CN that names the server: one of its DNS names, or the text of one of its
 * IP addresses. */
static int server_has_cn_text(const struct srv_policy *p, const unsigned char *cn, size_t n)
{
    char text[64];
    unsigned char bin[16];

    if (server_has_dns(p, cn, n))
        return 1;
    if (n == 0 || n >= sizeof(text) || memchr(cn, '\0', n) != NULL)
        return 0;
    memcpy(text, cn, n);
    text[n] = '\0';
    if (inet_pton(AF_INET, text, bin) == 1)
        return server_has_ip(p, bin, 4);
    if (inet_pton(AF_INET6, text, bin) == 1)
        return server_has_ip(p, bin, 16);
    return 0;
}

/* ----- subjectAltName ---------------------------------------------------- */

/* A host name: letters, digits, '-', '_' and dots between non-empty labels
 * (an optional final dot); no wildcard. */
static int dns_syntax_ok(const ASN1_STRING *s)
{
    const unsigned char *d = ASN1_STRING_get0_data(s);
    size_t n = (size_t)ASN1_STRING_length(s), i;

    if (n == 0 || n > 254 || d == NULL)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = d[i];
        if (c == '.') {
            if (i == 0 || d[i - 1] == '.')
                return 0;
        } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

/* A URI or e-mail address: not empty, no space (controls are caught before). */
static int no_space(const ASN1_STRING *s)
{
    const unsigned char *d = ASN1_STRING_get0_data(s);
    size_t n = (size_t)ASN1_STRING_length(s);
    return n > 0 && d != NULL && memchr(d, ' ', n) == NULL;
}

static int is_string_type(int type)
{
    switch (type) {
    case V_ASN1_UTF8STRING:
    case V_ASN1_BMPSTRING:
    case V_ASN1_UNIVERSALSTRING:
    case V_ASN1_PRINTABLESTRING:
    case V_ASN1_IA5STRING:
    case V_ASN1_NUMERICSTRING:
    case V_ASN1_VISIBLESTRING:
    case V_ASN1_T61STRING:
    case V_ASN1_VIDEOTEXSTRING:
    case V_ASN1_GRAPHICSTRING:
    case V_ASN1_GENERALSTRING:
        return 1;
    default:
        return 0;
    }
}

static enum srv_policy_verdict check_general_name(const struct srv_policy *p, const GENERAL_NAME *g,
                                                  int idx, struct srv_policy_refusal *why)
{
    char what[48];
    enum str_problem pr;

    snprintf(what, sizeof(what), "%s name #%d", san_type_name(g->type), idx + 1);
    if (g->type < 0 || g->type > GEN_RID || (p->san_types & SRV_SAN_TYPE(g->type)) == 0)
        return refuse(why, SRV_POLICY_FORBIDDEN, "allowed-san-types", "%s names are not allowed",
                      san_type_name(g->type));
    switch (g->type) {
    case GEN_DNS:
        if ((pr = check_string(g->d.dNSName)) != STR_OK)
            return string_refusal(why, pr, "subjectAltName", what);
        if (!dns_syntax_ok(g->d.dNSName))
            return refuse(why, SRV_POLICY_BAD_REQUEST, "san-syntax",
                          "%s is not a host name (no wildcards)", what);
        if (!p->allow_server_names && server_has_dns(p, ASN1_STRING_get0_data(g->d.dNSName),
                                                     (size_t)ASN1_STRING_length(g->d.dNSName)))
            return refuse(why, SRV_POLICY_FORBIDDEN, "server-names", "%s is the server's own name",
                          what);
        break;
    case GEN_EMAIL:
    case GEN_URI: {
        const ASN1_IA5STRING *s =
            g->type == GEN_EMAIL ? g->d.rfc822Name : g->d.uniformResourceIdentifier;
        if ((pr = check_string(s)) != STR_OK)
            return string_refusal(why, pr, "subjectAltName", what);
        if (!no_space(s))
            return refuse(why, SRV_POLICY_BAD_REQUEST, "san-syntax", "%s is empty or has a space",
                          what);
        break;
    }
    case GEN_IPADD: {
        int n = ASN1_STRING_length(g->d.iPAddress);
        if (n != 4 && n != 16)
            return refuse(why, SRV_POLICY_BAD_REQUEST, "san-syntax", "%s is %d bytes, not 4 or 16",
                          what, n);
        if (!p->allow_server_names &&
            server_has_ip(p, ASN1_STRING_get0_data(g->d.iPAddress), (size_t)n))
            return refuse(why, SRV_POLICY_FORBIDDEN, "server-names",
                          "%s is the server's own address", what);
        break;
    }
    case GEN_DIRNAME:
        return check_name_strings(g->d.directoryName, "subjectAltName directoryName", why);
    case GEN_OTHERNAME: {
        const ASN1_TYPE *v = g->d.otherName->value;
        /* String-valued otherNames (SmtpUTF8Mailbox, UPN...) are checked like
         * any string; structured ones (hardwareModuleName) are binary. */
        if (v != NULL && is_string_type(v->type) &&
            (pr = check_string(v->value.asn1_string)) != STR_OK && pr != STR_TYPE)
            return string_refusal(why, pr, "subjectAltName", what);
        break;
    }
    case GEN_EDIPARTY: {
        const EDIPARTYNAME *e = g->d.ediPartyName;
        if (e->nameAssigner != NULL && (pr = check_string(e->nameAssigner)) != STR_OK)
            return string_refusal(why, pr, "subjectAltName", what);
        if (e->partyName != NULL && (pr = check_string(e->partyName)) != STR_OK)
            return string_refusal(why, pr, "subjectAltName", what);
        break;
    }
    default: /* registeredID, x400Address: no text to check */
        break;
    }
    return SRV_POLICY_OK;
}

static enum srv_policy_verdict check_san(const struct srv_policy *p, const X509_EXTENSION *ext,
                                         struct srv_policy_refusal *why)
{
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data((X509_EXTENSION *)ext);
    const unsigned char *q = ASN1_STRING_get0_data(v);
    const unsigned char *end = q + ASN1_STRING_length(v);
    GENERAL_NAMES *gens = d2i_GENERAL_NAMES(NULL, &q, ASN1_STRING_length(v));
    enum srv_policy_verdict r = SRV_POLICY_OK;
    int i, n;

    if (gens == NULL || q != end) {
        GENERAL_NAMES_free(gens);
        ERR_clear_error();
        return refuse(why, SRV_POLICY_BAD_REQUEST, "san-syntax", "subjectAltName does not parse");
    }
    n = sk_GENERAL_NAME_num(gens);
    if (n <= 0)
        r = refuse(why, SRV_POLICY_BAD_REQUEST, "san-syntax", "subjectAltName is empty");
    else if (n > p->max_sans)
        r = refuse(why, SRV_POLICY_FORBIDDEN, "max-sans", "%d subjectAltNames, at most %d", n,
                   p->max_sans);
    for (i = 0; r == SRV_POLICY_OK && i < n; i++)
        r = check_general_name(p, sk_GENERAL_NAME_value(gens, i), i, why);
    GENERAL_NAMES_free(gens);
    return r;
}

/* ----- the CN rules ---------------------------------------------------------- */

/* The only entry of `nid` in `name` as UTF-8 (caller frees), or NULL when
 * there is none or more than one. */
static unsigned char *single_entry_utf8(const X509_NAME *name, int nid, int *len)
{
    int i = X509_NAME_get_index_by_NID(name, nid, -1);
    unsigned char *u = NULL;

    if (i < 0 || X509_NAME_get_index_by_NID(name, nid, i) >= 0)
        return NULL;
    *len = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    if (*len < 0) {
        ERR_clear_error();
        return NULL;
    }
    return u;
}

static enum srv_policy_verdict check_cn_rule(const struct srv_policy *p, const X509_NAME *subject,
                                             const X509 *client, struct srv_policy_refusal *why)
{
    int want_nid = p->cn_rule == SRV_CN_CLIENT_CN ? NID_commonName : NID_serialNumber;
    const char *what = p->cn_rule == SRV_CN_CLIENT_CN ? "CN" : "serialNumber";
    unsigned char *want = NULL, *have = NULL;
    int want_len = 0, have_len = 0;
    enum srv_policy_verdict r = SRV_POLICY_OK;

    if (client == NULL)
        return refuse(why, SRV_POLICY_FORBIDDEN, "cn-must-match", "no client certificate");
    want = single_entry_utf8(X509_get_subject_name(client), want_nid, &want_len);
    have = single_entry_utf8(subject, NID_commonName, &have_len);
    if (want == NULL)
        r = refuse(why, SRV_POLICY_FORBIDDEN, "cn-must-match",
                   "the client certificate has no single %s", what);
    else if (have == NULL)
        r = refuse(why, SRV_POLICY_FORBIDDEN, "cn-must-match", "the CSR must have one CN");
    else if (have_len != want_len || memcmp(have, want, (size_t)have_len) != 0)
        r = refuse(why, SRV_POLICY_FORBIDDEN, "cn-must-match",
                   "the CN must be the client certificate's %s", what);
    OPENSSL_free(want);
    OPENSSL_free(have);
    return r;
}

/* ----- the whole CSR ---------------------------------------------------------- */

enum srv_policy_verdict srv_policy_check_csr(const struct srv_policy *p, const X509_REQ *req,
                                             const X509 *client, int renewal,
                                             struct srv_policy_refusal *why)
{
    const X509_NAME *subject = X509_REQ_get_subject_name(req);
    STACK_OF(X509_EXTENSION) *exts = NULL;
    enum srv_policy_verdict r;
    int i, n_ext_attrs = 0, n_san = 0;

    why->rule = NULL;
    why->diag[0] = '\0';
    if (subject == NULL)
        return refuse(why, SRV_POLICY_BAD_REQUEST, "csr-syntax", "no subject");
    r = check_name_strings(subject, "subject", why);
    if (r != SRV_POLICY_OK)
        return r;

    /* One extension request, with one value, that parses (the CA copies
     * the SAN from what X509_REQ_get_extensions finds). */
    for (i = 0; i < X509_REQ_get_attr_count(req); i++) {
        const X509_ATTRIBUTE *a = X509_REQ_get_attr(req, i);
        int nid = OBJ_obj2nid(X509_ATTRIBUTE_get0_object((X509_ATTRIBUTE *)a));
        if (nid == NID_ext_req || nid == NID_ms_ext_req) {
            n_ext_attrs++;
            if (X509_ATTRIBUTE_count(a) != 1)
                return refuse(why, SRV_POLICY_BAD_REQUEST, "csr-syntax",
                              "the extension request must hold one value");
        }
    }
    if (n_ext_attrs > 1)
        return refuse(why, SRV_POLICY_BAD_REQUEST, "csr-syntax", "more than one extension request");
    exts = X509_REQ_get_extensions((X509_REQ *)req);
    if (exts == NULL) {
        ERR_clear_error();
        return refuse(why, SRV_POLICY_BAD_REQUEST, "csr-syntax",
                      "the extension request does not parse");
    }
    for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        const X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object((X509_EXTENSION *)e)) != NID_subject_alt_name)
            continue;
        if (++n_san > 1) {
            r = refuse(why, SRV_POLICY_BAD_REQUEST, "san-syntax", "more than one subjectAltName");
            goto out;
        }
        r = check_san(p, e, why);
        if (r != SRV_POLICY_OK)
            goto out;
    }

    /* A CN that names the server. */
    if (!p->allow_server_names) {
        for (i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) {
            unsigned char *u = NULL;
            int un =
                ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
            int own = un > 0 && server_has_cn_text(p, u, (size_t)un);
            OPENSSL_free(u);
            ERR_clear_error();
            if (own) {
                r = refuse(why, SRV_POLICY_FORBIDDEN, "server-names",
                           "the CN is the server's own name");
                goto out;
            }
        }
    }

    /* sren: the identity rule binds the subject to the current certificate. */
    if (!renewal && p->cn_rule != SRV_CN_ANY) {
        r = check_cn_rule(p, subject, client, why);
        if (r != SRV_POLICY_OK)
            goto out;
    }
    r = SRV_POLICY_OK;
out:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return r;
}

/* ----- sren ------------------------------------------------------------------ */

/* The DER of the one subjectAltName extension value; NULL when there is none
 * (*count 0) or several (*count > 1). */
static const ASN1_OCTET_STRING *only_san(const STACK_OF(X509_EXTENSION) * exts, int *count)
{
    const ASN1_OCTET_STRING *v = NULL;
    int i;

    *count = 0;
    for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name) {
            v = X509_EXTENSION_get_data(e);
            (*count)++;
        }
    }
    return *count == 1 ? v : NULL;
}

static int same_der_name(const X509_NAME *a, const X509_NAME *b)
{
    unsigned char *da = NULL, *db = NULL;
    int na = i2d_X509_NAME(a, &da), nb = i2d_X509_NAME(b, &db);
    int same = na > 0 && na == nb && memcmp(da, db, (size_t)na) == 0;

    OPENSSL_free(da);
    OPENSSL_free(db);
    return same;
}

int srv_policy_same_identity(const X509 *cert, const X509_REQ *req)
{
    STACK_OF(X509_EXTENSION) *rexts = X509_REQ_get_extensions((X509_REQ *)req);
    const ASN1_OCTET_STRING *a, *b;
    int na = 0, nb = 0, same;

    if (rexts == NULL) {
        ERR_clear_error();
        return 0;
    }
    same = same_der_name(X509_get_subject_name(cert), X509_REQ_get_subject_name(req));
    a = only_san(X509_get0_extensions(cert), &na);
    b = only_san(rexts, &nb);
    if (na > 1 || nb > 1 || na != nb)
        same = 0;
    else if (a != NULL && b != NULL &&
             (ASN1_STRING_length(a) != ASN1_STRING_length(b) ||
              memcmp(ASN1_STRING_get0_data(a), ASN1_STRING_get0_data(b),
                     (size_t)ASN1_STRING_length(a)) != 0))
        same = 0;
    sk_X509_EXTENSION_pop_free(rexts, X509_EXTENSION_free);
    return same;
}
