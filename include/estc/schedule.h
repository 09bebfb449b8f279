/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc — automatic re-enrollment: when to renew, retries, the fallback to a
 * new enrollment, and the trust-store policy for /crts.
 *
 * A daemon drives the client with two calls:
 *
 *     for (;;) {
 *         estc_tick_result what;
 *         estc_err err = estc_client_tick(client, &what);
 *         if (what != ESTC_TICK_NOTHING)
 *             estc_client_persist(client, &stream);   // log what and err too
 *         int64_t when;
 *         estc_client_next_deadline(client, &when);
 *         sleep until `when` (or a signal);
 *     }
 *
 * Times are seconds of the client's clock (UNIX time by default; another
 * clock can be injected). See docs/reenrollment.md.
 */
#ifndef ESTC_SCHEDULE_H
#define ESTC_SCHEDULE_H

#include <stdbool.h>
#include <stdint.h>

#include <estc/client.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "Never": the deadline when nothing will ever be due. */
#define ESTC_NEVER INT64_MAX

/* The clock: the current time in seconds (UNIX time by default). */
typedef int64_t (*estc_clock_fn)(void *arg);

typedef struct estc_schedule_config {
    /* false: estc_client_tick() only enrolls a client without a certificate
     * and never renews. Default true. */
    bool enabled;
    /* Renew after this share of the validity from provisioning,
     * 0 < nominal_usage <= 1. Default 0.9. */
    double nominal_usage;
    /* ... but not earlier than this many seconds before notAfter: the
     * later of the two times wins, so at most this much validity is given
     * up on long-lived certificates. Default 30 days (2592000); 0: the
     * margin term is notAfter itself. */
    int64_t max_margin_s;
    /* Failed /sren attempts tried again before falling back to /sen with
     * the bootstrap credentials (and a new key). Default 3. */
    unsigned max_retries;
    /* The shortest wait between two attempts, in seconds. Retries are
     * spread over the time left until notAfter, never closer than this.
     * After the fallback fails too, /sen is tried again every spacing.
     * Default 60. */
    int64_t retry_spacing_s;
    /* /sren with a new key instead of the same one. Default false. */
    bool rekey;
} estc_schedule_config;

/** estc_schedule_config_init() - fill @cfg with the defaults above. NULL ok. */
void estc_schedule_config_init(estc_schedule_config *cfg);

/**
 * estc_schedule_renewal_time() - the renewal formula, for testing and tools:
 *
 *     max(notAfter - max_margin, p + nominal_usage * (notAfter - p))
 *
 * where p is @provisioned clamped into [@not_before, @not_after] (a clock
 * behind notBefore counts from notBefore; an unknown provisioning time,
 * 0, counts from notBefore). The result is never after @not_after.
 * Returns ESTC_OK, or ESTC_ERR_INVALID_ARG (NULL @out, @not_after before
 * @not_before, @nominal_usage outside (0, 1], negative @max_margin_s).
 */
estc_err estc_schedule_renewal_time(int64_t provisioned, int64_t not_before, int64_t not_after,
                                    double nominal_usage, int64_t max_margin_s, int64_t *out);

/**
 * estc_client_set_schedule() - copy @cfg into the client (the retry state
 * is kept). Returns ESTC_OK or ESTC_ERR_INVALID_ARG (a value out of range).
 */
estc_err estc_client_set_schedule(estc_client *client, const estc_schedule_config *cfg);

/**
 * estc_client_set_renewal_jitter() - spread the renewals of many devices
 * (a factory batch with the same validity) over time: the renewal time of
 * estc_schedule_renewal_time() moves earlier by an offset in [0, J), where
 *
 *     J = min(@share * (renewal time - p), @max_s)
 *
 * with p the provisioning time as there. The offset is derived from the
 * SHA-256 of the certificate's DER: it stays the same for one certificate
 * across restarts (nothing is stored) and differs between certificates,
 * hence between devices. The renewal time never moves later, nor before p.
 * 0 <= @share <= 1 and @max_s >= 0; either 0 (the default): no jitter.
 * estc_client_renewal_info() and estc_client_next_deadline() report the
 * moved time. Returns ESTC_OK or ESTC_ERR_INVALID_ARG.
 */
