/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The driver registry: drivers by scheme, built in, registered by the
 * application, or loaded from a shared object.
 */
#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static bool valid_scheme(const char *s)
{
    size_t n = 0;
    if (s == NULL || !islower((unsigned char)s[0]))
        return false;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!(islower(c) || isdigit(c) || c == '+' || c == '-' || c == '.'))
            return false;
    }
    return n <= ESTC_SCHEME_MAX;
}

static estc_err check_driver(estc_ctx *ctx, const struct estc_driver *d)
{
    if (d->api_version == 1)
        return estc_error(ctx, ESTC_ERR_DRIVER,
                          "driver API version 1, this library speaks %u: since version 2 the "
                          "operations receive parsed addresses (struct estc_address) and the "
                          "driver declares its capabilities; rebuild the driver against this "
                          "estc/engine.h (see docs/writing-a-driver.md)",
                          ESTC_DRIVER_API_VERSION);
    if (d->api_version != ESTC_DRIVER_API_VERSION)
        return estc_error(ctx, ESTC_ERR_DRIVER, "driver API version %u, this library speaks %u",
                          d->api_version, ESTC_DRIVER_API_VERSION);
    if (!valid_scheme(d->scheme))
        return estc_error(ctx, ESTC_ERR_DRIVER, "driver scheme \"%s\" is not a lower-case scheme",
                          d->scheme != NULL ? d->scheme : "(null)");
    const char *missing = NULL;
    if (d->key_generate == NULL)
        missing = "key_generate";
    else if (d->key_public == NULL)
        missing = "key_public";
    else if (d->key_sign == NULL)
        missing = "key_sign";
    else if (d->key_remove == NULL)
        missing = "key_remove";
    else if (d->cert_store == NULL)
        missing = "cert_store";
    else if (d->cert_load == NULL)
        missing = "cert_load";
    else if (d->cert_remove == NULL)
        missing = "cert_remove";
    else if (d->list == NULL)
        missing = "list";
    else if (d->exists == NULL)
        missing = "exists";
    else if (d->address_derive == NULL)
        missing = "address_derive";
    if (missing != NULL)
        return estc_error(ctx, ESTC_ERR_DRIVER, "driver \"%s\" lacks the required operation %s",
                          d->scheme, missing);
    if ((d->caps & ~(unsigned)ESTC_CAP_ALL) != 0)
        return estc_error(ctx, ESTC_ERR_DRIVER,
                          "driver \"%s\" declares capabilities this library does not know (0x%x)",
                          d->scheme, d->caps & ~(unsigned)ESTC_CAP_ALL);
    /* An operation and its capability come together, or neither. */
    if (((d->caps & ESTC_CAP_KEY_EXPORT) != 0) != (d->key_export != NULL))
        return estc_error(ctx, ESTC_ERR_DRIVER,
                          "driver \"%s\": key_export and ESTC_CAP_KEY_EXPORT go together",
                          d->scheme);
    if (((d->caps & ESTC_CAP_FILES) != 0) != (d->key_file_path != NULL))
        return estc_error(ctx, ESTC_ERR_DRIVER,
                          "driver \"%s\": key_file_path and ESTC_CAP_FILES go together", d->scheme);
    return ESTC_OK;
}

static struct estc__engine *lookup(estc_ctx *ctx, const char *scheme)
{
    for (size_t i = 0; i < ctx->n_engines; i++) {
        if (strcmp(ctx->engines[i].driver->scheme, scheme) == 0)
            return &ctx->engines[i];
    }
    return NULL;
}

/* A driver's state, allocated and initialised. */
static estc_err start_driver(estc_ctx *ctx, const struct estc_driver *driver, void **out)
{
    void *state = NULL;
    if (driver->state_size > 0) {
        state = calloc(1, driver->state_size);
        if (state == NULL)
            return ESTC_ERR_NOMEM;
    }
    if (driver->init != NULL) {
        estc_err err = driver->init(ctx, state);
        if (err != ESTC_OK) {
            free(state);
            return err;
        }
    }
    *out = state;
    return ESTC_OK;
}

