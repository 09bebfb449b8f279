/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The file: driver: keys and certificates as PEM files.
 *
 * Address: "file:PATH". Private keys are written 0600 as unencrypted PKCS#8
 * PEM through a temporary file, fsync() and rename(), so a crash leaves the
 * old file or the new one, never half of one. Derived addresses append
 * "NAME.key.pem", "NAME.crt.pem" or "NAME.ca.pem" to the prefix (a folder
 * ending in '/', or a file-name prefix), which is how list() tells the kinds
 * apart.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "keys.h"

#define MAX_PEM_FILE (256 * 1024)

/*
 * The driver's state: the last private key read or written, kept decoded.
 * An enrollment reads the key it has just made for its public part and
 * again for the CSR's signature, and OpenSSL 3.0 builds a decoder for every
 * read (several million instructions each). The key is used only while its
 * file is the very one it came from: same device, inode, size, mode, owner,
 * modification and change time (a rename over it, a rewrite or a chmod each
 * change one of them), and forgotten when the file is removed.
 */
struct file_state {
    char *path;
    struct stat id;
    EVP_PKEY *key;
};

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mode == b->st_mode && a->st_uid == b->st_uid &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void memo_drop(struct file_state *st)
{
    EVP_PKEY_free(st->key);
    free(st->path);
    memset(st, 0, sizeof(*st));
}

/* Keeps @key as the one in the file @path of identity @id (best effort: a
 * failed copy only means the next use reads the file). */
static void memo_set(struct file_state *st, const char *path, const struct stat *id, EVP_PKEY *key)
{
    memo_drop(st);
    char *copy = strdup(path);
    if (copy == NULL || EVP_PKEY_up_ref(key) != 1) {
        free(copy);
        return;
    }
    st->path = copy;
    st->id = *id;
    st->key = key;
}

/* The kept key when @path is still its file, with a reference; else NULL. */
static EVP_PKEY *memo_get(struct file_state *st, const char *path)
{
    struct stat now;
    if (st->key == NULL || strcmp(st->path, path) != 0)
        return NULL;
    if (stat(path, &now) != 0 || !same_file(&now, &st->id)) {
        memo_drop(st);
        return NULL;
    }
    return EVP_PKEY_up_ref(st->key) == 1 ? st->key : NULL;
}

static const char *kind_suffix(estc_obj_kind kind)
{
    switch (kind) {
    case ESTC_OBJ_KEY:
        return ".key.pem";
    case ESTC_OBJ_CERT:
        return ".crt.pem";
    case ESTC_OBJ_TRUST:
        return ".ca.pem";
    }
    return "";
}

static estc_err path_of(estc_ctx *ctx, const char *addr, const char **path)
{
    const char *p = strchr(addr, ':') + 1;
    /* "file://host/..." URLs are not paths; a bare "file:" names nothing. */
    if (*p == '\0' || strncmp(p, "//", 2) == 0 || p[strlen(p) - 1] == '/')
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "\"%s\": file: needs a file path", addr);
    *path = p;
    return ESTC_OK;
}

static estc_err io_fail(estc_ctx *ctx, const char *addr, const char *what, int e)
{
    if (e == ENOENT)
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: %s: no such file", addr, what);
    if (e == EACCES || e == EPERM)
        return estc_error(ctx, ESTC_ERR_AUTH, "%s: %s: %s", addr, what, strerror(e));
    return estc_error(ctx, ESTC_ERR_IO, "%s: %s: %s", addr, what, strerror(e));
}

/*
 * Checks what the open descriptor @fd is, not what the path names now: a
 * regular file (a FIFO or device is refused, and the open did not block);
 * for a private key also owned by this user or root and writable by no one
 * else, so that a key renamed over ours by another user, or a symbolic link
 * to one, is refused rather than used (and certified).
 */
