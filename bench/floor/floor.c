/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-floor: what one EST enrollment costs a server in OpenSSL alone, with
 * nothing of estc-server, libcoap or CoAP around it. The floor any server
 * built on the same OpenSSL pays per enrollment.
 *
 *   estc-floor --ca-cert CA.pem --ca-key CA.key --server-cert CHAIN.pem
 *              --server-key SERVER.key --client-ca IDEVID-CA.pem
 *              --cert DEVICE.pem --key DEVICE.key [--count N] [--warmup W]
 *              [--tickets]
 *
 * The same credentials as bench/run-load.sh: the server's CA (issues), the
 * server's chain and key (DTLS), the CA the device certificates come from
 * (client authentication) and one device certificate and key. For each
 * enrollment, in one process over a loopback UDP pair:
 *
 *   - a client thread opens a new UDP socket and runs a full DTLS 1.2
 *     handshake (ECDHE P-256, ECDSA P-256 certificates both ways, the
 *     server's chain verified against CA.pem and 127.0.0.1, a cookie
 *     exchange as any DTLS server does against spoofed sources), sends a
 *     DER PKCS#10 CSR of a fresh P-256 key (made before the clock starts)
 *     and reads the certificate back, then sends close_notify;
 *   - the server (the main thread) accepts the handshake, verifying the
 *     client certificate against IDEVID-CA.pem; reads the CSR, parses it and
 *     verifies its signature; issues an X.509 v3 certificate (random 128-bit
 *     serial, the CSR's subject and public key, basicConstraints, keyUsage,
 *     extendedKeyUsage, subject and authority key identifiers, signed
 *     ECDSA-SHA256 by the CA key) and sends it DER encoded; reads the
 *     close_notify and frees the connection.
 *
 * No session ticket is issued (an enrollment does not resume), unless
 * --tickets asks for one per handshake, as OpenSSL's default does.
 *
 * The server's CPU time is its thread's (CLOCK_THREAD_CPUTIME_ID), read
 * between the phases; it prints the time per enrollment and its split:
 * handshake, CSR (parse + verify), issuing (build + sign + encode) and
 * records (the CSR and certificate records, close_notify, SSL_free). The
 * last line, "floor-ms H C I R T", is for scripts.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
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
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static struct {
    const char *ca_cert, *ca_key, *server_cert, *server_key, *client_ca, *cert, *key;
    int count, warmup, tickets;
} opt = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, 500, 20, 0};

static struct sockaddr_in server_addr;
static unsigned char **csrs;
static int *csr_lens;
static unsigned char cookie_secret[32];
static EVP_PKEY *ca_key;
static X509 *ca_cert;
static ASN1_OCTET_STRING *ca_skid;
static pthread_barrier_t ready;

