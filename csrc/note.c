/*
 * note.c — C2SP signed notes, checkpoints and Go sumdb/note keys (note.h).
 *
 * The parser follows golang.org/x/mod/sumdb/note's Open step by step (UTF-8 and control
 * characters, the last blank line as separator, the "— " prefix, name and base64 checks,
 * the 100-signature cap) and adds the canonical-form checks listed in note.h, so that one
 * checkpoint has one spelling. Base64 is RFC 4648 §4 with padding, decoded here rather than
 * with OpenSSL's EVP_DecodeBlock, which accepts whitespace and cannot report the length of
 * padded input exactly.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "kimberlite/note.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "kimberlite/errors.h"

static const char SIG_PREFIX[] = "\xe2\x80\x94 "; /* U+2014 EM DASH, space */
#define SIG_PREFIX_LEN 4

/* ---- base64 (RFC 4648 §4, padded, canonical) -------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Encode in[0:n] to out (b64_encoded_len(n) bytes, no NUL). */
static void b64_encode(char *out, const uint8_t *in, size_t n)
{
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = '=';
    }
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/*
 * Decode in[0:n] into out (room for n / 4 * 3 bytes). Returns the decoded length, or -1 if
 * the input is not canonical padded base64 (length not a multiple of 4, a character outside
 * the alphabet, misplaced '=', non-zero padding bits).
 */
static long b64_decode(uint8_t *out, const char *in, size_t n)
{
    if (n % 4 != 0) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int pad = 0;
        if (last && in[i + 3] == '=') pad = (in[i + 2] == '=') ? 2 : 1;
        int v[4];
        for (int j = 0; j < 4 - pad; j++) {
            v[j] = b64_value(in[i + (size_t)j]);
            if (v[j] < 0) return -1;
        }
        for (int j = 4 - pad; j < 4; j++) v[j] = 0;
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        out[o++] = (uint8_t)(w >> 16);
        if (pad == 2) {
            if (w & 0xffff) return -1; /* non-zero padding bits */
            break;
        }
        out[o++] = (uint8_t)(w >> 8);
        if (pad == 1) {
            if (w & 0xff) return -1;
            break;
        }
        out[o++] = (uint8_t)w;
    }
    return (long)o;
}

/* ---- UTF-8 and names ----------------------------------------------------------------------- */

/*
 * Decode one UTF-8 code point at s[0:n] (n >= 1). Returns its byte length and sets *cp, or
 * 0 for an invalid sequence (overlong, surrogate, above U+10FFFF, truncated) — the cases
 * Go's utf8.DecodeRune reports as RuneError of size 1.
 */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        v = c & 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        v = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        v = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

/* Go's unicode.IsSpace. */
static int is_space(uint32_t c)
{
    switch (c) {
    case '\t': case '\n': case '\v': case '\f': case '\r': case ' ':
    case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f:
    case 0x3000:
        return 1;
    default:
        return c >= 0x2000 && c <= 0x200a;
    }
}

/* 1 if s[0:n] is valid UTF-8 without ASCII control characters, except "\n" when allow_nl. */
static int text_valid(const char *s, size_t n, int allow_nl)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_next(u + i, n - i, &cp);
        if (k == 0) return 0;
        if (cp < 0x20 && !(allow_nl && cp == '\n')) return 0;
        i += k;
    }
    return 1;
}

/* Go's isValidName: non-empty, UTF-8, no Unicode space, no '+'. */
static int go_name_valid(const char *name, size_t len)
{
    if (len == 0) return 0;
    const unsigned char *u = (const unsigned char *)name;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_next(u + i, len - i, &cp);
        if (k == 0 || is_space(cp) || cp == '+') return 0;
        i += k;
    }
    return 1;
}

int kmb_note_name_valid(const char *name, size_t len)
{
    if (len > KMB_NOTE_NAME_MAX || !go_name_valid(name, len)) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f) return 0;
    }
    return 1;
}

/* ---- keys -------------------------------------------------------------------------------- */

uint32_t kmb_note_key_id(const char *name, size_t len, const uint8_t pub[KMB_ED25519_PUBLIC_SIZE])
{
    static const uint8_t sep[2] = {0x0a, KMB_NOTE_ALG_ED25519};
    uint8_t h[32];
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, name, len);
    SHA256_Update(&c, sep, 2);
    SHA256_Update(&c, pub, KMB_ED25519_PUBLIC_SIZE);
    SHA256_Final(h, &c);
    return (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
}