static estc_err check_opened(estc_ctx *ctx, const char *addr, int fd, bool key, struct stat *id)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return io_fail(ctx, addr, "fstat", errno);
    if (!S_ISREG(st.st_mode))
        return estc_error(ctx, ESTC_ERR_IO, "%s: not a regular file", addr);
    *id = st;
    if (!key)
        return ESTC_OK;
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return estc_error(ctx, ESTC_ERR_AUTH,
                          "%s: the key file belongs to another user (uid %u); refused", addr,
                          (unsigned)st.st_uid);
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return estc_error(ctx, ESTC_ERR_AUTH,
                          "%s: the key file is writable by group or others (mode %04o); refused",
                          addr, (unsigned)(st.st_mode & 07777));
    return ESTC_OK;
}

/* Reads @path through one descriptor, checked by check_opened(); @id: what
 * that descriptor was. */
static estc_err read_file(estc_ctx *ctx, const char *addr, const char *path, bool key,
                          estc_buf *out, struct stat *id)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return io_fail(ctx, addr, "open", errno);
    estc_err err = check_opened(ctx, addr, fd, key, id);
    if (err != ESTC_OK) {
        close(fd);
        return err;
    }
    uint8_t *buf = malloc(MAX_PEM_FILE + 1);
    if (buf == NULL) {
        close(fd);
        return ESTC_ERR_NOMEM;
    }
    size_t n = 0;
    bool bad = false;
    while (n < MAX_PEM_FILE + 1) {
        ssize_t r = read(fd, buf + n, MAX_PEM_FILE + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            bad = true;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (bad || n > MAX_PEM_FILE) {
        OPENSSL_cleanse(buf, n);
        free(buf);
        return estc_error(ctx, bad ? ESTC_ERR_IO : ESTC_ERR_FORMAT, "%s: %s", addr,
                          bad ? "read failed" : "file too large");
    }
    out->data = buf;
    out->len = n;
    return ESTC_OK;
}

/* The file at @addr as a memory BIO (wiped and freed by pem_done()). */
static estc_err pem_open(estc_ctx *ctx, const char *addr, bool key, estc_buf *pem, BIO **bio,
                         struct stat *id)
{
    const char *path;
    estc_err err = path_of(ctx, addr, &path);
    if (err == ESTC_OK)
        err = read_file(ctx, addr, path, key, pem, id);
    if (err != ESTC_OK)
        return err;
    *bio = BIO_new_mem_buf(pem->data, (int)pem->len);
    if (*bio == NULL) {
        estc_buf_free(pem);
        return ESTC_ERR_NOMEM;
    }
    return ESTC_OK;
}

static void pem_done(estc_buf *pem, BIO *bio)
{
    BIO_free(bio);
    estc_buf_free(pem);
}

static estc_err load_key(estc_ctx *ctx, struct file_state *st, const char *addr, EVP_PKEY **key)
{
    const char *path;
    estc_err err = path_of(ctx, addr, &path);
    if (err != ESTC_OK)
        return err;
    if ((*key = memo_get(st, path)) != NULL)
        return ESTC_OK;
    estc_buf pem = {0};
    BIO *bio = NULL;
    struct stat id;
    err = pem_open(ctx, addr, true, &pem, &bio, &id);
    if (err != ESTC_OK)
        return err;
    ERR_clear_error(); /* a failure's detail is this read's */
    *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    pem_done(&pem, bio);
    if (*key == NULL)
        return estc__sw_fail(ctx, ESTC_ERR_NOT_FOUND, addr, "no PEM private key in the file");
    memo_set(st, path, &id, *key);
    return ESTC_OK;
}

static estc_err load_cert(estc_ctx *ctx, const char *addr, X509 **cert)
{
    estc_buf pem = {0};
    BIO *bio = NULL;
    struct stat id;
    estc_err err = pem_open(ctx, addr, false, &pem, &bio, &id);
    if (err != ESTC_OK)
        return err;
    ERR_clear_error();
    *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    pem_done(&pem, bio);
    if (*cert == NULL)
        return estc__sw_fail(ctx, ESTC_ERR_NOT_FOUND, addr, "no PEM certificate in the file");
    return ESTC_OK;
}

/* A new key goes only into a folder no one else can write: there another
 * user could rename a key of their own over it between its write and its
 * use, and have that key certified. The folder must belong to this user or
 * to root and be writable by neither group nor others (a sticky folder
 * such as /tmp too), as ssh asks of the folders of its keys. */
static estc_err check_key_folder(estc_ctx *ctx, const char *addr, const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL ? strdup(".")
                              : strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (dir == NULL)
        return ESTC_ERR_NOMEM;
    struct stat st;
    estc_err err = ESTC_OK;
    if (stat(dir, &st) != 0)
        err = io_fail(ctx, addr, "the key's folder", errno);
    else if (st.st_uid != geteuid() && st.st_uid != 0)
        err = estc_error(ctx, ESTC_ERR_AUTH,
                         "%s: the key's folder %s belongs to another user (uid %u); refused", addr,
                         dir, (unsigned)st.st_uid);
    else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        err = estc_error(ctx, ESTC_ERR_AUTH,
                         "%s: the key's folder %s is writable by group or others (mode %04o); "
                         "refused",
                         addr, dir, (unsigned)(st.st_mode & 07777));
    free(dir);
    return err;
}

/* Keeps @key for the file just written at @path when the file holds
 * exactly @data: read back through one descriptor, whose identity is kept,
 * so that nothing swapped in between is mistaken for ours. */
static void remember_written(struct file_state *st, const char *path, const char *data, size_t n,
                             EVP_PKEY *key)
{
    memo_drop(st);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW);
    if (fd < 0)
        return;
    struct stat id;
    char *back = NULL;
    if (fstat(fd, &id) == 0 && S_ISREG(id.st_mode) && (size_t)id.st_size == n &&
        (back = malloc(n + 1)) != NULL) {
        size_t got = 0;
        for (;;) {
            ssize_t r = read(fd, back + got, n + 1 - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
            if (got == n + 1)
                break;
        }
        if (got == n && memcmp(back, data, n) == 0)
            memo_set(st, path, &id, key);
        OPENSSL_cleanse(back, got);
    }
    free(back);
    close(fd);
}

static estc_err store_key(estc_ctx *ctx, struct file_state *st, const char *addr, EVP_PKEY *key)
{
    const char *path;
    estc_err err = path_of(ctx, addr, &path);
    if (err == ESTC_OK)
        err = check_key_folder(ctx, addr, path);
    if (err != ESTC_OK)
        return err;
    ERR_clear_error();
    BIO *bio = BIO_new(BIO_s_secmem());
    char *data = NULL;
    long n = 0;
    if (bio == NULL || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(bio, &data)) <= 0)
        err = estc__sw_fail(ctx, ESTC_ERR_CRYPTO, addr, "PEM encoding");
    else
        err = estc_file_write(ctx, path, data, (size_t)n, 0600, 0);
    if (err == ESTC_OK)
        remember_written(st, path, data, (size_t)n, key);
    BIO_free(bio); /* secure memory BIO: wiped on free */
    return err;
}

