/*
 * The PKCS#11 driver: keys and certificates in a token, addressed by RFC 7512
 * URIs ("pkcs11:token=T;object=K;pin-value=1234?module-path=/usr/lib/x.so").
 *
 * p11-kit parses and matches the URIs and loads the modules. Each module is
 * loaded once per context (managed by p11-kit, so several contexts and other
 * libraries in the process can share it), each token gets one read/write
 * session, and the user logs in once per token. After fork() the child
 * re-initializes the modules before its first operation, as PKCS#11 requires.
 */
#include "ckr.h"
#include "util.h"

#include <estc/engine.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define PIN_MAX 256
#define LIST_MAX_OBJECTS 4096
/* CKA_CERTIFICATE_CATEGORY values (PKCS#11 2.20). */
#define CERT_CATEGORY_USER 1
#define CERT_CATEGORY_AUTHORITY 2

static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};

struct p11_module {
    struct p11_module *next;
    char *key; /* module path, or "name:<registered name>" */
    CK_FUNCTION_LIST *fn;
    bool owned;     /* released on its own (else part of the registered list) */
    pid_t init_pid; /* process that initialized it, 0 when not initialized */
    bool broken;    /* a registered module that failed to initialize */
    CK_INFO info;
    bool have_info;
};

/* A found object's handle, kept to spare the next call a C_FindObjects
 * (which costs a directory scan on file-backed tokens). */
#define HCACHE_SIZE 16
#define HCACHE_LABEL_MAX 128
#define HCACHE_ID_MAX 64
struct hcache_entry {
    bool used, has_label, has_id;
    CK_OBJECT_CLASS cls;
    CK_ULONG label_len, id_len;
    uint8_t label[HCACHE_LABEL_MAX];
    uint8_t id[HCACHE_ID_MAX];
    CK_OBJECT_HANDLE h;
};

struct p11_token {
    struct p11_token *next;
    struct p11_module *mod;
    CK_SLOT_ID slot;
    CK_SLOT_INFO slot_info;
    CK_TOKEN_INFO info;
    CK_SESSION_HANDLE session;
    bool has_session;
    bool stale; /* gone or re-initialized: look it up again */
    struct hcache_entry hc[HCACHE_SIZE];
    unsigned hc_next;
};

struct p11_state {
    pid_t pid;
    struct p11_module *modules;
    struct p11_token *tokens;
    CK_FUNCTION_LIST **registered; /* p11-kit's registered modules, loaded on demand */
    bool registered_loaded;
};

/* One operation on one address. */
struct p11_op {
    estc_ctx *ctx;
    struct p11_state *st;
    const char *addr;
    char shown[ESTC_ADDRESS_MAX + 16]; /* the address with its PIN hidden */
    P11KitUri *uri;
    struct p11_token *tok;
    CK_FUNCTION_LIST *fn;
    CK_SESSION_HANDLE s;
    char pin[PIN_MAX + 1];
    size_t pin_len;
    bool have_pin;
    bool logged_in; /* the token is logged in for this process */
    CK_RV rv;       /* the last PKCS#11 failure */
};

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static const char *rv_name(CK_RV rv, char buf[32])
{
    const char *name = estc__ckr_name(rv);
    if (name != NULL) {
        return name;
    }
    snprintf(buf, 32, "CKR_0x%lx", (unsigned long)rv);
    return buf;
}

static estc_err rv_to_err(CK_RV rv)
{
    switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LOCKED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_USER_PIN_NOT_INITIALIZED:
    case CKR_USER_TYPE_INVALID:
    case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
        return ESTC_ERR_AUTH;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_SIZE_RANGE:
    case CKR_CURVE_NOT_SUPPORTED:
    case CKR_DOMAIN_PARAMS_INVALID:
    case CKR_FUNCTION_NOT_SUPPORTED:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
        return ESTC_ERR_UNSUPPORTED;
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
        return ESTC_ERR_NOT_FOUND;
    case CKR_HOST_MEMORY:
        return ESTC_ERR_NOMEM;
    default:
        return ESTC_ERR_ENGINE;
    }
}

/* Record a failed PKCS#11 call: "<address>: C_Sign: CKR_KEY_HANDLE_INVALID". */
static estc_err p11_fail(struct p11_op *op, const char *call, CK_RV rv)
{
    char buf[32];
    op->rv = rv;
    return estc_error(op->ctx, rv_to_err(rv), "%s: %s: %s", op->shown, call, rv_name(rv, buf));
}

/* Copy @addr into @out with every pin-value hidden. */
static void redact(const char *addr, char *out, size_t out_size)
{
    static const char attr[] = "pin-value=";
    size_t o = 0;
    const char *p = addr;

    while (*p != '\0' && o + 1 < out_size) {
        bool at_attr =
            (p == addr || p[-1] == ':' || p[-1] == ';' || p[-1] == '?' || p[-1] == '&') &&
            strncmp(p, attr, sizeof(attr) - 1) == 0;
        if (!at_attr) {
            out[o++] = *p++;
            continue;
        }
        const char *mask = "pin-value=***";
        for (const char *m = mask; *m != '\0' && o + 1 < out_size; m++) {
            out[o++] = *m;
        }
        p += sizeof(attr) - 1;
        while (*p != '\0' && *p != ';' && *p != '?' && *p != '&') {
            p++;
        }
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Modules                                                                   */
/* ------------------------------------------------------------------------ */

/* Forget everything that belongs to the parent after fork(): the child must
 * initialize the modules again and open its own sessions. */
static void check_fork(struct p11_state *st)
{
    pid_t pid = getpid();
    if (st->pid == pid) {
        return;
    }
    st->pid = pid;
    for (struct p11_token *t = st->tokens; t != NULL; t = t->next) {
        t->has_session = false;
    }
}

static estc_err module_ready(struct p11_op *op, struct p11_module *mod)
{
    if (mod->init_pid == getpid()) {
        return ESTC_OK;
    }
    CK_RV rv = p11_kit_module_initialize(mod->fn);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        return p11_fail(op, "C_Initialize", rv);
    }
    mod->init_pid = getpid();
    return ESTC_OK;
}

static struct p11_module *module_add(struct p11_state *st, const char *key, CK_FUNCTION_LIST *fn,
                                     bool owned)
{
    struct p11_module *mod = calloc(1, sizeof(*mod));
    if (mod == NULL) {
        return NULL;
    }
    mod->key = strdup(key);
    if (mod->key == NULL) {
        free(mod);
        return NULL;
    }
    mod->fn = fn;
    mod->owned = owned;
    mod->next = st->modules;
    st->modules = mod;
    return mod;
}

/* The module at @path, loaded once per context. */
static estc_err module_by_path(struct p11_op *op, const char *path, struct p11_module **out)
{
    for (struct p11_module *m = op->st->modules; m != NULL; m = m->next) {
        if (m->owned && strcmp(m->key, path) == 0) {
            *out = m;
            return module_ready(op, m);
        }
    }
    CK_FUNCTION_LIST *fn = p11_kit_module_load(path, 0);
    if (fn == NULL) {
        const char *msg = p11_kit_message();
        return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: cannot load PKCS#11 module %s: %s",
                          op->shown, path, msg != NULL ? msg : "unknown error");
    }
    struct p11_module *mod = module_add(op->st, path, fn, true);
    if (mod == NULL) {
        p11_kit_module_release(fn);
        return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
    }
    *out = mod;
    return module_ready(op, mod);
}

/* p11-kit's registered modules (its configuration), loaded once. */
static estc_err registered_modules(struct p11_op *op)
{
    struct p11_state *st = op->st;
    if (st->registered_loaded) {
        return ESTC_OK;
    }
    CK_FUNCTION_LIST **list = p11_kit_modules_load(NULL, 0);
    if (list == NULL) {
        const char *msg = p11_kit_message();
        return estc_error(op->ctx, ESTC_ERR_ENGINE,
                          "%s: cannot load the p11-kit registered modules: %s", op->shown,
                          msg != NULL ? msg : "unknown error");
    }
    /* Added at the head one by one: walk backwards to keep p11-kit's order. */
    size_t n_mods = 0;
    while (list[n_mods] != NULL) {
        n_mods++;
    }
    for (size_t i = n_mods; i-- > 0;) {
        char *name = p11_kit_module_get_name(list[i]);
        char key[300];
        snprintf(key, sizeof(key), "name:%s", name != NULL ? name : "");
        free(name);
        if (module_add(st, key, list[i], false) == NULL) {
            /* Drop the entries added so far; they point into the list. */
            struct p11_module **pp = &st->modules;
            while (*pp != NULL) {
                struct p11_module *m = *pp;
                if (!m->owned) {
                    *pp = m->next;
                    free(m->key);
                    free(m);
                } else {
                    pp = &m->next;
                }
            }
            p11_kit_modules_release(list);
            return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
        }
    }
    st->registered = list;
    st->registered_loaded = true;
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Tokens, sessions and login                                                */
/* ------------------------------------------------------------------------ */

static bool slot_matches(struct p11_op *op, CK_FUNCTION_LIST *fn, CK_SLOT_ID slot,
                         CK_SLOT_INFO *sinfo)
{
    CK_SLOT_ID want = p11_kit_uri_get_slot_id(op->uri);
    if (want != (CK_SLOT_ID)-1 && want != slot) {
        return false;
    }
    if (fn->C_GetSlotInfo(slot, sinfo) != CKR_OK) {
        return false;
    }
    return p11_kit_uri_match_slot_info(op->uri, sinfo) == 1;
}

/* A token this context already has a session with, when it matches: no
 * slot enumeration for the common case of one token used again and again. */
static bool cached_token(struct p11_op *op, struct p11_module *mod)
{
    CK_SLOT_ID want = p11_kit_uri_get_slot_id(op->uri);
    for (struct p11_token *t = op->st->tokens; t != NULL; t = t->next) {
        if (t->mod == mod && t->has_session && !t->stale &&
            (want == (CK_SLOT_ID)-1 || want == t->slot) &&
            p11_kit_uri_match_slot_info(op->uri, &t->slot_info) == 1 &&
            p11_kit_uri_match_token_info(op->uri, &t->info) == 1) {
            op->tok = t;
            return true;
        }
    }
    return false;
}

static estc_err token_in_module(struct p11_op *op, struct p11_module *mod, bool *found)
{
    CK_FUNCTION_LIST *fn = mod->fn;
    CK_ULONG n = 0;
    *found = false;

    CK_RV rv;
    if (!mod->have_info) {
        rv = fn->C_GetInfo(&mod->info);
        if (rv != CKR_OK) {
            return p11_fail(op, "C_GetInfo", rv);
        }
        mod->have_info = true;
    }
    if (p11_kit_uri_match_module_info(op->uri, &mod->info) != 1) {
        return ESTC_OK;
    }
    if (cached_token(op, mod)) {
        *found = true;
        return ESTC_OK;
    }
    rv = fn->C_GetSlotList(CK_TRUE, NULL, &n);
    if (rv != CKR_OK) {
        return p11_fail(op, "C_GetSlotList", rv);
    }
    if (n == 0) {
        return ESTC_OK;
    }
    CK_SLOT_ID *slots = calloc(n, sizeof(*slots));
    if (slots == NULL) {
        return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
    }
    rv = fn->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK) {
        free(slots);
        return p11_fail(op, "C_GetSlotList", rv);
    }
    for (CK_ULONG i = 0; i < n && !*found; i++) {
        CK_TOKEN_INFO tinfo;
        CK_SLOT_INFO sinfo;
        if (!slot_matches(op, fn, slots[i], &sinfo)) {
            continue;
        }
        if (fn->C_GetTokenInfo(slots[i], &tinfo) != CKR_OK) {
            continue;
        }
        if (p11_kit_uri_match_token_info(op->uri, &tinfo) != 1) {
            continue;
        }
        struct p11_token *t = NULL;
        for (t = op->st->tokens; t != NULL; t = t->next) {
            if (t->mod == mod && t->slot == slots[i]) {
                break;
            }
        }
        if (t == NULL) {
            t = calloc(1, sizeof(*t));
            if (t == NULL) {
                free(slots);
                return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
            }
            t->mod = mod;
            t->slot = slots[i];
            t->next = op->st->tokens;
            op->st->tokens = t;
        }
        t->slot_info = sinfo;
        t->info = tinfo;
        t->stale = false;
        op->tok = t;
        *found = true;
    }
    free(slots);
    return ESTC_OK;
}