/*
 * The plug-in behind the placeholder of @e loaded and started: its folder
 * is $ESTC_ENGINE_DIR (ignored in a set-uid or set-gid program) or the
 * installed one. On failure @e stays a placeholder, to be tried again on
 * the next use.
 */
static estc_err load_plugin(estc_ctx *ctx, struct estc__engine *e)
{
    const char *scheme = e->driver->scheme;
    const char *dir = secure_getenv("ESTC_ENGINE_DIR");
    if (dir == NULL || dir[0] == '\0')
        dir = estc__plugin_dir();
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/estc-%s.so", dir, scheme) >= sizeof(path))
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "the %s: engine: plug-in folder name too long",
                          scheme);
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (module == NULL)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED,
                          "the %s: engine is a plug-in that cannot be loaded: %s", scheme,
                          dlerror());
    estc_driver_entry_fn entry;
    *(void **)&entry = dlsym(module, ESTC_DRIVER_ENTRY);
    const struct estc_driver *driver = entry != NULL ? entry() : NULL;
    estc_err err = ESTC_OK;
    if (driver == NULL)
        err = estc_error(ctx, ESTC_ERR_UNSUPPORTED, "the %s: engine plug-in %s has no driver", scheme,
                         path);
    else if (strcmp(driver->scheme != NULL ? driver->scheme : "", scheme) != 0)
        err = estc_error(ctx, ESTC_ERR_UNSUPPORTED,
                         "the %s: engine plug-in %s holds another driver (\"%s\")", scheme, path,
                         driver->scheme != NULL ? driver->scheme : "(null)");
    void *state = NULL;
    if (err == ESTC_OK) {
        /* The driver's own complaint, with the plug-in it came from. */
        ctx->detail[0] = '\0';
        err = check_driver(ctx, driver);
        if (err == ESTC_OK)
            err = start_driver(ctx, driver, &state);
        if (err != ESTC_OK) {
            char why[sizeof(ctx->detail)];
            snprintf(why, sizeof(why), "%s",
                     ctx->detail[0] != '\0' ? ctx->detail : estc_strerror(err));
            err = estc_error(ctx, err, "the %s: engine plug-in %s cannot be used: %s", scheme, path,
                             why);
        }
    }
    if (err != ESTC_OK) {
        dlclose(module);
        return err;
    }
    estc__addr_memo_drop(ctx);
    e->driver = driver;
    e->state = state;
    e->module = module;
    e->pending = false;
    estc_log(ctx, ESTC_LOG_DEBUG, "engine \"%s\" loaded from %s", scheme, path);
    return ESTC_OK;
}

/* The engine registered for @scheme, its plug-in loaded when it is one;
 * ESTC_ERR_UNKNOWN_SCHEME when there is none (no detail). */
static estc_err find_loaded(estc_ctx *ctx, const char *scheme, struct estc__engine **out)
{
    struct estc__engine *e = lookup(ctx, scheme);
    if (e == NULL)
        return ESTC_ERR_UNKNOWN_SCHEME;
    if (e->pending) {
        estc_err err = load_plugin(ctx, e);
        if (err != ESTC_OK)
            return err;
    }
    *out = e;
    return ESTC_OK;
}

static estc_err grow(estc_ctx *ctx)
{
    if (ctx->n_engines < ctx->cap_engines)
        return ESTC_OK;
    size_t cap = ctx->cap_engines == 0 ? 8 : ctx->cap_engines * 2;
    struct estc__engine *grown = realloc(ctx->engines, cap * sizeof(*grown));
    if (grown == NULL)
        return ESTC_ERR_NOMEM;
    ctx->engines = grown;
    ctx->cap_engines = cap;
    return ESTC_OK;
}

