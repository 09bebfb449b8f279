/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PKCS#11 modules, tokens, sessions and login.
 *
 * Each module is loaded once per context (managed by p11-kit, so several
 * contexts and other libraries in the process can share it), each token gets
 * one read/write session, and the user logs in once per token. After fork()
 * the child re-initializes the modules before its first operation, as
 * PKCS#11 requires.
 */
#include "ckr.h"
#include "p11_internal.h"
#include "util.h"

#include <openssl/crypto.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
estc_err estc__p11_fail(struct p11_op *op, const char *call, CK_RV rv)
{
    char buf[32];
    op->rv = rv;
    return estc_error(op->ctx, rv_to_err(rv), "%s: %s: %s", op->shown, call, rv_name(rv, buf));
}

estc_err estc__p11_nomem(struct p11_op *op)
{
    return estc_error(op->ctx, ESTC_ERR_NOMEM, "%s: out of memory", op->shown);
}

/* ------------------------------------------------------------------------ */
/* Modules                                                                   */
/* ------------------------------------------------------------------------ */

/* Forget everything that belongs to the parent after fork(): the child must
 * initialize the modules again and open its own sessions. */
void estc__p11_check_fork(estc_ctx *ctx, struct p11_state *st)
{
    pid_t pid = getpid();
    if (st->pid == pid) {
        return;
    }
    estc_log(ctx, ESTC_LOG_DEBUG,
             "pkcs11: after fork: process %ld drops the sessions and object handles of process "
             "%ld and initializes its modules again",
             (long)pid, (long)st->pid);
    st->pid = pid;
    for (struct p11_token *t = st->tokens; t != NULL; t = t->next) {
        /* The parent's session and handles mean nothing here (and may name
         * other objects once the child's module numbers its own). */
        t->has_session = false;
        t->login_known = false;
        memset(t->hc, 0, sizeof(t->hc));
    }
}

static estc_err module_ready(struct p11_op *op, struct p11_module *mod)
{
    /* op->st->pid is this process's: estc__p11_check_fork() ran first (one
     * getpid() per operation, not one per module check). */
    if (mod->init_pid == op->st->pid) {
        return ESTC_OK;
    }
    CK_RV rv;
    if (mod->init_reserved != NULL) {
        /* Loaded unmanaged: its own C_Initialize, with the address's
         * x-init-reserved as pReserved (as p11-kit does with that option). */
        CK_C_INITIALIZE_ARGS args;
        memset(&args, 0, sizeof(args));
        args.flags = CKF_OS_LOCKING_OK;
        args.pReserved = mod->init_reserved;
        rv = mod->fn->C_Initialize(&args);
        /* Initialized by another part of the process (with its own
         * arguments): theirs to finalize, not ours. */
        mod->ours = rv == CKR_OK;
    } else {
        rv = p11_kit_module_initialize(mod->fn);
    }
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        return estc__p11_fail(op, "C_Initialize", rv);
    }
    mod->init_pid = getpid();
    const char *shown = mod->path != NULL ? mod->path : mod->name;
    estc_log(op->ctx, ESTC_LOG_DEBUG, "pkcs11: module %s initialized in process %ld",
             shown != NULL ? shown : "?", (long)mod->init_pid);
    return ESTC_OK;
}

/* Add a module loaded by @path, or one of the registered list called @name. */
static struct p11_module *module_add(struct p11_state *st, const char *path, const char *name,
                                     CK_FUNCTION_LIST *fn)
{
    struct p11_module *mod = calloc(1, sizeof(*mod));
    if (mod == NULL) {
        return NULL;
    }
    mod->path = path != NULL ? strdup(path) : NULL;
    mod->name = name != NULL ? strdup(name) : NULL;
    if (mod->path == NULL && mod->name == NULL) {
        free(mod);
        return NULL;
    }
    mod->fn = fn;
    mod->next = st->modules;
    st->modules = mod;
    return mod;
}