static estc_err find_token(struct p11_op *op)
{
    estc_err err;
    bool found = false;
    const char *path = p11_kit_uri_get_module_path(op->uri);
    const char *name = p11_kit_uri_get_module_name(op->uri);
    struct p11_module *mod = NULL;

    if (path == NULL && name == NULL) {
        path = secure_getenv("PKCS11_MODULE_PATH");
        if (path != NULL && path[0] == '\0') {
            path = NULL;
        }
    }
    if (path != NULL) {
        err = module_by_path(op, path, &mod);
        if (err != ESTC_OK) {
            return err;
        }
        err = token_in_module(op, mod, &found);
    } else {
        /* module-name, or every module p11-kit has registered. */
        err = registered_modules(op);
        bool named = false;
        for (mod = op->st->modules; err == ESTC_OK && !found && mod != NULL; mod = mod->next) {
            if (mod->owned || mod->broken) {
                continue;
            }
            if (name != NULL && strcmp(mod->key + strlen("name:"), name) != 0) {
                continue;
            }
            named = true;
            err = module_ready(op, mod);
            if (err != ESTC_OK && name == NULL) {
                /* A registered module that does not work must not hide the others. */
                mod->broken = true;
                estc_ctx_clear_error(op->ctx);
                err = ESTC_OK;
                continue;
            }
            if (err == ESTC_OK) {
                err = token_in_module(op, mod, &found);
                if (err != ESTC_OK && name == NULL) {
                    estc_ctx_clear_error(op->ctx);
                    err = ESTC_OK;
                }
            }
        }
        if (err == ESTC_OK && name != NULL && !named) {
            return estc_error(op->ctx, ESTC_ERR_ENGINE,
                              "%s: no registered PKCS#11 module is called %s", op->shown, name);
        }
    }
    if (err != ESTC_OK) {
        return err;
    }
    if (!found) {
        /* Not ESTC_ERR_NOT_FOUND: the objects may well exist on a token
         * that is only unplugged, and must not be taken for removed. */
        op->rv = CKR_TOKEN_NOT_PRESENT;
        return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: no token matches: CKR_TOKEN_NOT_PRESENT",
                          op->shown);
    }
    return ESTC_OK;
}

static estc_err read_pin_source(struct p11_op *op, const char *source)
{
    const char *path = source;
    if (strncmp(path, "file:", 5) == 0) {
        path += 5;
        /* "file:///x" and "file:/x" both name /x. */
        if (strncmp(path, "//", 2) == 0) {
            path += 2;
        }
    }
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return estc_error(op->ctx, ESTC_ERR_AUTH, "%s: cannot read pin-source %s: %s", op->shown,
                          path, strerror(errno));
    }
    size_t n = fread(op->pin, 1, PIN_MAX, f);
    bool too_long = (n == PIN_MAX && fgetc(f) != EOF);
    fclose(f);
    if (too_long) {
        OPENSSL_cleanse(op->pin, sizeof(op->pin));
        return estc_error(op->ctx, ESTC_ERR_AUTH, "%s: pin-source %s is too long", op->shown, path);
    }
    while (n > 0 && (op->pin[n - 1] == '\n' || op->pin[n - 1] == '\r')) {
        n--;
    }
    op->pin[n] = '\0';
    op->pin_len = n;
    op->have_pin = true;
    return ESTC_OK;
}

static estc_err get_pin(struct p11_op *op)
{
    const char *val = p11_kit_uri_get_pin_value(op->uri);
    const char *source = p11_kit_uri_get_pin_source(op->uri);
    if (val != NULL) {
        size_t n = strlen(val);
        if (n > PIN_MAX) {
            return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: pin-value is too long",
                              op->shown);
        }
        memcpy(op->pin, val, n + 1);
        op->pin_len = n;
        op->have_pin = true;
        return ESTC_OK;
    }
    if (source != NULL) {
        return read_pin_source(op, source);
    }
    return ESTC_OK;
}

/* Open the token's session if needed and log in when a PIN is given and the
 * session is not logged in yet (once per token: the login holds for every
 * session of this application on the token). */
static estc_err session_ready(struct p11_op *op)
{
    struct p11_token *t = op->tok;
    CK_FUNCTION_LIST *fn = t->mod->fn;
    CK_RV rv;

    if (!t->has_session) {
        rv = fn->C_OpenSession(t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                               &t->session);
        if (rv == CKR_TOKEN_WRITE_PROTECTED) {
            rv = fn->C_OpenSession(t->slot, CKF_SERIAL_SESSION, NULL, NULL, &t->session);
        }
        if (rv != CKR_OK) {
            return p11_fail(op, "C_OpenSession", rv);
        }
        t->has_session = true;
        /* Handles need not survive a new session (or a fork). */
        memset(t->hc, 0, sizeof(t->hc));
    }
    op->fn = fn;
    op->s = t->session;
    CK_SESSION_INFO si;
    rv = fn->C_GetSessionInfo(op->s, &si);
    if (rv != CKR_OK) {
        return p11_fail(op, "C_GetSessionInfo", rv);
    }
    op->logged_in = (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS);
    if (op->logged_in || !op->have_pin) {
        return ESTC_OK;
    }
    rv = fn->C_Login(op->s, CKU_USER, (CK_UTF8CHAR *)op->pin, op->pin_len);
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        return p11_fail(op, "C_Login", rv);
    }
    op->logged_in = true;
    return ESTC_OK;
}

/* Private keys are invisible until the user logs in. Without a PIN, say so
 * instead of answering "not found": the lifecycle tracker would take a
 * hidden key for a removed one. */
static estc_err need_user(struct p11_op *op)
{
    if (op->logged_in || (op->tok->info.flags & CKF_LOGIN_REQUIRED) == 0) {
        return ESTC_OK;
    }
    op->rv = CKR_USER_NOT_LOGGED_IN;
    return estc_error(op->ctx, ESTC_ERR_AUTH,
                      "%s: keys need the user PIN (pin-value or pin-source): "
                      "CKR_USER_NOT_LOGGED_IN",
                      op->shown);
}

static void op_end(struct p11_op *op)
{
    OPENSSL_cleanse(op->pin, sizeof(op->pin));
    if (op->uri != NULL) {
        p11_kit_uri_free(op->uri);
        op->uri = NULL;
    }
}

/* What p11-kit lets pass but the estc address syntax refuses: an attribute
 * given twice (also once in the path and once in the query), an attribute
 * without '=' or name, and query attributes other than RFC 7512's. */
static const char *attr_syntax_error(const char *addr)
{
    static const char *const query_names[] = {"pin-source", "pin-value", "module-name",
                                              "module-path"};
    const char *colon = strchr(addr, ':');
    if (colon == NULL) {
        return "no scheme";
    }
    const char *names[64];
    size_t lens[64], n = 0;
    const char *p = colon + 1;
    bool in_query = false;
    while (*p != '\0') {
        const char *end = p;
        while (*end != '\0' && *end != (in_query ? '&' : ';') && (in_query || *end != '?')) {
            end++;
        }
        size_t len = (size_t)(end - p);
        /* An empty path is fine ("pkcs11:" or "pkcs11:?module-path=..."). */
        if (len == 0 && !(!in_query && p == colon + 1 && (*end == '\0' || *end == '?'))) {
            return "empty attribute";
        }
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            if (eq == NULL || eq == p) {
                return "attribute without a name or '='";
            }
            size_t nlen = (size_t)(eq - p);
            if (in_query) {
                bool known = false;
                for (size_t i = 0; i < sizeof(query_names) / sizeof(query_names[0]); i++) {
                    known = known || (strlen(query_names[i]) == nlen &&
                                      strncmp(query_names[i], p, nlen) == 0);
                }
                if (!known) {
                    return "unknown query attribute";
                }
            }
            for (size_t i = 0; i < n; i++) {
                if (lens[i] == nlen && strncmp(names[i], p, nlen) == 0) {
                    return "attribute given twice";
                }
            }
            if (n == sizeof(names) / sizeof(names[0])) {
                return "too many attributes";
            }
            names[n] = p;
            lens[n++] = nlen;
        }
        if (*end == '?' && !in_query) {
            in_query = true;
        }
        p = *end != '\0' ? end + 1 : end;
    }
    return NULL;
}

