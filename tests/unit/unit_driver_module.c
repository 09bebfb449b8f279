/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A driver module for the estc_engine_load_module() tests, built in several
 * variants (UNIT_MODULE_VARIANT):
 *   0  a valid version-2 driver "unitmod" whose key_public answers
 *      ESTC_ERR_TIMEOUT, an answer no built-in driver gives
 *   1  an entry point that returns NULL
 *   2  a version-1 driver "unitmodv1"
 *   3  no entry point at all
 *   4  a version-1 driver "pkcs11": a stand-in (a fake) for the plug-in of
 *      an older library left in the plug-in folder, which the registry
 *      loads and then refuses
 * It uses the header only: nothing of libestc is linked in.
 */
#include <stddef.h>

#include <estc/engine.h>

#ifndef UNIT_MODULE_VARIANT
#error "UNIT_MODULE_VARIANT must be defined"
#endif

static estc_err m_generate(estc_ctx *c, void *s, const estc_address *a, estc_key_type t)
{
    (void)c, (void)s, (void)a, (void)t;
    return ESTC_ERR_UNSUPPORTED;
}

static estc_err m_public(estc_ctx *c, void *s, const estc_address *a, estc_buf *b)
{
    (void)c, (void)s, (void)a, (void)b;
    return ESTC_ERR_TIMEOUT;
}

static estc_err m_sign(estc_ctx *c, void *s, const estc_address *a, estc_sig_alg al, estc_hash h,
                       const uint8_t *d, size_t l, estc_buf *b)
{
    (void)c, (void)s, (void)a, (void)al, (void)h, (void)d, (void)l, (void)b;
    return ESTC_ERR_NOT_FOUND;
}

static estc_err m_remove(estc_ctx *c, void *s, const estc_address *a)
{
    (void)c, (void)s, (void)a;
    return ESTC_ERR_NOT_FOUND;
}

static estc_err m_store(estc_ctx *c, void *s, const estc_address *a, estc_obj_kind k,
                        const uint8_t *d, size_t l)
{
    (void)c, (void)s, (void)a, (void)k, (void)d, (void)l;
    return ESTC_ERR_UNSUPPORTED;
}

static estc_err m_list(estc_ctx *c, void *s, const estc_address *p, estc_obj_kind k, estc_list_fn f,
                       void *arg)
{
    (void)c, (void)s, (void)p, (void)k, (void)f, (void)arg;
    return ESTC_OK;
}

static estc_err m_exists(estc_ctx *c, void *s, const estc_address *a, estc_obj_kind k, bool *found)
{
    (void)c, (void)s, (void)a, (void)k;
    *found = false;
    return ESTC_OK;
}

static estc_err m_derive(estc_ctx *c, void *s, const estc_address *p, estc_obj_kind k,
                         const char *n, char **out)
{
    (void)c, (void)s, (void)p, (void)k, (void)n, (void)out;
    return ESTC_ERR_UNSUPPORTED;
}

static const struct estc_driver module_driver = {
    .api_version =
        UNIT_MODULE_VARIANT == 2 || UNIT_MODULE_VARIANT == 4 ? 1 : ESTC_DRIVER_API_VERSION,
    .scheme = UNIT_MODULE_VARIANT == 2   ? "unitmodv1"
              : UNIT_MODULE_VARIANT == 4 ? "pkcs11"
                                         : "unitmod",
    .description = "unit test module",
    .key_generate = m_generate,
    .key_public = m_public,
    .key_sign = m_sign,
    .key_remove = m_remove,
    .cert_store = m_store,
    .cert_load = m_public,
    .cert_remove = m_remove,
    .list = m_list,
    .exists = m_exists,
    .address_derive = m_derive,
};

#if UNIT_MODULE_VARIANT == 3
/* Some other symbol, so the module is a valid shared object. */
const struct estc_driver *unit_not_the_entry(void);
const struct estc_driver *unit_not_the_entry(void)
{
    return &module_driver;
}
#else
const struct estc_driver *estc_driver_entry(void);
const struct estc_driver *estc_driver_entry(void)
{
    return UNIT_MODULE_VARIANT == 1 ? NULL : &module_driver;
}
#endif
