/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Error codes: names and descriptions, and the per-context detail text.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

static const struct {
    const char *name;
    const char *text;
} err_table[ESTC_ERR_COUNT] = {
    [ESTC_OK] = {"ESTC_OK", "success"},
    [ESTC_ERR_INVALID_ARG] = {"ESTC_ERR_INVALID_ARG", "invalid argument"},
    [ESTC_ERR_NOMEM] = {"ESTC_ERR_NOMEM", "out of memory"},
    [ESTC_ERR_BAD_ADDRESS] = {"ESTC_ERR_BAD_ADDRESS", "malformed engine address"},
    [ESTC_ERR_UNKNOWN_SCHEME] = {"ESTC_ERR_UNKNOWN_SCHEME", "no engine for the address scheme"},
    [ESTC_ERR_EXISTS] = {"ESTC_ERR_EXISTS", "already exists"},
    [ESTC_ERR_NOT_FOUND] = {"ESTC_ERR_NOT_FOUND", "not found"},
    [ESTC_ERR_UNSUPPORTED] = {"ESTC_ERR_UNSUPPORTED", "not supported by the engine"},
    [ESTC_ERR_ENGINE] = {"ESTC_ERR_ENGINE", "engine failure"},
    [ESTC_ERR_AUTH] = {"ESTC_ERR_AUTH", "authentication failed (PIN or authorization)"},
    [ESTC_ERR_IO] = {"ESTC_ERR_IO", "input/output error"},
    [ESTC_ERR_CRYPTO] = {"ESTC_ERR_CRYPTO", "cryptographic operation failed"},
    [ESTC_ERR_FORMAT] = {"ESTC_ERR_FORMAT", "malformed data"},
    [ESTC_ERR_STATE] = {"ESTC_ERR_STATE", "operation not valid in the current state"},
    [ESTC_ERR_DRIVER] = {"ESTC_ERR_DRIVER", "invalid or incompatible engine driver"},
    [ESTC_ERR_TRANSPORT] = {"ESTC_ERR_TRANSPORT", "transport (CoAP/DTLS) failure"},
    [ESTC_ERR_TIMEOUT] = {"ESTC_ERR_TIMEOUT", "timed out"},
    [ESTC_ERR_PROTOCOL] = {"ESTC_ERR_PROTOCOL", "protocol violation by the peer"},
    [ESTC_ERR_SERVER] = {"ESTC_ERR_SERVER", "the server answered with an error"},
    [ESTC_ERR_VALIDATION] = {"ESTC_ERR_VALIDATION", "server data failed validation"},
    [ESTC_ERR_LIMIT] = {"ESTC_ERR_LIMIT", "size or retry limit exceeded"},
    [ESTC_ERR_CANCELLED] = {"ESTC_ERR_CANCELLED", "operation cancelled"},
};

const char *estc_strerror(estc_err err)
{
    if ((unsigned)err >= ESTC_ERR_COUNT || err_table[err].text == NULL)
        return "unknown error";
    return err_table[err].text;
}

const char *estc_err_name(estc_err err)
{
    if ((unsigned)err >= ESTC_ERR_COUNT || err_table[err].name == NULL)
        return "ESTC_ERR_?";
    return err_table[err].name;
}

/* Attributes whose values are secrets. Addresses carry PINs; detail texts
 * and log lines name addresses. */
static const char *const secret_attrs[] = {"pin-value="};

/* Whether the secret value that @p is in ends at @p. A value runs to the end
 * of its attribute: ';' or '?' in the path, '&' in the query (RFC 7512 lets
 * a path value hold '&' and a query value '?' and ';'). Blanks and quotes
 * never stand raw in an address, so they end it too, as does ": " (the
 * separator after an address in a message). */
static bool value_ends(const char *p, bool in_query)
{
    if (*p == '\0' || isspace((unsigned char)*p) || *p == '"' || *p == '\'')
        return true;
    if (*p == ':' && (p[1] == '\0' || isspace((unsigned char)p[1])))
        return true;
    return in_query ? *p == '&' : (*p == ';' || *p == '?');
}

char *estc_redact(const char *text, char *out, size_t out_size)
{
    size_t o = 0;
    bool in_query = false; /* past the '?' of the address being read */
    if (out == NULL || out_size == 0)
        return out;
    const char *p = text != NULL ? text : "";
    while (*p != '\0' && o + 1 < out_size) {
        size_t key_len = 0;
        for (size_t i = 0; i < sizeof(secret_attrs) / sizeof(secret_attrs[0]); i++) {
            size_t n = strlen(secret_attrs[i]);
            if (strncasecmp(p, secret_attrs[i], n) == 0) {
                key_len = n;
                break;
            }
        }
        if (key_len == 0) {
            if (*p == '?')
                in_query = true;
            else if (isspace((unsigned char)*p) || *p == '"' || *p == '\'')
                in_query = false;
            out[o++] = *p++;
            continue;
        }
        /* The name as written, then the mask. */
        for (size_t k = 0; k < key_len && o + 1 < out_size; k++)
            out[o++] = *p++;
        for (const char *k = "***"; *k != '\0' && o + 1 < out_size; k++)
            out[o++] = *k;
        while (!value_ends(p, in_query))
            p++;
    }
    out[o] = '\0';
    return out;
}

/* Redacts @text in place (@size bytes with the NUL). */
static void redact(char *text, size_t size)
{
    char out[1024];
    if (size > sizeof(out))
        size = sizeof(out);
    estc_redact(text, out, size);
    memcpy(text, out, strlen(out) + 1);
}

static void log_text(estc_ctx *ctx, estc_log_level level, const char *text)
{
    if (ctx->log_fn != NULL && level <= ctx->log_level)
        ctx->log_fn(ctx->log_arg, level, text);
}

estc_err estc_error(estc_ctx *ctx, estc_err err, const char *fmt, ...)
{
    if (ctx == NULL || fmt == NULL)
        return err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->detail, sizeof(ctx->detail), fmt, ap);
    va_end(ap);
    redact(ctx->detail, sizeof(ctx->detail));
    char line[sizeof(ctx->detail) + 64];
    snprintf(line, sizeof(line), "%s: %s", estc_strerror(err), ctx->detail);
    log_text(ctx, ESTC_LOG_ERROR, line);
    return err;
}

void estc_log(estc_ctx *ctx, estc_log_level level, const char *fmt, ...)
{
    if (ctx == NULL || fmt == NULL || ctx->log_fn == NULL || level > ctx->log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    redact(line, sizeof(line));
    log_text(ctx, level, line);
}

const char *estc_ctx_error_detail(const estc_ctx *ctx)
{
    return ctx == NULL ? "" : ctx->detail;
}

void estc_ctx_clear_error(estc_ctx *ctx)
{
    if (ctx != NULL)
        ctx->detail[0] = '\0';
}

estc_err estc_ctx_set_log(estc_ctx *ctx, estc_log_level level, estc_log_fn fn, void *arg)
{
    if (ctx == NULL || level < ESTC_LOG_ERROR || level > ESTC_LOG_DEBUG)
        return ESTC_ERR_INVALID_ARG;
    ctx->log_fn = fn;
    ctx->log_arg = arg;
    ctx->log_level = level;
    return ESTC_OK;
}
