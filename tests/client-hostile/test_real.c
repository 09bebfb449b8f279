/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The EST client over real CoAP/DTLS (libcoap) against estc-server, started
 * by run-real.sh, which passes everything in the environment:
 *   ESTC_SERVER_URI, ESTC_SERVER_CA   the normal server and its CA
 *   HOSTILE_CERT, HOSTILE_KEY         device (IDevID) credentials, PEM files
 *   HOSTILE_OTHER_CA                  a CA that did not sign the server
 *   HOSTILE_BOMB_URI                  a server whose /crts answer is over the
 *                                     client's response size cap
 *   HOSTILE_RELAY_URI                 the normal server behind a relay that
 *                                     drops 20 % of the datagrams each way
 *                                     (lossy), or none (sessions)
 *   HOSTILE_RELAY_PID, HOSTILE_RELAY_STATS  that relay (sessions): SIGUSR1
 *                                     writes its counts to the stats file
 *   HOSTILE_SPLIT_URI, HOSTILE_SPLIT_ANCHOR  a server whose own chain leads
 *                                     to the anchor, while its /crts answer
 *                                     is another CA (recheck)
 * usage: test-real identity|bomb|lossy|recheck|sessions|credentials
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <estc/client.h>

#define CLIENT_FIXTURE_PROGRAM "test-real"
#define CLIENT_FIXTURE_SCRIPT "run-real.sh"
#include "../fixtures/client_fixture.h"

static estc_client *make_client(estc_ctx *ctx, const char *uri, const char *trust)
{
    estc_client *c = NULL;
    if (client_fixture_new(ctx, &c, uri, trust, env("HOSTILE_CERT"), env("HOSTILE_KEY")) !=
            ESTC_OK ||
        estc_client_set_enrolled(c, "mem:dev-key", "mem:dev-cert", "mem:ca-") != ESTC_OK ||
        estc_client_set_subject(c, "/CN=hostile-device") != ESTC_OK ||
        estc_client_add_san(c, "DNS:hostile-device.example") != ESTC_OK ||
        estc_client_set_limits(c, 15000, 3, 10) != ESTC_OK)
        client_fixture_setup_failed(ctx);
    return c;
}

/* A client like make_client()'s whose only anchor is @anchor, implicit
 * (the manufacturer's, replaced by the /crts answer) or explicit. */
static estc_client *make_client_anchor(estc_ctx *ctx, const char *uri, const char *anchor,
                                       bool implicit)
{
    estc_client *c = NULL;
    char server[600];
    snprintf(server, sizeof(server), "%s/est", uri);
    if (estc_client_new(ctx, &c) != ESTC_OK || estc_client_set_server(c, server) != ESTC_OK ||
        estc_client_add_trust_anchor(c, anchor, implicit) != ESTC_OK ||
        estc_client_set_credentials(c, env("HOSTILE_CERT"), env("HOSTILE_KEY")) != ESTC_OK ||
        estc_client_set_enrolled(c, "mem:dev-key", "mem:dev-cert", "mem:ca-") != ESTC_OK ||
        estc_client_set_subject(c, "/CN=hostile-device") != ESTC_OK ||
        estc_client_add_san(c, "DNS:hostile-device.example") != ESTC_OK ||
        estc_client_set_limits(c, 15000, 3, 10) != ESTC_OK)
        client_fixture_setup_failed(ctx);
    return c;
}

