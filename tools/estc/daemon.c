/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: `estc run` (the daemon) and `estc status --state`.
 *
 * The daemon is the loop of <estc/schedule.h> around a state file: restore
 * (or enroll), then tick, persist and sleep until the next deadline. The
 * library journals every step that changes engine objects into the same
 * file, so a SIGKILL or a power cut at any moment is recovered by the next
 * restore. SIGTERM and SIGINT are blocked and taken while sleeping; during
 * an operation the client's cancel callback sees them pending, so a renewal
 * that waits on the network (5.03 Max-Age, retransmissions) ends within
 * 100 ms and rolls back, and the daemon stops. SIGHUP (re-read the
 * configuration) and SIGUSR1 (renew now) are taken while sleeping too; an
 * operation in flight finishes first.
 *
 * STATE.pid, locked with flock() for the daemon's life, holds its PID:
 * `estc renew` signals the daemon it finds there, and a second daemon on
 * the same state is refused. Under systemd (Type=notify) the daemon says
 * READY=1 once it holds a valid certificate or restored its state.
 */

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include <estc/persist.h>
#include <estc/schedule.h>

#include "cli.h"

/* ---- systemd's notification socket -------------------------------------- */

/*
 * Sends @fmt to $NOTIFY_SOCKET when systemd runs estc (Type=notify): one
 * datagram on an AF_UNIX socket, the stable protocol of sd_notify(3),
 * written here so that no run of estc maps libsystemd and the seven
 * libraries it pulls in (about a million instructions of relocation at
 * every start). A name starting with '@' is in the abstract namespace.
 * Failures are ignored, as sd_notify()'s are: the service runs the same.
 */
__attribute__((format(printf, 1, 2))) static void notify(const char *fmt, ...)
{
    const char *where = getenv("NOTIFY_SOCKET");
    if (where == NULL || (where[0] != '/' && where[0] != '@'))
        return;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(where);
    if (len < 2 || len >= sizeof(addr.sun_path))
        return;
    memcpy(addr.sun_path, where, len);
    if (addr.sun_path[0] == '@')
        addr.sun_path[0] = '\0';
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                                 (where[0] == '/' ? 1 : 0));
    (void)sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (const struct sockaddr *)&addr, alen);
    close(fd);
}

/* ---- one line per event ------------------------------------------------ */

static bool use_syslog;

__attribute__((format(printf, 3, 4))) static void event(const struct cli *cli, int prio,
                                                        const char *fmt, ...)
{
    char msg[1536], shown[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_redact(msg, shown, sizeof(shown));
    if (use_syslog)
        syslog(prio, "%s", shown);
    else if (!cli->quiet || prio <= LOG_WARNING)
        fprintf(stderr, "estc: %s: %s\n", cli->cmd_name, shown);
}

static bool log_errors;             /* -v or --syslog: the library's error lines too */
static const char *log_cmd = "run"; /* the command name of the lines */

/* The library's log lines go where the events go. At the default verbosity
 * its warnings (every removal of an engine object among them) show, its
 * error lines not: the events report each failure with the same detail. */
static void daemon_log_line(void *arg, estc_log_level level, const char *msg)
{
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    if (level == ESTC_LOG_ERROR && !log_errors)
        return;
    if (use_syslog) {
        char shown[2048];
        cli_redact(msg, shown, sizeof(shown));
        syslog((unsigned)level < 4 ? prio[level] : LOG_INFO, "%s", shown);
    } else {
        /* "estc: run: warning: ...": every line of the daemon is its own. */
        static const char *const names[] = {"error", "warning", "info", "debug"};
        char shown[2048];
        (void)arg;
        cli_redact(msg, shown, sizeof(shown));
        fprintf(stderr, "estc: %s: %s: %s\n", log_cmd, (unsigned)level < 4 ? names[level] : "log",
                shown);
    }
}

/* "serial S, valid until T, renewal at R" of the held certificate. */
static void describe_cert(estc_client *client, char *out, size_t size)
{
    int64_t not_after = 0, renewal = 0;
    char serial[80] = "?", t1[32], t2[32];
    estc_buf der = {0};
    if (estc_client_certificate(client, &der) == ESTC_OK) {
        const unsigned char *p = der.data;
        X509 *x = d2i_X509(NULL, &p, (long)der.len);
        BIGNUM *bn = x != NULL ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL) : NULL;
        char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
        if (hex != NULL)
            snprintf(serial, sizeof(serial), "%s", hex);
        OPENSSL_free(hex);
        BN_free(bn);
        X509_free(x);
    }
    estc_buf_free(&der);
    if (estc_client_renewal_info(client, NULL, &not_after, NULL, &renewal, NULL) != ESTC_OK) {
        snprintf(out, size, "no certificate held");
        return;
    }
    snprintf(out, size, "serial %s, valid until %s, renewal at %s", serial,
             cli_fmt_time(not_after, t1, sizeof(t1)), cli_fmt_time(renewal, t2, sizeof(t2)));
}

/* Whether the client holds a certificate valid now. */
static bool holds_valid(estc_client *client)
{
    int64_t nb = 0, na = 0;
    if (estc_client_renewal_info(client, &nb, &na, NULL, NULL, NULL) != ESTC_OK)
        return false;
    int64_t now = estc_client_now(client);
    return nb <= now && now < na;
}

/* STATUS= for systemctl status: the held certificate or the next attempt. */
static void notify_status(estc_client *client, const char *prefix)
{
    char what[256], t[32];
    int64_t next = ESTC_NEVER;
    if (holds_valid(client)) {
        describe_cert(client, what, sizeof(what));
    } else {
        (void)estc_client_next_deadline(client, &next);
        snprintf(what, sizeof(what), "no valid certificate; next attempt at %s",
                 cli_fmt_time(next, t, sizeof(t)));
    }
    notify("%sSTATUS=%s", prefix, what);
}

/* ---- STATE.pid ------------------------------------------------------------ */

static int lock_fd = -1;

/* Opens and locks STATE.pid. *@other: the PID of the daemon holding the
 * lock (then CLI_EXIT_OK is returned and nothing is held), or 0. */
