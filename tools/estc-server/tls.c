/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DTLS details that libcoap 4.3.1 leaves to the application: sending the
 * whole server chain, asking for a client certificate without failing the
 * handshake (so unauthorized clients get a CoAP 4.01/4.03 rather than a
 * silent handshake failure), verifying the client against our own stores,
 * the tls-unique value for the proof-of-possession check, and the ClientHello
 * guard (a stateless cookie exchange in front of libcoap's session table).
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

static int verdict_idx = -1; /* SSL ex_data: struct verdict, see srv_tls_peer_verified() */
static void verdict_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp);

/* Accept whatever the client shows; the EST handlers decide per resource. */
static int accept_any_cb(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok;
    (void)ctx;
    return 1;
}

/*
 * The server credentials on one handshake, from the objects parsed once at
 * start (srv_tls_load_creds): OpenSSL 3.0 takes far longer to read a PEM
 * key and certificates than to do the handshake's signatures.
 */
static int use_creds(SSL *ssl, struct srv *s)
{
    if (SSL_use_certificate(ssl, s->server_cert) != 1 ||
        SSL_use_PrivateKey(ssl, s->server_key) != 1 || SSL_set1_chain(ssl, s->server_chain) != 1) {
        srv_log_ssl_errors("server credentials");
        return 0;
    }
    SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any_cb);
    SSL_set_verify_depth(ssl, SRV_VERIFY_DEPTH + 2);
    /* No session ticket: EST clients enroll and go, and OpenSSL would
     * otherwise make and encrypt a ticket at every handshake that offers the
     * extension (15 % of the server's instructions). Set before the
     * ClientHello's extensions are read, so none is promised; the session
     * cache is off too (srv_hello_guard_take_cookies()), so nothing resumes. */
    SSL_set_options(ssl, SSL_OP_NO_TICKET);
    return 1;
}

int srv_tls_setup_cb(void *tls_session, coap_dtls_pki_t *setup_data)
{
    SSL *ssl = tls_session;
    /* The CN callback's argument rides along in libcoap's copy of the setup. */
    struct srv *s = setup_data ? setup_data->cn_call_back_arg : NULL;

    if (ssl == NULL || s == NULL)
        return 0;
    /* libcoap 4.3.1 sends only the first certificate of the PEM file: the whole chain. */
    return use_creds(ssl, s);
}

/*
 * In place of libcoap's ClientHello callback, which loads the credentials
 * from their PEM files again at every handshake (setup_pki_ssl) before
 * calling srv_tls_setup_cb(): the same settings from the parsed objects.
 */
static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
    const unsigned char *out;
    size_t outlen;

    /* As libcoap: X.509 must be among the client certificate types offered (RFC 7250). */
    if (SSL_client_hello_get0_ext(ssl, 19 /* client_certificate_type */, &out, &outlen)) {
        int x509 = 0;
        for (size_t i = 0; i < outlen; i++)
            x509 |= out[i] == 0 && outlen >= 2;
        if (!x509) {
            *al = SSL_AD_UNSUPPORTED_EXTENSION;
            return SSL_CLIENT_HELLO_ERROR;
        }
    }
    if (!use_creds(ssl, arg)) {
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

int srv_tls_load_creds(struct srv *s)
{
    BIO *b = BIO_new_file(s->server_cert_path, "r");
    X509 *x;

    verdict_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, verdict_free);
    if (verdict_idx < 0)
        goto fail;
    s->server_chain = sk_X509_new_null();
    if (b == NULL || s->server_chain == NULL)
        goto fail;
    s->server_cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(s->server_chain, x)) {
            X509_free(x);
            goto fail;
        }
    }
    ERR_clear_error(); /* the end of the file reads as an error */
    BIO_free(b);
    b = BIO_new_file(s->server_key_path, "r");
    if (b == NULL)
        goto fail;
    s->server_key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    if (s->server_cert == NULL || s->server_key == NULL ||
        X509_check_private_key(s->server_cert, s->server_key) != 1)
        goto fail;
    BIO_free(b);
    return 0;