/* Parse @addr; no token is touched. */
static estc_err op_parse(struct p11_op *op, estc_ctx *ctx, void *state, const char *addr)
{
    memset(op, 0, sizeof(*op));
    op->ctx = ctx;
    op->st = state;
    op->addr = addr;
    redact(addr, op->shown, sizeof(op->shown));
    check_fork(op->st);

    op->uri = p11_kit_uri_new();
    if (op->uri == NULL) {
        return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
    }
    const char *syntax = attr_syntax_error(addr);
    if (syntax != NULL) {
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: not a PKCS#11 URI: %s", op->shown,
                          syntax);
    }
    int rc = p11_kit_uri_parse(addr, P11_KIT_URI_FOR_ANY, op->uri);
    if (rc != P11_KIT_URI_OK) {
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: not a PKCS#11 URI: %s", op->shown,
                          p11_kit_uri_message(rc));
    }
    if (p11_kit_uri_any_unrecognized(op->uri)) {
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: unknown attribute in PKCS#11 URI",
                          op->shown);
    }
    return get_pin(op);
}

/* Find the token and make its session ready. */
static estc_err op_token(struct p11_op *op)
{
    estc_err err = find_token(op);
    if (err != ESTC_OK) {
        return err;
    }
    return session_ready(op);
}

/* Whether a failure of @rv is worth one more attempt after repairing the
 * session state (a logout, a closed session, a re-initialized module). */
static bool op_recover(struct p11_op *op, estc_err err)
{
    if (err == ESTC_OK || op->tok == NULL) {
        return false;
    }
    switch (op->rv) {
    case CKR_USER_NOT_LOGGED_IN:
        return op->have_pin;
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
        op->tok->has_session = false;
        return true;
    case CKR_CRYPTOKI_NOT_INITIALIZED:
        op->tok->has_session = false;
        op->tok->mod->init_pid = 0;
        return true;
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_DEVICE_REMOVED:
    case CKR_SLOT_ID_INVALID:
        /* Another token may match the address now. */
        op->tok->has_session = false;
        op->tok->stale = true;
        return true;
    default:
        return false;
    }
}

/* ------------------------------------------------------------------------ */
/* Objects                                                                   */
/* ------------------------------------------------------------------------ */

/* Which object the address names: its label and id (either may be absent). */
static void uri_object(struct p11_op *op, CK_ATTRIBUTE **label, CK_ATTRIBUTE **id)
{
    *label = p11_kit_uri_get_attribute(op->uri, CKA_LABEL);
    *id = p11_kit_uri_get_attribute(op->uri, CKA_ID);
}

static estc_err need_object(struct p11_op *op, bool need_label)
{
    CK_ATTRIBUTE *label, *id;
    uri_object(op, &label, &id);
    if (label == NULL && (need_label || id == NULL)) {
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: the address names no object%s",
                          op->shown, need_label ? " (object= is required here)" : "");
    }
    if ((label != NULL && label->ulValueLen == 0) || (id != NULL && id->ulValueLen == 0)) {
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty object= or id=", op->shown);
    }
    return ESTC_OK;
}

/* A type= in the address must fit the operation. */
static estc_err check_type(struct p11_op *op, const CK_OBJECT_CLASS *allowed, size_t n)
{
    CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(op->uri, CKA_CLASS);
    if (a == NULL || a->ulValueLen != sizeof(CK_OBJECT_CLASS)) {
        return ESTC_OK;
    }
    CK_OBJECT_CLASS cls;
    memcpy(&cls, a->pValue, sizeof(cls));
    for (size_t i = 0; i < n; i++) {
        if (allowed[i] == cls) {
            return ESTC_OK;
        }
    }
    return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS,
                      "%s: the type= of the address does not fit this operation", op->shown);
}

/* Find up to @max objects of @cls that carry the address's label and id. */
static estc_err find_objects(struct p11_op *op, CK_OBJECT_CLASS cls, bool use_uri,
                             CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n)
{
    CK_ATTRIBUTE tmpl[3];
    CK_ULONG nt = 0;
    tmpl[nt++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    if (use_uri) {
        CK_ATTRIBUTE *label, *id;
        uri_object(op, &label, &id);
        if (label != NULL) {
            tmpl[nt++] = *label;
        }
        if (id != NULL) {
            tmpl[nt++] = *id;
        }
    }
    *n = 0;
    CK_RV rv = op->fn->C_FindObjectsInit(op->s, tmpl, nt);
    if (rv != CKR_OK) {
        return p11_fail(op, "C_FindObjectsInit", rv);
    }
    rv = op->fn->C_FindObjects(op->s, out, max, n);
    CK_RV rv2 = op->fn->C_FindObjectsFinal(op->s);
    if (rv != CKR_OK) {
        return p11_fail(op, "C_FindObjects", rv);
    }
    if (rv2 != CKR_OK) {
        return p11_fail(op, "C_FindObjectsFinal", rv2);
    }
    return ESTC_OK;
}

/* Read attribute @type of @h into a new buffer. */
static estc_err get_attr(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                         estc_buf *out)
{
    CK_ATTRIBUTE a = {type, NULL, 0};
    CK_RV rv = op->fn->C_GetAttributeValue(op->s, h, &a, 1);
    if (rv != CKR_OK) {
        return p11_fail(op, "C_GetAttributeValue", rv);
    }
    if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
        return p11_fail(op, "C_GetAttributeValue", CKR_ATTRIBUTE_TYPE_INVALID);
    }
    uint8_t *p = malloc(a.ulValueLen > 0 ? a.ulValueLen : 1);
    if (p == NULL) {
        return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
    }
    a.pValue = p;
    rv = op->fn->C_GetAttributeValue(op->s, h, &a, 1);
    if (rv != CKR_OK) {
        free(p);
        return p11_fail(op, "C_GetAttributeValue", rv);
    }
    out->data = p;
    out->len = a.ulValueLen;
    return ESTC_OK;
}

static bool get_ulong(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, CK_ULONG *v)
{
    CK_ATTRIBUTE a = {type, v, sizeof(*v)};
    return op->fn->C_GetAttributeValue(op->s, h, &a, 1) == CKR_OK && a.ulValueLen == sizeof(*v);
}

static bool get_bool(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, bool *v)
{
    CK_BBOOL b = CK_FALSE;
    CK_ATTRIBUTE a = {type, &b, sizeof(b)};
    if (op->fn->C_GetAttributeValue(op->s, h, &a, 1) != CKR_OK || a.ulValueLen != sizeof(b)) {
        return false;
    }
    *v = (b == CK_TRUE);
    return true;
}

/* A certificate is a trust-store one when the token marks it trusted or it
 * was stored as an authority certificate. */
static bool cert_is_trust(struct p11_op *op, CK_OBJECT_HANDLE h)
{
    bool trusted = false;
    CK_ULONG category = 0;
    if (get_bool(op, h, CKA_TRUSTED, &trusted) && trusted) {
        return true;
    }
    return get_ulong(op, h, CKA_CERTIFICATE_CATEGORY, &category) &&
           category == CERT_CATEGORY_AUTHORITY;
}

/* The one object of @cls the address names; ESTC_ERR_NOT_FOUND when none. */
static bool hc_same(const struct hcache_entry *e, CK_OBJECT_CLASS cls, const CK_ATTRIBUTE *label,
                    const CK_ATTRIBUTE *id)
{
    return e->used && e->cls == cls && e->has_label == (label != NULL) &&
           e->has_id == (id != NULL) &&
           (label == NULL || (e->label_len == label->ulValueLen &&
                              memcmp(e->label, label->pValue, e->label_len) == 0)) &&
           (id == NULL ||
            (e->id_len == id->ulValueLen && memcmp(e->id, id->pValue, e->id_len) == 0));
}

/* A cached handle is used only when the object behind it still has the
 * class, label and id the address asks for: whatever the token did with
 * handles meanwhile, it is then the object the address names. */
static bool hc_valid(struct p11_op *op, CK_OBJECT_HANDLE h, CK_OBJECT_CLASS cls,
                     const CK_ATTRIBUTE *label, const CK_ATTRIBUTE *id)
{
    CK_OBJECT_CLASS c = (CK_OBJECT_CLASS)-1;
    uint8_t lb[HCACHE_LABEL_MAX], ib[HCACHE_ID_MAX];
    CK_ATTRIBUTE t[3] = {
        {CKA_CLASS, &c, sizeof(c)}, {CKA_LABEL, lb, sizeof(lb)}, {CKA_ID, ib, sizeof(ib)}};
    if (op->fn->C_GetAttributeValue(op->s, h, t, 3) != CKR_OK || c != cls) {
        return false;
    }
    if (label != NULL &&
        (t[1].ulValueLen != label->ulValueLen || memcmp(lb, label->pValue, t[1].ulValueLen) != 0)) {
        return false;
    }
    return id == NULL ||
           (t[2].ulValueLen == id->ulValueLen && memcmp(ib, id->pValue, t[2].ulValueLen) == 0);
}