estc_err estc_client_set_renewal_jitter(estc_client *client, double share, int64_t max_s);

/**
 * estc_client_set_clock() - use @fn (with @arg) as the clock; NULL: UNIX
 * time. Tests inject a clock to move time. Returns ESTC_OK or
 * ESTC_ERR_INVALID_ARG.
 */
estc_err estc_client_set_clock(estc_client *client, estc_clock_fn fn, void *arg);

/** estc_client_now() - the client's clock now (0 for NULL). */
int64_t estc_client_now(const estc_client *client);

/* ---- the trust-store policy ------------------------------------------- */

/*
 * Whether estc_client_tick() runs /crts and which connections use its
 * result (the seed's est_cacerts_policy):
 */
typedef enum estc_cacerts_policy {
    /* /crts never runs: the configured trust anchors are all there is. */
    ESTC_CACERTS_NEVER = 0,
    /* /crts runs before the first enrollment and after each renewal; the
     * CA certificates are the trust store of the EST server's connection
     * only. The default. */
    ESTC_CACERTS_EST,
    /* The same, and the set is also handed to the export callback for the
     * bootstrap connection (e.g. an LwM2M Bootstrap Server sharing the
     * endpoint) each time it changes. */
    ESTC_CACERTS_EST_AND_BOOTSTRAP,
    /* The same, and the set also replaces the system-wide trust store: the
     * export callback is asked to install it (e.g. estc_trust_export_file()
     * writing the PEM bundle other programs read). */
    ESTC_CACERTS_GLOBAL,
} estc_cacerts_policy;

/*
 * Receives the CA certificates (DER, @n of them) of a successful /crts under
 * ESTC_CACERTS_EST_AND_BOOTSTRAP (then @global is false) and
 * ESTC_CACERTS_GLOBAL (@global true). A failure is logged and makes the
 * tick report ESTC_TICK_CACERTS_FAILED; the EST trust store is kept.
 */
typedef estc_err (*estc_trust_export_fn)(void *arg, bool global, const estc_buf *certs, size_t n);

/**
 * estc_client_set_cacerts_policy() - the policy, and the export callback
 * the last two policies need (ESTC_ERR_INVALID_ARG without one).
 */
estc_err estc_client_set_cacerts_policy(estc_client *client, estc_cacerts_policy policy,
                                        estc_trust_export_fn fn, void *arg);

/**
 * estc_trust_export_file() - a ready export callback: @arg is a file path
 * (const char *) replaced atomically by the PEM bundle of the certificates,
 * mode 0644 (public data).
 */
estc_err estc_trust_export_file(void *arg, bool global, const estc_buf *certs, size_t n);

/* ---- driving it -------------------------------------------------------- */

typedef enum estc_tick_result {
    ESTC_TICK_NOTHING = 0,       /* nothing was due */
    ESTC_TICK_CACERTS,           /* /crts ran and succeeded */
    ESTC_TICK_CACERTS_FAILED,    /* /crts failed; tried again after the spacing */
    ESTC_TICK_ENROLLED,          /* /sen: first enrollment */
    ESTC_TICK_ENROLL_FAILED,     /* /sen failed; tried again after the spacing */
    ESTC_TICK_REENROLLED,        /* /sren succeeded */
    ESTC_TICK_RETRY_SCHEDULED,   /* /sren failed; another try at the deadline */
    ESTC_TICK_FALLBACK_ENROLLED, /* /sren kept failing (or the certificate
                                    expired): /sen with the bootstrap
                                    credentials and a new key succeeded */
    ESTC_TICK_FALLBACK_FAILED,   /* that /sen failed too; again after the spacing */
} estc_tick_result;

