/*
 * Automatic re-enrollment: the renewal formula, retries spread over the
 * time left, the fallback to /sen, the /crts policy, and the tick that a
 * daemon loop calls.
 */
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "client_internal.h"

#define DEFAULT_MARGIN (30 * 24 * 3600)

void estc_schedule_config_init(estc_schedule_config *cfg)
{
    if (cfg == NULL)
        return;
    *cfg = (estc_schedule_config){.enabled = true,
                                  .nominal_usage = 0.9,
                                  .max_margin_s = DEFAULT_MARGIN,
                                  .max_retries = 3,
                                  .retry_spacing_s = 60,
                                  .rekey = false};
}

static bool usage_ok(double u)
{
    return u > 0.0 && u <= 1.0;
}

estc_err estc_schedule_renewal_time(int64_t provisioned, int64_t not_before, int64_t not_after,
                                    double nominal_usage, int64_t max_margin_s, int64_t *out)
{
    if (out == NULL || not_after < not_before || !usage_ok(nominal_usage) || max_margin_s < 0)
        return ESTC_ERR_INVALID_ARG;
    /* A clock behind notBefore (or an unknown time) counts from notBefore;
     * one past notAfter makes the renewal due at once. */
    int64_t p = provisioned;
    if (p < not_before)
        p = not_before;
    if (p > not_after)
        p = not_after;
    /* Both terms in a range that cannot overflow: p <= not_after. */
    int64_t by_usage = p + (int64_t)(nominal_usage * (double)(not_after - p));
    int64_t by_margin =
        max_margin_s >= not_after - INT64_MIN / 2 ? INT64_MIN / 2 : not_after - max_margin_s;
    int64_t t = by_margin > by_usage ? by_margin : by_usage;
    *out = t > not_after ? not_after : t;
    return ESTC_OK;
}

static const estc_schedule_config *config(const estc_client *c, estc_schedule_config *tmp)
{
    if (c->sched_set)
        return &c->sched;
    estc_schedule_config_init(tmp);
    return tmp;
}

estc_err estc_client_set_schedule(estc_client *c, const estc_schedule_config *cfg)
{
    if (c == NULL || cfg == NULL || !usage_ok(cfg->nominal_usage) || cfg->max_margin_s < 0 ||
        cfg->retry_spacing_s < 1)
        return ESTC_ERR_INVALID_ARG;
    c->sched = *cfg;
    c->sched_set = true;
    return ESTC_OK;
}

estc_err estc_client_set_clock(estc_client *c, estc_clock_fn fn, void *arg)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    c->clock = fn;
    c->clock_arg = arg;
    return ESTC_OK;
}

int64_t estc_client_now(const estc_client *c)
{
    if (c == NULL)
        return 0;
    return c->clock != NULL ? c->clock(c->clock_arg) : (int64_t)time(NULL);
}

estc_err estc_client_set_cacerts_policy(estc_client *c, estc_cacerts_policy policy,
                                        estc_trust_export_fn fn, void *arg)
{
    if (c == NULL || policy < ESTC_CACERTS_NEVER || policy > ESTC_CACERTS_GLOBAL ||
        (policy >= ESTC_CACERTS_EST_AND_BOOTSTRAP && fn == NULL))
        return ESTC_ERR_INVALID_ARG;
    c->policy = policy;
    c->policy_set = true;
    c->export_fn = fn;
    c->export_arg = arg;
    return ESTC_OK;
}

static estc_cacerts_policy policy(const estc_client *c)
{
    return c->policy_set ? c->policy : ESTC_CACERTS_EST;
}

estc_err estc_trust_export_file(void *arg, bool global, const estc_buf *certs, size_t n)
{
    (void)global;
    if (arg == NULL || (certs == NULL && n > 0))
        return ESTC_ERR_INVALID_ARG;
    BIO *bio = BIO_new(BIO_s_mem());
    estc_err err = bio == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    for (size_t i = 0; err == ESTC_OK && i < n; i++) {
        const unsigned char *p = certs[i].data;
        X509 *x = d2i_X509(NULL, &p, (long)certs[i].len);
        if (x == NULL || PEM_write_bio_X509(bio, x) != 1)
            err = ESTC_ERR_FORMAT;
        X509_free(x);
    }
    char *data = NULL;
    long len = err == ESTC_OK ? BIO_get_mem_data(bio, &data) : 0;
    if (err == ESTC_OK) {
        err = estc_file_write(NULL, arg, data, len > 0 ? (size_t)len : 0, 0644, ESTC_FILE_REPLACE);
        if (err != ESTC_OK && err != ESTC_ERR_NOMEM)
            err = ESTC_ERR_IO;
    }
    BIO_free(bio);
    return err;
}