static void die(const char *what)
{
    fprintf(stderr, "estc-floor: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A stateless cookie: HMAC-SHA256 of the peer address. */
static int cookie_of(SSL *ssl, unsigned char *out, unsigned int *out_len)
{
    struct sockaddr_in peer;
    memset(&peer, 0, sizeof(peer));
    if (BIO_dgram_get_peer(SSL_get_rbio(ssl), &peer) <= 0)
        return 0;
    return HMAC(EVP_sha256(), cookie_secret, sizeof(cookie_secret), (unsigned char *)&peer,
                sizeof(peer), out, out_len) != NULL;
}

static int cookie_generate(SSL *ssl, unsigned char *cookie, unsigned int *len)
{
    return cookie_of(ssl, cookie, len);
}

static int cookie_verify(SSL *ssl, const unsigned char *cookie, unsigned int len)
{
    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    return cookie_of(ssl, want, &n) && n == len && CRYPTO_memcmp(want, cookie, n) == 0;
}

static X509 *read_cert(const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (x == NULL)
        die("cannot read a certificate");
    return x;
}

static EVP_PKEY *read_key(const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (k == NULL)
        die("cannot read a key");
    return k;
}

static void common_ctx(SSL_CTX *c)
{
    if (!SSL_CTX_set_min_proto_version(c, DTLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(c, DTLS1_2_VERSION) || !SSL_CTX_set1_groups_list(c, "P-256"))
        die("cannot set the DTLS parameters");
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    if (!opt.tickets)
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
}

static SSL_CTX *server_ctx(void)
{
    SSL_CTX *c = SSL_CTX_new(DTLS_server_method());
    X509_STORE *store;

    if (c == NULL)
        die("SSL_CTX_new");
    common_ctx(c);
    if (SSL_CTX_use_certificate_chain_file(c, opt.server_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(c, opt.server_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c) != 1)
        die("cannot use the server credentials");
    store = SSL_CTX_get_cert_store(c);
    if (X509_STORE_load_file(store, opt.client_ca) != 1)
        die("cannot read --client-ca");
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_options(c, SSL_OP_COOKIE_EXCHANGE);
    SSL_CTX_set_cookie_generate_cb(c, cookie_generate);
    SSL_CTX_set_cookie_verify_cb(c, cookie_verify);
    SSL_CTX_set_read_ahead(c, 1);
    return c;
}

static SSL_CTX *client_ctx(void)
{
    SSL_CTX *c = SSL_CTX_new(DTLS_client_method());

    if (c == NULL)
        die("SSL_CTX_new");
    common_ctx(c);
    if (SSL_CTX_use_certificate_file(c, opt.cert, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(c, opt.key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_file(c, opt.ca_cert) != 1)
        die("cannot use the device credentials");
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    return c;
}

/* A fresh P-256 key and its CSR (CN floor-I), DER. */
static void make_csr(int i)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    char cn[32];

    snprintf(cn, sizeof(cn), "floor-%d", i);
    csrs[i] = NULL;
    if (k == NULL || req == NULL || name == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_REQ_set_subject_name(req, name) || !X509_REQ_set_pubkey(req, k) ||
        X509_REQ_sign(req, k, EVP_sha256()) <= 0 ||
        (csr_lens[i] = i2d_X509_REQ(req, &csrs[i])) <= 0)
        die("cannot make a CSR");
    EVP_PKEY_free(k);
    X509_NAME_free(name);
    X509_REQ_free(req);
}

static void *client_main(void *arg)
{
    SSL_CTX *c = client_ctx();
    int total = *(int *)arg;
    unsigned char buf[4096];

    /* The client's keys and CSRs, before the server's clock starts. */
    for (int i = 0; i < total; i++)
        make_csr(i);
    pthread_barrier_wait(&ready);
    for (int i = 0; i < total; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        BIO *bio;
        SSL *ssl = SSL_new(c);
        struct timeval tv = {10, 0};
        int n;

        if (fd < 0 || ssl == NULL ||
            connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) != 0)
            die("client socket");
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        bio = BIO_new_dgram(fd, BIO_CLOSE);
        if (bio == NULL)
            die("client BIO");
        BIO_ctrl_set_connected(bio, &server_addr);
        SSL_set_bio(ssl, bio, bio);
        if (!SSL_set1_host(ssl, "127.0.0.1"))
            die("SSL_set1_host");
        if (SSL_connect(ssl) != 1)
            die("client handshake");
        if (SSL_write(ssl, csrs[i], csr_lens[i]) != csr_lens[i])
            die("client write");
        n = SSL_read(ssl, buf, sizeof(buf));
        {
            const unsigned char *p = buf;
            X509 *x = n > 0 ? d2i_X509(NULL, &p, n) : NULL;
            if (x == NULL)
                die("no certificate in the answer");
            X509_free(x);
        }
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    SSL_CTX_free(c);
    return NULL;
}

static int add_ext_i2d(X509 *x, int nid, void *value, int crit)
{
    return X509_add1_ext_i2d(x, nid, value, crit, X509V3_ADD_APPEND) == 1;
}

/* The certificate for a verified CSR: what a CA must at least do. */
static X509 *issue(X509_REQ *req)
{
    X509 *x = X509_new();
    X509_PUBKEY *spki = X509_REQ_get_X509_PUBKEY(req);
    const unsigned char *bits;
    int bits_len;
    unsigned char raw[16], md[SHA_DIGEST_LENGTH];
    unsigned int md_len = 0;
    ASN1_INTEGER *serial = NULL;
    BIGNUM *bn = NULL;
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    ASN1_OCTET_STRING *skid = ASN1_OCTET_STRING_new();
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    int ok = 0;

    if (x == NULL || bc == NULL || ku == NULL || eku == NULL || skid == NULL || akid == NULL ||
        RAND_bytes(raw, sizeof(raw)) != 1)
        goto out;
    raw[0] = (unsigned char)((raw[0] & 0x7f) | 0x40);
    bn = BN_bin2bn(raw, sizeof(raw), NULL);
    serial = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    if (serial == NULL || !X509_set_version(x, 2) || !X509_set_serialNumber(x, serial) ||
        !X509_set_subject_name(x, X509_REQ_get_subject_name(req)) ||
        !X509_set_issuer_name(x, X509_get_subject_name(ca_cert)) ||
        X509_gmtime_adj(X509_getm_notBefore(x), -60) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600) == NULL)
        goto out;
    /* The CSR's SubjectPublicKeyInfo as it came: no encoding of the key. */
    {
        ASN1_OBJECT *aobj;
        int ptype;
        const void *pval;
        X509_ALGOR *pa;
        unsigned char *bcopy;
        if (!X509_PUBKEY_get0_param(NULL, &bits, &bits_len, &pa, spki))
            goto out;
        X509_ALGOR_get0((const ASN1_OBJECT **)&aobj, &ptype, &pval, pa);
        if (ptype != V_ASN1_OBJECT)
            goto out;
        bcopy = OPENSSL_memdup(bits, (size_t)bits_len);
        if (bcopy == NULL || !X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), OBJ_dup(aobj), ptype,
                                                     OBJ_dup(pval), bcopy, bits_len))
            goto out;
    }
    bc->ca = 0;
    if (!ASN1_BIT_STRING_set_bit(ku, 0, 1) || !ASN1_BIT_STRING_set_bit(ku, 4, 1) ||
        !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) ||
        !EVP_Digest(bits, (size_t)bits_len, md, &md_len, EVP_sha1(), NULL) ||
        !ASN1_OCTET_STRING_set(skid, md, (int)md_len) ||
        (akid->keyid = ASN1_OCTET_STRING_dup(ca_skid)) == NULL)
        goto out;
    if (!add_ext_i2d(x, NID_basic_constraints, bc, 1) || !add_ext_i2d(x, NID_key_usage, ku, 1) ||
        !add_ext_i2d(x, NID_ext_key_usage, eku, 0) ||
        !add_ext_i2d(x, NID_subject_key_identifier, skid, 0) ||
        !add_ext_i2d(x, NID_authority_key_identifier, akid, 0))
        goto out;
    if (X509_sign(x, ca_key, EVP_sha256()) <= 0)
        goto out;
    ok = 1;
out:
    BN_free(bn);
    ASN1_INTEGER_free(serial);
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_free(eku);
    ASN1_OCTET_STRING_free(skid);
    AUTHORITY_KEYID_free(akid);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

enum { PH_HANDSHAKE, PH_CSR, PH_ISSUE, PH_RECORDS, PH_N };

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"ca-cert", required_argument, NULL, 'a'},
                                             {"ca-key", required_argument, NULL, 'b'},
                                             {"server-cert", required_argument, NULL, 's'},
                                             {"server-key", required_argument, NULL, 'S'},
                                             {"client-ca", required_argument, NULL, 'C'},
                                             {"cert", required_argument, NULL, 'c'},
                                             {"key", required_argument, NULL, 'k'},
                                             {"count", required_argument, NULL, 'n'},
                                             {"warmup", required_argument, NULL, 'w'},
                                             {"tickets", no_argument, NULL, 't'},
                                             {NULL, 0, NULL, 0}};
    double sum[PH_N] = {0};
    struct rusage ru0, ru1;
    SSL_CTX *sctx;
    pthread_t client;
    socklen_t alen = sizeof(server_addr);
    int fd, total, o;
    BIO *bio;

    while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (o) {
        case 'a':
            opt.ca_cert = optarg;
            break;
        case 'b':
            opt.ca_key = optarg;
            break;
        case 's':
            opt.server_cert = optarg;
            break;
        case 'S':
            opt.server_key = optarg;
            break;
        case 'C':
            opt.client_ca = optarg;
            break;
        case 'c':
            opt.cert = optarg;
            break;
        case 'k':
            opt.key = optarg;
            break;
        case 'n':
            opt.count = atoi(optarg);
            break;
        case 'w':
            opt.warmup = atoi(optarg);
            break;
        case 't':
            opt.tickets = 1;
            break;
        default:
            return 2;
        }
    }
    if (!opt.ca_cert || !opt.ca_key || !opt.server_cert || !opt.server_key || !opt.client_ca ||
        !opt.cert || !opt.key || opt.count <= 0 || opt.warmup < 0) {
        fprintf(stderr, "usage: estc-floor --ca-cert CA.pem --ca-key CA.key --server-cert "
                        "CHAIN.pem --server-key KEY\n"
                        "       --client-ca IDEVID-CA.pem --cert DEVICE.pem --key DEVICE.key "
                        "[--count N] [--warmup W] [--tickets]\n");
        return 2;
    }
    total = opt.warmup + opt.count;
    ca_cert = read_cert(opt.ca_cert);
    ca_key = read_key(opt.ca_key);
    ca_skid = X509_get_ext_d2i(ca_cert, NID_subject_key_identifier, NULL, NULL);
    if (ca_skid == NULL || X509_check_private_key(ca_cert, ca_key) != 1)
        die("the CA certificate has no subject key identifier or does not match the key");
    if (RAND_bytes(cookie_secret, sizeof(cookie_secret)) != 1)
        die("RAND_bytes");
    csrs = calloc((size_t)total, sizeof(*csrs));
    csr_lens = calloc((size_t)total, sizeof(*csr_lens));
    if (csrs == NULL || csr_lens == NULL)
        die("out of memory");
    sctx = server_ctx();

    fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&server_addr, 0, sizeof(server_addr));
    server_addr.sin_family = AF_INET;
    server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) != 0 ||
        getsockname(fd, (struct sockaddr *)&server_addr, &alen) != 0)
        die("server socket");
    {
        struct timeval tv = {10, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    if (pthread_barrier_init(&ready, NULL, 2) != 0 ||
        pthread_create(&client, NULL, client_main, &total) != 0)
        die("pthread_create");
    pthread_barrier_wait(&ready);

    for (int i = 0; i < total; i++) {
        unsigned char buf[4096];
        if (i == opt.warmup)
            getrusage(RUSAGE_THREAD, &ru0);
        const unsigned char *p;
        unsigned char *der = NULL;
        X509_REQ *req;
        EVP_PKEY *pub;
        X509 *x;
        SSL *ssl;
        double t[6]; /* the clock before, between and after the phases */
        int n, der_len;

        t[0] = thread_cpu();
        ssl = SSL_new(sctx);
        bio = BIO_new_dgram(fd, BIO_NOCLOSE);
        if (ssl == NULL || bio == NULL)
            die("server SSL");
        SSL_set_bio(ssl, bio, bio);
        if (SSL_accept(ssl) != 1) {
            /* The cookie exchange: the first ClientHello is answered statelessly. */
            if (SSL_get_error(ssl, 0) != SSL_ERROR_WANT_READ || SSL_accept(ssl) != 1)
                die("server handshake");
        }
        t[1] = thread_cpu();
        n = SSL_read(ssl, buf, sizeof(buf));
        if (n <= 0)
            die("server read");
        t[2] = thread_cpu();
        p = buf;
        req = d2i_X509_REQ(NULL, &p, n);
        pub = req ? X509_REQ_get0_pubkey(req) : NULL;
        if (pub == NULL || p != buf + n || X509_REQ_verify(req, pub) != 1)
            die("CSR does not verify");
        t[3] = thread_cpu();
        x = issue(req);
        der_len = x ? i2d_X509(x, &der) : -1;
        if (der_len <= 0)
            die("issuing failed");
        t[4] = thread_cpu();
        if (SSL_write(ssl, der, der_len) != der_len)
            die("server write");
        if (SSL_read(ssl, buf, sizeof(buf)) != 0 || SSL_get_error(ssl, 0) != SSL_ERROR_ZERO_RETURN)
            die("no close_notify");
        SSL_shutdown(ssl);
        SSL_free(ssl);
        OPENSSL_free(der);
        X509_free(x);
        X509_REQ_free(req);
        t[5] = thread_cpu();
        if (i >= opt.warmup) {
            sum[PH_HANDSHAKE] += t[1] - t[0];
            sum[PH_RECORDS] += (t[2] - t[1]) + (t[5] - t[4]);
            sum[PH_CSR] += t[3] - t[2];
            sum[PH_ISSUE] += t[4] - t[3];
        }
    }
    getrusage(RUSAGE_THREAD, &ru1);
    pthread_join(client, NULL);
    {
        double n = opt.count, all = 0;
        for (int k = 0; k < PH_N; k++)
            all += sum[k];
        printf("enrollments          %d (after %d warm-up)\n", opt.count, opt.warmup);
        printf("server CPU           %.3f ms per enrollment\n", 1e3 * all / n);
        printf("  handshake          %.3f ms\n", 1e3 * sum[PH_HANDSHAKE] / n);
        printf("  CSR parse+verify   %.3f ms\n", 1e3 * sum[PH_CSR] / n);
        printf("  issuing            %.3f ms\n", 1e3 * sum[PH_ISSUE] / n);
        printf("  records            %.3f ms\n", 1e3 * sum[PH_RECORDS] / n);
        printf("system time          %.3f ms of it (the socket calls)\n",
               1e3 *
                   ((double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                    (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) * 1e-6) /
                   n);
        printf("floor-ms %.4f %.4f %.4f %.4f %.4f\n", 1e3 * sum[PH_HANDSHAKE] / n,
               1e3 * sum[PH_CSR] / n, 1e3 * sum[PH_ISSUE] / n, 1e3 * sum[PH_RECORDS] / n,
               1e3 * all / n);
    }
    for (int i = 0; i < total; i++)
        OPENSSL_free(csrs[i]);
    free(csrs);
    free(csr_lens);
    SSL_CTX_free(sctx);
    close(fd);
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    ASN1_OCTET_STRING_free(ca_skid);
    return 0;
}