static void module_free(struct p11_module *m)
{
    free(m->init_reserved);
    free(m->path);
    free(m->name);
    free(m);
}

static bool same_init(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The module at @path, loaded once per context and x-init-reserved value. */
static estc_err module_by_path(struct p11_op *op, const char *path, struct p11_module **out)
{
    const char *init = op->uri.init_reserved != NULL ? op->uri.init_reserved->value : NULL;
    for (struct p11_module *m = op->st->modules; m != NULL; m = m->next) {
        if (m->path != NULL && strcmp(m->path, path) == 0 && same_init(m->init_reserved, init)) {
            *out = m;
            return module_ready(op, m);
        }
    }
    /* p11-kit's managed mode passes its own initialization arguments; a
     * module that needs ours is loaded unmanaged. */
    CK_FUNCTION_LIST *fn = p11_kit_module_load(path, init != NULL ? P11_KIT_MODULE_UNMANAGED : 0);
    if (fn == NULL) {
        const char *msg = p11_kit_message();
        return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: cannot load PKCS#11 module %s: %s",
                          op->shown, path, msg != NULL ? msg : "unknown error");
    }
    struct p11_module *mod = module_add(op->st, path, NULL, fn);
    if (mod != NULL && init != NULL) {
        mod->init_reserved = strdup(init);
        if (mod->init_reserved == NULL) {
            op->st->modules = mod->next;
            module_free(mod);
            mod = NULL;
        }
    }
    if (mod == NULL) {
        p11_kit_module_release(fn);
        return estc__p11_nomem(op);
    }
    *out = mod;
    return module_ready(op, mod);
}

/* Drop the entries of the registered list (they point into it). */
static void registered_drop(struct p11_state *st)
{
    struct p11_module **pp = &st->modules;
    while (*pp != NULL) {
        struct p11_module *m = *pp;
        if (m->path == NULL) {
            *pp = m->next;
            module_free(m);
        } else {
            pp = &m->next;
        }
    }
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
        struct p11_module *m = module_add(st, NULL, name != NULL ? name : "", list[i]);
        free(name);
        if (m == NULL) {
            registered_drop(st);
            p11_kit_modules_release(list);
            return estc__p11_nomem(op);
        }
    }
    st->registered = list;
    st->registered_loaded = true;
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Tokens                                                                    */
/* ------------------------------------------------------------------------ */

static bool slot_id_matches(const struct p11_op *op, CK_SLOT_ID slot)
{
    return op->uri.slot_id == (CK_SLOT_ID)-1 || op->uri.slot_id == slot;
}

static bool slot_matches(struct p11_op *op, CK_FUNCTION_LIST *fn, CK_SLOT_ID slot,
                         CK_SLOT_INFO *sinfo)
{
    if (!slot_id_matches(op, slot) || fn->C_GetSlotInfo(slot, sinfo) != CKR_OK) {
        return false;
    }
    return p11_kit_uri_match_slot_info(op->uri.match, sinfo) == 1;
}

/* A token this context already has a session with, when it matches: no
 * slot enumeration for the common case of one token used again and again. */
static bool cached_token(struct p11_op *op, struct p11_module *mod)
{
    for (struct p11_token *t = op->st->tokens; t != NULL; t = t->next) {
        if (t->mod == mod && t->has_session && !t->stale && slot_id_matches(op, t->slot) &&
            p11_kit_uri_match_slot_info(op->uri.match, &t->slot_info) == 1 &&
            p11_kit_uri_match_token_info(op->uri.match, &t->info) == 1) {
            op->tok = t;
            return true;
        }
    }
    return false;
}

