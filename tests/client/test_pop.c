/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Proof-of-possession (RFC 7030 §3.5, RFC 9148): the CSR's challengePassword
 * carries base64(tls-unique) of the DTLS session that sends it. Runs against
 * estc-server --pop, started by pop-fixture.sh, which refuses a CSR without
 * the right value with 4.00. Environment: ESTC_SERVER_URI, ESTC_SERVER_CA,
 * POP_CERT and POP_KEY (device credentials the server accepts).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <estc/client.h>

#define CLIENT_FIXTURE_PROGRAM "test-pop"
#define CLIENT_FIXTURE_SCRIPT "pop-fixture.sh"
#include "../fixtures/client_fixture.h"

/* Each client its own addresses under "mem:@name-". */
static estc_client *make_client(estc_ctx *ctx, const char *name, bool pop)
{
    char subject[100], key[100], cert[100], cas[100];
    snprintf(subject, sizeof(subject), "/CN=%s", name);
    snprintf(key, sizeof(key), "mem:%s-key", name);
    snprintf(cert, sizeof(cert), "mem:%s-cert", name);
    snprintf(cas, sizeof(cas), "mem:%s-ca-", name);
    estc_client *c = NULL;
    if (client_fixture_new(ctx, &c, env("ESTC_SERVER_URI"), env("ESTC_SERVER_CA"), env("POP_CERT"),
                           env("POP_KEY")) != ESTC_OK ||
        estc_client_set_subject(c, subject) != ESTC_OK ||
        estc_client_set_enrolled(c, key, cert, cas) != ESTC_OK ||
        estc_client_set_limits(c, 15000, 2, 5) != ESTC_OK || estc_client_set_pop(c, pop) != ESTC_OK)
        client_fixture_setup_failed(ctx);
    return c;
}

static size_t count(estc_ctx *ctx, estc_obj_kind kind)
{
    return client_fixture_count(ctx, "mem:", kind);
}

/* The enrolled certificate's last bytes (its signature) as hex: enough to
 * tell two certificates apart. */
static void serial_of(estc_client *c, char *out, size_t n)
{
    out[0] = '\0';
    estc_buf der = {0};
    if (estc_client_certificate(c, &der) != ESTC_OK)
        return;
    size_t o = 0;
    for (size_t i = 0; i < der.len && o + 3 < n; i++)
        o += (size_t)snprintf(out + o, n - o, "%02x", der.data[(der.len - 1 - i)]);
    estc_buf_free(&der);
}

static void with_pop(estc_ctx *ctx)
{
    estc_client *c = make_client(ctx, "pop-device", true);
    estc_err err = estc_client_enroll(c);
    CHECK(err == ESTC_OK, "sen with PoP: %s: %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    char s1[200], s2[200], s3[200];
    serial_of(c, s1, sizeof(s1));
    CHECK(s1[0] != '\0', "no certificate after sen with PoP");

    /* /sren on the enrolled credentials: its CSR must name that session. */
    err = estc_client_reenroll(c, false);
    CHECK(err == ESTC_OK, "sren with PoP: %s: %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    serial_of(c, s2, sizeof(s2));
    CHECK(strcmp(s1, s2) != 0, "sren with PoP gave no new certificate");
    err = estc_client_reenroll(c, true);
    CHECK(err == ESTC_OK, "sren rekey with PoP: %s: %s", estc_err_name(err),
          estc_ctx_error_detail(ctx));
    serial_of(c, s3, sizeof(s3));
    CHECK(strcmp(s2, s3) != 0, "sren rekey with PoP gave no new certificate");

    /* /skg signs with a key thrown away right after: the CSR must be made
     * on the session that then carries it. */
    err = estc_client_serverkeygen(c);
    CHECK(err == ESTC_OK, "skg with PoP: %s: %s", estc_err_name(err), estc_ctx_error_detail(ctx));
    estc_client_free(c);
}

static void without_pop(estc_ctx *ctx)
{
    estc_client *c = make_client(ctx, "no-pop-device", false);
    size_t keys = count(ctx, ESTC_OBJ_KEY), certs = count(ctx, ESTC_OBJ_CERT);
    estc_ctx_clear_error(ctx);
    estc_err err = estc_client_enroll(c);
    const char *detail = estc_ctx_error_detail(ctx);
    printf("sen without PoP: %s: %s\n", estc_err_name(err), detail);
    CHECK(err == ESTC_ERR_SERVER, "sen without PoP: got %s, want ESTC_ERR_SERVER",
          estc_err_name(err));
    CHECK(strstr(detail, "4.00") != NULL, "sen without PoP: detail has no 4.00: %s", detail);
    CHECK(count(ctx, ESTC_OBJ_KEY) == keys && count(ctx, ESTC_OBJ_CERT) == certs,
          "sen without PoP left objects behind");
    estc_buf der = {0};
    CHECK(estc_client_certificate(c, &der) != ESTC_OK, "a certificate after a refused sen");
    estc_buf_free(&der);

    /* The same client, PoP switched on: now it works. */
    CHECK(estc_client_set_pop(c, true) == ESTC_OK, "set_pop");
    err = estc_client_enroll(c);
    CHECK(err == ESTC_OK, "sen after switching PoP on: %s: %s", estc_err_name(err),
          estc_ctx_error_detail(ctx));
    estc_client_free(c);
    CHECK(estc_client_set_pop(NULL, true) == ESTC_ERR_INVALID_ARG, "set_pop(NULL)");
}

/* A transport of API version 1 has no tls_unique: PoP cannot be had. */
static estc_err v1_request(void *impl, const estc_request *req, estc_response *resp, char *detail,
                           size_t detail_len)
{
    (void)impl;
    (void)req;
    (void)detail;
    (void)detail_len;
    resp->code = 404;
    return ESTC_OK;
}

static const estc_transport_ops v1_ops = {
    .api_version = 1,
    .name = "v1",
    .request = v1_request,
};

static void old_transport(estc_ctx *ctx)
{
    estc_client *c = make_client(ctx, "v1-device", true);
    estc_transport *t = NULL;
    CHECK(estc_transport_new(&v1_ops, NULL, &t) == ESTC_OK, "a version 1 transport");
    uint8_t tu[ESTC_TLS_UNIQUE_MAX];
    size_t n = 1;
    CHECK(estc_transport_tls_unique(t, tu, sizeof(tu), &n) == ESTC_ERR_UNSUPPORTED && n == 0,
          "tls-unique of a version 1 transport");
    CHECK(estc_client_set_transport(c, t) == ESTC_OK, "set_transport");
    size_t keys = count(ctx, ESTC_OBJ_KEY);
    estc_err err = estc_client_enroll(c);
    printf("sen with PoP on a version 1 transport: %s: %s\n", estc_err_name(err),
           estc_ctx_error_detail(ctx));
    CHECK(err == ESTC_ERR_UNSUPPORTED, "PoP on a version 1 transport: got %s", estc_err_name(err));
    CHECK(count(ctx, ESTC_OBJ_KEY) == keys, "a key left behind");
    estc_client_free(c);
}

int main(void)
{
    estc_ctx *ctx = NULL;
    if (estc_ctx_new(&ctx) != ESTC_OK) {
        fprintf(stderr, "test-pop: no context\n");
        return 1;
    }
    with_pop(ctx);
    without_pop(ctx);
    old_transport(ctx);
    estc_ctx_free(ctx);
    return client_fixture_report("pop");
}
