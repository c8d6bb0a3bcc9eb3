/*
 * Decoder of wal2json format-version 2 output: one JSON object per change.
 * Borrowed pointers in a walq__change stay valid until the next
 * walq__decode() call on the same decoder.
 */
#ifndef WALQ_DECODE_H
#define WALQ_DECODE_H

#include <stddef.h>
#include <stdint.h>

typedef enum walq__action {
    /* A message that carries nothing for the owner (pgoutput's Relation, Type, Origin). */
    WALQ__ACT_NONE = 0,
    WALQ__ACT_BEGIN = 'B',
    WALQ__ACT_COMMIT = 'C',
    WALQ__ACT_INSERT = 'I',
    WALQ__ACT_UPDATE = 'U',
    WALQ__ACT_DELETE = 'D',
    WALQ__ACT_TRUNCATE = 'T',
    WALQ__ACT_MESSAGE = 'M'
} walq__action;

typedef enum walq__vkind {
    WALQ__V_NULL = 0,
    WALQ__V_BOOL,
    WALQ__V_INT, /* an integral JSON number that fits int64 */
    WALQ__V_NUM, /* any other JSON number; str holds its text as written */
    WALQ__V_STR  /* a JSON string, unescaped to UTF-8 in str/len */
} walq__vkind;

typedef struct walq__value {
    const char *name; /* column name */
    /*
     * Type name as wal2json prints it, e.g. "bigint"; NULL when the plugin was
     * asked for no types (include-types=0).
     */
    const char *type;
    walq__vkind kind;
    int b;           /* WALQ__V_BOOL */
    int64_t i;       /* WALQ__V_INT */
    const char *str; /* WALQ__V_STR, WALQ__V_NUM and WALQ__V_INT: text, NUL-terminated */
    size_t len;
} walq__value;

typedef struct walq__change {
    walq__action action;
    uint32_t xid;         /* 0 when the plugin was not asked for xids */
    uint64_t lsn;         /* "lsn": the change's, or for B/C the commit record's */
    uint64_t next_lsn;    /* B and C: "nextlsn", the end of the commit record; else 0 */
    int64_t timestamp_us; /* commit time, microseconds since the Unix epoch; 0 if absent */
    const char *schema;   /* I/U/D/T; NULL otherwise */
    const char *table;
    walq__value *columns; /* I/U: the new row */
    size_t ncolumns;
    walq__value *identity; /* U/D: the old key */
    size_t nidentity;
    const char *prefix;  /* M: message prefix */
    const char *content; /* M: message content */
    size_t content_len;
    int transactional; /* M */
} walq__change;

typedef struct walq__decoder walq__decoder;

int walq__decoder_new(walq__decoder **out);
void walq__decoder_free(walq__decoder *d);

/*
 * Decodes one object of len bytes (not necessarily NUL-terminated).  Returns
 * 0, WALQ_ENOMEM, or WALQ_EDECODE with walq__decoder_error() saying what is
 * wrong and where.
 */
int walq__decode(walq__decoder *d, const char *buf, size_t len, walq__change *out);

const char *walq__decoder_error(const walq__decoder *d);

/*
 * Whether s (len bytes) is a whole number that fits int64, and its value in
 * *out: an optional minus sign and digits only, as both decoders read
 * integers.
 */
int walq__int64_from_text(const char *s, size_t len, int64_t *out);

/* The column called name in the new row, or NULL. */
const walq__value *walq__change_column(const walq__change *c, const char *name);

/*
 * Parses a timestamptz as PostgreSQL prints it with DateStyle ISO:
 * "2026-11-24 20:25:07.992647+00", fraction optional (1 to 6 digits), offset
 * +HH, +HH:MM or +HH:MM:SS (or -), "infinity" and "-infinity" (INT64_MAX and
 * INT64_MIN).  Writes microseconds since the Unix epoch.  Returns 0 or
 * WALQ_EINVAL.
 */
int walq__parse_timestamp(const char *s, size_t len, int64_t *us_out);

#endif
