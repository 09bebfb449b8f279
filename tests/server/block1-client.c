/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A client that POSTs a body in Block1 blocks it numbers itself (libcoap's
 * own block handling is off), with or without Size1, and stops at the first
 * answer that is not 2.31. coap-client always sends Size1, and cannot send a
 * body larger than it can hold; this one can send a body of any size made
 * on the fly.
 *
 *   block1-client HOST PORT CA_FILE PATH [options]
 *     --cert FILE --key FILE   client certificate (default: none)
 *     --body FILE              the body (default: --junk)
 *     --junk BYTES             a body of this many filler bytes
 *     --no-size1               never send Size1
 *     --block-size N           16 ... 1024 (default 1024)
 *     --sessions N             open N sessions first (GET /.well-known/core on
 *                              each), keep them, then exit (no body);
 *                              BLOCK1_HOLD=SECONDS keeps them open that long
 *
 * Prints "code C.DD blocks N" (and "size1 S" when the last answer had
 * Size1) on stdout; with --body, the last answer's payload goes to
 * $BLOCK1_OUT when set. Exit 0 when an answer came, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client-setup.h"

struct result {
    int done;
    coap_pdu_code_t code;
    long size1;
    uint8_t body[8192];
    size_t len;
};

static coap_response_t on_response(coap_session_t *session, const coap_pdu_t *sent,
                                   const coap_pdu_t *received, const coap_mid_t mid)
{
    struct result *r = coap_get_app_data(coap_session_get_context(session));
    coap_opt_iterator_t it;
    coap_opt_t *o;
    const uint8_t *data;
    size_t len;
    (void)sent;
    (void)mid;

    r->code = coap_pdu_get_code(received);
    o = coap_check_option(received, COAP_OPTION_SIZE1, &it);
    r->size1 = o ? (long)coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o)) : -1;
    r->len = 0;
    if (coap_get_data(received, &len, &data) && len <= sizeof(r->body)) {
        memcpy(r->body, data, len);
        r->len = len;
    }
    r->done = 1;
    return COAP_RESPONSE_OK;
}

static void add_path(coap_pdu_t *pdu, const char *path)
{
    while (*path == '/')
        path++;
    while (*path != '\0') {
        const char *slash = strchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : strlen(path);
        coap_add_option(pdu, COAP_OPTION_URI_PATH, n, (const uint8_t *)path);
        path += n;
        while (*path == '/')
            path++;
    }
}

static int wait_answer(coap_context_t *ctx, struct result *r)
{
    for (int waited = 0; !r->done && waited < 30000; waited += 50)
        coap_io_process(ctx, 50);
    return r->done;
}

