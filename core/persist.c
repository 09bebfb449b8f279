/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client's persisted state: streams (file, memory), persist / restore
 * with the crash purge, the journal written while objects change, and
 * cleanup. The encoding is persist_format.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "persist_format.h"

/* ---- streams --------------------------------------------------------------- */

/* Why the last file stream call on this thread failed, for the message of
 * the caller (a stream has no context of its own). */
static _Thread_local char file_why[600];

__attribute__((format(printf, 2, 3))) static estc_err file_refuse(estc_err err, const char *fmt,
                                                                  ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(file_why, sizeof(file_why), fmt, ap);
    va_end(ap);
    return err;
}

/* Whoever can write the state decides what the daemon deletes and which
 * key it uses: the folder of @path must be a folder owned by this user or
 * by root and writable by no one else (like ssh's StrictModes; a sticky
 * folder such as /tmp is refused too). */
static estc_err check_folder(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else if ((size_t)(slash - path) < sizeof(dir))
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    else
        return file_refuse(ESTC_ERR_IO, "%.200s...: the path is too long", path);
    struct stat st;
    if (stat(dir, &st) != 0)
        return file_refuse(errno == ENOENT ? ESTC_ERR_NOT_FOUND : ESTC_ERR_IO,
                           "the state's folder %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return file_refuse(ESTC_ERR_IO, "the state's folder %s is not a folder", dir);
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return file_refuse(ESTC_ERR_IO,
                           "the state's folder %s is owned by another user (uid %u); refused",
                           dir, (unsigned)st.st_uid);
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return file_refuse(ESTC_ERR_IO,
                           "the state's folder %s is writable by group or others (mode %03o); "
                           "refused",
                           dir, (unsigned)(st.st_mode & 0777));
    return ESTC_OK;
}

static estc_err file_write(void *arg, const uint8_t *data, size_t len)
{
    file_why[0] = '\0';
    estc_err err = check_folder(arg);
    if (err != ESTC_OK)
        return err == ESTC_ERR_NOT_FOUND ? ESTC_ERR_IO : err;
    /* The state may hold private keys: 0600 from the start. Every failure
     * to write is ESTC_ERR_IO to the stream's user; the system's reason
     * (errno, which estc_file_write() leaves set) is in the detail. */
    errno = 0;
    err = estc_file_write(NULL, arg, data, len, 0600, ESTC_FILE_REPLACE);
    int e = errno;
    if (err != ESTC_OK && err != ESTC_ERR_NOMEM)
        file_refuse(ESTC_ERR_IO, "%s: %s", (const char *)arg,
                    e != 0 ? strerror(e) : estc_strerror(err));
    return err == ESTC_OK || err == ESTC_ERR_NOMEM ? err : ESTC_ERR_IO;
}

/* Opens the state at @path for reading, refusing without blocking what
 * is not a regular file of this user that no one else can write: a FIFO
 * (open would wait for a writer), a symbolic link, a device. */
static estc_err open_state(const char *path, int *fd_out)
{
    estc_err err = check_folder(path);
    if (err != ESTC_OK)
        return err;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return ESTC_ERR_NOT_FOUND;
        if (e == ELOOP)
            return file_refuse(ESTC_ERR_IO, "%s is a symbolic link, not a regular file; refused",
                               path);
        return file_refuse(e == EACCES || e == EPERM ? ESTC_ERR_AUTH : ESTC_ERR_IO, "%s: %s",
                           path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0)
        err = file_refuse(ESTC_ERR_IO, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        err = file_refuse(ESTC_ERR_IO, "%s is not a regular file; refused", path);
    else if (st.st_uid != geteuid())
        err = file_refuse(ESTC_ERR_IO, "%s is owned by another user (uid %u); refused", path,
                          (unsigned)st.st_uid);
    else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        err = file_refuse(ESTC_ERR_IO,
                          "%s is writable by group or others (mode %03o); refused", path,
                          (unsigned)(st.st_mode & 0777));
    if (err != ESTC_OK) {
        close(fd);
        return err;
    }
    *fd_out = fd;
    return ESTC_OK;
}

static estc_err file_read(void *arg, estc_buf *out)
{
    file_why[0] = '\0';
    int fd = -1;
    estc_err err = open_state(arg, &fd);
    if (err != ESTC_OK)
        return err;
    estc_buf b = {0};
    size_t cap = 0;
    for (;;) {
        if (b.len == cap) {
            if (cap >= ESTC__STATE_FILE_MAX) {
                err = ESTC_ERR_FORMAT; /* bigger than any state */
                break;
            }
            size_t ncap = cap == 0 ? 4096 : cap * 2;
            uint8_t *grown = realloc(b.data, ncap);
            if (grown == NULL) {
                err = ESTC_ERR_NOMEM;
                break;
            }
            b.data = grown;
            cap = ncap;
        }
        ssize_t r = read(fd, b.data + b.len, cap - b.len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = file_refuse(ESTC_ERR_IO, "%s: read: %s", (const char *)arg, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        b.len += (size_t)r;
    }
    close(fd);
    if (err != ESTC_OK) {
        if (b.data != NULL)
            OPENSSL_cleanse(b.data, cap);
        free(b.data);
        return err;
    }
    *out = b;
    return ESTC_OK;
}

/* The reason of the file stream's last failure, "" for another stream. */
static const char *stream_why(const estc_state_stream *s)
{
    return s->read == file_read || s->write == file_write ? file_why : "";
}

estc_err estc_state_stream_file(estc_state_stream *s, const char *path)
{
    if (s == NULL || path == NULL || path[0] == '\0')
        return ESTC_ERR_INVALID_ARG;
    *s = (estc_state_stream){.write = file_write, .read = file_read, .arg = (void *)path};
    return ESTC_OK;
}

static estc_err mem_write(void *arg, const uint8_t *data, size_t len)
{
    return estc_buf_set(arg, data, len);
}

static estc_err mem_read(void *arg, estc_buf *out)
{
    const estc_buf *store = arg;
    if (store->len == 0)
        return ESTC_ERR_NOT_FOUND;
    estc_buf b = {0};
    estc_err err = estc_buf_set(&b, store->data, store->len);
    if (err == ESTC_OK)
        *out = b;
    return err;
}

estc_err estc_state_stream_mem(estc_state_stream *s, estc_buf *store)
{
    if (s == NULL || store == NULL)
        return ESTC_ERR_INVALID_ARG;
    *s = (estc_state_stream){.write = mem_write, .read = mem_read, .arg = store};
    return ESTC_OK;
}

static estc_err write_view(estc_client *c, const struct estc__view *v, const estc_state_stream *s)
{
    estc_buf data = {0};
    estc_err err = estc__state_encode(c, v, &data);
    if (err == ESTC_OK) {
        err = s->write(s->arg, data.data, data.len);
        const char *why = stream_why(s);
        if (err != ESTC_OK && why[0] != '\0')
            err = estc_error(c->ctx, err, "state: the write failed: %s", why);
        else if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "state: the stream refused the write (%s)",
                             estc_err_name(err));
    }
    estc_buf_free(&data);
    return err;
}

/* ---- persist ------------------------------------------------------------------ */

bool estc_client_is_ready_for_persistence(const estc_client *c)
{
    if (c == NULL || c->busy > 0)
        return false;
    for (size_t i = 0; i < estc_lifecycle_count(c->lc); i++) {
        estc_obj_state st;
        if (estc_lifecycle_get(c->lc, i, NULL, NULL, &st, NULL) == ESTC_OK &&
            st != ESTC_OBJ_COMMITTED)
            return false;
    }
    return true;
}

estc_err estc_client_persist(estc_client *c, const estc_state_stream *s)
{
    if (c == NULL || s == NULL || s->write == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (!estc_client_is_ready_for_persistence(c))
        return estc_error(c->ctx, ESTC_ERR_STATE, "persist: an operation is in flight");
    struct estc__view v;
    estc__view_now(c, &v);
    return write_view(c, &v, s);
}

estc_err estc_client_set_journal(estc_client *c, const estc_state_stream *s)
{
    if (c == NULL || (s != NULL && s->write == NULL))
        return ESTC_ERR_INVALID_ARG;
    c->have_journal = s != NULL;
    c->journal = s != NULL ? *s : (estc_state_stream){0};
    return ESTC_OK;
}

estc_err estc__journal_intent(estc_client *c, const char *addr, estc_obj_kind kind,
                              const estc_buf *cert_der)
{
    if (!c->have_journal)
        return ESTC_OK;
    struct estc__view v;
    estc__view_now(c, &v);
    v.cert_der = cert_der;
    v.mode = ESTC__VIEW_INTENT;
    v.intent_addr = addr;
    v.intent_kind = kind;
    return write_view(c, &v, &c->journal);
}

estc_err estc__journal_commit(estc_client *c, const char *cert, const estc_buf *cert_der,
                              const char *key, char *const *ca_addrs, const estc__der_list *cas)
{
    if (!c->have_journal)
        return ESTC_OK;
    struct estc__view v;
    estc__view_now(c, &v);
    v.mode = ESTC__VIEW_COMMIT;
    v.cert_der = cert_der;
    if (cert != NULL)
        v.cert = cert;
    if (key != NULL)
        v.key = key;
    if (cas != NULL) {
        v.ca_addrs = ca_addrs;
        v.cas = cas;
        v.n_cas = cas->n;
    }
    return write_view(c, &v, &c->journal);
}

void estc__journal_done(estc_client *c)
{
    if (!c->have_journal || !estc_client_is_ready_for_persistence(c))
        return;
    struct estc__view v;
    estc__view_now(c, &v);
    if (write_view(c, &v, &c->journal) != ESTC_OK)
        estc_log(c->ctx, ESTC_LOG_WARNING, "journal: the final state was not written");
}

/* ---- restore ----------------------------------------------------------------- */

/* The mem: objects re-created by one restore, for undoing it. */
struct made {
    const char *addr;
    estc_obj_kind kind;
};

static estc_err recreate(estc_client *c, const struct estc__state *p, struct made *made, size_t *n)
{
    estc_err err = ESTC_OK;
    bool there = false;
    for (size_t i = 0; err == ESTC_OK && i < p->n_keys; i++) {
        if (!estc__key_exportable(c, p->keys[i].addr))
            return ESTC_ERR_FORMAT;
        err = estc_object_exists(c->ctx, p->keys[i].addr, ESTC_OBJ_KEY, &there);
        if (err == ESTC_OK && !there) {
            err =
                estc_key_import(c->ctx, p->keys[i].addr, p->keys[i].data.data, p->keys[i].data.len);
            if (err == ESTC_OK)
                made[(*n)++] = (struct made){p->keys[i].addr, ESTC_OBJ_KEY};
        }
    }
    if (err == ESTC_OK && estc__is_volatile(c, p->cert_addr) && p->cert.len > 0) {
        err = estc_object_exists(c->ctx, p->cert_addr, ESTC_OBJ_CERT, &there);
        if (err == ESTC_OK && !there) {
            err = estc_cert_store(c->ctx, p->cert_addr, p->cert.data, p->cert.len);
            if (err == ESTC_OK)
                made[(*n)++] = (struct made){p->cert_addr, ESTC_OBJ_CERT};
        }
    }
    for (size_t i = 0; err == ESTC_OK && i < p->n_cas; i++) {
        if (!estc__is_volatile(c, p->cas[i].addr))
            continue;
        err = estc_object_exists(c->ctx, p->cas[i].addr, ESTC_OBJ_TRUST, &there);
        if (err == ESTC_OK && !there) {
            err = estc_trust_store(c->ctx, p->cas[i].addr, p->cas[i].data.data, p->cas[i].data.len);
            if (err == ESTC_OK)
                made[(*n)++] = (struct made){p->cas[i].addr, ESTC_OBJ_TRUST};
        }
    }
    return err;
}

static void swap_str(char **slot, char **value)
{
    if (*value == NULL)
        return;
    free(*slot);
    *slot = *value;
    *value = NULL;
}

/* Purges what a crash left: pending objects (rolled back), superseded ones
 * (the commit that was under way). */
static bool purge(estc_client *c)
{
    bool pending = false, superseded = false;
    for (size_t i = 0; i < estc_lifecycle_count(c->lc); i++) {
        estc_obj_state st;
        if (estc_lifecycle_get(c->lc, i, NULL, NULL, &st, NULL) != ESTC_OK)
            continue;
        pending = pending || st == ESTC_OBJ_PENDING;
        superseded = superseded || st == ESTC_OBJ_SUPERSEDED;
    }
    estc_err err = ESTC_OK;
    if (pending) {
        estc_log(c->ctx, ESTC_LOG_INFO, "restore: removing objects of an interrupted operation");
        err = estc_lifecycle_rollback(c->lc);
    } else if (superseded) {
        estc_log(c->ctx, ESTC_LOG_INFO, "restore: finishing an interrupted commit");
        err = estc_lifecycle_commit(c->lc);
    }
    if (err != ESTC_OK)
        estc_log(c->ctx, ESTC_LOG_WARNING, "restore: purge incomplete (%s); retried later",
                 estc_err_name(err));
    return pending || superseded;
}

/* Whoever wrote the state decides what the purge and later commits
 * remove: keep only the objects the client could have made itself, under
 * the key, certificate and CA bases the application configured (without
 * any, the state's own). Any other entry is dropped from the record with a
 * warning; its object is never removed. */
static void forget_foreign(estc_client *c, const struct estc__state *p)
{
    bool conf = c->bases_configured;
    const char *bases[4] = {NULL};
    bases[ESTC_OBJ_KEY] = conf || p->key_base == NULL ? c->key_base : p->key_base;
    bases[ESTC_OBJ_CERT] = conf || p->cert_base == NULL ? c->cert_base : p->cert_base;
    bases[ESTC_OBJ_TRUST] = conf || p->ca_prefix == NULL ? c->ca_prefix : p->ca_prefix;
    for (size_t i = estc_lifecycle_count(c->lc); i > 0; i--) {
        const char *addr;
        estc_obj_kind kind;
        estc_obj_state st;
        if (estc_lifecycle_get(c->lc, i - 1, &addr, &kind, &st, NULL) != ESTC_OK ||
            estc__derived_from(c, addr, kind, bases[kind]))
            continue;
        static const char *const words[] = {"", "pending", "committed", "superseded"};
        estc_log(c->ctx, ESTC_LOG_WARNING,
                 "restore: the state records %s (%s), which is not under the %s base %s: "
                 "refused, it will not be removed",
                 addr, (unsigned)st < 4 ? words[st] : "?",
                 kind == ESTC_OBJ_KEY ? "key" : kind == ESTC_OBJ_CERT ? "certificate" : "CA",
                 bases[kind]);
        (void)estc_lifecycle_forget(c->lc, addr);
    }
}

estc_err estc_client_restore(estc_client *c, const estc_state_stream *s)
{
    return estc_client_restore_ex(c, s, 0);
}

estc_err estc_client_restore_ex(estc_client *c, const estc_state_stream *s, unsigned flags)
{
    if (c == NULL || s == NULL || s->read == NULL || (flags & ~ESTC_RESTORE_READ_ONLY) != 0)
        return ESTC_ERR_INVALID_ARG;
    if (c->busy > 0)
        return estc_error(c->ctx, ESTC_ERR_STATE, "restore: an operation is in flight");
    estc_buf data = {0};
    estc_err err = s->read(s->arg, &data);
    const char *why = stream_why(s);
    if (err == ESTC_ERR_NOT_FOUND && why[0] == '\0')
        return estc_error(c->ctx, err, "restore: no stored state");
    if (err != ESTC_OK && why[0] != '\0')
        return estc_error(c->ctx, err, "restore: %s", why);
    if (err != ESTC_OK)
        return estc_error(c->ctx, err, "restore: the stream cannot be read");

    struct estc__state p = {0};
    estc_lifecycle *probe = NULL;
    estc__der_list cas = {0};
    char **ca_addrs = NULL;
    struct made *made = NULL;
    size_t n_made = 0;
    err = estc__state_decode(data.data, data.len, &p);
    estc_buf_free(&data);
    if (err == ESTC_ERR_FORMAT)
        err = estc_error(c->ctx, err,
                         "restore: the state is corrupt, truncated or of another "
                         "version");
    /* Check the lifecycle record on a scratch copy first. */
    if (err == ESTC_OK)
        err = estc_lifecycle_new(c->ctx, &probe);
    if (err == ESTC_OK) {
        err = estc_lifecycle_deserialize(probe, p.lifecycle.data, p.lifecycle.len);
        if (err == ESTC_ERR_FORMAT)
            err = estc_error(c->ctx, err, "restore: malformed lifecycle record");
    }
    if (err == ESTC_OK && p.n_cas > 0) {
        ca_addrs = calloc(p.n_cas, sizeof(*ca_addrs));
        err = ca_addrs == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    }
    for (size_t i = 0; err == ESTC_OK && i < p.n_cas; i++) {
        ca_addrs[i] = p.cas[i].addr;
        err = estc__der_list_add(&cas, p.cas[i].data.data, p.cas[i].data.len);
    }
    if (err == ESTC_OK) {
        made = calloc(p.n_keys + p.n_cas + 1, sizeof(*made));
        err = made == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    }
    if (err == ESTC_OK)
        err = recreate(c, &p, made, &n_made);
    /* From here on nothing can fail: the record is known to parse. */
    if (err == ESTC_OK)
        err = estc_lifecycle_deserialize(c->lc, p.lifecycle.data, p.lifecycle.len);
    if (err != ESTC_OK) {
        for (size_t i = n_made; i > 0; i--)
            estc_object_remove(c->ctx, made[i - 1].addr, made[i - 1].kind);
        free(made);
        free(ca_addrs);
        estc__der_list_free(&cas);
        estc_lifecycle_free(probe);
        estc__state_free(&p);
        return err;
    }
    free(made);
    estc_lifecycle_free(probe);
    forget_foreign(c, &p);

    swap_str(&c->key_addr, &p.key_addr);
    swap_str(&c->cert_addr, &p.cert_addr);
    swap_str(&c->key_base, &p.key_base);
    swap_str(&c->cert_base, &p.cert_base);
    swap_str(&c->ca_prefix, &p.ca_prefix);
    for (size_t i = 0; i < c->n_ca_addrs; i++)
        free(c->ca_addrs[i]);
    free(c->ca_addrs);
    c->ca_addrs = ca_addrs;
    c->n_ca_addrs = p.n_cas;
    for (size_t i = 0; i < p.n_cas; i++)
        p.cas[i].addr = NULL; /* now owned by c->ca_addrs */
    estc__der_list_free(&c->explicit_certs);
    c->explicit_certs = cas;
    c->have_explicit = p.have_explicit;
    estc__provisioned_restore(c, p.have_hash ? p.hash : NULL, p.provisioned);
    c->retry_at = p.retry_at;
    c->failures = p.failures;
    c->fallback = p.fallback;
    c->crts_due = p.crts_due;
    c->last_error_at = p.last_error_at;
    c->last_error = (estc_err)p.last_error;
    memcpy(c->last_error_detail, p.last_error_detail, sizeof(c->last_error_detail));
    estc__state_free(&p);
    estc__client_reset_transport(c);

    if ((flags & ESTC_RESTORE_READ_ONLY) == 0 && purge(c) && s->write != NULL) {
        /* Store the purged state, so the next start does not redo it. */
        struct estc__view v;
        estc__view_now(c, &v);
        if (estc_client_is_ready_for_persistence(c) && write_view(c, &v, s) != ESTC_OK)
            estc_log(c->ctx, ESTC_LOG_WARNING, "restore: the purged state was not written back");
    }
    estc_log(c->ctx, ESTC_LOG_INFO, "restore: certificate at %s, key at %s, %zu CA certificate(s)",
             c->cert_addr, c->key_addr, c->n_ca_addrs);
    return ESTC_OK;
}

/* ---- cleanup --------------------------------------------------------------- */

estc_err estc_client_cleanup(estc_client *c)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (c->busy > 0)
        return estc_error(c->ctx, ESTC_ERR_STATE, "cleanup: an operation is in flight");
    bool changed = estc_lifecycle_changed(c->lc);
    estc_err err = estc_lifecycle_cleanup(c->lc);
    if (changed && estc_lifecycle_count(c->lc) == 0) {
        /* Everything went: so do the references to it. */
        estc__der_list_free(&c->explicit_certs);
        for (size_t i = 0; i < c->n_ca_addrs; i++)
            free(c->ca_addrs[i]);
        free(c->ca_addrs);
        c->ca_addrs = NULL;
        c->n_ca_addrs = 0;
        c->have_explicit = false;
        estc__provisioned_forget(c);
        estc__client_reset_transport(c);
    }
    return err;
}
