/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: the command line EST-coaps client — options, help and dispatch.
 *
 *   estc SUBCOMMAND [options]
 *
 * Every option is checked against the subcommand it is given to, so a typo
 * or a misplaced option is a usage error (exit 2) rather than silently
 * ignored.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define BIT(c) (1u << (c))
#define NET                                                                                        \
    (BIT(CMD_DISCOVER) | BIT(CMD_CACERTS) | BIT(CMD_ENROLL) | BIT(CMD_REENROLL) |                  \
     BIT(CMD_SERVERKEYGEN) | BIT(CMD_CSRATTRS) | BIT(CMD_CSR) | BIT(CMD_RUN) | BIT(CMD_RENEW))
#define ALL (NET | BIT(CMD_STATUS))
#define ONE_SHOT (BIT(CMD_ENROLL) | BIT(CMD_REENROLL) | BIT(CMD_SERVERKEYGEN))
#define RUN (BIT(CMD_RUN) | BIT(CMD_RENEW))
#define ISSUE (ONE_SHOT | RUN)
#define CSR BIT(CMD_CSR)

static const struct {
    const char *name;
    const char *summary;
    const char *usage;
    const char *text;
} commands[CMD_COUNT] = {
    [CMD_DISCOVER] = {"discover", "find the server's EST resources (/.well-known/core)",
                      "estc discover --server coaps://HOST[:PORT] --trust CA.pem",
                      "Runs a DTLS handshake (with --cert/--key when given) and asks the server\n"
                      "for its EST resources with /.well-known/core?rt=ace.est*.\n"},
    [CMD_CACERTS] = {"cacerts", "GET /crts: fetch, store and print the CA certificates",
                     "estc cacerts --server URI --implicit-trust BOOT-CA.pem --ca-out PREFIX",
                     "Stores each CA certificate under --ca-out (one object per certificate)\n"
                     "and prints them as PEM to --out or stdout.\n"},
    [CMD_ENROLL] = {"enroll", "POST /sen: generate a key, request and store its certificate",
                    "estc enroll --server URI --trust CA.pem --cert IDEVID --key IDEVID-KEY\n"
                    "            --new-key ADDR --new-cert ADDR --subject /CN=NAME",
                    "Generates a key at --new-key, sends a CSR for it (signed in its engine)\n"
                    "over a DTLS session authenticated with --cert/--key, validates the\n"
                    "issued certificate, stores it at --new-cert and prints it as PEM.\n"},
    [CMD_REENROLL] = {"reenroll", "POST /sren: renew the enrolled certificate (same or new key)",
                      "estc reenroll --server URI --trust CA.pem --cert CERT-ADDR --key KEY-ADDR",
                      "Renews the certificate that sits at --cert (or --new-cert) for the key\n"
                      "at --key (or --new-key); the DTLS session authenticates with them.\n"
                      "Subject and subjectAltName stay. --rekey asks for a new key.\n"},
    [CMD_SERVERKEYGEN] = {"serverkeygen",
                          "POST /skg: the server makes the key; import it into an engine",
                          "estc serverkeygen --server URI --trust CA.pem --cert IDEVID\n"
                          "            --key IDEVID-KEY --new-key ADDR --new-cert ADDR "
                          "--subject /CN=NAME",
                          "The server generates the key pair; the key is imported into the\n"
                          "engine of --new-key (one that supports import: mem:, file:, pkcs11:,\n"
                          "psa:) and the copy in transit is wiped.\n"},
    [CMD_CSRATTRS] = {"csrattrs", "GET /att: fetch the CSR attributes the server wants",
                      "estc csrattrs --server URI --trust CA.pem",
                      "Fetches and checks the CSR attributes. `enroll --with-csrattrs` applies\n"
                      "them to the CSR it sends.\n"},
    [CMD_CSR] = {"csr", "make the CSR enroll would send, for an engine key (PEM)",
                 "estc csr --key ADDR --subject /CN=NAME [--san TYPE:VALUE] [--out FILE]",
                 "Signs, in the engine of --key, the PKCS#10 request that enroll would send\n"
                 "for that key (--subject, --san; with --with-csrattrs, which needs --server\n"
                 "and --trust, also what the server's /att asks for) and prints it as PEM.\n"
                 "The other way round, enroll --csr FILE and reenroll --csr FILE enroll a\n"
                 "CSR made where no engine reaches (a secure element, a signing station).\n"},
    [CMD_STATUS] = {"status", "show the enrolled certificate and key",
                    "estc status --new-cert CERT-ADDR [--new-key KEY-ADDR]",
                    "Prints the certificate at --new-cert (or --cert; an engine address or a\n"
                    "PEM/DER file): subject, issuer, serial, validity, subjectAltName, and\n"
                    "whether the key at --new-key (or --key) is the certificate's key.\n"
                    "With --state FILE (the state of `estc run`): the same for the enrolled\n"
                    "certificate, and the next renewal time, the engine addresses and the\n"
                    "trust store. Exit 0 while a valid certificate is held, 1 otherwise.\n"},
    [CMD_RUN] = {"run", "daemon: enroll once, then renew on schedule, keeping a state file",
                 "estc run --state FILE --server URI --trust CA.pem --cert IDEVID\n"
                 "            --key IDEVID-KEY --new-key ADDR --new-cert ADDR --subject /CN=NAME",
                 "Restores the state from --state (or, when the file does not exist,\n"
                 "enrolls with the bootstrap credentials --cert/--key and writes it), then\n"
                 "sleeps until the next deadline, renews (/sren; retries; then a new\n"
                 "enrollment /sen with a new key) and fetches CA certificates as\n"
                 "--cacerts-policy says. The state is journaled at each step, so a power\n"
                 "cut at any moment leaves neither lost credentials nor orphaned engine\n"
                 "objects. One line per event on stderr (or syslog). SIGTERM or SIGINT:\n"
                 "the state is written and estc exits with status 0; the objects stay.\n"
                 "SIGHUP re-reads the configuration (the key and certificate stay);\n"
                 "SIGUSR1 renews now. Options also come from /etc/estc/estc.conf (or\n"
                 "--config FILE; `key = value`, keys are the long option names; the\n"
                 "command line wins). A state of other --new-key/--new-cert/--ca-out\n"
                 "addresses is refused (exit 2) unless --take-over is given.\n"
                 "Here --retries is the number of failed renewals before the fallback.\n"},
    [CMD_RENEW] = {"renew", "renew now: signal the running daemon, or renew its state",
                   "estc renew --state FILE [run options]",
                   "When `estc run` runs on --state FILE (its lock file FILE.pid), sends it\n"
                   "SIGUSR1: it renews at once and logs the result. Otherwise renews the\n"
                   "state itself, like `estc run --once` with the renewal due now, taking\n"
                   "the other options (server, trust, --exec ...) from the command line and\n"
                   "the configuration file as `estc run` does.\n"},
};

