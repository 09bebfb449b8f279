/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The entry point of a driver built as a plug-in (engines/plugins/): the
 * library dlopen()s estc-<scheme>.so on the first use of the scheme and
 * asks this function for the driver. ESTC_PLUGIN_DRIVER names the driver's
 * structure.
 */
#include <estc/engine.h>

extern const struct estc_driver ESTC_PLUGIN_DRIVER;

__attribute__((visibility("default"))) const struct estc_driver *estc_driver_entry(void);

const struct estc_driver *estc_driver_entry(void)
{
    return &ESTC_PLUGIN_DRIVER;
}
