/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Files: the one all-or-nothing write of the library, and the mapping of a
 * plain path to the address of the engine whose objects are files. (The
 * one reader of files holding secrets, which the drivers built as plug-ins
 * need too, is estc__read_secret_file() in util.c.)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "util.h"

static estc_err sys_fail(estc_ctx *ctx, const char *path, const char *what, int e)
{
    return estc_error(ctx, estc__errno_err(e), "%s: %s: %s", path, what, strerror(e));
}

static bool write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* fsync() of the folder holding @path, so that a new name is durable. */
static int sync_folder(const char *path)
{
    char *dir = strdup(path);
    if (dir == NULL)
        return ENOMEM;
    char *slash = strrchr(dir, '/');
    const char *d = slash == NULL ? "." : (slash == dir ? "/" : (*slash = '\0', dir));
    int rc = 0;
    int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        rc = errno;
    if (dfd >= 0)
        close(dfd);
    free(dir);
    return rc;
}

estc_err estc_file_write(estc_ctx *ctx, const char *path, const void *data, size_t len,
                         unsigned mode, unsigned flags)
{
    if (path == NULL || path[0] == '\0' || (data == NULL && len > 0) || (mode & ~0777u) != 0 ||
        (flags & ~ESTC_FILE_REPLACE) != 0)
        return ESTC_ERR_INVALID_ARG;
    bool replace = (flags & ESTC_FILE_REPLACE) != 0;
    if (!replace && access(path, F_OK) == 0)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: the file exists already", path);
    size_t tn = strlen(path) + 16;
    char *tmp = malloc(tn);
    if (tmp == NULL)
        return ESTC_ERR_NOMEM;
    snprintf(tmp, tn, "%s.tmpXXXXXX", path);
    /* mkstemp() creates the file 0600: never more open than the final mode. */
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        estc_err err = sys_fail(ctx, path, "create", e);
        free(tmp);
        errno = e; /* the system's reason, for a caller without a context */
        return err;
    }
    const char *step = NULL;
    int e = 0;
    if (fchmod(fd, (mode_t)mode) != 0)
        step = "chmod";
    else if (!write_all(fd, data, len))
        step = "write";
    else if (fsync(fd) != 0)
        step = "fsync";
    if (step != NULL)
        e = errno;
    if (close(fd) != 0 && step == NULL) {
        step = "close";
        e = errno;
    }
    /* link() fails if the target appeared meanwhile: no silent replace. */
    if (step == NULL && (replace ? rename(tmp, path) : link(tmp, path)) != 0) {
        step = replace ? "rename" : "link";
        e = errno;
    }
    if (step != NULL || !replace)
        unlink(tmp);
    free(tmp);
    if (step != NULL) {
        estc_err err = e == EEXIST
                           ? estc_error(ctx, ESTC_ERR_EXISTS, "%s: the file exists already", path)
                           : sys_fail(ctx, path, step, e);
        errno = e; /* the system's reason, for a caller without a context */
        return err;
    }
    e = sync_folder(path);
    if (e == 0)
        return ESTC_OK;
    estc_err err = sys_fail(ctx, path, "fsync of the folder", e);
    errno = e;
    return err;
}

estc_err estc_address_for_file(estc_ctx *ctx, const char *path, char **addr)
{
    const struct estc_driver *drv;
    if (ctx == NULL || path == NULL || path[0] == '\0' || addr == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_err err = estc_engine_find_cap(ctx, ESTC_CAP_FILES, &drv);
    if (err != ESTC_OK)
        return err;
    char cwd[4096] = "";
    if (path[0] != '/' && getcwd(cwd, sizeof(cwd)) == NULL)
        return sys_fail(ctx, path, "current folder", errno);
    /* A joining '/' only between a folder and a relative path, and never
     * after the root folder's own. */
    size_t cwd_len = strlen(cwd);
    const char *join = cwd_len > 0 && cwd[cwd_len - 1] != '/' ? "/" : "";
    size_t len = strlen(drv->scheme) + 1 + cwd_len + strlen(join) + strlen(path) + 1;
    if (len > ESTC_ADDRESS_MAX + 1)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "the path is too long for an address (%zu bytes, at most %d): %.200s...",
                          len - 1, ESTC_ADDRESS_MAX, path);
    char *out = malloc(len);
    if (out == NULL)
        return ESTC_ERR_NOMEM;
    /* len was counted from these very strings: nothing is cut. */
    int n = snprintf(out, len, "%s:%s%s%s", drv->scheme, cwd, join, path);
    if (n < 0 || (size_t)n >= len) {
        free(out);
        return ESTC_ERR_BAD_ADDRESS;
    }
    *addr = out;
    return ESTC_OK;
}