enum opt_id {
    O_SERVER = 256,
    O_TRUST,
    O_IMPLICIT,
    O_SERVER_NAME,
    O_CERT,
    O_KEY,
    O_NEW_KEY,
    O_NEW_CERT,
    O_CA_OUT,
    O_SUBJECT,
    O_SAN,
    O_KEY_TYPE,
    O_ACCEPT,
    O_BLOCK,
    O_TIMEOUT,
    O_RETRIES,
    O_MAX_WAIT,
    O_REKEY,
    O_WITH_CACERTS,
    O_WITH_CSRATTRS,
    O_OUT,
    O_DRIVER,
    O_STATE,
    O_PSA_DIR,
    O_CACERTS_POLICY,
    O_CA_BUNDLE,
    O_NOMINAL,
    O_MAX_MARGIN,
    O_RETRY_SPACING,
    O_JITTER,
    O_EXEC,
    O_EXEC_TIMEOUT,
    O_MAX_RUNTIME,
    O_ONCE,
    O_SYSLOG,
    O_JSON,
    O_CSR,
    O_CONFIG,
    O_TAKE_OVER,
    O_VERBOSE = 'v',
    O_QUIET = 'q',
    O_HELP = 'h',
};

static const struct opt {
    int id;
    const char *name;
    const char *arg; /* NULL: no argument */
    unsigned cmds;
    const char *help;
} opts[] = {
    {O_SERVER, "server", "URI", NET, "coaps://HOST[:PORT][/ROOT]; without ROOT: discovery"},
    {O_TRUST, "trust", "FILE|ADDR", NET,
     "explicit trust anchor: PEM file or engine address (repeatable)"},
    {O_IMPLICIT, "implicit-trust", "FILE|ADDR", NET,
     "implicit trust anchor, used until /crts succeeds (repeatable)"},
    {O_SERVER_NAME, "server-name", "NAME", NET,
     "DNS name or IP the server's certificate must carry (default: HOST)"},
    {O_CERT, "cert", "FILE|ADDR", ALL,
     "DTLS client certificate (IDevID); reenroll/status: the current one"},
    {O_KEY, "key", "FILE|ADDR", ALL,
     "its private key; reenroll/status: the current one; csr: the key the CSR is for"},
    {O_NEW_KEY, "new-key", "ADDR", ISSUE | BIT(CMD_STATUS),
     "where the enrolled key goes (default mem:estc-key)"},
    {O_NEW_CERT, "new-cert", "ADDR", ISSUE | BIT(CMD_STATUS),
     "where the enrolled certificate goes (default mem:estc-cert)"},
    {O_CA_OUT, "ca-out", "PREFIX", BIT(CMD_CACERTS) | ISSUE,
     "engine prefix for the CA certificates from /crts (default mem:)"},
    {O_SUBJECT, "subject", "/CN=..", BIT(CMD_ENROLL) | BIT(CMD_SERVERKEYGEN) | RUN | CSR,
     "Subject to request, e.g. /CN=device-1/O=Example"},
    {O_SAN, "san", "TYPE:VALUE", BIT(CMD_ENROLL) | BIT(CMD_SERVERKEYGEN) | RUN | CSR,
     "subjectAltName to request: DNS:x, IP:a, URI:u, email:e (repeatable)"},
    {O_KEY_TYPE, "key-type", "TYPE", ISSUE, "p256 (default), p384, rsa2048 or rsa3072"},
    {O_ACCEPT, "accept", "CF", BIT(CMD_CACERTS) | ISSUE,
     "Content-Format to Accept: 281 (PKCS#7, default), 287 (X.509) or none"},
    {O_BLOCK, "block-size", "N", NET, "CoAP block size: 16, 32, ..., 1024"},
    {O_TIMEOUT, "timeout", "MS", NET, "time-out of one exchange in ms (default 30000)"},
    {O_RETRIES, "retries", "N", NET,
     "5.03 answers waited out per request (default 5); run: failed renewals "
     "before the fallback to /sen (default 3)"},
    {O_MAX_WAIT, "max-wait", "SECONDS", NET, "longest Max-Age waited (default 300)"},
    {O_REKEY, "rekey", NULL, BIT(CMD_REENROLL) | RUN, "reenroll with a new key"},
    {O_WITH_CACERTS, "with-cacerts", NULL, ONE_SHOT,
     "first GET /crts: store the CA certificates and trust them"},
    {O_WITH_CSRATTRS, "with-csrattrs", NULL, ONE_SHOT | CSR,
     "first GET /att and apply the attributes to the CSR"},
    {O_OUT, "out", "FILE", BIT(CMD_CACERTS) | ONE_SHOT | BIT(CMD_STATUS) | CSR,
     "write the PEM (or the status) to FILE instead of stdout"},
    {O_CSR, "csr", "FILE", BIT(CMD_ENROLL) | BIT(CMD_REENROLL),
     "enroll this CSR (PEM or DER) made elsewhere: no key is made; the certificate "
     "must be for its key"},
    {O_DRIVER, "driver", "MODULE.so", ALL, "load an engine driver module (repeatable)"},
    {O_STATE, "state", "FILE", RUN | BIT(CMD_STATUS),
     "the state file (0600; written atomically, journaled)"},
    {O_PSA_DIR, "psa-dir", "DIR", RUN | BIT(CMD_STATUS),
     "folder of the psa engine's storage (made 0700; entered before start)"},
    {O_CACERTS_POLICY, "cacerts-policy", "POLICY", RUN,
     "/crts: never, est (default), est-and-bootstrap or global"},
    {O_CA_BUNDLE, "ca-bundle", "FILE", RUN,
     "PEM bundle the CA certificates are exported to (est-and-bootstrap, global)"},
    {O_NOMINAL, "nominal-usage", "FRACTION", RUN,
     "renew after this share of the validity, 0 < F <= 1 (default 0.9)"},
    {O_MAX_MARGIN, "max-margin", "SECONDS", RUN,
     "renew at most this long before notAfter: the later of this and the usage "
     "rule wins (default 2592000, 30 days)"},
    {O_RETRY_SPACING, "retry-spacing", "SECONDS", RUN,
     "shortest wait between two attempts (default 60)"},
    {O_JITTER, "jitter", "SECONDS|PERCENT%", RUN | BIT(CMD_STATUS),
     "renew up to this much earlier, a per-certificate offset from its hash "
     "(default 10% of the time to the renewal, at most 86400 s; 0: none)"},
    {O_EXEC, "exec", "CMD", RUN,
     "run CMD with /bin/sh -c after every new certificate; ESTC_EVENT, ESTC_CERT, "
     "ESTC_KEY, ESTC_CA, ESTC_NOT_AFTER in its environment (PINs as ***)"},
    {O_EXEC_TIMEOUT, "exec-timeout", "SECONDS", RUN,
     "kill the --exec command after SECONDS (default 60)"},
    {O_MAX_RUNTIME, "max-runtime", "SECONDS", RUN, "stop as on SIGTERM after SECONDS"},
    {O_ONCE, "once", NULL, RUN, "do what is due now (enroll, renew), write the state, exit"},
    {O_SYSLOG, "syslog", NULL, RUN, "log events to syslog instead of stderr"},
    {O_CONFIG, "config", "FILE", RUN,
     "the configuration file (default /etc/estc/estc.conf when it exists)"},
    {O_TAKE_OVER, "take-over", NULL, BIT(CMD_RUN),
     "a state of other --new-key/--new-cert/--ca-out is set aside (STATE.old): "
     "enroll anew at the given addresses"},
    {O_JSON, "json", NULL, BIT(CMD_STATUS),
     "one JSON object: ISO 8601 UTC dates, addresses with PINs hidden"},
    {O_VERBOSE, "verbose", NULL, ALL, "log to stderr (-vv: debug)"},
    {O_QUIET, "quiet", NULL, ALL, "no summary or notes on stderr"},
    {O_HELP, "help", NULL, ALL, "this help"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

/* Options whose value is an engine address or a file: they also take
 * "@FILE" and "env:VAR" (see cli_address_arg()). */
static bool is_address_opt(int id)
{
    switch (id) {
    case O_TRUST:
    case O_IMPLICIT:
    case O_CERT:
    case O_KEY:
    case O_NEW_KEY:
    case O_NEW_CERT:
    case O_CA_OUT:
        return true;
    default:
        return false;
    }
}

static const struct opt *find_opt(int id)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        if (opts[i].id == id)
            return &opts[i];
    }
    return NULL;
}

