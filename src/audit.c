/*
 * The audit trail: every insert, update and delete of walq.jobs and
 * walq.outcomes, in commit order, from a replication slot of its own.
 *
 * The server sends each committed transaction whole, in commit order.  Each
 * change becomes a JSON object as it arrives and is written one change late,
 * so that the last change of a transaction can say so ("last": true) when
 * the commit comes, without the transaction being kept in memory: memory is
 * bounded by the write buffer, whatever the size of a transaction.
 *
 * Exactly once: the sink is its own cursor.  In a file, the last line with
 * "last": true ends the last whole transaction; in a table, a cursor row is
 * written in the same transaction as the rows.  The slot is confirmed past a
 * transaction only once the file is fsync'd or the table's transaction has
 * committed.  On start, whatever follows the file's last whole transaction is
 * cut, streaming starts at the later of the slot's confirmed position and the
 * cursor, and transactions that end at or before it are passed over.
 */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit_format.h"
#include "db.h"
#include "lsn.h"
#include "proto.h"
#include "stream.h"

#define SLOT_PREFIX "walqaudit_"
/* Stream messages handled before the loop looks at everything else again. */
#define READ_BURST 2000
/* Bytes of lines or rows kept before they are handed to the kernel or server. */
#define WRITE_CHUNK (1 << 20)
/* Longest that written transactions wait for their fsync or commit. */
#define FLUSH_DELAY_US 200000
/* Rows per transaction into the table, unless one transaction has more. */
#define FLUSH_ROWS 10000
/* How often an idle --drain asks the server how far it has read. */
#define PING_US 200000
/* Advisory lock taken while the audit table is created (arbitrary, fixed). */
#define SETUP_LOCK "2037741435"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

#define BAD_FILE_HINT                                                                              \
    "Give --output a file of its own: a new one, or one that walq audit wrote; walq audit cuts "   \
    "an unfinished transaction at the end, but nothing else."

typedef enum sink_kind {
    SINK_FILE,   /* a regular file: its own cursor */
    SINK_STREAM, /* standard output or a pipe: at least once across restarts */
    SINK_TABLE   /* rows in a table, with a cursor row in the same transaction */
} sink_kind;

struct walq__audit {
    walq__audit_options o;
    char *source, *target, *group, *output, *into;
    char slot[64];
    walq__log log;
    volatile sig_atomic_t stop_req; /* 1: finish the transaction and stop; 2: at once */
    int wake[2];
    walq__audit_stats stats;

    /* The sink. */
    sink_kind kind;
    int fd;
    walq__buf out;                      /* lines or COPY rows not yet handed over */
    off_t written;                      /* bytes handed to the kernel */
    off_t boundary;                     /* where the last whole transaction ends, out included */
    int dirty;                          /* whole transactions handed over but not yet durable */
    uint64_t dirty_txns, dirty_changes; /* their count, for the stats once durable */
    int64_t dirty_since;                /* when the first of them was */
    uint64_t written_end;               /* end LSN of the last transaction in the sink */
    PGconn *tconn;
    char *table_q;   /* "schema"."table" */
    char *cursor_q;  /* "schema".walq_audit_cursor */
    char *table_key; /* schema.table, the cursor row's key */
    int in_copy;     /* a transaction with a COPY is open on tconn */
    size_t batch_rows;
    size_t cur_rows; /* rows of the transaction being received, in the COPY */

    /* The stream. */
    walq__stream st;
    walq__decoder *dec;
    uint64_t last_end;  /* end of the last whole transaction received, or a keepalive's */
    uint64_t recv_lsn;  /* furthest position the server told us about */
    uint64_t durable;   /* what may be confirmed */
    uint64_t confirmed; /* what the last status update said */
    int in_txn, skip_cur;
    walq__audit_txn cur;
    size_t cur_n;      /* changes of cur taken */
    size_t cur_seen;   /* changes of cur in this delivery of it */
    json_object *held; /* the last change taken, written when the next one or the commit comes */
    int64_t status_us, next_status, next_ping;
    int reply_now;
    uint64_t drain_target;
    int64_t stream_retry_at, target_retry_at;
    int stream_failures, target_failures;
    int restart; /* the table's server was lost: start over from what is durable */
};

static const char *const plugin_options[] = {"format-version",
                                             "2",
                                             "include-xids",
                                             "1",
                                             "include-timestamp",
                                             "1",
                                             "include-lsn",
                                             "1",
                                             "add-tables",
                                             "walq.jobs,walq.outcomes,walq.outcome_batches",
                                             "actions",
                                             "insert,update,delete",
                                             NULL};

/* ------------------------------------------------------------------ */
/* The end of an audit file                                            */

/* Reads a file backwards, a block at a time. */
typedef struct rscan {
    int fd;
    const char *path;
    off_t off; /* file offset of buf[0] */
    size_t len;
    char buf[65536];
} rscan;

static int pread_all(int fd, char *buf, size_t len, off_t at)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, at + (off_t)got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO; /* shorter than fstat said */
        got += (size_t)n;
    }
    return 0;
}

/* The offset just after the last newline before pos, or 0. */
static int line_start(rscan *r, off_t pos, off_t *out)
{
    while (pos > 0) {
        const char *nl;

        if (pos <= r->off || pos > r->off + (off_t)r->len) {
            off_t from = pos > (off_t)sizeof(r->buf) ? pos - (off_t)sizeof(r->buf) : 0;
            int err = pread_all(r->fd, r->buf, (size_t)(pos - from), from);

            if (err != 0)
                return walq__error(WALQ_ESYS, NULL, "could not read output file \"%s\": %s",
                                   r->path, strerror(err));
            r->off = from;
            r->len = (size_t)(pos - from);
        }
        nl = memrchr(r->buf, '\n', (size_t)(pos - r->off));
        if (nl != NULL) {
            *out = r->off + (nl - r->buf) + 1;
            return 0;
        }
        pos = r->off;
    }
    *out = 0;
    return 0;
}

typedef struct line_info {
    uint64_t end_lsn;
    int64_t index;
    int last;
} line_info;

