/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One EST-coaps enrollment phase through the library, for bench/run-enroll.sh:
 *   first  GET /crts (cacerts) and POST /sen (enroll) with the bootstrap
 *          credentials, keeping the enrolled key and certificate in file:
 *          objects under DIR
 *   re     POST /sren (reenroll, same key) with those
 * usage: estc-bench-enroll first|re SERVER-URI CA.pem CERT.pem KEY.pem DIR
 * Prints "<phase> <milliseconds>" for the library calls alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <estc/client.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc != 7 || (strcmp(argv[1], "first") != 0 && strcmp(argv[1], "re") != 0)) {
        fprintf(stderr, "usage: estc-bench-enroll first|re SERVER-URI CA.pem CERT.pem KEY.pem "
                        "DIR\n");
        return 2;
    }
    bool first = strcmp(argv[1], "first") == 0;
    char server[600], key[700], cert[700], prefix[700];
    snprintf(server, sizeof(server), "%s/est", argv[2]);
    snprintf(key, sizeof(key), "file:%s/device.key.pem", argv[6]);
    snprintf(cert, sizeof(cert), "file:%s/device.crt.pem", argv[6]);
    snprintf(prefix, sizeof(prefix), "file:%s/", argv[6]);
    estc_ctx *ctx = NULL;
    estc_client *c = NULL;
    estc_err err = estc_ctx_new(&ctx);
    if (err == ESTC_OK)
        err = estc_client_new(ctx, &c);
    if (err == ESTC_OK)
        err = estc_client_set_server(c, server);
    if (err == ESTC_OK)
        err = estc_client_add_trust_anchor(c, argv[3], false);
    if (err == ESTC_OK)
        err = estc_client_set_credentials(c, argv[4], argv[5]);
    if (err == ESTC_OK)
        err = estc_client_set_enrolled(c, key, cert, prefix);
    if (err == ESTC_OK)
        err = estc_client_set_subject(c, "/CN=bench-device");
    if (err == ESTC_OK)
        err = estc_client_add_san(c, "DNS:bench-device.example");
    double t0 = now_ms();
    if (err == ESTC_OK && first)
        err = estc_client_cacerts(c);
    if (err == ESTC_OK && first)
        err = estc_client_enroll(c);
    if (err == ESTC_OK && !first)
        err = estc_client_reenroll(c, false);
    double t1 = now_ms();
    if (err != ESTC_OK)
        fprintf(stderr, "estc-bench-enroll %s: %s: %s\n", argv[1], estc_err_name(err),
                estc_ctx_error_detail(ctx));
    else
        printf("%s %.2f\n", argv[1], t1 - t0);
    estc_client_free(c);
    estc_ctx_free(ctx);
    return err == ESTC_OK ? 0 : 1;
}
