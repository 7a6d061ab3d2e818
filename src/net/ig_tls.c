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

struct ig_tls_server {
    ig_tls_server_opts o;
    pthread_mutex_t lock; /* held to swap the context, and to make an SSL from it */
    SSL_CTX *cur;
};

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen; i += 1u + in[i])
        if (in[i] == 8 && i + 9 <= inlen && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
    return SSL_TLSEXT_ERR_NOACK; /* no protocol we know: go on without one (HTTP/1.1) */
}

static SSL_CTX *server_ctx(const ig_tls_server_opts *o, char *err, size_t errlen)
{
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    char what[700];
    if (!s) {
        openssl_errors(err, errlen, "cannot make a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_alpn_select_cb(s, alpn_select, NULL);
    static const unsigned char sid[] = "infergate";
    SSL_CTX_set_session_id_context(s, sid, sizeof(sid) - 1);
    if (SSL_CTX_use_certificate_chain_file(s, o->cert_file) != 1) {
        snprintf(what, sizeof(what), "--tls-cert-path %s: cannot load the certificate", o->cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(s, o->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(s) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH || ERR_peek_last_error() == 0)
            snprintf(what, sizeof(what), "--tls-key-path %s does not match --tls-cert-path %s", o->key_file,
                     o->cert_file);
        else
            snprintf(what, sizeof(what), "--tls-key-path %s: cannot load the key", o->key_file);
        goto fail;
    }
    if (o->client_ca_file) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca_file);
        if (!names || SSL_CTX_load_verify_locations(s, o->client_ca_file, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(what, sizeof(what), "--tls-client-ca-path %s: cannot load the CA certificates",
                     o->client_ca_file);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(s, names);
        SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return s;
fail:
    openssl_errors(err, errlen, what);
    SSL_CTX_free(s);
    return NULL;
}

int ig_tls_server_new(const ig_tls_server_opts *o, ig_tls_server **out, char *err, size_t errlen)
{
    SSL_CTX *ctx = server_ctx(o, err, errlen);
    if (!ctx)
        return -EINVAL;
    ig_tls_server *s = calloc(1, sizeof(*s));
    if (!s) {
        SSL_CTX_free(ctx);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->o = *o;
    s->cur = ctx;
    pthread_mutex_init(&s->lock, NULL);
    *out = s;
    return 0;
}

int ig_tls_server_reload(ig_tls_server *s, char *err, size_t errlen)
{
    SSL_CTX *ctx = server_ctx(&s->o, err, errlen);
    if (!ctx)
        return -EINVAL;
    pthread_mutex_lock(&s->lock);
    SSL_CTX *old = s->cur;
    s->cur = ctx;
    pthread_mutex_unlock(&s->lock);
    SSL_CTX_free(old); /* open connections hold references of their own */
    return 0;
}

SSL *ig_tls_server_ssl(ig_tls_server *s)
{
    pthread_mutex_lock(&s->lock);
    SSL *ssl = SSL_new(s->cur);
    pthread_mutex_unlock(&s->lock);
    return ssl;
}

void ig_tls_server_free(ig_tls_server *s)
{
    if (!s)
        return;
    SSL_CTX_free(s->cur);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void ig_tls_session_free(void *session)
{
    SSL_SESSION_free(session);
}