/* Parses the line in [start, end) of the file: its end_lsn, index and last. */
static int read_line(rscan *r, off_t start, off_t end, line_info *li)
{
    size_t len = (size_t)(end - start);
    char *text = malloc(len + 1);
    json_object *o = NULL, *v;
    enum json_tokener_error jerr = json_tokener_success;
    const char *why = NULL;
    int err;

    if (text == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    err = pread_all(r->fd, text, len, start);
    if (err != 0) {
        free(text);
        return walq__error(WALQ_ESYS, NULL, "could not read output file \"%s\": %s", r->path,
                           strerror(err));
    }
    text[len] = '\0';
    o = json_tokener_parse_verbose(text, &jerr);
    free(text);
    memset(li, 0, sizeof(*li));
    if (o == NULL || !json_object_is_type(o, json_type_object))
        why = "a line that is not a JSON object";
    else if (!json_object_object_get_ex(o, "end_lsn", &v) ||
             !json_object_is_type(v, json_type_string) ||
             walq__lsn_parse(json_object_get_string(v), &li->end_lsn) != 0)
        why = "a line without a valid \"end_lsn\"";
    else if (!json_object_object_get_ex(o, "index", &v) || !json_object_is_type(v, json_type_int) ||
             (li->index = json_object_get_int64(v)) < 1)
        why = "a line without a valid \"index\"";
    else if (!json_object_object_get_ex(o, "last", &v) ||
             !json_object_is_type(v, json_type_boolean))
        why = "a line without \"last\"";
    else
        li->last = json_object_get_boolean(v);
    json_object_put(o);
    if (why != NULL)
        return walq__error(
            WALQ_EINVAL, BAD_FILE_HINT,
            "output file \"%s\" does not end like a walq audit trail: %s at byte %lld", r->path,
            why, (long long)start);
    return 0;
}

int walq__audit_read_tail(int fd, const char *path, walq__audit_tail *out)
{
    rscan *r;
    struct stat sb;
    off_t tail, first, first_end, prev;
    line_info last, li;
    int rc;

    memset(out, 0, sizeof(*out));
    if (fstat(fd, &sb) != 0)
        return walq__error(WALQ_ESYS, NULL, "could not stat output file \"%s\": %s", path,
                           strerror(errno));
    out->size = sb.st_size;
    if (sb.st_size == 0)
        return 0;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    r->fd = fd;
    r->path = path;
    /* Bytes after the last newline are a line cut short: they go. */
    rc = line_start(r, sb.st_size, &tail);
    if (rc != 0 || tail == 0)
        goto done;
    first_end = tail - 1;
    rc = line_start(r, first_end, &first);
    if (rc == 0)
        rc = read_line(r, first, first_end, &last);
    if (rc != 0)
        goto done;
    if (last.last) {
        out->keep = tail;
        out->end_lsn = last.end_lsn;
        goto done;
    }
    /*
     * The last line is change k of a transaction that did not finish: its
     * first line is k - 1 lines up, and the line before that ends the
     * previous transaction.
     */
    for (int64_t i = 1; i < last.index; i++) {
        if (first == 0) {
            rc = walq__error(WALQ_EINVAL, BAD_FILE_HINT,
                             "output file \"%s\" does not end like a walq audit trail: its last "
                             "transaction has fewer lines than its last index, %lld",
                             path, (long long)last.index);
            goto done;
        }
        first_end = first - 1;
        rc = line_start(r, first_end, &first);
        if (rc != 0)
            goto done;
    }
    if (last.index > 1) {
        rc = read_line(r, first, first_end, &li);
        if (rc != 0)
            goto done;
        if (li.index != 1 || li.end_lsn != last.end_lsn || li.last) {
            rc = walq__error(WALQ_EINVAL, BAD_FILE_HINT,
                             "output file \"%s\" does not end like a walq audit trail: the lines "
                             "of its last transaction are not numbered 1 to %lld",
                             path, (long long)last.index);
            goto done;
        }
    }
    out->keep = first;
    out->dropped_lines = (size_t)last.index;
    if (first > 0) {
        rc = line_start(r, first - 1, &prev);
        if (rc == 0)
            rc = read_line(r, prev, first - 1, &li);
        if (rc != 0)
            goto done;
        if (!li.last || li.end_lsn >= last.end_lsn) {
            rc = walq__error(WALQ_EINVAL, BAD_FILE_HINT,
                             "output file \"%s\" does not end like a walq audit trail: the line "
                             "before its unfinished transaction does not end a transaction",
                             path);
            goto done;
        }
        out->end_lsn = li.end_lsn;
    }

done:
    free(r);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

int walq__audit_open(walq__audit **out, const walq__audit_options *opts)
{
    walq__audit *a;

    *out = NULL;
    if (!walq__audit_group_valid(opts->group))
        return walq__error(WALQ_EINVAL,
                           "Use 1 to 50 lower-case letters, digits and underscores; the slot is "
                           "\"walqaudit_\" followed by the name.",
                           "invalid audit group name \"%.64s\"", opts->group ? opts->group : "");
    if (opts->output != NULL && opts->into != NULL)
        return walq__error(WALQ_EINVAL,
                           "Give --output to write JSON lines, or --into to write rows of a "
                           "table, not both.",
                           "--output and --into cannot be used together");
    if (opts->into != NULL && !walq__audit_table_valid(opts->into))
        return walq__error(WALQ_EINVAL,
                           "Give a lower-case table name, optionally with its schema, such as "
                           "walq_audit or audit.walq_changes.",
                           "invalid table name \"%.130s\"", opts->into);
    if (opts->output != NULL && *opts->output == '\0')
        return walq__error(WALQ_EINVAL, "Give a file name, or - for standard output.",
                           "the output file name must not be empty");
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    a->o = *opts;
    a->fd = -1;
    a->wake[0] = a->wake[1] = -1;
    if (a->o.status_interval <= 0)
        a->o.status_interval = 10.0;
    a->group = walq__strdup(opts->group);
    a->source = opts->source ? walq__strdup(opts->source) : NULL;
    a->target = opts->target ? walq__strdup(opts->target) : NULL;
    a->into = opts->into ? walq__strdup(opts->into) : NULL;
    a->output = walq__strdup(opts->into ? "" : opts->output ? opts->output : "-");
    if (a->group == NULL || a->output == NULL || (opts->source && a->source == NULL) ||
        (opts->target && a->target == NULL) || (opts->into && a->into == NULL) ||
        walq__decoder_new(&a->dec) != 0 || pipe2(a->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        walq__audit_free(a);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    a->o.group = a->group;
    a->o.source = a->source;
    a->o.target = a->target;
    a->o.into = a->into;
    a->o.output = a->into ? NULL : a->output;
    a->kind = a->into ? SINK_TABLE : strcmp(a->output, "-") == 0 ? SINK_STREAM : SINK_FILE;
    snprintf(a->slot, sizeof(a->slot), SLOT_PREFIX "%s", a->group);
    a->log.fn = opts->log;
    a->log.arg = opts->log_arg;
    a->log.level = opts->log_level;
    snprintf(a->log.prefix, sizeof(a->log.prefix), "audit \"%s\": ", a->group);
    *out = a;
    return 0;
}

void walq__audit_stop(walq__audit *a, int immediate)
{
    char c = 1;
    ssize_t n;

    if (a == NULL)
        return;
    a->stop_req = immediate ? 2 : (a->stop_req ? a->stop_req : 1);
    n = write(a->wake[1], &c, 1);
    (void)n;
}

void walq__audit_stats_get(const walq__audit *a, walq__audit_stats *out)
{
    *out = a->stats;
}

static void close_all(walq__audit *a)
{
    walq__stream_close(&a->st);
    if (a->tconn != NULL)
        PQfinish(a->tconn);
    a->tconn = NULL;
    a->in_copy = 0;
    if (a->fd >= 0 && a->fd != STDOUT_FILENO)
        close(a->fd);
    a->fd = -1;
    json_object_put(a->held);
    a->held = NULL;
}

void walq__audit_free(walq__audit *a)
{
    if (a == NULL)
        return;
    close_all(a);
    walq__buf_free(&a->out);
    walq__decoder_free(a->dec);
    if (a->wake[0] >= 0)
        close(a->wake[0]);
    if (a->wake[1] >= 0)
        close(a->wake[1]);
    free(a->table_q);
    free(a->cursor_q);
    free(a->table_key);
    free(a->source);
    free(a->target);
    free(a->group);
    free(a->output);
    free(a->into);
    free(a);
}

/* ------------------------------------------------------------------ */
/* File and standard output                                            */

static int write_error(walq__audit *a, int err)
{
    if (a->kind == SINK_FILE)
        return walq__error(WALQ_ESYS,
                           err == ENOSPC ? "Free space on its file system; walq audit carries on "
                                           "from the last whole transaction when started again."
                                         : NULL,
                           "could not write to output file \"%s\": %s", a->output, strerror(err));
    return walq__error(WALQ_ESYS, NULL, "could not write to %s: %s",
                       strcmp(a->output, "-") == 0 ? "standard output" : a->output, strerror(err));
}

/* Hands everything buffered to the kernel. */
static int write_out(walq__audit *a)
{
    size_t off = 0;

    while (off < a->out.len) {
        ssize_t n = write(a->fd, a->out.data + off, a->out.len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            a->written += (off_t)off;
            return write_error(a, errno);
        }
        off += (size_t)n;
    }
    a->written += (off_t)off;
    walq__buf_reset(&a->out);
    return 0;
}

static int fsync_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL   ? walq__strdup(".")
                : slash == path ? walq__strdup("/")
                                : walq__strndup(path, (size_t)(slash - path));
    int fd, rc = 0;

    if (dir == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        rc = walq__error(WALQ_ESYS, NULL, "could not sync directory \"%s\": %s", dir,
                         strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

/*
 * Opens the output file, takes its lock, and cuts what follows its last
 * whole transaction.  *cursor receives that transaction's end LSN.
 */
static int open_file(walq__audit *a, uint64_t *cursor)
{
    struct stat sb;
    walq__audit_tail tail;
    int existed = stat(a->output, &sb) == 0;
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    *cursor = 0;
    a->fd = open(a->output, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (a->fd < 0)
        return walq__error(WALQ_ESYS,
                           "Check that the directory exists and that this user may write there.",
                           "could not open output file \"%s\": %s", a->output, strerror(errno));
    if (fstat(a->fd, &sb) != 0)
        return walq__error(WALQ_ESYS, NULL, "could not stat output file \"%s\": %s", a->output,
                           strerror(errno));
    if (!S_ISREG(sb.st_mode)) {
        /* A pipe or a device cannot be read back: it is written like stdout. */
        a->kind = SINK_STREAM;
        walq__info(&a->log,
                   "\"%s\" is not a regular file: delivery is at least once across "
                   "restarts",
                   a->output);
        return 0;
    }
    if (flock(a->fd, LOCK_EX | LOCK_NB) != 0)
        return walq__error(errno == EWOULDBLOCK ? WALQ_EBUSY : WALQ_ESYS,
                           "Another walq audit writes to it; give each audit a file of its own.",
                           "could not lock output file \"%s\": %s", a->output,
                           errno == EWOULDBLOCK ? "it is in use by another process"
                                                : strerror(errno));
    if (!existed && (rc = fsync_dir_of(a->output)) != 0)
        return rc;
    rc = walq__audit_read_tail(a->fd, a->output, &tail);
    if (rc != 0)
        return rc;
    if (tail.keep < tail.size) {
        if (ftruncate(a->fd, tail.keep) != 0 || fsync(a->fd) != 0)
            return walq__error(WALQ_ESYS, NULL, "could not cut output file \"%s\": %s", a->output,
                               strerror(errno));
        if (tail.dropped_lines > 0)
            walq__info(&a->log,
                       "output file \"%s\": cut %lld bytes (%zu line%s of an unfinished "
                       "transaction) after its last whole transaction; they come again",
                       a->output, (long long)(tail.size - tail.keep), tail.dropped_lines,
                       tail.dropped_lines == 1 ? "" : "s");
        else
            walq__info(&a->log, "output file \"%s\": cut %lld bytes of a line left unfinished",
                       a->output, (long long)(tail.size - tail.keep));
    }
    a->written = a->boundary = tail.keep;
    a->written_end = *cursor = tail.end_lsn;
    if (tail.end_lsn != 0)
        walq__info(&a->log, "output file \"%s\" ends with the transaction that ends at %s",
                   a->output, walq__lsn_format(tail.end_lsn, lsn));
    return 0;
}

/* ------------------------------------------------------------------ */
/* The table                                                           */

static char *quote_ident(PGconn *conn, const char *s)
{
    char *q = PQescapeIdentifier(conn, s, strlen(s));
    char *copy = q ? walq__strdup(q) : NULL;

    PQfreemem(q);
    return copy;
}

/* Where TABLE lives: its schema and name, once it exists. */
static int resolve_table(walq__audit *a, int *exists)
{
    const char *params[1] = {a->into};
    PGresult *res;
    char *nsp = NULL, *rel = NULL;
    walq__buf b = {0};
    int rc;

    rc = walq__query(a->tconn, &res, "look up the audit table",
                     "SELECT n.nspname, c.relname FROM pg_class c"
                     "  JOIN pg_namespace n ON n.oid = c.relnamespace"
                     " WHERE c.oid = to_regclass($1)",
                     1, params);
    if (rc != 0)
        return rc;
    *exists = PQntuples(res) == 1;
    if (!*exists) {
        PQclear(res);
        return 0;
    }
    nsp = quote_ident(a->tconn, PQgetvalue(res, 0, 0));
    rel = quote_ident(a->tconn, PQgetvalue(res, 0, 1));
    free(a->table_q);
    free(a->cursor_q);
    free(a->table_key);
    a->table_q = a->cursor_q = a->table_key = NULL;
    if (nsp != NULL && rel != NULL && walq__buf_printf(&b, "%s.%s", nsp, rel) == 0)
        a->table_q = walq__strdup(b.data);
    walq__buf_reset(&b);
    if (nsp != NULL && walq__buf_printf(&b, "%s.walq_audit_cursor", nsp) == 0)
        a->cursor_q = walq__strdup(b.data);
    walq__buf_reset(&b);
    if (walq__buf_printf(&b, "%s.%s", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1)) == 0)
        a->table_key = walq__strdup(b.data);
    walq__buf_free(&b);
    PQclear(res);
    free(nsp);
    free(rel);
    if (a->table_q == NULL || a->cursor_q == NULL || a->table_key == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    return 0;
}

/* The given name, quoted part by part, for CREATE TABLE. */
static int quoted_given_name(walq__audit *a, walq__buf *b)
{
    const char *dot = strchr(a->into, '.');
    char *part;
    int rc = 0;

    if (dot != NULL) {
        part = walq__strndup(a->into, (size_t)(dot - a->into));
        char *q = part ? quote_ident(a->tconn, part) : NULL;

        rc = q ? walq__buf_printf(b, "%s.", q) : WALQ_ENOMEM;
        free(q);
        free(part);
    }
    if (rc == 0) {
        char *q = quote_ident(a->tconn, dot ? dot + 1 : a->into);

        rc = q ? walq__buf_puts(b, q) : WALQ_ENOMEM;
        free(q);
    }
    return rc ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

static int create_table(walq__audit *a)
{
    walq__buf sql = {0};
    int rc = quoted_given_name(a, &sql);
    char *given = NULL;

    if (rc != 0)
        return rc;
    given = walq__strdup(sql.data);
    walq__buf_reset(&sql);
    if (given == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    /* One row per change; (end_lsn, change_index) is commit order and unique. */
    rc = walq__buf_printf(&sql,
                          "CREATE TABLE %s ("
                          " end_lsn pg_lsn NOT NULL,"
                          " change_index integer NOT NULL,"
                          " lsn pg_lsn NOT NULL,"
                          " xid bigint NOT NULL,"
                          " commit_time timestamptz,"
                          " commit_lsn pg_lsn NOT NULL,"
                          " table_name text NOT NULL,"
                          " action text NOT NULL CHECK (action IN ('insert', 'update', 'delete')),"
                          " new_row jsonb,"
                          " old_key jsonb,"
                          " PRIMARY KEY (end_lsn, change_index))",
                          given);
    free(given);
    if (rc != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    rc = walq__exec(a->tconn, "create the audit table", sql.data);
    walq__buf_free(&sql);
    return rc;
}

static int protect_table(walq__audit *a)
{
    walq__buf sql = {0};
    char *nsp_end = strchr(a->cursor_q, '.');
    int nsp_len = (int)(nsp_end - a->cursor_q);
    int rc;

    rc = walq__buf_printf(
        &sql,
        "CREATE OR REPLACE FUNCTION %.*s.walq_audit_append_only() RETURNS trigger"
        " LANGUAGE plpgsql AS $walq$"
        " BEGIN"
        "   RAISE EXCEPTION '%% is not allowed on table %%.%%: it is an append-only audit trail',"
        "     TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME"
        "     USING HINT = 'walq audit only ever adds rows to it.';"
        " END $walq$;"
        "CREATE TRIGGER walq_audit_append_only BEFORE UPDATE OR DELETE ON %s"
        " FOR EACH ROW EXECUTE FUNCTION %.*s.walq_audit_append_only();"
        "CREATE TRIGGER walq_audit_no_truncate BEFORE TRUNCATE ON %s"
        " FOR EACH STATEMENT EXECUTE FUNCTION %.*s.walq_audit_append_only();"
        "COMMENT ON TABLE %s IS 'walq audit trail: every insert, update and delete of walq.jobs"
        " and walq.outcomes, in commit order (end_lsn, change_index). Append-only.'",
        nsp_len, a->cursor_q, a->table_q, nsp_len, a->cursor_q, a->table_q, nsp_len, a->cursor_q,
        a->table_q);
    if (rc != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    rc = walq__exec(a->tconn, "make the audit table append-only", sql.data);
    walq__buf_free(&sql);
    return rc;
}

/* The group's cursor in the table, and the end of the table's last transaction. */
static int read_cursor(walq__audit *a, uint64_t *cursor, uint64_t *top)
{
    const char *params[2] = {a->table_key, a->group};
    walq__buf sql = {0};
    PGresult *res;
    int rc;

    if (walq__buf_printf(&sql,
                         "SELECT (SELECT end_lsn::text FROM %s"
                         "         WHERE table_name = $1 AND group_name = $2),"
                         "       (SELECT max(end_lsn)::text FROM %s)",
                         a->cursor_q, a->table_q) != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    rc = walq__query(a->tconn, &res, "read the audit cursor", sql.data, 2, params);
    walq__buf_free(&sql);
    if (rc != 0)
        return rc;
    *cursor = *top = 0;
    if (!PQgetisnull(res, 0, 0))
        walq__lsn_parse(PQgetvalue(res, 0, 0), cursor);
    if (!PQgetisnull(res, 0, 1))
        walq__lsn_parse(PQgetvalue(res, 0, 1), top);
    PQclear(res);
    return 0;
}

static int table_check(walq__audit *a, uint64_t *cursor)
{
    walq__buf sql = {0};
    PGresult *res = NULL;
    uint64_t top = 0;
    char msg[1024], lsn[WALQ__LSN_BUFSZ], lsn2[WALQ__LSN_BUFSZ];
    int rc;

    /* A table of the same name made by someone else is not ours to fill. */
    if (walq__buf_printf(&sql,
                         "SELECT end_lsn, change_index, lsn, xid, commit_time, commit_lsn,"
                         " table_name, action, new_row, old_key FROM %s LIMIT 0",
                         a->table_q) != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    res = PQexec(a->tconn, sql.data);
    walq__buf_free(&sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = walq__conn_failed(a->tconn, res) ? WALQ_ECONN : WALQ_EINVAL;
        walq__pg_message(a->tconn, res, msg, sizeof(msg));
        PQclear(res);
        return walq__error(rc,
                           "Give --into the name of a new table, or of one that walq audit "
                           "created.",
                           "table \"%s\" is not a walq audit table: %s", a->table_key, msg);
    }
    PQclear(res);
    rc = read_cursor(a, cursor, &top);
    if (rc != 0)
        return rc;
    /* Rows beyond the cursor were not written by this group: two would mix. */
    if (top > *cursor)
        return walq__error(WALQ_EINVAL, "Give each audit group a table of its own.",
                           "table \"%s\" holds changes up to %s, beyond the cursor of audit group "
                           "\"%s\" (%s)",
                           a->table_key, walq__lsn_format(top, lsn), a->group,
                           walq__lsn_format(*cursor, lsn2));
    return 0;
}

/* Connects to the table's server and creates what is missing there. */
static int open_table(walq__audit *a, uint64_t *cursor)
{
    walq__buf sql = {0};
    int rc, exists = 0;

    *cursor = 0;
    rc = walq__connect(&a->tconn, a->target, WALQ__CONN_SQL, "walq audit");
    if (rc != 0)
        return rc;
    rc = walq__exec(a->tconn, "set up the session",
                    "SET synchronous_commit = on; SET client_min_messages = warning");
    if (rc == 0)
        rc = walq__exec(a->tconn, "begin creating the audit table", "BEGIN");
    if (rc != 0)
        return rc;
    rc = walq__exec(a->tconn, "lock the audit set-up",
                    "SELECT pg_advisory_xact_lock(" SETUP_LOCK ")");
    if (rc == 0)
        rc = resolve_table(a, &exists);
    if (rc == 0 && !exists) {
        rc = create_table(a);
        if (rc == 0)
            rc = resolve_table(a, &exists);
        if (rc == 0 && !exists)
            rc = walq__error(WALQ_EQUERY, NULL, "table \"%s\" is not there after CREATE TABLE",
                             a->into);
        if (rc == 0)
            rc = protect_table(a);
        if (rc == 0)
            walq__info(&a->log, "created the append-only table \"%s\"", a->table_key);
    }
    if (rc == 0 && walq__buf_printf(&sql,
                                    "CREATE TABLE IF NOT EXISTS %s ("
                                    " table_name text NOT NULL,"
                                    " group_name text NOT NULL,"
                                    " end_lsn pg_lsn NOT NULL,"
                                    " updated_at timestamptz NOT NULL DEFAULT now(),"
                                    " PRIMARY KEY (table_name, group_name))",
                                    a->cursor_q) != 0)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc == 0)
        rc = walq__exec(a->tconn, "create the audit cursor table", sql.data);
    walq__buf_free(&sql);
    if (rc == 0)
        rc = walq__exec(a->tconn, "commit the audit table", "COMMIT");
    if (rc != 0) {
        PQclear(PQexec(a->tconn, "ROLLBACK"));
        return rc;
    }
    rc = table_check(a, cursor);
    a->written_end = *cursor;
    return rc;
}

/* A failure on the table's server: a lost connection is retried, the rest is fatal. */
static int target_failed(walq__audit *a, int rc)
{
    int64_t delay;

    if (rc != WALQ_ECONN)
        return rc;
    delay = walq__reconnect_delay_us(a->target_failures++);
    walq__warn_retry(&a->log, delay);
    if (a->tconn != NULL)
        PQfinish(a->tconn);
    a->tconn = NULL;
    a->in_copy = 0;
    a->target_retry_at = walq__mono_us() + delay;
    a->restart = 1;
    return 0;
}

/*
 * After a lost connection: a COMMIT whose answer was lost may have happened,
 * so the cursor says where to carry on.
 */
static int reconnect_table(walq__audit *a)
{
    uint64_t cursor, top;
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    rc = walq__connect(&a->tconn, a->target, WALQ__CONN_SQL, "walq audit");
    if (rc == 0)
        rc = walq__exec(a->tconn, "set up the session", "SET synchronous_commit = on");
    if (rc == 0)
        rc = read_cursor(a, &cursor, &top);
    if (rc != 0)
        return rc;
    if (cursor > a->last_end) {
        a->last_end = a->recv_lsn = cursor;
        a->written_end = cursor;
    }
    walq__info(&a->log, "reconnected to the server of table \"%s\"; its cursor is at %s",
               a->table_key, walq__lsn_format(cursor, lsn));
    return 0;
}

static int copy_error(walq__audit *a, PGresult *res, const char *what)
{
    char msg[1024];
    int rc = walq__conn_failed(a->tconn, res) ? WALQ_ECONN : WALQ_EQUERY;

    walq__pg_message(a->tconn, res, msg, sizeof(msg));
    return walq__error(rc, NULL, "could not %s: %s", what, msg);
}

static int table_begin(walq__audit *a)
{
    walq__buf sql = {0};
    PGresult *res;
    int rc;

    rc = walq__exec(a->tconn, "begin writing audit rows", "BEGIN");
    if (rc != 0)
        return rc;
    if (walq__buf_printf(&sql,
                         "COPY %s (end_lsn, change_index, lsn, xid, commit_time, commit_lsn,"
                         " table_name, action, new_row, old_key) FROM STDIN",
                         a->table_q) != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    res = PQexec(a->tconn, sql.data);
    walq__buf_free(&sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        rc = copy_error(a, res, "write audit rows");
        PQclear(res);
        PQclear(PQexec(a->tconn, "ROLLBACK"));
        return rc;
    }
    PQclear(res);
    a->in_copy = 1;
    a->batch_rows = 0;
    return 0;
}

static int table_put(walq__audit *a)
{
    char msg[512];

    if (a->out.len == 0)
        return 0;
    if (PQputCopyData(a->tconn, a->out.data, (int)a->out.len) != 1)
        return walq__error(WALQ_ECONN, NULL, "could not send audit rows: %s",
                           walq__pg_message(a->tconn, NULL, msg, sizeof(msg)));
    walq__buf_reset(&a->out);
    return 0;
}

/* Ends the COPY and reads its result (and any that follow). */
static int copy_end(walq__audit *a, const char *abort_msg)
{
    PGresult *res;
    int rc = 0;
    char msg[512];

    if (PQputCopyEnd(a->tconn, abort_msg) != 1)
        return walq__error(WALQ_ECONN, NULL, "could not finish writing audit rows: %s",
                           walq__pg_message(a->tconn, NULL, msg, sizeof(msg)));
    while ((res = PQgetResult(a->tconn)) != NULL) {
        if (rc == 0 && abort_msg == NULL && PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = copy_error(a, res, "write audit rows");
        PQclear(res);
    }
    if (rc == 0 && PQstatus(a->tconn) == CONNECTION_BAD)
        rc = walq__error(WALQ_ECONN, NULL, "lost the connection while writing audit rows: %s",
                         walq__pg_message(a->tconn, NULL, msg, sizeof(msg)));
    return rc;
}

/* Commits the rows with the cursor at the end of the last whole transaction. */
static int table_commit(walq__audit *a)
{
    const char *params[3];
    char lsn[WALQ__LSN_BUFSZ];
    walq__buf sql = {0};
    PGresult *res = NULL;
    int rc;

    rc = table_put(a);
    if (rc == 0)
        rc = copy_end(a, NULL);
    a->in_copy = 0;
    if (rc == 0 && walq__buf_printf(&sql,
                                    "INSERT INTO %s AS c (table_name, group_name, end_lsn)"
                                    " VALUES ($1, $2, $3::pg_lsn)"
                                    " ON CONFLICT (table_name, group_name) DO UPDATE"
                                    " SET end_lsn = excluded.end_lsn, updated_at = now()"
                                    " WHERE c.end_lsn < excluded.end_lsn",
                                    a->cursor_q) != 0)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc == 0) {
        params[0] = a->table_key;
        params[1] = a->group;
        params[2] = walq__lsn_format(a->written_end, lsn);
        rc = walq__query(a->tconn, &res, "move the audit cursor", sql.data, 3, params);
    }
    walq__buf_free(&sql);
    if (rc == 0 && strcmp(PQcmdTuples(res), "1") != 0)
        rc = walq__error(WALQ_EQUERY, "Give each audit group a table of its own.",
                         "the cursor of audit group \"%s\" in \"%s\" is already at or past %s",
                         a->group, a->table_key, lsn);
    PQclear(res);
    if (rc == 0)
        rc = walq__exec(a->tconn, "commit audit rows", "COMMIT");
    else if (rc != WALQ_ECONN)
        PQclear(PQexec(a->tconn, "ROLLBACK"));
    return rc;
}

/* Gives up the rows of the open transaction: they come again. */
static int table_abort(walq__audit *a)
{
    int rc = 0;

    if (!a->in_copy)
        return 0;
    walq__buf_reset(&a->out);
    a->in_copy = 0;
    rc = copy_end(a, "walq audit stopped inside a transaction");
    if (rc == 0)
        rc = walq__exec(a->tconn, "roll back audit rows", "ROLLBACK");
    return rc;
}

static int table_row(walq__audit *a, json_object *o)
{
    static const char *const fields[] = {"end_lsn",    "index", "lsn",    "xid", "commit_time",
                                         "commit_lsn", "table", "action", "new", "old_key"};
    int rc = 0;

    if (!a->in_copy) {
        rc = table_begin(a);
        if (rc != 0)
            return target_failed(a, rc);
    }
    for (size_t i = 0; rc == 0 && i < WALQ__ARRAY_SIZE(fields); i++) {
        json_object *v = NULL;

        json_object_object_get_ex(o, fields[i], &v);
        if (i > 0)
            rc = walq__buf_puts(&a->out, "\t");
        if (rc != 0)
            break;
        if (v == NULL) {
            rc = walq__buf_puts(&a->out, "\\N");
        } else if (json_object_is_type(v, json_type_object)) {
            size_t len;
            const char *s = json_object_to_json_string_length(v, JSON_FLAGS, &len);

            rc = s ? walq__buf_copy_text(&a->out, s, len) : WALQ_ENOMEM;
        } else {
            const char *s = json_object_get_string(v);

            rc = walq__buf_copy_text(&a->out, s, strlen(s));
        }
    }
    if (rc == 0)
        rc = walq__buf_puts(&a->out, "\n");
    if (rc != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    a->batch_rows++;
    a->cur_rows++;
    if (a->out.len >= WRITE_CHUNK)
        return target_failed(a, table_put(a));
    return 0;
}

/* ------------------------------------------------------------------ */
/* The sink, whichever it is                                           */

/* Writes one change; last says whether it ends its transaction. */
static int emit(walq__audit *a, json_object *o, int last)
{
    json_object *v;
    const char *s;
    size_t len;

    if (json_object_object_get_ex(o, "last", &v))
        json_object_set_boolean(v, last);
    if (a->kind == SINK_TABLE)
        return table_row(a, o);
    s = json_object_to_json_string_length(o, JSON_FLAGS, &len);
    if (s == NULL || walq__buf_append(&a->out, s, len) != 0 ||
        walq__buf_append(&a->out, "\n", 1) != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    return a->out.len >= WRITE_CHUNK ? write_out(a) : 0;
}

/* The commit of the transaction being received has been written. */
static void end_txn(walq__audit *a)
{
    a->boundary = a->written + (off_t)a->out.len;
    a->cur_rows = 0;
    if (a->cur_n == 0)
        return;
    if (!a->dirty) {
        a->dirty = 1;
        a->dirty_since = walq__mono_us();
    }
    a->written_end = a->cur.end_lsn;
    a->dirty_txns++;
    a->dirty_changes += a->cur_n;
}

/* Can what is written be made durable now?  A table commits whole transactions only. */
static int can_flush(const walq__audit *a)
{
    return a->kind != SINK_TABLE || a->cur_rows == 0;
}

/* Makes every whole transaction written durable: fsync, or commit. */
static int flush(walq__audit *a)
{
    int rc = 0;

    if (!a->dirty)
        return 0;
    switch (a->kind) {
    case SINK_FILE:
        rc = write_out(a);
        if (rc == 0 && fsync(a->fd) != 0)
            rc = walq__error(WALQ_ESYS, NULL, "could not fsync output file \"%s\": %s", a->output,
                             strerror(errno));
        break;
    case SINK_STREAM:
        rc = write_out(a);
        break;
    case SINK_TABLE:
        if (a->in_copy) {
            rc = target_failed(a, table_commit(a));
            if (rc != 0 || a->restart)
                return rc;
        }
        a->target_failures = 0;
        break;
    }
    if (rc != 0)
        return rc;
    a->dirty = 0;
    a->stats.flushes++;
    a->stats.transactions += a->dirty_txns;
    a->stats.changes += a->dirty_changes;
    a->dirty_txns = a->dirty_changes = 0;
    return 0;
}

/*
 * Drops what was written of a transaction that will not be finished now: cut
 * from the file, not written to stdout (unless it went already), rolled back
 * in the table (with the whole transactions before it, which come again).
 */
static int cut_partial(walq__audit *a)
{
    int rc = 0;

    json_object_put(a->held);
    a->held = NULL;
    if (a->kind == SINK_TABLE) {
        if (a->cur_rows > 0) {
            rc = table_abort(a);
            a->dirty = 0;
            a->dirty_txns = a->dirty_changes = 0;
            a->cur_rows = 0;
        }
        return rc == WALQ_ECONN ? 0 : rc;
    }
    if (a->boundary >= a->written) {
        a->out.len = (size_t)(a->boundary - a->written);
        if (a->out.data != NULL)
            a->out.data[a->out.len] = '\0';
    } else if (a->kind == SINK_FILE) {
        walq__buf_reset(&a->out);
        if (ftruncate(a->fd, a->boundary) != 0)
            return walq__error(WALQ_ESYS, NULL, "could not cut output file \"%s\": %s", a->output,
                               strerror(errno));
        a->written = a->boundary;
        a->dirty = 1; /* the cut itself wants an fsync */
    } else {
        walq__buf_reset(&a->out);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The source and its slot                                             */

typedef struct slot_info {
    int exists, lost, active;
    char active_pid[32];
    char plugin[64];
    char database[128];
    uint64_t confirmed;
} slot_info;

static int check_source(walq__audit *a, PGconn *conn, slot_info *si, char *dbname, size_t dblen)
{
    const char *params[1] = {a->slot};
    PGresult *res;
    char name[128];
    int rc;

    rc = walq__query(conn, &res, "check the source server",
                     "SELECT current_setting('wal_level'),"
                     "       to_regclass('walq.jobs') IS NOT NULL"
                     "         AND to_regclass('walq.outcomes') IS NOT NULL,"
                     "       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                     "             ELSE pg_current_wal_insert_lsn() END)::text,"
                     "       current_database()",
                     0, NULL);
    if (rc != 0)
        return rc;
    walq__conn_name(conn, name, sizeof(name));
    if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0) {
        char level[32];

        snprintf(level, sizeof(level), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        return walq__error(WALQ_ESERVER,
                           "Set wal_level = logical in postgresql.conf and restart the server.",
                           "logical decoding requires wal_level = logical, but \"%s\" has "
                           "wal_level = %s",
                           name, level);
    }
    if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        PQclear(res);
        return walq__error(WALQ_ESCHEMA,
                           "Run \"walq init\" first, or point --source at the database with "
                           "walq's tables.",
                           "tables walq.jobs and walq.outcomes do not exist in the source "
                           "database on \"%s\"",
                           name);
    }
    walq__lsn_parse(PQgetvalue(res, 0, 2), &a->drain_target);
    snprintf(dbname, dblen, "%s", PQgetvalue(res, 0, 3));
    PQclear(res);

    memset(si, 0, sizeof(*si));
    rc = walq__query(conn, &res, "look up the replication slot",
                     "SELECT coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, ''),"
                     "       coalesce(active_pid::text, ''), coalesce(plugin, ''),"
                     "       coalesce(database, '')"
                     "  FROM pg_replication_slots WHERE slot_name = $1",
                     1, params);
    if (rc != 0)
        return rc;
    if (PQntuples(res) == 1) {
        si->exists = 1;
        if (walq__lsn_parse(PQgetvalue(res, 0, 0), &si->confirmed) != 0)
            si->confirmed = 0;
        si->lost = strcmp(PQgetvalue(res, 0, 1), "lost") == 0 || *PQgetvalue(res, 0, 0) == '\0';
        snprintf(si->active_pid, sizeof(si->active_pid), "%s", PQgetvalue(res, 0, 2));
        si->active = si->active_pid[0] != '\0';
        snprintf(si->plugin, sizeof(si->plugin), "%s", PQgetvalue(res, 0, 3));
        snprintf(si->database, sizeof(si->database), "%s", PQgetvalue(res, 0, 4));
    }
    PQclear(res);
    return 0;
}

static int slot_lost_error(walq__audit *a)
{
    char hint[512];

    snprintf(hint, sizeof(hint),
             "An audit trail cannot go on past lost WAL.  Drop the slot (SELECT "
             "pg_drop_replication_slot('%s')) and start walq audit again: it creates a new slot "
             "and warns of the gap.  Raise max_slot_wal_keep_size to keep this from happening.",
             a->slot);
    return walq__error(WALQ_ESLOT, hint, "replication slot \"%s\" was invalidated", a->slot);
}

static int setup(walq__audit *a)
{
    PGconn *conn = NULL;
    slot_info si;
    uint64_t cursor = 0, start;
    char lsn[WALQ__LSN_BUFSZ], lsn2[WALQ__LSN_BUFSZ], dbname[128];
    int rc;

    switch (a->kind) {
    case SINK_FILE:
        rc = open_file(a, &cursor);
        break;
    case SINK_STREAM:
        a->fd = STDOUT_FILENO;
        rc = 0;
        break;
    case SINK_TABLE:
        rc = open_table(a, &cursor);
        break;
    default:
        rc = WALQ_EINVAL;
    }
    if (rc != 0)
        return rc;

    rc = walq__connect(&conn, a->source, WALQ__CONN_SQL, "walq audit");
    if (rc == 0)
        rc = check_source(a, conn, &si, dbname, sizeof(dbname));
    if (conn != NULL)
        PQfinish(conn);
    if (rc != 0)
        return rc;
    if (si.exists && si.active)
        return walq__error(WALQ_EBUSY,
                           "Another walq audit of this group is running; stop it, or wait for it "
                           "to exit.",
                           "replication slot \"%s\" is in use by process %s", a->slot,
                           si.active_pid);
    if (si.exists && strcmp(si.plugin, "wal2json") != 0)
        return walq__error(WALQ_ESLOT, "Drop the slot, or choose another audit group name.",
                           "replication slot \"%s\" exists but uses plugin \"%s\", not wal2json",
                           a->slot, si.plugin);
    if (si.exists && strcmp(si.database, dbname) != 0)
        return walq__error(WALQ_ESLOT,
                           "Point --source at the database of the slot, or choose another audit "
                           "group name.",
                           "replication slot \"%s\" belongs to database \"%s\", not \"%s\"",
                           a->slot, si.database, dbname);
    if (si.exists && si.lost)
        return slot_lost_error(a);
    if (cursor > a->drain_target)
        return walq__error(WALQ_EINVAL,
                           a->kind == SINK_FILE ? BAD_FILE_HINT
                                                : "Give each source server a table of its own.",
                           "the audit trail in \"%s\" ends at %s, beyond the source's WAL "
                           "position %s: it was written from another server",
                           a->kind == SINK_FILE ? a->output : a->table_key,
                           walq__lsn_format(cursor, lsn), walq__lsn_format(a->drain_target, lsn2));

    rc = walq__stream_connect(&a->st, a->source, "walq audit");
    if (rc != 0)
        return rc;
    if (!si.exists) {
        char snapshot[128];
        uint64_t consistent;

        rc = walq__stream_create_slot(&a->st, a->slot, &consistent, snapshot, sizeof(snapshot));
        if (rc != 0)
            return rc;
        si.confirmed = consistent;
        if (cursor != 0)
            walq__warn(&a->log,
                       "replication slot \"%s\" was missing and is created anew at %s: changes "
                       "committed between %s and %s are not in the audit trail",
                       a->slot, walq__lsn_format(consistent, lsn), walq__lsn_format(cursor, lsn2),
                       lsn);
        else
            walq__info(&a->log, "created replication slot \"%s\" at %s", a->slot,
                       walq__lsn_format(consistent, lsn));
    }
    start = cursor > si.confirmed ? cursor : si.confirmed;
    a->last_end = a->recv_lsn = a->durable = start;
    a->confirmed = 0;
    if (a->o.drain)
        walq__debug(&a->log, "draining up to %s", walq__lsn_format(a->drain_target, lsn));
    return 0;
}

/* ------------------------------------------------------------------ */
/* The stream                                                          */

static int start_stream(walq__audit *a)
{
    char lsn[WALQ__LSN_BUFSZ];
    /*
     * Status updates keep the walsender from timing us out: send them at
     * least twice per wal_sender_timeout.
     */
    int rc =
        walq__stream_open(&a->st, a->source, "walq audit", a->slot, a->last_end, plugin_options,
                          (int64_t)(a->o.status_interval * 1e6), &a->status_us);

    if (rc != 0)
        return rc;
    walq__info(&a->log, "streaming slot \"%s\" from %s", a->slot,
               walq__lsn_format(a->last_end, lsn));
    a->stream_failures = 0;
    a->next_status = 0;
    return 0;
}

static void stream_lost(walq__audit *a)
{
    int64_t delay = walq__reconnect_delay_us(a->stream_failures);

    walq__warn_retry(&a->log, delay);
    walq__stream_close(&a->st);
    a->stats.reconnects++;
    a->stream_failures++;
    a->stream_retry_at = walq__mono_us() + delay;
    a->reply_now = 0;
    /*
     * The transaction being received comes again from its start; the
     * changes already taken from it are passed over then (cur_seen).
     */
}

/* The table's server was lost: everything not committed comes again. */
static void start_over(walq__audit *a)
{
    walq__stream_close(&a->st);
    json_object_put(a->held);
    a->held = NULL;
    a->in_txn = a->skip_cur = 0;
    a->cur_n = a->cur_seen = 0;
    walq__buf_reset(&a->out);
    a->in_copy = 0;
    a->batch_rows = a->cur_rows = 0;
    a->dirty = 0;
    a->dirty_txns = a->dirty_changes = 0;
    a->last_end = a->recv_lsn = a->durable;
    a->stream_retry_at = a->target_retry_at;
    a->reply_now = 0;
    a->restart = 0;
    a->stats.reconnects++;
}

static int on_change(walq__audit *a, const walq__change *ch, uint64_t wal_start)
{
    char lsn[WALQ__LSN_BUFSZ];
    json_object *o;
    int rc;

    switch (ch->action) {
    case WALQ__ACT_BEGIN:
        if (ch->next_lsn <= a->last_end) {
            a->skip_cur = 1; /* in the sink already */
            return 0;
        }
        a->skip_cur = 0;
        if (a->in_txn) {
            /* The one cut off by a lost connection, coming again from its start. */
            if (ch->next_lsn == a->cur.end_lsn) {
                a->cur_seen = 0;
                return 0;
            }
            return walq__error(WALQ_EPROTO, NULL, "transaction began at %s inside another one",
                               walq__lsn_format(wal_start, lsn));
        }
        a->in_txn = 1;
        a->cur.xid = ch->xid;
        a->cur.commit_lsn = ch->lsn;
        a->cur.end_lsn = ch->next_lsn;
        a->cur.commit_time_us = ch->timestamp_us;
        a->cur_n = a->cur_seen = a->cur_rows = 0;
        return 0;
    case WALQ__ACT_INSERT:
    case WALQ__ACT_UPDATE:
    case WALQ__ACT_DELETE:
        if (a->skip_cur)
            return 0;
        if (!a->in_txn)
            return walq__error(WALQ_EPROTO, NULL, "change at %s outside a transaction",
                               walq__lsn_format(wal_start, lsn));
        if (a->cur_seen++ < a->cur_n)
            return 0;
        rc = walq__audit_change_json(&o, &a->cur, ch, a->cur_n + 1);
        if (rc != 0)
            return rc;
        a->cur_n++;
        if (a->held != NULL) {
            rc = emit(a, a->held, 0);
            json_object_put(a->held);
        }
        a->held = o;
        return rc;
    case WALQ__ACT_COMMIT:
        if (a->skip_cur) {
            a->skip_cur = 0;
            return 0;
        }
        if (!a->in_txn)
            return walq__error(WALQ_EPROTO, NULL, "commit at %s without a transaction",
                               walq__lsn_format(wal_start, lsn));
        if (a->held != NULL) {
            rc = emit(a, a->held, 1);
            json_object_put(a->held);
            a->held = NULL;
            if (rc != 0 || a->restart)
                return rc;
        }
        end_txn(a);
        a->in_txn = 0;
        a->last_end = ch->next_lsn;
        if (ch->next_lsn > a->recv_lsn)
            a->recv_lsn = ch->next_lsn;
        return 0;
    default:
        /* Other actions are filtered out by the plugin options. */
        return 0;
    }
}

/* Handles what has arrived; *more when it stopped before the end of it. */
static int read_stream(walq__audit *a, int *more)
{
    *more = 0;
    for (int i = 0; i < READ_BURST; i++) {
        walq__msg msg;
        walq__change ch;
        int rc;

        /* Stopping or caught up: not past the end of the transaction. */
        if (!a->in_txn && (a->stop_req || (a->o.drain && a->last_end >= a->drain_target)))
            return 0;
        if (a->restart)
            return 0;
        rc = walq__stream_read(&a->st, &msg);
        if (rc <= 0)
            return rc;
        if (msg.kind == WALQ__MSG_KEEPALIVE) {
            if (msg.wal_end > a->recv_lsn)
                a->recv_lsn = msg.wal_end;
            /* Between transactions, everything before the server's position is here. */
            if (!a->in_txn && msg.wal_end > a->last_end)
                a->last_end = msg.wal_end;
            if (msg.reply_requested)
                a->reply_now = 1;
            continue;
        }
        rc = walq__decode(a->dec, msg.data, msg.len, &ch);
        if (rc != 0)
            return walq__error(rc, NULL, "could not decode the change at %X/%X: %s",
                               (unsigned)(msg.wal_start >> 32), (unsigned)msg.wal_start,
                               walq__decoder_error(a->dec));
        rc = on_change(a, &ch, msg.wal_start);
        if (rc != 0)
            return rc;
    }
    *more = 1;
    return 0;
}

static int send_status(walq__audit *a, int64_t now, int reply)
{
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    rc = walq__stream_status(&a->st, a->recv_lsn > a->durable ? a->recv_lsn : a->durable,
                             a->durable, reply);
    if (rc != 0)
        return rc;
    if (a->durable != a->confirmed)
        walq__debug(&a->log, "confirmed %s", walq__lsn_format(a->durable, lsn));
    a->confirmed = a->durable;
    a->stats.confirmed_lsn = a->durable;
    a->reply_now = 0;
    a->next_status = now + a->status_us;
    return 0;
}

/* Everything whole is durable: what the server sent up to last_end may be confirmed. */
static void settle(walq__audit *a)
{
    if (!a->dirty && a->last_end > a->durable)
        a->durable = a->last_end;
}

static void final_status(walq__audit *a)
{
    if (a->st.streaming && a->st.conn != NULL && send_status(a, walq__mono_us(), 0) == 0) {
        PQsetnonblocking(a->st.conn, 0);
        PQflush(a->st.conn);
    }
}

/* A clean stop: what is whole is written and confirmed, the rest comes again. */
static int finish(walq__audit *a)
{
    int rc = 0;

    if (a->in_txn) {
        rc = cut_partial(a);
        a->in_txn = 0;
    }
    if (rc == 0 && (a->kind != SINK_TABLE || a->tconn != NULL))
        rc = flush(a);
    if (rc == 0 && !a->restart) {
        settle(a);
        final_status(a);
    }
    return rc;
}

static int loop(walq__audit *a)
{
    struct pollfd pfd[2];
    int rc = 0;

    for (;;) {
        int64_t now = walq__mono_us(), wake_at = 0;
        int stopping = a->stop_req != 0, more = 0, n = 0, stream_pfd = -1, timeout_ms;
        int caught_up = a->o.drain && !a->in_txn && a->last_end >= a->drain_target;

        if (a->stop_req == 2) {
            rc = walq__error(WALQ_ECANCELED, NULL,
                             "stopped at once; what was not yet written comes again at the next "
                             "start");
            break;
        }
        if (a->kind == SINK_TABLE && a->tconn == NULL && !stopping && now >= a->target_retry_at) {
            rc = reconnect_table(a);
            if (rc != 0 && (rc = target_failed(a, rc)) != 0)
                break;
            a->restart = 0;
        }
        if (!a->st.streaming && !stopping && (a->kind != SINK_TABLE || a->tconn != NULL) &&
            now >= a->stream_retry_at) {
            rc = start_stream(a);
            if (rc == WALQ_ECONN || (rc == WALQ_EBUSY && a->stats.reconnects > 0)) {
                stream_lost(a);
                rc = 0;
            } else if (rc == WALQ_ESLOT) {
                rc = slot_lost_error(a);
                break;
            } else if (rc == WALQ_EBUSY) {
                rc = walq__error(WALQ_EBUSY,
                                 "Another walq audit of this group is running; stop it, or wait "
                                 "for it to exit.",
                                 "replication slot \"%s\" is in use by another process", a->slot);
                break;
            } else if (rc != 0) {
                break;
            }
        }
        if (a->st.streaming && (!stopping || a->in_txn)) {
            rc = read_stream(a, &more);
            if (rc == WALQ_ECONN) {
                stream_lost(a);
                rc = 0;
            } else if (rc == WALQ_ESLOT) {
                rc = slot_lost_error(a);
                break;
            } else if (rc != 0) {
                break;
            }
            caught_up = a->o.drain && !a->in_txn && a->last_end >= a->drain_target;
        }
        if (a->restart) {
            start_over(a);
            continue;
        }
        if (a->dirty && can_flush(a) &&
            (!more || stopping || caught_up || now - a->dirty_since >= FLUSH_DELAY_US ||
             a->batch_rows >= FLUSH_ROWS)) {
            rc = flush(a);
            if (rc != 0)
                break;
            if (a->restart) {
                start_over(a);
                continue;
            }
        }
        settle(a);
        if (a->st.streaming &&
            (now >= a->next_status || a->reply_now ||
             (a->durable > a->confirmed && now >= a->next_status - a->status_us * 9 / 10))) {
            rc = send_status(a, now, 0);
            if (rc == WALQ_ECONN) {
                stream_lost(a);
                rc = 0;
            } else if (rc != 0) {
                break;
            }
        }
        if (stopping && (!a->in_txn || !a->st.streaming)) {
            rc = finish(a);
            break;
        }
        if (caught_up && a->st.streaming && !a->dirty) {
            final_status(a);
            walq__info(&a->log, "drained: every change committed before the start is written");
            break;
        }
        /* Idle and draining: ask the server how far it has read. */
        if (a->o.drain && a->st.streaming && !a->in_txn && now >= a->next_ping) {
            rc = send_status(a, now, 1);
            if (rc == WALQ_ECONN) {
                stream_lost(a);
                rc = 0;
            } else if (rc != 0) {
                break;
            }
            a->next_ping = now + PING_US;
        }

        pfd[n].fd = a->wake[0];
        pfd[n++].events = POLLIN;
        if (a->st.streaming) {
            stream_pfd = n;
            pfd[n].fd = walq__stream_socket(&a->st);
            pfd[n].events = POLLIN;
            if (PQflush(a->st.conn) == 1)
                pfd[n].events |= POLLOUT;
            n++;
            wake_at = walq__min_deadline(wake_at, a->next_status);
            if (a->o.drain)
                wake_at = walq__min_deadline(wake_at, a->next_ping);
        } else {
            wake_at = walq__min_deadline(wake_at, a->stream_retry_at);
        }
        if (a->dirty)
            wake_at = walq__min_deadline(wake_at, a->dirty_since + FLUSH_DELAY_US);
        if (a->kind == SINK_TABLE && a->tconn == NULL)
            wake_at = walq__min_deadline(wake_at, a->target_retry_at);
        if (more)
            timeout_ms = 0;
        else if (wake_at == 0)
            timeout_ms = 1000;
        else
            timeout_ms = wake_at <= now ? 0 : (int)((wake_at - now + 999) / 1000);
        if (timeout_ms > 1000)
            timeout_ms = 1000;
        if (poll(pfd, (nfds_t)n, timeout_ms) < 0 && errno != EINTR) {
            rc = walq__error(WALQ_ESYS, NULL, "poll failed: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents & POLLIN) {
            char buf[64];

            while (read(a->wake[0], buf, sizeof(buf)) > 0) {
            }
        }
        /* A socket that hung up is noticed even when nothing can be read from it. */
        if (stream_pfd >= 0 && (pfd[stream_pfd].revents & (POLLHUP | POLLERR)) &&
            PQconsumeInput(a->st.conn) == 0) {
            char msg[512];

            walq__error(WALQ_ECONN, NULL, "lost the replication connection to \"%s\": %s",
                        a->st.server, walq__pg_message(a->st.conn, NULL, msg, sizeof(msg)));
            stream_lost(a);
        }
    }
    return rc;
}

int walq__audit_run(walq__audit *a)
{
    int rc = setup(a);

    if (rc == 0)
        rc = loop(a);
    close_all(a);
    return rc;
}