fail:
    BIO_free(b);
    srv_log_ssl_errors("server credentials");
    srv_log(SRV_LOG_ERR, "cannot use the server credentials %s", s->server_cert_path);
    return -1;
}

void srv_tls_free_creds(struct srv *s)
{
    X509_free(s->server_cert);
    EVP_PKEY_free(s->server_key);
    sk_X509_pop_free(s->server_chain, X509_free);
}

int srv_store_add_pem_file(X509_STORE *st, const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    X509 *x;
    int n = 0;

    if (b == NULL)
        return -1;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(st, x) != 1) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                X509_free(x);
                BIO_free(b);
                return -1;
            }
        }
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(b);
    return n > 0 ? 0 : -1;
}

static SSL *session_ssl(coap_session_t *session)
{
    coap_tls_library_t lib;
    void *tls = coap_session_get_tls(session, &lib);
    if (tls == NULL || lib != COAP_TLS_LIBRARY_OPENSSL)
        return NULL;
    return tls;
}

X509 *srv_tls_peer_cert(coap_session_t *session)
{
    SSL *ssl = session_ssl(session);
    if (ssl == NULL)
        return NULL;
    return SSL_get1_peer_certificate(ssl);
}

/*
 * What srv_tls_peer_verified() found on a session, for its next requests (a
 * body's first block and its handler ask the same): per store, for the
 * peer certificate object it was found for (held, so no other certificate
 * can take its address).
 */
struct verdict {
    X509 *leaf;
    X509_STORE *store[2];
    int ok[2];
    int n;
};

static void verdict_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
    struct verdict *v = ptr;
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (v != NULL) {
        X509_free(v->leaf);
        free(v);
    }
}

static int verify_chain(SSL *ssl, X509 *leaf, X509_STORE *store)
{
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    /* On the server side the peer chain does not include the leaf. */
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    int ok = 0;

    if (ctx != NULL && X509_STORE_CTX_init(ctx, store, leaf, chain) == 1) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        ok = X509_verify_cert(ctx) == 1;
        if (!ok)
            srv_log(SRV_LOG_DEBUG, "client certificate rejected: %s",
                    X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    }
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

int srv_tls_peer_verified(coap_session_t *session, X509_STORE *store)
{
    SSL *ssl = session_ssl(session);
    X509 *leaf;
    struct verdict *v;
    int ok;

    if (ssl == NULL)
        return 0;
    leaf = SSL_get1_peer_certificate(ssl);
    if (leaf == NULL)
        return 0;
    v = verdict_idx >= 0 ? SSL_get_ex_data(ssl, verdict_idx) : NULL;
    if (v != NULL && v->leaf == leaf) {
        for (int i = 0; i < v->n; i++) {
            if (v->store[i] == store) {
                X509_free(leaf);
                return v->ok[i];
            }
        }
    }
    ok = verify_chain(ssl, leaf, store);
    if (verdict_idx < 0) {
        X509_free(leaf);
        return ok;
    }
    if (v == NULL) {
        v = calloc(1, sizeof(*v));
        if (v == NULL || !SSL_set_ex_data(ssl, verdict_idx, v)) {
            free(v);
            X509_free(leaf);
            return ok; /* not kept: found again next time */
        }
    }
    if (v->leaf != leaf) { /* a new handshake on the session showed another certificate */
        X509_free(v->leaf);
        v->leaf = leaf;
        v->n = 0;
    } else {
        X509_free(leaf);
    }
    if (v->n < 2) {
        v->store[v->n] = store;
        v->ok[v->n++] = ok;
    }
    return ok;
}

char *srv_tls_unique_b64(coap_session_t *session)
{
    SSL *ssl = session_ssl(session);
    unsigned char fin[EVP_MAX_MD_SIZE];
    size_t n;
    char *out;

    if (ssl == NULL)
        return NULL;
    /* RFC 5929: the first Finished of the latest handshake. */
    if (SSL_session_reused(ssl))
        n = SSL_get_finished(ssl, fin, sizeof(fin));
    else
        n = SSL_get_peer_finished(ssl, fin, sizeof(fin));
    if (n == 0 || n > sizeof(fin))
        return NULL;
    out = malloc(4 * ((n + 2) / 3) + 1);
    if (out == NULL)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, fin, (int)n);
    return out;
}

