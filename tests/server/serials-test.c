/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-server's set of issued serial numbers (tools/estc-server/serials.c):
 * every serial added is found again, through the set's growth; one never
 * added is not; adding one twice keeps one entry.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serials.h"

#define N 50000

static int failures;

static void check(int ok, const char *what, long i)
{
    if (!ok) {
        fprintf(stderr, "FAIL: %s (%ld)\n", what, i);
        failures++;
    }
}

/* A serial as the server writes it: 32 upper-case hex digits. */
static void serial(char out[33], unsigned long i, unsigned long salt)
{
    unsigned long long x = (i + 1) * 0x9E3779B97F4A7C15ull ^ salt;
    snprintf(out, 33, "%016llX%016llX", x, x * 0xC2B2AE3D27D4EB4Full + i);
}

int main(void)
{
    struct srv_serials set = {NULL, 0, 0};
    char hex[33];
    long i;

    check(!srv_serials_has(&set, "40"), "empty set finds nothing", 0);
    for (i = 0; i < N; i++) {
        serial(hex, (unsigned long)i, 1);
        check(!srv_serials_has(&set, hex), "not there before it is added", i);
        check(srv_serials_add(&set, hex) == 0, "added", i);
        check(srv_serials_has(&set, hex), "found right after", i);
    }
    check(set.n == N, "count", (long)set.n);
    check(set.cap >= 2 * set.n, "at most half full", (long)set.cap);
    for (i = 0; i < N; i++) { /* after every growth */
        serial(hex, (unsigned long)i, 1);
        check(srv_serials_has(&set, hex), "found after growth", i);
        serial(hex, (unsigned long)i, 2);
        check(!srv_serials_has(&set, hex), "never added, not found", i);
    }
    serial(hex, 7, 1);
    check(srv_serials_add(&set, hex) == 0 && set.n == N, "a second add keeps one entry", 7);
    /* Serials of other lengths (an index from another CA) live alongside. */
    check(srv_serials_add(&set, "01") == 0 && srv_serials_has(&set, "01") &&
              !srv_serials_has(&set, "1") && !srv_serials_has(&set, "010"),
          "short serials", 0);
    srv_serials_free(&set);
    check(set.n == 0 && set.cap == 0 && !srv_serials_has(&set, hex), "freed", 0);
    if (failures == 0)
        printf("serial set: %d serials, all checks passed\n", N);
    return failures ? 1 : 0;
}