static estc_err file_key_generate(estc_ctx *ctx, void *state, const estc_address *a,
                                  estc_key_type type)
{
    const char *addr = a->text;
    const char *path;
    EVP_PKEY *key = NULL;
    estc_err err = path_of(ctx, addr, &path);
    if (err != ESTC_OK)
        return err;
    if (access(path, F_OK) == 0)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: the file exists already", addr);
    err = check_key_folder(ctx, addr, path);
    if (err != ESTC_OK)
        return err;
    ERR_clear_error();
    err = estc__sw_generate(type, &key);
    if (err != ESTC_OK)
        return estc__sw_fail(ctx, err, addr, "key generation");
    err = store_key(ctx, state, addr, key);
    EVP_PKEY_free(key);
    return err;
}

static estc_err file_key_import(estc_ctx *ctx, void *state, const estc_address *a,
                                const uint8_t *der, size_t len)
{
    const char *addr = a->text;
    EVP_PKEY *key = NULL;
    estc_err err = estc__sw_from_pkcs8(der, len, &key);
    if (err != ESTC_OK)
        return estc__sw_fail(ctx, err, addr, "PKCS#8 import");
    err = store_key(ctx, state, addr, key);
    EVP_PKEY_free(key);
    return err;
}

static estc_err file_key_public(estc_ctx *ctx, void *state, const estc_address *a, estc_buf *spki)
{
    const char *addr = a->text;
    EVP_PKEY *key = NULL;
    estc_err err = load_key(ctx, state, addr, &key);
    if (err == ESTC_OK)
        err = estc__sw_public(key, spki);
    EVP_PKEY_free(key);
    return err;
}