void srv_tls_client_id(coap_session_t *session, uint8_t id[32])
{
    X509 *peer = srv_tls_peer_cert(session);
    unsigned int len = 32;

    memset(id, 0, 32);
    if (peer != NULL) {
        X509_digest(peer, EVP_sha256(), id, &len);
        X509_free(peer);
        return;
    }
    {
        const coap_address_t *ra = coap_session_get_addr_remote(session);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned int dl = 32;
        if (md != NULL && ra != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
            /* Address without the port: a client that reconnects stays the same. */
            if (ra->addr.sa.sa_family == AF_INET)
                EVP_DigestUpdate(md, &ra->addr.sin.sin_addr, sizeof(ra->addr.sin.sin_addr));
            else if (ra->addr.sa.sa_family == AF_INET6)
                EVP_DigestUpdate(md, &ra->addr.sin6.sin6_addr, sizeof(ra->addr.sin6.sin6_addr));
            EVP_DigestFinal_ex(md, id, &dl);
        }
        EVP_MD_CTX_free(md);
    }
}

/*
 * ClientHello guard.
 *
 * libcoap 4.3.1 makes a session for every ClientHello from a new address
 * before OpenSSL's cookie exchange runs, keeps it for half a minute and
 * ignores new peers once 100 such sessions exist: a flood of ClientHellos
 * from changing (or spoofed) source ports locks every client out. The
 * server therefore waits for datagrams itself and, before libcoap reads the
 * next one, looks at it: a ClientHello from a peer without a session must
 * carry a cookie made here (HMAC of the peer's address and port under a
 * secret that changes every 30 s, RFC 6347 §4.2.1), else it is answered with
 * a HelloVerifyRequest and dropped, no state kept. Only peers that showed
 * they receive at their address reach libcoap (which then runs its own
 * cookie exchange, one more round trip).
 *
 * A client that restarts on the address and port of a session it left
 * behind (killed in the handshake or after it, without a close_notify)
 * sends a new ClientHello, with a random of its own, into that session:
 * libcoap hands it to the old session's OpenSSL state, which ignores it (or
 * answers with its own old flight), and the new client goes unanswered
 * until the old session dies (its handshake retransmissions given up, or
 * --idle-timeout). The guard therefore treats a ClientHello from the
 * address of a session whose ClientHello random differs as a new peer: it
 * must carry a valid cookie, which proves that it receives at the address,
 * and then the old session is dropped and libcoap starts a new one (RFC 6347
 * §4.2.8). A retransmitted ClientHello of the session itself keeps its
 * random and goes to libcoap as before; without a cookie, a ClientHello
 * cannot disturb a session.
 */
#define GUARD_COOKIE_LEN 16
#define GUARD_EPOCH_SECONDS 30
#define GUARD_BURST 256 /* datagrams looked at per call */

/* Each worker's own endpoints (its libcoap context is its thread's). */
static _Thread_local int guard_fds[SRV_MAX_LISTEN];
static _Thread_local int n_guard;
/* The sender of the ClientHello each endpoint lets libcoap read next. */
static _Thread_local coap_address_t guard_head[SRV_MAX_LISTEN];
static _Thread_local int guard_head_set[SRV_MAX_LISTEN];
/* One secret for all workers: written before they start, then only read. */
static unsigned char guard_secret[32];
static atomic_ulong guard_answered;
static atomic_ulong guard_replaced;

int srv_hello_guard_init(void)
{
    return RAND_bytes(guard_secret, sizeof(guard_secret)) == 1 ? 0 : -1;
}

void srv_hello_guard_free(void)
{
    n_guard = 0;
}

void srv_hello_guard_report(void)
{
    unsigned long n = atomic_load(&guard_answered);
    OPENSSL_cleanse(guard_secret, sizeof(guard_secret));
    if (n > 0)
        srv_log(SRV_LOG_INFO, "%lu ClientHello(s) without a cookie answered statelessly", n);
    n = atomic_load(&guard_replaced);
    if (n > 0)
        srv_log(SRV_LOG_INFO,
                "%lu session(s) replaced by a new handshake from the same address and port", n);
}

