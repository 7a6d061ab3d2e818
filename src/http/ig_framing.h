/* Strict request-head validation (RFC 9112), on top of llhttp: whatever a
 * worker might frame differently from us is refused here, before anything
 * is forwarded. Pure: unit-tested. */
#ifndef IG_FRAMING_H
#define IG_FRAMING_H
#include <stddef.h>
#include <string.h>

/** An RFC 9110 tchar: the bytes of a token (header names, codings, chunk extensions). */
static inline int ig_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/** A byte of a field value: field-vchar, SP and HTAB (obs-text allowed, as RFC 9110 does). */
static inline int ig_field_vchar(unsigned char c)
{
    return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f);
}

/**
 * Check one request head, from the request line through the empty line.
 * Refused: anything but CRLF line ends (bare CR or LF), obsolete line
 * folding, a request line other than `METHOD SP /origin-form SP HTTP/1.0|1.1`
 * (absolute form, authority form, CONNECT, '*'), invalid bytes in header
 * names or values, whitespace before a colon, more than one or a malformed
 * Content-Length, Transfer-Encoding other than exactly one "chunked",
 * both Content-Length and Transfer-Encoding, chunked in HTTP/1.0, and an
 * HTTP/1.1 request without exactly one valid Host.
 * Returns 0, or -EINVAL with a static reason in *why.
 */
int ig_framing_check_head(const char *head, size_t len, const char **why);
/**
 * Check the raw framing between two pieces of a chunked body: before the
 * first chunk's data `SIZE[;ext]CRLF`, before a later one
 * `CRLF SIZE[;ext]CRLF`; with last set, the end of the body instead:
 * `[CRLF] 0[;ext] CRLF CRLF` (no trailer fields). SIZE is 1 to 16 hex
 * digits; extensions are `;name[=token|"quoted"]` with no whitespace.
 * 0 or -EINVAL with a static reason.
 */
int ig_framing_check_chunk(const char *p, size_t n, int first, int last, const char **why);
/**
 * Split one field line line[0..n) (without its CRLF) into a token name and
 * a value trimmed of SP/HTAB, checking every byte (no folding, no
 * whitespace before the colon). 0, or -EINVAL with a static reason.
 */
int ig_framing_field_line(const char *line, size_t n, size_t *name_len, const char **value, size_t *vlen,
                          const char **why);
/** 1 when name is a token and value holds only field bytes (RFC 9110). */
int ig_framing_field_ok(const char *name, size_t nlen, const char *value, size_t vlen);
/** The length of the head at the start of buf (through the empty line), or 0 if none ends there. */
size_t ig_framing_head_len(const char *buf, size_t len);
#endif
