/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a pkcs11: address says. The framework has parsed it into RFC 7512
 * attributes (the driver declares ESTC_CAP_ATTRIBUTES); here each attribute
 * is given its meaning. The token, slot and module attributes go to
 * p11-kit's matcher; object, id, type, slot-id, the PIN and the module are
 * read by the driver itself. Derived addresses are composed from the
 * attributes of the prefix.
 */
#include "p11_internal.h"

#include <stdlib.h>
#include <string.h>

/* What an attribute is for, and where it may stand. */
enum role {
    ROLE_MATCH, /* token, slot or module: p11-kit matches it */
    ROLE_OBJECT,
    ROLE_ID,
    ROLE_TYPE,
    ROLE_SLOT_ID,
    ROLE_PIN_VALUE,
    ROLE_PIN_SOURCE,
    ROLE_MODULE_PATH,
    ROLE_MODULE_NAME,
    ROLE_INIT_RESERVED,
};
#define IN_PATH 1u
#define IN_QUERY 2u

static const struct known {
    const char *name;
    enum role role;
    unsigned where;
} known_attrs[] = {
    {"token", ROLE_MATCH, IN_PATH},
    {"manufacturer", ROLE_MATCH, IN_PATH},
    {"serial", ROLE_MATCH, IN_PATH},
    {"model", ROLE_MATCH, IN_PATH},
    {"slot-description", ROLE_MATCH, IN_PATH},
    {"slot-manufacturer", ROLE_MATCH, IN_PATH},
    {"library-manufacturer", ROLE_MATCH, IN_PATH},
    {"library-description", ROLE_MATCH, IN_PATH},
    {"library-version", ROLE_MATCH, IN_PATH},
    {"slot-id", ROLE_SLOT_ID, IN_PATH},
    {"object", ROLE_OBJECT, IN_PATH},
    {"id", ROLE_ID, IN_PATH},
    {"type", ROLE_TYPE, IN_PATH},
    /* Older spellings that p11-kit accepts too. */
    {"object-type", ROLE_TYPE, IN_PATH},
    {"objecttype", ROLE_TYPE, IN_PATH},
    {"pinfile", ROLE_PIN_SOURCE, IN_PATH},
    /* RFC 7512 puts these in the query; p11-kit takes the PIN in the path too. */
    {"pin-value", ROLE_PIN_VALUE, IN_PATH | IN_QUERY},
    {"pin-source", ROLE_PIN_SOURCE, IN_PATH | IN_QUERY},
    {"module-name", ROLE_MODULE_NAME, IN_QUERY},
    {"module-path", ROLE_MODULE_PATH, IN_QUERY},
    /* p11-kit's module option of that name: CK_C_INITIALIZE_ARGS.pReserved
     * for modules that take their configuration there (NSS softokn). */
    {"x-init-reserved", ROLE_INIT_RESERVED, IN_QUERY},
};

static const struct known *known_attr(const char *name)
{
    for (size_t i = 0; i < sizeof(known_attrs) / sizeof(known_attrs[0]); i++) {
        if (strcmp(known_attrs[i].name, name) == 0) {
            return &known_attrs[i];
        }
    }
    return NULL;
}

/* The object classes type= names (as p11-kit spells them). */
static const struct {
    const char *name;
    CK_OBJECT_CLASS cls;
} type_names[] = {
    {"cert", CKO_CERTIFICATE},      {"public", CKO_PUBLIC_KEY},    {"private", CKO_PRIVATE_KEY},
    {"secret-key", CKO_SECRET_KEY}, {"secretkey", CKO_SECRET_KEY}, {"data", CKO_DATA},
};

static const char hex[] = "0123456789ABCDEF";

/* Append @len bytes of @value to @s at *@o, percent-encoded: everything but
 * letters, digits, "-._~" and the characters of @plain. */
static void pct_encode(char *s, size_t *o, const void *value, size_t len, const char *plain)
{
    const unsigned char *v = value;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = v[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' ||
            (c != '\0' && strchr(plain, c) != NULL)) {
            s[(*o)++] = (char)c;
        } else {
            s[(*o)++] = '%';
            s[(*o)++] = hex[c >> 4];
            s[(*o)++] = hex[c & 15];
        }
    }
}

