/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The libcoap DTLS transport against coap-server-openssl on loopback (started
 * by coap-fixture.sh): requests, block-wise both ways with SZX 2, the size
 * cap, server identity and trust checks, time-outs, argument checks.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <estc/transport.h>

#include "../fixtures/check_main.h"

static char dir[1024];
static int port, port_wrongname, port_ra, port_ra_untrusted;

static char *path_in(const char *name)
{
    static char buf[8][1200];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
    return p;
}

static void log_line(void *arg, estc_log_level level, const char *msg)
{
    (void)arg;
    (void)level;
    if (getenv("ESTC_TEST_VERBOSE") != NULL)
        fprintf(stderr, "transport: %s\n", msg);
}

static estc_transport *make(const char *host, int p, const char *trust, const char *identity,
                            unsigned szx, size_t max_response)
{
    char server[256];
    snprintf(server, sizeof(server), "coaps://%s:%d", host, p);
    estc_coap_config cfg = {
        .server = server,
        .trust_file = path_in(trust),
        .identity = identity,
        .cert_file = path_in("client.pem"),
        .key_file = path_in("client.key"),
        .timeout_ms = 8000,
        .block_szx = szx,
        .max_response = max_response,
        .log_fn = log_line,
    };
    estc_transport *t = NULL;
    ck_assert_int_eq(estc_transport_coap_new(&cfg, &t), ESTC_OK);
    ck_assert_ptr_nonnull(t);
    return t;
}

static estc_err get(estc_transport *t, const char *path, estc_response *resp)
{
    estc_request req = {ESTC_COAP_GET, path, ESTC_CF_NONE, ESTC_CF_NONE, NULL, 0};
    return estc_transport_request(t, &req, resp);
}

START_TEST(get_root_and_reuse)
{
    estc_transport *t = make("127.0.0.1", port, "ca.pem", NULL, 6, 0);
    estc_response resp = {0};
    ck_assert_int_eq(get(t, "/", &resp), ESTC_OK);
    ck_assert_int_eq(resp.code, 205);
    ck_assert_uint_gt(resp.payload.len, 0);
    ck_assert_ptr_nonnull(memmem(resp.payload.data, resp.payload.len, "libcoap", 7));
    /* Same session for the next requests; a missing resource is a response. */
    ck_assert_int_eq(get(t, "/no/such%20thing?x=1&y", &resp), ESTC_OK);
    ck_assert_int_eq(resp.code, 404);
    ck_assert_int_eq(get(t, "/.well-known/core", &resp), ESTC_OK);
    ck_assert_int_eq(resp.code, 205);
    ck_assert_int_eq(resp.content_format, 40);
    ck_assert_ptr_nonnull(memmem(resp.payload.data, resp.payload.len, "</time>", 7));
    estc_response_clear(&resp);
    estc_transport_free(t);
}
END_TEST

/* PUT 3000 bytes in 64-byte Block1 blocks, GET them back in Block2 blocks. */
START_TEST(blockwise_szx2)
{
    estc_transport *t = make("localhost", port, "ca.pem", NULL, 2, 0);
    size_t n = 3000;
    uint8_t *body = malloc(n);
    ck_assert_ptr_nonnull(body);
    for (size_t i = 0; i < n; i++)
        body[i] = (uint8_t)(i * 7 + i / 256);
    estc_request put = {ESTC_COAP_PUT, "/example_data", 42, ESTC_CF_NONE, body, n};
    estc_response resp = {0};
    ck_assert_int_eq(estc_transport_request(t, &put, &resp), ESTC_OK);
    ck_assert_msg(resp.code == 204 || resp.code == 201, "PUT gave %d", resp.code);
    ck_assert_int_eq(get(t, "/example_data", &resp), ESTC_OK);
    ck_assert_int_eq(resp.code, 205);
    ck_assert_uint_eq(resp.payload.len, n);
    ck_assert_mem_eq(resp.payload.data, body, n);
    estc_response_clear(&resp);
    estc_transport_free(t);

    /* The same body is over a 1000-byte cap: ESTC_ERR_LIMIT, nothing kept. */
    t = make("127.0.0.1", port, "ca.pem", NULL, 2, 1000);
    estc_err err = get(t, "/example_data", &resp);
    ck_assert_msg(err == ESTC_ERR_LIMIT, "got %s: %s", estc_err_name(err),
                  estc_transport_error_detail(t));
    ck_assert_uint_eq(resp.payload.len, 0);
    ck_assert_ptr_null(resp.payload.data);
    /* The transport is usable again afterwards (a new session). */
    err = get(t, "/", &resp);
    ck_assert_msg(err == ESTC_OK, "got %s: %s", estc_err_name(err), estc_transport_error_detail(t));
    ck_assert_int_eq(resp.code, 205);
    estc_response_clear(&resp);
    estc_transport_free(t);
    free(body);
}
END_TEST