static int lock_state(struct cli *cli, pid_t *other)
{
    char path[4200];
    *other = 0;
    if (lock_fd >= 0)
        return CLI_EXIT_OK;
    if ((size_t)snprintf(path, sizeof(path), "%s.pid", cli->state) >= sizeof(path))
        return cli_failf(cli, CLI_EXIT_USAGE, "--state: path too long");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
    if (fd < 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "%s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[32] = "";
        ssize_t n = e == EWOULDBLOCK ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
        close(fd);
        if (e != EWOULDBLOCK)
            return cli_failf(cli, CLI_EXIT_FAILURE, "%s: cannot lock: %s", path, strerror(e));
        buf[n > 0 ? n : 0] = '\0';
        long pid = strtol(buf, NULL, 10);
        *other = pid > 0 ? (pid_t)pid : -1;
        return CLI_EXIT_OK;
    }
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len) {
        int e = errno;
        close(fd);
        return cli_failf(cli, CLI_EXIT_FAILURE, "%s: %s", path, strerror(e));
    }
    lock_fd = fd;
    return CLI_EXIT_OK;
}

static void unlock_state(void)
{
    if (lock_fd >= 0) {
        if (ftruncate(lock_fd, 0) != 0) {
            /* The lock, not the content, tells a daemon runs. */
        }
        close(lock_fd);
        lock_fd = -1;
    }
}

/* The PID of the daemon holding STATE.pid, 0 when none does; opened
 * read-only and not created (for a user other than the state's). */
static pid_t daemon_of(const struct cli *cli)
{
    char path[4200], buf[32] = "";
    snprintf(path, sizeof(path), "%s.pid", cli->state);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return 0;
    pid_t pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        long v = strtol(buf, NULL, 10);
        pid = v > 0 ? (pid_t)v : -1;
    }
    close(fd);
    return pid;
}

int cli_renew(struct cli *cli)
{
    if (cli->state == NULL)
        return cli_failf(cli, CLI_EXIT_USAGE, "--state FILE is required (see estc renew --help)");
    pid_t other = 0;
    int status = CLI_EXIT_OK;
    struct stat st;
    if (stat(cli->state, &st) == 0 && st.st_uid != geteuid()) {
        /* Another user's state (root asking the service's daemon): signal
         * it, but never write that user's state, lock file or token. */
        other = daemon_of(cli);
        if (other == 0)
            return cli_failf(cli, CLI_EXIT_FAILURE,
                             "no daemon runs on --state %s, and it belongs to uid %ld: run estc "
                             "renew as that user",
                             cli->state, (long)st.st_uid);
    } else {
        status = lock_state(cli, &other);
    }
    if (status != CLI_EXIT_OK)
        return status;
    if (other == 0) {
        /* No daemon: renew here, holding the lock. */
        struct stat st;
        if (stat(cli->state, &st) != 0) {
            unlock_state();
            return cli_failf(cli, CLI_EXIT_FAILURE,
                             "--state %s: %s (no daemon runs on it and there is nothing to renew)",
                             cli->state, strerror(errno));
        }
        cli->renew_now = true;
        return CLI_EXIT_OK;
    }
    if (other < 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "%s.pid: locked, but holds no PID", cli->state);
    if (kill(other, SIGUSR1) != 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "cannot signal the daemon (pid %ld): %s",
                         (long)other, strerror(errno));
    if (!cli->quiet)
        fprintf(stderr,
                "estc: renew: asked the daemon (pid %ld) to renew now; it logs the result\n",
                (long)other);
    return CLI_EXIT_OK;
}

/* ---- addresses: the configured ones and the state's --------------------- */

/* Appends to @out the attributes of @part (@len bytes, separated by @sep)
 * other than pin-value and pin-source, each after @lead or @sep. */
static void keep_attrs(const char *part, size_t len, char sep, char lead, char *out, size_t size)
{
    size_t o = strlen(out);
    bool first = true;
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        while (i + n < len && part[i + n] != sep)
            n++;
        bool pin = (n >= 10 && strncmp(part + i, "pin-value=", 10) == 0) ||
                   (n >= 11 && strncmp(part + i, "pin-source=", 11) == 0);
        if (!pin && o + n + 2 < size) {
            char c = first ? lead : sep;
            if (c != 0)
                out[o++] = c;
            memcpy(out + o, part + i, n);
            o += n;
            first = false;
        }
        i += n + 1;
    }
    out[o] = '\0';
}

/* @in without its pin-value and pin-source attributes (a new PIN is no
 * new address), into @out. */
static void strip_pins(const char *in, char *out, size_t size)
{
    const char *q = strchr(in, '?');
    size_t path = q != NULL ? (size_t)(q - in) : strlen(in);
    out[0] = '\0';
    keep_attrs(in, path, ';', 0, out, size);
    if (q != NULL)
        keep_attrs(q + 1, strlen(q + 1), '&', '?', out, size);
}

static bool same_address(const char *a, const char *b)
{
    char x[ESTC_ADDRESS_MAX + 64], y[ESTC_ADDRESS_MAX + 64];
    strip_pins(a, x, sizeof(x));
    strip_pins(b, y, sizeof(y));
    return strcmp(x, y) == 0;
}

/* A state written for other --new-key/--new-cert/--ca-out addresses than
 * the ones given is refused (exit 2), or with --take-over set aside as
 * STATE.old: its objects stay where they are, named in the log. Runs
 * before the daemon's client exists (one client at a time: the provider):
 * a client resolves the given addresses as the daemon's will, then reads
 * the state without changing it (its bases replace the given ones). */