/* What RFC 7512 allows unencoded in path and in query values besides the
 * unreserved characters. */
#define PATH_PLAIN ":@!$'()*+,="
#define QUERY_PLAIN ":@!$'()*+,=/"

static void append(char *s, size_t *o, const char *text)
{
    size_t n = strlen(text);
    memcpy(s + *o, text, n);
    *o += n;
}

/* The token, slot and module attributes as a URI of their own, for p11-kit's
 * parser and matcher (which give them their meaning: padding, versions). */
static estc_err load_match(struct p11_op *op)
{
    const estc_address *a = op->addr;
    size_t cap = sizeof("pkcs11:");
    for (size_t i = 0; i < a->n_path; i++) {
        cap += strlen(a->path[i].name) + 2 + 3 * a->path[i].value_len;
    }
    char *s = malloc(cap);
    if (s == NULL) {
        return estc__p11_nomem(op);
    }
    size_t o = 0;
    append(s, &o, "pkcs11:");
    const char *sep = "";
    for (size_t i = 0; i < a->n_path; i++) {
        const struct known *k = known_attr(a->path[i].name);
        if (k == NULL || k->role != ROLE_MATCH) {
            continue;
        }
        append(s, &o, sep);
        sep = ";";
        append(s, &o, a->path[i].name);
        s[o++] = '=';
        pct_encode(s, &o, a->path[i].value, a->path[i].value_len, "");
    }
    s[o] = '\0';
    op->uri.match = p11_kit_uri_new();
    if (op->uri.match == NULL) {
        free(s);
        return estc__p11_nomem(op);
    }
    int rc = p11_kit_uri_parse(s, P11_KIT_URI_FOR_ANY, op->uri.match);
    free(s);
    if (rc != P11_KIT_URI_OK) {
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: not a PKCS#11 URI: %s", op->shown,
                          p11_kit_uri_message(rc));
    }
    if (p11_kit_uri_any_unrecognized(op->uri.match)) {
        /* A value too long for its field, which could match nothing. */
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: unknown attribute in PKCS#11 URI",
                          op->shown);
    }
    return ESTC_OK;
}

static estc_err load_type(struct p11_op *op, const estc_attr *a)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
        if (strcmp(type_names[i].name, a->value) == 0) {
            op->uri.cls_value = type_names[i].cls;
            op->uri.cls_attr =
                (CK_ATTRIBUTE){CKA_CLASS, &op->uri.cls_value, sizeof(op->uri.cls_value)};
            op->uri.cls = &op->uri.cls_attr;
            return ESTC_OK;
        }
    }
    return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS,
                      "%s: unknown attribute in PKCS#11 URI: %s= names no object class", op->shown,
                      a->name);
}

static estc_err load_slot_id(struct p11_op *op, const estc_attr *a)
{
    CK_SLOT_ID v = 0;
    bool ok = a->value_len > 0;
    for (size_t i = 0; ok && i < a->value_len; i++) {
        unsigned d = (unsigned)(a->value[i] - '0');
        ok = d <= 9 && v <= ((CK_SLOT_ID)-2 - d) / 10;
        v = v * 10 + d;
    }
    if (!ok) {
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: not a PKCS#11 URI: bad slot-id",
                          op->shown);
    }
    op->uri.slot_id = v;
    return ESTC_OK;
}

/* Give one attribute its meaning. *@seen holds the roles met so far: a role
 * given twice under two spellings is as ambiguous as a repeated name. */
