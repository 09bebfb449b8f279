/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-server: command line, start-up, the CoAP loop and clean shutdown.
 */
#include "server.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

int srv_verbosity;

static volatile sig_atomic_t stop_requested;
/* Set by main() for the workers to stop, or by a worker that failed. */
static atomic_int workers_stop;
static atomic_int worker_failed;

/* Default CSR attributes (CF 285): challengePassword, EC P-256, ECDSA with SHA-256. */
static const uint8_t default_csr_attrs[] = {
    0x30, 0x2c, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07, 0x30, 0x15, 0x06,
    0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x31, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};

void srv_log(int level, const char *fmt, ...)
{
    va_list ap;
    if (level > srv_verbosity)
        return;
    flockfile(stderr); /* one whole line, whichever worker logs */
    fputs("estc-server: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    funlockfile(stderr);
}

void srv_log_ssl_errors(const char *what)
{
    unsigned long e;
    char buf[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        srv_log(SRV_LOG_ERR, "%s: %s", what, buf);
    }
}

/* libcoap logs to stdout by default; keep stdout for the start-up lines. */
static void coap_log_to_stderr(coap_log_t level, const char *message)
{
    (void)level;
    fprintf(stderr, "libcoap: %s", message); /* one call: stdio locks the stream */
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fputs("Usage: estc-server [OPTIONS]\n"
          "A reference EST-coaps (RFC 9148) server with a small test CA.\n"
          "\n"
          "  --listen ADDR:PORT   coaps address to serve, repeatable; IPv6 as [ADDR]:PORT\n"
          "                       (default [::]:5684 and 0.0.0.0:5684 where free)\n"
          "  --state-dir DIR      CA key (0600) and certificate, issued-certificate index,\n"
          "                       server credentials; the CA is created on first start\n"
          "  --ca-cert FILE       use this CA certificate (PEM) instead of the state folder's\n"
          "  --ca-key FILE        and this CA key (PEM)\n"
          "  --cert FILE          server certificate chain (PEM); default: issued by the CA\n"
          "  --key FILE           server private key (PEM), with --cert\n"
          "                       for localhost, 127.0.0.1, ::1 and the listen addresses\n"
          "  --client-ca FILE     CA bundle (PEM) whose clients may enroll, repeatable;\n"
          "                       certificates of this CA are always accepted\n"
          "  --extra-ca FILE      extra CA certificates (PEM) sent by crts with CF 281\n"
          "  --csr-attrs FILE     DER CSR attributes served by att (default: P-256 set)\n"
          "  --validity SECONDS   validity of issued certificates (default 2592000)\n"
          "  --block-size N       Block2 size: 16, 32, ..., 1024 (default: libcoap's)\n"
          "  --delay-first N      answer the first N enrollment requests of each client\n"
          "                       with 5.03 Service Unavailable (default 0)\n"
          "  --max-age SECONDS    Max-Age of those 5.03 answers (default 5)\n"
          "  --root PATH          path of the EST resources (default /est)\n"
          "  --pop                require challengePassword = base64(tls-unique)\n"
          "  --dedup-window SECONDS  a repeated CSR from the same client gets the same\n"
          "                       answer within this time (default 60)\n"
          "  --max-runtime SECONDS  stop by itself after this time (default: never)\n"
          "  --max-body BYTES     largest request body accepted; a larger one gets 4.13\n"
          "                       with Size1 at its first block (default 65536)\n"
          "  --max-sessions N     DTLS sessions kept; a new client evicts the session\n"
          "                       idle the longest (default 1000)\n"
          "  --idle-timeout SECONDS  close a session idle this long (default 300)\n"
          "  --max-handshakes N   handshakes in progress after the cookie exchange\n"
          "                       (default 100)\n"
          "  --workers N          threads serving requests, each with its own socket on\n"
          "                       the listen addresses (default: the online CPUs); the\n"
          "                       session limits above are shared out among them\n"
          "Enrollment policy (sen, sren, skg, skc):\n"
          "  --max-csr-size BYTES a larger CSR gets 4.13 (default 8192)\n"
          "  --max-sans N         at most N subjectAltNames in a CSR (default 16)\n"
          "  --allowed-san-types LIST  SAN kinds a CSR may ask for: all (default), none or\n"
          "                       a comma list of dns,ip,uri,email,othername,dirname,rid,\n"
          "                       x400,edipartyname\n"
          "  --cn-must-match RULE the CSR's CN must be the client certificate's CN\n"
          "                       (client-cn) or subject serialNumber (client-serial);\n"
          "                       none (default): any CN\n"
          "  --allow-server-names issue the server's own DNS names and addresses too\n"
          "LwM2M:\n"
          "  --lwm2m-bootstrap    also act as LwM2M Bootstrap Server: answer POST /bs?ep=NAME,\n"
          "                       write /0/1 (Security), /1/1 (Server) in TLV, then\n"
          "                       Bootstrap-Finish, on the same DTLS session as EST\n"
          "  --lwm2m-server-uri URI  management server URI written to /0/1/0\n"
          "                       (default coaps://localhost:5784)\n"
          "  --lwm2m-mode N       Security Mode written to /0/1/2 (default 4: EST)\n"
          "  --lwm2m-bootstrap-mode N  also write the bootstrap account /0/0 with mode N\n"
          "                       (its URI: coaps:// and the first --listen address)\n"
          "  -v                   more log output on stderr (repeat for debug; libcoap's\n"
          "                       debug log too with --workers 1)\n"
          "  -h, --help           this text\n"
          "  --version            print the version and exit\n"
          "\n"
          "The CA certificate's path is printed on stdout at start. SIGTERM stops the\n"
          "server cleanly.\n",
          f);
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* The value of --NAME as a number from min to max, else a message with the range. */
static int option_long(const char *name, const char *arg, long min, long max, const char *unit,
                       long *out)
{
    if (parse_long(arg, min, max, out) == 0)
        return 0;
    fprintf(stderr, "estc-server: --%s wants %s, %ld to %ld\n", name, unit, min, max);
    return -1;
}

enum {
    OPT_LISTEN = 256,
    OPT_STATE_DIR,
    OPT_CERT,
    OPT_KEY,
    OPT_CA_CERT,
    OPT_CA_KEY,
    OPT_CLIENT_CA,
    OPT_EXTRA_CA,
    OPT_CSR_ATTRS,
    OPT_VALIDITY,
    OPT_BLOCK_SIZE,
    OPT_DELAY_FIRST,
    OPT_MAX_AGE,
    OPT_ROOT,
    OPT_POP,
    OPT_DEDUP,
    OPT_MAX_RUNTIME,
    OPT_LWM2M,
    OPT_LWM2M_URI,
    OPT_LWM2M_MODE,
    OPT_LWM2M_BS_MODE,
    OPT_MAX_BODY,
    OPT_MAX_SESSIONS,
    OPT_IDLE_TIMEOUT,
    OPT_MAX_HANDSHAKES,
    OPT_MAX_CSR_SIZE,
    OPT_MAX_SANS,
    OPT_ALLOWED_SAN_TYPES,
    OPT_CN_MUST_MATCH,
    OPT_ALLOW_SERVER_NAMES,
    OPT_WORKERS,
    OPT_VERSION,
};

static int parse_args(struct srv_options *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"ca-cert", required_argument, NULL, OPT_CA_CERT},
        {"ca-key", required_argument, NULL, OPT_CA_KEY},
        {"client-ca", required_argument, NULL, OPT_CLIENT_CA},
        {"extra-ca", required_argument, NULL, OPT_EXTRA_CA},
        {"csr-attrs", required_argument, NULL, OPT_CSR_ATTRS},
        {"validity", required_argument, NULL, OPT_VALIDITY},
        {"block-size", required_argument, NULL, OPT_BLOCK_SIZE},
        {"delay-first", required_argument, NULL, OPT_DELAY_FIRST},
        {"max-age", required_argument, NULL, OPT_MAX_AGE},
        {"root", required_argument, NULL, OPT_ROOT},
        {"pop", no_argument, NULL, OPT_POP},
        {"dedup-window", required_argument, NULL, OPT_DEDUP},
        {"max-runtime", required_argument, NULL, OPT_MAX_RUNTIME},
        {"lwm2m-bootstrap", no_argument, NULL, OPT_LWM2M},
        {"lwm2m-server-uri", required_argument, NULL, OPT_LWM2M_URI},
        {"lwm2m-mode", required_argument, NULL, OPT_LWM2M_MODE},
        {"lwm2m-bootstrap-mode", required_argument, NULL, OPT_LWM2M_BS_MODE},
        {"max-body", required_argument, NULL, OPT_MAX_BODY},
        {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"max-handshakes", required_argument, NULL, OPT_MAX_HANDSHAKES},
        {"max-csr-size", required_argument, NULL, OPT_MAX_CSR_SIZE},
        {"max-sans", required_argument, NULL, OPT_MAX_SANS},
        {"allowed-san-types", required_argument, NULL, OPT_ALLOWED_SAN_TYPES},
        {"cn-must-match", required_argument, NULL, OPT_CN_MUST_MATCH},
        {"allow-server-names", no_argument, NULL, OPT_ALLOW_SERVER_NAMES},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    int c, li = 0;
    long v;

    o->validity = 30L * 24 * 3600;
    o->block_szx = -1;
    o->max_age = 5;
    o->root = "/est";
    o->dedup_window = 60;
    o->lwm2m_uri = "coaps://localhost:5784";
    o->lwm2m_mode = 4;
    o->lwm2m_bs_mode = -1;
    o->max_body = 65536;
    o->max_sessions = 1000;
    o->idle_timeout = 300;
    o->max_handshakes = 100;
    o->workers = 0; /* the online CPUs, see main() */
    srv_policy_init(&o->policy);
    while ((c = getopt_long(argc, argv, "vh", longopts, &li)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            if (o->n_listen == SRV_MAX_LISTEN) {
                fprintf(stderr, "estc-server: at most %d --listen\n", SRV_MAX_LISTEN);
                return -1;
            }
            o->listen[o->n_listen++] = optarg;
            break;
        case OPT_STATE_DIR:
            o->state_dir = optarg;
            break;
        case OPT_CERT:
            o->cert_file = optarg;
            break;
        case OPT_KEY:
            o->key_file = optarg;
            break;
        case OPT_CA_CERT:
            o->ca_cert_file = optarg;
            break;
        case OPT_CA_KEY:
            o->ca_key_file = optarg;
            break;
        case OPT_CLIENT_CA:
            if (o->n_client_ca == SRV_MAX_CLIENT_CA) {
                fprintf(stderr, "estc-server: at most %d --client-ca\n", SRV_MAX_CLIENT_CA);
                return -1;
            }
            o->client_ca[o->n_client_ca++] = optarg;
            break;
        case OPT_EXTRA_CA:
            o->extra_ca = optarg;
            break;
        case OPT_CSR_ATTRS:
            o->csr_attrs_file = optarg;
            break;
        case OPT_VALIDITY:
            if (option_long("validity", optarg, 1, 100L * 365 * 24 * 3600, "seconds",
                            &o->validity) != 0)
                return -1;
            break;
        case OPT_BLOCK_SIZE:
            if (parse_long(optarg, 16, 1024, &v) != 0 || (v & (v - 1)) != 0) {
                fprintf(stderr, "estc-server: --block-size is one of 16 32 64 ... 1024\n");
                return -1;
            }
            o->block_szx = 0;
            while ((16L << o->block_szx) < v)
                o->block_szx++;
            break;
        case OPT_DELAY_FIRST:
            if (parse_long(optarg, 0, 1000000, &v) != 0) {
                fprintf(stderr, "estc-server: --delay-first wants a count\n");
                return -1;
            }
            o->delay_first = (int)v;
            break;
        case OPT_MAX_AGE:
            if (parse_long(optarg, 0, 0xffffffffL, &v) != 0) {
                fprintf(stderr, "estc-server: --max-age wants seconds\n");
                return -1;
            }
            o->max_age = (unsigned)v;
            break;
        case OPT_ROOT:
            o->root = optarg;
            break;
        case OPT_POP:
            o->pop = 1;
            break;
        case OPT_DEDUP:
            if (option_long("dedup-window", optarg, 0, 86400, "seconds", &o->dedup_window) != 0)
                return -1;
            break;
        case OPT_MAX_RUNTIME:
            if (option_long("max-runtime", optarg, 1, 10L * 365 * 24 * 3600, "seconds",
                            &o->max_runtime) != 0)
                return -1;
            break;
        case OPT_LWM2M:
            o->lwm2m = 1;
            break;
        case OPT_LWM2M_URI:
            if (strlen(optarg) == 0 || strlen(optarg) > 255) {
                fprintf(stderr, "estc-server: --lwm2m-server-uri wants a URI\n");
                return -1;
            }
            o->lwm2m_uri = optarg;
            break;
        case OPT_LWM2M_MODE:
        case OPT_LWM2M_BS_MODE:
            if (parse_long(optarg, 0, 4, &v) != 0) {
                fprintf(stderr, "estc-server: a security mode is 0 to 4\n");
                return -1;
            }
            if (c == OPT_LWM2M_MODE)
                o->lwm2m_mode = (int)v;
            else
                o->lwm2m_bs_mode = (int)v;
            break;
        case OPT_MAX_CSR_SIZE:
        case OPT_MAX_SANS:
        case OPT_ALLOWED_SAN_TYPES:
        case OPT_CN_MUST_MATCH:
        case OPT_ALLOW_SERVER_NAMES:
            if (srv_policy_option(&o->policy, longopts[li].name, optarg) != 0)
                return -1;
            break;
        case OPT_MAX_BODY:
            if (option_long("max-body", optarg, 64, 16L * 1024 * 1024, "bytes", &o->max_body) != 0)
                return -1;
            break;
        case OPT_MAX_SESSIONS:
            if (option_long("max-sessions", optarg, 1, 1000000, "a count", &o->max_sessions) != 0)
                return -1;
            break;
        case OPT_IDLE_TIMEOUT:
            if (option_long("idle-timeout", optarg, 1, 86400, "seconds", &o->idle_timeout) != 0)
                return -1;
            break;
        case OPT_MAX_HANDSHAKES:
            if (option_long("max-handshakes", optarg, 1, 100000, "a count", &o->max_handshakes) !=
                0)
                return -1;
            break;
        case OPT_WORKERS:
            if (option_long("workers", optarg, 1, SRV_MAX_WORKERS, "a count", &o->workers) != 0)
                return -1;
            break;
        case 'v':
            o->verbose++;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case OPT_VERSION:
            printf("estc-server %s\n", ESTC_TOOL_VERSION);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (!o->lwm2m && (o->lwm2m_bs_mode >= 0 || o->lwm2m_mode != 4 ||
                      strcmp(o->lwm2m_uri, "coaps://localhost:5784") != 0)) {
        fprintf(stderr, "estc-server: --lwm2m-* options need --lwm2m-bootstrap\n");
        return -1;
    }
    if (optind != argc) {
        fprintf(stderr, "estc-server: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

/* "/est/", "est" -> "est"; "/" alone is refused. */
static char *normalize_root(const char *root)
{
    size_t n;
    char *r;

    while (*root == '/')
        root++;
    n = strlen(root);
    while (n > 0 && root[n - 1] == '/')
        n--;
    if (n == 0 || n > 200 || memchr(root, '?', n) != NULL)
        return NULL;
    r = malloc(n + 1);
    if (r != NULL) {
        memcpy(r, root, n);
        r[n] = '\0';
    }
    return r;
}

/* ADDR:PORT or [ADDR]:PORT into a socket address. */
static int parse_listen(const char *spec, coap_address_t *out)
{
    char host[256];
    const char *port;
    struct addrinfo hints, *res = NULL;
    size_t n;

    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        n = (size_t)(end - spec - 1);
        port = end + 2;
        spec++;
    } else {
        const char *colon = strrchr(spec, ':');
        if (colon == NULL)
            return -1;
        n = (size_t)(colon - spec);
        port = colon + 1;
    }
    if (n == 0 || n >= sizeof(host) || *port == '\0')
        return -1;
    memcpy(host, spec, n);
    host[n] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
        return -1;
    coap_address_init(out);
    if (res->ai_addrlen > sizeof(out->addr)) {
        freeaddrinfo(res);
        return -1;
    }
    memcpy(&out->addr, res->ai_addr, res->ai_addrlen);
    out->size = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* libcoap binds with SO_REUSEADDR, so a busy port would not be noticed. */
static int port_free(const coap_address_t *a)
{
    int fd = socket(a->addr.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int ok;
    if (fd < 0)
        return 0;
    ok = bind(fd, &a->addr.sa, a->size) == 0;
    close(fd);
    return ok;
}

static int load_csr_attrs(struct srv *s)
{
    if (s->opt.csr_attrs_file != NULL) {
        const unsigned char *p;
        ASN1_TYPE *t;
        if (srv_read_file(s->opt.csr_attrs_file, &s->csr_attrs, &s->csr_attrs_len) != 0) {
            srv_log(SRV_LOG_ERR, "cannot read --csr-attrs %s", s->opt.csr_attrs_file);
            return -1;
        }
        /* One DER SEQUENCE, nothing after it. */
        p = s->csr_attrs;
        t = d2i_ASN1_TYPE(NULL, &p, (long)s->csr_attrs_len);
        if (t == NULL || t->type != V_ASN1_SEQUENCE || p != s->csr_attrs + s->csr_attrs_len) {
            ASN1_TYPE_free(t);
            srv_log(SRV_LOG_ERR, "--csr-attrs %s is not one DER SEQUENCE", s->opt.csr_attrs_file);
            return -1;
        }
        ASN1_TYPE_free(t);
        return 0;
    }
    s->csr_attrs = malloc(sizeof(default_csr_attrs));
    if (s->csr_attrs == NULL)
        return -1;
    memcpy(s->csr_attrs, default_csr_attrs, sizeof(default_csr_attrs));
    s->csr_attrs_len = sizeof(default_csr_attrs);
    return 0;
}

static int setup_stores(struct srv *s)
{
    int i;
    s->client_store = X509_STORE_new();
    s->own_store = X509_STORE_new();
    if (s->client_store == NULL || s->own_store == NULL ||
        X509_STORE_add_cert(s->client_store, s->ca.cert) != 1 ||
        X509_STORE_add_cert(s->own_store, s->ca.cert) != 1)
        return -1;
    for (i = 0; i < s->opt.n_client_ca; i++) {
        if (srv_store_add_pem_file(s->client_store, s->opt.client_ca[i]) != 0) {
            srv_log(SRV_LOG_ERR, "cannot read certificates from --client-ca %s",
                    s->opt.client_ca[i]);
            return -1;
        }
    }
    return 0;
}

/*
 * OpenSSL caches a certificate's decoded extensions at its first use; its
 * readers look without the lock that the writer takes. Fill the caches of
 * every certificate the workers share before they start.
 */
static void warm_certs(struct srv *s)
{
    X509_STORE *stores[2] = {s->client_store, s->own_store};

    (void)X509_check_purpose(s->ca.cert, -1, 0);
    (void)X509_check_purpose(s->server_cert, -1, 0);
    for (int i = 0; i < sk_X509_num(s->ca.extra); i++)
        (void)X509_check_purpose(sk_X509_value(s->ca.extra, i), -1, 0);
    for (int i = 0; i < sk_X509_num(s->server_chain); i++)
        (void)X509_check_purpose(sk_X509_value(s->server_chain, i), -1, 0);
    for (int k = 0; k < 2; k++) {
        STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(stores[k]);
        for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
            X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
            if (x != NULL)
                (void)X509_check_purpose(x, -1, 0);
        }
    }
    ERR_clear_error();
}

static void srv_free(struct srv *s)
{
    srv_ca_free(&s->ca);
    X509_STORE_free(s->client_store);
    X509_STORE_free(s->own_store);
    free(s->server_cert_path);
    free(s->server_key_path);
    srv_tls_free_creds(s);
    free(s->csr_attrs);
    srv_cache_free(s->cache);
    srv_policy_free(&s->opt.policy);
    free(s->root);
}

/* DTLS sessions this worker accepted, logged when it stops (-v). */
static _Thread_local unsigned long sessions_accepted;

/* A session is gone (closed, timed out or evicted): forget its unfinished bodies. */
static int on_event(coap_session_t *session, const coap_event_t event)
{
    if (event == COAP_EVENT_DTLS_CONNECTED && session != NULL &&
        coap_session_get_type(session) == COAP_SESSION_TYPE_SERVER)
        sessions_accepted++;
    if (event == COAP_EVENT_SERVER_SESSION_DEL && session != NULL) {
        srv_block1_forget(session);
        if (srv_verbosity >= SRV_LOG_DEBUG) {
            /* Not coap_session_str(): its buffer is static, shared by all threads. */
            char a[INET6_ADDRSTRLEN + 16];
            if (coap_print_addr(coap_session_get_addr_remote(session), (uint8_t *)a, sizeof(a)) ==
                0)
                strcpy(a, "?");
            srv_log(SRV_LOG_DEBUG, "session %s closed", a);
        }
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The listen addresses, resolved and checked once; every worker binds them all. */
struct listen_set {
    coap_address_t addr[SRV_MAX_LISTEN];
    const char *spec[SRV_MAX_LISTEN];
    int n;
};

struct worker {
    struct srv *s;
    const struct listen_set *ls;
    int idx;
    pthread_t thread;
    int started;
    /* start-up hand-shake with main(): 0 running, 1 ready, -1 failed */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;
};

static void worker_report(struct worker *w, int state)
{
    pthread_mutex_lock(&w->mu);
    w->state = state;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One worker's share of a limit: the limit divided among them, rounded up. */
static unsigned share(long limit, long workers)
{
    return (unsigned)((limit + workers - 1) / workers);
}

/* Makes this thread's libcoap context with its endpoints; NULL on failure. */
static coap_context_t *worker_context(struct worker *w)
{
    struct srv *s = w->s;
    coap_context_t *ctx;
    coap_dtls_pki_t pki;

    ctx = coap_new_context(NULL);
    if (ctx == NULL)
        return NULL;
    coap_set_app_data(ctx, s);
    /* Not COAP_BLOCK_SINGLE_BODY: the Block1 gate in block.c sees every block. */
    coap_context_set_block_mode(ctx, COAP_BLOCK_USE_LIBCOAP);
    /*
     * libcoap counts idle server sessions (no request in progress) and, when
     * a new peer comes with --max-sessions of them, frees the one idle the
     * longest; it closes a session idle for --idle-timeout seconds. Each
     * worker has its share of the limits.
     */
    coap_context_set_max_idle_sessions(ctx, share(s->opt.max_sessions, s->opt.workers));
    coap_context_set_session_timeout(ctx, (unsigned)s->opt.idle_timeout);
    coap_context_set_max_handshake_sessions(ctx, share(s->opt.max_handshakes, s->opt.workers));
    coap_register_event_handler(ctx, on_event);

    memset(&pki, 0, sizeof(pki));
    pki.version = COAP_DTLS_PKI_SETUP_VERSION;
    pki.verify_peer_cert = 1; /* ask for a client certificate; tls.c decides */
    pki.allow_self_signed = 0;
    pki.cert_chain_validation = 1;
    pki.cert_chain_verify_depth = SRV_VERIFY_DEPTH;
    pki.additional_tls_setup_call_back = srv_tls_setup_cb;
    pki.cn_call_back_arg = s; /* no CN callback: carries our state to the setup callback */
    pki.pki_key.key_type = COAP_PKI_KEY_PEM;
    pki.pki_key.key.pem.public_cert = s->server_cert_path;
    pki.pki_key.key.pem.private_key = s->server_key_path;
    if (!coap_context_set_pki(ctx, &pki)) {
        srv_log(SRV_LOG_ERR, "cannot use the server credentials %s", s->server_cert_path);
        goto fail;
    }
    if (srv_est_register(s, ctx) != 0 || (s->opt.lwm2m && srv_lwm2m_register(s, ctx) != 0)) {
        srv_log(SRV_LOG_ERR, "cannot create the resources");
        goto fail;
    }
    for (int i = 0; i < w->ls->n; i++) {
        coap_address_t addr = w->ls->addr[i];
        if (coap_new_endpoint(ctx, &addr, COAP_PROTO_DTLS) == NULL) {
            srv_log(SRV_LOG_ERR, "cannot listen on %s", w->ls->spec[i]);
            goto fail;
        }
        if (srv_hello_guard_add_endpoint(ctx, &addr) != 0 ||
            (i == 0 && srv_hello_guard_take_cookies(ctx, &addr) != 0)) {
            srv_log(SRV_LOG_ERR, "cannot guard the socket of %s", w->ls->spec[i]);
            goto fail;
        }
    }
    return ctx;
fail:
    coap_free_context(ctx);
    return NULL;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct srv *s = w->s;
    coap_context_t *ctx = worker_context(w);

    if (ctx == NULL) {
        srv_lwm2m_free();
        srv_block1_free();
        srv_hello_guard_free();
        worker_report(w, -1);
        return NULL;
    }
    worker_report(w, 1);
    while (!atomic_load(&workers_stop)) {
        /*
         * The worker waits for datagrams itself so that the ClientHello guard
         * (tls.c) sees each one before libcoap does; libcoap reads at most one
         * datagram per endpoint per coap_io_process() call.
         */
        srv_hello_guard_wait(ctx, 100);
        for (int i = 0; i < 64 && !atomic_load(&workers_stop); i++) {
            int st = srv_hello_guard_filter(ctx);
            if (st < 0)
                continue;
            if (coap_io_process(ctx, COAP_IO_NO_WAIT) < 0 && errno != EINTR) {
                srv_log(SRV_LOG_ERR, "CoAP processing failed (worker %d)", w->idx);
                atomic_store(&worker_failed, 1);
                atomic_store(&workers_stop, 1);
                break;
            }
            if (st == 0)
                break;
        }
        if (s->opt.lwm2m)
            srv_lwm2m_poll(s);
    }
    srv_log(SRV_LOG_INFO, "worker %d: %lu DTLS session(s)", w->idx, sessions_accepted);
    srv_lwm2m_free();
    coap_free_context(ctx);
    srv_block1_free();
    srv_hello_guard_free();
    return NULL;
}

/*
 * Resolves --listen (or the defaults) and checks that each address is free.
 * Each accepted address is held by a plain socket while the next ones are
 * checked, as a worker's would be: once [::] (dual stack, as libcoap binds
 * it) is taken, the default 0.0.0.0 is busy and left out.
 */
static int resolve_listen(const struct srv *s, struct listen_set *ls)
{
    static const char *const default_listen[] = {"[::]:5684", "0.0.0.0:5684"};
    int n = s->opt.n_listen ? s->opt.n_listen : 2;
    int hold[SRV_MAX_LISTEN];
    int rc = -1;

    ls->n = 0;
    for (int i = 0; i < n; i++) {
        const char *spec = s->opt.n_listen ? s->opt.listen[i] : default_listen[i];
        coap_address_t addr;
        int fd, off = 0;

        if (parse_listen(spec, &addr) != 0) {
            srv_log(SRV_LOG_ERR, "bad --listen '%s' (ADDR:PORT or [ADDR]:PORT)", spec);
            goto out;
        }
        if (!port_free(&addr)) {
            if (s->opt.n_listen == 0 && ls->n > 0)
                continue; /* [::] already takes IPv4 too */
            srv_log(SRV_LOG_ERR, "cannot listen on %s: address in use or not available", spec);
            goto out;
        }
        fd = socket(addr.addr.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            goto out;
        if (addr.addr.sa.sa_family == AF_INET6)
            (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
        if (bind(fd, &addr.addr.sa, addr.size) != 0) {
            close(fd);
            srv_log(SRV_LOG_ERR, "cannot listen on %s: address in use or not available", spec);
            goto out;
        }
        hold[ls->n] = fd;
        ls->addr[ls->n] = addr;
        ls->spec[ls->n++] = spec;
    }
    rc = ls->n > 0 ? 0 : -1;
out:
    for (int i = 0; i < ls->n; i++)
        close(hold[i]);
    return rc;
}

int main(int argc, char **argv)
{
    struct srv s;
    struct sigaction sa;
    struct listen_set ls;
    struct worker *w = NULL;
    sigset_t block, old;
    int rc = 1, i;
    double start;
    char *bs_uri = NULL;

    memset(&s, 0, sizeof(s));
    if (parse_args(&s.opt, argc, argv) != 0)
        return 2;
    srv_verbosity = s.opt.verbose;
    s.root = normalize_root(s.opt.root);
    if (s.root == NULL) {
        fprintf(stderr, "estc-server: --root must be a path like /est\n");
        return 2;
    }
    if (s.opt.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s.opt.workers = n < 1 ? 1 : n > SRV_MAX_WORKERS ? SRV_MAX_WORKERS : n;
    }
    s.ca.index_fd = -1;
    if (pthread_mutex_init(&s.ca.lock, NULL) != 0)
        return 1;
    {
        const char *l = s.opt.n_listen ? s.opt.listen[0] : "localhost:5684";
        bs_uri = malloc(strlen(l) + 9);
        if (bs_uri == NULL)
            goto out;
        sprintf(bs_uri, "coaps://%s", l);
        s.opt.lwm2m_bs_uri = bs_uri;
    }
    if (!coap_dtls_is_supported()) {
        fprintf(stderr, "estc-server: libcoap has no DTLS support\n");
        goto out;
    }
    s.cache = srv_cache_new();
    if (s.cache == NULL || srv_ca_setup(&s) != 0 || load_csr_attrs(&s) != 0 ||
        setup_stores(&s) != 0 || srv_ca_make_server_creds(&s) != 0 || srv_tls_load_creds(&s) != 0 ||
        srv_est_prepare(&s) != 0)
        goto out;
    warm_certs(&s);

    coap_startup();
    coap_set_log_handler(coap_log_to_stderr);
    {
        /*
         * libcoap 4.3.1's debug lines name sessions through one static
         * buffer (coap_session_str()): with several workers they would
         * write it at once. Its debug log therefore needs --workers 1.
         */
        int coap_debug = s.opt.verbose >= 2 && s.opt.workers == 1;
        if (s.opt.verbose >= 2 && !coap_debug)
            srv_log(SRV_LOG_DEBUG, "libcoap's debug log needs --workers 1; left out");
        coap_set_log_level(coap_debug ? LOG_DEBUG : s.opt.verbose ? LOG_WARNING : LOG_ERR);
        coap_dtls_set_log_level(coap_debug ? LOG_DEBUG : LOG_ERR);
    }
    if (srv_hello_guard_init() != 0) {
        srv_log(SRV_LOG_ERR, "no random bytes for the cookie secret");
        goto out;
    }
    if (resolve_listen(&s, &ls) != 0)
        goto out;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /*
     * The workers start one after the other, each binding its sockets before
     * the next; they never see SIGTERM or SIGINT, which this thread waits for.
     */
    w = calloc((size_t)s.opt.workers, sizeof(*w));
    if (w == NULL)
        goto out;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    for (i = 0; i < s.opt.workers; i++) {
        int st;
        w[i].s = &s;
        w[i].ls = &ls;
        w[i].idx = i;
        pthread_mutex_init(&w[i].mu, NULL);
        pthread_cond_init(&w[i].cv, NULL);
        pthread_sigmask(SIG_BLOCK, &block, &old);
        st = pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (st != 0) {
            srv_log(SRV_LOG_ERR, "cannot start worker %d: %s", i, strerror(st));
            goto stop;
        }
        w[i].started = 1;
        pthread_mutex_lock(&w[i].mu);
        while (w[i].state == 0)
            pthread_cond_wait(&w[i].cv, &w[i].mu);
        st = w[i].state;
        pthread_mutex_unlock(&w[i].mu);
        if (st < 0)
            goto stop;
    }
    for (i = 0; i < ls.n; i++)
        printf("estc-server: listening on coaps://%s/%s\n", ls.spec[i], s.root);
    printf("estc-server: CA certificate: %s\n", s.ca.cert_path);
    fflush(stdout);
    srv_log(SRV_LOG_INFO, "%ld worker(s)", s.opt.workers);

    start = now_s();
    while (!stop_requested && !atomic_load(&worker_failed)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL); /* a signal cuts it short */
        if (s.opt.max_runtime > 0 && now_s() - start >= (double)s.opt.max_runtime) {
            srv_log(SRV_LOG_INFO, "--max-runtime reached");
            break;
        }
    }
    srv_log(SRV_LOG_INFO, "stopping");
    rc = atomic_load(&worker_failed) ? 1 : 0;
stop:
    atomic_store(&workers_stop, 1);
    for (i = 0; w != NULL && i < s.opt.workers; i++) {
        if (w[i].started)
            pthread_join(w[i].thread, NULL);
        if (w[i].s != NULL) {
            pthread_mutex_destroy(&w[i].mu);
            pthread_cond_destroy(&w[i].cv);
        }
    }
    srv_hello_guard_report();
out:
    free(w);
    free(bs_uri);
    coap_cleanup();
    srv_free(&s);
    pthread_mutex_destroy(&s.ca.lock);
    return rc;
}