static int check_state_addresses(struct cli *cli, const estc_state_stream *stream)
{
    static const char *const opt[] = {"new-key", "new-cert", "ca-out"};
    const estc_obj_kind kinds[] = {ESTC_OBJ_KEY, ESTC_OBJ_CERT, ESTC_OBJ_TRUST};
    const char *given[] = {cli->new_key, cli->new_cert, cli->ca_out};
    char *want[3] = {NULL, NULL, NULL};
    if (given[0] == NULL && given[1] == NULL && given[2] == NULL)
        return CLI_EXIT_OK;
    struct stat st;
    if (stat(cli->state, &st) != 0)
        return CLI_EXIT_OK; /* a fresh start (or an error the restore names) */
    estc_client *probe = NULL;
    estc_ctx_clear_error(cli->ctx);
    estc_err err = estc_client_new(cli->ctx, &probe);
    if (err != ESTC_OK)
        return cli_fail(cli, err, "reading the state's addresses");
    int status = cli_configure_enrolled(cli, probe, NULL, NULL);
    for (int i = 0; status == CLI_EXIT_OK && i < 3; i++) {
        const char *b = estc_client_enrolled_base(probe, kinds[i]);
        if (given[i] != NULL && b != NULL && (want[i] = strdup(b)) == NULL)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    }
    if (status != CLI_EXIT_OK) {
        estc_client_free(probe);
        for (int i = 0; i < 3; i++)
            free(want[i]);
        return status;
    }
    /* The restore puts the state's bases in place of the given ones. */
    err = estc_client_restore_ex(probe, stream, ESTC_RESTORE_READ_ONLY);
    estc_ctx_clear_error(cli->ctx);
    char msg[3000] = "";
    size_t used = 0;
    for (int i = 0; err == ESTC_OK && i < 3; i++) {
        const char *have = estc_client_enrolled_base(probe, kinds[i]);
        if (want[i] == NULL || have == NULL || same_address(want[i], have))
            continue;
        char w[700], h[700];
        cli_redact(want[i], w, sizeof(w));
        cli_redact(have, h, sizeof(h));
        int n = snprintf(msg + used, sizeof(msg) - used, "%s--%s %s (the state's: %s)",
                         used > 0 ? ", " : "", opt[i], w, h);
        if (n > 0 && (size_t)n < sizeof(msg) - used)
            used += (size_t)n;
    }
    if (used > 0 && !cli->take_over) {
        status = cli_failf(cli, CLI_EXIT_USAGE,
                           "--state %s was written for other addresses: %s; give the state's "
                           "addresses, or --take-over to set the state aside and enroll anew",
                           cli->state, msg);
    } else if (used > 0) {
        char old[4200], k[700] = "none", c[700] = "none";
        snprintf(old, sizeof(old), "%s.old", cli->state);
        cli_redact(estc_client_key_address(probe), k, sizeof(k));
        if (estc_client_cert_address(probe) != NULL)
            cli_redact(estc_client_cert_address(probe), c, sizeof(c));
        if (rename(cli->state, old) != 0)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "--take-over: cannot move %s to %s: %s",
                               cli->state, old, strerror(errno));
        else
            event(cli, LOG_WARNING,
                  "--take-over: %s; the state is now %s, and its key %s and certificate %s "
                  "stay in place (remove them when no longer needed); enrolling anew",
                  msg, old, k, c);
    }
    estc_client_free(probe);
    for (int i = 0; i < 3; i++)
        free(want[i]);
    return status;
}

/* ---- --psa-dir ---------------------------------------------------------- */

/* A relative file path would change meaning after chdir: make it absolute.
 * Engine addresses ("scheme:...") are left alone. */
static int absolutize(struct cli *cli, const char **p, const char *cwd)
{
    const char *s = *p;
    if (s == NULL || s[0] == '/' || strcmp(s, "-") == 0)
        return CLI_EXIT_OK;
    size_t scheme = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
    if (scheme > 0 && s[scheme] == ':')
        return CLI_EXIT_OK;
    size_t len = strlen(cwd) + strlen(s) + 2;
    char *abs = malloc(len);
    const char **grown =
        abs != NULL ? realloc(cli->owned.v, (cli->owned.n + 1) * sizeof(*grown)) : NULL;
    if (grown == NULL) {
        free(abs);
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    }
    cli->owned.v = grown;
    snprintf(abs, len, "%s/%s", cwd, s);
    cli->owned.v[cli->owned.n++] = abs;
    *p = abs;
    return CLI_EXIT_OK;
}

