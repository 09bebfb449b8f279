/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine framework's private view of the library context.
 */
#ifndef ESTC_ENGINES_INTERNAL_H
#define ESTC_ENGINES_INTERNAL_H

#include <estc/engine.h>

/* One registered driver with its private state. */
struct estc__engine {
    const struct estc_driver *driver;
    void *state;
    void *module;            /* dlopen() handle when loaded from a file */
    estc_address_gen_fn gen; /* NULL: the default generator */
    void *gen_arg;
    char *defaults; /* "name=pct-value&name=pct-value": query attributes an
                       address lacks, or NULL (estc_engine_set_default()) */
    bool pending;   /* a plug-in not loaded yet: @driver is its placeholder
                       (the scheme alone), @state and @module are NULL */
};

struct estc_ctx {
    struct estc__engine *engines;
    size_t n_engines;
    size_t cap_engines;
    estc_log_fn log_fn;
    void *log_arg;
    estc_log_level log_level;
    char detail[512];
    /* The last address parsed for an operation, kept for the next one on
     * the same address (a signer signs with one key again and again, and a
     * parse costs more than some engines' signature): valid while
     * @registry_gen is the context's, handed to one operation at a time. */
    unsigned registry_gen; /* changed by every registration or default */
    struct {
        char *text;
        const struct estc__engine *engine;
        estc_address *parsed;
        unsigned gen;
        bool in_use;
    } addr_memo;
};

/* The engine for @addr, with the checks of estc_engine_find(). */
estc_err estc__engine_for(estc_ctx *ctx, const char *addr, struct estc__engine **engine);

/* The engine for @addr and the address parsed as its driver wants it (free
 * *@parsed with estc_address_free()); errors carry a detail text. */
estc_err estc__engine_parse(estc_ctx *ctx, const char *addr, struct estc__engine **engine,
                            estc_address **parsed);
/* Gives back what estc__engine_parse() returned for @e: kept for the next
 * operation on the same address, or freed. Drivers get the parsed address
 * for the length of one call and never keep it. */
void estc__engine_release(estc_ctx *ctx, const struct estc__engine *e, estc_address *parsed);
/* Forgets the kept address (a registration or default changed). */
void estc__addr_memo_drop(estc_ctx *ctx);

/* Parses @text like estc_address_parse() with attributes, then adds each
 * attribute of @defaults (a query string) that the address lacks to its
 * query attributes. text, redacted and body stay those of @text. */
estc_err estc__address_parse_defaults(const char *text, const char *defaults, estc_address **out);

/* Registers "mem", "file" and the placeholders of the optional drivers
 * built as plug-ins. */
estc_err estc__register_builtin(estc_ctx *ctx);

/* Registers @placeholder (api_version and scheme only) for the plug-in
 * estc-<scheme>.so, loaded on the first use of the scheme. */
estc_err estc__register_plugin(estc_ctx *ctx, const struct estc_driver *placeholder);

/* The folder of the plug-ins as installed (ESTC_ENGINE_DIR at build time). */
const char *estc__plugin_dir(void);

/* Whether @name is a valid object name for address_derive. */
bool estc__valid_object_name(const char *name);

#endif