/*
 * libcoap built with epoll (as Debian's 4.3.1) registers each endpoint
 * socket in its epoll set with a pointer to its own socket record, which a
 * replacement must carry too. No API gives it: a datagram sent to the new
 * endpoint from a scratch socket makes the endpoint ready, epoll_wait() on
 * libcoap's set shows the record (the one whose first member, the
 * descriptor, is `fd`), and the datagram is then taken off again. Runs
 * before the worker serves anything. NULL without epoll or on failure.
 */
static void *libcoap_socket_record(coap_context_t *ctx, int fd, const coap_address_t *addr)
{
    int ep = coap_context_get_coap_fd(ctx), tmp;
    coap_address_t to = *addr;
    void *found = NULL;
    char x = 0;

    if (ep < 0)
        return NULL;
    if (to.addr.sa.sa_family == AF_INET && to.addr.sin.sin_addr.s_addr == htonl(INADDR_ANY))
        to.addr.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (to.addr.sa.sa_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&to.addr.sin6.sin6_addr))
        to.addr.sin6.sin6_addr = in6addr_loopback;
    tmp = socket(to.addr.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (tmp < 0)
        return NULL;
    if (sendto(tmp, &x, 1, 0, &to.addr.sa, to.size) == 1) {
        for (int tries = 0; tries < 20 && found == NULL; tries++) {
            struct epoll_event ev[16];
            int n = epoll_wait(ep, ev, 16, 50);
            for (int i = 0; i < n; i++) {
                const coap_fd_t *rec = ev[i].data.ptr; /* NULL: libcoap's timer */
                if (rec != NULL && *rec == fd)
                    found = ev[i].data.ptr;
            }
        }
        for (int tries = 0; tries < 16; tries++) {
            char b[64];
            if (recv(fd, b, sizeof(b), MSG_DONTWAIT) < 0)
                break;
        }
    }
    close(tmp);
    return found;
}

/*
 * Puts in place of libcoap's socket `fd` (bound to `addr`) one with the same
 * options plus SO_REUSEPORT, bound to the same address, under the same
 * descriptor number and in libcoap's epoll set as before. libcoap 4.3.1
 * binds its sockets itself with SO_REUSEADDR only and has no way to ask for
 * more; the replacement is made before the worker serves anything.
 */