/* Objects in the engine, the client's addresses and its record, as text. */
static void snapshot(estc_ctx *ctx, estc_client *c, char *out, size_t n)
{
    size_t o = 0;
    const estc_obj_kind kinds[] = {ESTC_OBJ_KEY, ESTC_OBJ_CERT, ESTC_OBJ_TRUST};
    for (size_t k = 0; k < 3; k++) {
        o += (size_t)snprintf(out + o, n - o, "kind %d: %zu objects\n", (int)kinds[k],
                              client_fixture_count(ctx, "mem:", kinds[k]));
    }
    o += (size_t)snprintf(out + o, n - o, "key %s cert %s cas %zu\n", estc_client_key_address(c),
                          estc_client_cert_address(c), estc_client_ca_count(c));
    estc_lifecycle *lc = estc_client_lifecycle(c);
    for (size_t i = 0; i < estc_lifecycle_count(lc) && o < n; i++) {
        const char *a;
        estc_obj_state st;
        estc_lifecycle_get(lc, i, &a, NULL, &st, NULL);
        o += (size_t)snprintf(out + o, n - o, "record %s %d\n", a, (int)st);
    }
}

/* @op must fail with @want, a detail, and leave everything as it was. */
static void expect_refused(estc_ctx *ctx, estc_client *c, const char *what,
                           estc_err (*op)(estc_client *), estc_err want)
{
    char before[4096], after[4096];
    snapshot(ctx, c, before, sizeof(before));
    estc_ctx_clear_error(ctx);
    estc_err err = op(c);
    const char *detail = estc_ctx_error_detail(ctx);
    printf("%s: %s: %s\n", what, estc_err_name(err), detail);
    CHECK(err == want, "%s: got %s, want %s", what, estc_err_name(err), estc_err_name(want));
    CHECK(detail[0] != '\0', "%s: no detail", what);
    snapshot(ctx, c, after, sizeof(after));
    CHECK(strcmp(before, after) == 0, "%s: state changed:\n--- before\n%s--- after\n%s", what,
          before, after);
}

static estc_err op_cacerts(estc_client *c)
{
    return estc_client_cacerts(c);
}

static estc_err op_enroll(estc_client *c)
{
    return estc_client_enroll(c);
}

static estc_err op_reenroll(estc_client *c)
{
    return estc_client_reenroll(c, true);
}

