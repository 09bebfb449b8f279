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
 * usage: test-real identity|bomb|lossy
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test-real identity|bomb|lossy\n");
        return 2;
    }
    if (strcmp(argv[1], "identity") == 0)
        test_identity();
    else if (strcmp(argv[1], "bomb") == 0)
        test_bomb();
    else if (strcmp(argv[1], "lossy") == 0)
        test_lossy();
    else
        return 2;
    return client_fixture_report(argv[1]);
}