/* Remember the token in @slot of @mod as the operation's token. */
static estc_err token_use(struct p11_op *op, struct p11_module *mod, CK_SLOT_ID slot,
                          const CK_SLOT_INFO *sinfo, const CK_TOKEN_INFO *tinfo)
{
    struct p11_token *t = op->st->tokens;
    while (t != NULL && !(t->mod == mod && t->slot == slot)) {
        t = t->next;
    }
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL) {
            return estc__p11_nomem(op);
        }
        t->mod = mod;
        t->slot = slot;
        t->next = op->st->tokens;
        op->st->tokens = t;
    }
    if (t->has_session &&
        memcmp(t->info.serialNumber, tinfo->serialNumber, sizeof(tinfo->serialNumber)) != 0) {
        /* Another token in the slot (re-initialized, or swapped): the pooled
         * session and the handles belonged to the old one. */
        if (mod->init_pid == getpid()) {
            (void)mod->fn->C_CloseSession(t->session);
        }
        t->has_session = false;
        memset(t->hc, 0, sizeof(t->hc));
    }
    t->slot_info = *sinfo;
    t->info = *tinfo;
    t->stale = false;
    op->tok = t;
    return ESTC_OK;
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
            return estc__p11_fail(op, "C_GetInfo", rv);
        }
        mod->have_info = true;
    }
    if (p11_kit_uri_match_module_info(op->uri.match, &mod->info) != 1) {
        return ESTC_OK;
    }
    if (cached_token(op, mod)) {
        *found = true;
        return ESTC_OK;
    }
    rv = fn->C_GetSlotList(CK_TRUE, NULL, &n);
    if (rv != CKR_OK) {
        return estc__p11_fail(op, "C_GetSlotList", rv);
    }
    if (n == 0) {
        return ESTC_OK;
    }
    CK_SLOT_ID *slots = calloc(n, sizeof(*slots));
    if (slots == NULL) {
        return estc__p11_nomem(op);
    }
    rv = fn->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK) {
        free(slots);
        return estc__p11_fail(op, "C_GetSlotList", rv);
    }
    estc_err err = ESTC_OK;
    for (CK_ULONG i = 0; i < n && !*found && err == ESTC_OK; i++) {
        CK_TOKEN_INFO tinfo;
        CK_SLOT_INFO sinfo;
        if (!slot_matches(op, fn, slots[i], &sinfo) ||
            fn->C_GetTokenInfo(slots[i], &tinfo) != CKR_OK ||
            p11_kit_uri_match_token_info(op->uri.match, &tinfo) != 1) {
            continue;
        }
        err = token_use(op, mod, slots[i], &sinfo, &tinfo);
        *found = err == ESTC_OK;
    }
    free(slots);
    return err;
}

/* module-name=, or every module p11-kit has registered. */
static estc_err token_in_registered(struct p11_op *op, const char *name, bool *found)
{
    estc_err err = registered_modules(op);
    bool named = false;
    for (struct p11_module *mod = op->st->modules; err == ESTC_OK && !*found && mod != NULL;
         mod = mod->next) {
        if (mod->name == NULL || mod->broken || (name != NULL && strcmp(mod->name, name) != 0)) {
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
            err = token_in_module(op, mod, found);
            if (err != ESTC_OK && name == NULL) {
                estc_ctx_clear_error(op->ctx);
                err = ESTC_OK;
            }
        }
    }
    if (err == ESTC_OK && name != NULL && !named) {
        return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: no registered PKCS#11 module is called %s",
                          op->shown, name);
    }
    return err;
}

/* The module: module-path=, else module-name=, else PKCS11_MODULE_PATH,
 * else every registered module. */
