/* TLS contexts (ig_tls.h). */
#include "ig_tls.h"

#include <errno.h>
#include <pthread.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ig_tls_int.h"

static int conn_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void make_index(void)
{
    conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int ig_tls_conn_index(void)
{
    pthread_once(&index_once, make_index);
    return conn_index;
}

/* OpenSSL's queue of errors, oldest first, as one line. */
static void openssl_errors(char *err, size_t errlen, const char *what)
{
    unsigned long e;
    size_t n = (size_t)snprintf(err, errlen, "%s", what);
    while ((e = ERR_get_error()) != 0 && n + 3 < errlen) {
        char one[256];
        ERR_error_string_n(e, one, sizeof(one));
        n += (size_t)snprintf(err + n, errlen - n, ": %s", one);
    }
    ERR_clear_error();
}

const char *ig_tls_reason(SSL *ssl, int ret, char *buf, size_t len)
{
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (v != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(v));
        ERR_clear_error();
        return buf;
    }
    int e = ssl ? SSL_get_error(ssl, ret) : SSL_ERROR_SSL;
    if (e == SSL_ERROR_SSL && ERR_peek_error()) {
        char one[256];
        ERR_error_string_n(ERR_peek_last_error(), one, sizeof(one));
        const char *r = ERR_reason_error_string(ERR_peek_last_error());
        snprintf(buf, len, "TLS error: %s", r ? r : one);
        ERR_clear_error();
        return buf;
    }
    ERR_clear_error();
    snprintf(buf, len, "TLS error (%d)", e);
    return buf;
}

int ig_tls_client_new(const ig_tls_client_opts *o, ig_tls_ctx **out, char *err, size_t errlen)
{
    ig_tls_ctx *c = calloc(1, sizeof(*c));
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    if (!c || !s) {
        openssl_errors(err, errlen, "cannot make a TLS context");
        goto fail;
    }
    c->ssl = s;
    c->insecure = o->insecure;
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    /* idle pooled connections keep no read or write buffers */
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* sessions go to the connection's slot (per thread and worker), not to an internal cache */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(s, ig_tls_new_session);
    if (o->insecure) {
        SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
        if (o->n_ca_files == 0 && !SSL_CTX_set_default_verify_paths(s)) {
            openssl_errors(err, errlen, "cannot load the system's CA store");
            goto fail;
        }
        for (int i = 0; i < o->n_ca_files; i++)
            if (!SSL_CTX_load_verify_locations(s, o->ca_files[i], NULL)) {
                char what[600];
                snprintf(what, sizeof(what), "cannot load CA certificates from %s", o->ca_files[i]);
                openssl_errors(err, errlen, what);
                goto fail;
            }
    }
    if (o->cert_file || o->key_file) {
        if (!o->cert_file || !o->key_file) {
            snprintf(err, errlen, "--client-cert-path and --client-key-path go together");
            goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(s, o->cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(s, o->key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(s) != 1) {
            char what[600];
            snprintf(what, sizeof(what), "cannot use the client certificate %s with the key %s", o->cert_file,
                     o->key_file);
            openssl_errors(err, errlen, what);
            goto fail;
        }
    }
    *out = c;
    return 0;
fail:
    ig_tls_ctx_free(c);
    if (!c)
        SSL_CTX_free(s);
    return -EINVAL;
}

void ig_tls_ctx_free(ig_tls_ctx *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ssl);
    free(c);
}

void ig_tls_session_free(void *session)
{
    SSL_SESSION_free(session);
}