static int reuseport_socket(coap_context_t *ctx, int fd, const coap_address_t *addr)
{
    static const struct {
        int level, name;
    } copied[] = {
        {SOL_SOCKET, SO_REUSEADDR},
        {IPPROTO_IPV6, IPV6_V6ONLY},
        {IPPROTO_IPV6, IPV6_RECVPKTINFO},
        {IPPROTO_IP, IP_PKTINFO},
    };
    int nfd, on = 1, fl, fdfl, ep = coap_context_get_coap_fd(ctx);
    void *rec = NULL;

    if (ep >= 0 && (rec = libcoap_socket_record(ctx, fd, addr)) == NULL) {
        srv_log(SRV_LOG_ERR, "cannot find libcoap's record of its socket");
        return -1;
    }
    nfd = socket(addr->addr.sa.sa_family, SOCK_DGRAM, 0);
    if (nfd < 0)
        return -1;
    for (size_t i = 0; i < sizeof(copied) / sizeof(copied[0]); i++) {
        int v = 0;
        socklen_t vl = sizeof(v);
        if (addr->addr.sa.sa_family != AF_INET6 && copied[i].level == IPPROTO_IPV6)
            continue;
        /* IP_PKTINFO on an IPv6 socket fails where IPv4 is disabled: as libcoap, go on. */
        if (getsockopt(fd, copied[i].level, copied[i].name, &v, &vl) == 0)
            (void)setsockopt(nfd, copied[i].level, copied[i].name, &v, sizeof(v));
    }
    fl = fcntl(fd, F_GETFL);
    fdfl = fcntl(fd, F_GETFD);
    if (fl < 0 || fdfl < 0 || fcntl(nfd, F_SETFL, fl) != 0 ||
        setsockopt(nfd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        bind(nfd, &addr->addr.sa, addr->size) != 0) {
        srv_log(SRV_LOG_ERR, "SO_REUSEPORT socket: %s", strerror(errno));
        close(nfd);
        return -1;
    }
    /* dup2() closes libcoap's socket, which leaves the epoll set with it. */
    if (dup2(nfd, fd) < 0 || fcntl(fd, F_SETFD, fdfl) != 0) {
        srv_log(SRV_LOG_ERR, "SO_REUSEPORT socket: %s", strerror(errno));
        close(nfd);
        return -1;
    }
    close(nfd);
    if (ep >= 0) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.ptr = rec;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            srv_log(SRV_LOG_ERR, "epoll: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

int srv_hello_guard_add_endpoint(coap_context_t *ctx, const coap_address_t *addr)
{
    int best = -1;
    long maxfd = sysconf(_SC_OPEN_MAX);

    if (n_guard == SRV_MAX_LISTEN)
        return -1;
    if (maxfd < 0 || maxfd > 65536)
        maxfd = 65536;
    for (int fd = 3; fd < maxfd; fd++) {
        int type = 0, known = 0;
        socklen_t tl = sizeof(type);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        coap_address_t a;

        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_DGRAM)
            continue;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 || sl > sizeof(a.addr))
            continue;
        for (int i = 0; i < n_guard; i++)
            known |= guard_fds[i] == fd;
        if (known)
            continue;
        coap_address_init(&a);
        memcpy(&a.addr, &ss, sl);
        a.size = sl;
        if (coap_address_equals(&a, addr)) {
            /* Other workers' sockets on this address have SO_REUSEPORT: not those. */
            int rp = 0;
            socklen_t rl = sizeof(rp);
            if (getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &rp, &rl) == 0 && rp == 0)
                best = fd; /* the newest one: libcoap just made it */
        }
    }
    if (best < 0 || reuseport_socket(ctx, best, addr) != 0)
        return -1;
    guard_fds[n_guard++] = best;
    return 0;
}

void srv_hello_guard_wait(coap_context_t *ctx, int timeout_ms)
{
    struct pollfd p[SRV_MAX_LISTEN + 1];
    int n = 0, cfd = coap_context_get_coap_fd(ctx);

    for (int i = 0; i < n_guard; i++) {
        p[n].fd = guard_fds[i];
        p[n].events = POLLIN;
        p[n++].revents = 0;
    }
    if (cfd >= 0) {
        p[n].fd = cfd;
        p[n].events = POLLIN;
        p[n++].revents = 0;
    }
    if (poll(p, (nfds_t)n, timeout_ms) < 0 && errno != EINTR)
        srv_log(SRV_LOG_DEBUG, "poll: %s", strerror(errno));
}

static void guard_cookie(const coap_address_t *peer, uint64_t epoch, unsigned char out[32])
{
    unsigned char msg[8 + 2 + 16 + 2];
    size_t n = 0;
    unsigned int ol = 32;
    int v4 = peer->addr.sa.sa_family == AF_INET;
    const void *ip = v4 ? (const void *)&peer->addr.sin.sin_addr : &peer->addr.sin6.sin6_addr;
    const void *port = v4 ? (const void *)&peer->addr.sin.sin_port : &peer->addr.sin6.sin6_port;
    size_t ipl = v4 ? 4 : 16;

    for (int i = 7; i >= 0; i--)
        msg[n++] = (unsigned char)(epoch >> (8 * i));
    msg[n++] = 0;
    msg[n++] = v4 ? 4 : 6;
    memcpy(msg + n, ip, ipl);
    n += ipl;
    memcpy(msg + n, port, 2);
    n += 2;
    if (HMAC(EVP_sha256(), guard_secret, sizeof(guard_secret), msg, n, out, &ol) == NULL)
        memset(out, 0, 32);
}

static uint64_t guard_epoch(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec / GUARD_EPOCH_SECONDS;
}

