/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness: estc-server's enrollment policy. The input is taken as
 * a DER PKCS#10 CSR, parsed like the server does, then checked under three
 * policies (the defaults; client-cn with DNS and IP only and 4 SANs;
 * client-serial with the server's names allowed), as enrollment and as
 * renewal, and compared with a client certificate as sren does.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct srv_policy policies[3];
static X509 *client;

/* An unsigned certificate with SUBJECT and, if SAN is not NULL, that SAN. */
static X509 *make_cert(const char *cn, const char *serial, const char *san)
{
    X509 *x = X509_new();
    X509_NAME *name = x ? X509_get_subject_name(x) : NULL;

    if (name == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                    0) ||
        (serial != NULL && !X509_NAME_add_entry_by_txt(name, "serialNumber", MBSTRING_ASC,
                                                       (const unsigned char *)serial, -1, -1, 0)))
        abort();
    if (san != NULL) {
        X509V3_CTX ctx;
        X509_EXTENSION *e;
        X509V3_set_ctx(&ctx, NULL, x, NULL, NULL, 0);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
        if (e == NULL || !X509_add_ext(x, e, -1))
            abort();
        X509_EXTENSION_free(e);
    }
    return x;
}

static void setup(void)
{
    X509 *server = make_cert("localhost", NULL, "DNS:localhost,IP:127.0.0.1,IP:::1");
    int i;

    client = make_cert("device-1", "SN0042", "DNS:dev1.example");
    for (i = 0; i < 3; i++) {
        srv_policy_init(&policies[i]);
        if (srv_policy_set_server(&policies[i], server) != 0)
            abort();
    }
    if (srv_policy_option(&policies[1], "cn-must-match", "client-cn") != 0 ||
        srv_policy_option(&policies[1], "allowed-san-types", "dns,ip") != 0 ||
        srv_policy_option(&policies[1], "max-sans", "4") != 0 ||
        srv_policy_option(&policies[2], "cn-must-match", "client-serial") != 0 ||
        srv_policy_option(&policies[2], "allow-server-names", NULL) != 0)
        abort();
    X509_free(server);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    const unsigned char *p = data;
    struct srv_policy_refusal why;
    X509_REQ *req;
    int i;

    if (!ready) {
        setup();
        ready = 1;
    }
    if (srv_policy_check_size(&policies[0], size, &why) != SRV_POLICY_OK && why.rule == NULL)
        abort();
    req = d2i_X509_REQ(NULL, &p, (long)size);
    if (req != NULL) {
        for (i = 0; i < 3; i++) {
            enum srv_policy_verdict v = srv_policy_check_csr(&policies[i], req, client, 0, &why);
            /* A refusal always names its rule, in printable ASCII. */
            if (v != SRV_POLICY_OK) {
                size_t k, n = strlen(why.diag);
                if (why.rule == NULL || n == 0)
                    abort();
                for (k = 0; k < n; k++) {
                    if ((unsigned char)why.diag[k] < 0x20 || (unsigned char)why.diag[k] > 0x7e)
                        abort();
                }
            }
            (void)srv_policy_check_csr(&policies[i], req, client, 1, &why);
        }
        (void)srv_policy_same_identity(client, req);
        X509_REQ_free(req);
    }
    ERR_clear_error();
    return 0;
}