static estc_err file_key_sign(estc_ctx *ctx, void *state, const estc_address *a, estc_sig_alg alg,
                              estc_hash hash, const uint8_t *digest, size_t len, estc_buf *sig)
{
    const char *addr = a->text;
    EVP_PKEY *key = NULL;
    estc_err err = load_key(ctx, state, addr, &key);
    if (err == ESTC_OK) {
        err = estc__sw_sign(key, alg, hash, digest, len, sig);
        if (err != ESTC_OK)
            err = estc__sw_fail(ctx, err, addr, "sign");
    }
    EVP_PKEY_free(key);
    return err;
}

/* Removes the file at @addr after checking that it holds the right kind. */
static estc_err remove_file(estc_ctx *ctx, struct file_state *st, const char *addr, bool key)
{
    const char *path;
    estc_err err = path_of(ctx, addr, &path);
    if (err != ESTC_OK)
        return err;
    if (key) {
        EVP_PKEY *k = NULL;
        err = load_key(ctx, st, addr, &k);
        EVP_PKEY_free(k);
    } else {
        X509 *x = NULL;
        err = load_cert(ctx, addr, &x);
        X509_free(x);
    }
    if (err != ESTC_OK)
        return err;
    if (st->path != NULL && strcmp(st->path, path) == 0)
        memo_drop(st);
    if (unlink(path) != 0)
        return io_fail(ctx, addr, "unlink", errno);
    return ESTC_OK;
}

static estc_err file_key_remove(estc_ctx *ctx, void *state, const estc_address *a)
{
    const char *addr = a->text;
    return remove_file(ctx, state, addr, true);
}

static estc_err file_cert_store(estc_ctx *ctx, void *state, const estc_address *a,
                                estc_obj_kind kind, const uint8_t *der, size_t len)
{
    const char *addr = a->text;
    (void)state;
    (void)kind;
    const char *path;
    estc_err err = path_of(ctx, addr, &path);
    if (err != ESTC_OK)
        return err;
    ERR_clear_error();
    /* The framework has checked that @der is one whole X.509 certificate:
     * it goes into the PEM block as it is, not decoded once more (each
     * decode of a certificate costs OpenSSL 3.0 a decoder for its key). */
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n = 0;
    if (bio == NULL || len > LONG_MAX ||
        PEM_write_bio(bio, PEM_STRING_X509, "", der, (long)len) <= 0 ||
        (n = BIO_get_mem_data(bio, &data)) <= 0)
        err = estc__sw_fail(ctx, ESTC_ERR_FORMAT, addr, "PEM encoding");
    else
        err = estc_file_write(ctx, path, data, (size_t)n, 0644, 0);
    BIO_free(bio);
    return err;
}

static estc_err file_cert_load(estc_ctx *ctx, void *state, const estc_address *a, estc_buf *der)
{
    const char *addr = a->text;
    (void)state;
    X509 *x = NULL;
    estc_err err = load_cert(ctx, addr, &x);
    if (err != ESTC_OK)
        return err;
    unsigned char *out = NULL;
    int n = i2d_X509(x, &out);
    X509_free(x);
    if (n <= 0)
        return estc__sw_fail(ctx, ESTC_ERR_FORMAT, addr, "DER encoding");
    err = estc_buf_set(der, out, (size_t)n);
    OPENSSL_free(out);
    return err;
}

static estc_err file_cert_remove(estc_ctx *ctx, void *state, const estc_address *a)
{
    const char *addr = a->text;
    return remove_file(ctx, state, addr, false);
}