static void print_options(FILE *fp, int cmd)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        if (cmd >= 0 && !(opts[i].cmds & BIT(cmd)))
            continue;
        char left[64];
        if (opts[i].id < 256)
            snprintf(left, sizeof(left), "-%c, --%s", opts[i].id, opts[i].name);
        else if (opts[i].arg != NULL)
            snprintf(left, sizeof(left), "    --%s %s", opts[i].name, opts[i].arg);
        else
            snprintf(left, sizeof(left), "    --%s", opts[i].name);
        fprintf(fp, "  %-30s %s\n", left, opts[i].help);
    }
}

static const char exit_text[] =
    "Exit status: 0 success, 1 operation failed, 2 usage error, 3 no answer\n"
    "(transport failure, time-out), 4 the server refused or a bound was hit\n"
    "(error code, too many 5.03, response too big), 5 validation failed (server\n"
    "identity or chain, issued certificate, protocol).\n";

static void main_help(FILE *fp)
{
    fprintf(fp, "usage: estc SUBCOMMAND [options]\n\n"
                "An EST-coaps (RFC 9148) client: keys, certificates and trust anchors live\n"
                "in crypto engines named by address (mem:, file:, pkcs11:, tpm2:, psa:).\n\n"
                "Subcommands:\n");
    for (int i = 0; i < CMD_COUNT; i++)
        fprintf(fp, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fprintf(fp, "\n`estc SUBCOMMAND --help` lists its options. mem: objects vanish when estc\n"
                "exits: keep results with file:, pkcs11:, tpm2: or psa: addresses, e.g.\n"
                "  --new-key 'pkcs11:token=Dev;object=est-key;pin-source=file:/etc/estc/pin'\n"
                "  --new-key file:/var/lib/estc/key.pem --new-cert file:/var/lib/estc/cert.pem\n"
                "Address options also take @FILE (the address in a 0600 file) or env:VAR\n"
                "(from the environment): no PIN on the command line.\n"
                "`estc --version` prints the version.\n\n");
    fputs(exit_text, fp);
}

static void cmd_help(FILE *fp, int cmd)
{
    fprintf(fp, "usage: %s [options]\n\n%s: %s.\n%s\nOptions:\n", commands[cmd].usage,
            commands[cmd].name, commands[cmd].summary, commands[cmd].text);
    print_options(fp, cmd);
    fputc('\n', fp);
    fputs(exit_text, fp);
}

/* "FILE:LINE: " of the configuration line being applied, or "". */
static char config_where[600];

/* One line on stderr naming the mistake; never echoes option values (they
 * may hold PINs). */
__attribute__((format(printf, 2, 3))) static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "estc: %s: %s", cmd != NULL ? cmd : "usage", config_where);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see estc %s%s--help)\n", cmd != NULL ? cmd : "", cmd != NULL ? " " : "");
    return CLI_EXIT_USAGE;
}