estc_err estc__register_plugin(estc_ctx *ctx, const struct estc_driver *placeholder)
{
    if (lookup(ctx, placeholder->scheme) != NULL)
        return estc_error(ctx, ESTC_ERR_EXISTS, "scheme \"%s\" is registered already",
                          placeholder->scheme);
    if (grow(ctx) != ESTC_OK)
        return ESTC_ERR_NOMEM;
    estc__addr_memo_drop(ctx);
    ctx->engines[ctx->n_engines++] = (struct estc__engine){.driver = placeholder, .pending = true};
    return ESTC_OK;
}

static estc_err add_engine(estc_ctx *ctx, const struct estc_driver *driver, void *module)
{
    if (ctx == NULL || driver == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_err err = check_driver(ctx, driver);
    if (err != ESTC_OK)
        return err;
    if (lookup(ctx, driver->scheme) != NULL)
        return estc_error(ctx, ESTC_ERR_EXISTS, "scheme \"%s\" is registered already",
                          driver->scheme);
    if (grow(ctx) != ESTC_OK)
        return ESTC_ERR_NOMEM;
    void *state = NULL;
    err = start_driver(ctx, driver, &state);
    if (err != ESTC_OK)
        return err;
    estc__addr_memo_drop(ctx);
    ctx->engines[ctx->n_engines++] = (struct estc__engine){.driver = driver,
                                                           .state = state,
                                                           .module = module,
                                                           .gen = NULL,
                                                           .gen_arg = NULL,
                                                           .defaults = NULL};
    estc_log(ctx, ESTC_LOG_DEBUG, "engine \"%s\" registered", driver->scheme);
    return ESTC_OK;
}

estc_err estc_engine_register(estc_ctx *ctx, const struct estc_driver *driver)
{
    return add_engine(ctx, driver, NULL);
}

estc_err estc_engine_load_module(estc_ctx *ctx, const char *path)
{
    if (ctx == NULL || path == NULL || path[0] == '\0')
        return ESTC_ERR_INVALID_ARG;
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (module == NULL)
        return estc_error(ctx, ESTC_ERR_IO, "cannot load driver module: %s", dlerror());
    estc_driver_entry_fn entry;
    /* POSIX guarantees that a function pointer survives the round trip. */
    *(void **)&entry = dlsym(module, ESTC_DRIVER_ENTRY);
    const struct estc_driver *driver = entry != NULL ? entry() : NULL;
    if (driver == NULL) {
        dlclose(module);
        return estc_error(ctx, ESTC_ERR_DRIVER, "%s: no %s() entry point or it returned NULL", path,
                          ESTC_DRIVER_ENTRY);
    }
    estc_err err = add_engine(ctx, driver, module);
    if (err != ESTC_OK)
        dlclose(module);
    return err;
}

estc_err estc__engine_for(estc_ctx *ctx, const char *addr, struct estc__engine **engine)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    if (ctx == NULL || addr == NULL || engine == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_err err = estc_address_scheme(addr, scheme);
    if (err != ESTC_OK)
        return estc_error(ctx, err, "bad address \"%.64s\": no valid scheme", addr);
    struct estc__engine *e = NULL;
    err = find_loaded(ctx, scheme, &e);
    if (err == ESTC_ERR_UNKNOWN_SCHEME)
        return estc_error(ctx, err, "no engine for scheme \"%s:\"", scheme);
    if (err != ESTC_OK)
        return err;
    *engine = e;
    return ESTC_OK;
}

static void memo_clear(estc_ctx *ctx)
{
    estc_address_free(ctx->addr_memo.parsed);
    free(ctx->addr_memo.text);
    memset(&ctx->addr_memo, 0, sizeof(ctx->addr_memo));
}

void estc__addr_memo_drop(estc_ctx *ctx)
{
    ctx->registry_gen++;
    if (!ctx->addr_memo.in_use)
        memo_clear(ctx); /* else its release frees it: its generation is old */
}

void estc__engine_release(estc_ctx *ctx, const struct estc__engine *e, estc_address *parsed)
{
    if (parsed == NULL)
        return;
    if (parsed == ctx->addr_memo.parsed) {
        ctx->addr_memo.in_use = false;
        if (ctx->addr_memo.gen != ctx->registry_gen)
            memo_clear(ctx);
        return;
    }
    /* Kept in place of the last one, unless that one is in the hands of an
     * operation this one ran inside (from a driver's callback). */
    char *text = ctx->addr_memo.in_use ? NULL : strdup(parsed->text);
    if (text == NULL) {
        estc_address_free(parsed);
        return;
    }
    memo_clear(ctx);
    ctx->addr_memo.text = text;
    ctx->addr_memo.parsed = parsed;
    ctx->addr_memo.engine = e;
    ctx->addr_memo.gen = ctx->registry_gen;
}

estc_err estc__engine_parse(estc_ctx *ctx, const char *addr, struct estc__engine **engine,
                            estc_address **parsed)
{
    struct estc__engine *e;
    estc_err err = estc__engine_for(ctx, addr, &e);
    if (err != ESTC_OK)
        return err;
    if (!ctx->addr_memo.in_use && ctx->addr_memo.parsed != NULL &&
        ctx->addr_memo.gen == ctx->registry_gen && ctx->addr_memo.engine == e &&
        strcmp(ctx->addr_memo.text, addr) == 0) {
        ctx->addr_memo.in_use = true;
        *engine = e;
        *parsed = ctx->addr_memo.parsed;
        return ESTC_OK;
    }
    estc_address *a = NULL;
    if (e->defaults != NULL)
        err = estc__address_parse_defaults(addr, e->defaults, &a);
    else
        err = estc_address_parse(addr, (e->driver->caps & ESTC_CAP_ATTRIBUTES) != 0, &a);
    if (err == ESTC_ERR_BAD_ADDRESS) {
        char shown[ESTC_ADDRESS_MAX + 64];
        return estc_error(ctx, err,
                          "bad address \"%s\": attributes must be name=value, each given once, "
                          "with valid percent-encoding",
                          estc_redact(addr, shown, sizeof(shown)));
    }
    if (err != ESTC_OK)
        return err;
    *engine = e;
    *parsed = a;
    return ESTC_OK;
}

/* Appends "name=value" (value percent-encoded where needed) to @q. */
static bool append_attr(char **q, const char *name, const char *value)
{
    static const char plain[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/:,";
    size_t old = *q != NULL ? strlen(*q) : 0;
    size_t cap = old + 1 + strlen(name) + 1 + 3 * strlen(value) + 1;
    char *grown = realloc(*q, cap);
    if (grown == NULL)
        return false;
    size_t n = old;
    if (old > 0)
        grown[n++] = '&';
    n += (size_t)snprintf(grown + n, cap - n, "%s=", name);
    for (const unsigned char *v = (const unsigned char *)value; *v != '\0'; v++) {
        if (strchr(plain, *v) != NULL)
            grown[n++] = (char)*v;
        else
            n += (size_t)snprintf(grown + n, cap - n, "%%%02X", *v);
    }
    grown[n] = '\0';
    *q = grown;
    return true;
}

estc_err estc_engine_set_default(estc_ctx *ctx, const char *scheme, const char *name,
                                 const char *value)
{
    char probe[ESTC_SCHEME_MAX + 3];
    if (ctx == NULL || scheme == NULL || name == NULL || strlen(scheme) > ESTC_SCHEME_MAX ||
        !valid_scheme(scheme))
        return ESTC_ERR_INVALID_ARG;
    size_t nl = strlen(name);
    if (nl == 0 || nl > 64 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789-_.") != nl)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "bad attribute name for a default");
    snprintf(probe, sizeof(probe), "%s:", scheme);
    struct estc__engine *e;
    estc_err err = estc__engine_for(ctx, probe, &e);
    if (err != ESTC_OK)
        return err;
    if ((e->driver->caps & ESTC_CAP_ATTRIBUTES) == 0)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED,
                          "engine \"%s\" takes no attributes, so it has no defaults", scheme);
    /* Rebuild the list without @name, then add it again with its value. */
    char *rebuilt = NULL;
    bool ok = true;
    if (e->defaults != NULL) {
        estc_address *d = NULL;
        size_t dn = strlen(e->defaults) + 4; /* "d:?" and the NUL */
        char *dtext = malloc(dn);
        if (dtext == NULL)
            return ESTC_ERR_NOMEM;
        snprintf(dtext, dn, "d:?%s", e->defaults);
        err = estc_address_parse(dtext, true, &d);
        free(dtext);
        if (err != ESTC_OK)
            return err;
        for (size_t i = 0; ok && i < d->n_query; i++) {
            if (strcmp(d->query[i].name, name) != 0)
                ok = append_attr(&rebuilt, d->query[i].name, d->query[i].value);
        }
        estc_address_free(d);
    }
    if (ok && value != NULL) {
        if (strlen(value) > ESTC_ADDRESS_MAX)
            ok = false, err = ESTC_ERR_INVALID_ARG;
        else
            ok = append_attr(&rebuilt, name, value);
    }
    if (!ok) {
        free(rebuilt);
        return err != ESTC_OK ? err : ESTC_ERR_NOMEM;
    }
    estc__addr_memo_drop(ctx);
    free(e->defaults);
    e->defaults = rebuilt;
    return ESTC_OK;
}

bool estc_engine_known(estc_ctx *ctx, const char *addr)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    /* A placeholder counts: its scheme is taken whether it loads or not. */
    return ctx != NULL && addr != NULL && estc_address_scheme(addr, scheme) == ESTC_OK &&
           lookup(ctx, scheme) != NULL;
}

unsigned estc_engine_caps(estc_ctx *ctx, const char *addr)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    if (ctx == NULL || addr == NULL || estc_address_scheme(addr, scheme) != ESTC_OK)
        return 0;
    struct estc__engine *e = NULL;
    return find_loaded(ctx, scheme, &e) == ESTC_OK ? e->driver->caps : 0;
}