static int guard_cookie_ok(const coap_address_t *peer, const unsigned char *cookie, size_t cl)
{
    unsigned char mac[32];
    uint64_t e = guard_epoch();

    if (cl != GUARD_COOKIE_LEN)
        return 0;
    guard_cookie(peer, e, mac);
    if (CRYPTO_memcmp(mac, cookie, GUARD_COOKIE_LEN) == 0)
        return 1;
    guard_cookie(peer, e - 1, mac);
    return CRYPTO_memcmp(mac, cookie, GUARD_COOKIE_LEN) == 0;
}

/*
 * OpenSSL's cookie callbacks for libcoap's DTLSv1_listen(), so that a
 * client answers one HelloVerifyRequest, ours (OpenSSL clients ignore a
 * second one). libcoap reads only datagrams the guard let through, whose
 * senders are in guard_head.
 */
static int cookie_generate_cb(SSL *ssl, unsigned char *cookie, unsigned int *len)
{
    unsigned char mac[32];
    (void)ssl;
    for (int i = 0; i < n_guard; i++) {
        if (guard_head_set[i]) {
            guard_cookie(&guard_head[i], guard_epoch(), mac);
            memcpy(cookie, mac, GUARD_COOKIE_LEN);
            *len = GUARD_COOKIE_LEN;
            return 1;
        }
    }
    return 0;
}

static int cookie_verify_cb(SSL *ssl, const unsigned char *cookie, unsigned int len)
{
    (void)ssl;
    for (int i = 0; i < n_guard; i++)
        if (guard_head_set[i] && guard_cookie_ok(&guard_head[i], cookie, len))
            return 1;
    return 0;
}

int srv_hello_guard_take_cookies(coap_context_t *ctx, const coap_address_t *endpoint)
{
    coap_address_t to = *endpoint;
    coap_session_t *cs;
    coap_tls_library_t lib;
    SSL *ssl;
    int ok = 0;

    /* A wildcard listener: the client session goes to loopback. */
    if (to.addr.sa.sa_family == AF_INET && to.addr.sin.sin_addr.s_addr == htonl(INADDR_ANY))
        to.addr.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (to.addr.sa.sa_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&to.addr.sin6.sin6_addr))
        to.addr.sin6.sin6_addr = in6addr_loopback;
    /* libcoap's client and server sessions share one SSL_CTX: reach it through a client. */
    cs = coap_new_client_session(ctx, NULL, &to, COAP_PROTO_DTLS);
    if (cs == NULL)
        return -1;
    ssl = coap_session_get_tls(cs, &lib);
    if (ssl != NULL && lib == COAP_TLS_LIBRARY_OPENSSL) {
        SSL_CTX *sctx = SSL_get_SSL_CTX(ssl);
        SSL_CTX_set_cookie_generate_cb(sctx, cookie_generate_cb);
        SSL_CTX_set_cookie_verify_cb(sctx, cookie_verify_cb);
        SSL_CTX_set_client_hello_cb(sctx, client_hello_cb, coap_get_app_data(ctx));
        /* No resumption (see use_creds()): no server-side session cache
         * filling with every client's session either. */
        SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
        ok = 1;
    }
    coap_session_release(cs);
    return ok ? 0 : -1;
}

/*
 * A DTLS ClientHello record: 13-byte record header, 12-byte handshake
 * header, then client_version, random, session_id, cookie.
 * Returns 1 with the cookie found, 0 for a ClientHello without a usable
 * cookie, -1 for something else (not a ClientHello, or malformed).
 */
static int parse_client_hello(const uint8_t *b, size_t n, const uint8_t **cookie, size_t *cl)
{
    size_t rl, p;

    if (n < 25 || b[0] != 22 || b[3] != 0 || b[4] != 0 || b[13] != 1)
        return -1;
    rl = ((size_t)b[11] << 8) | b[12];
    if (rl + 13 < n)
        n = rl + 13;
    if (b[19] != 0 || b[20] != 0 || b[21] != 0) /* a later fragment */
        return -1;
    p = 25 + 2 + 32;
    if (p + 1 > n)
        return -1;
    p += 1 + b[p]; /* session_id */
    if (p + 1 > n)
        return -1;
    *cl = b[p];
    *cookie = b + p + 1;
    if (p + 1 + *cl > n)
        return -1;
    return *cl > 0;
}

