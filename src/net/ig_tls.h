/* TLS contexts (OpenSSL 3): one for talking to workers, one for clients
 * later; made once at start, shared by every loop thread and the control
 * thread (an SSL_CTX is safe to share once set up). */
#ifndef IG_TLS_H
#define IG_TLS_H
#include <stddef.h>

typedef struct ig_tls_ctx ig_tls_ctx;

typedef struct ig_tls_client_opts {
    const char *const *ca_files; /* trusted CAs (PEM); none: the system store */
    int n_ca_files;
    const char *cert_file, *key_file; /* a client certificate (mTLS), or NULL */
    int insecure;                     /* verify nothing: tests only */
} ig_tls_client_opts;

/** A context for connecting to workers: TLS 1.2+, ALPN http/1.1, the
 * peer's certificate and name checked unless insecure, sessions handed to
 * the connection's slot for resumption. 0, or -EINVAL with err filled. */
int ig_tls_client_new(const ig_tls_client_opts *o, ig_tls_ctx **out, char *err, size_t errlen);
void ig_tls_ctx_free(ig_tls_ctx *c);

/* The clients' side: a certificate and key (and optionally the CAs client
 * certificates must chain to), reloadable while connections stay. */
typedef struct ig_tls_server ig_tls_server;
typedef struct ig_tls_server_opts {
    const char *cert_file, *key_file;
    const char *client_ca_file; /* NULL: no client certificate asked for */
} ig_tls_server_opts;

/** Load the files (they must exist and match): TLS 1.2+, ALPN http/1.1,
 * session tickets and a session cache for resumption. 0, or -EINVAL with
 * err filled. The options' strings must outlive the server. */
int ig_tls_server_new(const ig_tls_server_opts *o, ig_tls_server **out, char *err, size_t errlen);
/** Load the files again (SIGHUP): new connections get the new certificate,
 * open ones keep theirs. 0, or -EINVAL with err filled and the old kept. */
int ig_tls_server_reload(ig_tls_server *s, char *err, size_t errlen);
void ig_tls_server_free(ig_tls_server *s);
/** Give back a session kept in a slot (ig_net_tls_connect). */
void ig_tls_session_free(void *session);
#endif