/* Split s[0:n] at the first '+': the field before it and the rest after it. 0 if none. */
static int chop(const char **field, size_t *flen, const char **rest, size_t *rlen,
                const char *s, size_t n)
{
    const char *p = memchr(s, '+', n);
    if (p == NULL) return 0;
    *field = s;
    *flen = (size_t)(p - s);
    *rest = p + 1;
    *rlen = n - *flen - 1;
    return 1;
}

static int parse_hash(uint32_t *out, const char *s, size_t n)
{
    if (n != 8) return 0;
    uint32_t v = 0;
    for (size_t i = 0; i < 8; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else return 0;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 1;
}

/*
 * Parse "<name>+<hash>+<base64(0x01 || 32 bytes)>" (s[0:n]) into name, hash and key bytes.
 * `what` names the key kind in messages.
 */
static int parse_key_tail(char name[KMB_NOTE_NAME_MAX + 1], uint32_t *hash, uint8_t key[32],
                          const char *s, size_t n, const char *what)
{
    const char *nm, *rest, *hx, *b64;
    size_t nmlen, rlen, hxlen, b64len;
    if (!chop(&nm, &nmlen, &rest, &rlen, s, n) || !chop(&hx, &hxlen, &b64, &b64len, rest, rlen))
        return kmb_error_set(KMB_EINVAL, 0,
                             "malformed %s: expected <name>+<8 hex digits>+<base64 key>", what);
    if (!kmb_note_name_valid(nm, nmlen))
        return kmb_error_set(KMB_EINVAL, 0,
                             "malformed %s: the key name must be non-empty, without spaces, '+' "
                             "or control characters, at most %d bytes",
                             what, KMB_NOTE_NAME_MAX);
    if (!parse_hash(hash, hx, hxlen))
        return kmb_error_set(KMB_EINVAL, 0,
                             "malformed %s: the key hash must be 8 lowercase hex digits", what);
    uint8_t raw[48];
    long klen = b64len <= 48 ? b64_decode(raw, b64, b64len) : -1;
    if (klen < 0 || klen == 0) {
        OPENSSL_cleanse(raw, sizeof raw);
        return kmb_error_set(KMB_EINVAL, 0, "malformed %s: the key is not valid base64", what);
    }
    if (raw[0] != KMB_NOTE_ALG_ED25519) {
        OPENSSL_cleanse(raw, sizeof raw);
        return kmb_error_set(KMB_EINVAL, 0,
                             "%s uses algorithm 0x%02x; only Ed25519 (0x01) is supported", what,
                             raw[0]);
    }
    if (klen != 33) {
        OPENSSL_cleanse(raw, sizeof raw);
        return kmb_error_set(KMB_EINVAL, 0,
                             "malformed %s: an Ed25519 key is 32 bytes, this one is %ld", what,
                             klen - 1);
    }
    memcpy(name, nm, nmlen);
    name[nmlen] = '\0';
    memcpy(key, raw + 1, 32);
    OPENSSL_cleanse(raw, sizeof raw);
    return KMB_OK;
}

int kmb_note_verifier_parse(kmb_note_verifier *out, const char *vkey, size_t len)
{
    kmb_note_verifier v;
    memset(&v, 0, sizeof v); /* name bytes after the NUL too: structs compare with memcmp */
    int rc = parse_key_tail(v.name, &v.key_id, v.public_key, vkey, len, "verifier key");
    if (rc != KMB_OK) return rc;
    uint32_t id = kmb_note_key_id(v.name, strlen(v.name), v.public_key);
    if (id != v.key_id)
        return kmb_error_set(KMB_EINVAL, 0,
                             "verifier key hash %08" PRIx32 " does not match its key (%08" PRIx32
                             "): the key string was altered",
                             v.key_id, id);
    *out = v;
    return KMB_OK;
}

int kmb_note_signer_parse(kmb_note_signer *out, const char *skey, size_t len)
{
    static const char prefix[] = "PRIVATE+KEY+";
    if (len < sizeof prefix - 1 || memcmp(skey, prefix, sizeof prefix - 1) != 0)
        return kmb_error_set(KMB_EINVAL, 0,
                             "malformed signer key: it must start with PRIVATE+KEY+ (a verifier "
                             "key cannot sign)");
    kmb_note_signer s;
    memset(&s, 0, sizeof s);
    int rc = parse_key_tail(s.name, &s.key_id, s.seed, skey + sizeof prefix - 1,
                            len - (sizeof prefix - 1), "signer key");
    if (rc == KMB_OK) rc = kmb_ed25519_public(s.public_key, s.seed);
    if (rc == KMB_OK) {
        uint32_t id = kmb_note_key_id(s.name, strlen(s.name), s.public_key);
        if (id != s.key_id)
            rc = kmb_error_set(KMB_EINVAL, 0,
                               "signer key hash %08" PRIx32 " does not match its key (%08" PRIx32
                               "): the key string was altered",
                               s.key_id, id);
    }
    if (rc == KMB_OK) *out = s;
    kmb_note_signer_wipe(&s);
    return rc;
}

int kmb_note_signer_generate(kmb_note_signer *out, const char *name, size_t len)
{
    if (!kmb_note_name_valid(name, len))
        return kmb_error_set(KMB_EINVAL, 0,
                             "invalid key name: it must be non-empty, without spaces, '+' or "
                             "control characters, valid UTF-8, at most %d bytes",
                             KMB_NOTE_NAME_MAX);
    kmb_note_signer s;
    memset(&s, 0, sizeof s);
    int rc = kmb_ed25519_generate(s.seed, s.public_key);
    if (rc == KMB_OK) {
        memcpy(s.name, name, len);
        s.name[len] = '\0';
        s.key_id = kmb_note_key_id(name, len, s.public_key);
        *out = s;
    }
    kmb_note_signer_wipe(&s);
    return rc;
}

void kmb_note_signer_verifier(kmb_note_verifier *out, const kmb_note_signer *s)
{
    memcpy(out->name, s->name, sizeof out->name);
    out->key_id = s->key_id;
    memcpy(out->public_key, s->public_key, sizeof out->public_key);
}

void kmb_note_signer_wipe(kmb_note_signer *s)
{
    OPENSSL_cleanse(s, sizeof *s);
}

static int format_key(char *out, size_t cap, const char *prefix, const char *name,
                      uint32_t key_id, const uint8_t key[32])
{
    uint8_t raw[33];
    char b64[44];
    raw[0] = KMB_NOTE_ALG_ED25519;
    memcpy(raw + 1, key, 32);
    b64_encode(b64, raw, sizeof raw);
    OPENSSL_cleanse(raw, sizeof raw);
    int n = snprintf(out, cap, "%s%s+%08" PRIx32 "+%.44s", prefix, name, key_id, b64);
    OPENSSL_cleanse(b64, sizeof b64);
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0) OPENSSL_cleanse(out, cap);
        return kmb_error_set(KMB_EINVAL, 0, "key string buffer too small (%zu bytes)", cap);
    }
    return n;
}