int cli_enter_psa_dir(struct cli *cli)
{
    char *cwd = getcwd(NULL, 0);
    if (cwd == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "cannot read the current folder: %s",
                         strerror(errno));
    const char **single[] = {&cli->state, &cli->ca_bundle, &cli->out, &cli->cert, &cli->key};
    int status = CLI_EXIT_OK;
    for (size_t i = 0; i < sizeof(single) / sizeof(single[0]) && status == CLI_EXIT_OK; i++)
        status = absolutize(cli, single[i], cwd);
    struct cli_list *lists[] = {&cli->trust, &cli->implicit_trust, &cli->drivers};
    for (size_t l = 0; l < 3; l++) {
        for (size_t i = 0; i < lists[l]->n && status == CLI_EXIT_OK; i++)
            status = absolutize(cli, &lists[l]->v[i], cwd);
    }
    /* Relative paths in engine addresses are made absolute against it
     * once the context can tell which engines keep files. */
    free(cli->start_dir);
    cli->start_dir = cwd;
    if (status != CLI_EXIT_OK)
        return status;

    const char *dir = cli->psa_dir;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cli_failf(cli, CLI_EXIT_FAILURE, "--psa-dir %s: cannot create: %s", dir,
                         strerror(errno));
    /* Key material lives there: refuse a symlink, another owner, or a folder
     * others can enter. */
    struct stat st;
    if (lstat(dir, &st) != 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "--psa-dir %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return cli_failf(cli, CLI_EXIT_FAILURE, "--psa-dir %s: not a folder", dir);
    if (st.st_uid != geteuid())
        return cli_failf(cli, CLI_EXIT_FAILURE, "--psa-dir %s: owned by another user", dir);
    if ((st.st_mode & 077) != 0)
        return cli_failf(cli, CLI_EXIT_FAILURE,
                         "--psa-dir %s: open to group or others (mode %03o; want 0700)", dir,
                         (unsigned)(st.st_mode & 0777));
    if (chdir(dir) != 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "--psa-dir %s: %s", dir, strerror(errno));
    return CLI_EXIT_OK;
}

/* ---- estc run ----------------------------------------------------------- */

/* Restores the state; NOT_FOUND is a fresh start. Returns an exit status. */
static int restore_or_fresh(struct cli *cli, estc_client *client, const estc_state_stream *stream,
                            bool *fresh)
{
    estc_ctx_clear_error(cli->ctx);
    estc_err err = estc_client_restore(client, stream);
    *fresh = err == ESTC_ERR_NOT_FOUND;
    if (err == ESTC_OK) {
        char what[256];
        describe_cert(client, what, sizeof(what));
        event(cli, LOG_INFO, "restored the state from %s: %s", cli->state, what);
        return CLI_EXIT_OK;
    }
    if (*fresh) {
        if (cli->cert == NULL || cli->key == NULL)
            return cli_failf(cli, CLI_EXIT_USAGE,
                             "no state at %s and no bootstrap credentials (--cert and --key) "
                             "to enroll with",
                             cli->state);
        event(cli, LOG_INFO, "no state at %s: enrolling with the bootstrap credentials",
              cli->state);
        return CLI_EXIT_OK;
    }
    char what[1200];
    snprintf(what, sizeof(what), "--state %s (left unchanged)", cli->state);
    return cli_fail(cli, err, what);
}

/* --jitter, or its default: 10 % of the time from provisioning to the
 * renewal, at most a day. `status --state` applies the same, so that it
 * shows the daemon's renewal time. */
static estc_err set_jitter(const struct cli *cli, estc_client *client)
{
    return estc_client_set_renewal_jitter(client, cli->have_jitter ? cli->jitter_share : 0.1,
                                          cli->have_jitter ? cli->jitter_max_s : 86400);
}

static int configure_schedule(struct cli *cli, estc_client *client)
{
    estc_schedule_config cfg;
    estc_schedule_config_init(&cfg);
    if (cli->have_nominal)
        cfg.nominal_usage = cli->nominal_usage;
    if (cli->have_max_margin)
        cfg.max_margin_s = cli->max_margin_s;
    if (cli->have_retries)
        cfg.max_retries = cli->retries;
    if (cli->have_retry_spacing)
        cfg.retry_spacing_s = cli->retry_spacing_s;
    cfg.rekey = cli->rekey;
    estc_err err = estc_client_set_schedule(client, &cfg);
    if (err == ESTC_OK)
        err = set_jitter(cli, client);
    if (err != ESTC_OK) {
        cli_fail(cli, err, "--nominal-usage/--max-margin/--retries/--retry-spacing/--jitter");
        return CLI_EXIT_USAGE;
    }
    estc_cacerts_policy policy =
        cli->have_cacerts_policy ? (estc_cacerts_policy)cli->cacerts_policy : ESTC_CACERTS_EST;
    bool exports = policy == ESTC_CACERTS_EST_AND_BOOTSTRAP || policy == ESTC_CACERTS_GLOBAL;
    if (exports && cli->ca_bundle == NULL)
        return cli_failf(cli, CLI_EXIT_USAGE,
                         "--cacerts-policy est-and-bootstrap and global need --ca-bundle FILE");
    if (!exports && cli->ca_bundle != NULL)
        return cli_failf(cli, CLI_EXIT_USAGE,
                         "--ca-bundle goes with --cacerts-policy est-and-bootstrap or global");
    err = estc_client_set_cacerts_policy(client, policy, exports ? estc_trust_export_file : NULL,
                                         (void *)cli->ca_bundle);
    if (err != ESTC_OK) {
        cli_fail(cli, err, "--cacerts-policy");
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

/* ---- --exec: the hook after every new certificate ---------------------- */

extern char **environ;

/* "NAME=value" in a new string; NULL when out of memory. */
static char *env_entry(const char *name, const char *value)
{
    size_t len = strlen(name) + strlen(value) + 2;
    char *e = malloc(len);
    if (e != NULL)
        snprintf(e, len, "%s=%s", name, value);
    return e;
}

/* Runs --exec after the tick @what (a new certificate): /bin/sh -c CMD with
 * the addresses (PINs hidden) in its environment, bounded by
 * --exec-timeout. Its end is logged; a failing hook fails nothing. */
static void run_hook(struct cli *cli, estc_client *client, estc_tick_result what)
{
    char cert[1100], key[1100], t[32], ca[4096] = "";
    int64_t not_after = 0;
    cli_redact(estc_client_cert_address(client), cert, sizeof(cert));
    cli_redact(estc_client_key_address(client), key, sizeof(key));
    size_t n = estc_client_ca_count(client), used = 0;
    for (size_t i = 0; i < n; i++) {
        char one[1100];
        cli_redact(estc_client_ca_address(client, i), one, sizeof(one));
        int w = snprintf(ca + used, sizeof(ca) - used, "%s%s", i > 0 ? "\n" : "", one);
        if (w < 0 || (size_t)w >= sizeof(ca) - used)
            break;
        used += (size_t)w;
    }
    if (estc_client_renewal_info(client, NULL, &not_after, NULL, NULL, NULL) != ESTC_OK)
        not_after = ESTC_NEVER;
    /* The environment is made before fork(): the child only execs. */
    size_t base = 0;
    while (environ != NULL && environ[base] != NULL)
        base++;
    char **envp = calloc(base + 6, sizeof(*envp));
    char *mine[5] = {
        env_entry("ESTC_EVENT", estc_tick_result_name(what)),
        env_entry("ESTC_CERT", cert),
        env_entry("ESTC_KEY", key),
        env_entry("ESTC_CA", ca),
        env_entry("ESTC_NOT_AFTER", cli_fmt_time(not_after, t, sizeof(t))),
    };
    bool ok = envp != NULL;
    for (size_t i = 0; i < 5; i++)
        ok = ok && mine[i] != NULL;
    size_t k = 0;
    for (size_t i = 0; ok && i < base; i++) {
        if (strncmp(environ[i], "ESTC_", 5) != 0) /* ours replace any given */
            envp[k++] = environ[i];
    }
    for (size_t i = 0; ok && i < 5; i++)
        envp[k++] = mine[i];
    pid_t pid = ok ? fork() : -1;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0); /* a group: a timed-out hook is killed with its children */
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0 && null != STDIN_FILENO) {
            dup2(null, STDIN_FILENO);
            close(null);
        }
        char *argv[] = {"sh", "-c", (char *)cli->exec_cmd, NULL};
        execve("/bin/sh", argv, envp);
        _exit(127);
    }
    int err_no = errno;
    for (size_t i = 0; i < 5; i++)
        free(mine[i]);
    free(envp);
    if (pid < 0) {
        event(cli, LOG_WARNING, "exec: cannot start the hook: %s",
              ok ? strerror(err_no) : "out of memory");
        return;
    }
    setpgid(pid, pid); /* also here: no race with the kill below */
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int st = 0;
    bool killed = false;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            break;
        /* In milliseconds: whole seconds of the clock would cut the
         * hook's time by up to one. */
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ran_ms =
            (long long)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (!killed && ran_ms >= (long long)cli->exec_timeout_s * 1000) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            killed = true;
        }
        struct timespec step = {0, 50 * 1000 * 1000};
        nanosleep(&step, NULL);
    }
    if (killed)
        event(cli, LOG_WARNING, "exec: %s: killed after %u s (--exec-timeout)",
              estc_tick_result_name(what), cli->exec_timeout_s);
    else if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        event(cli, LOG_INFO, "exec: %s: exit status 0", estc_tick_result_name(what));
    else if (WIFEXITED(st))
        event(cli, LOG_WARNING, "exec: %s: exit status %d", estc_tick_result_name(what),
              WEXITSTATUS(st));
    else
        event(cli, LOG_WARNING, "exec: %s: ended by signal %d", estc_tick_result_name(what),
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Logs what a tick did; returns the priority used. */
static void log_tick(struct cli *cli, estc_client *client, estc_tick_result what, estc_err err)
{
    char desc[256], detail[1024], t[32];
    int64_t next = ESTC_NEVER;
    (void)estc_client_next_deadline(client, &next);
    switch (what) {
    case ESTC_TICK_NOTHING:
        return;
    case ESTC_TICK_ENROLLED:
    case ESTC_TICK_REENROLLED:
    case ESTC_TICK_FALLBACK_ENROLLED:
        describe_cert(client, desc, sizeof(desc));
        event(cli, LOG_NOTICE, "%s: %s", estc_tick_result_name(what), desc);
        return;
    case ESTC_TICK_CACERTS:
        event(cli, LOG_INFO, "%s: %zu CA certificates held", estc_tick_result_name(what),
              estc_client_ca_count(client));
        return;
    default:
        snprintf(detail, sizeof(detail), "%s", estc_ctx_error_detail(cli->ctx));
        event(cli, LOG_WARNING, "%s: %s%s%s; next attempt at %s", estc_tick_result_name(what),
              estc_strerror(err), detail[0] != '\0' ? ": " : "", detail,
              cli_fmt_time(next, t, sizeof(t)));
        return;
    }
}

/* Writes the state when the client is ready; the journal already holds a
 * consistent state otherwise. */
static void save(struct cli *cli, estc_client *client, const estc_state_stream *stream)
{
    if (!estc_client_is_ready_for_persistence(client)) {
        event(cli, LOG_WARNING,
              "state not written: engine objects are still being removed "
              "(the journal keeps them recorded)");
        return;
    }
    estc_ctx_clear_error(cli->ctx);
    estc_err err = estc_client_persist(client, stream);
    if (err != ESTC_OK)
        event(cli, LOG_ERR, "writing the state to %s failed: %s: %s", cli->state,
              estc_strerror(err), estc_ctx_error_detail(cli->ctx));
}

/* The client's cancel callback: SIGTERM or SIGINT is pending (blocked). */
static bool stop_pending(void *arg)
{
    const sigset_t *set = arg;
    sigset_t pending;
    if (sigpending(&pending) != 0)
        return false;
    return (sigismember(&pending, SIGTERM) == 1 && sigismember(set, SIGTERM) == 1) ||
           (sigismember(&pending, SIGINT) == 1 && sigismember(set, SIGINT) == 1);
}

/* Sleeps until @until (client clock) or a blocked signal of @set; returns
 * the signal or 0. */
static int sleep_until(estc_client *client, int64_t until, const sigset_t *set)
{
    for (;;) {
        int64_t left = until - estc_client_now(client);
        if (left <= 0) {
            /* Work is due: still take a signal that is waiting, so that a
             * daemon with work always due can be stopped. */
            struct timespec zero = {0, 0};
            int sig = sigtimedwait(set, NULL, &zero);
            return sig > 0 ? sig : 0;
        }
        if (left > 86400)
            left = 86400; /* re-read the clock at least daily */
        struct timespec ts = {.tv_sec = (time_t)left, .tv_nsec = 0};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0)
            return sig;
        /* EAGAIN: the time passed; EINTR: another signal. Re-check. */
    }
}

