/*
 * kimberlite/note.h — C2SP signed notes, tlog checkpoints and Go sumdb/note key strings.
 * Strict parsing, canonical emitting. No I/O, no global state; thread-safe.
 *
 * A signed note (c2sp.org/signed-note, golang.org/x/mod/sumdb/note):
 *
 *     <body: one or more lines, each ending in "\n">
 *     "\n"
 *     one or more signature lines: "— <key name> <base64(key ID (4 bytes, big-endian) || sig)>\n"
 *
 * (the dash is U+2014 EM DASH). A checkpoint (c2sp.org/tlog-checkpoint) is a note whose body
 * is exactly "<origin>\n<tree size in decimal>\n<base64 of the 32-byte root>\n".
 *
 * Keys (Go sumdb/note form; algorithm 0x01 = Ed25519):
 *     signer key    PRIVATE+KEY+<name>+<hash>+<base64(0x01 || 32-byte seed)>
 *     verifier key  <name>+<hash>+<base64(0x01 || 32-byte public key)>
 * where key ID = SHA-256(<name> || 0x0A || 0x01 || public key)[0:4] and <hash> is the key ID
 * as 8 lowercase hex digits.
 *
 * Rejected, as Go rejects them: a note that is not valid UTF-8 or has an ASCII control
 * character other than "\n"; no blank line before the signatures; an empty signature block;
 * a last line without "\n"; a signature line without the "— " prefix, with a bad key name,
 * bad base64 or fewer than 5 decoded bytes; more than KMB_NOTE_MAX_SIGNATURES signatures.
 * Rejected beyond Go, so that a note has exactly one spelling: base64 that is not canonical
 * (non-zero padding bits); a checkpoint body with more or fewer than three lines (extension
 * lines included), a size with leading zeros or a sign, a root that is not 32 bytes; key
 * names with ASCII control characters or longer than KMB_NOTE_NAME_MAX bytes; a key hash
 * in upper case.
 *
 * Errors: KMB_ENOTE for a malformed note or checkpoint body, KMB_EINVAL for a malformed key
 * string, name or argument, KMB_ESIGNATURE for a missing or invalid signature, KMB_ENOMEM,
 * and KMB_ERROR when OpenSSL fails; each with a message in kmb_error_last().
 */
#ifndef KIMBERLITE_NOTE_H
#define KIMBERLITE_NOTE_H

#include <stddef.h>
#include <stdint.h>

#include "kimberlite/sign.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KMB_NOTE_MAX_SIGNATURES 100 /* as Go's note.Open */
#define KMB_NOTE_NAME_MAX 1024      /* longest key name, bytes */
#define KMB_NOTE_ALG_ED25519 0x01
#define KMB_NOTE_KEY_MAX (KMB_NOTE_NAME_MAX + 80) /* longest key string, NUL included */

/* ---- keys -------------------------------------------------------------------------------- */

/* A verifier key. Plain data; owns nothing. `name` is NUL-terminated. */
typedef struct kmb_note_verifier {
    char name[KMB_NOTE_NAME_MAX + 1];
    uint32_t key_id;
    uint8_t public_key[KMB_ED25519_PUBLIC_SIZE];
} kmb_note_verifier;

/* A signer key. Holds the seed: wipe it with kmb_note_signer_wipe when done. */
typedef struct kmb_note_signer {
    char name[KMB_NOTE_NAME_MAX + 1];
    uint32_t key_id;
    uint8_t public_key[KMB_ED25519_PUBLIC_SIZE];
    uint8_t seed[KMB_ED25519_SEED_SIZE];
} kmb_note_signer;

/* 1 if name[0:len] is a valid key name (non-empty, UTF-8, no Unicode space, no '+', no
 * ASCII control character, at most KMB_NOTE_NAME_MAX bytes), else 0. */
int kmb_note_name_valid(const char *name, size_t len);

/* The key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || pub)[0:4], big-endian. */
uint32_t kmb_note_key_id(const char *name, size_t len,
                         const uint8_t pub[KMB_ED25519_PUBLIC_SIZE]);

/*
 * Parse a signer key string (skey[0:len]) into *out; its hash must match the key.
 * Errors: KMB_EINVAL (malformed, unknown algorithm, wrong hash), KMB_ERROR (OpenSSL).
 * *out is written only on success; the function wipes its own copies of the seed.
 */
int kmb_note_signer_parse(kmb_note_signer *out, const char *skey, size_t len);

/* Parse a verifier key string into *out. Errors: KMB_EINVAL. *out written only on success. */
int kmb_note_verifier_parse(kmb_note_verifier *out, const char *vkey, size_t len);