int kmb_note_signer_format(char *out, size_t cap, const kmb_note_signer *s)
{
    return format_key(out, cap, "PRIVATE+KEY+", s->name, s->key_id, s->seed);
}

int kmb_note_verifier_format(char *out, size_t cap, const kmb_note_verifier *v)
{
    return format_key(out, cap, "", v->name, v->key_id, v->public_key);
}

/* ---- notes ------------------------------------------------------------------------------- */

static int malformed(const char *why)
{
    return kmb_error_set(KMB_ENOTE, 0, "malformed note: %s", why);
}

int kmb_note_parse(kmb_note **out, const void *note, size_t len)
{
    *out = NULL;
    const char *msg = note;
    if (!text_valid(msg, len, 1))
        return malformed("not valid UTF-8, or a control character other than newline");
    /* The last blank line separates the body from the signatures. */
    size_t split = len;
    for (size_t i = len; i >= 2; i--) {
        if (msg[i - 1] == '\n' && msg[i - 2] == '\n') {
            split = i - 2;
            break;
        }
    }
    if (split == len) return malformed("no blank line between the text and the signatures");
    if (split + 2 == len) return malformed("no signature lines after the blank line");
    if (msg[len - 1] != '\n') return malformed("the last signature line does not end in a newline");
    if (split == 0) return malformed("the text before the signatures is empty");

    /* One block: the struct, a copy of the text, then room for the decoded signatures. */
    kmb_note *n = malloc(sizeof *n + len + 1 + len);
    if (n == NULL) return kmb_error_set(KMB_ENOMEM, 0, "out of memory parsing a note");
    char *text = (char *)(n + 1);
    uint8_t *sigbuf = (uint8_t *)text + len + 1;
    memcpy(text, msg, len);
    text[len] = '\0';
    n->text = text;
    n->text_len = len;
    n->body_len = split + 1;
    n->nsigs = 0;

    size_t pos = split + 2, used = 0;
    int rc = KMB_OK;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = (size_t)(nl - line);
        pos += llen + 1;
        if (llen < SIG_PREFIX_LEN || memcmp(line, SIG_PREFIX, SIG_PREFIX_LEN) != 0) {
            rc = malformed("a line after the blank line is not a signature line (\"\xe2\x80\x94 <name> <base64>\")");
            break;
        }
        line += SIG_PREFIX_LEN;
        llen -= SIG_PREFIX_LEN;
        const char *sp = memchr(line, ' ', llen);
        size_t name_len = sp ? (size_t)(sp - line) : llen;
        const char *b64 = sp ? sp + 1 : line + llen;
        size_t b64len = sp ? llen - name_len - 1 : 0;
        if (!go_name_valid(line, name_len)) {
            rc = malformed("a signature line has an invalid key name");
            break;
        }
        long slen = b64len > 0 ? b64_decode(sigbuf + used, b64, b64len) : -1;
        if (slen < 0) {
            rc = malformed("a signature is not canonical base64");
            break;
        }
        if (slen < 5) {
            rc = malformed("a signature is shorter than a key ID and one byte");
            break;
        }
        if (n->nsigs == KMB_NOTE_MAX_SIGNATURES) {
            rc = malformed("more than 100 signatures");
            break;
        }
        const uint8_t *s = sigbuf + used;
        kmb_note_signature *sig = &n->sigs[n->nsigs++];
        sig->name = line;
        sig->name_len = name_len;
        sig->key_id = (uint32_t)s[0] << 24 | (uint32_t)s[1] << 16 | (uint32_t)s[2] << 8 | s[3];
        sig->sig = s + 4;
        sig->sig_len = (size_t)slen - 4;
        used += (size_t)slen;
    }
    if (rc != KMB_OK) {
        free(n);
        return rc;
    }
    *out = n;
    return KMB_OK;
}

