/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: the tpm2: driver's TSS2 PRIVATE KEY file codec (PEM or
 * DER), and the round trip of whatever it accepts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "tpm2_keyfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tpm2_keyfile kf, again;
    if (estc__tpm2_keyfile_parse(data, size, &kf) != NULL)
        return 0;
    char *pem = NULL;
    size_t len = 0;
    if (estc__tpm2_keyfile_encode(&kf, &pem, &len) == NULL) {
        /* What was read is written and read back the same. */
        if (estc__tpm2_keyfile_parse((const uint8_t *)pem, len, &again) != NULL ||
            again.parent != kf.parent || again.empty_auth != kf.empty_auth ||
            memcmp(&again.pub, &kf.pub, sizeof(kf.pub)) != 0 ||
            memcmp(&again.priv, &kf.priv, sizeof(kf.priv)) != 0)
            abort();
        OPENSSL_free(pem);
    }
    return 0;
}
