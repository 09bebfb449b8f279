/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-engine-test: runs the engine conformance suite against any driver
 * and address prefix, so that users can check their own HSM drivers.
 */
#include <stdio.h>
#include <string.h>

#include <estc/engine.h>

#include "conformance.h"

static void usage(FILE *to, const char *argv0)
{
    fprintf(to,
            "usage: %s ADDRESS_PREFIX [--driver MODULE.so]\n"
            "       %s --list [--driver MODULE.so]\n"
            "       %s --help | --version\n"
            "\n"
            "Runs the estc engine conformance suite. Every object the suite makes is\n"
            "derived from ADDRESS_PREFIX (for example mem:, file:/tmp/dir/,\n"
            "'pkcs11:token=T;pin-value=1234?module-path=/usr/lib/softhsm/libsofthsm2.so')\n"
            "and removed again. --driver loads a driver module first (a shared object\n"
            "exporting estc_driver_entry()).\n"
            "\n"
            "Prints one line per case (PASS, SKIP with the engine's reason when it\n"
            "answered ESTC_ERR_UNSUPPORTED for what the case tests, or FAIL) and\n"
            "\"N passed, N skipped, N failed\"; exits 0 when no case fails, 1 when one\n"
            "fails, 2 on a usage error or when the suite cannot start. --list prints\n"
            "the registered engines instead.\n"
            "\n"
            "Options:\n"
            "  --driver MODULE.so   load a driver module first\n"
            "  --list               print the registered engines\n"
            "  -h, --help           this text\n"
            "  --version            print the version and exit\n",
            argv0, argv0, argv0);
}

static void print_engine(void *arg, const struct estc_driver *drv)
{
    (void)arg;
    printf("%-10s %s\n", drv->scheme, drv->description);
}

static int list_engines(const char *driver)
{
    estc_ctx *ctx = NULL;
    estc_err err = estc_ctx_new(&ctx);
    if (err == ESTC_OK && driver != NULL)
        err = estc_engine_load_module(ctx, driver);
    if (err == ESTC_OK)
        err = estc_engine_schemes(ctx, print_engine, NULL);
    if (err != ESTC_OK)
        fprintf(stderr, "estc-engine-test: %s: %s\n", estc_strerror(err),
                estc_ctx_error_detail(ctx));
    estc_ctx_free(ctx);
    return err == ESTC_OK ? 0 : 2;
}

int main(int argc, char **argv)
{
    const char *prefix = NULL, *driver = NULL;
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout, argv[0]);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("estc-engine-test %s\n", ESTC_TOOL_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--list") == 0) {
            list = 1;
        } else if (strcmp(argv[i], "--driver") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "estc-engine-test: --driver needs a module path\n");
                return 2;
            }
            driver = argv[++i];
        } else if (argv[i][0] == '-' || prefix != NULL) {
            char shown[ESTC_ADDRESS_MAX + 1]; /* an address may carry a PIN */
            fprintf(stderr, "estc-engine-test: unexpected argument \"%s\"\n",
                    estc_redact(argv[i], shown, sizeof(shown)));
            usage(stderr, argv[0]);
            return 2;
        } else {
            prefix = argv[i];
        }
    }
    if (list)
        return prefix == NULL ? list_engines(driver) : 2;
    if (prefix == NULL) {
        usage(stderr, argv[0]);
        return 2;
    }
    int failed = estc_conformance_run(prefix, driver, stdout);
    fflush(stdout);
    if (failed < 0)
        return 2;
    return failed == 0 ? 0 : 1;
}