void kmb_note_free(kmb_note *n)
{
    free(n);
}

int kmb_note_verify(const kmb_note *n, const kmb_note_verifier *v)
{
    size_t vlen = strlen(v->name);
    for (size_t i = 0; i < n->nsigs; i++) {
        const kmb_note_signature *s = &n->sigs[i];
        if (s->key_id != v->key_id || s->name_len != vlen || memcmp(s->name, v->name, vlen) != 0)
            continue;
        int rc = kmb_ed25519_verify(v->public_key, s->sig, s->sig_len, n->text, n->body_len);
        if (rc == KMB_ESIGNATURE)
            return kmb_error_set(KMB_ESIGNATURE, 0,
                                 "invalid signature for key %s+%08" PRIx32
                                 ": the note was altered after it was signed",
                                 v->name, v->key_id);
        return rc;
    }
    return kmb_error_set(KMB_ESIGNATURE, 0,
                         "the note has no signature by key %s+%08" PRIx32
                         " (signatures by other keys are ignored)",
                         v->name, v->key_id);
}

static int body_valid(const char *body, size_t len)
{
    if (len == 0 || body[len - 1] != '\n' || !text_valid(body, len, 1)) return 0;
    if (body[0] == '\n') return 0;
    for (size_t i = 1; i < len; i++)
        if (body[i] == '\n' && body[i - 1] == '\n') return 0;
    return 1;
}