START_TEST(identity_mismatch)
{
    estc_response resp = {0};
    /* The right server, but we expect another name. */
    estc_transport *t = make("127.0.0.1", port, "ca.pem", "other.example", 6, 0);
    estc_err err = get(t, "/", &resp);
    ck_assert_msg(err == ESTC_ERR_VALIDATION, "got %s: %s", estc_err_name(err),
                  estc_transport_error_detail(t));
    ck_assert_ptr_nonnull(strstr(estc_transport_error_detail(t), "other.example"));
    ck_assert_int_eq(resp.code, 0);
    estc_transport_free(t);

    /* A server whose certificate says localhost only in its CN. */
    t = make("localhost", port_wrongname, "ca.pem", NULL, 6, 0);
    err = get(t, "/", &resp);
    ck_assert_msg(err == ESTC_ERR_VALIDATION, "got %s: %s", estc_err_name(err),
                  estc_transport_error_detail(t));
    estc_transport_free(t);

    /* The IP address must be an iPAddress entry, not a DNS name. */
    t = make("127.0.0.1", port_wrongname, "ca.pem", NULL, 6, 0);
    ck_assert_int_eq(get(t, "/", &resp), ESTC_ERR_VALIDATION);
    estc_transport_free(t);
}
END_TEST

/* RFC 7030 §3.6.1: a certificate that does not name the server is still
 * accepted when it chains to the trust anchors and carries id-kp-cmcRA. */
START_TEST(cmc_ra_server)
{
    estc_response resp = {0};
    const char *hosts[] = {"127.0.0.1", "localhost"};
    for (size_t i = 0; i < 2; i++) {
        estc_transport *t = make(hosts[i], port_ra, "ca.pem", NULL, 6, 0);
        estc_err err = get(t, "/", &resp);
        ck_assert_msg(err == ESTC_OK, "%s: got %s: %s", hosts[i], estc_err_name(err),
                      estc_transport_error_detail(t));
        ck_assert_int_eq(resp.code, 205);
        estc_response_clear(&resp);
        estc_transport_free(t);
    }

    /* Neither the name nor the EKU: refused, and the detail says both. */
    estc_transport *t = make("localhost", port_wrongname, "ca.pem", NULL, 6, 0);
    estc_err err = get(t, "/", &resp);
    ck_assert_msg(err == ESTC_ERR_VALIDATION, "got %s: %s", estc_err_name(err),
                  estc_transport_error_detail(t));
    ck_assert_ptr_nonnull(strstr(estc_transport_error_detail(t), "cmcRA"));
    ck_assert_int_eq(resp.code, 0);
    estc_transport_free(t);

    /* The EKU from a CA we do not trust counts for nothing. */
    t = make("127.0.0.1", port_ra_untrusted, "ca.pem", NULL, 6, 0);
    err = get(t, "/", &resp);
    ck_assert_msg(err == ESTC_ERR_VALIDATION, "got %s: %s", estc_err_name(err),
                  estc_transport_error_detail(t));
    ck_assert_int_eq(resp.code, 0);
    estc_transport_free(t);

    /* Trusting that other CA alone: the RA of our CA is now the stranger. */
    t = make("127.0.0.1", port_ra, "otherca.pem", NULL, 6, 0);
    ck_assert_int_eq(get(t, "/", &resp), ESTC_ERR_VALIDATION);
    estc_transport_free(t);
}
END_TEST