static estc_err load_attr(struct p11_op *op, const estc_attr *a, unsigned where, unsigned *seen)
{
    struct p11_uri *u = &op->uri;
    const struct known *k = known_attr(a->name);
    if (k == NULL || (k->where & where) == 0) {
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS,
                          where == IN_QUERY ? "%s: not a PKCS#11 URI: unknown query attribute %s"
                                            : "%s: unknown attribute in PKCS#11 URI: %s",
                          op->shown, a->name);
    }
    if (k->role != ROLE_MATCH && (*seen & (1u << k->role)) != 0) {
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: not a PKCS#11 URI: attribute given twice (%s)", op->shown, a->name);
    }
    *seen |= 1u << k->role;
    switch (k->role) {
    case ROLE_OBJECT:
        u->label_attr = (CK_ATTRIBUTE){CKA_LABEL, (void *)a->value, a->value_len};
        u->label = &u->label_attr;
        return ESTC_OK;
    case ROLE_ID:
        u->id_attr = (CK_ATTRIBUTE){CKA_ID, (void *)a->value, a->value_len};
        u->id = &u->id_attr;
        return ESTC_OK;
    case ROLE_TYPE:
        return load_type(op, a);
    case ROLE_SLOT_ID:
        return load_slot_id(op, a);
    case ROLE_PIN_VALUE:
        if (a->value_len > PIN_MAX) {
            return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: pin-value is too long",
                              op->shown);
        }
        u->pin_value = a;
        return ESTC_OK;
    case ROLE_PIN_SOURCE:
        u->pin_source = a;
        return ESTC_OK;
    case ROLE_MODULE_PATH:
        u->module_path = a;
        return ESTC_OK;
    case ROLE_MODULE_NAME:
        u->module_name = a;
        return ESTC_OK;
    case ROLE_INIT_RESERVED:
        u->init_reserved = a;
        return ESTC_OK;
    case ROLE_MATCH:
        break;
    }
    return ESTC_OK;
}

/* Read the attributes of op->addr into op->uri; no token is touched. */
estc_err estc__p11_uri_load(struct p11_op *op)
{
    const estc_address *a = op->addr;
    unsigned seen = 0;
    memset(&op->uri, 0, sizeof(op->uri));
    op->uri.slot_id = (CK_SLOT_ID)-1;
    estc_err err = ESTC_OK;
    for (size_t i = 0; err == ESTC_OK && i < a->n_path; i++) {
        err = load_attr(op, &a->path[i], IN_PATH, &seen);
    }
    for (size_t i = 0; err == ESTC_OK && i < a->n_query; i++) {
        err = load_attr(op, &a->query[i], IN_QUERY, &seen);
    }
    if (err == ESTC_OK && op->uri.init_reserved != NULL && op->uri.module_name != NULL) {
        /* A registered module takes its x-init-reserved from p11-kit's
         * configuration; two sources would be ambiguous. */
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: x-init-reserved goes with module-path, not module-name", op->shown);
    }
    if (err == ESTC_OK) {
        err = load_match(op);
    }
    return err;
}

void estc__p11_uri_clear(struct p11_uri *uri)
{
    if (uri->match != NULL) {
        p11_kit_uri_free(uri->match);
        uri->match = NULL;
    }
}

/* A type= in the address must fit the operation. */
static estc_err check_type(struct p11_op *op, unsigned needs)
{
    if (op->uri.cls == NULL) {
        return ESTC_OK;
    }
    CK_OBJECT_CLASS cls = op->uri.cls_value;
    bool fits =
        ((needs & P11_TYPE_KEY) != 0 && (cls == CKO_PRIVATE_KEY || cls == CKO_PUBLIC_KEY)) ||
        ((needs & P11_TYPE_PRIVATE) != 0 && cls == CKO_PRIVATE_KEY) ||
        ((needs & P11_TYPE_CERT) != 0 && cls == CKO_CERTIFICATE);
    if (fits) {
        return ESTC_OK;
    }
    return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS,
                      "%s: the type= of the address does not fit this operation", op->shown);
}

/* The object checks of @needs (P11_OBJECT, P11_LABEL, P11_TYPE_*). */
estc_err estc__p11_uri_check(struct p11_op *op, unsigned needs)
{
    const CK_ATTRIBUTE *label = op->uri.label, *id = op->uri.id;
    bool need_label = (needs & P11_LABEL) != 0;
    if ((needs & (P11_OBJECT | P11_LABEL)) != 0) {
        if (label == NULL && (need_label || id == NULL)) {
            return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: the address names no object%s",
                              op->shown, need_label ? " (object= is required here)" : "");
        }
        if ((label != NULL && label->ulValueLen == 0) || (id != NULL && id->ulValueLen == 0)) {
            return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty object= or id=", op->shown);
        }
    }
    if ((needs & (P11_TYPE_KEY | P11_TYPE_PRIVATE | P11_TYPE_CERT)) != 0) {
        return check_type(op, needs);
    }
    return ESTC_OK;
}

