/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FAKE PKCS#11 module for one failure no real token we test with produces:
 * a token that accepts CKA_EXTRACTABLE=FALSE in a template and still makes
 * an extractable key. It forwards every call to the real module named by
 * ESTC_FAKE_REAL_MODULE (SoftHSM2 in the tests), except that it turns
 * CKA_EXTRACTABLE of a key template to TRUE. The driver must read the attributes back, refuse the key and
 * leave nothing on the token.
 */
#include <p11-kit/pkcs11.h>

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static CK_FUNCTION_LIST real;
static CK_FUNCTION_LIST fake;

/* A copy of @t with CKA_EXTRACTABLE TRUE. */
static CK_ATTRIBUTE *turned(const CK_ATTRIBUTE *t, CK_ULONG n)
{
    static CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE *c = calloc(n > 0 ? n : 1, sizeof(*c));
    if (c == NULL)
        return NULL;
    for (CK_ULONG i = 0; i < n; i++) {
        c[i] = t[i];
        if (t[i].type == CKA_EXTRACTABLE)
            c[i].pValue = &yes;
    }
    return c;
}

static CK_RV fake_generate(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pub,
                           CK_ULONG npub, CK_ATTRIBUTE_PTR priv, CK_ULONG npriv,
                           CK_OBJECT_HANDLE_PTR hpub, CK_OBJECT_HANDLE_PTR hpriv)
{
    CK_ATTRIBUTE *c = turned(priv, npriv);
    if (c == NULL)
        return CKR_HOST_MEMORY;
    CK_RV rv = real.C_GenerateKeyPair(s, m, pub, npub, c, npriv, hpub, hpriv);
    free(c);
    return rv;
}

static CK_RV fake_create(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                         CK_OBJECT_HANDLE_PTR h)
{
    CK_ATTRIBUTE *c = turned(t, n);
    if (c == NULL)
        return CKR_HOST_MEMORY;
    CK_RV rv = real.C_CreateObject(s, c, n, h);
    free(c);
    return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
    const char *path = getenv("ESTC_FAKE_REAL_MODULE");
    if (out == NULL)
        return CKR_ARGUMENTS_BAD;
    if (path == NULL)
        return CKR_GENERAL_ERROR;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return CKR_GENERAL_ERROR;
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    CK_FUNCTION_LIST_PTR list = NULL;
    if (get == NULL || get(&list) != CKR_OK || list == NULL)
        return CKR_GENERAL_ERROR;
    real = *list;
    fake = *list;
    fake.C_GenerateKeyPair = fake_generate;
    fake.C_CreateObject = fake_create;
    *out = &fake;
    return CKR_OK;
}
