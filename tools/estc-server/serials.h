/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The serial numbers a CA issued (hex strings), to keep them unique: a hash
 * set, so that a look-up costs the same with ten or ten million entries.
 * Not locked: the caller serializes.
 */
#ifndef ESTC_SERVER_SERIALS_H
#define ESTC_SERVER_SERIALS_H

#include <stddef.h>

struct srv_serials {
    char **slots;  /* cap entries, NULL when free; open addressing */
    size_t n, cap; /* cap: 0 or a power of two, at least twice n */
};

/* 1 when @hex is in the set, else 0. */
int srv_serials_has(const struct srv_serials *set, const char *hex);
/* Adds a copy of @hex (a no-op when it is there). 0, or -1 out of memory
 * (the set unchanged). */
int srv_serials_add(struct srv_serials *set, const char *hex);
/* Frees the entries; the set is empty after. */
void srv_serials_free(struct srv_serials *set);

#endif