/* ---- SIGHUP: the configuration again ----------------------------------- */

/* The options as given (addresses unresolved), of the start or the last
 * reload: a reload compares with them. */
static struct cli *given;

/* A fresh parse of the command line and the configuration file; NULL
 * after an error (printed). */
static struct cli *reparse(const struct cli *cli)
{
    struct cli *fresh = calloc(1, sizeof(*fresh));
    if (fresh == NULL)
        return NULL;
    fresh->cmd = CMD_RUN;
    fresh->cmd_name = cli->cmd_name;
    fresh->argc = cli->argc;
    fresh->argv = cli->argv;
    fresh->reparsing = true;
    bool help = false;
    if (cli_parse(fresh, &help) != CLI_EXIT_OK) {
        cli_free(fresh);
        free(fresh);
        return NULL;
    }
    return fresh;
}

static bool differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0);
}

static bool lists_differ(const struct cli_list *a, const struct cli_list *b)
{
    if (a->n != b->n)
        return true;
    for (size_t i = 0; i < a->n; i++) {
        if (differ(a->v[i], b->v[i]))
            return true;
    }
    return false;
}

/* The options a reload takes over (the schedule, the hook, the logging). */
static void take_reloadable(struct cli *dst, const struct cli *src)
{
    dst->have_nominal = src->have_nominal;
    dst->nominal_usage = src->nominal_usage;
    dst->have_max_margin = src->have_max_margin;
    dst->max_margin_s = src->max_margin_s;
    dst->have_retries = src->have_retries;
    dst->retries = src->retries;
    dst->have_retry_spacing = src->have_retry_spacing;
    dst->retry_spacing_s = src->retry_spacing_s;
    dst->have_jitter = src->have_jitter;
    dst->jitter_share = src->jitter_share;
    dst->jitter_max_s = src->jitter_max_s;
    dst->rekey = src->rekey;
    dst->exec_cmd = src->exec_cmd;
    dst->exec_timeout_s = src->exec_timeout_s;
    dst->verbose = src->verbose;
    dst->quiet = src->quiet;
    dst->use_syslog = src->use_syslog;
}

