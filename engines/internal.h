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
};

/* The engine for @addr, with the checks of estc_engine_find(). */
estc_err estc__engine_for(estc_ctx *ctx, const char *addr, struct estc__engine **engine);

/* The engine for @addr and the address parsed as its driver wants it (free
 * *@parsed with estc_address_free()); errors carry a detail text. */
estc_err estc__engine_parse(estc_ctx *ctx, const char *addr, struct estc__engine **engine,
                            estc_address **parsed);

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