/* The CKA_ID the address gives for a new object, when it gives one. */
estc_err estc__p11_uri_id(struct p11_op *op, uint8_t id[64], CK_ULONG *id_len, bool *given)
{
    const CK_ATTRIBUTE *a = op->uri.id;
    *given = a != NULL;
    if (a == NULL) {
        return ESTC_OK;
    }
    if (a->ulValueLen > 64) {
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: id is too long", op->shown);
    }
    memcpy(id, a->pValue, a->ulValueLen);
    *id_len = a->ulValueLen;
    return ESTC_OK;
}

static bool drop_in_derived(const char *name)
{
    const struct known *k = known_attr(name);
    return k != NULL && (k->role == ROLE_OBJECT || k->role == ROLE_ID || k->role == ROLE_TYPE);
}

/* The address of the object labelled @label under @prefix: the prefix's
 * path attributes without object=, id= and type= (the prefix names the
 * token; the label names the object), then object=<label>, then the prefix's
 * query attributes. Every value is percent-encoded the same way every time,
 * so that listed and derived addresses compare equal as strings.
 * ESTC_ERR_BAD_ADDRESS when the address would be too long. */
estc_err estc__p11_uri_derive(const estc_address *prefix, const void *label, size_t label_len,
                              char **out)
{
    size_t cap = sizeof("pkcs11:object=") + 3 * label_len + 1;
    for (size_t i = 0; i < prefix->n_path + prefix->n_query; i++) {
        const estc_attr *a =
            i < prefix->n_path ? &prefix->path[i] : &prefix->query[i - prefix->n_path];
        cap += strlen(a->name) + 2 + 3 * a->value_len;
    }
    char *s = malloc(cap);
    if (s == NULL) {
        return ESTC_ERR_NOMEM;
    }
    size_t o = 0;
    append(s, &o, "pkcs11:");
    for (size_t i = 0; i < prefix->n_path; i++) {
        const estc_attr *a = &prefix->path[i];
        if (!drop_in_derived(a->name)) {
            append(s, &o, a->name);
            s[o++] = '=';
            pct_encode(s, &o, a->value, a->value_len, PATH_PLAIN);
            s[o++] = ';';
        }
    }
    append(s, &o, "object=");
    pct_encode(s, &o, label, label_len, "");
    for (size_t i = 0; i < prefix->n_query; i++) {
        const estc_attr *a = &prefix->query[i];
        s[o++] = i == 0 ? '?' : '&';
        append(s, &o, a->name);
        s[o++] = '=';
        pct_encode(s, &o, a->value, a->value_len, QUERY_PLAIN);
    }
    s[o] = '\0';
    if (o > ESTC_ADDRESS_MAX) {
        free(s);
        return ESTC_ERR_BAD_ADDRESS;
    }
    *out = s;
    return ESTC_OK;
}

/* The address of the object called @name under the prefix op->addr. An
 * object= in the prefix is a label prefix: the namespace of the objects made
 * under it, and what list() filters on. */
estc_err estc__p11_derive(struct p11_op *op, const char *name, char **out)
{
    const CK_ATTRIBUTE *ns = op->uri.label;
    size_t ns_len = ns != NULL ? ns->ulValueLen : 0;
    size_t name_len = strlen(name);
    char *label = malloc(ns_len + name_len + 1);
    if (label == NULL) {
        return estc__p11_nomem(op);
    }
    if (ns_len > 0) {
        memcpy(label, ns->pValue, ns_len);
    }
    memcpy(label + ns_len, name, name_len + 1);
    estc_err err = estc__p11_uri_derive(op->addr, label, ns_len + name_len, out);
    free(label);
    if (err == ESTC_ERR_NOMEM) {
        return estc__p11_nomem(op);
    }
    if (err != ESTC_OK) {
        return estc_error(op->ctx, err, "%s: cannot derive an address for %s", op->shown, name);
    }
    return ESTC_OK;
}
