/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Restore-or-enroll, the renewal loop and persistence in a file: the
 * smallest daemon built on <estc/persist.h> and <estc/schedule.h>.
 *
 *   persistence-example STATE SERVER-URI SERVER-CA BOOT-CERT BOOT-KEY [once]
 *
 * The enrolled key stays in the mem: engine, so the state file holds it
 * (PKCS#8): keep the file 0600, as the file stream writes it. With "once"
 * the program does what is due now (first enrollment, or a renewal) and
 * exits; without it, it renews until killed. A kill at any moment is safe:
 * the journal has written every step.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <estc/client.h>
#include <estc/persist.h>
#include <estc/schedule.h>

static int fail(estc_ctx *ctx, const char *what, estc_err err)
{
    fprintf(stderr, "%s: %s: %s\n", what, estc_strerror(err), estc_ctx_error_detail(ctx));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 6 && !(argc == 7 && strcmp(argv[6], "once") == 0)) {
        fprintf(stderr, "usage: %s STATE SERVER-URI SERVER-CA BOOT-CERT BOOT-KEY [once]\n",
                argv[0]);
        return 2;
    }
    const char *state = argv[1];
    bool once = argc == 7;
    estc_ctx *ctx = NULL;
    estc_client *client = NULL;
    if (estc_ctx_new(&ctx) != ESTC_OK)
        return 1;
    estc_err err = estc_client_new(ctx, &client);
    int rc = 1;
    if (err != ESTC_OK) {
        rc = fail(ctx, "client", err);
        goto out;
    }

    /* Configuration first: it is not part of the state. */
    if ((err = estc_client_set_server(client, argv[2])) != ESTC_OK ||
        (err = estc_client_add_trust_anchor(client, argv[3], false)) != ESTC_OK ||
        (err = estc_client_set_credentials(client, argv[4], argv[5])) != ESTC_OK ||
        (err = estc_client_set_subject(client, "/CN=persistence-example")) != ESTC_OK) {
        rc = fail(ctx, "configure", err);
        goto out;
    }

    /* One file for the state and the journal: written atomically (temporary
     * file, fsync, rename), mode 0600. */
    estc_state_stream stream;
    estc_state_stream_file(&stream, state);

    /* Restore, or start fresh: the first tick enrolls with the bootstrap
     * credentials. Restore also purges what a crash left half made. */
    err = estc_client_restore(client, &stream);
    if (err == ESTC_ERR_NOT_FOUND) {
        printf("no state yet: enrolling\n");
    } else if (err != ESTC_OK) {
        rc = fail(ctx, "restore", err); /* the file is left as it was */
        goto out;
    } else {
        printf("restored\n");
    }
    /* Every step that creates or replaces engine objects is journaled. */
    estc_client_set_journal(client, &stream);

    for (int step = 0;; step++) {
        estc_tick_result what;
        err = estc_client_tick(client, &what);
        if (what != ESTC_TICK_NOTHING) {
            printf("%s%s%s\n", estc_tick_result_name(what), err != ESTC_OK ? ": " : "",
                   err != ESTC_OK ? estc_ctx_error_detail(ctx) : "");
            /* The journal wrote the final state already; persisting again is
             * harmless and marks the record unchanged. */
            if (estc_client_is_ready_for_persistence(client))
                estc_client_persist(client, &stream);
        }
        int64_t when, now = estc_client_now(client);
        estc_client_next_deadline(client, &when);
        if (once && (when > now || err != ESTC_OK || step > 8))
            break;
        if (when > now) {
            /* A real daemon also wakes on signals; see tools/estc/daemon.c. */
            struct timespec ts = {.tv_sec = when - now > 3600 ? 3600 : (time_t)(when - now)};
            nanosleep(&ts, NULL);
        }
    }
    int64_t not_after = 0, renewal = 0;
    if (estc_client_renewal_info(client, NULL, &not_after, NULL, &renewal, NULL) == ESTC_OK &&
        not_after > estc_client_now(client)) {
        printf("enrolled: valid for %lld s more, renewal in %lld s\n",
               (long long)(not_after - estc_client_now(client)),
               (long long)(renewal - estc_client_now(client)));
        rc = 0;
    }
out:
    /* Freeing removes nothing: the state describes the engine objects. */
    estc_client_free(client);
    estc_ctx_free(ctx);
    return rc;
}