static void hc_store(struct p11_op *op, CK_OBJECT_CLASS cls, const CK_ATTRIBUTE *label,
                     const CK_ATTRIBUTE *id, CK_OBJECT_HANDLE h)
{
    if ((label != NULL && label->ulValueLen > HCACHE_LABEL_MAX) ||
        (id != NULL && id->ulValueLen > HCACHE_ID_MAX)) {
        return;
    }
    struct p11_token *t = op->tok;
    struct hcache_entry *e = &t->hc[t->hc_next++ % HCACHE_SIZE];
    memset(e, 0, sizeof(*e));
    e->used = true;
    e->cls = cls;
    e->h = h;
    if (label != NULL) {
        e->has_label = true;
        e->label_len = label->ulValueLen;
        memcpy(e->label, label->pValue, e->label_len);
    }
    if (id != NULL) {
        e->has_id = true;
        e->id_len = id->ulValueLen;
        memcpy(e->id, id->pValue, e->id_len);
    }
}

static estc_err find_one(struct p11_op *op, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *h, bool *found)
{
    CK_ATTRIBUTE *label, *id;
    uri_object(op, &label, &id);
    for (unsigned i = 0; i < HCACHE_SIZE; i++) {
        struct hcache_entry *e = &op->tok->hc[i];
        if (hc_same(e, cls, label, id)) {
            if (hc_valid(op, e->h, cls, label, id)) {
                *h = e->h;
                *found = true;
                return ESTC_OK;
            }
            e->used = false;
        }
    }
    CK_OBJECT_HANDLE hs[2];
    CK_ULONG n = 0;
    estc_err err = find_objects(op, cls, true, hs, 2, &n);
    if (err != ESTC_OK) {
        return err;
    }
    *found = n > 0;
    if (n > 0) {
        *h = hs[0];
        hc_store(op, cls, label, id, hs[0]);
    }
    return ESTC_OK;
}

static estc_err not_found(struct p11_op *op, const char *what)
{
    return estc_error(op->ctx, ESTC_ERR_NOT_FOUND, "%s: no %s at this address", op->shown, what);
}

static void destroy_quiet(struct p11_op *op, CK_OBJECT_HANDLE h)
{
    (void)op->fn->C_DestroyObject(op->s, h);
}

/* ------------------------------------------------------------------------ */
/* Key generation and import                                                 */
/* ------------------------------------------------------------------------ */

static estc_err key_exists_check(struct p11_op *op)
{
    CK_OBJECT_HANDLE h;
    bool found = false;
    estc_err err = find_one(op, CKO_PRIVATE_KEY, &h, &found);
    if (err == ESTC_OK && !found) {
        err = find_one(op, CKO_PUBLIC_KEY, &h, &found);
    }
    if (err == ESTC_OK && found) {
        return estc_error(op->ctx, ESTC_ERR_EXISTS, "%s: a key is already there", op->shown);
    }
    return err;
}

/* The CKA_ID of a new key: the address's id, else 16 random bytes. */
static estc_err new_key_id(struct p11_op *op, uint8_t id[64], CK_ULONG *id_len)
{
    CK_ATTRIBUTE *label, *a;
    uri_object(op, &label, &a);
    if (a != NULL) {
        if (a->ulValueLen > 64) {
            return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: id is too long", op->shown);
        }
        memcpy(id, a->pValue, a->ulValueLen);
        *id_len = a->ulValueLen;
        return ESTC_OK;
    }
    if (RAND_bytes(id, 16) != 1) {
        return estc_error(op->ctx, ESTC_ERR_CRYPTO, "%s: RAND_bytes failed", op->shown);
    }
    *id_len = 16;
    return ESTC_OK;
}

/* A new private key must have come out the way it was asked for. */
static estc_err check_private(struct p11_op *op, CK_OBJECT_HANDLE priv)
{
    bool sensitive = false, extractable = true, token = false;
    if (!get_bool(op, priv, CKA_SENSITIVE, &sensitive) || !sensitive ||
        !get_bool(op, priv, CKA_TOKEN, &token) || !token ||
        (get_bool(op, priv, CKA_EXTRACTABLE, &extractable) && extractable)) {
        return estc_error(op->ctx, ESTC_ERR_ENGINE,
                          "%s: the token did not make the key sensitive, non-extractable and "
                          "persistent",
                          op->shown);
    }
    return ESTC_OK;
}

static estc_err mech_check(struct p11_op *op, CK_MECHANISM_TYPE mech, CK_ULONG bits,
                           const char *what)
{
    CK_MECHANISM_INFO mi;
    CK_RV rv = op->fn->C_GetMechanismInfo(op->tok->slot, mech, &mi);
    if (rv == CKR_MECHANISM_INVALID) {
        op->rv = rv;
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: %s: CKR_MECHANISM_INVALID", op->shown,
                          what);
    }
    if (rv != CKR_OK) {
        return p11_fail(op, "C_GetMechanismInfo", rv);
    }
    if (bits != 0 && mi.ulMaxKeySize != 0 && (bits < mi.ulMinKeySize || bits > mi.ulMaxKeySize)) {
        op->rv = CKR_KEY_SIZE_RANGE;
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: %s of %lu bits: CKR_KEY_SIZE_RANGE",
                          op->shown, what, (unsigned long)bits);
    }
    return ESTC_OK;
}

static estc_err do_key_generate(struct p11_op *op, estc_key_type type)
{
    static const CK_OBJECT_CLASS allowed[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    estc_err err = need_object(op, true);
    if (err == ESTC_OK) {
        err = check_type(op, allowed, 2);
    }
    if (err != ESTC_OK) {
        return err;
    }
    CK_ULONG bits = 0;
    const uint8_t *oid = NULL;
    size_t oid_len = 0;
    switch (type) {
    case ESTC_KEY_EC_P256:
        oid = oid_p256;
        oid_len = sizeof(oid_p256);
        break;
    case ESTC_KEY_EC_P384:
        oid = oid_p384;
        oid_len = sizeof(oid_p384);
        break;
    case ESTC_KEY_RSA_2048:
        bits = 2048;
        break;
    case ESTC_KEY_RSA_3072:
        bits = 3072;
        break;
    default:
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown key type %d", op->shown,
                          (int)type);
    }
    err = op_token(op);
    if (err == ESTC_OK) {
        err = need_user(op);
    }
    if (err == ESTC_OK) {
        err = key_exists_check(op);
    }
    CK_MECHANISM mech = {oid != NULL ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    if (err == ESTC_OK) {
        err = mech_check(op, mech.mechanism, bits, "key generation");
    }
    uint8_t id[64];
    CK_ULONG id_len = 0;
    if (err == ESTC_OK) {
        err = new_key_id(op, id, &id_len);
    }
    if (err != ESTC_OK) {
        return err;
    }

    CK_ATTRIBUTE *label, *uid;
    uri_object(op, &label, &uid);
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_OBJECT_CLASS pub_cls = CKO_PUBLIC_KEY, priv_cls = CKO_PRIVATE_KEY;
    CK_KEY_TYPE kt = oid != NULL ? CKK_EC : CKK_RSA;
    static const uint8_t f4[] = {0x01, 0x00, 0x01};
    CK_ATTRIBUTE pub[10], priv[14];
    CK_ULONG np = 0, nq = 0;

    pub[np++] = (CK_ATTRIBUTE){CKA_CLASS, &pub_cls, sizeof(pub_cls)};
    pub[np++] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &kt, sizeof(kt)};
    pub[np++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    pub[np++] = (CK_ATTRIBUTE){CKA_PRIVATE, &no, sizeof(no)};
    pub[np++] = (CK_ATTRIBUTE){CKA_VERIFY, &yes, sizeof(yes)};
    pub[np++] = *label;
    pub[np++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};
    if (oid != NULL) {
        pub[np++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid, oid_len};
    } else {
        pub[np++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
        pub[np++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, (void *)f4, sizeof(f4)};
    }

    priv[nq++] = (CK_ATTRIBUTE){CKA_CLASS, &priv_cls, sizeof(priv_cls)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &kt, sizeof(kt)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_PRIVATE, &yes, sizeof(yes)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_SENSITIVE, &yes, sizeof(yes)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_EXTRACTABLE, &no, sizeof(no)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_SIGN, &yes, sizeof(yes)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_DECRYPT, &no, sizeof(no)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_UNWRAP, &no, sizeof(no)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_DERIVE, &no, sizeof(no)};
    priv[nq++] = *label;
    priv[nq++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};

    CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
    CK_RV rv = op->fn->C_GenerateKeyPair(op->s, &mech, pub, np, priv, nq, &hpub, &hpriv);
    if (rv != CKR_OK) {
        if (rv == CKR_ATTRIBUTE_VALUE_INVALID && oid != NULL) {
            /* Most tokens answer an unknown curve this way. */
            rv = CKR_CURVE_NOT_SUPPORTED;
        }
        return p11_fail(op, "C_GenerateKeyPair", rv);
    }
    err = check_private(op, hpriv);
    if (err != ESTC_OK) {
        destroy_quiet(op, hpriv);
        destroy_quiet(op, hpub);
    }
    return err;
}

/* Big-endian bytes of an OpenSSL BIGNUM parameter of @pkey. */
static estc_err bn_param(struct p11_op *op, EVP_PKEY *pkey, const char *name, size_t pad,
                         estc_buf *out)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) {
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: the PKCS#8 key lacks %s", op->shown, name);
    }
    size_t n = pad != 0 ? pad : (size_t)BN_num_bytes(bn);
    out->data = malloc(n > 0 ? n : 1);
    if (out->data == NULL) {
        BN_clear_free(bn);
        return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
    }
    out->len = n;
    if (BN_bn2binpad(bn, out->data, (int)n) < 0) {
        BN_clear_free(bn);
        estc_buf_free(out);
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: bad %s in the PKCS#8 key", op->shown,
                          name);
    }
    BN_clear_free(bn);
    return ESTC_OK;
}

enum { IMP_PRIV, IMP_PUB, IMP_E, IMP_D, IMP_P, IMP_Q, IMP_DP, IMP_DQ, IMP_QI, IMP_N, IMP_COUNT };

