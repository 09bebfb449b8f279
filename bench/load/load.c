/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-load: many concurrent EST-coaps clients against one estc-server, for
 * its throughput (bench/run-load.sh) and for the server's concurrency test.
 *
 *   estc-load --port PORT --ca CA.pem --cert DEVICE.pem --key DEVICE.key
 *             [--host 127.0.0.1] [--root est] [--clients C] [--count N]
 *             [--server-pid PID] [--op-times SIGN_US,VERIFY_US,ECDH_US]
 *             [--max-seconds S] [--same-session K] [--no-ticket] [--accept CF]
 *
 * C threads each run enrollments one after the other until N are done. An
 * enrollment is a DTLS 1.2 handshake of its own (new UDP socket, so a new
 * source port; device certificate; server certificate verified against
 * CA.pem and 127.0.0.1; ECDHE on P-256), then POST /ROOT/sen with a CSR of
 * a fresh P-256 key (made before the clock starts), then the issued
 * certificate checked: signed by the CA and for that key. With
 * --same-session K the session then enrolls K more times (re-enrollment on
 * the same session). A 5.03 answer is retried after its Max-Age. With
 * --no-ticket the clients do not ask for a session ticket (none resumes), so
 * the server's handshake has no NewSessionTicket to make. --accept 281 asks
 * for the certificate in a PKCS#7 certs-only (what the estc library asks
 * by default) instead of 287 (the DER certificate).
 *
 * Prints enrollments/s, p50 and p99 latency, the busy share of each CPU
 * (/proc/stat), the CPU time of the server (/proc/PID/stat) and of this
 * program per enrollment, and the crypto bound of the server: cores /
 * (2 ECDSA P-256 signs + 3 verifies + 1 ECDH), with times given by
 * --op-times (from `openssl speed`) or measured here. Exits 1 when an
 * enrollment failed, a certificate did not check, or two certificates had
 * the same serial number. Loopback only by intent: HOST must be 127.0.0.0/8.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define MAX_CPUS 64

struct job {
    EVP_PKEY *key;
    unsigned char *csr; /* DER */
    int csr_len;
    double latency; /* seconds, of the first enrollment; <0: failed */
    char serial[80];
};

static struct {
    const char *host, *root, *ca, *cert, *key;
    int port, clients, count, same_session, no_ticket, accept;
    long server_pid;
    double max_seconds;
    double t_sign, t_verify, t_ecdh; /* seconds; 0: measure */
} opt = {"127.0.0.1", "est", NULL, NULL, NULL, 0, 16, 200, 0, 0, 287, 0, 120, 0, 0, 0};

static struct job *jobs;
static atomic_int next_job;
static atomic_int n_failed, n_retried, n_reenrolled;
/* Each client thread has its own: nothing of OpenSSL's is shared between them. */
static _Thread_local SSL_CTX *ctx;
static EVP_PKEY *ca_pub;
static struct sockaddr_in server;
static pthread_barrier_t barrier;
static double deadline;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *what, long i)
{
    char e[256] = "";
    unsigned long code = ERR_get_error();
    if (code != 0)
        ERR_error_string_n(code, e, sizeof(e));
    fprintf(stderr, "estc-load: enrollment %ld: %s %s\n", i, what, e);
    ERR_clear_error();
}

/* A fresh P-256 key and a CSR (CN load-I) for it. */
static int make_job(struct job *j, int i)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    char cn[32];
    unsigned char *der = NULL;
    int ok = 0;

    j->key = EVP_EC_gen("P-256");
    snprintf(cn, sizeof(cn), "load-%d", i);
    if (req == NULL || name == NULL || j->key == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_REQ_set_subject_name(req, name) || !X509_REQ_set_pubkey(req, j->key) ||
        X509_REQ_sign(req, j->key, EVP_sha256()) <= 0)
        goto out;
    j->csr_len = i2d_X509_REQ(req, &der);
    if (j->csr_len <= 0 || j->csr_len > 1000)
        goto out;
    j->csr = der;
    der = NULL;
    ok = 1;
out:
    OPENSSL_free(der);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return ok ? 0 : -1;
}