/* Makes `buf` the control data of `m`: one message of LEVEL/TYPE holding `data`. */
static void put_cmsg(struct msghdr *m, char *buf, int level, int type, const void *data, size_t len)
{
    struct cmsghdr *o;

    m->msg_control = buf;
    m->msg_controllen = CMSG_SPACE(len);
    o = CMSG_FIRSTHDR(m);
    o->cmsg_level = level;
    o->cmsg_type = type;
    o->cmsg_len = CMSG_LEN(len);
    memcpy(CMSG_DATA(o), data, len);
}

static void send_hello_verify(int fd, const uint8_t *hello, const struct msghdr *in,
                              const coap_address_t *peer)
{
    uint8_t out[13 + 12 + 3 + GUARD_COOKIE_LEN];
    unsigned char mac[32];
    size_t bl = 3 + GUARD_COOKIE_LEN;
    struct iovec iov = {out, sizeof(out)};
    struct msghdr m;
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        struct cmsghdr align;
    } ctl;
    struct cmsghdr *c;

    guard_cookie(peer, guard_epoch(), mac);
    /* Record: handshake, DTLS 1.0, epoch 0, the ClientHello's sequence number. */
    out[0] = 22;
    out[1] = 0xfe;
    out[2] = 0xff;
    memcpy(out + 3, hello + 3, 8);
    out[11] = (uint8_t)((12 + bl) >> 8);
    out[12] = (uint8_t)(12 + bl);
    /* Handshake: hello_verify_request, message_seq 0, one fragment. */
    out[13] = 3;
    out[14] = 0;
    out[15] = 0;
    out[16] = (uint8_t)bl;
    out[17] = 0;
    out[18] = 0;
    out[19] = out[20] = out[21] = 0;
    out[22] = 0;
    out[23] = 0;
    out[24] = (uint8_t)bl;
    out[25] = 0xfe;
    out[26] = 0xff;
    out[27] = GUARD_COOKIE_LEN;
    memcpy(out + 28, mac, GUARD_COOKIE_LEN);

    memset(&m, 0, sizeof(m));
    m.msg_name = (void *)&peer->addr;
    m.msg_namelen = peer->size;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    /* Answer from the address the ClientHello went to (wildcard listeners). */
    memset(&ctl, 0, sizeof(ctl));
    for (c = CMSG_FIRSTHDR((struct msghdr *)in); c != NULL;
         c = CMSG_NXTHDR((struct msghdr *)in, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            pi.ipi_spec_dst = pi.ipi_addr;
            pi.ipi_ifindex = 0;
            put_cmsg(&m, ctl.buf, IPPROTO_IP, IP_PKTINFO, &pi, sizeof(pi));
            break;
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            put_cmsg(&m, ctl.buf, IPPROTO_IPV6, IPV6_PKTINFO, CMSG_DATA(c),
                     sizeof(struct in6_pktinfo));
            break;
        }
    }
    if (sendmsg(fd, &m, MSG_DONTWAIT) < 0)
        srv_log(SRV_LOG_DEBUG, "HelloVerifyRequest not sent: %s", strerror(errno));
    else
        guard_answered++;
}

/*
 * Whether the ClientHello `hello` (checked by parse_client_hello()) comes
 * from another client than the one of `session`, a server session on its
 * address: its random differs from the one the session's handshake began
 * with. A session without TLS state yet (libcoap's stateless hello stage)
 * or with none left (closed, to be freed) is not asked.
 */
static int hello_from_new_client(coap_session_t *session, const uint8_t *hello)
{
    coap_tls_library_t lib;
    unsigned char random[32];
    SSL *ssl;

    if (coap_session_get_type(session) != COAP_SESSION_TYPE_SERVER)
        return 0;
    ssl = coap_session_get_tls(session, &lib);
    if (ssl == NULL || lib != COAP_TLS_LIBRARY_OPENSSL)
        return 0;
    if (SSL_get_client_random(ssl, random, sizeof(random)) != sizeof(random))
        return 0;
    /* Record header 13, handshake header 12, client_version 2: the random. */
    return CRYPTO_memcmp(random, hello + 25 + 2, sizeof(random)) != 0;
}

