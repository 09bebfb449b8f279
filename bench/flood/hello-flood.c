/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A ClientHello flood for the estc-server resource-limit test and bench:
 * each ClientHello is a real DTLS 1.2 ClientHello made by OpenSSL, sent from
 * a new UDP socket (so from a new source port) that is closed at once, so
 * nothing answers the server's HelloVerifyRequest: what a sender of spoofed
 * source addresses does.
 *
 *   hello-flood HOST PORT RATE SECONDS
 *
 * Sends RATE ClientHellos a second for SECONDS seconds, then prints
 * "sent N" and exits. Loopback only by intent: HOST must be 127.0.0.0/8.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_hello(SSL_CTX *ctx, const struct sockaddr_in *dst)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    SSL *ssl = NULL;
    BIO *bio;
    int ok = 0;

    if (fd < 0)
        return 0;
    if (connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) != 0)
        goto out;
    ssl = SSL_new(ctx);
    bio = BIO_new_dgram(fd, BIO_NOCLOSE);
    if (ssl == NULL || bio == NULL) {
        BIO_free(bio);
        goto out;
    }
    BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, (void *)dst);
    SSL_set_bio(ssl, bio, bio);
    BIO_socket_nbio(fd, 1);
    /* Writes the ClientHello, then wants to read: that is all. */
    ok = SSL_connect(ssl) < 0 && SSL_get_error(ssl, -1) == SSL_ERROR_WANT_READ;
out:
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return ok;
}

int main(int argc, char **argv)
{
    struct sockaddr_in dst;
    SSL_CTX *ctx;
    double rate, secs, start, next;
    unsigned long sent = 0, failed = 0;

    if (argc != 5) {
        fprintf(stderr, "usage: hello-flood HOST PORT RATE SECONDS\n");
        return 2;
    }
    memset(&dst, 0, sizeof(dst));
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1 ||
        (ntohl(dst.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "hello-flood: HOST must be a loopback IPv4 address\n");
        return 2;
    }
    rate = atof(argv[3]);
    secs = atof(argv[4]);
    if (rate <= 0 || rate > 100000 || secs <= 0 || secs > 3600) {
        fprintf(stderr, "hello-flood: RATE 0 < r <= 100000, SECONDS 0 < s <= 3600\n");
        return 2;
    }
    ctx = SSL_CTX_new(DTLS_client_method());
    if (ctx == NULL)
        return 1;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    start = next = now_s();
    while (now_s() - start < secs) {
        if (send_hello(ctx, &dst))
            sent++;
        else
            failed++;
        next += 1.0 / rate;
        {
            double d = next - now_s();
            if (d > 0) {
                struct timespec ts;
                ts.tv_sec = (time_t)d;
                ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
                while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                    ;
            }
        }
    }
    SSL_CTX_free(ctx);
    printf("sent %lu\n", sent);
    if (failed > 0)
        fprintf(stderr, "hello-flood: %lu ClientHellos not sent\n", failed);
    return sent > 0 ? 0 : 1;
}