static void silent_log(void *arg, estc_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    (void)msg;
}

static void set_logging(struct cli *cli)
{
    if (cli->use_syslog && !use_syslog)
        openlog("estc", LOG_PID, LOG_DAEMON);
    else if (!cli->use_syslog && use_syslog)
        closelog();
    use_syslog = cli->use_syslog;
    log_errors = use_syslog || cli->verbose > 0;
    (void)estc_ctx_set_log(cli->ctx,
                           cli->verbose > 1   ? ESTC_LOG_DEBUG
                           : cli->verbose > 0 ? ESTC_LOG_INFO
                                              : ESTC_LOG_WARNING,
                           daemon_log_line, NULL);
}

/* SIGHUP: re-reads the command line and the configuration file and applies
 * the schedule, jitter, retry, --exec and logging options. The key, the
 * certificate and the state stay; options that name them (or the server)
 * take effect at the next start, and a change to them is logged. A file
 * with errors changes nothing. */
static void reload(struct cli *cli, estc_client *client)
{
    notify("RELOADING=1\nSTATUS=re-reading the configuration");
    struct cli *fresh = reparse(cli);
    if (fresh == NULL) {
        event(cli, LOG_ERR,
              "SIGHUP: the configuration has errors (see the line before); "
              "the running one stays");
        notify_status(client, "READY=1\n");
        return;
    }
    if (fresh->exec_timeout_s != 0 && fresh->exec_cmd == NULL) {
        event(cli, LOG_ERR,
              "SIGHUP: --exec-timeout goes with --exec; the running "
              "configuration stays");
        cli_free(fresh);
        free(fresh);
        notify_status(client, "READY=1\n");
        return;
    }
    if (fresh->exec_timeout_s == 0)
        fresh->exec_timeout_s = 60;
    struct cli old = *cli;
    take_reloadable(cli, fresh);
    if (configure_schedule(cli, client) != CLI_EXIT_OK) {
        /* The message is out; put the running values back. */
        take_reloadable(cli, &old);
        (void)configure_schedule(cli, client);
        event(cli, LOG_ERR,
              "SIGHUP: the new schedule options are refused; the running "
              "configuration stays");
        cli_free(fresh);
        free(fresh);
        notify_status(client, "READY=1\n");
        return;
    }
    set_logging(cli);
    /* What only a restart applies. */
    struct {
        const char *name;
        bool changed;
    } fixed[] = {
        {"server", differ(given->server, fresh->server)},
        {"server-name", differ(given->server_name, fresh->server_name)},
        {"trust", lists_differ(&given->trust, &fresh->trust)},
        {"implicit-trust", lists_differ(&given->implicit_trust, &fresh->implicit_trust)},
        {"cert", differ(given->cert, fresh->cert)},
        {"key", differ(given->key, fresh->key)},
        {"new-key", differ(given->new_key, fresh->new_key)},
        {"new-cert", differ(given->new_cert, fresh->new_cert)},
        {"ca-out", differ(given->ca_out, fresh->ca_out)},
        {"subject", differ(given->subject, fresh->subject)},
        {"san", lists_differ(&given->san, &fresh->san)},
        {"driver", lists_differ(&given->drivers, &fresh->drivers)},
        {"state", differ(given->state, fresh->state)},
        {"psa-dir", differ(given->psa_dir, fresh->psa_dir)},
        {"ca-bundle", differ(given->ca_bundle, fresh->ca_bundle)},
        {"cacerts-policy", given->have_cacerts_policy != fresh->have_cacerts_policy ||
                               given->cacerts_policy != fresh->cacerts_policy},
        {"key-type",
         given->have_key_type != fresh->have_key_type || given->key_type != fresh->key_type},
        {"timeout", given->timeout_ms != fresh->timeout_ms},
        {"block-size", given->block_size != fresh->block_size},
        {"max-wait", given->max_wait_s != fresh->max_wait_s},
    };
    char later[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (!fixed[i].changed)
            continue;
        int n = snprintf(later + used, sizeof(later) - used, "%s--%s", used > 0 ? ", " : "",
                         fixed[i].name);
        if (n > 0 && (size_t)n < sizeof(later) - used)
            used += (size_t)n;
    }
    if (used > 0)
        event(cli, LOG_WARNING,
              "SIGHUP: %s changed: not applied while running (the key and certificate stay); "
              "they take effect at the next start",
              later);
    /* @fresh now holds the strings @cli points to (--exec). */
    cli_free(given);
    free(given);
    given = fresh;
    char t[32];
    int64_t next = ESTC_NEVER;
    (void)estc_client_next_deadline(client, &next);
    event(cli, LOG_NOTICE, "SIGHUP: configuration re-read; next action at %s",
          cli_fmt_time(next, t, sizeof(t)));
    notify_status(client, "READY=1\n");
}