static void test_identity(void)
{
    estc_ctx *ctx = NULL;
    CHECK(estc_ctx_new(&ctx) == ESTC_OK, "ctx");
    const char *uri = env("ESTC_SERVER_URI"), *ca = env("ESTC_SERVER_CA");

    /* The server's certificate names 127.0.0.1 and localhost, not this. */
    estc_client *c = make_client(ctx, uri, ca);
    CHECK(estc_client_set_server_identity(c, "est.wrong.example") == ESTC_OK, "identity");
    expect_refused(ctx, c, "identity mismatch, cacerts", op_cacerts, ESTC_ERR_VALIDATION);
    expect_refused(ctx, c, "identity mismatch, enroll", op_enroll, ESTC_ERR_VALIDATION);
    estc_client_free(c);

    /* A trust anchor that did not sign the server's chain. */
    c = make_client(ctx, uri, env("HOSTILE_OTHER_CA"));
    expect_refused(ctx, c, "untrusted server chain", op_cacerts, ESTC_ERR_VALIDATION);
    estc_client_free(c);

    /* Positive control: the same server with the right name and anchor. */
    c = make_client(ctx, uri, ca);
    estc_err err = estc_client_cacerts(c);
    CHECK(err == ESTC_OK, "control cacerts: %s %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    err = estc_client_enroll(c);
    CHECK(err == ESTC_OK, "control enroll: %s %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    /* Then the name stops matching: /sren is refused, nothing moves. */
    CHECK(estc_client_set_server_identity(c, "est.wrong.example") == ESTC_OK, "identity");
    expect_refused(ctx, c, "identity mismatch, reenroll", op_reenroll, ESTC_ERR_VALIDATION);
    CHECK(estc_client_set_server_identity(c, "127.0.0.1") == ESTC_OK, "identity");
    err = estc_client_reenroll(c, true);
    CHECK(err == ESTC_OK, "control reenroll: %s %s", estc_err_name(err),
          estc_ctx_error_detail(ctx));
    estc_client_free(c);
    estc_ctx_free(ctx);
}

static void test_bomb(void)
{
    estc_ctx *ctx = NULL;
    CHECK(estc_ctx_new(&ctx) == ESTC_OK, "ctx");
    estc_client *c = make_client(ctx, env("HOSTILE_BOMB_URI"), env("ESTC_SERVER_CA"));
    expect_refused(ctx, c, "block-wise bomb, cacerts", op_cacerts, ESTC_ERR_LIMIT);
    estc_client_free(c);
    estc_ctx_free(ctx);
}

static void test_lossy(void)
{
    estc_ctx *ctx = NULL;
    CHECK(estc_ctx_new(&ctx) == ESTC_OK, "ctx");
    estc_client *c = make_client(ctx, env("HOSTILE_RELAY_URI"), env("ESTC_SERVER_CA"));
    /* Each exchange may take a while at 20 % loss: CoAP and DTLS retransmit. */
    estc_client_set_limits(c, 60000, 3, 10);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    estc_err err = estc_client_cacerts(c);
    CHECK(err == ESTC_OK, "lossy cacerts: %s %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    if (err == ESTC_OK) {
        err = estc_client_enroll(c);
        CHECK(err == ESTC_OK, "lossy enroll: %s %s", estc_err_name(err),
              estc_ctx_error_detail(ctx));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    estc_buf der = {0};
    if (err == ESTC_OK)
        CHECK(estc_client_certificate(c, &der) == ESTC_OK && der.len > 0, "no certificate");
    estc_buf_free(&der);
    printf("lossy enrollment: %s after %.1f s\n", estc_err_name(err),
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    estc_client_free(c);
    estc_ctx_free(ctx);
}

/* The server is checked again against the /crts answer before that answer
 * replaces the implicit anchor: a server whose chain leads to the implicit
 * anchor but not to the CA it names in /crts is refused, and nothing is
 * stored. */
static void test_recheck(void)
{
    estc_ctx *ctx = NULL;
    CHECK(estc_ctx_new(&ctx) == ESTC_OK, "ctx");
    const char *uri = env("HOSTILE_SPLIT_URI"), *anchor = env("HOSTILE_SPLIT_ANCHOR");
    estc_client *c = make_client_anchor(ctx, uri, anchor, true);
    expect_refused(ctx, c, "/crts names a CA the server does not chain to", op_cacerts,
                   ESTC_ERR_VALIDATION);
    CHECK(strstr(estc_ctx_error_detail(ctx), "does not verify against the CA certificates") !=
              NULL,
          "recheck: the detail does not say why: %s", estc_ctx_error_detail(ctx));
    CHECK(estc_client_ca_count(c) == 0, "recheck: %zu CA certificate(s) taken",
          estc_client_ca_count(c));
    /* The refused answer was not adopted: a second try is refused alike. */
    expect_refused(ctx, c, "the same, again", op_cacerts, ESTC_ERR_VALIDATION);
    estc_client_free(c);

    /* Control: the same anchor configured as explicit stays trusted beside
     * the /crts answer, and the server then verifies. */
    c = make_client_anchor(ctx, uri, anchor, false);
    estc_err err = estc_client_cacerts(c);
    CHECK(err == ESTC_OK, "control, explicit anchor: %s %s", estc_err_name(err),
          estc_ctx_error_detail(ctx));
    CHECK(estc_client_ca_count(c) == 1, "control: %zu CA certificates", estc_client_ca_count(c));
    estc_client_free(c);
    estc_ctx_free(ctx);
}

/* The relay's counts so far: round trips and sessions (SIGUSR1 makes it
 * write them to its stats file). False when they do not come. */
static bool relay_counts(long *round_trips, long *sessions)
{
    const char *stats = env("HOSTILE_RELAY_STATS");
    pid_t pid = (pid_t)atol(env("HOSTILE_RELAY_PID"));
    unlink(stats);
    if (kill(pid, SIGUSR1) != 0)
        return false;
    for (int i = 0; i < 50; i++) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
        nanosleep(&ts, NULL);
        FILE *f = fopen(stats, "r");
        if (f == NULL)
            continue;
        char buf[2048];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *rt = strstr(buf, "\"round_trips\": ");
        const char *ss = strstr(buf, "\"sessions\": ");
        if (rt == NULL || ss == NULL)
            return false;
        *round_trips = atol(rt + strlen("\"round_trips\": "));
        *sessions = atol(ss + strlen("\"sessions\": "));
        return true;
    }
    return false;
}

/* RFC 9148 §4: a first enrollment with an implicit anchor is one DTLS
 * session for /crts and /sen (a full handshake with a cookie: 3 round
 * trips, then one per request); a re-enrollment one session for /sren. */
static void test_sessions(void)
{
    estc_ctx *ctx = NULL;
    CHECK(estc_ctx_new(&ctx) == ESTC_OK, "ctx");
    estc_client *c = make_client_anchor(ctx, env("HOSTILE_RELAY_URI"), env("ESTC_SERVER_CA"), true);
    long rt0 = -1, s0 = -1, rt1 = -1, s1 = -1, rt2 = -1, s2 = -1;
    CHECK(relay_counts(&rt0, &s0), "no relay counts");
    estc_err err = estc_client_cacerts(c);
    CHECK(err == ESTC_OK, "cacerts: %s %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    if (err == ESTC_OK) {
        err = estc_client_enroll(c);
        CHECK(err == ESTC_OK, "enroll: %s %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    }
    CHECK(relay_counts(&rt1, &s1), "no relay counts");
    printf("first enrollment: %ld round trips, %ld session(s)\n", rt1 - rt0, s1 - s0);
    CHECK(rt1 - rt0 == 5 && s1 - s0 == 1,
          "first enrollment: %ld round trips in %ld sessions, want 5 in 1", rt1 - rt0, s1 - s0);
    if (err == ESTC_OK) {
        err = estc_client_reenroll(c, false);
        CHECK(err == ESTC_OK, "reenroll: %s %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    }
    CHECK(relay_counts(&rt2, &s2), "no relay counts");
    printf("re-enrollment: %ld round trips, %ld session(s)\n", rt2 - rt1, s2 - s1);
    CHECK(rt2 - rt1 == 4 && s2 - s1 == 1,
          "re-enrollment: %ld round trips in %ld sessions, want 4 in 1", rt2 - rt1, s2 - s1);
    estc_client_free(c);
    estc_ctx_free(ctx);
}

/* Writes @pkey (or a copy of the PEM file @from) to @path, 0600. */
static bool write_key(const char *path, EVP_PKEY *pkey, const char *from)
{
    FILE *out = fopen(path, "wx");
    if (out == NULL)
        return false;
    bool ok = chmod(path, 0600) == 0;
    if (ok && pkey != NULL) {
        ok = PEM_write_PrivateKey(out, pkey, NULL, NULL, 0, NULL, NULL) == 1;
    } else if (ok) {
        FILE *in = fopen(from, "r");
        char buf[4096];
        size_t n;
        ok = in != NULL;
        while (ok && (n = fread(buf, 1, sizeof(buf), in)) > 0)
            ok = fwrite(buf, 1, n, out) == n;
        if (in != NULL)
            fclose(in);
    }
    return fclose(out) == 0 && ok;
}

/* estc_client_check_credentials(): the pair is read and checked before any
 * traffic, and what was read serves the session (the enrollment succeeds
 * with the key file gone after the check); a key of another certificate is
 * refused; what was kept never stands in for other credentials. */
static void test_credentials(void)
{
    estc_ctx *ctx = NULL;
    CHECK(estc_ctx_new(&ctx) == ESTC_OK, "ctx");
    char dir[] = "/tmp/estc-creds-XXXXXX", key[64], other[64];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(other, sizeof(other), "%s/other.pem", dir);
    EVP_PKEY *stranger = EVP_EC_gen("P-256");
    CHECK(stranger != NULL && write_key(other, stranger, NULL), "another key");
    CHECK(write_key(key, NULL, env("HOSTILE_KEY")), "copy of the device key");
    EVP_PKEY_free(stranger);

    estc_client *c = NULL;
    CHECK(estc_client_new(ctx, &c) == ESTC_OK, "client");
    estc_err err = estc_client_check_credentials(c, ESTC_CLIENT_CREDS_BOOTSTRAP);
    CHECK(err == ESTC_ERR_STATE, "nothing configured: got %s", estc_err_name(err));
    /* The default enrolled addresses hold nothing yet. */
    err = estc_client_check_credentials(c, ESTC_CLIENT_CREDS_ENROLLED);
    CHECK(err == ESTC_ERR_NOT_FOUND, "no enrolled certificate: got %s", estc_err_name(err));
    CHECK(estc_client_check_credentials(c, 0) == ESTC_ERR_INVALID_ARG, "bad which");
    CHECK(estc_client_check_credentials(NULL, ESTC_CLIENT_CREDS_BOOTSTRAP) ==
              ESTC_ERR_INVALID_ARG,
          "NULL client");
    estc_client_free(c);

    c = make_client(ctx, env("ESTC_SERVER_URI"), env("ESTC_SERVER_CA"));
    CHECK(estc_client_set_credentials(c, env("HOSTILE_CERT"), other) == ESTC_OK, "set other");
    estc_ctx_clear_error(ctx);
    err = estc_client_check_credentials(c, ESTC_CLIENT_CREDS_BOOTSTRAP);
    printf("a key of another certificate: %s: %s\n", estc_err_name(err),
           estc_ctx_error_detail(ctx));
    CHECK(err == ESTC_ERR_CRYPTO, "another key: got %s", estc_err_name(err));

    CHECK(estc_client_set_credentials(c, env("HOSTILE_CERT"), key) == ESTC_OK, "set key");
    err = estc_client_check_credentials(c, ESTC_CLIENT_CREDS_BOOTSTRAP);
    CHECK(err == ESTC_OK, "the pair: %s %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    /* Kept pair, other credentials: the other key is read and refused. */
    CHECK(estc_client_set_credentials(c, env("HOSTILE_CERT"), other) == ESTC_OK, "set other");
    estc_ctx_clear_error(ctx);
    err = estc_client_enroll(c);
    CHECK(err == ESTC_ERR_CRYPTO, "enroll with another key after a check: got %s %s",
          estc_err_name(err), estc_ctx_error_detail(ctx));
    /* Checked, then the file is gone: the session uses what was read. */
    CHECK(estc_client_set_credentials(c, env("HOSTILE_CERT"), key) == ESTC_OK, "set key");
    err = estc_client_check_credentials(c, ESTC_CLIENT_CREDS_BOOTSTRAP);
    CHECK(err == ESTC_OK, "the pair again: %s", estc_err_name(err));
    CHECK(unlink(key) == 0, "unlink");
    estc_ctx_clear_error(ctx);
    err = estc_client_enroll(c);
    CHECK(err == ESTC_OK, "enroll after the check: %s %s", estc_err_name(err),
          estc_ctx_error_detail(ctx));
    /* Taken once: the next session reads the files again (now gone). */
    estc_client_free(c);
    unlink(other);
    rmdir(dir);
    estc_ctx_free(ctx);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test-real identity|bomb|lossy|recheck|sessions|credentials\n");
        return 2;
    }
    if (strcmp(argv[1], "identity") == 0)
        test_identity();
    else if (strcmp(argv[1], "bomb") == 0)
        test_bomb();
    else if (strcmp(argv[1], "lossy") == 0)
        test_lossy();
    else if (strcmp(argv[1], "recheck") == 0)
        test_recheck();
    else if (strcmp(argv[1], "sessions") == 0)
        test_sessions();
    else if (strcmp(argv[1], "credentials") == 0)
        test_credentials();
    else
        return 2;
    return client_fixture_report(argv[1]);
}
