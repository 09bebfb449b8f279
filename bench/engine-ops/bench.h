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
#include <sys/resource.h>
#include <time.h>

/* --only TYPE (p256, p384 or rsa2048): the one key type to run, or NULL
 * for all. One type per process gives each its own peak RSS. */
static const char *bench_only;

static inline bool bench_type_on(const char *name)
{
    return bench_only == NULL || strcmp(bench_only, name) == 0;
}

/* With ESTC_BENCH_SMAPS=FILE in the environment, a copy of the process's
 * /proc/self/smaps is written to FILE with every row (the last one stays):
 * bench/smaps-split.py shows where the resident pages come from. */
static inline void bench_copy_smaps(void)
{
    const char *to = getenv("ESTC_BENCH_SMAPS");
    if (to == NULL || *to == '\0')
        return;
    FILE *in = fopen("/proc/self/smaps", "r");
    FILE *out = in != NULL ? fopen(to, "w") : NULL;
    char buf[4096];
    size_t n;
    while (out != NULL && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    if (out != NULL)
        fclose(out);
    if (in != NULL)
        fclose(in);
}

/* The process's peak resident set size so far, in KiB (the last column of
 * every row). */
static inline long bench_maxrss_kb(void)
{
    struct rusage ru;
    bench_copy_smaps();
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether argv[*i] is "--keygens N", "--signs N" or "--only TYPE": then
 * the count (or bench_only) is set and *i moved onto the value. */
static inline bool bench_count_arg(int argc, char **argv, int *i, int *keygens, int *signs)
{
    if (*i + 1 >= argc)
        return false;
    if (strcmp(argv[*i], "--keygens") == 0)
        *keygens = atoi(argv[++*i]);
    else if (strcmp(argv[*i], "--signs") == 0)
        *signs = atoi(argv[++*i]);
    else if (strcmp(argv[*i], "--only") == 0)
        bench_only = argv[++*i];
    else
        return false;
    return true;
}

/* The command line "[--keygens N] [--signs N] [--only TYPE]", counts at least 1; prints the
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
        fprintf(stderr, "usage: %s [--keygens N] [--signs N] [--only TYPE]\n", argv[0]);
        return false;
    }
    return true;
}

#endif