static estc_err never_called(void *impl, const estc_request *req, estc_response *resp, char *detail,
                             size_t detail_len)
{
    (void)impl;
    (void)req;
    (void)resp;
    (void)detail;
    (void)detail_len;
    return ESTC_ERR_TRANSPORT;
}

/* tls-unique (RFC 5929): a TLS 1.2 Finished, stable for one session, new
 * with the next one; the request after it goes on the same session. */
START_TEST(tls_unique)
{
    estc_transport *t = make("127.0.0.1", port, "ca.pem", NULL, 6, 0);
    uint8_t a[ESTC_TLS_UNIQUE_MAX], b[ESTC_TLS_UNIQUE_MAX];
    size_t na = 0, nb = 0;
    estc_err err = estc_transport_tls_unique(t, a, sizeof(a), &na);
    ck_assert_msg(err == ESTC_OK, "got %s: %s", estc_err_name(err), estc_transport_error_detail(t));
    ck_assert_uint_eq(na, 12);
    estc_response resp = {0};
    ck_assert_int_eq(get(t, "/", &resp), ESTC_OK);
    ck_assert_int_eq(estc_transport_tls_unique(t, b, sizeof(b), &nb), ESTC_OK);
    ck_assert_uint_eq(nb, na);
    ck_assert_mem_eq(a, b, na);
    estc_transport_reset(t);
    ck_assert_int_eq(estc_transport_tls_unique(t, b, sizeof(b), &nb), ESTC_OK);
    ck_assert_uint_eq(nb, na);
    ck_assert_int_ne(memcmp(a, b, na), 0);
    ck_assert_int_eq(estc_transport_tls_unique(t, NULL, sizeof(b), &nb), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_transport_tls_unique(NULL, b, sizeof(b), &nb), ESTC_ERR_INVALID_ARG);
    estc_response_clear(&resp);
    estc_transport_free(t);

    /* A server we do not trust: no value, the validation error instead. */
    t = make("127.0.0.1", port_ra_untrusted, "ca.pem", NULL, 6, 0);
    ck_assert_int_eq(estc_transport_tls_unique(t, a, sizeof(a), &na), ESTC_ERR_VALIDATION);
    ck_assert_uint_eq(na, 0);
    estc_transport_free(t);

    /* An api_version the library does not know is refused. */
    estc_transport_ops ops = {.api_version = 3, .name = "future", .request = never_called};
    t = NULL;
    ck_assert_int_eq(estc_transport_new(&ops, NULL, &t), ESTC_ERR_DRIVER);
    ck_assert_ptr_null(t);
}
END_TEST

START_TEST(untrusted_server)
{
    estc_response resp = {0};
    estc_transport *t = make("127.0.0.1", port, "otherca.pem", NULL, 6, 0);
    estc_err err = get(t, "/", &resp);
    ck_assert_msg(err == ESTC_ERR_VALIDATION, "got %s: %s", estc_err_name(err),
                  estc_transport_error_detail(t));
    ck_assert_int_eq(resp.code, 0);
    estc_transport_free(t);
}
END_TEST

START_TEST(no_server_times_out)
{
    /* The plain CoAP port of the server: DTLS gets no answer there. Choose a
     * short time-out; either our deadline or libcoap's gives up. */
    char server[64];
    snprintf(server, sizeof(server), "coaps://127.0.0.1:%d", port - 1);
    estc_coap_config cfg = {.server = server,
                            .trust_file = path_in("ca.pem"),
                            .cert_file = path_in("client.pem"),
                            .key_file = path_in("client.key"),
                            .timeout_ms = 1500};
    estc_transport *t = NULL;
    ck_assert_int_eq(estc_transport_coap_new(&cfg, &t), ESTC_OK);
    estc_response resp = {0};
    estc_err err = get(t, "/", &resp);
    ck_assert_msg(err == ESTC_ERR_TIMEOUT || err == ESTC_ERR_TRANSPORT, "got %s",
                  estc_err_name(err));
    ck_assert_str_ne(estc_transport_error_detail(t), "");
    estc_transport_free(t);
}
END_TEST

