/* SPDX-License-Identifier: Apache-2.0 */
/* The set of issued serial numbers, see serials.h. */
#include "serials.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a: the serials are random, any spread of their bits does. */
static size_t hash(const char *hex)
{
    uint64_t h = 14695981039346656037u;
    for (; *hex != '\0'; hex++)
        h = (h ^ (unsigned char)*hex) * 1099511628211u;
    return (size_t)h;
}

/* The slot holding @hex, or the free slot where it would go. */
static size_t slot(char *const *slots, size_t cap, const char *hex)
{
    size_t i = hash(hex) & (cap - 1);
    while (slots[i] != NULL && strcmp(slots[i], hex) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

int srv_serials_has(const struct srv_serials *set, const char *hex)
{
    return set->cap > 0 && set->slots[slot(set->slots, set->cap, hex)] != NULL;
}

int srv_serials_add(struct srv_serials *set, const char *hex)
{
    char *copy;
    size_t i;

    if (srv_serials_has(set, hex))
        return 0;
    if (set->n + 1 > set->cap / 2) { /* at most half full: short probes */
        size_t ncap = set->cap ? set->cap * 2 : 128;
        char **n = ncap > SIZE_MAX / sizeof(*n) ? NULL : calloc(ncap, sizeof(*n));
        if (n == NULL)
            return -1;
        for (i = 0; i < set->cap; i++) {
            if (set->slots[i] != NULL)
                n[slot(n, ncap, set->slots[i])] = set->slots[i];
        }
        free(set->slots);
        set->slots = n;
        set->cap = ncap;
    }
    copy = strdup(hex);
    if (copy == NULL)
        return -1;
    set->slots[slot(set->slots, set->cap, hex)] = copy;
    set->n++;
    return 0;
}

void srv_serials_free(struct srv_serials *set)
{
    size_t i;
    for (i = 0; i < set->cap; i++)
        free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof(*set));
}