static estc_err import_parts(struct p11_op *op, EVP_PKEY *pkey, estc_key_type *type,
                             estc_buf parts[IMP_COUNT])
{
    estc_err err = ESTC_OK;
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           &glen) != 1) {
            return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: EC key without a named curve",
                              op->shown);
        }
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            *type = ESTC_KEY_EC_P256;
        } else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            *type = ESTC_KEY_EC_P384;
        } else {
            return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: curve %s is not supported",
                              op->shown, group);
        }
        err = bn_param(op, pkey, OSSL_PKEY_PARAM_PRIV_KEY, estc__ec_field_len(*type),
                       &parts[IMP_PRIV]);
        if (err != ESTC_OK) {
            return err;
        }
        /* The public point, uncompressed, wrapped in an OCTET STRING. */
        uint8_t point[1 + 2 * 66];
        size_t plen = 0;
        if (EVP_PKEY_set_utf8_string_param(pkey, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                           "uncompressed") != 1 ||
            EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point),
                                            &plen) != 1 ||
            plen > 127) {
            return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: the PKCS#8 key has no public point",
                              op->shown);
        }
        parts[IMP_PUB].data = malloc(plen + 2);
        if (parts[IMP_PUB].data == NULL) {
            return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
        }
        parts[IMP_PUB].data[0] = 0x04;
        parts[IMP_PUB].data[1] = (uint8_t)plen;
        memcpy(parts[IMP_PUB].data + 2, point, plen);
        parts[IMP_PUB].len = plen + 2;
        return ESTC_OK;
    }
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits == 2048) {
            *type = ESTC_KEY_RSA_2048;
        } else if (bits == 3072) {
            *type = ESTC_KEY_RSA_3072;
        } else {
            return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                              "%s: RSA keys of %d bits are not supported", op->shown, bits);
        }
        static const char *const names[IMP_COUNT] = {
            [IMP_E] = OSSL_PKEY_PARAM_RSA_E,
            [IMP_D] = OSSL_PKEY_PARAM_RSA_D,
            [IMP_P] = OSSL_PKEY_PARAM_RSA_FACTOR1,
            [IMP_Q] = OSSL_PKEY_PARAM_RSA_FACTOR2,
            [IMP_DP] = OSSL_PKEY_PARAM_RSA_EXPONENT1,
            [IMP_DQ] = OSSL_PKEY_PARAM_RSA_EXPONENT2,
            [IMP_QI] = OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
            [IMP_N] = OSSL_PKEY_PARAM_RSA_N,
        };
        for (int i = IMP_E; i < IMP_COUNT && err == ESTC_OK; i++) {
            err = bn_param(op, pkey, names[i], 0, &parts[i]);
        }
        return err;
    }
    return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: unsupported PKCS#8 key algorithm",
                      op->shown);
}

static estc_err do_key_import(struct p11_op *op, const uint8_t *pkcs8, size_t len)
{
    static const CK_OBJECT_CLASS allowed[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    estc_err err = need_object(op, true);
    if (err == ESTC_OK) {
        err = check_type(op, allowed, 2);
    }
    if (err != ESTC_OK) {
        return err;
    }
    /* Strictly PKCS#8 PrivateKeyInfo, the whole buffer, nothing else. */
    EVP_PKEY *pkey = NULL;
    if (estc__pkcs8_decode(pkcs8, len, &pkey) != ESTC_OK) {
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: not one DER PKCS#8 private key",
                          op->shown);
    }
    estc_buf parts[IMP_COUNT];
    memset(parts, 0, sizeof(parts));
    estc_key_type type = 0;
    err = import_parts(op, pkey, &type, parts);
    EVP_PKEY_free(pkey);
    if (err == ESTC_OK) {
        err = op_token(op);
    }
    if (err == ESTC_OK) {
        err = need_user(op);
    }
    if (err == ESTC_OK) {
        err = key_exists_check(op);
    }
    bool ec = (type == ESTC_KEY_EC_P256 || type == ESTC_KEY_EC_P384);
    uint8_t id[64];
    CK_ULONG id_len = 0;
    if (err == ESTC_OK) {
        err = new_key_id(op, id, &id_len);
    }
    if (err != ESTC_OK) {
        for (int i = 0; i < IMP_COUNT; i++) {
            estc_buf_free(&parts[i]);
        }
        return err;
    }

    CK_ATTRIBUTE *label, *uid;
    uri_object(op, &label, &uid);
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_OBJECT_CLASS pub_cls = CKO_PUBLIC_KEY, priv_cls = CKO_PRIVATE_KEY;
    CK_KEY_TYPE kt = ec ? CKK_EC : CKK_RSA;
    const uint8_t *oid = type == ESTC_KEY_EC_P256 ? oid_p256 : oid_p384;
    size_t oid_len = type == ESTC_KEY_EC_P256 ? sizeof(oid_p256) : sizeof(oid_p384);
    CK_ATTRIBUTE priv[20], pub[10];
    CK_ULONG nq = 0, np = 0;

    priv[nq++] = (CK_ATTRIBUTE){CKA_CLASS, &priv_cls, sizeof(priv_cls)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &kt, sizeof(kt)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_PRIVATE, &yes, sizeof(yes)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_SENSITIVE, &yes, sizeof(yes)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_EXTRACTABLE, &no, sizeof(no)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_SIGN, &yes, sizeof(yes)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_DECRYPT, &no, sizeof(no)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_UNWRAP, &no, sizeof(no)};
    priv[nq++] = (CK_ATTRIBUTE){CKA_DERIVE, &no, sizeof(no)};
    priv[nq++] = *label;
    priv[nq++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};

    pub[np++] = (CK_ATTRIBUTE){CKA_CLASS, &pub_cls, sizeof(pub_cls)};
    pub[np++] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &kt, sizeof(kt)};
    pub[np++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    pub[np++] = (CK_ATTRIBUTE){CKA_PRIVATE, &no, sizeof(no)};
    pub[np++] = (CK_ATTRIBUTE){CKA_VERIFY, &yes, sizeof(yes)};
    pub[np++] = *label;
    pub[np++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};

    if (ec) {
        priv[nq++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid, oid_len};
        priv[nq++] = (CK_ATTRIBUTE){CKA_VALUE, parts[IMP_PRIV].data, parts[IMP_PRIV].len};
        pub[np++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid, oid_len};
        pub[np++] = (CK_ATTRIBUTE){CKA_EC_POINT, parts[IMP_PUB].data, parts[IMP_PUB].len};
    } else {
        static const CK_ATTRIBUTE_TYPE rsa_types[IMP_COUNT] = {
            [IMP_E] = CKA_PUBLIC_EXPONENT, [IMP_D] = CKA_PRIVATE_EXPONENT,
            [IMP_P] = CKA_PRIME_1,         [IMP_Q] = CKA_PRIME_2,
            [IMP_DP] = CKA_EXPONENT_1,     [IMP_DQ] = CKA_EXPONENT_2,
            [IMP_QI] = CKA_COEFFICIENT,    [IMP_N] = CKA_MODULUS,
        };
        for (int i = IMP_E; i < IMP_COUNT; i++) {
            priv[nq++] = (CK_ATTRIBUTE){rsa_types[i], parts[i].data, parts[i].len};
        }
        pub[np++] = (CK_ATTRIBUTE){CKA_MODULUS, parts[IMP_N].data, parts[IMP_N].len};
        pub[np++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, parts[IMP_E].data, parts[IMP_E].len};
    }

    CK_OBJECT_HANDLE hpriv = CK_INVALID_HANDLE, hpub = CK_INVALID_HANDLE;
    CK_RV rv = op->fn->C_CreateObject(op->s, priv, nq, &hpriv);
    if (rv != CKR_OK) {
        err = p11_fail(op, "C_CreateObject", rv);
    } else {
        rv = op->fn->C_CreateObject(op->s, pub, np, &hpub);
        if (rv != CKR_OK) {
            err = p11_fail(op, "C_CreateObject", rv);
            destroy_quiet(op, hpriv);
        } else {
            err = check_private(op, hpriv);
            if (err != ESTC_OK) {
                destroy_quiet(op, hpriv);
                destroy_quiet(op, hpub);
            }
        }
    }
    for (int i = 0; i < IMP_COUNT; i++) {
        estc_buf_free(&parts[i]);
    }
    return err;
}

/* ------------------------------------------------------------------------ */
/* Public keys and signing                                                   */
/* ------------------------------------------------------------------------ */

static estc_err ec_type(struct p11_op *op, const estc_buf *params, estc_key_type *type)
{
    if (params->len == sizeof(oid_p256) && memcmp(params->data, oid_p256, params->len) == 0) {
        *type = ESTC_KEY_EC_P256;
        return ESTC_OK;
    }
    if (params->len == sizeof(oid_p384) && memcmp(params->data, oid_p384, params->len) == 0) {
        *type = ESTC_KEY_EC_P384;
        return ESTC_OK;
    }
    return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: the key's curve is not supported",
                      op->shown);
}

/* CKA_EC_POINT is an OCTET STRING around the point (PKCS#11 2.x; SoftHSM);
 * some tokens give the bare point. Accept both. */
static estc_err unwrap_point(struct p11_op *op, estc_key_type type, const estc_buf *in,
                             const uint8_t **pt, size_t *pt_len)
{
    size_t want = 1 + 2 * estc__ec_field_len(type);
    if (in->len == want && in->data[0] == 0x04) {
        *pt = in->data;
        *pt_len = in->len;
        return ESTC_OK;
    }
    if (in->len == want + 2 && in->data[0] == 0x04 && in->data[1] == want) {
        *pt = in->data + 2;
        *pt_len = want;
        return ESTC_OK;
    }
    return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: CKA_EC_POINT is not an uncompressed point",
                      op->shown);
}