static estc_err find_token(struct p11_op *op)
{
    estc_err err;
    bool found = false;
    const char *path = op->uri.module_path != NULL ? op->uri.module_path->value : NULL;
    const char *name = op->uri.module_name != NULL ? op->uri.module_name->value : NULL;

    if (path == NULL && name == NULL) {
        path = secure_getenv("PKCS11_MODULE_PATH");
        if (path != NULL && path[0] == '\0') {
            path = NULL;
        }
    }
    if (path == NULL && op->uri.init_reserved != NULL) {
        return estc_error(op->ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: x-init-reserved needs module-path (or PKCS11_MODULE_PATH)",
                          op->shown);
    }
    if (path != NULL) {
        struct p11_module *mod = NULL;
        err = module_by_path(op, path, &mod);
        if (err == ESTC_OK) {
            err = token_in_module(op, mod, &found);
        }
    } else {
        err = token_in_registered(op, name, &found);
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

/* ------------------------------------------------------------------------ */
/* PIN, sessions and login                                                   */
/* ------------------------------------------------------------------------ */

/* The PIN in the file of pin-source (a file: URI or a plain path; the
 * value of the attribute, not an estc address), under the one rule for
 * files holding secrets (estc__read_secret_file()). */
static estc_err read_pin_source(struct p11_op *op, const char *source)
{
    estc_buf pin = {0};
    estc_err err =
        estc__read_secret_file(op->ctx, op->shown, "pin-source", estc__file_uri_path(source),
                               ESTC__FILE_SECRET, PIN_MAX, &pin);
    if (err != ESTC_OK) {
        return err;
    }
    memcpy(op->pin, pin.data, pin.len);
    op->pin[pin.len] = '\0';
    op->pin_len = pin.len;
    op->have_pin = true;
    estc_buf_free(&pin);
    return ESTC_OK;
}

/* The user PIN of the address: pin-value=, else the file of pin-source=. */
static estc_err get_pin(struct p11_op *op)
{
    const estc_attr *val = op->uri.pin_value;
    if (op->have_pin) {
        return ESTC_OK;
    }
    if (val != NULL) {
        /* Not longer than PIN_MAX: estc__p11_uri_load() checked. */
        memcpy(op->pin, val->value, val->value_len);
        op->pin[val->value_len] = '\0';
        op->pin_len = val->value_len;
        op->have_pin = true;
        return ESTC_OK;
    }
    if (op->uri.pin_source != NULL) {
        return read_pin_source(op, op->uri.pin_source->value);
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
            return estc__p11_fail(op, "C_OpenSession", rv);
        }
        t->has_session = true;
        t->login_known = false;
        estc_log(op->ctx, ESTC_LOG_DEBUG, "pkcs11: %s: session opened in process %ld", op->shown,
                 (long)getpid());
        /* Handles need not survive a new session (or a fork). */
        memset(t->hc, 0, sizeof(t->hc));
    }
    op->fn = fn;
    op->s = t->session;
    /* A login holds until the token says otherwise (CKR_USER_NOT_LOGGED_IN
     * makes estc__p11_recover() ask again): no C_GetSessionInfo per call. */
    if (t->login_known && t->logged_in) {
        op->logged_in = true;
        return ESTC_OK;
    }
    CK_SESSION_INFO si;
    rv = fn->C_GetSessionInfo(op->s, &si);
    if (rv != CKR_OK) {
        return estc__p11_fail(op, "C_GetSessionInfo", rv);
    }
    op->logged_in = (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS);
    t->login_known = true;
    t->logged_in = op->logged_in;
    if (op->logged_in || !op->have_pin) {
        return ESTC_OK;
    }
    rv = fn->C_Login(op->s, CKU_USER, (CK_UTF8CHAR *)op->pin, op->pin_len);
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        return estc__p11_fail(op, "C_Login", rv);
    }
    op->logged_in = true;
    t->logged_in = true;
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

/* Get the PIN, find the token, make its session ready and, with P11_USER,
 * make sure the user is logged in. */
estc_err estc__p11_session(struct p11_op *op)
{
    estc_err err = get_pin(op);
    if (err == ESTC_OK) {
        err = find_token(op);
    }
    if (err == ESTC_OK) {
        err = session_ready(op);
    }
    if (err == ESTC_OK && (op->needs & P11_USER) != 0) {
        err = need_user(op);
    }
    return err;
}

/* Close the sessions of @mod, drop its tokens' pools and handle caches and
 * finalize it (when initialized in this process): the next operation
 * initializes it again and enumerates its slots anew. */
static void module_drop(struct p11_state *st, struct p11_module *mod)
{
    pid_t pid = getpid();
    for (struct p11_token *t = st->tokens; t != NULL; t = t->next) {
        if (t->mod == mod) {
            if (t->has_session && mod->init_pid == pid) {
                (void)mod->fn->C_CloseSession(t->session);
            }
            t->has_session = false;
            t->login_known = false;
            t->stale = true;
            memset(t->hc, 0, sizeof(t->hc));
        }
    }
    if (mod->init_pid == pid) {
        if (mod->init_reserved != NULL) {
            /* Even when another part of the process initialized it: the
             * handles are wrong for everyone. */
            (void)mod->fn->C_Finalize(NULL);
        } else {
            (void)p11_kit_module_finalize(mod->fn);
        }
    }
    mod->init_pid = 0;
    mod->have_info = false;
}

/* Whether the token of the pooled session is gone or another one is in its
 * slot (deleted and initialized again, swapped): asked only after a failure,
 * never on the fast path. */
static bool token_changed(struct p11_op *op)
{
    struct p11_token *t = op->tok;
    CK_TOKEN_INFO ti;
    if (t->mod->init_pid != getpid()) {
        return false;
    }
    if (t->mod->fn->C_GetTokenInfo(t->slot, &ti) != CKR_OK) {
        return true;
    }
    return memcmp(ti.serialNumber, t->info.serialNumber, sizeof(ti.serialNumber)) != 0 ||
           memcmp(ti.label, t->info.label, sizeof(ti.label)) != 0;
}

/* Whether a failure of @err is worth one more attempt after repairing the
 * session state (a logout, a closed session, a re-initialized module, a
 * token removed or replaced). */
bool estc__p11_recover(struct p11_op *op, estc_err err)
{
    if (err == ESTC_OK || op->tok == NULL) {
        return false;
    }
    switch (op->rv) {
    case CKR_USER_NOT_LOGGED_IN:
        /* Logged out behind our back (C_Logout by another user of the
         * module, a token that times logins out): log in again. */
        op->tok->login_known = false;
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
        /* Another token may match the address now; a module that lists its
         * slots once (SoftHSM) shows it after initializing again. */
        module_drop(op->st, op->tok->mod);
        op->tok = NULL;
        return true;
    default:
        break;
    }
    /* A failure or an object not found on a token that is no longer the
     * one the session was opened on (a token deleted and initialized again
     * under the same label): the answer was the old token's. */
    bool suspect = err == ESTC_ERR_NOT_FOUND || op->rv == CKR_GENERAL_ERROR ||
                   op->rv == CKR_DEVICE_ERROR || op->rv == CKR_FUNCTION_FAILED;
    if (suspect && token_changed(op)) {
        module_drop(op->st, op->tok->mod);
        op->tok = NULL;
        return true;
    }
    return false;
}

/* Finalize and initialize the module of op->tok again and make the token
 * ready once more (session, login). For a module whose object handles
 * became ambiguous: tpm2-pkcs11 1.9 numbers a new object after its list's
 * head was deleted with a handle another object already has, so the handle
 * names the older object; initializing again loads the objects anew with
 * handles of their own. */
estc_err estc__p11_reinit(struct p11_op *op)
{
    module_drop(op->st, op->tok->mod);
    op->tok = NULL;
    return estc__p11_session(op);
}

/* Close the sessions and finalize and release the modules. */
void estc__p11_state_free(struct p11_state *st)
{
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
            if (m->init_reserved != NULL) {
                if (m->ours) {
                    (void)m->fn->C_Finalize(NULL);
                }
            } else {
                (void)p11_kit_module_finalize(m->fn);
            }
        }
        if (m->path != NULL) {
            p11_kit_module_release(m->fn);
        }
        module_free(m);
    }
    if (st->registered != NULL) {
        p11_kit_modules_release(st->registered);
        st->registered = NULL;
    }
}