/* Drops the session a restarted client left on its address (see above). */
static void drop_stale_session(coap_session_t *session, const coap_address_t *peer)
{
    if (srv_verbosity >= SRV_LOG_DEBUG) {
        char a[INET6_ADDRSTRLEN + 16];
        if (coap_print_addr(peer, (uint8_t *)a, sizeof(a)) == 0)
            strcpy(a, "?");
        srv_log(SRV_LOG_DEBUG,
                "%s: a new handshake from the address of a session: the old one is dropped", a);
    }
    /* libcoap frees a closed server session before it reads the next datagram. */
    coap_session_disconnected(session, COAP_NACK_TLS_FAILED);
    guard_replaced++;
}

/*
 * 1 when the datagram first in line on fd is one for libcoap, 0 when none
 * waits, 2 when GUARD_BURST ClientHellos were answered and more may wait.
 */
static int guard_one(coap_context_t *ctx, int slot)
{
    int fd = guard_fds[slot];
    for (int k = 0; k < GUARD_BURST; k++) {
        uint8_t buf[1500];
        struct sockaddr_storage src;
        union {
            char buf[512];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {buf, sizeof(buf)};
        struct msghdr m;
        struct cmsghdr *c;
        ssize_t n;
        coap_address_t peer;
        int ifindex = 0, rc;
        const uint8_t *cookie = NULL;
        size_t cl = 0;

        memset(&m, 0, sizeof(m));
        m.msg_name = &src;
        m.msg_namelen = sizeof(src);
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl.buf;
        m.msg_controllen = sizeof(ctl.buf);
        n = recvmsg(fd, &m, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0)
            return 0; /* nothing waiting (or an error libcoap will see too) */
        rc = parse_client_hello(buf, (size_t)n, &cookie, &cl);
        if (rc < 0)
            return 1; /* not a ClientHello: libcoap's business */
        if (m.msg_namelen > sizeof(peer.addr))
            return 1;
        coap_address_init(&peer);
        memcpy(&peer.addr, &src, m.msg_namelen);
        peer.size = m.msg_namelen;
        for (c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                struct in_pktinfo pi;
                memcpy(&pi, CMSG_DATA(c), sizeof(pi));
                ifindex = pi.ipi_ifindex;
            } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
                struct in6_pktinfo pi;
                memcpy(&pi, CMSG_DATA(c), sizeof(pi));
                ifindex = (int)pi.ipi6_ifindex;
            }
        }
        coap_session_t *known = coap_session_get_by_peer(ctx, &peer, ifindex);
        int cookie_ok = rc == 1 && guard_cookie_ok(&peer, cookie, cl);
        if (known != NULL && hello_from_new_client(known, buf)) {
            /* A restarted client on a session's address: a new peer. */
            if (cookie_ok)
                drop_stale_session(known, &peer);
            known = NULL;
        }
        if (known != NULL || cookie_ok) {
            /* A peer libcoap knows (a retransmission, a new handshake) or a good cookie. */
            coap_address_copy(&guard_head[slot], &peer);
            guard_head_set[slot] = 1;
            return 1;
        }
        /* Take it off the queue and answer it, keeping nothing. */
        {
            uint8_t scratch;
            if (recv(fd, &scratch, 1, MSG_DONTWAIT) < 0)
                return 0;
        }
        send_hello_verify(fd, buf, &m, &peer);
    }
    return 2; /* still ClientHellos in line: the caller comes back */
}

int srv_hello_guard_filter(coap_context_t *ctx)
{
    int pending = 0;
    memset(guard_head_set, 0, sizeof(guard_head_set));
    for (int i = 0; i < n_guard; i++) {
        int r = guard_one(ctx, i);
        if (r == 2)
            return -1;
        pending |= r;
    }
    return pending;
}