/* CoAP CON POST /ROOT/sen, Content-Format 286, Accept 287 or 281, CSR as payload. */
static size_t coap_request(uint8_t *out, size_t cap, uint16_t mid, const uint8_t tok[4],
                           const struct job *j)
{
    size_t n = 0, rl = strlen(opt.root);
    if (rl > 12 || 40 + (size_t)j->csr_len > cap)
        return 0;
    out[n++] = 0x44; /* version 1, CON, token length 4 */
    out[n++] = 0x02; /* POST */
    out[n++] = (uint8_t)(mid >> 8);
    out[n++] = (uint8_t)mid;
    memcpy(out + n, tok, 4);
    n += 4;
    out[n++] = (uint8_t)(0xb0 | rl); /* Uri-Path (11) */
    memcpy(out + n, opt.root, rl);
    n += rl;
    out[n++] = 0x03; /* Uri-Path */
    memcpy(out + n, "sen", 3);
    n += 3;
    out[n++] = 0x12; /* Content-Format (12): 286 */
    out[n++] = 0x01;
    out[n++] = 0x1e;
    out[n++] = 0x52; /* Accept (17): 287 or 281, two bytes */
    out[n++] = (uint8_t)(opt.accept >> 8);
    out[n++] = (uint8_t)opt.accept;
    out[n++] = 0xff;
    memcpy(out + n, j->csr, (size_t)j->csr_len);
    return n + (size_t)j->csr_len;
}

/*
 * Parses a response to (mid, tok): 0 with the code and payload, -1 when it
 * is not one. Max-Age (14) is returned for a 5.03.
 */
static int coap_response(const uint8_t *b, size_t n, uint16_t mid, const uint8_t tok[4], int *code,
                         const uint8_t **pl, size_t *pl_len, unsigned *max_age)
{
    size_t p;
    unsigned opt_num = 0;

    if (n < 8 || (b[0] >> 6) != 1 || (b[0] & 0x0f) != 4 || memcmp(b + 4, tok, 4) != 0)
        return -1;
    if (((b[0] >> 4) & 3) == 2 && (((unsigned)b[2] << 8) | b[3]) != mid)
        return -1; /* an ACK of something else */
    *code = b[1];
    *pl = NULL;
    *pl_len = 0;
    *max_age = 60;
    p = 8;
    while (p < n && b[p] != 0xff) {
        unsigned d = b[p] >> 4, l = b[p] & 0x0f;
        p++;
        if (d == 13) {
            if (p >= n)
                return -1;
            d = 13u + b[p++];
        } else if (d == 14) {
            if (p + 1 >= n)
                return -1;
            d = 269u + (((unsigned)b[p] << 8) | b[p + 1]);
            p += 2;
        } else if (d == 15) {
            return -1;
        }
        if (l == 13) {
            if (p >= n)
                return -1;
            l = 13u + b[p++];
        } else if (l == 14) {
            if (p + 1 >= n)
                return -1;
            l = 269u + (((unsigned)b[p] << 8) | b[p + 1]);
            p += 2;
        } else if (l == 15) {
            return -1;
        }
        if (p + l > n)
            return -1;
        opt_num += d;
        if (opt_num == 14) {
            *max_age = 0;
            for (unsigned k = 0; k < l; k++)
                *max_age = (*max_age << 8) | b[p + k];
        }
        if (opt_num == 23 && l > 0 && (b[p + l - 1] & 0x08))
            return -2; /* Block2 with more to come: the bench wants one datagram */
        p += l;
    }
    if (p < n) {
        *pl = b + p + 1;
        *pl_len = n - p - 1;
    }
    return 0;
}