static estc_err do_key_public(struct p11_op *op, estc_buf *spki)
{
    static const CK_OBJECT_CLASS allowed[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    estc_err err = need_object(op, false);
    if (err == ESTC_OK) {
        err = check_type(op, allowed, 2);
    }
    if (err == ESTC_OK) {
        err = op_token(op);
    }
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    bool found = false, is_pub = true;
    if (err == ESTC_OK) {
        err = find_one(op, CKO_PUBLIC_KEY, &h, &found);
    }
    if (err == ESTC_OK && !found) {
        /* RSA private keys carry the public parts too. */
        is_pub = false;
        err = find_one(op, CKO_PRIVATE_KEY, &h, &found);
    }
    if (err != ESTC_OK) {
        return err;
    }
    if (!found) {
        return not_found(op, "key");
    }
    CK_ULONG kt = 0;
    if (!get_ulong(op, h, CKA_KEY_TYPE, &kt)) {
        return p11_fail(op, "C_GetAttributeValue", CKR_ATTRIBUTE_TYPE_INVALID);
    }
    estc_buf a = {0}, b = {0};
    if (kt == CKK_EC) {
        estc_key_type type = 0;
        const uint8_t *pt = NULL;
        size_t pt_len = 0;
        if (!is_pub) {
            return estc_error(op->ctx, ESTC_ERR_NOT_FOUND,
                              "%s: the public half of the EC key pair is missing", op->shown);
        }
        err = get_attr(op, h, CKA_EC_PARAMS, &a);
        if (err == ESTC_OK) {
            err = ec_type(op, &a, &type);
        }
        if (err == ESTC_OK) {
            err = get_attr(op, h, CKA_EC_POINT, &b);
        }
        if (err == ESTC_OK) {
            err = unwrap_point(op, type, &b, &pt, &pt_len);
        }
        if (err == ESTC_OK) {
            err = estc__spki_from_ec_point(type, pt, pt_len, spki);
            if (err != ESTC_OK) {
                err = estc_error(op->ctx, err, "%s: cannot build the public key", op->shown);
            }
        }
    } else if (kt == CKK_RSA) {
        err = get_attr(op, h, CKA_MODULUS, &a);
        if (err == ESTC_OK) {
            err = get_attr(op, h, CKA_PUBLIC_EXPONENT, &b);
        }
        if (err == ESTC_OK) {
            err = estc__spki_from_rsa(a.data, a.len, b.data, b.len, spki);
            if (err != ESTC_OK) {
                err = estc_error(op->ctx, err, "%s: cannot build the public key", op->shown);
            }
        }
    } else {
        err = estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: key type 0x%lx is not supported",
                         op->shown, (unsigned long)kt);
    }
    estc_buf_free(&a);
    estc_buf_free(&b);
    return err;
}

static estc_err do_key_sign(struct p11_op *op, estc_sig_alg alg, estc_hash hash,
                            const uint8_t *digest, size_t digest_len, estc_buf *sig)
{
    static const CK_OBJECT_CLASS allowed[] = {CKO_PRIVATE_KEY};
    estc_err err = need_object(op, false);
    if (err == ESTC_OK) {
        err = check_type(op, allowed, 1);
    }
    if (err == ESTC_OK) {
        err = op_token(op);
    }
    if (err == ESTC_OK) {
        err = need_user(op);
    }
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    bool found = false;
    if (err == ESTC_OK) {
        err = find_one(op, CKO_PRIVATE_KEY, &h, &found);
    }
    if (err != ESTC_OK) {
        return err;
    }
    if (!found) {
        return not_found(op, "private key");
    }
    CK_ULONG kt = 0;
    if (!get_ulong(op, h, CKA_KEY_TYPE, &kt)) {
        return p11_fail(op, "C_GetAttributeValue", CKR_ATTRIBUTE_TYPE_INVALID);
    }
    bool ec_alg = (alg == ESTC_SIG_ECDSA);
    if ((kt == CKK_EC) != ec_alg || (kt != CKK_EC && kt != CKK_RSA)) {
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: this signature algorithm does not fit the key type", op->shown);
    }

    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_RSA_PKCS_PSS_PARAMS pss;
    estc_buf in = {0};
    const uint8_t *data = digest;
    size_t data_len = digest_len;
    if (alg == ESTC_SIG_RSA_PKCS1) {
        mech.mechanism = CKM_RSA_PKCS;
        err = estc__digest_info(hash, digest, digest_len, &in);
        if (err != ESTC_OK) {
            return estc_error(op->ctx, err, "%s: cannot build the DigestInfo", op->shown);
        }
        data = in.data;
        data_len = in.len;
    } else if (alg == ESTC_SIG_RSA_PSS) {
        static const CK_MECHANISM_TYPE hashes[] = {CKM_SHA256, CKM_SHA384, CKM_SHA512};
        static const CK_RSA_PKCS_MGF_TYPE mgfs[] = {CKG_MGF1_SHA256, CKG_MGF1_SHA384,
                                                    CKG_MGF1_SHA512};
        if (hash < ESTC_HASH_SHA256 || hash > ESTC_HASH_SHA512) {
            return estc_error(op->ctx, ESTC_ERR_INVALID_ARG, "%s: unknown hash", op->shown);
        }
        pss.hashAlg = hashes[hash - ESTC_HASH_SHA256];
        pss.mgf = mgfs[hash - ESTC_HASH_SHA256];
        pss.sLen = estc__hash_len(hash);
        mech.mechanism = CKM_RSA_PKCS_PSS;
        mech.pParameter = &pss;
        mech.ulParameterLen = sizeof(pss);
    } else if (alg != ESTC_SIG_ECDSA) {
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown signature algorithm",
                          op->shown);
    }

    CK_RV rv = op->fn->C_SignInit(op->s, &mech, h);
    if (rv != CKR_OK) {
        estc_buf_free(&in);
        return p11_fail(op, "C_SignInit", rv);
    }
    /* Room for RSA 8192 or any EC signature: one C_Sign in the common case.
     * After CKR_BUFFER_TOO_SMALL the operation is still active. */
    CK_ULONG out_len = 1024;
    uint8_t *out = malloc(out_len);
    if (out == NULL) {
        out_len = 0;
    }
    rv = op->fn->C_Sign(op->s, (CK_BYTE *)data, data_len, out, &out_len);
    if (rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && out == NULL)) {
        free(out);
        out = malloc(out_len > 0 ? out_len : 1);
        if (out == NULL) {
            /* A call that fails for a short buffer of zero ends the operation
             * on most tokens; either way the session is reused safely. */
            CK_ULONG tiny = 0;
            uint8_t dummy;
            (void)op->fn->C_Sign(op->s, (CK_BYTE *)data, data_len, &dummy, &tiny);
            estc_buf_free(&in);
            return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
        }
        rv = op->fn->C_Sign(op->s, (CK_BYTE *)data, data_len, out, &out_len);
    }
    estc_buf_free(&in);
    if (rv != CKR_OK) {
        free(out);
        return p11_fail(op, "C_Sign", rv);
    }
    if (alg == ESTC_SIG_ECDSA) {
        estc_buf der = {0};
        err = estc__ecdsa_raw_to_der(out, out_len, &der);
        free(out);
        if (err != ESTC_OK) {
            return estc_error(op->ctx, err, "%s: bad ECDSA signature from the token", op->shown);
        }
        *sig = der;
        return ESTC_OK;
    }
    sig->data = out;
    sig->len = out_len;
    return ESTC_OK;
}

/* Remove every object of @cls the address names; *@n counts them. */
static estc_err destroy_all(struct p11_op *op, CK_OBJECT_CLASS cls, int want_trust, CK_ULONG *n)
{
    CK_OBJECT_HANDLE hs[16];
    CK_ULONG found = 0;
    *n = 0;
    estc_err err = find_objects(op, cls, true, hs, 16, &found);
    for (CK_ULONG i = 0; err == ESTC_OK && i < found; i++) {
        if (want_trust >= 0 && cert_is_trust(op, hs[i]) != (want_trust == 1)) {
            continue;
        }
        CK_RV rv = op->fn->C_DestroyObject(op->s, hs[i]);
        if (rv != CKR_OK) {
            return p11_fail(op, "C_DestroyObject", rv);
        }
        (*n)++;
    }
    return err;
}

static estc_err do_key_remove(struct p11_op *op)
{
    static const CK_OBJECT_CLASS allowed[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    estc_err err = need_object(op, false);
    if (err == ESTC_OK) {
        err = check_type(op, allowed, 2);
    }
    if (err == ESTC_OK) {
        err = op_token(op);
    }
    if (err == ESTC_OK) {
        err = need_user(op);
    }
    CK_ULONG n1 = 0, n2 = 0;
    if (err == ESTC_OK) {
        err = destroy_all(op, CKO_PRIVATE_KEY, -1, &n1);
    }
    if (err == ESTC_OK) {
        err = destroy_all(op, CKO_PUBLIC_KEY, -1, &n2);
    }
    if (err == ESTC_OK && n1 + n2 == 0) {
        return not_found(op, "key");
    }
    return err;
}

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */
/* ------------------------------------------------------------------------ */

static estc_err i2d_dup(struct p11_op *op, int len, uint8_t *der, estc_buf *out)
{
    if (len <= 0 || der == NULL) {
        OPENSSL_free(der);
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: cannot encode a certificate field",
                          op->shown);
    }
    out->data = malloc((size_t)len);
    if (out->data == NULL) {
        OPENSSL_free(der);
        return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
    }
    memcpy(out->data, der, (size_t)len);
    out->len = (size_t)len;
    OPENSSL_free(der);
    return ESTC_OK;
}

/* The CKA_ID for a new certificate: that of the key with the same label,
 * else the address's id, else the SHA-1 of the certificate's public key (as
 * a subject key identifier). */