int cli_run_daemon(struct cli *cli)
{
    if (cli->state == NULL)
        return cli_failf(cli, CLI_EXIT_USAGE, "--state FILE is required (see estc run --help)");
    if (cli->exec_timeout_s != 0 && cli->exec_cmd == NULL)
        return cli_failf(cli, CLI_EXIT_USAGE, "--exec-timeout goes with --exec");
    if (cli->exec_timeout_s == 0)
        cli->exec_timeout_s = 60;
    if (cli->subject == NULL)
        return cli_failf(cli, CLI_EXIT_USAGE,
                         "--subject is required: a first enrollment and the fallback after "
                         "failed renewals request it (see estc run --help)");
    use_syslog = cli->use_syslog;
    if (use_syslog)
        openlog("estc", LOG_PID, LOG_DAEMON);

    /* Signals are taken only while sleeping (sigtimedwait). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);

    int status = CLI_EXIT_OK;
    {
        pid_t other = 0;
        status = lock_state(cli, &other);
        if (status == CLI_EXIT_OK && other != 0)
            status = cli_failf(cli, CLI_EXIT_FAILURE,
                               "another estc run (pid %ld) uses --state %s; `estc renew --state "
                               "%s` asks it to renew",
                               (long)other, cli->state, cli->state);
    }
    if (status == CLI_EXIT_OK && !cli->once && (given = reparse(cli)) == NULL)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot keep the options for SIGHUP");
    log_errors = use_syslog || cli->verbose > 0;
    log_cmd = cli->cmd_name;
    {
        estc_err err = estc_ctx_set_log(cli->ctx,
                                        cli->verbose > 1   ? ESTC_LOG_DEBUG
                                        : cli->verbose > 0 ? ESTC_LOG_INFO
                                                           : ESTC_LOG_WARNING,
                                        daemon_log_line, NULL);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "-v");
    }
    estc_state_stream stream;
    bool fresh = false;
    if (status == CLI_EXIT_OK && estc_state_stream_file(&stream, cli->state) != ESTC_OK)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--state: bad path");
    if (status == CLI_EXIT_OK) {
        /* The look at the state logs nothing: the restore below says it. */
        (void)estc_ctx_set_log(cli->ctx, ESTC_LOG_ERROR, silent_log, NULL);
        status = check_state_addresses(cli, &stream);
        set_logging(cli);
    }
    estc_client *client = NULL;
    if (status == CLI_EXIT_OK) {
        estc_err err = estc_client_new(cli->ctx, &client);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "creating the client");
    }
    if (status == CLI_EXIT_OK)
        status = cli_configure(cli, client);
    if (status == CLI_EXIT_OK)
        status = cli_configure_enrolled(cli, client, NULL, NULL);
    if (status == CLI_EXIT_OK)
        status = configure_schedule(cli, client);
    if (status == CLI_EXIT_OK && estc_client_set_cancel(client, stop_pending, &set) != ESTC_OK)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot set the cancel callback");

    if (status == CLI_EXIT_OK)
        status = restore_or_fresh(cli, client, &stream, &fresh);
    if (status == CLI_EXIT_OK && cli->renew_now) {
        if (fresh)
            status =
                cli_failf(cli, CLI_EXIT_FAILURE, "no state at %s: nothing to renew", cli->state);
        else if (estc_client_renew_now(client) != ESTC_OK)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot make the renewal due");
        else
            event(cli, LOG_INFO, "renewing now (no daemon runs on %s)", cli->state);
    }
    /* A restored state is ready (even before its renewal); a first
     * enrollment is ready once it holds a valid certificate. */
    bool ready = status == CLI_EXIT_OK && !fresh;
    if (ready)
        notify_status(client, "READY=1\n");
    if (status == CLI_EXIT_OK) {
        estc_err err = estc_client_set_journal(client, &stream);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "journal");
    }
    /* A fresh start writes the state at once, so that status and a restart
     * find it even before the first enrollment succeeds. */
    if (status == CLI_EXIT_OK && fresh)
        save(cli, client, &stream);

    int64_t stop_at =
        cli->max_runtime_s > 0 ? estc_client_now(client) + cli->max_runtime_s : ESTC_NEVER;
    int sig = 0;
    estc_err last = ESTC_OK;
    unsigned ticks = 0;
    while (status == CLI_EXIT_OK) {
        estc_tick_result what = ESTC_TICK_NOTHING;
        estc_ctx_clear_error(cli->ctx);
        estc_err err = estc_client_tick(client, &what);
        if (err == ESTC_ERR_INVALID_ARG || err == ESTC_ERR_STATE) {
            status = cli_fail(cli, err, "tick");
            break;
        }
        log_tick(cli, client, what, err);
        if (what != ESTC_TICK_NOTHING) {
            last = err;
            save(cli, client, &stream);
            if (!ready && holds_valid(client))
                ready = true, notify_status(client, "READY=1\n");
            else
                notify_status(client, "");
        }
        /* After the state is written: the hook sees what a restart would. */
        if (cli->exec_cmd != NULL && err == ESTC_OK &&
            (what == ESTC_TICK_ENROLLED || what == ESTC_TICK_REENROLLED ||
             what == ESTC_TICK_FALLBACK_ENROLLED))
            run_hook(cli, client, what);
        int64_t when = ESTC_NEVER;
        (void)estc_client_next_deadline(client, &when);
        int64_t now = estc_client_now(client);
        if (cli->once) {
            /* Do what is due now (crts, then sen), then stop. */
            if (when <= now && what != ESTC_TICK_NOTHING && err == ESTC_OK && ++ticks < 8)
                continue;
            break;
        }
        if (now >= stop_at)
            break;
        /* Never spin: a deadline in the past after a tick that did nothing
         * waits a second. */
        if (when <= now && what == ESTC_TICK_NOTHING)
            when = now + 1;
        if (when > stop_at)
            when = stop_at;
        sig = sleep_until(client, when, &set);
        if (sig == SIGHUP) {
            reload(cli, client);
            sig = 0;
        } else if (sig == SIGUSR1) {
            event(cli, LOG_NOTICE, "SIGUSR1: renewing now");
            if (estc_client_renew_now(client) == ESTC_OK)
                save(cli, client, &stream);
            sig = 0;
        } else if (sig != 0) {
            break;
        }
    }
    if (status == CLI_EXIT_OK) {
        notify("STOPPING=1\nSTATUS=stopping; writing the state");
        /* The objects stay: they are what the state describes. */
        save(cli, client, &stream);
        if (sig != 0)
            event(cli, LOG_INFO, "stopping on %s; state written to %s",
                  sig == SIGTERM ? "SIGTERM" : "SIGINT", cli->state);
        else if (!cli->once)
            event(cli, LOG_INFO, "stopping after --max-runtime; state written to %s", cli->state);
        if (cli->once && !holds_valid(client))
            status = last != ESTC_OK ? cli_exit_status(last) : CLI_EXIT_FAILURE;
    }
    estc_client_free(client);
    unlock_state();
    if (given != NULL) {
        cli_free(given);
        free(given);
        given = NULL;
    }
    /* The mask stays: a SIGTERM that came during --once would otherwise
     * end the process now, with the state already written but exit 143. */
    if (use_syslog)
        closelog();
    return status;
}

