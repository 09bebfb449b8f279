/* SPDX-License-Identifier: Apache-2.0 */
/*
 * multipart-core (RFC 8710, CF 62): a flat CBOR array of Content-Format /
 * representation pairs. Only the CBOR subset the format uses is read:
 * unsigned integers, definite byte strings, null, one definite array.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define CBOR_UINT 0
#define CBOR_BSTR 2
#define CBOR_ARRAY 4
#define CBOR_NULL 0xf6

typedef struct cbor {
    const uint8_t *p;
    size_t len;
} cbor;

/* The head of the next item: major type and argument. */
static estc_err cbor_head(cbor *c, int *major, uint64_t *arg)
{
    if (c->len == 0)
        return ESTC_ERR_FORMAT;
    uint8_t ib = c->p[0];
    *major = ib >> 5;
    uint8_t ai = ib & 0x1f;
    size_t n;
    if (ai < 24)
        n = 0;
    else if (ai == 24)
        n = 1;
    else if (ai == 25)
        n = 2;
    else if (ai == 26)
        n = 4;
    else if (ai == 27)
        n = 8;
    else
        return ESTC_ERR_FORMAT; /* 28-30 reserved, 31 indefinite length */
    if (c->len - 1 < n)
        return ESTC_ERR_FORMAT;
    uint64_t v = ai < 24 ? ai : 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | c->p[1 + i];
    c->p += 1 + n;
    c->len -= 1 + n;
    *arg = v;
    return ESTC_OK;
}

static void part_clear(estc__multipart_part *part)
{
    estc_buf_free(&part->data);
}

void estc__multipart_free(estc__multipart *mp)
{
    if (mp == NULL)
        return;
    for (size_t i = 0; i < mp->n; i++)
        part_clear(&mp->parts[i]);
    free(mp->parts);
    mp->parts = NULL;
    mp->n = 0;
}

static estc_err parse_multipart(const uint8_t *in, size_t len, estc__multipart *out)
{
    cbor c = {in, len};
    int major;
    uint64_t count;
    estc_err err = cbor_head(&c, &major, &count);
    if (err != ESTC_OK)
        return err;
    if (major != CBOR_ARRAY || count % 2 != 0)
        return ESTC_ERR_FORMAT;
    if (count / 2 > ESTC__MAX_MULTIPART_PARTS)
        return ESTC_ERR_LIMIT;
    /* Each pair needs at least two bytes: refuse counts the input cannot hold. */
    if (count > c.len)
        return ESTC_ERR_FORMAT;
    size_t pairs = (size_t)(count / 2);
    if (pairs > 0) {
        out->parts = calloc(pairs, sizeof(*out->parts));
        if (out->parts == NULL)
            return ESTC_ERR_NOMEM;
    }
    for (size_t i = 0; i < pairs; i++) {
        uint64_t cf;
        if ((err = cbor_head(&c, &major, &cf)) != ESTC_OK)
            return err;
        if (major != CBOR_UINT || cf > 65535)
            return ESTC_ERR_FORMAT;
        estc__multipart_part *part = &out->parts[out->n++];
        part->cf = (int)cf;
        if (c.len > 0 && c.p[0] == CBOR_NULL) {
            c.p++;
            c.len--;
            part->present = false;
            continue;
        }
        uint64_t blen;
        if ((err = cbor_head(&c, &major, &blen)) != ESTC_OK)
            return err;
        if (major != CBOR_BSTR)
            return ESTC_ERR_FORMAT; /* text, nested arrays, maps, tags, floats */
        if (blen > c.len)
            return ESTC_ERR_FORMAT;
        if ((err = estc_buf_set(&part->data, c.p, (size_t)blen)) != ESTC_OK)
            return err;
        part->present = true;
        c.p += blen;
        c.len -= (size_t)blen;
    }
    return c.len == 0 ? ESTC_OK : ESTC_ERR_FORMAT;
}

estc_err estc__codec_multipart(const uint8_t *in, size_t len, estc__multipart *out)
{
    if (out == NULL || (in == NULL && len != 0))
        return ESTC_ERR_INVALID_ARG;
    out->parts = NULL;
    out->n = 0;
    if (len > ESTC__MAX_MULTIPART_SIZE)
        return ESTC_ERR_LIMIT;
    estc_err err = parse_multipart(in, len, out);
    if (err != ESTC_OK)
        estc__multipart_free(out);
    return err;
}

const estc__multipart_part *estc__multipart_find(const estc__multipart *mp, int cf)
{
    if (mp == NULL)
        return NULL;
    for (size_t i = 0; i < mp->n; i++)
        if (mp->parts[i].cf == cf)
            return &mp->parts[i];
    return NULL;
}

/* Write a head with the shortest argument encoding; returns the bytes used. */
static size_t put_head(uint8_t *out, int major, uint64_t arg)
{
    uint8_t mt = (uint8_t)(major << 5);
    if (arg < 24) {
        out[0] = mt | (uint8_t)arg;
        return 1;
    }
    size_t n = arg <= 0xff ? 1 : arg <= 0xffff ? 2 : arg <= 0xffffffffu ? 4 : 8;
    out[0] = mt | (uint8_t)(n == 1 ? 24 : n == 2 ? 25 : n == 4 ? 26 : 27);
    for (size_t i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(arg >> (8 * (n - 1 - i)));
    return 1 + n;
}

estc_err estc__multipart_encode(const estc__multipart_part *parts, size_t n, estc_buf *out)
{
    if (out == NULL || (parts == NULL && n != 0))
        return ESTC_ERR_INVALID_ARG;
    if (n > ESTC__MAX_MULTIPART_PARTS)
        return ESTC_ERR_LIMIT;
    size_t total = 9;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].cf < 0 || parts[i].cf > 65535)
            return ESTC_ERR_INVALID_ARG;
        if (parts[i].present && parts[i].data.data == NULL && parts[i].data.len != 0)
            return ESTC_ERR_INVALID_ARG;
        size_t dlen = parts[i].present ? parts[i].data.len : 0;
        if (dlen > ESTC__MAX_MULTIPART_SIZE)
            return ESTC_ERR_LIMIT;
        total += 3 + 9 + dlen;
    }
    uint8_t *buf = malloc(total);
    if (buf == NULL)
        return ESTC_ERR_NOMEM;
    size_t pos = put_head(buf, CBOR_ARRAY, 2 * (uint64_t)n);
    for (size_t i = 0; i < n; i++) {
        pos += put_head(buf + pos, CBOR_UINT, (uint64_t)parts[i].cf);
        if (!parts[i].present) {
            buf[pos++] = CBOR_NULL;
            continue;
        }
        pos += put_head(buf + pos, CBOR_BSTR, parts[i].data.len);
        if (parts[i].data.len > 0)
            memcpy(buf + pos, parts[i].data.data, parts[i].data.len);
        pos += parts[i].data.len;
    }
    estc_buf_free(out);
    out->data = buf;
    out->len = pos;
    return ESTC_OK;
}