static estc_err cert_id(struct p11_op *op, X509 *x, uint8_t id[64], CK_ULONG *id_len)
{
    CK_ATTRIBUTE *label, *uid;
    uri_object(op, &label, &uid);
    if (uid != NULL) {
        if (uid->ulValueLen > 64) {
            return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS, "%s: id is too long", op->shown);
        }
        memcpy(id, uid->pValue, uid->ulValueLen);
        *id_len = uid->ulValueLen;
        return ESTC_OK;
    }
    CK_OBJECT_HANDLE h;
    bool found = false;
    estc_err err = find_one(op, CKO_PRIVATE_KEY, &h, &found);
    if (err != ESTC_OK) {
        return err;
    }
    if (found) {
        CK_ATTRIBUTE a = {CKA_ID, id, 64};
        if (op->fn->C_GetAttributeValue(op->s, h, &a, 1) == CKR_OK && a.ulValueLen <= 64) {
            *id_len = a.ulValueLen;
            return ESTC_OK;
        }
    }
    unsigned int n = 0;
    if (X509_pubkey_digest(x, EVP_sha1(), id, &n) != 1) {
        return estc_error(op->ctx, ESTC_ERR_CRYPTO, "%s: cannot hash the public key", op->shown);
    }
    *id_len = n;
    return ESTC_OK;
}

static estc_err do_cert_store(struct p11_op *op, estc_obj_kind kind, const uint8_t *der,
                              size_t der_len)
{
    static const CK_OBJECT_CLASS allowed[] = {CKO_CERTIFICATE};
    estc_err err = need_object(op, true);
    if (err == ESTC_OK) {
        err = check_type(op, allowed, 1);
    }
    if (err != ESTC_OK) {
        return err;
    }
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST) {
        return estc_error(op->ctx, ESTC_ERR_INVALID_ARG, "%s: not a certificate kind", op->shown);
    }
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)der_len);
    if (x == NULL || p != der + der_len) {
        X509_free(x);
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: not one DER certificate", op->shown);
    }
    estc_buf subject = {0}, issuer = {0}, serial = {0};
    uint8_t *tmp = NULL;
    int n = i2d_X509_NAME(X509_get_subject_name(x), &tmp);
    err = i2d_dup(op, n, tmp, &subject);
    if (err == ESTC_OK) {
        tmp = NULL;
        n = i2d_X509_NAME(X509_get_issuer_name(x), &tmp);
        err = i2d_dup(op, n, tmp, &issuer);
    }
    if (err == ESTC_OK) {
        tmp = NULL;
        n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &tmp);
        err = i2d_dup(op, n, tmp, &serial);
    }
    if (err == ESTC_OK) {
        err = op_token(op);
    }
    CK_OBJECT_HANDLE h;
    bool found = false;
    if (err == ESTC_OK) {
        err = find_one(op, CKO_CERTIFICATE, &h, &found);
    }
    if (err == ESTC_OK && found) {
        err = estc_error(op->ctx, ESTC_ERR_EXISTS, "%s: a certificate is already there", op->shown);
    }
    uint8_t id[64];
    CK_ULONG id_len = 0;
    if (err == ESTC_OK) {
        err = cert_id(op, x, id, &id_len);
    }
    X509_free(x);
    if (err == ESTC_OK) {
        CK_ATTRIBUTE *label, *uid;
        uri_object(op, &label, &uid);
        CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
        CK_CERTIFICATE_TYPE ct = CKC_X_509;
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ULONG category = kind == ESTC_OBJ_TRUST ? CERT_CATEGORY_AUTHORITY : CERT_CATEGORY_USER;
        CK_ATTRIBUTE t[12];
        CK_ULONG nt = 0;
        t[nt++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
        t[nt++] = (CK_ATTRIBUTE){CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)};
        t[nt++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
        t[nt++] = (CK_ATTRIBUTE){CKA_PRIVATE, &no, sizeof(no)};
        t[nt++] = *label;
        t[nt++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};
        t[nt++] = (CK_ATTRIBUTE){CKA_SUBJECT, subject.data, subject.len};
        t[nt++] = (CK_ATTRIBUTE){CKA_ISSUER, issuer.data, issuer.len};
        t[nt++] = (CK_ATTRIBUTE){CKA_SERIAL_NUMBER, serial.data, serial.len};
        t[nt++] = (CK_ATTRIBUTE){CKA_VALUE, (void *)der, der_len};
        t[nt++] = (CK_ATTRIBUTE){CKA_CERTIFICATE_CATEGORY, &category, sizeof(category)};
        CK_RV rv = op->fn->C_CreateObject(op->s, t, nt, &h);
        if (rv == CKR_OK && kind == ESTC_OBJ_TRUST) {
            /* CKA_TRUSTED is often reserved to the security officer
             * (SoftHSM): then the authority category alone marks the
             * certificate. Set afterwards, since a refused attribute at
             * creation can leave a stray object behind on some tokens. */
            CK_ATTRIBUTE tr = {CKA_TRUSTED, &yes, sizeof(yes)};
            CK_RV rv2 = op->fn->C_SetAttributeValue(op->s, h, &tr, 1);
            if (rv2 != CKR_OK) {
                estc_log(op->ctx, ESTC_LOG_DEBUG, "%s: CKA_TRUSTED not set: %s", op->shown,
                         estc__ckr_name(rv2) != NULL ? estc__ckr_name(rv2) : "?");
            }
        }
        if (rv != CKR_OK) {
            err = p11_fail(op, "C_CreateObject", rv);
        } else if (kind == ESTC_OBJ_TRUST && !cert_is_trust(op, h)) {
            destroy_quiet(op, h);
            err = estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                             "%s: the token cannot mark a certificate as trusted", op->shown);
        }
    }
    estc_buf_free(&subject);
    estc_buf_free(&issuer);
    estc_buf_free(&serial);
    return err;
}

static estc_err do_cert_load(struct p11_op *op, estc_buf *der)
{
    static const CK_OBJECT_CLASS allowed[] = {CKO_CERTIFICATE};
    estc_err err = need_object(op, false);
    if (err == ESTC_OK) {
        err = check_type(op, allowed, 1);
    }
    if (err == ESTC_OK) {
        err = op_token(op);
    }
    CK_OBJECT_HANDLE h;
    bool found = false;
    if (err == ESTC_OK) {
        err = find_one(op, CKO_CERTIFICATE, &h, &found);
    }
    if (err == ESTC_OK && !found) {
        return not_found(op, "certificate");
    }
    if (err == ESTC_OK) {
        err = get_attr(op, h, CKA_VALUE, der);
    }
    return err;
}

static estc_err do_cert_remove(struct p11_op *op)
{
    static const CK_OBJECT_CLASS allowed[] = {CKO_CERTIFICATE};
    estc_err err = need_object(op, false);
    if (err == ESTC_OK) {
        err = check_type(op, allowed, 1);
    }
    if (err == ESTC_OK) {
        err = op_token(op);
    }
    CK_ULONG n = 0;
    if (err == ESTC_OK) {
        err = destroy_all(op, CKO_CERTIFICATE, -1, &n);
    }
    if (err == ESTC_OK && n == 0) {
        return not_found(op, "certificate");
    }
    return err;
}

static estc_err do_exists(struct p11_op *op, estc_obj_kind kind, bool *found)
{
    estc_err err = need_object(op, false);
    if (err == ESTC_OK) {
        err = op_token(op);
    }
    if (err == ESTC_OK && kind == ESTC_OBJ_KEY) {
        err = need_user(op);
    }
    if (err != ESTC_OK) {
        return err;
    }
    *found = false;
    CK_OBJECT_HANDLE hs[16];
    CK_ULONG n = 0;
    if (kind == ESTC_OBJ_KEY) {
        err = find_objects(op, CKO_PRIVATE_KEY, true, hs, 1, &n);
        if (err == ESTC_OK && n == 0) {
            err = find_objects(op, CKO_PUBLIC_KEY, true, hs, 1, &n);
        }
        *found = (err == ESTC_OK && n > 0);
        return err;
    }
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST) {
        return estc_error(op->ctx, ESTC_ERR_INVALID_ARG, "%s: unknown object kind", op->shown);
    }
    err = find_objects(op, CKO_CERTIFICATE, true, hs, 16, &n);
    for (CK_ULONG i = 0; err == ESTC_OK && i < n && !*found; i++) {
        *found = cert_is_trust(op, hs[i]) == (kind == ESTC_OBJ_TRUST);
    }
    return err;
}

/* ------------------------------------------------------------------------ */
/* Addresses and listing                                                     */
/* ------------------------------------------------------------------------ */

static bool attr_named(const char *a, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && strncmp(a, name, n) == 0 && a[n] == '=';
}

/* @prefix with object=<@name> in its path part instead of any object=, id=
 * or type= (the prefix names the token; the name names the object). @name
 * is percent-encoded where RFC 7512 requires it, the same way every time, so
 * that listed and derived addresses compare equal as strings. */
static estc_err derive(const char *prefix, const char *name, size_t name_len, char **out)
{
    static const char scheme[] = "pkcs11:";
    if (strncasecmp(prefix, scheme, sizeof(scheme) - 1) != 0) {
        return ESTC_ERR_BAD_ADDRESS;
    }
    const char *path = prefix + sizeof(scheme) - 1;
    const char *q = strchr(path, '?');
    size_t path_len = q != NULL ? (size_t)(q - path) : strlen(path);
    size_t cap = strlen(prefix) + 3 * name_len + 16;
    char *s = malloc(cap);
    if (s == NULL) {
        return ESTC_ERR_NOMEM;
    }
    size_t o = 0;
    memcpy(s, scheme, sizeof(scheme) - 1);
    o = sizeof(scheme) - 1;
    const char *a = path;
    while (a < path + path_len) {
        const char *end = memchr(a, ';', (size_t)(path + path_len - a));
        size_t len = end != NULL ? (size_t)(end - a) : (size_t)(path + path_len - a);
        if (len > 0 && !attr_named(a, len, "object") && !attr_named(a, len, "id") &&
            !attr_named(a, len, "type")) {
            memcpy(s + o, a, len);
            o += len;
            s[o++] = ';';
        }
        a += len + 1;
    }
    o += (size_t)snprintf(s + o, cap - o, "object=");
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < name_len; i++) {
        unsigned char c = (unsigned char)name[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            s[o++] = (char)c;
        } else {
            s[o++] = '%';
            s[o++] = hex[c >> 4];
            s[o++] = hex[c & 15];
        }
    }
    if (q != NULL) {
        size_t ql = strlen(q);
        memcpy(s + o, q, ql);
        o += ql;
    }
    s[o] = '\0';
    if (o > ESTC_ADDRESS_MAX) {
        free(s);
        return ESTC_ERR_BAD_ADDRESS;
    }
    *out = s;
    return ESTC_OK;
}