/* ---- the certificate the schedule refers to ------------------------------ */

static bool asn1_to_unix(const ASN1_TIME *t, int64_t *out)
{
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int days = 0, secs = 0;
    bool ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t) == 1;
    ASN1_TIME_free(epoch);
    if (ok)
        *out = (int64_t)days * 86400 + secs;
    return ok;
}

struct cert_view {
    bool have;
    int64_t not_before, not_after;
};

/*
 * Loads the enrolled certificate. A certificate the schedule has not seen
 * before (enrolled now, or by a direct call) starts a new provisioning
 * period at @now, with no failures.
 */
static estc_err current_cert(estc_client *c, int64_t now, struct cert_view *cv)
{
    estc_buf der = {0};
    *cv = (struct cert_view){0};
    estc_err err = estc_cert_load(c->ctx, c->cert_addr, &der);
    if (err == ESTC_ERR_NOT_FOUND) {
        estc_ctx_clear_error(c->ctx);
        return ESTC_OK;
    }
    if (err != ESTC_OK)
        return err;
    const unsigned char *p = der.data;
    X509 *x = d2i_X509(NULL, &p, (long)der.len);
    uint8_t md[32];
    unsigned mdlen = 0;
    bool ok = x != NULL && asn1_to_unix(X509_get0_notBefore(x), &cv->not_before) &&
              asn1_to_unix(X509_get0_notAfter(x), &cv->not_after) &&
              EVP_Digest(der.data, der.len, md, &mdlen, EVP_sha256(), NULL) == 1;
    X509_free(x);
    estc_buf_free(&der);
    if (!ok)
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "%s: not a certificate", c->cert_addr);
    cv->have = true;
    if (!c->have_cert_hash || memcmp(md, c->cert_hash, sizeof(md)) != 0) {
        memcpy(c->cert_hash, md, sizeof(md));
        c->have_cert_hash = true;
        c->provisioned = now;
        c->failures = 0;
        c->fallback = false;
        c->retry_at = 0;
    }
    return ESTC_OK;
}

static int64_t renewal_time(const estc_client *c, const struct cert_view *cv)
{
    estc_schedule_config tmp;
    const estc_schedule_config *cfg = config(c, &tmp);
    int64_t t = cv->not_after;
    if (estc_schedule_renewal_time(c->provisioned, cv->not_before, cv->not_after,
                                   cfg->nominal_usage, cfg->max_margin_s, &t) != ESTC_OK)
        t = cv->not_before; /* a certificate that ends before it begins: now */
    return t;
}

estc_err estc_client_renewal_info(estc_client *c, int64_t *not_before, int64_t *not_after,
                                  int64_t *provisioned, int64_t *renewal, unsigned *failures)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    struct cert_view cv;
    estc_err err = current_cert(c, estc_client_now(c), &cv);
    if (err != ESTC_OK)
        return err;
    if (!cv.have)
        return estc_error(c->ctx, ESTC_ERR_NOT_FOUND, "no certificate at %s", c->cert_addr);
    if (not_before != NULL)
        *not_before = cv.not_before;
    if (not_after != NULL)
        *not_after = cv.not_after;
    if (provisioned != NULL)
        *provisioned = c->provisioned;
    if (renewal != NULL)
        *renewal = renewal_time(c, &cv);
    if (failures != NULL)
        *failures = c->failures;
    return ESTC_OK;
}

estc_err estc_client_next_deadline(estc_client *c, int64_t *when)
{
    if (c == NULL || when == NULL)
        return ESTC_ERR_INVALID_ARG;
    int64_t now = estc_client_now(c);
    estc_schedule_config tmp;
    const estc_schedule_config *cfg = config(c, &tmp);
    struct cert_view cv;
    estc_err err = current_cert(c, now, &cv);
    if (err != ESTC_OK)
        return err;
    if (!cv.have || c->fallback || c->retry_at != 0 || c->crts_due)
        *when = c->retry_at != 0 ? c->retry_at : now;
    else if (!cfg->enabled)
        *when = ESTC_NEVER;
    else
        *when = renewal_time(c, &cv);
    return ESTC_OK;
}

/* ---- the tick ------------------------------------------------------------------ */

const char *estc_tick_result_name(estc_tick_result what)
{
    switch (what) {
    case ESTC_TICK_NOTHING:
        return "nothing";
    case ESTC_TICK_CACERTS:
        return "cacerts";
    case ESTC_TICK_CACERTS_FAILED:
        return "cacerts-failed";
    case ESTC_TICK_ENROLLED:
        return "enrolled";
    case ESTC_TICK_ENROLL_FAILED:
        return "enroll-failed";
    case ESTC_TICK_REENROLLED:
        return "reenrolled";
    case ESTC_TICK_RETRY_SCHEDULED:
        return "retry-scheduled";
    case ESTC_TICK_FALLBACK_ENROLLED:
        return "fallback-enrolled";
    case ESTC_TICK_FALLBACK_FAILED:
        return "fallback-failed";
    }
    return "unknown";
}

