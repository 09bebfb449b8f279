/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the engine-ops benchmark programs (estc-bench-engine-ops and the
 * native comparisons): the clock and the --keygens / --signs options.
 */
#ifndef ESTC_BENCH_ENGINE_OPS_H
#define ESTC_BENCH_ENGINE_OPS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether argv[*i] is "--keygens N" or "--signs N": then the count is set
 * and *i moved onto N. */
static inline bool bench_count_arg(int argc, char **argv, int *i, int *keygens, int *signs)
{
    if (*i + 1 >= argc)
        return false;
    if (strcmp(argv[*i], "--keygens") == 0)
        *keygens = atoi(argv[++*i]);
    else if (strcmp(argv[*i], "--signs") == 0)
        *signs = atoi(argv[++*i]);
    else
        return false;
    return true;
}

/* The command line "[--keygens N] [--signs N]", each at least 1; prints the
 * usage and returns false otherwise. */
static inline bool bench_counts(int argc, char **argv, int *keygens, int *signs)
{
    for (int i = 1; i < argc; i++) {
        if (!bench_count_arg(argc, argv, &i, keygens, signs)) {
            *keygens = 0;
            break;
        }
    }
    if (*keygens < 1 || *signs < 1) {
        fprintf(stderr, "usage: %s [--keygens N] [--signs N]\n", argv[0]);
        return false;
    }
    return true;
}

#endif