/* One POST /sen on the session and its answer checked. 0 on success. */
static int enroll_on(SSL *ssl, struct job *j, long idx, uint16_t *mid)
{
    uint8_t req[1200], resp[2048], tok[4];

    for (int attempt = 0; attempt < 8; attempt++) {
        size_t rl;
        int tries = 0, got = 0, code = 0;
        const uint8_t *pl = NULL;
        size_t pl_len = 0;
        unsigned max_age = 0;

        (*mid)++;
        if (RAND_bytes(tok, sizeof(tok)) != 1)
            return -1;
        rl = coap_request(req, sizeof(req), *mid, tok, j);
        if (rl == 0)
            return -1;
        /* CoAP retransmission: 2 s, then doubling, 4 retransmissions. */
        while (!got && tries < 5) {
            struct timeval tv = {2 << tries, 0};
            if (SSL_write(ssl, req, (int)rl) != (int)rl) {
                fail("write", idx);
                return -1;
            }
            BIO_ctrl(SSL_get_rbio(ssl), BIO_CTRL_DGRAM_SET_RECV_TIMEOUT, 0, &tv);
            for (;;) {
                int n = SSL_read(ssl, resp, sizeof(resp));
                int r;
                if (n <= 0) {
                    ERR_clear_error();
                    break; /* timeout: retransmit */
                }
                r = coap_response(resp, (size_t)n, *mid, tok, &code, &pl, &pl_len, &max_age);
                if (r == -2) {
                    fail("answer in blocks (give the server --block-size 1024)", idx);
                    return -1;
                }
                if (r == 0 && code == 0 && pl_len == 0)
                    continue; /* an empty ACK: the answer comes separately */
                if (r == 0) {
                    got = 1;
                    break;
                }
            }
            tries++;
        }
        if (!got) {
            fail("no answer", idx);
            return -1;
        }
        if (code == 0xa3) { /* 5.03: come back after Max-Age */
            struct timespec ts = {max_age, 0};
            atomic_fetch_add(&n_retried, 1);
            nanosleep(&ts, NULL);
            continue;
        }
        if (code != 0x44 && code != 0x41) { /* 2.04 (RFC 9148), 2.01 */
            char what[64];
            snprintf(what, sizeof(what), "answer %d.%02d", code >> 5, code & 31);
            fail(what, idx);
            return -1;
        }
        {
            const unsigned char *p = pl;
            X509 *x = NULL;
            const ASN1_INTEGER *sn;
            BIGNUM *bn;
            char *hex;
            int ok;
            if (opt.accept == 287) {
                x = d2i_X509(NULL, &p, (long)pl_len);
            } else { /* a PKCS#7 certs-only with the one certificate */
                PKCS7 *p7 = d2i_PKCS7(NULL, &p, (long)pl_len);
                STACK_OF(X509) *certs =
                    p7 != NULL && PKCS7_type_is_signed(p7) ? p7->d.sign->cert : NULL;
                if (sk_X509_num(certs) == 1) {
                    x = sk_X509_value(certs, 0);
                    X509_up_ref(x);
                }
                PKCS7_free(p7);
            }
            ok = x != NULL && p == pl + pl_len && X509_verify(x, ca_pub) == 1 &&
                 EVP_PKEY_eq(X509_get0_pubkey(x), j->key) == 1;
            if (!ok) {
                X509_free(x);
                fail("issued certificate does not check", idx);
                return -1;
            }
            sn = X509_get0_serialNumber(x);
            bn = ASN1_INTEGER_to_BN(sn, NULL);
            hex = bn ? BN_bn2hex(bn) : NULL;
            if (hex != NULL)
                snprintf(j->serial, sizeof(j->serial), "%s", hex);
            OPENSSL_free(hex);
            BN_free(bn);
            X509_free(x);
            return hex != NULL ? 0 : -1;
        }
    }
    fail("still 5.03 after 8 tries", idx);
    return -1;
}

/* The client's DTLS settings: device credentials, the CA, ECDHE on P-256. */
static SSL_CTX *new_ctx(void)
{
    SSL_CTX *c = SSL_CTX_new(DTLS_client_method());
    if (c == NULL || SSL_CTX_use_certificate_chain_file(c, opt.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(c, opt.key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(c, opt.ca, NULL) != 1 ||
        SSL_CTX_set1_groups_list(c, "P-256") != 1) {
        fprintf(stderr, "estc-load: cannot use --cert/--key/--ca\n");
        ERR_print_errors_fp(stderr);
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    if (opt.no_ticket)
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    return c;
}

static double one_enrollment(long idx)
{
    struct job *j = &jobs[idx];
    double t0 = now_s(), lat = -1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    SSL *ssl = NULL;
    BIO *bio;
    uint16_t mid = (uint16_t)(idx * 97);

    if (fd < 0 || connect(fd, (struct sockaddr *)&server, sizeof(server)) != 0) {
        fail("socket", idx);
        goto out;
    }
    ssl = SSL_new(ctx);
    bio = BIO_new_dgram(fd, BIO_NOCLOSE);
    if (ssl == NULL || bio == NULL) {
        BIO_free(bio);
        goto out;
    }
    BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, &server);
    SSL_set_bio(ssl, bio, bio);
    if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), opt.host)) {
        fail("server address", idx);
        goto out;
    }
    {
        struct timeval tv = {10, 0};
        BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_RECV_TIMEOUT, 0, &tv);
    }
    if (SSL_connect(ssl) != 1) {
        fail("handshake", idx);
        goto out;
    }
    if (enroll_on(ssl, j, idx, &mid) != 0)
        goto out;
    lat = now_s() - t0;
    /* Re-enrollments on the same session: the session must stay with its worker. */
    for (int k = 0; k < opt.same_session; k++) {
        char first[80];
        memcpy(first, j->serial, sizeof(first));
        if (enroll_on(ssl, j, idx, &mid) != 0) {
            lat = -1;
            goto out;
        }
        atomic_fetch_add(&n_reenrolled, 1);
        memcpy(j->serial, first, sizeof(first));
    }
    SSL_shutdown(ssl); /* close_notify: the server frees the session now */
out:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    return lat;
}

static void *client_thread(void *arg)
{
    long t = (long)(intptr_t)arg;
    ctx = new_ctx();
    if (ctx == NULL)
        exit(2);
    /* Keys and CSRs first, outside the timed part. */
    for (long i = t; i < opt.count; i += opt.clients) {
        if (make_job(&jobs[i], (int)i) != 0) {
            fprintf(stderr, "estc-load: cannot make key and CSR %ld\n", i);
            exit(2);
        }
    }
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier); /* the clock runs */
    for (;;) {
        int i = atomic_fetch_add(&next_job, 1);
        if (i >= opt.count)
            break;
        if (now_s() > deadline) {
            jobs[i].latency = -1;
            atomic_fetch_add(&n_failed, 1);
            continue;
        }
        jobs[i].latency = one_enrollment(i);
        if (jobs[i].latency < 0)
            atomic_fetch_add(&n_failed, 1);
    }
    SSL_CTX_free(ctx);
    return NULL;
}

/* Busy and total jiffies of each CPU; returns the number of CPUs. */
static int cpu_sample(unsigned long long busy[MAX_CPUS], unsigned long long total[MAX_CPUS])
{
    FILE *f = fopen("/proc/stat", "r");
    char line[512];
    int n = 0;
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL && n < MAX_CPUS) {
        unsigned long long v[10] = {0};
        int c;
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9')
            continue;
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &c, &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]) < 9)
            continue;
        total[n] = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        busy[n] = total[n] - v[3] - v[4]; /* less idle and iowait */
        n++;
    }
    fclose(f);
    return n;
}