struct addr_list {
    char **items;
    size_t n, cap;
};

static void addr_list_free(struct addr_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i]);
    }
    free(l->items);
}

static bool addr_list_push(struct addr_list *l, char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap != 0 ? 2 * l->cap : 16;
        char **items = realloc(l->items, cap * sizeof(*items));
        if (items == NULL) {
            return false;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = s;
    return true;
}

/* The addresses of the objects of @kind on the prefix's token whose label
 * starts with the prefix's object= (when given). Collected first, so that the
 * callback may use the token. */
static estc_err collect(struct p11_op *op, const char *prefix, estc_obj_kind kind,
                        struct addr_list *l)
{
    CK_ATTRIBUTE *want, *uid;
    uri_object(op, &want, &uid);
    CK_OBJECT_CLASS cls = kind == ESTC_OBJ_KEY ? CKO_PRIVATE_KEY : CKO_CERTIFICATE;
    CK_OBJECT_HANDLE *hs = calloc(LIST_MAX_OBJECTS, sizeof(*hs));
    if (hs == NULL) {
        return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
    }
    CK_ULONG n = 0;
    estc_err err = find_objects(op, cls, false, hs, LIST_MAX_OBJECTS, &n);
    for (CK_ULONG i = 0; err == ESTC_OK && i < n; i++) {
        if (kind != ESTC_OBJ_KEY && cert_is_trust(op, hs[i]) != (kind == ESTC_OBJ_TRUST)) {
            continue;
        }
        estc_buf label = {0};
        if (get_attr(op, hs[i], CKA_LABEL, &label) != ESTC_OK) {
            /* An object without a label has no address of ours. */
            estc_ctx_clear_error(op->ctx);
            continue;
        }
        bool match = want == NULL || (label.len >= want->ulValueLen &&
                                      memcmp(label.data, want->pValue, want->ulValueLen) == 0);
        char *a = NULL;
        if (match && label.len > 0) {
            err = derive(prefix, (const char *)label.data, label.len, &a);
            if (err == ESTC_ERR_BAD_ADDRESS) {
                err = ESTC_OK; /* a label too long for an address */
            } else if (err != ESTC_OK) {
                err = estc_error(op->ctx, err, "%s: out of memory", op->shown);
            } else if (!addr_list_push(l, a)) {
                free(a);
                err = estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
            }
        }
        estc_buf_free(&label);
    }
    free(hs);
    return err;
}

/* ------------------------------------------------------------------------ */
/* The driver operations                                                     */
/* ------------------------------------------------------------------------ */

static estc_err p11_init(estc_ctx *ctx, void *state)
{
    (void)ctx;
    struct p11_state *st = state;
    st->pid = getpid();
    return ESTC_OK;
}

static void p11_cleanup(estc_ctx *ctx, void *state)
{
    (void)ctx;
    struct p11_state *st = state;
    pid_t pid = getpid();
    while (st->tokens != NULL) {
        struct p11_token *t = st->tokens;
        st->tokens = t->next;
        if (t->has_session && st->pid == pid && t->mod->init_pid == pid) {
            (void)t->mod->fn->C_CloseSession(t->session);
        }
        free(t);
    }
    while (st->modules != NULL) {
        struct p11_module *m = st->modules;
        st->modules = m->next;
        if (m->init_pid == pid) {
            (void)p11_kit_module_finalize(m->fn);
        }
        if (m->owned) {
            p11_kit_module_release(m->fn);
        }
        free(m->key);
        free(m);
    }
    if (st->registered != NULL) {
        p11_kit_modules_release(st->registered);
        st->registered = NULL;
    }
}

/* Run @body on a parsed address, once more after a repairable failure. */
#define P11_RUN(ctx, state, addr, body)                                                            \
    do {                                                                                           \
        struct p11_op op_;                                                                         \
        estc_err err_ = op_parse(&op_, (ctx), (state), (addr));                                    \
        if (err_ == ESTC_OK) {                                                                     \
            struct p11_op *op = &op_;                                                              \
            err_ = (body);                                                                         \
            if (op_recover(op, err_)) {                                                            \
                op->rv = CKR_OK;                                                                   \
                err_ = (body);                                                                     \
            }                                                                                      \
        }                                                                                          \
        op_end(&op_);                                                                              \
        return err_;                                                                               \
    } while (0)

static estc_err p11_key_generate(estc_ctx *ctx, void *state, const char *addr, estc_key_type type)
{
    P11_RUN(ctx, state, addr, do_key_generate(op, type));
}

static estc_err p11_key_import(estc_ctx *ctx, void *state, const char *addr, const uint8_t *pkcs8,
                               size_t pkcs8_len)
{
    P11_RUN(ctx, state, addr, do_key_import(op, pkcs8, pkcs8_len));
}

static estc_err p11_key_public(estc_ctx *ctx, void *state, const char *addr, estc_buf *spki)
{
    P11_RUN(ctx, state, addr, do_key_public(op, spki));
}

static estc_err p11_key_sign(estc_ctx *ctx, void *state, const char *addr, estc_sig_alg alg,
                             estc_hash hash, const uint8_t *digest, size_t digest_len,
                             estc_buf *sig)
{
    P11_RUN(ctx, state, addr, do_key_sign(op, alg, hash, digest, digest_len, sig));
}

static estc_err p11_key_remove(estc_ctx *ctx, void *state, const char *addr)
{
    P11_RUN(ctx, state, addr, do_key_remove(op));
}

static estc_err p11_cert_store(estc_ctx *ctx, void *state, const char *addr, estc_obj_kind kind,
                               const uint8_t *der, size_t der_len)
{
    P11_RUN(ctx, state, addr, do_cert_store(op, kind, der, der_len));
}

static estc_err p11_cert_load(estc_ctx *ctx, void *state, const char *addr, estc_buf *der)
{
    P11_RUN(ctx, state, addr, do_cert_load(op, der));
}

static estc_err p11_cert_remove(estc_ctx *ctx, void *state, const char *addr)
{
    P11_RUN(ctx, state, addr, do_cert_remove(op));
}

static estc_err p11_exists(estc_ctx *ctx, void *state, const char *addr, estc_obj_kind kind,
                           bool *found)
{
    P11_RUN(ctx, state, addr, do_exists(op, kind, found));
}

static estc_err do_list(struct p11_op *op, const char *prefix, estc_obj_kind kind, estc_list_fn fn,
                        void *arg)
{
    if (kind != ESTC_OBJ_KEY && kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST) {
        return estc_error(op->ctx, ESTC_ERR_INVALID_ARG, "%s: unknown object kind", op->shown);
    }
    estc_err err = op_token(op);
    if (err == ESTC_OK && kind == ESTC_OBJ_KEY) {
        err = need_user(op);
    }
    if (err != ESTC_OK) {
        return err;
    }
    struct addr_list l = {0};
    err = collect(op, prefix, kind, &l);
    for (size_t i = 0; err == ESTC_OK && i < l.n; i++) {
        if (!fn(arg, l.items[i], kind)) {
            break;
        }
    }
    addr_list_free(&l);
    return err;
}

static estc_err p11_list(estc_ctx *ctx, void *state, const char *prefix, estc_obj_kind kind,
                         estc_list_fn fn, void *arg)
{
    P11_RUN(ctx, state, prefix, do_list(op, prefix, kind, fn, arg));
}

static estc_err p11_address_derive(estc_ctx *ctx, void *state, const char *prefix,
                                   estc_obj_kind kind, const char *name, char **addr)
{
    (void)kind;
    struct p11_op op;
    estc_err err = op_parse(&op, ctx, state, prefix);
    if (err != ESTC_OK) {
        op_end(&op);
        return err;
    }
    /* An object= in the prefix is a label prefix: the namespace of the
     * objects made under it, and what list() filters on. */
    CK_ATTRIBUTE *ns = p11_kit_uri_get_attribute(op.uri, CKA_LABEL);
    size_t ns_len = ns != NULL ? ns->ulValueLen : 0;
    size_t name_len = strlen(name);
    char *label = malloc(ns_len + name_len + 1);
    if (label == NULL) {
        op_end(&op);
        return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", op.shown);
    }
    if (ns_len > 0) {
        memcpy(label, ns->pValue, ns_len);
    }
    memcpy(label + ns_len, name, name_len + 1);
    op_end(&op);
    err = derive(prefix, label, ns_len + name_len, addr);
    free(label);
    if (err == ESTC_ERR_NOMEM) {
        return estc_error(ctx, err, "%s: out of memory", op.shown);
    }
    if (err != ESTC_OK) {
        return estc_error(ctx, err, "%s: cannot derive an address for %s", op.shown, name);
    }
    return ESTC_OK;
}

const struct estc_driver estc__driver_pkcs11 = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "pkcs11",
    .description = "PKCS#11 tokens (RFC 7512 URIs, p11-kit)",
    .state_size = sizeof(struct p11_state),
    .init = p11_init,
    .cleanup = p11_cleanup,
    .key_generate = p11_key_generate,
    .key_import = p11_key_import,
    .key_public = p11_key_public,
    .key_sign = p11_key_sign,
    .key_remove = p11_key_remove,
    .cert_store = p11_cert_store,
    .cert_load = p11_cert_load,
    .cert_remove = p11_cert_remove,
    .list = p11_list,
    .exists = p11_exists,
    .address_derive = p11_address_derive,
};
