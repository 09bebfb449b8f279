/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine conformance suite: Check tests that every driver must pass,
 * parameterized by an address prefix. tools/estc-engine-test runs it.
 */
#ifndef ESTC_CONFORMANCE_H
#define ESTC_CONFORMANCE_H

#include <stdio.h>

/*
 * Runs every case against objects derived from @prefix, with the driver
 * module at @driver_path loaded first when not NULL. Prints one line per
 * case to @out and a closing "N passed, N failed" line. Returns the number
 * of failed cases, or -1 when the suite could not start.
 */
int estc_conformance_run(const char *prefix, const char *driver_path, FILE *out);

#endif
