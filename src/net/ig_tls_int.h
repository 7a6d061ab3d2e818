/* What ig_tls.c and ig_net.c share. net/ only. */
#ifndef IG_TLS_INT_H
#define IG_TLS_INT_H
#include <openssl/ssl.h>

#include "ig_tls.h"

struct ig_tls_ctx {
    SSL_CTX *ssl;
    int insecure;
};

/** A new SSL for an accepted connection, from the server's current context. */
SSL *ig_tls_server_ssl(ig_tls_server *s);
/** The SSL ex_data index where a connection keeps its ig_tls_conn. */
int ig_tls_conn_index(void);
/** The connection's session slot was handed a new session (the new-session callback). */
int ig_tls_new_session(SSL *ssl, SSL_SESSION *sess);
/** Why OpenSSL failed, for a log line or an error message: into buf. */
const char *ig_tls_reason(SSL *ssl, int ret, char *buf, size_t len);
#endif
