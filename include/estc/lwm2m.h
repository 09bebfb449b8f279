/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc — LwM2M integration: EST-coaps for LwM2M server accounts whose
 * Security Mode (/0/x/2) is 4, "Certificate mode with EST".
 *
 * An LwM2M client calls this API at its own events and gets back the
 * credentials to use for each server account:
 *
 *     estc_lwm2m_new(client, &cfg, &lw);
 *     if (estc_lwm2m_restore(lw) == ESTC_ERR_NOT_FOUND) {
 *         ... Bootstrap-Request, Writes to /0 and /1, Bootstrap-Finish ...
 *         estc_client_set_transport(client, <the bootstrap session>);
 *         estc_lwm2m_bootstrap_finished(lw, accounts, n);    // crts, sen
 *     }
 *     estc_lwm2m_connection_opening(lw, instance, &creds);  // per account
 *     estc_lwm2m_tick(lw, &what);  // sren on schedule, persisted
 *
 * The EST server is the LwM2M Bootstrap Server's endpoint: the EST requests
 * go through the client's transport, which may be the LwM2M client's own
 * CoAP session to that server (estc_transport_new()).
 *
 * The EST state and the accounts (the Security object instances this API
 * was given) are persisted together in one record on one stream, so they
 * never disagree: see docs/lwm2m.md.
 *
 * Threads: as for the client (one thread at a time).
 */
#ifndef ESTC_LWM2M_H
#define ESTC_LWM2M_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <estc/client.h>
#include <estc/persist.h>
#include <estc/schedule.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Security Mode values of /0/x/2 (LwM2M 1.1 Security object). */
#define ESTC_LWM2M_MODE_PSK 0
#define ESTC_LWM2M_MODE_RPK 1
#define ESTC_LWM2M_MODE_CERT 2
#define ESTC_LWM2M_MODE_NOSEC 3
#define ESTC_LWM2M_MODE_CERT_EST 4

/* Most accounts held; the longest server URI. */
#define ESTC_LWM2M_MAX_ACCOUNTS 16
#define ESTC_LWM2M_MAX_URI 255

/* One Security object instance, as the Bootstrap Server wrote it. */
typedef struct estc_lwm2m_account {
    uint16_t instance;        /* x of /0/x */
    const char *server_uri;   /* /0/x/0; may be NULL */
    bool bootstrap;           /* /0/x/1: the Bootstrap Server's account */
    int security_mode;        /* /0/x/2 */
    uint16_t short_server_id; /* /0/x/10; 0 for the bootstrap account */
} estc_lwm2m_account;

typedef struct estc_lwm2m_config {
    /* The factory (bootstrap) credentials, also given to the client with
     * estc_client_set_credentials(): engine addresses or PEM file paths.
     * Used by the bootstrap account when it is not in EST mode, or before
     * an enrollment. */
    const char *bootstrap_cert;
    const char *bootstrap_key;
    /* The trust anchor of the bootstrap connection (PEM file or address). */
    const char *bootstrap_trust;
    /* Which connections use the /crts result (the seed's
     * est_cacerts_policy); set on the client by estc_lwm2m_new(). */
    estc_cacerts_policy cacerts_policy;
    /* For ESTC_CACERTS_GLOBAL only: installs the system-wide trust store. */
    estc_trust_export_fn global_export;
    void *global_export_arg;
    /* Where the EST state and the accounts are persisted (required; the
     * structure is copied, its arg must outlive the handle). It is also
     * the client's journal. */
    estc_state_stream stream;
} estc_lwm2m_config;

/* The credentials for one account's (D)TLS connection. Strings are owned by
 * the handle and valid until its next call. */
typedef struct estc_lwm2m_credentials {
    bool est;         /* the certificate and key are the EST-enrolled ones */
    const char *cert; /* engine address or PEM path; NULL: the account does
                         not use certificates from estc (modes 0 to 3) */
    const char *key;
    /* The trust store: CA certificate addresses from /crts (n_trust of
     * them); when 0, trust_file (may be NULL: the application's own). */
    size_t n_trust;
    const char *const *trust;
    const char *trust_file;
} estc_lwm2m_credentials;

typedef struct estc_lwm2m estc_lwm2m;

/**
 * estc_lwm2m_new() - an integration handle for @client (configured: server
 * URI, bootstrap credentials, subject, enrolled addresses, schedule).
 * Sets the client's cacerts policy and journal.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL argument, no stream, a
 * global policy without global_export), ESTC_ERR_NOMEM.
 */
estc_err estc_lwm2m_new(estc_client *client, const estc_lwm2m_config *cfg, estc_lwm2m **out);

/** estc_lwm2m_free() - free the handle (not the client). NULL ok. */
void estc_lwm2m_free(estc_lwm2m *lw);

/**
 * estc_lwm2m_restore() - read the accounts and the EST state persisted
 * together. Returns ESTC_OK, ESTC_ERR_NOT_FOUND (nothing stored: bootstrap),
 * ESTC_ERR_FORMAT (corrupt: nothing changed), or estc_client_restore()'s
 * errors.
 */
estc_err estc_lwm2m_restore(estc_lwm2m *lw);

/**
 * estc_lwm2m_bootstrap_finished() - Bootstrap-Finish arrived after Writes
 * of these @n accounts (copied; they replace earlier ones). When one of
 * them is in mode 4 and the client holds no certificate, /crts (per the
 * policy) and /sen run now, over the client's transport; without a mode-4
 * account no EST request is sent. The accounts and the EST state are
 * persisted in either case.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL, n > ESTC_LWM2M_MAX_ACCOUNTS,
 * duplicate instances, a URI too long), the EST operation's error (the
 * accounts are still recorded; estc_lwm2m_tick() tries again), or the
 * stream's error.
 */
estc_err estc_lwm2m_bootstrap_finished(estc_lwm2m *lw, const estc_lwm2m_account *accounts,
                                       size_t n);

/**
 * estc_lwm2m_connection_opening() - the connection to the account with
 * Security instance @instance is about to open: its credentials into @out.
 * A mode-4 account gets the enrolled certificate and key (an enrollment is
 * tried first when there is none). The bootstrap account gets them too
 * when it is itself in mode 4, else the factory credentials. The trust
 * store follows the cacerts policy.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_NOT_FOUND (no such
 * account), ESTC_ERR_STATE (mode 4 but no certificate could be enrolled),
 * ESTC_ERR_NOMEM.
 */
estc_err estc_lwm2m_connection_opening(estc_lwm2m *lw, uint16_t instance,
                                       estc_lwm2m_credentials *out);

/**
 * estc_lwm2m_tick() - estc_client_tick() when some account is in mode 4
 * (else nothing is due), and the state persisted after any operation.
 * Returns what estc_client_tick() returns, or the stream's error.
 */
estc_err estc_lwm2m_tick(estc_lwm2m *lw, estc_tick_result *what);

/** estc_lwm2m_next_deadline() - when estc_lwm2m_tick() has work next. */
estc_err estc_lwm2m_next_deadline(estc_lwm2m *lw, int64_t *when);

/** estc_lwm2m_account_count() / estc_lwm2m_account_get() - the accounts held
 * (strings owned by the handle). get returns ESTC_ERR_NOT_FOUND past the end. */
size_t estc_lwm2m_account_count(const estc_lwm2m *lw);
estc_err estc_lwm2m_account_get(const estc_lwm2m *lw, size_t i, estc_lwm2m_account *out);

/** estc_lwm2m_uses_est() - some account is in mode 4 (EST runs). */
bool estc_lwm2m_uses_est(const estc_lwm2m *lw);

#ifdef __cplusplus
}
#endif
#endif