static estc_err file_list(estc_ctx *ctx, void *state, const estc_address *pa, estc_obj_kind kind,
                          estc_list_fn fn, void *arg)
{
    const char *prefix = pa->text;
    (void)state;
    const char *p = pa->body;
    if (*p == '\0' || strncmp(p, "//", 2) == 0)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "\"%s\": not a file: prefix", prefix);
    const char *slash = strrchr(p, '/');
    char *dir = slash == NULL ? strdup(".") : strndup(p, (size_t)(slash - p) + 1);
    if (dir == NULL)
        return ESTC_ERR_NOMEM;
    const char *base = slash == NULL ? p : slash + 1;
    const char *suffix = kind_suffix(kind);
    size_t blen = strlen(base), slen = strlen(suffix);
    DIR *d = opendir(dir);
    if (d == NULL) {
        estc_err err = errno == ENOENT ? ESTC_OK : io_fail(ctx, prefix, "opendir", errno);
        free(dir);
        return err;
    }
    estc_err err = ESTC_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n <= blen + slen || strncmp(de->d_name, base, blen) != 0 ||
            strcmp(de->d_name + n - slen, suffix) != 0)
            continue;
        size_t an = strlen(prefix) + n + 1;
        char *addr = malloc(an);
        if (addr == NULL) {
            err = ESTC_ERR_NOMEM;
            break;
        }
        snprintf(addr, an, "%.*s%s", (int)(strlen(prefix) - blen), prefix, de->d_name);
        bool go_on = fn(arg, addr, kind);
        free(addr);
        if (!go_on)
            break;
    }
    closedir(d);
    free(dir);
    return err;
}

static estc_err file_exists(estc_ctx *ctx, void *state, const estc_address *a, estc_obj_kind kind,
                            bool *found)
{
    const char *addr = a->text;
    const char *path;
    estc_err err = path_of(ctx, addr, &path);
    if (err != ESTC_OK)
        return err;
    if (access(path, F_OK) != 0) {
        *found = false;
        return ESTC_OK;
    }
    /* Present: check that it holds the asked kind (a CA or end-entity
     * certificate file look alike; the derived name tells them apart). */
    if (kind == ESTC_OBJ_KEY) {
        EVP_PKEY *k = NULL;
        *found = load_key(ctx, state, addr, &k) == ESTC_OK;
        EVP_PKEY_free(k);
    } else {
        X509 *x = NULL;
        *found = load_cert(ctx, addr, &x) == ESTC_OK;
        X509_free(x);
    }
    /* A probe: what it found wrong is no one's error. */
    estc_ctx_clear_error(ctx);
    ERR_clear_error();
    return ESTC_OK;
}

static estc_err file_address_derive(estc_ctx *ctx, void *state, const estc_address *pa,
                                    estc_obj_kind kind, const char *name, char **addr)
{
    const char *prefix = pa->text;
    (void)state;
    if (pa->body[0] == '\0')
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "\"%s\": file: prefix needs a folder", prefix);
    const char *suffix = kind_suffix(kind);
    size_t n = strlen(prefix) + strlen(name) + strlen(suffix) + 1;
    char *out = malloc(n);
    if (out == NULL)
        return ESTC_ERR_NOMEM;
    snprintf(out, n, "%s%s%s", prefix, name, suffix);
    *addr = out;
    return ESTC_OK;
}

static estc_err file_key_file_path(estc_ctx *ctx, void *state, const estc_address *a, char **out)
{
    (void)state;
    const char *path;
    estc_err err = path_of(ctx, a->text, &path);
    if (err != ESTC_OK)
        return err;
    *out = strdup(path);
    return *out != NULL ? ESTC_OK : ESTC_ERR_NOMEM;
}

static void file_cleanup(estc_ctx *ctx, void *state)
{
    (void)ctx;
    memo_drop(state);
}

const struct estc_driver estc__driver_file = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "file",
    .description = "software keys and certificates in PEM files (keys 0600)",
    .state_size = sizeof(struct file_state),
    .cleanup = file_cleanup,
    /* Keys are PEM files: OpenSSL and libcoap read them themselves. */
    .caps = ESTC_CAP_FILES,
    .key_generate = file_key_generate,
    .key_import = file_key_import,
    .key_public = file_key_public,
    .key_sign = file_key_sign,
    .key_remove = file_key_remove,
    .cert_store = file_cert_store,
    .cert_load = file_cert_load,
    .cert_remove = file_cert_remove,
    .list = file_list,
    .exists = file_exists,
    .address_derive = file_address_derive,
    .key_file_path = file_key_file_path,
};
