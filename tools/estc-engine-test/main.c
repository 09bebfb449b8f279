/*
 * estc-engine-test: runs the engine conformance suite against any driver
 * and address prefix, so that users can check their own HSM drivers.
 */
#include <stdio.h>
#include <string.h>

#include "conformance.h"

static void usage(FILE *to, const char *argv0)
{
    fprintf(to,
            "usage: %s ADDRESS_PREFIX [--driver MODULE.so]\n"
            "\n"
            "Runs the estc engine conformance suite. Every object the suite makes is\n"
            "derived from ADDRESS_PREFIX (for example mem:, file:/tmp/dir/,\n"
            "'pkcs11:token=T;pin-value=1234?module-path=/usr/lib/softhsm/libsofthsm2.so')\n"
            "and removed again. --driver loads a driver module first (a shared object\n"
            "exporting estc_driver_entry()).\n"
            "\n"
            "Prints one line per case and \"N passed, N failed\"; exits 0 only when all\n"
            "cases pass, 1 when one fails, 2 on a usage error or when the suite cannot\n"
            "start.\n",
            argv0);
}

int main(int argc, char **argv)
{
    const char *prefix = NULL, *driver = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout, argv[0]);
            return 0;
        }
        if (strcmp(argv[i], "--driver") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "estc-engine-test: --driver needs a module path\n");
                return 2;
            }
            driver = argv[++i];
        } else if (argv[i][0] == '-' || prefix != NULL) {
            fprintf(stderr, "estc-engine-test: unexpected argument \"%s\"\n", argv[i]);
            usage(stderr, argv[0]);
            return 2;
        } else {
            prefix = argv[i];
        }
    }
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