static bool list_add(struct cli_list *l, const char *v)
{
    const char **grown = realloc(l->v, (l->n + 1) * sizeof(*grown));
    if (grown == NULL)
        return false;
    l->v = grown;
    l->v[l->n++] = v;
    return true;
}

static bool parse_uint(const char *s, unsigned long max, unsigned *out)
{
    if (s[0] < '0' || s[0] > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = (unsigned)v;
    return true;
}

static bool parse_key_type(const char *s, estc_key_type *out)
{
    static const struct {
        const char *name;
        estc_key_type type;
    } types[] = {{"p256", ESTC_KEY_EC_P256},
                 {"p384", ESTC_KEY_EC_P384},
                 {"rsa2048", ESTC_KEY_RSA_2048},
                 {"rsa3072", ESTC_KEY_RSA_3072}};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(s, types[i].name) == 0) {
            *out = types[i].type;
            return true;
        }
    }
    return false;
}

void cli_free(struct cli *cli)
{
    cli_config_free(&cli->config);
    for (size_t i = 0; i < cli->owned.n; i++)
        free((void *)cli->owned.v[i]);
    free(cli->owned.v);
    free(cli->trust.v);
    free(cli->implicit_trust.v);
    free(cli->san.v);
    free(cli->drivers.v);
}