/* A new signer with a random key named name[0:len]. Errors: KMB_EINVAL (bad name),
 * KMB_ERROR (OpenSSL). */
int kmb_note_signer_generate(kmb_note_signer *out, const char *name, size_t len);

/* The verifier that matches a signer. Cannot fail. */
void kmb_note_signer_verifier(kmb_note_verifier *out, const kmb_note_signer *s);

/*
 * Write the key string of a signer / verifier to out[0 .. cap), NUL-terminated; cap
 * KMB_NOTE_KEY_MAX always suffices. Returns the length, or KMB_EINVAL if cap is too small.
 * The signer string holds the seed: the caller wipes `out` when done with it.
 */
int kmb_note_signer_format(char *out, size_t cap, const kmb_note_signer *s);
int kmb_note_verifier_format(char *out, size_t cap, const kmb_note_verifier *v);

/* Overwrite the seed (and the rest) of *s with zeros, in a way the compiler keeps. */
void kmb_note_signer_wipe(kmb_note_signer *s);

/* ---- notes ------------------------------------------------------------------------------- */

/* One signature line of a parsed note; pointers into the kmb_note that holds it. */
typedef struct kmb_note_signature {
    const char *name; /* not NUL-terminated: name[0:name_len] */
    size_t name_len;
    uint32_t key_id;
    const uint8_t *sig; /* the signature bytes after the key ID */
    size_t sig_len;
} kmb_note_signature;

/* A parsed note; one allocation, owned by the caller, released with kmb_note_free. */
typedef struct kmb_note {
    const char *text;  /* a copy of the whole note, NUL-terminated */
    size_t text_len;
    size_t body_len;   /* the body is text[0:body_len]; it ends with "\n" */
    size_t nsigs;      /* 1 .. KMB_NOTE_MAX_SIGNATURES */
    kmb_note_signature sigs[KMB_NOTE_MAX_SIGNATURES];
} kmb_note;

/*
 * Parse note[0:len] strictly (see the top of this file). On success *out is a new kmb_note
 * that the caller frees with kmb_note_free. Errors: KMB_ENOTE (malformed: the message says
 * what), KMB_ENOMEM. *out is NULL on error.
 */
int kmb_note_parse(kmb_note **out, const void *note, size_t len);

/* Free a note from kmb_note_parse. NULL is allowed. */
void kmb_note_free(kmb_note *n);

/*
 * KMB_OK if the note carries a valid signature by `v`, found by name and key ID; signatures
 * by other keys are ignored. As in Go, only the first signature line by `v` counts: if it
 * does not verify, the note is rejected even when a later line by `v` would.
 * Errors: KMB_ESIGNATURE (none by this key, or invalid), KMB_ERROR (OpenSSL).
 */
int kmb_note_verify(const kmb_note *n, const kmb_note_verifier *v);

/*
 * A new note: body[0:body_len] signed by `s` (one signature line). *out is malloc'd
 * (NUL-terminated, *out_len bytes before the NUL); the caller frees it with free().
 * The body must be a valid note body: non-empty, valid UTF-8, ending in "\n", without
 * ASCII control characters other than "\n" and without a blank line.
 * Errors: KMB_ENOTE (bad body), KMB_ENOMEM, KMB_ERROR (OpenSSL).
 */
int kmb_note_sign(char **out, size_t *out_len, const char *body, size_t body_len,
                  const kmb_note_signer *s);

/* ---- checkpoints ------------------------------------------------------------------------- */

/* Longest origin kmb_checkpoint_format accepts, bytes. */
#define KMB_CHECKPOINT_ORIGIN_MAX 65536

/* A parsed checkpoint body. `origin` points into the parsed text (not NUL-terminated). */
typedef struct kmb_checkpoint {
    const char *origin;
    size_t origin_len;
    uint64_t tree_size;
    uint8_t root[32];
} kmb_checkpoint;

/* Parse a checkpoint body (three lines, strict). Errors: KMB_ENOTE. */
int kmb_checkpoint_parse(kmb_checkpoint *out, const char *body, size_t len);

/* 1 if origin[0:len] can be a checkpoint origin (non-empty, valid UTF-8, no ASCII control
 * character, newline included), else 0. */
int kmb_checkpoint_origin_valid(const char *origin, size_t len);

/*
 * Write the checkpoint body "<origin>\n<size>\n<base64 root>\n" to out[0 .. cap),
 * NUL-terminated. cap = origin_len + 70 always suffices. Returns the body's length.
 * Errors: KMB_EINVAL (bad or too long origin, or cap too small).
 */
int kmb_checkpoint_format(char *out, size_t cap, const char *origin, size_t origin_len,
                          uint64_t tree_size, const uint8_t root[32]);

#ifdef __cplusplus
}
#endif
#endif