static estc_err do_cacerts(estc_client *c, int64_t now, const estc_schedule_config *cfg,
                           estc_tick_result *what)
{
    estc_err err = estc_client_cacerts(c);
    if (err == ESTC_OK && c->export_fn != NULL && policy(c) >= ESTC_CACERTS_EST_AND_BOOTSTRAP) {
        err = c->export_fn(c->export_arg, policy(c) == ESTC_CACERTS_GLOBAL, c->explicit_certs.items,
                           c->explicit_certs.n);
        if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "/crts: the trust-store export failed");
    }
    if (err == ESTC_OK) {
        c->crts_due = false;
        c->retry_at = 0;
        *what = ESTC_TICK_CACERTS;
    } else {
        /* /crts and the export run again after the spacing. */
        c->crts_due = true;
        c->retry_at = now + cfg->retry_spacing_s;
        *what = ESTC_TICK_CACERTS_FAILED;
    }
    return err;
}

/* After a new certificate: a new period, and /crts when the policy says. */
static void renewed(estc_client *c, int64_t now)
{
    struct cert_view cv;
    c->have_cert_hash = false; /* the new certificate starts its period now */
    if (current_cert(c, now, &cv) != ESTC_OK)
        estc_ctx_clear_error(c->ctx);
    c->failures = 0;
    c->fallback = false;
    c->retry_at = 0;
    c->crts_due = policy(c) != ESTC_CACERTS_NEVER;
}

estc_err estc_client_tick(estc_client *c, estc_tick_result *what)
{
    if (c == NULL || what == NULL)
        return ESTC_ERR_INVALID_ARG;
    *what = ESTC_TICK_NOTHING;
    if (c->busy > 0)
        return estc_error(c->ctx, ESTC_ERR_STATE, "tick: an operation is in flight");
    int64_t now = estc_client_now(c);
    estc_schedule_config tmp;
    const estc_schedule_config *cfg = config(c, &tmp);
    struct cert_view cv;
    estc_err err = current_cert(c, now, &cv);
    if (err != ESTC_OK)
        return err;
    if (c->retry_at != 0 && now < c->retry_at)
        return ESTC_OK;

    if (!cv.have) {
        if (policy(c) != ESTC_CACERTS_NEVER && (!c->have_explicit || c->crts_due))
            return do_cacerts(c, now, cfg, what);
        err = estc_client_enroll(c);
        if (err == ESTC_OK) {
            renewed(c, now);
            c->crts_due = false; /* the CA set is fresh */
            *what = ESTC_TICK_ENROLLED;
        } else {
            c->retry_at = now + cfg->retry_spacing_s;
            *what = ESTC_TICK_ENROLL_FAILED;
        }
        return err;
    }

    bool due = c->fallback || c->retry_at != 0 || (cfg->enabled && now >= renewal_time(c, &cv));
    if (!due) {
        if (c->crts_due)
            return do_cacerts(c, now, cfg, what);
        return ESTC_OK;
    }
    /* An expired certificate cannot authenticate /sren: straight to /sen. */
    if (c->fallback || now >= cv.not_after || c->failures > cfg->max_retries) {
        estc_log(c->ctx, ESTC_LOG_INFO, "renewal: /sen with the bootstrap credentials");
        err = estc_client_enroll(c);
        if (err == ESTC_OK) {
            renewed(c, now);
            *what = ESTC_TICK_FALLBACK_ENROLLED;
        } else {
            c->fallback = true;
            c->retry_at = now + cfg->retry_spacing_s;
            *what = ESTC_TICK_FALLBACK_FAILED;
        }
        return err;
    }
    err = estc_client_reenroll(c, cfg->rekey);
    if (err == ESTC_OK) {
        renewed(c, now);
        *what = ESTC_TICK_REENROLLED;
        return ESTC_OK;
    }
    c->failures++;
    if (c->failures > cfg->max_retries) {
        /* Retries used up: the fallback is due at once. */
        c->fallback = true;
        c->retry_at = now;
    } else {
        /* Spread what is left (the retries and the fallback) evenly over the
         * time until notAfter, never closer than the spacing. */
        int64_t left = (int64_t)(cfg->max_retries - c->failures) + 2;
        int64_t step = cv.not_after > now ? (cv.not_after - now) / left : 0;
        if (step < cfg->retry_spacing_s)
            step = cfg->retry_spacing_s;
        c->retry_at = now + step;
    }
    *what = ESTC_TICK_RETRY_SCHEDULED;
    return err;
}