START_TEST(bad_arguments)
{
    estc_coap_config cfg = {.server = "coaps://127.0.0.1", .trust_file = path_in("ca.pem")};
    estc_transport *t = NULL;
    const char *bad_servers[] = {"coap://127.0.0.1", "coaps://",      "coaps://[::1", "coaps://h:0",
                                 "coaps://h:70000",  "coaps://h:12x", "coaps://u@h",  "127.0.0.1"};
    for (size_t i = 0; i < sizeof(bad_servers) / sizeof(bad_servers[0]); i++) {
        cfg.server = bad_servers[i];
        ck_assert_msg(estc_transport_coap_new(&cfg, &t) == ESTC_ERR_INVALID_ARG, "%s",
                      bad_servers[i]);
        ck_assert_ptr_null(t);
    }
    cfg.server = "coaps://[::1]:5684/est";
    cfg.cert_file = path_in("client.pem"); /* without a key */
    ck_assert_int_eq(estc_transport_coap_new(&cfg, &t), ESTC_ERR_INVALID_ARG);
    cfg.cert_file = NULL;
    cfg.trust_file = NULL; /* no trust anchors: no insecure default */
    ck_assert_int_eq(estc_transport_coap_new(&cfg, &t), ESTC_ERR_INVALID_ARG);
    cfg.trust_file = path_in("missing.pem");
    ck_assert_int_eq(estc_transport_coap_new(&cfg, &t), ESTC_ERR_IO);
    ck_assert_int_eq(estc_transport_coap_new(NULL, &t), ESTC_ERR_INVALID_ARG);

    cfg.trust_file = path_in("ca.pem");
    ck_assert_int_eq(estc_transport_coap_new(&cfg, &t), ESTC_OK);
    estc_response resp = {0};
    estc_request req = {ESTC_COAP_GET, "no-slash", ESTC_CF_NONE, ESTC_CF_NONE, NULL, 0};
    ck_assert_int_eq(estc_transport_request(t, &req, &resp), ESTC_ERR_INVALID_ARG);
    req.path = "/x";
    req.accept = 70000;
    ck_assert_int_eq(estc_transport_request(t, &req, &resp), ESTC_ERR_INVALID_ARG);
    req.accept = ESTC_CF_NONE;
    req.payload_len = 3;
    ck_assert_int_eq(estc_transport_request(t, &req, &resp), ESTC_ERR_INVALID_ARG);
    req.payload_len = 0;
    req.method = 9;
    ck_assert_int_eq(estc_transport_request(t, &req, &resp), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_transport_request(t, NULL, &resp), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_transport_request(NULL, &req, &resp), ESTC_ERR_INVALID_ARG);
    estc_transport_free(t);
    estc_transport_free(NULL);
    ck_assert_str_eq(estc_transport_error_detail(NULL), "");
}
END_TEST

int main(void)
{
    const char *d = getenv("ESTC_TEST_DIR");
    const char *p = getenv("ESTC_TEST_PORT");
    const char *pw = getenv("ESTC_TEST_PORT_WRONGNAME");
    const char *pr = getenv("ESTC_TEST_PORT_RA");
    const char *pru = getenv("ESTC_TEST_PORT_RA_UNTRUSTED");
    if (d == NULL || p == NULL || pw == NULL || pr == NULL || pru == NULL) {
        fprintf(stderr, "run through coap-fixture.sh\n");
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s", d);
    port = atoi(p);
    port_wrongname = atoi(pw);
    port_ra = atoi(pr);
    port_ra_untrusted = atoi(pru);

    TCase *tc;
    Suite *s = check_suite("transport", "coap", NULL, NULL, 60, &tc);
    tcase_add_test(tc, get_root_and_reuse);
    tcase_add_test(tc, blockwise_szx2);
    tcase_add_test(tc, identity_mismatch);
    tcase_add_test(tc, cmc_ra_server);
    tcase_add_test(tc, tls_unique);
    tcase_add_test(tc, untrusted_server);
    tcase_add_test(tc, no_server_times_out);
    tcase_add_test(tc, bad_arguments);
    return check_run(s);
}
