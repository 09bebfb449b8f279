/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The lifecycle tracker: a record of every engine object the library
 * created, so that superseded, half-made and abandoned objects are removed
 * and the engine and the persisted references never disagree.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct entry {
    char *addr;
    estc_obj_kind kind;
    estc_obj_state state;
    uint32_t generation;
};

struct estc_lifecycle {
    estc_ctx *ctx;
    struct entry *items;
    size_t count;
    size_t cap;
    uint32_t generation; /* number of commits so far */
    bool changed;        /* unused while a snapshot exists */
    /* The record as last serialized or restored: "changed" means the record
     * differs from it, so a rolled-back attempt leaves the record unchanged. */
    estc_buf snapshot;
    bool have_snapshot;
};

#define RECORD_MAGIC "estc-lifecycle 1"

static estc_err render(const estc_lifecycle *lc, estc_buf *out);

estc_err estc_lifecycle_new(estc_ctx *ctx, estc_lifecycle **out)
{
    if (ctx == NULL || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_lifecycle *lc = calloc(1, sizeof(*lc));
    if (lc == NULL)
        return ESTC_ERR_NOMEM;
    lc->ctx = ctx;
    *out = lc;
    return ESTC_OK;
}

static void free_items(struct entry *items, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(items[i].addr);
    free(items);
}

void estc_lifecycle_free(estc_lifecycle *lc)
{
    if (lc == NULL)
        return;
    free_items(lc->items, lc->count);
    estc_buf_free(&lc->snapshot);
    free(lc);
}

static struct entry *find_in(struct entry *items, size_t count, const char *addr)
{
    for (size_t i = 0; i < count; i++) {
        if (strcmp(items[i].addr, addr) == 0)
            return &items[i];
    }
    return NULL;
}

static struct entry *find(const estc_lifecycle *lc, const char *addr)
{
    return find_in(lc->items, lc->count, addr);
}

/* Makes room for one more entry before the engine object is created, so a
 * successful creation can always be recorded. */
static estc_err reserve(estc_lifecycle *lc, const char *addr)
{
    if (addr == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (find(lc, addr) != NULL)
        return estc_error(lc->ctx, ESTC_ERR_EXISTS, "%s: already recorded", addr);
    if (lc->count < lc->cap)
        return ESTC_OK;
    size_t cap = lc->cap == 0 ? 8 : lc->cap * 2;
    struct entry *grown = realloc(lc->items, cap * sizeof(*grown));
    if (grown == NULL)
        return ESTC_ERR_NOMEM;
    lc->items = grown;
    lc->cap = cap;
    return ESTC_OK;
}

static estc_err record(estc_lifecycle *lc, char *addr_copy, estc_obj_kind kind)
{
    lc->items[lc->count++] = (struct entry){
        .addr = addr_copy, .kind = kind, .state = ESTC_OBJ_PENDING, .generation = lc->generation};
    lc->changed = true;
    return ESTC_OK;
}

/* Removes the engine object; already gone counts as removed. */
static estc_err remove_object(estc_lifecycle *lc, const struct entry *e)
{
    estc_err err = estc_object_remove(lc->ctx, e->addr, e->kind);
    if (err == ESTC_ERR_NOT_FOUND) {
        estc_log(lc->ctx, ESTC_LOG_DEBUG, "%s: already gone", e->addr);
        return ESTC_OK;
    }
    /* Every removal shows at the default verbosity of a daemon. */
    if (err == ESTC_OK)
        estc_log(lc->ctx, ESTC_LOG_WARNING, "%s: removed", e->addr);
    return err;
}

/* Shared shape of the three creating calls: reserve, create, record. */
#define CREATE_AND_RECORD(lc, addr, kind, create_call)                                             \
    do {                                                                                           \
        if ((lc) == NULL)                                                                          \
            return ESTC_ERR_INVALID_ARG;                                                           \
        estc_err err_ = reserve((lc), (addr));                                                     \
        if (err_ != ESTC_OK)                                                                       \
            return err_;                                                                           \
        char *copy_ = strdup(addr);                                                                \
        if (copy_ == NULL)                                                                         \
            return ESTC_ERR_NOMEM;                                                                 \
        err_ = (create_call);                                                                      \
        if (err_ != ESTC_OK) {                                                                     \
            free(copy_);                                                                           \
            return err_;                                                                           \
        }                                                                                          \
        return record((lc), copy_, (kind));                                                        \
    } while (0)

estc_err estc_lifecycle_key_generate(estc_lifecycle *lc, const char *addr, estc_key_type type)
{
    CREATE_AND_RECORD(lc, addr, ESTC_OBJ_KEY, estc_key_generate(lc->ctx, addr, type));
}

estc_err estc_lifecycle_key_import(estc_lifecycle *lc, const char *addr, const uint8_t *pkcs8,
                                   size_t len)
{
    CREATE_AND_RECORD(lc, addr, ESTC_OBJ_KEY, estc_key_import(lc->ctx, addr, pkcs8, len));
}

estc_err estc_lifecycle_cert_store(estc_lifecycle *lc, const char *addr, estc_obj_kind kind,
                                   const uint8_t *der, size_t len)
{
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST)
        return ESTC_ERR_INVALID_ARG;
    CREATE_AND_RECORD(lc, addr, kind,
                      kind == ESTC_OBJ_CERT ? estc_cert_store(lc->ctx, addr, der, len)
                                            : estc_trust_store(lc->ctx, addr, der, len));
}

estc_err estc_lifecycle_supersede(estc_lifecycle *lc, const char *addr)
{
    if (lc == NULL || addr == NULL)
        return ESTC_ERR_INVALID_ARG;
    struct entry *e = find(lc, addr);
    if (e == NULL)
        return estc_error(lc->ctx, ESTC_ERR_NOT_FOUND, "%s: not recorded", addr);
    if (e->state != ESTC_OBJ_COMMITTED)
        return estc_error(lc->ctx, ESTC_ERR_STATE, "%s: only a committed object can be superseded",
                          addr);
    e->state = ESTC_OBJ_SUPERSEDED;
    lc->changed = true;
    return ESTC_OK;
}

/* Removes from the record every entry whose engine object was removed
 * (marked by a NULL address), keeping the order of the others. */
static void compact(estc_lifecycle *lc)
{
    size_t out = 0;
    for (size_t i = 0; i < lc->count; i++) {
        if (lc->items[i].addr != NULL)
            lc->items[out++] = lc->items[i];
    }
    if (out != lc->count)
        lc->changed = true;
    lc->count = out;
}

/* Removes the engine objects of the entries that @pick selects. */
static estc_err remove_where(estc_lifecycle *lc, bool (*pick)(const struct entry *))
{
    estc_err first = ESTC_OK;
    for (size_t i = 0; i < lc->count; i++) {
        struct entry *e = &lc->items[i];
        if (!pick(e))
            continue;
        estc_err err = remove_object(lc, e);
        if (err != ESTC_OK) {
            if (first == ESTC_OK)
                first = err;
            continue;
        }
        free(e->addr);
        e->addr = NULL;
    }
    compact(lc);
    return first;
}

static bool is_superseded(const struct entry *e)
{
    return e->state == ESTC_OBJ_SUPERSEDED;
}

static bool is_pending(const struct entry *e)
{
    return e->state == ESTC_OBJ_PENDING;
}

static bool is_any(const struct entry *e)
{
    (void)e;
    return true;
}

estc_err estc_lifecycle_commit(estc_lifecycle *lc)
{
    if (lc == NULL)
        return ESTC_ERR_INVALID_ARG;
    for (size_t i = 0; i < lc->count; i++) {
        if (lc->items[i].state == ESTC_OBJ_PENDING) {
            lc->items[i].state = ESTC_OBJ_COMMITTED;
            lc->changed = true;
        }
    }
    lc->generation++;
    lc->changed = true;
    return remove_where(lc, is_superseded);
}

estc_err estc_lifecycle_rollback(estc_lifecycle *lc)
{
    if (lc == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_err err = remove_where(lc, is_pending);
    for (size_t i = 0; i < lc->count; i++) {
        if (lc->items[i].state == ESTC_OBJ_SUPERSEDED) {
            lc->items[i].state = ESTC_OBJ_COMMITTED;
            lc->changed = true;
        }
    }
    return err;
}

estc_err estc_lifecycle_cleanup(estc_lifecycle *lc)
{
    if (lc == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (!estc_lifecycle_changed(lc)) {
        estc_log(lc->ctx, ESTC_LOG_DEBUG, "lifecycle unchanged since persist: objects kept");
        return ESTC_OK;
    }
    return remove_where(lc, is_any);
}

bool estc_lifecycle_changed(const estc_lifecycle *lc)
{
    if (lc == NULL)
        return false;
    if (!lc->have_snapshot)
        return lc->changed;
    estc_buf now = {0};
    if (render(lc, &now) != ESTC_OK)
        return true; /* when in doubt, clean up */
    bool differs = now.len != lc->snapshot.len || memcmp(now.data, lc->snapshot.data, now.len) != 0;
    estc_buf_free(&now);
    return differs;
}

size_t estc_lifecycle_count(const estc_lifecycle *lc)
{
    return lc == NULL ? 0 : lc->count;
}

estc_err estc_lifecycle_get(const estc_lifecycle *lc, size_t index, const char **addr,
                            estc_obj_kind *kind, estc_obj_state *state, uint32_t *generation)
{
    if (lc == NULL || index >= lc->count)
        return ESTC_ERR_INVALID_ARG;
    const struct entry *e = &lc->items[index];
    if (addr != NULL)
        *addr = e->addr;
    if (kind != NULL)
        *kind = e->kind;
    if (state != NULL)
        *state = e->state;
    if (generation != NULL)
        *generation = e->generation;
    return ESTC_OK;
}

static const char *const kind_words[] = {
    [ESTC_OBJ_KEY] = "key", [ESTC_OBJ_CERT] = "cert", [ESTC_OBJ_TRUST] = "trust"};
static const char *const state_words[] = {[ESTC_OBJ_PENDING] = "pending",
                                          [ESTC_OBJ_COMMITTED] = "committed",
                                          [ESTC_OBJ_SUPERSEDED] = "superseded"};

estc_err estc_lifecycle_forget(estc_lifecycle *lc, const char *addr)
{
    if (lc == NULL || addr == NULL)
        return ESTC_ERR_INVALID_ARG;
    struct entry *e = find(lc, addr);
    if (e == NULL)
        return ESTC_ERR_NOT_FOUND;
    free(e->addr);
    e->addr = NULL;
    compact(lc);
    lc->changed = true;
    return ESTC_OK;
}

static int word_index(const char *const *words, size_t n, const char *w, size_t len)
{
    for (size_t i = 1; i < n; i++) {
        if (strlen(words[i]) == len && memcmp(words[i], w, len) == 0)
            return (int)i;
    }
    return -1;
}

/* The record as text into @out (replacing its bytes). */
static estc_err render(const estc_lifecycle *lc, estc_buf *out)
{
    size_t size = sizeof(RECORD_MAGIC) + 32;
    for (size_t i = 0; i < lc->count; i++)
        size += strlen(lc->items[i].addr) + 48;
    char *text = malloc(size);
    if (text == NULL)
        return ESTC_ERR_NOMEM;
    size_t used =
        (size_t)snprintf(text, size, "%s\ngen %" PRIu32 "\n", RECORD_MAGIC, lc->generation);
    for (size_t i = 0; i < lc->count; i++) {
        const struct entry *e = &lc->items[i];
        used +=
            (size_t)snprintf(text + used, size - used, "obj %s %s %" PRIu32 " %s\n",
                             kind_words[e->kind], state_words[e->state], e->generation, e->addr);
    }
    estc_buf_free(out);
    out->data = (uint8_t *)text;
    out->len = used;
    return ESTC_OK;
}

/* Remembers @text as the persisted form of the record. */
static estc_err take_snapshot(estc_lifecycle *lc, const uint8_t *text, size_t len)
{
    estc_buf copy = {0};
    estc_err err = estc_buf_set(&copy, text, len);
    if (err != ESTC_OK)
        return err;
    estc_buf_free(&lc->snapshot);
    lc->snapshot = copy;
    lc->have_snapshot = true;
    lc->changed = false;
    return ESTC_OK;
}

estc_err estc_lifecycle_serialize(estc_lifecycle *lc, estc_buf *out)
{
    if (lc == NULL || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_buf text = {0};
    estc_err err = render(lc, &text);
    if (err == ESTC_OK)
        err = take_snapshot(lc, text.data, text.len);
    if (err != ESTC_OK) {
        estc_buf_free(&text);
        return err;
    }
    estc_buf_free(out);
    *out = text;
    return ESTC_OK;
}

estc_err estc_lifecycle_serialize_view(estc_lifecycle *lc, const char *planned_addr,
                                       estc_obj_kind planned_kind, bool pending_as_committed,
                                       estc_buf *out)
{
    if (lc == NULL || out == NULL ||
        (planned_addr != NULL && (planned_kind < ESTC_OBJ_KEY || planned_kind > ESTC_OBJ_TRUST)))
        return ESTC_ERR_INVALID_ARG;
    /* The record as it is is what the caller persists with the view: the
     * snapshot, as serialize takes it. */
    estc_buf now = {0};
    estc_err err = render(lc, &now);
    if (err == ESTC_OK)
        err = take_snapshot(lc, now.data, now.len);
    estc_buf_free(&now);
    if (err != ESTC_OK)
        return err;
    /* A shallow copy whose entries say what the view says. */
    estc_lifecycle view = *lc;
    view.items = calloc(lc->count + 1, sizeof(*view.items));
    if (view.items == NULL)
        return ESTC_ERR_NOMEM;
    for (size_t i = 0; i < lc->count; i++) {
        view.items[i] = lc->items[i];
        if (pending_as_committed && view.items[i].state == ESTC_OBJ_PENDING)
            view.items[i].state = ESTC_OBJ_COMMITTED;
    }
    view.count = lc->count;
    if (planned_addr != NULL)
        view.items[view.count++] = (struct entry){.addr = (char *)planned_addr,
                                                  .kind = planned_kind,
                                                  .state = ESTC_OBJ_PENDING,
                                                  .generation = 0};
    estc_buf text = {0};
    err = render(&view, &text);
    free(view.items);
    if (err != ESTC_OK)
        return err;
    estc_buf_free(out);
    *out = text;
    return ESTC_OK;
}

/* Parses one "obj KIND STATE GEN ADDR" line of @len bytes into @e. */
static bool parse_obj(const char *line, size_t len, struct entry *e)
{
    char kind[8], state[16];
    unsigned long gen;
    int off = 0;
    /* The line is NUL-terminated by the caller. */
    if (sscanf(line, "obj %7s %15s %lu %n", kind, state, &gen, &off) != 3 || off <= 0 ||
        (size_t)off >= len || gen > UINT32_MAX)
        return false;
    int k = word_index(kind_words, 4, kind, strlen(kind));
    int s = word_index(state_words, 4, state, strlen(state));
    const char *addr = line + off;
    char scheme[ESTC_SCHEME_MAX + 1];
    if (k < 0 || s < 0 || estc_address_scheme(addr, scheme) != ESTC_OK)
        return false;
    e->addr = strdup(addr);
    e->kind = (estc_obj_kind)k;
    e->state = (estc_obj_state)s;
    e->generation = (uint32_t)gen;
    return e->addr != NULL;
}

estc_err estc_lifecycle_deserialize(estc_lifecycle *lc, const uint8_t *data, size_t len)
{
    if (lc == NULL || (data == NULL && len > 0))
        return ESTC_ERR_INVALID_ARG;
    if (len == 0 || len > 16 * 1024 * 1024 || memchr(data, '\0', len) != NULL)
        return estc_error(lc->ctx, ESTC_ERR_FORMAT, "lifecycle record: empty or not text");
    char *text = malloc(len + 1);
    if (text == NULL)
        return ESTC_ERR_NOMEM;
    memcpy(text, data, len);
    text[len] = '\0';

    struct entry *items = NULL;
    size_t count = 0, cap = 0;
    uint32_t generation = 0;
    estc_err err = ESTC_OK;
    size_t lineno = 0;
    char *save = NULL;
    if (len == 0 || text[len - 1] != '\n') {
        err = ESTC_ERR_FORMAT;
        goto done;
    }
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save), lineno++) {
        size_t ll = strlen(line);
        if (lineno == 0) {
            if (strcmp(line, RECORD_MAGIC) != 0) {
                err = ESTC_ERR_FORMAT;
                break;
            }
        } else if (lineno == 1) {
            unsigned long g;
            char tail;
            if (sscanf(line, "gen %lu%c", &g, &tail) != 1 || g > UINT32_MAX) {
                err = ESTC_ERR_FORMAT;
                break;
            }
            generation = (uint32_t)g;
        } else {
            if (count == cap) {
                size_t ncap = cap == 0 ? 8 : cap * 2;
                struct entry *grown = realloc(items, ncap * sizeof(*grown));
                if (grown == NULL) {
                    err = ESTC_ERR_NOMEM;
                    break;
                }
                items = grown;
                cap = ncap;
            }
            items[count] = (struct entry){0};
            if (!parse_obj(line, ll, &items[count]) ||
                find_in(items, count, items[count].addr) != NULL) {
                free(items[count].addr);
                err = ESTC_ERR_FORMAT;
                break;
            }
            count++;
        }
    }
    if (err == ESTC_OK && lineno < 2)
        err = ESTC_ERR_FORMAT;
done:
    free(text);
    if (err != ESTC_OK) {
        free_items(items, count);
        if (err == ESTC_ERR_FORMAT)
            return estc_error(lc->ctx, err, "lifecycle record: malformed at line %zu", lineno + 1);
        return err;
    }
    /* The snapshot is the record as parsed, written the one way serialize
     * writes it: a record spelled differently (a blank line, "gen 01") is
     * still unchanged, so cleanup keeps its objects. */
    struct estc_lifecycle old = *lc;
    lc->items = items;
    lc->count = count;
    lc->cap = cap;
    lc->generation = generation;
    estc_buf canonical = {0};
    err = render(lc, &canonical);
    if (err == ESTC_OK)
        err = take_snapshot(lc, canonical.data, canonical.len);
    estc_buf_free(&canonical);
    if (err != ESTC_OK) {
        free_items(items, count);
        lc->items = old.items;
        lc->count = old.count;
        lc->cap = old.cap;
        lc->generation = old.generation;
        return err;
    }
    free_items(old.items, old.count);
    return ESTC_OK;
}