/* ---- estc status --state ------------------------------------------------ */

int cli_status_state(struct cli *cli)
{
    if (cli->cert != NULL || cli->key != NULL || cli->new_cert != NULL || cli->new_key != NULL)
        return cli_failf(cli, CLI_EXIT_USAGE,
                         "--state names the certificate and key: leave out --cert, --key, "
                         "--new-cert and --new-key");
    struct stat st;
    if (stat(cli->state, &st) != 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "--state %s: %s", cli->state, strerror(errno));
    estc_client *client = NULL;
    estc_err err = estc_client_new(cli->ctx, &client);
    if (err != ESTC_OK)
        return cli_fail(cli, err, "creating the client");
    estc_state_stream stream;
    int status = CLI_EXIT_OK;
    if (set_jitter(cli, client) != ESTC_OK)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--jitter: out of range");
    if (status == CLI_EXIT_OK && estc_state_stream_file(&stream, cli->state) != ESTC_OK)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--state: bad path");
    /* Read-only: a running daemon's pending objects must not be purged. */
    if (status == CLI_EXIT_OK) {
        err = estc_client_restore_ex(client, &stream, ESTC_RESTORE_READ_ONLY);
        if (err != ESTC_OK) {
            char what[1100];
            snprintf(what, sizeof(what), "--state %s", cli->state);
            status = cli_fail(cli, err, what);
        }
    }
    FILE *fp = stdout;
    if (status == CLI_EXIT_OK && cli->out != NULL && strcmp(cli->out, "-") != 0) {
        fp = fopen(cli->out, "w");
        if (fp == NULL)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "--out %s: %s", cli->out, strerror(errno));
    }
    X509 *cert = NULL;
    estc_buf der = {0};
    bool have_cert = false;
    if (status == CLI_EXIT_OK) {
        err = estc_client_certificate(client, &der);
        if (err == ESTC_OK) {
            const unsigned char *p = der.data;
            cert = d2i_X509(NULL, &p, (long)der.len);
            if (cert == NULL)
                status = cli_failf(cli, CLI_EXIT_FAILURE, "the held certificate is not DER");
            have_cert = cert != NULL;
        } else if (err != ESTC_ERR_NOT_FOUND) {
            status = cli_fail(cli, err, "reading the certificate");
        }
    }
    if (status == CLI_EXIT_OK && cli->json) {
        status = cli_print_status_json(cli, fp, cert,
                                       have_cert ? estc_client_cert_address(client) : NULL,
                                       estc_client_key_address(client), client, cli->state);
        goto done;
    }
    char shown[1100], t[32];
    if (status == CLI_EXIT_OK) {
        fprintf(fp, "%-12s %s\n", "state", cli->state);
        if (!have_cert) {
            fprintf(fp, "%-12s none (not enrolled yet)\n", "certificate");
            cli_redact(estc_client_key_address(client), shown, sizeof(shown));
            fprintf(fp, "%-12s %s\n", "key", shown);
        }
    }
    int cert_status = CLI_EXIT_OK;
    if (status == CLI_EXIT_OK && have_cert) {
        /* Subject, issuer, validity, the key check; fails when not valid. */
        cert_status = cli_print_status(cli, fp, cert, estc_client_cert_address(client),
                                       estc_client_key_address(client));
    }
    if (status == CLI_EXIT_OK) {
        int64_t prov = 0, renewal = 0;
        unsigned failures = 0;
        if (have_cert &&
            estc_client_renewal_info(client, NULL, NULL, &prov, &renewal, &failures) == ESTC_OK) {
            fprintf(fp, "%-12s %s\n", "provisioned", cli_fmt_time(prov, t, sizeof(t)));
            fprintf(fp, "%-12s %s\n", "renewal", cli_fmt_time(renewal, t, sizeof(t)));
            fprintf(fp, "%-12s %u\n", "failures", failures);
        }
        cli_print_last_error(fp, client);
        int64_t next = ESTC_NEVER;
        if (estc_client_next_deadline(client, &next) == ESTC_OK)
            fprintf(fp, "%-12s %s\n", "next action", cli_fmt_time(next, t, sizeof(t)));
        size_t n = estc_client_ca_count(client);
        fprintf(fp, "%-12s %zu CA certificate%s\n", "trust store", n, n == 1 ? "" : "s");
        for (size_t i = 0; i < n; i++) {
            cli_redact(estc_client_ca_address(client, i), shown, sizeof(shown));
            fprintf(fp, "%-12s %s\n", "ca", shown);
        }
        if (fflush(fp) != 0)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot write the status");
    }
    if (status == CLI_EXIT_OK && !have_cert)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "no certificate is held");
    if (status == CLI_EXIT_OK)
        status = cert_status;
done:
    if (fp != NULL && fp != stdout && fclose(fp) != 0 && status == CLI_EXIT_OK)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "--out %s: %s", cli->out, strerror(errno));
    X509_free(cert);
    estc_buf_free(&der);
    estc_client_free(client);
    return status;
}