/* utime + stime of a process, in seconds; <0 when unknown. */
static double proc_cpu(long pid)
{
    char path[64], buf[2048], *p;
    FILE *f;
    unsigned long ut = 0, st = 0;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the name may hold spaces */
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Seconds per ECDSA P-256 sign, verify and ECDH, timed here on one core. */
static int measure_ops(double *t_sign, double *t_verify, double *t_ecdh)
{
    EVP_PKEY *a = EVP_EC_gen("P-256"), *b = EVP_EC_gen("P-256");
    unsigned char msg[32] = {0}, sig[80], sec[32];
    size_t sl = sizeof(sig), kl;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    double t0;
    int n, ok = -1;

    if (a == NULL || b == NULL || md == NULL)
        goto out;
    t0 = now_s();
    for (n = 0; now_s() - t0 < 0.5; n++) {
        sl = sizeof(sig);
        if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, a) != 1 ||
            EVP_DigestSign(md, sig, &sl, msg, sizeof(msg)) != 1)
            goto out;
    }
    *t_sign = (now_s() - t0) / n;
    t0 = now_s();
    for (n = 0; now_s() - t0 < 0.5; n++) {
        if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, a) != 1 ||
            EVP_DigestVerify(md, sig, sl, msg, sizeof(msg)) != 1)
            goto out;
    }
    *t_verify = (now_s() - t0) / n;
    t0 = now_s();
    for (n = 0; now_s() - t0 < 0.5; n++) {
        EVP_PKEY_CTX *dc = EVP_PKEY_CTX_new(a, NULL);
        kl = sizeof(sec);
        if (dc == NULL || EVP_PKEY_derive_init(dc) != 1 || EVP_PKEY_derive_set_peer(dc, b) != 1 ||
            EVP_PKEY_derive(dc, sec, &kl) != 1) {
            EVP_PKEY_CTX_free(dc);
            goto out;
        }
        EVP_PKEY_CTX_free(dc);
    }
    *t_ecdh = (now_s() - t0) / n;
    ok = 0;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    return ok;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void usage(void)
{
    fputs("usage: estc-load --port PORT --ca CA.pem --cert DEVICE.pem --key DEVICE.key\n"
          "       [--host 127.0.0.1] [--root est] [--clients C] [--count N]\n"
          "       [--server-pid PID] [--op-times SIGN_US,VERIFY_US,ECDH_US]\n"
          "       [--max-seconds S] [--same-session K] [--no-ticket] [--accept 281|287]\n",
          stderr);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"host", required_argument, NULL, 'H'},
                                       {"port", required_argument, NULL, 'p'},
                                       {"root", required_argument, NULL, 'r'},
                                       {"ca", required_argument, NULL, 'a'},
                                       {"cert", required_argument, NULL, 'c'},
                                       {"key", required_argument, NULL, 'k'},
                                       {"clients", required_argument, NULL, 'C'},
                                       {"count", required_argument, NULL, 'n'},
                                       {"server-pid", required_argument, NULL, 'P'},
                                       {"op-times", required_argument, NULL, 'o'},
                                       {"max-seconds", required_argument, NULL, 'm'},
                                       {"same-session", required_argument, NULL, 's'},
                                       {"no-ticket", no_argument, NULL, 'T'},
                                       {"accept", required_argument, NULL, 'A'},
                                       {NULL, 0, NULL, 0}};
    unsigned long long b0[MAX_CPUS], t0[MAX_CPUS], b1[MAX_CPUS], t1[MAX_CPUS];
    pthread_t *th;
    double start, elapsed, srv0 = -1, srv1 = -1, me0, me1, *lat, per_enroll, bound;
    int c, ncpu, ok = 0, dup = 0;
    long ncores = sysconf(_SC_NPROCESSORS_ONLN);
    char **serials;
    struct in_addr ia;

    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 'r':
            opt.root = optarg;
            break;
        case 'a':
            opt.ca = optarg;
            break;
        case 'c':
            opt.cert = optarg;
            break;
        case 'k':
            opt.key = optarg;
            break;
        case 'C':
            opt.clients = atoi(optarg);
            break;
        case 'n':
            opt.count = atoi(optarg);
            break;
        case 'P':
            opt.server_pid = atol(optarg);
            break;
        case 'o':
            if (sscanf(optarg, "%lf,%lf,%lf", &opt.t_sign, &opt.t_verify, &opt.t_ecdh) != 3) {
                usage();
                return 2;
            }
            opt.t_sign /= 1e6;
            opt.t_verify /= 1e6;
            opt.t_ecdh /= 1e6;
            break;
        case 'm':
            opt.max_seconds = atof(optarg);
            break;
        case 's':
            opt.same_session = atoi(optarg);
            break;
        case 'T':
            opt.no_ticket = 1;
            break;
        case 'A':
            opt.accept = atoi(optarg);
            break;
        default:
            usage();
            return 2;
        }
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.ca == NULL || opt.cert == NULL ||
        opt.key == NULL || opt.clients < 1 || opt.clients > 1024 || opt.count < 1 ||
        opt.count > 1000000 || opt.same_session < 0 || (opt.accept != 281 && opt.accept != 287) ||
        optind != argc) {
        usage();
        return 2;
    }
    if (inet_pton(AF_INET, opt.host, &ia) != 1 || (ntohl(ia.s_addr) >> 24) != 127) {
        fprintf(stderr, "estc-load: --host must be a 127.0.0.0/8 address\n");
        return 2;
    }
    memset(&server, 0, sizeof(server));
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)opt.port);
    server.sin_addr = ia;
    if (opt.clients > opt.count)
        opt.clients = opt.count;

    ctx = new_ctx();
    if (ctx == NULL)
        return 2;
    {
        FILE *f = fopen(opt.ca, "r");
        X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
        if (f != NULL)
            fclose(f);
        ca_pub = x ? X509_get_pubkey(x) : NULL;
        X509_free(x);
        if (ca_pub == NULL) {
            fprintf(stderr, "estc-load: cannot read --ca %s\n", opt.ca);
            return 2;
        }
    }
    if (opt.t_sign <= 0 && measure_ops(&opt.t_sign, &opt.t_verify, &opt.t_ecdh) != 0) {
        fprintf(stderr, "estc-load: cannot time the P-256 operations\n");
        return 2;
    }

    jobs = calloc((size_t)opt.count, sizeof(*jobs));
    th = calloc((size_t)opt.clients, sizeof(*th));
    lat = calloc((size_t)opt.count, sizeof(*lat));
    serials = calloc((size_t)opt.count, sizeof(*serials));
    if (jobs == NULL || th == NULL || lat == NULL || serials == NULL ||
        pthread_barrier_init(&barrier, NULL, (unsigned)opt.clients + 1) != 0)
        return 2;
    for (long i = 0; i < opt.clients; i++) {
        if (pthread_create(&th[i], NULL, client_thread, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "estc-load: cannot start client thread %ld\n", i);
            return 2;
        }
    }
    pthread_barrier_wait(&barrier); /* keys and CSRs are made */
    ncpu = cpu_sample(b0, t0);
    if (opt.server_pid > 0)
        srv0 = proc_cpu(opt.server_pid);
    me0 = self_cpu();
    start = now_s();
    deadline = start + opt.max_seconds;
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < opt.clients; i++)
        pthread_join(th[i], NULL);
    elapsed = now_s() - start;
    me1 = self_cpu();
    if (opt.server_pid > 0)
        srv1 = proc_cpu(opt.server_pid);
    if (cpu_sample(b1, t1) != ncpu)
        ncpu = 0;

    for (int i = 0; i < opt.count; i++) {
        if (jobs[i].latency >= 0) {
            lat[ok] = jobs[i].latency;
            serials[ok++] = jobs[i].serial;
        }
    }
    qsort(lat, (size_t)ok, sizeof(*lat), cmp_double);
    qsort(serials, (size_t)ok, sizeof(*serials), cmp_str);
    for (int i = 1; i < ok; i++)
        dup += strcmp(serials[i - 1], serials[i]) == 0;

    per_enroll = 2 * opt.t_sign + 3 * opt.t_verify + opt.t_ecdh;
    bound = (double)ncores / per_enroll;
    printf("enrollments          %d ok, %d failed, %d after 5.03, %d re-enrollments on the "
           "same session\n",
           ok, atomic_load(&n_failed), atomic_load(&n_retried), atomic_load(&n_reenrolled));
    printf("concurrent clients   %d\n", opt.clients);
    printf("unique serials       %s (%d duplicate(s))\n", dup ? "NO" : "yes", dup);
    printf("elapsed              %.2f s\n", elapsed);
    printf("enrollments/s        %.1f\n", ok / elapsed);
    if (ok > 0)
        printf("latency p50 / p99    %.1f ms / %.1f ms\n", 1e3 * lat[(ok - 1) / 2],
               1e3 * lat[(int)((ok - 1) * 0.99)]);
    for (int i = 0; i < ncpu; i++) {
        unsigned long long dt = t1[i] - t0[i];
        printf("cpu%-2d busy           %.0f %%\n", i,
               dt ? 100.0 * (double)(b1[i] - b0[i]) / (double)dt : 0.0);
    }
    if (srv0 >= 0 && srv1 >= 0 && ok > 0)
        printf("server CPU           %.3f ms per enrollment (%.2f cores)\n",
               1e3 * (srv1 - srv0) / ok, (srv1 - srv0) / elapsed);
    if (ok > 0)
        printf("load generator CPU   %.3f ms per enrollment (%.2f cores)\n", 1e3 * (me1 - me0) / ok,
               (me1 - me0) / elapsed);
    printf("P-256 op times       sign %.1f us, verify %.1f us, ECDH %.1f us\n", 1e6 * opt.t_sign,
           1e6 * opt.t_verify, 1e6 * opt.t_ecdh);
    printf("crypto/enrollment    %.3f ms (2 sign + 3 verify + 1 ECDH)\n", 1e3 * per_enroll);
    printf("bound                %.1f enrollments/s (%ld cores)\n", bound, ncores);
    printf("achieved / bound     %.1f %%\n", 100.0 * ok / elapsed / bound);
    if (srv0 >= 0 && srv1 >= 0 && ok > 0) {
        double per = (srv1 - srv0) / ok;
        printf("server-CPU rate      %.1f enrollments/s with %ld cores to itself = %.1f %% of "
               "bound\n",
               (double)ncores / per, ncores, 100.0 * per_enroll / per);
    }
    for (int i = 0; i < opt.count; i++) {
        EVP_PKEY_free(jobs[i].key);
        OPENSSL_free(jobs[i].csr);
    }
    free(jobs);
    free(th);
    free(lat);
    free(serials);
    EVP_PKEY_free(ca_pub);
    SSL_CTX_free(ctx);
    return ok == opt.count && dup == 0 ? 0 : 1;
}
