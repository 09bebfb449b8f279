/* SPDX-License-Identifier: Apache-2.0 */
#ifndef EXAMPLE_DRIVER_H
#define EXAMPLE_DRIVER_H

#include <estc/engine.h>

/* The "example:" engine driver; see example_driver.c. */
extern const struct estc_driver example_driver;

/* Module entry point, for estc_engine_load_module(). */
const struct estc_driver *estc_driver_entry(void);

#endif