estc_err estc_engine_find_cap(estc_ctx *ctx, unsigned caps, const struct estc_driver **driver)
{
    if (ctx == NULL || driver == NULL || caps == 0)
        return ESTC_ERR_INVALID_ARG;
    for (size_t i = 0; i < ctx->n_engines; i++) {
        struct estc__engine *e = &ctx->engines[i];
        /* A plug-in's capabilities are known once it is loaded; one that
         * cannot be is passed over. */
        if (e->pending && load_plugin(ctx, e) != ESTC_OK) {
            estc_ctx_clear_error(ctx);
            continue;
        }
        if ((e->driver->caps & caps) == caps) {
            *driver = e->driver;
            return ESTC_OK;
        }
    }
    return estc_error(ctx, ESTC_ERR_UNKNOWN_SCHEME, "no engine has the capabilities 0x%x", caps);
}

estc_err estc_engine_find(estc_ctx *ctx, const char *addr, const struct estc_driver **driver)
{
    struct estc__engine *e;
    if (driver == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_err err = estc__engine_for(ctx, addr, &e);
    if (err == ESTC_OK)
        *driver = e->driver;
    return err;
}

estc_err estc_engine_schemes(estc_ctx *ctx, void (*fn)(void *arg, const struct estc_driver *drv),
                             void *arg)
{
    if (ctx == NULL || fn == NULL)
        return ESTC_ERR_INVALID_ARG;
    for (size_t i = 0; i < ctx->n_engines; i++)
        fn(arg, ctx->engines[i].driver);
    return ESTC_OK;
}

void estc_ctx_free(estc_ctx *ctx)
{
    if (ctx == NULL)
        return;
    /* Reverse order: a later driver may rely on an earlier one. */
    for (size_t i = ctx->n_engines; i-- > 0;) {
        struct estc__engine *e = &ctx->engines[i];
        if (!e->pending && e->driver->cleanup != NULL)
            e->driver->cleanup(ctx, e->state);
        free(e->state);
        free(e->defaults);
        if (e->module != NULL)
            dlclose(e->module);
    }
    memo_clear(ctx);
    free(ctx->engines);
    free(ctx);
}