int main(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL, *body_file = NULL;
    long junk = -1, sessions = 0;
    int size1 = 1, szx = 6, rc = 1;
    coap_context_t *ctx;
    coap_session_t *s;
    coap_address_t dst;
    coap_dtls_pki_t pki;
    struct result *r = calloc(1, sizeof(*r));
    uint8_t *body = NULL;
    size_t body_len = 0, chunk;
    unsigned long num = 0;

    if (argc < 5 || r == NULL) {
        fprintf(stderr, "usage: block1-client HOST PORT CA_FILE PATH [options]\n");
        return 2;
    }
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc)
            cert = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "--body") == 0 && i + 1 < argc)
            body_file = argv[++i];
        else if (strcmp(argv[i], "--junk") == 0 && i + 1 < argc)
            junk = atol(argv[++i]);
        else if (strcmp(argv[i], "--no-size1") == 0)
            size1 = 0;
        else if (strcmp(argv[i], "--sessions") == 0 && i + 1 < argc)
            sessions = atol(argv[++i]);
        else if (strcmp(argv[i], "--block-size") == 0 && i + 1 < argc) {
            long v = atol(argv[++i]);
            for (szx = 0; szx < 6 && (16L << szx) < v; szx++)
                ;
        } else {
            fprintf(stderr, "block1-client: bad argument %s\n", argv[i]);
            return 2;
        }
    }
    chunk = (size_t)16 << szx;
    if (body_file != NULL) {
        FILE *f = fopen(body_file, "rb");
        long n;
        if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
            fseek(f, 0, SEEK_SET) != 0 || (body = malloc((size_t)n + 1)) == NULL ||
            fread(body, 1, (size_t)n, f) != (size_t)n) {
            fprintf(stderr, "block1-client: cannot read %s\n", body_file);
            return 2;
        }
        fclose(f);
        body_len = (size_t)n;
    } else if (sessions == 0) {
        if (junk < 0) {
            fprintf(stderr, "block1-client: --body or --junk\n");
            return 2;
        }
        body_len = (size_t)junk;
    }

    /* The blocks are ours: no block mode. */
    ctx = client_context(argv[1], argv[2], &dst, r, on_response, 0);
    if (ctx == NULL)
        return 2;
    client_pki(&pki, argv[3], cert, key);

    if (sessions > 0) {
        /* Many idle sessions, one socket each: for the session-limit test. */
        long ok = 0;
        for (long i = 0; i < sessions; i++) {
            coap_pdu_t *pdu;
            uint8_t tok[8];
            size_t tl;
            s = coap_new_client_session_pki(ctx, NULL, &dst, COAP_PROTO_DTLS, &pki);
            if (s == NULL)
                continue;
            pdu = coap_new_pdu(COAP_MESSAGE_CON, COAP_REQUEST_CODE_GET, s);
            if (pdu == NULL)
                continue;
            coap_session_new_token(s, &tl, tok);
            coap_add_token(pdu, tl, tok);
            add_path(pdu, ".well-known/core");
            r->done = 0;
            if (coap_send(s, pdu) != COAP_INVALID_MID && wait_answer(ctx, r) &&
                r->code == COAP_RESPONSE_CODE_CONTENT)
                ok++;
        }
        printf("sessions %ld\n", ok);
        fflush(stdout);
        /* BLOCK1_HOLD=SECONDS: keep them open that long (memory measurements). */
        if (getenv("BLOCK1_HOLD") != NULL)
            sleep((unsigned)atoi(getenv("BLOCK1_HOLD")));
        coap_free_context(ctx);
        coap_cleanup();
        free(r);
        return ok == sessions ? 0 : 1;
    }

    s = coap_new_client_session_pki(ctx, NULL, &dst, COAP_PROTO_DTLS, &pki);
    if (s == NULL) {
        fprintf(stderr, "block1-client: no session\n");
        return 1;
    }
    for (;;) {
        size_t off = num * chunk;
        size_t n = body_len - off < chunk ? body_len - off : chunk;
        int more = off + n < body_len;
        uint8_t tok[8], buf[8], *blk = NULL;
        size_t tl;
        coap_pdu_t *pdu = coap_new_pdu(COAP_MESSAGE_CON, COAP_REQUEST_CODE_POST, s);

        if (pdu == NULL)
            break;
        coap_session_new_token(s, &tl, tok);
        coap_add_token(pdu, tl, tok);
        add_path(pdu, argv[4]);
        coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
                        coap_encode_var_safe(buf, sizeof(buf), 286), buf);
        coap_add_option(pdu, COAP_OPTION_ACCEPT, coap_encode_var_safe(buf, sizeof(buf), 287),
                        buf);
        coap_add_option(pdu, COAP_OPTION_BLOCK1,
                        coap_encode_var_safe(buf, sizeof(buf),
                                             (unsigned)((num << 4) | ((unsigned)more << 3) |
                                                        (unsigned)szx)),
                        buf);
        if (size1 && num == 0)
            coap_add_option(pdu, COAP_OPTION_SIZE1,
                            coap_encode_var_safe(buf, sizeof(buf), (unsigned)body_len), buf);
        if (body != NULL) {
            coap_add_data(pdu, n, body + off);
        } else {
            blk = malloc(n ? n : 1);
            if (blk == NULL)
                break;
            memset(blk, 'A' + (int)(num % 26), n);
            coap_add_data(pdu, n, blk);
            free(blk);
        }
        r->done = 0;
        if (coap_send(s, pdu) == COAP_INVALID_MID || !wait_answer(ctx, r))
            break;
        num++;
        if (!more || r->code != COAP_RESPONSE_CODE(231)) {
            rc = 0;
            break;
        }
    }
    if (r->done) {
        printf("code %d.%02d blocks %lu", r->code >> 5, r->code & 31, num);
        if (r->size1 >= 0)
            printf(" size1 %ld", r->size1);
        printf("\n");
        if (getenv("BLOCK1_OUT") != NULL) {
            FILE *o = fopen(getenv("BLOCK1_OUT"), "wb");
            if (o != NULL) {
                fwrite(r->body, 1, r->len, o);
                fclose(o);
            }
        }
    } else {
        printf("no answer after %lu blocks\n", num);
    }
    coap_session_release(s);
    coap_free_context(ctx);
    coap_cleanup();
    free(body);
    free(r);
    return rc;
}