/** estc_tick_result_name() - "reenrolled", "retry-scheduled", ...; never NULL. */
const char *estc_tick_result_name(estc_tick_result what);

/**
 * estc_client_tick() - do what is due now, at most one operation:
 *  - no certificate: /crts first when the policy wants it and there is no
 *    CA set yet, else /sen with the bootstrap credentials;
 *  - the renewal time passed: /sren (retries, then the fallback to /sen);
 *    an expired certificate goes to the fallback at once;
 *  - after a renewal, /crts when the policy wants it.
 * A certificate the client did not enroll itself (configured with
 * estc_client_set_enrolled(), or replaced behind its back) begins its
 * provisioning period when the tick first sees it; one it enrolled began
 * at the commit.
 * @what receives what happened (ESTC_TICK_NOTHING when nothing was due).
 * Returns ESTC_OK (nothing due, or the operation succeeded), the failed
 * operation's error (its detail in estc_ctx_error_detail(); the next
 * attempt is scheduled), ESTC_ERR_INVALID_ARG or ESTC_ERR_STATE (called
 * from inside an operation). An operation ended by the cancel callback
 * (ESTC_ERR_CANCELLED, see estc_client_set_cancel()) counts as no failure:
 * it is due again at once.
 */
estc_err estc_client_tick(estc_client *client, estc_tick_result *what);

/**
 * estc_client_renew_now() - makes the renewal due now, whatever the
 * schedule said (also during a pause between retries): the next
 * estc_client_tick() renews the held certificate (/sren, or the fallback
 * /sen when that is due), or enrolls when none is held. A failure counts
 * as a failed attempt, as on schedule. The due time is part of the state
 * that estc_client_persist() writes. Returns ESTC_OK or
 * ESTC_ERR_INVALID_ARG, or ESTC_ERR_STATE inside an operation.
 */
estc_err estc_client_renew_now(estc_client *client);

/**
 * estc_client_next_deadline() - when estc_client_tick() next has work, in
 * the client's clock: now or earlier when something is due, ESTC_NEVER
 * when nothing ever will be (renewal disabled and enrolled). Sleep until
 * then. Changes nothing (a certificate the tick has not seen yet counts as
 * provisioned now). Returns ESTC_OK or ESTC_ERR_INVALID_ARG.
 */
estc_err estc_client_next_deadline(estc_client *client, int64_t *when);

/**
 * estc_client_renewal_info() - the schedule's view of the enrolled
 * certificate, for status displays: its notBefore and notAfter, the
 * provisioning time, the renewal time and the failed /sren attempts since
 * the last success. Any output may be NULL. Changes nothing, like
 * estc_client_next_deadline().
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG or ESTC_ERR_NOT_FOUND (no
 * certificate), ESTC_ERR_FORMAT (not a certificate).
 */
estc_err estc_client_renewal_info(estc_client *client, int64_t *not_before, int64_t *not_after,
                                  int64_t *provisioned, int64_t *renewal, unsigned *failures);

/**
 * estc_client_last_error() - the last failed estc_client_tick() since the
 * last new certificate, for status displays: when it failed (the client's
 * clock), its error and its detail text (estc_ctx_error_detail() at the
 * time, secrets hidden as by estc_redact(); valid until the next tick or
 * restore). A tick ended by the cancel callback is no failure; a new
 * certificate (enrolled, renewed or a fallback enrollment) clears it. The
 * persisted state carries it (estc_client_persist()). Any output may be
 * NULL. Returns ESTC_OK, ESTC_ERR_INVALID_ARG or ESTC_ERR_NOT_FOUND (no
 * failure since).
 */
estc_err estc_client_last_error(estc_client *client, int64_t *when, estc_err *err,
                                const char **detail);

#ifdef __cplusplus
}
#endif
#endif