int kmb_note_sign(char **out, size_t *out_len, const char *body, size_t body_len,
                  const kmb_note_signer *s)
{
    *out = NULL;
    if (!body_valid(body, body_len))
        return kmb_error_set(KMB_ENOTE, 0,
                             "cannot sign this text: a note body is non-empty UTF-8 lines, each "
                             "ending in a newline, with no blank line or control character");
    uint8_t raw[4 + KMB_ED25519_SIGNATURE_SIZE];
    raw[0] = (uint8_t)(s->key_id >> 24);
    raw[1] = (uint8_t)(s->key_id >> 16);
    raw[2] = (uint8_t)(s->key_id >> 8);
    raw[3] = (uint8_t)s->key_id;
    int rc = kmb_ed25519_sign(raw + 4, s->seed, body, body_len);
    if (rc != KMB_OK) return rc;
    size_t name_len = strlen(s->name);
    size_t total = body_len + 1 + SIG_PREFIX_LEN + name_len + 1 + b64_encoded_len(sizeof raw) + 1;
    char *note = malloc(total + 1);
    if (note == NULL) return kmb_error_set(KMB_ENOMEM, 0, "out of memory signing a note");
    char *p = note;
    memcpy(p, body, body_len);
    p += body_len;
    *p++ = '\n';
    memcpy(p, SIG_PREFIX, SIG_PREFIX_LEN);
    p += SIG_PREFIX_LEN;
    memcpy(p, s->name, name_len);
    p += name_len;
    *p++ = ' ';
    b64_encode(p, raw, sizeof raw);
    p += b64_encoded_len(sizeof raw);
    *p++ = '\n';
    *p = '\0';
    *out = note;
    *out_len = total;
    return KMB_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------- */

int kmb_checkpoint_origin_valid(const char *origin, size_t len)
{
    return len > 0 && text_valid(origin, len, 0);
}

static int bad_checkpoint(const char *why)
{
    return kmb_error_set(KMB_ENOTE, 0, "malformed checkpoint: %s", why);
}

int kmb_checkpoint_parse(kmb_checkpoint *out, const char *body, size_t len)
{
    const char *lines[3];
    size_t lens[3];
    size_t pos = 0;
    for (int i = 0; i < 3; i++) {
        if (pos >= len) return bad_checkpoint("fewer than three lines (origin, size, root)");
        const char *nl = memchr(body + pos, '\n', len - pos);
        if (nl == NULL) return bad_checkpoint("the text does not end in a newline");
        lines[i] = body + pos;
        lens[i] = (size_t)(nl - lines[i]);
        pos += lens[i] + 1;
    }
    if (pos != len)
        return bad_checkpoint("more than three lines (extension lines are not accepted)");
    if (!kmb_checkpoint_origin_valid(lines[0], lens[0]))
        return bad_checkpoint("the origin line is empty or not valid text");
    const char *d = lines[1];
    size_t dl = lens[1];
    if (dl == 0 || dl > 20 || (d[0] == '0' && dl > 1))
        return bad_checkpoint("the tree size is not a canonical decimal number");
    uint64_t size = 0;
    for (size_t i = 0; i < dl; i++) {
        if (d[i] < '0' || d[i] > '9')
            return bad_checkpoint("the tree size is not a canonical decimal number");
        unsigned digit = (unsigned)(d[i] - '0');
        if (size > (UINT64_MAX - digit) / 10)
            return bad_checkpoint("the tree size is above 2**64 - 1");
        size = size * 10 + digit;
    }
    uint8_t root[33];
    if (lens[2] != 44 || b64_decode(root, lines[2], 44) != 32)
        return bad_checkpoint("the root hash is not the canonical base64 of 32 bytes");
    out->origin = lines[0];
    out->origin_len = lens[0];
    out->tree_size = size;
    memcpy(out->root, root, 32);
    return KMB_OK;
}

int kmb_checkpoint_format(char *out, size_t cap, const char *origin, size_t origin_len,
                          uint64_t tree_size, const uint8_t root[32])
{
    if (origin_len > KMB_CHECKPOINT_ORIGIN_MAX || !kmb_checkpoint_origin_valid(origin, origin_len))
        return kmb_error_set(KMB_EINVAL, 0,
                             "invalid checkpoint origin: it must be non-empty, valid UTF-8, "
                             "without newlines or control characters, at most %d bytes",
                             KMB_CHECKPOINT_ORIGIN_MAX);
    char b64[44];
    b64_encode(b64, root, 32);
    int n = snprintf(out, cap, "%.*s\n%" PRIu64 "\n%.44s\n", (int)origin_len, origin, tree_size,
                     b64);
    if (n < 0 || (size_t)n >= cap)
        return kmb_error_set(KMB_EINVAL, 0, "checkpoint buffer too small (%zu bytes)", cap);
    return n;
}
