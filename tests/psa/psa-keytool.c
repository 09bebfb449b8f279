/*
 * A helper for run-openssl-psa.sh: makes and removes psa: keys and writes
 * PEM key references, in the current folder (where mbed TLS keeps them).
 *
 *   psa-keytool gen ADDR ec256|ec384|rsa2048
 *   psa-keytool ref ADDR FILE
 *   psa-keytool remove ADDR
 */
#include <stdio.h>
#include <string.h>

#include <estc/engine.h>
#include <estc/provider.h>

int main(int argc, char **argv)
{
    estc_ctx *ctx = NULL;
    estc_err err = ESTC_ERR_INVALID_ARG;

    if (argc < 3 || estc_ctx_new(&ctx) != ESTC_OK) {
        fprintf(stderr, "usage: %s gen|ref|remove ADDR [TYPE|FILE]\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "gen") == 0 && argc == 4) {
        estc_key_type t = strcmp(argv[3], "ec384") == 0     ? ESTC_KEY_EC_P384
                          : strcmp(argv[3], "rsa2048") == 0 ? ESTC_KEY_RSA_2048
                                                            : ESTC_KEY_EC_P256;
        err = estc_key_generate(ctx, argv[2], t);
    } else if (strcmp(argv[1], "ref") == 0 && argc == 4) {
        err = estc_keyref_write(ctx, argv[3], argv[2]);
    } else if (strcmp(argv[1], "remove") == 0 && argc == 3) {
        err = estc_key_remove(ctx, argv[2]);
    }
    if (err != ESTC_OK)
        fprintf(stderr, "%s: %s: %s\n", argv[1], estc_err_name(err), estc_ctx_error_detail(ctx));
    estc_ctx_free(ctx);
    return err == ESTC_OK ? 0 : 1;
}