/* Stores one option's value; returns 0 or an exit status. */
static int set_opt(struct cli *cli, int id, char *arg, const char *cmd)
{
    const struct opt *o = find_opt(id);
    const char **single = NULL;
    struct cli_list *list = NULL;
    unsigned v;
    switch (id) {
    case O_SERVER:
        single = &cli->server;
        break;
    case O_SERVER_NAME:
        single = &cli->server_name;
        break;
    case O_CERT:
        single = &cli->cert;
        break;
    case O_KEY:
        single = &cli->key;
        break;
    case O_NEW_KEY:
        single = &cli->new_key;
        break;
    case O_NEW_CERT:
        single = &cli->new_cert;
        break;
    case O_CA_OUT:
        single = &cli->ca_out;
        break;
    case O_SUBJECT:
        single = &cli->subject;
        break;
    case O_OUT:
        single = &cli->out;
        break;
    case O_CSR:
        single = &cli->csr;
        break;
    case O_STATE:
        single = &cli->state;
        break;
    case O_PSA_DIR:
        single = &cli->psa_dir;
        break;
    case O_CA_BUNDLE:
        single = &cli->ca_bundle;
        break;
    case O_CACERTS_POLICY: {
        static const char *const names[] = {"never", "est", "est-and-bootstrap", "global"};
        if (cli->have_cacerts_policy)
            goto twice;
        for (int i = 0; i < 4; i++) {
            if (strcmp(arg, names[i]) == 0) {
                cli->cacerts_policy = i;
                cli->have_cacerts_policy = true;
            }
        }
        if (!cli->have_cacerts_policy)
            goto bad_value;
        return 0;
    }
    case O_NOMINAL: {
        char *end;
        if (cli->have_nominal)
            goto twice;
        errno = 0;
        double d = strtod(arg, &end);
        if (errno != 0 || end == arg || *end != '\0' || !(d > 0.0 && d <= 1.0))
            goto bad_value;
        cli->nominal_usage = d;
        cli->have_nominal = true;
        return 0;
    }
    case O_MAX_MARGIN:
        if (cli->have_max_margin || !parse_uint(arg, 20u * 365 * 86400, &v))
            goto bad_value;
        cli->max_margin_s = v;
        cli->have_max_margin = true;
        return 0;
    case O_RETRY_SPACING:
        if (cli->have_retry_spacing || !parse_uint(arg, 365u * 86400, &v) || v == 0)
            goto bad_value;
        cli->retry_spacing_s = v;
        cli->have_retry_spacing = true;
        return 0;
    case O_JITTER: {
        size_t len = strlen(arg);
        if (cli->have_jitter)
            goto twice;
        if (len > 1 && arg[len - 1] == '%') {
            char num[32], *end;
            if (len - 1 >= sizeof(num))
                goto bad_value;
            memcpy(num, arg, len - 1);
            num[len - 1] = '\0';
            errno = 0;
            double d = strtod(num, &end);
            if (errno != 0 || end == num || *end != '\0' || !(d >= 0.0 && d <= 100.0))
                goto bad_value;
            cli->jitter_share = d / 100.0;
            cli->jitter_max_s = 100LL * 365 * 86400;
        } else {
            if (!parse_uint(arg, 20u * 365 * 86400, &v))
                goto bad_value;
            cli->jitter_share = 1.0;
            cli->jitter_max_s = v;
        }
        cli->have_jitter = true;
        return 0;
    }
    case O_EXEC:
        if (cli->exec_cmd != NULL)
            goto twice;
        if (arg[0] == '\0')
            goto bad_value;
        cli->exec_cmd = arg;
        return 0;
    case O_EXEC_TIMEOUT:
        if (cli->exec_timeout_s != 0 || !parse_uint(arg, 86400, &v) || v == 0)
            goto bad_value;
        cli->exec_timeout_s = v;
        return 0;
    case O_MAX_RUNTIME:
        if (cli->max_runtime_s != 0 || !parse_uint(arg, 100u * 365 * 86400, &v) || v == 0)
            goto bad_value;
        cli->max_runtime_s = v;
        return 0;
    case O_ONCE:
        cli->once = true;
        return 0;
    case O_SYSLOG:
        cli->use_syslog = true;
        return 0;
    case O_JSON:
        cli->json = true;
        return 0;
    case O_CONFIG:
        if (cli->config_path != NULL)
            goto twice;
        cli->config_path = arg;
        return 0;
    case O_TAKE_OVER:
        cli->take_over = true;
        return 0;
    case O_TRUST:
        list = &cli->trust;
        break;
    case O_IMPLICIT:
        list = &cli->implicit_trust;
        break;
    case O_SAN:
        list = &cli->san;
        break;
    case O_DRIVER:
        list = &cli->drivers;
        break;
    case O_KEY_TYPE:
        if (cli->have_key_type || !parse_key_type(arg, &cli->key_type))
            goto bad_value;
        cli->have_key_type = true;
        return 0;
    case O_ACCEPT:
        if (cli->have_accept)
            goto twice;
        if (strcmp(arg, "281") == 0 || strcmp(arg, "287") == 0)
            cli->accept = atoi(arg);
        else if (strcmp(arg, "none") == 0)
            cli->accept = ESTC_CF_NONE;
        else
            goto bad_value;
        cli->have_accept = true;
        return 0;
    case O_BLOCK:
        if (cli->block_size != 0 || !parse_uint(arg, 1024, &v) || v < 16 || (v & (v - 1)) != 0)
            goto bad_value;
        cli->block_size = v;
        return 0;
    case O_TIMEOUT:
        if (cli->timeout_ms != 0 || !parse_uint(arg, 86400000, &v) || v == 0)
            goto bad_value;
        cli->timeout_ms = v;
        return 0;
    case O_RETRIES:
        if (cli->have_retries || !parse_uint(arg, 1000, &v))
            goto bad_value;
        cli->retries = v;
        cli->have_retries = true;
        return 0;
    case O_MAX_WAIT:
        if (cli->have_max_wait || !parse_uint(arg, 86400, &v))
            goto bad_value;
        cli->max_wait_s = v;
        cli->have_max_wait = true;
        return 0;
    case O_REKEY:
        cli->rekey = true;
        return 0;
    case O_WITH_CACERTS:
        cli->with_cacerts = true;
        return 0;
    case O_WITH_CSRATTRS:
        cli->with_csrattrs = true;
        return 0;
    case O_VERBOSE:
        cli->verbose++;
        return 0;
    case O_QUIET:
        cli->quiet = true;
        return 0;
    default:
        return usage_error(cmd, "unexpected option");
    }
    const char *value = arg;
    if (single != NULL && *single != NULL)
        goto twice;
    if (arg[0] == '\0')
        goto bad_value;
    /* Re-read on SIGHUP: the addresses are not reloaded (and an env:VAR is
     * gone), so they are kept as given. */
    if (is_address_opt(id) && !cli->reparsing) {
        int status = cli_address_arg(cli, o->name, arg, &value);
        if (status != 0)
            return status;
    }
    if (single != NULL) {
        *single = value;
        return 0;
    }
    if (!list_add(list, value)) {
        fprintf(stderr, "estc: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    return 0;
twice:
    return usage_error(cmd, "--%s given twice", o->name);
bad_value:
    /* Values may hold PINs: name the option, not the value. */
    return usage_error(cmd, "--%s: bad value or given twice; it takes %s: %s", o->name, o->arg,
                       o->help);
}

/* Applies the configuration file: every key is a long option of the
 * command; an option also given on the command line (@seen) is skipped,
 * so that the command line wins. */
static int apply_config(struct cli *cli, const bool *seen)
{
    const char *cn = cli->cmd_name;
    bool default_path = cli->config_path == NULL;
    const char *path = default_path ? "/etc/estc/estc.conf" : cli->config_path;
    int status = cli_config_read(cli, path, !default_path, &cli->config);
    /* -q and -v are one setting: either on the command line wins over both
     * in the file. */
    bool loudness = false;
    for (size_t k = 0; k < N_OPTS; k++)
        loudness = loudness || (seen[k] && (opts[k].id == O_VERBOSE || opts[k].id == O_QUIET));
    for (size_t i = 0; status == 0 && i < cli->config.n; i++) {
        const struct cli_config_entry *e = &cli->config.entries[i];
        snprintf(config_where, sizeof(config_where), "%s:%u: ", path, e->line);
        size_t k = 0;
        while (k < N_OPTS && strcmp(opts[k].name, e->key) != 0)
            k++;
        if (k == N_OPTS || opts[k].id == O_HELP || opts[k].id == O_CONFIG) {
            char shown[48];
            cli_redact(e->key, shown, sizeof(shown));
            status = usage_error(cn, "unknown key '%s'", shown);
            break;
        }
        if (!(opts[k].cmds & BIT(cli->cmd))) {
            status = usage_error(cn, "%s does not apply to %s", opts[k].name, cn);
            break;
        }
        if (opts[k].id == O_VERBOSE) {
            unsigned v;
            if (!parse_uint(e->value, 2, &v)) {
                status = usage_error(cn, "verbose takes 0, 1 or 2");
                break;
            }
            if (!loudness)
                cli->verbose = (int)v;
            continue;
        }
        bool on = true;
        if (opts[k].arg == NULL) {
            on = strcmp(e->value, "yes") == 0 || strcmp(e->value, "true") == 0 ||
                 strcmp(e->value, "1") == 0;
            if (!on && strcmp(e->value, "no") != 0 && strcmp(e->value, "false") != 0 &&
                strcmp(e->value, "0") != 0) {
                status = usage_error(cn, "%s takes yes or no", opts[k].name);
                break;
            }
        }
        if (seen[k] || !on || (opts[k].id == O_QUIET && loudness))
            continue;
        /* A PIN in the file is not one on the command line. */
        bool on_argv = cli->pin_on_argv;
        status = set_opt(cli, opts[k].id, e->value, cn);
        cli->pin_on_argv = on_argv;
    }
    config_where[0] = '\0';
    return status;
}

int cli_parse(struct cli *cli, bool *help)
{
    struct option longopts[N_OPTS + 1];
    for (size_t i = 0; i < N_OPTS; i++) {
        longopts[i] = (struct option){opts[i].name, opts[i].arg != NULL ? required_argument : 0,
                                      NULL, opts[i].id};
    }
    longopts[N_OPTS] = (struct option){0};
    const char *cn = cli->cmd_name;
    int cmd = (int)cli->cmd;
    /* The subcommand plays the program name for getopt; "+" stops at the
     * first operand, which is then refused. */
    int ac = cli->argc;
    char **av = cli->argv;
    bool seen[N_OPTS] = {false};
    int status = 0;
    *help = false;
    opterr = 0;
    optind = 0; /* also resets getopt's state for the re-read on SIGHUP */
    int c;
    while (status == 0 && (c = getopt_long(ac, av, "+vqh", longopts, NULL)) != -1) {
        if (c == '?' || c == ':') {
            if (optopt > 0 && optopt < 256) {
                status = usage_error(cn, "unknown option -%c", optopt);
            } else {
                /* The option as typed, without any "=value" part. */
                const char *bad = optind - 1 < ac ? av[optind - 1] : "";
                int len = (int)strcspn(bad, "=");
                status = usage_error(cn, "unknown option or missing value: %.*s",
                                     len > 40 ? 40 : len, bad);
            }
            break;
        }
        const struct opt *o = find_opt(c);
        if (o == NULL || !(o->cmds & BIT(cmd))) {
            status = usage_error(cn, "--%s does not apply to %s", o != NULL ? o->name : "?", cn);
            break;
        }
        seen[o - opts] = true;
        if (c == O_HELP) {
            *help = true;
            continue;
        }
        status = set_opt(cli, c, optarg, cn);
    }
    if (status == 0 && *help)
        return 0;
    if (status == 0 && optind < ac) {
        char shown[48];
        cli_redact(av[optind], shown, sizeof(shown));
        status = usage_error(cn, "unexpected argument '%s'", shown);
    }
    if (status == 0 && (cli->cmd == CMD_RUN || cli->cmd == CMD_RENEW))
        status = apply_config(cli, seen);
    if (status == 0 && cli->quiet && cli->verbose > 0)
        status = usage_error(cn, "-q and -v exclude each other");
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        main_help(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *first = argv[1];
    if (strcmp(first, "--help") == 0 || strcmp(first, "-h") == 0) {
        main_help(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(first, "--version") == 0) {
        printf("estc %s\n", ESTC_TOOL_VERSION);
        return CLI_EXIT_OK;
    }
    int cmd = -1;
    bool help_for = strcmp(first, "help") == 0;
    const char *name = help_for ? (argc > 2 ? argv[2] : NULL) : first;
    if (help_for && name == NULL) {
        main_help(stdout);
        return CLI_EXIT_OK;
    }
    for (int i = 0; i < CMD_COUNT; i++) {
        if (strcmp(name, commands[i].name) == 0)
            cmd = i;
    }
    if (cmd < 0) {
        if (name[0] == '-')
            return usage_error(NULL, "a subcommand must come first, not an option");
        char shown[48];
        cli_redact(name, shown, sizeof(shown));
        return usage_error(NULL, "unknown subcommand '%s'", shown);
    }
    if (help_for) {
        cmd_help(stdout, cmd);
        return CLI_EXIT_OK;
    }

    struct cli cli = {.cmd = (enum cli_cmd)cmd,
                      .cmd_name = commands[cmd].name,
                      .argc = argc - 1,
                      .argv = argv + 1};
    bool help = false;
    int status = cli_parse(&cli, &help);
    if (status == 0 && help) {
        cmd_help(stdout, cmd);
        cli_free(&cli);
        return CLI_EXIT_OK;
    }
    if (status == 0)
        status = cli_protect_secrets(&cli);
    if (status == 0) {
        status = cli_run(&cli);
        if (status == 0 && cli.cmd != CMD_RUN && cli.cmd != CMD_RENEW)
            cli_pin_note(&cli);
    }
    cli_free(&cli);
    return status;
}
