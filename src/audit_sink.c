/*
 * The audit's sinks, each its own cursor where it can be.
 *
 * A regular file: the last line with "last": true ends the last whole
 * transaction, and whatever follows it is cut at the next open; a flush is
 * an fsync.  Standard output or a pipe cannot be read back: delivery there
 * is at least once across restarts.  A table: rows are written with COPY,
 * and a cursor row moves in the same transaction; a flush is its commit.
 *
 * The loop knows none of this: it emits changes, ends transactions, flushes
 * when the sink can and it is time, and starts over when the table's server
 * is lost.
 */
#include "audit_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "lsn.h"

/* Bytes of lines or rows kept before they are handed to the kernel or server. */
#define WRITE_CHUNK (1 << 20)
/* Longest that written transactions wait for their fsync or commit. */
#define FLUSH_DELAY_US 200000
/* Rows per transaction into the table, unless one transaction has more. */
#define FLUSH_ROWS 10000
/* Advisory lock taken while the audit table is created (arbitrary, fixed). */
#define SETUP_LOCK "2037741435"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

#define BAD_FILE_HINT                                                                              \
    "Give --output a file of its own: a new one, or one that walq audit wrote; walq audit cuts "   \
    "an unfinished transaction at the end, but nothing else."

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

/*
 * The last line, at *first, is change k of a transaction that did not
 * finish: its first line is k - 1 lines up.  *first receives where that is.
 */
static int unfinished_start(rscan *r, const line_info *last, off_t *first)
{
    off_t end = 0;
    line_info li;
    int rc;

    for (int64_t i = 1; i < last->index; i++) {
        if (*first == 0)
            return walq__error(WALQ_EINVAL, BAD_FILE_HINT,
                               "output file \"%s\" does not end like a walq audit trail: its last "
                               "transaction has fewer lines than its last index, %lld",
                               r->path, (long long)last->index);
        end = *first - 1;
        rc = line_start(r, end, first);
        if (rc != 0)
            return rc;
    }
    if (last->index == 1)
        return 0;
    rc = read_line(r, *first, end, &li);
    if (rc != 0)
        return rc;
    if (li.index != 1 || li.end_lsn != last->end_lsn || li.last)
        return walq__error(WALQ_EINVAL, BAD_FILE_HINT,
                           "output file \"%s\" does not end like a walq audit trail: the lines "
                           "of its last transaction are not numbered 1 to %lld",
                           r->path, (long long)last->index);
    return 0;
}

/* The line before an unfinished transaction, which starts at first > 0, ends the one before. */
static int unfinished_after(rscan *r, off_t first, const line_info *last, uint64_t *end_lsn)
{
    off_t prev;
    line_info li;
    int rc = line_start(r, first - 1, &prev);

    if (rc == 0)
        rc = read_line(r, prev, first - 1, &li);
    if (rc != 0)
        return rc;
    if (!li.last || li.end_lsn >= last->end_lsn)
        return walq__error(WALQ_EINVAL, BAD_FILE_HINT,
                           "output file \"%s\" does not end like a walq audit trail: the line "
                           "before its unfinished transaction does not end a transaction",
                           r->path);
    *end_lsn = li.end_lsn;
    return 0;
}

int walq__audit_read_tail(int fd, const char *path, walq__audit_tail *out)
{
    rscan *r;
    struct stat sb;
    off_t tail, first;
    line_info last;
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
    rc = line_start(r, tail - 1, &first);
    if (rc == 0)
        rc = read_line(r, first, tail - 1, &last);
    if (rc != 0)
        goto done;
    if (last.last) {
        out->keep = tail;
        out->end_lsn = last.end_lsn;
        goto done;
    }
    rc = unfinished_start(r, &last, &first);
    if (rc != 0)
        goto done;
    out->keep = first;
    out->dropped_lines = (size_t)last.index;
    if (first > 0)
        rc = unfinished_after(r, first, &last, &out->end_lsn);

done:
    free(r);
    return rc;
}

/* ------------------------------------------------------------------ */
/* File and standard output                                            */

static int write_error(walq__audit_sink *s, int err)
{
    if (s->kind == WALQ__AUDIT_SINK_FILE)
        return walq__error(WALQ_ESYS,
                           err == ENOSPC ? "Free space on its file system; walq audit carries on "
                                           "from the last whole transaction when started again."
                                         : NULL,
                           "could not write to output file \"%s\": %s", s->output, strerror(err));
    return walq__error(WALQ_ESYS, NULL, "could not write to %s: %s",
                       strcmp(s->output, "-") == 0 ? "standard output" : s->output, strerror(err));
}

/* Hands everything buffered to the kernel. */
static int write_out(walq__audit_sink *s)
{
    size_t off = 0;

    while (off < s->out.len) {
        ssize_t n = write(s->fd, s->out.data + off, s->out.len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            s->written += (off_t)off;
            return write_error(s, errno);
        }
        off += (size_t)n;
    }
    s->written += (off_t)off;
    walq__buf_reset(&s->out);
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

/* Cuts what follows the file's last whole transaction, and says so. */
static int cut_tail(walq__audit_sink *s, const walq__audit_tail *tail)
{
    if (ftruncate(s->fd, tail->keep) != 0 || fsync(s->fd) != 0)
        return walq__error(WALQ_ESYS, NULL, "could not cut output file \"%s\": %s", s->output,
                           strerror(errno));
    if (tail->dropped_lines > 0)
        walq__info(s->log,
                   "output file \"%s\": cut %lld bytes (%zu line%s of an unfinished "
                   "transaction) after its last whole transaction; they come again",
                   s->output, (long long)(tail->size - tail->keep), tail->dropped_lines,
                   tail->dropped_lines == 1 ? "" : "s");
    else
        walq__info(s->log, "output file \"%s\": cut %lld bytes of a line left unfinished",
                   s->output, (long long)(tail->size - tail->keep));
    return 0;
}

/*
 * Opens the output file, takes its lock, and cuts what follows its last
 * whole transaction.  *cursor receives that transaction's end LSN.
 */
static int open_file(walq__audit_sink *s, uint64_t *cursor)
{
    struct stat sb;
    walq__audit_tail tail;
    int existed = stat(s->output, &sb) == 0;
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    *cursor = 0;
    /*
     * The changes are every job's payload: a file walq creates is the
     * user's alone (0600) unless --file-mode says otherwise, whatever the
     * umask, which could only take permissions away.
     */
    s->fd = open(s->output, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, (mode_t)s->file_mode);
    if (s->fd < 0)
        return walq__error(WALQ_ESYS,
                           "Check that the directory exists and that this user may write there.",
                           "could not open output file \"%s\": %s", s->output, strerror(errno));
    if (fstat(s->fd, &sb) != 0)
        return walq__error(WALQ_ESYS, NULL, "could not stat output file \"%s\": %s", s->output,
                           strerror(errno));
    if (!existed && S_ISREG(sb.st_mode) && fchmod(s->fd, (mode_t)s->file_mode) != 0)
        return walq__error(WALQ_ESYS, NULL, "could not set the mode of output file \"%s\": %s",
                           s->output, strerror(errno));
    if (existed && S_ISREG(sb.st_mode) && (sb.st_mode & 0777 & ~(mode_t)s->file_mode) != 0)
        walq__warn(s->log,
                   "output file \"%s\" has mode %04o, more open than %04o\nHINT:  Every job's "
                   "payload is in it: chmod %04o it, or give --file-mode %04o to accept it.",
                   s->output, (unsigned)(sb.st_mode & 0777), (unsigned)s->file_mode,
                   (unsigned)s->file_mode, (unsigned)(sb.st_mode & 0777));
    if (!S_ISREG(sb.st_mode)) {
        /* A pipe or a device cannot be read back: it is written like stdout. */
        s->kind = WALQ__AUDIT_SINK_STREAM;
        walq__info(s->log,
                   "\"%s\" is not a regular file: delivery is at least once across "
                   "restarts",
                   s->output);
        return 0;
    }
    if (flock(s->fd, LOCK_EX | LOCK_NB) != 0)
        return walq__error(errno == EWOULDBLOCK ? WALQ_EBUSY : WALQ_ESYS,
                           "Another walq audit writes to it; give each audit a file of its own.",
                           "could not lock output file \"%s\": %s", s->output,
                           errno == EWOULDBLOCK ? "it is in use by another process"
                                                : strerror(errno));
    if (!existed && (rc = fsync_dir_of(s->output)) != 0)
        return rc;
    rc = walq__audit_read_tail(s->fd, s->output, &tail);
    if (rc == 0 && tail.keep < tail.size)
        rc = cut_tail(s, &tail);
    if (rc != 0)
        return rc;
    s->written = s->boundary = tail.keep;
    s->written_end = *cursor = tail.end_lsn;
    if (tail.end_lsn != 0)
        walq__info(s->log, "output file \"%s\" ends with the transaction that ends at %s",
                   s->output, walq__lsn_format(tail.end_lsn, lsn));
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
static int resolve_table(walq__audit_sink *s, int *exists)
{
    const char *params[1] = {s->into};
    PGresult *res;
    char *nsp = NULL, *rel = NULL;
    walq__buf b = {0};
    int rc;

    rc = walq__query(s->tconn, &res, "look up the audit table",
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
    nsp = quote_ident(s->tconn, PQgetvalue(res, 0, 0));
    rel = quote_ident(s->tconn, PQgetvalue(res, 0, 1));
    free(s->table_q);
    free(s->cursor_q);
    free(s->table_key);
    s->table_q = s->cursor_q = s->table_key = NULL;
    if (nsp != NULL && rel != NULL && walq__buf_printf(&b, "%s.%s", nsp, rel) == 0)
        s->table_q = walq__strdup(b.data);
    walq__buf_reset(&b);
    if (nsp != NULL && walq__buf_printf(&b, "%s.walq_audit_cursor", nsp) == 0)
        s->cursor_q = walq__strdup(b.data);
    walq__buf_reset(&b);
    if (walq__buf_printf(&b, "%s.%s", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1)) == 0)
        s->table_key = walq__strdup(b.data);
    walq__buf_free(&b);
    PQclear(res);
    free(nsp);
    free(rel);
    if (s->table_q == NULL || s->cursor_q == NULL || s->table_key == NULL)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    return 0;
}

/* The given name, quoted part by part, for CREATE TABLE. */
static int quoted_given_name(walq__audit_sink *s, walq__buf *b)
{
    const char *dot = strchr(s->into, '.');
    char *part;
    int rc = 0;

    if (dot != NULL) {
        part = walq__strndup(s->into, (size_t)(dot - s->into));
        char *q = part ? quote_ident(s->tconn, part) : NULL;

        rc = q ? walq__buf_printf(b, "%s.", q) : WALQ_ENOMEM;
        free(q);
        free(part);
    }
    if (rc == 0) {
        char *q = quote_ident(s->tconn, dot ? dot + 1 : s->into);

        rc = q ? walq__buf_puts(b, q) : WALQ_ENOMEM;
        free(q);
    }
    return rc ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

static int create_table(walq__audit_sink *s)
{
    walq__buf sql = {0};
    int rc = quoted_given_name(s, &sql);
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
    rc = walq__exec(s->tconn, "create the audit table", sql.data);
    walq__buf_free(&sql);
    return rc;
}

static int protect_table(walq__audit_sink *s)
{
    walq__buf sql = {0};
    char *nsp_end = strchr(s->cursor_q, '.');
    int nsp_len = (int)(nsp_end - s->cursor_q);
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
        nsp_len, s->cursor_q, s->table_q, nsp_len, s->cursor_q, s->table_q, nsp_len, s->cursor_q,
        s->table_q);
    if (rc != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    rc = walq__exec(s->tconn, "make the audit table append-only", sql.data);
    walq__buf_free(&sql);
    return rc;
}

/* The group's cursor in the table, and the end of the table's last transaction. */
static int read_cursor(walq__audit_sink *s, uint64_t *cursor, uint64_t *top)
{
    const char *params[2] = {s->table_key, s->group};
    walq__buf sql = {0};
    PGresult *res;
    int rc;

    if (walq__buf_printf(&sql,
                         "SELECT (SELECT end_lsn::text FROM %s"
                         "         WHERE table_name = $1 AND group_name = $2),"
                         "       (SELECT max(end_lsn)::text FROM %s)",
                         s->cursor_q, s->table_q) != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    rc = walq__query(s->tconn, &res, "read the audit cursor", sql.data, 2, params);
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

static int table_check(walq__audit_sink *s, uint64_t *cursor)
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
                         s->table_q) != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    res = PQexec(s->tconn, sql.data);
    walq__buf_free(&sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = walq__conn_failed(s->tconn, res) ? WALQ_ECONN : WALQ_EINVAL;
        walq__pg_message(s->tconn, res, msg, sizeof(msg));
        PQclear(res);
        return walq__error(rc,
                           "Give --into the name of a new table, or of one that walq audit "
                           "created.",
                           "table \"%s\" is not a walq audit table: %s", s->table_key, msg);
    }
    PQclear(res);
    rc = read_cursor(s, cursor, &top);
    if (rc != 0)
        return rc;
    /* Rows beyond the cursor were not written by this group: two would mix. */
    if (top > *cursor)
        return walq__error(WALQ_EINVAL, "Give each audit group a table of its own.",
                           "table \"%s\" holds changes up to %s, beyond the cursor of audit group "
                           "\"%s\" (%s)",
                           s->table_key, walq__lsn_format(top, lsn), s->group,
                           walq__lsn_format(*cursor, lsn2));
    return 0;
}

static int create_cursor_table(walq__audit_sink *s)
{
    walq__buf sql = {0};
    int rc;

    if (walq__buf_printf(&sql,
                         "CREATE TABLE IF NOT EXISTS %s ("
                         " table_name text NOT NULL,"
                         " group_name text NOT NULL,"
                         " end_lsn pg_lsn NOT NULL,"
                         " updated_at timestamptz NOT NULL DEFAULT now(),"
                         " PRIMARY KEY (table_name, group_name))",
                         s->cursor_q) != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    rc = walq__exec(s->tconn, "create the audit cursor table", sql.data);
    walq__buf_free(&sql);
    return rc;
}

/* In the set-up transaction: the table, made append-only, and the cursor table. */
static int create_missing(walq__audit_sink *s)
{
    int exists = 0;
    int rc = walq__exec(s->tconn, "lock the audit set-up",
                        "SELECT pg_advisory_xact_lock(" SETUP_LOCK ")");

    if (rc == 0)
        rc = resolve_table(s, &exists);
    if (rc == 0 && !exists) {
        rc = create_table(s);
        if (rc == 0)
            rc = resolve_table(s, &exists);
        if (rc == 0 && !exists)
            rc = walq__error(WALQ_EQUERY, NULL, "table \"%s\" is not there after CREATE TABLE",
                             s->into);
        if (rc == 0)
            rc = protect_table(s);
        if (rc == 0)
            walq__info(s->log, "created the append-only table \"%s\"", s->table_key);
    }
    return rc == 0 ? create_cursor_table(s) : rc;
}

/* Connects to the table's server and creates what is missing there. */
static int open_table(walq__audit_sink *s, uint64_t *cursor)
{
    int rc;

    *cursor = 0;
    rc = walq__connect(&s->tconn, s->target, WALQ__CONN_SQL, "walq audit");
    if (rc != 0)
        return rc;
    rc = walq__exec(s->tconn, "set up the session",
                    "SET synchronous_commit = on; SET client_min_messages = warning");
    if (rc == 0)
        rc = walq__exec(s->tconn, "begin creating the audit table", "BEGIN");
    if (rc != 0)
        return rc;
    rc = create_missing(s);
    if (rc == 0)
        rc = walq__exec(s->tconn, "commit the audit table", "COMMIT");
    if (rc != 0) {
        PQclear(PQexec(s->tconn, "ROLLBACK"));
        return rc;
    }
    rc = table_check(s, cursor);
    s->written_end = *cursor;
    return rc;
}

/* A failure on the table's server: a lost connection is retried, the rest is fatal. */
static int target_failed(walq__audit_sink *s, int rc)
{
    int64_t delay;

    if (rc != WALQ_ECONN)
        return rc;
    delay = walq__reconnect_delay_us(s->target_failures++);
    walq__warn_retry(s->log, delay);
    if (s->tconn != NULL)
        PQfinish(s->tconn);
    s->tconn = NULL;
    s->in_copy = 0;
    s->target_retry_at = walq__mono_us() + delay;
    s->lost = 1;
    return 0;
}

/*
 * After a lost connection: a COMMIT whose answer was lost may have happened,
 * so the cursor says where to carry on.
 */
static int reconnect_table(walq__audit_sink *s, uint64_t *cursor)
{
    uint64_t at, top;
    char lsn[WALQ__LSN_BUFSZ];
    int rc;

    rc = walq__connect(&s->tconn, s->target, WALQ__CONN_SQL, "walq audit");
    if (rc == 0)
        rc = walq__exec(s->tconn, "set up the session", "SET synchronous_commit = on");
    if (rc == 0)
        rc = read_cursor(s, &at, &top);
    if (rc != 0)
        return rc;
    *cursor = s->written_end = at;
    walq__info(s->log, "reconnected to the server of table \"%s\"; its cursor is at %s",
               s->table_key, walq__lsn_format(at, lsn));
    return 0;
}

static int copy_error(walq__audit_sink *s, PGresult *res, const char *what)
{
    char msg[1024];
    int rc = walq__conn_failed(s->tconn, res) ? WALQ_ECONN : WALQ_EQUERY;

    walq__pg_message(s->tconn, res, msg, sizeof(msg));
    return walq__error(rc, NULL, "could not %s: %s", what, msg);
}

static int table_begin(walq__audit_sink *s)
{
    walq__buf sql = {0};
    PGresult *res;
    int rc;

    rc = walq__exec(s->tconn, "begin writing audit rows", "BEGIN");
    if (rc != 0)
        return rc;
    if (walq__buf_printf(&sql,
                         "COPY %s (end_lsn, change_index, lsn, xid, commit_time, commit_lsn,"
                         " table_name, action, new_row, old_key) FROM STDIN",
                         s->table_q) != 0) {
        walq__buf_free(&sql);
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    }
    res = PQexec(s->tconn, sql.data);
    walq__buf_free(&sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        rc = copy_error(s, res, "write audit rows");
        PQclear(res);
        PQclear(PQexec(s->tconn, "ROLLBACK"));
        return rc;
    }
    PQclear(res);
    s->in_copy = 1;
    s->batch_rows = 0;
    return 0;
}

static int table_put(walq__audit_sink *s)
{
    char msg[512];

    if (s->out.len == 0)
        return 0;
    if (PQputCopyData(s->tconn, s->out.data, (int)s->out.len) != 1)
        return walq__error(WALQ_ECONN, NULL, "could not send audit rows: %s",
                           walq__pg_message(s->tconn, NULL, msg, sizeof(msg)));
    walq__buf_reset(&s->out);
    return 0;
}

/* Ends the COPY and reads its result (and any that follow). */
static int copy_end(walq__audit_sink *s, const char *abort_msg)
{
    PGresult *res;
    int rc = 0;
    char msg[512];

    if (PQputCopyEnd(s->tconn, abort_msg) != 1)
        return walq__error(WALQ_ECONN, NULL, "could not finish writing audit rows: %s",
                           walq__pg_message(s->tconn, NULL, msg, sizeof(msg)));
    while ((res = PQgetResult(s->tconn)) != NULL) {
        if (rc == 0 && abort_msg == NULL && PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = copy_error(s, res, "write audit rows");
        PQclear(res);
    }
    if (rc == 0 && PQstatus(s->tconn) == CONNECTION_BAD)
        rc = walq__error(WALQ_ECONN, NULL, "lost the connection while writing audit rows: %s",
                         walq__pg_message(s->tconn, NULL, msg, sizeof(msg)));
    return rc;
}

/* Commits the rows with the cursor at the end of the last whole transaction. */
static int table_commit(walq__audit_sink *s)
{
    const char *params[3];
    char lsn[WALQ__LSN_BUFSZ];
    walq__buf sql = {0};
    PGresult *res = NULL;
    int rc;

    rc = table_put(s);
    if (rc == 0)
        rc = copy_end(s, NULL);
    s->in_copy = 0;
    if (rc == 0 && walq__buf_printf(&sql,
                                    "INSERT INTO %s AS c (table_name, group_name, end_lsn)"
                                    " VALUES ($1, $2, $3::pg_lsn)"
                                    " ON CONFLICT (table_name, group_name) DO UPDATE"
                                    " SET end_lsn = excluded.end_lsn, updated_at = now()"
                                    " WHERE c.end_lsn < excluded.end_lsn",
                                    s->cursor_q) != 0)
        rc = walq__error(WALQ_ENOMEM, NULL, "out of memory");
    if (rc == 0) {
        params[0] = s->table_key;
        params[1] = s->group;
        params[2] = walq__lsn_format(s->written_end, lsn);
        rc = walq__query(s->tconn, &res, "move the audit cursor", sql.data, 3, params);
    }
    walq__buf_free(&sql);
    if (rc == 0 && strcmp(PQcmdTuples(res), "1") != 0)
        rc = walq__error(WALQ_EQUERY, "Give each audit group a table of its own.",
                         "the cursor of audit group \"%s\" in \"%s\" is already at or past %s",
                         s->group, s->table_key, lsn);
    PQclear(res);
    if (rc == 0)
        rc = walq__exec(s->tconn, "commit audit rows", "COMMIT");
    else if (rc != WALQ_ECONN)
        PQclear(PQexec(s->tconn, "ROLLBACK"));
    return rc;
}

/* Gives up the rows of the open transaction: they come again. */
static int table_abort(walq__audit_sink *s)
{
    int rc = 0;

    if (!s->in_copy)
        return 0;
    walq__buf_reset(&s->out);
    s->in_copy = 0;
    rc = copy_end(s, "walq audit stopped inside a transaction");
    if (rc == 0)
        rc = walq__exec(s->tconn, "roll back audit rows", "ROLLBACK");
    return rc;
}

static int table_row(walq__audit_sink *s, json_object *o)
{
    static const char *const fields[] = {"end_lsn",    "index", "lsn",    "xid", "commit_time",
                                         "commit_lsn", "table", "action", "new", "old_key"};
    int rc = 0;

    if (!s->in_copy) {
        rc = table_begin(s);
        if (rc != 0)
            return target_failed(s, rc);
    }
    for (size_t i = 0; rc == 0 && i < WALQ__ARRAY_SIZE(fields); i++) {
        json_object *v = NULL;

        json_object_object_get_ex(o, fields[i], &v);
        if (i > 0)
            rc = walq__buf_puts(&s->out, "\t");
        if (rc != 0)
            break;
        if (v == NULL) {
            rc = walq__buf_puts(&s->out, "\\N");
        } else if (json_object_is_type(v, json_type_object)) {
            size_t len;
            const char *text = json_object_to_json_string_length(v, JSON_FLAGS, &len);

            rc = text ? walq__buf_copy_text(&s->out, text, len) : WALQ_ENOMEM;
        } else {
            const char *text = json_object_get_string(v);

            rc = walq__buf_copy_text(&s->out, text, strlen(text));
        }
    }
    if (rc == 0)
        rc = walq__buf_puts(&s->out, "\n");
    if (rc != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    s->batch_rows++;
    s->cur_rows++;
    if (s->out.len >= WRITE_CHUNK)
        return target_failed(s, table_put(s));
    return 0;
}

/* ------------------------------------------------------------------ */
/* The sink, whichever it is                                           */

void walq__audit_sink_init(walq__audit_sink *s, const walq__audit_sink_config *c)
{
    static const walq__log quiet;

    memset(s, 0, sizeof(*s));
    s->output = c->output != NULL ? c->output : "-";
    s->into = c->into;
    s->target = c->target;
    s->group = c->group;
    s->file_mode = c->file_mode ? c->file_mode : 0600;
    s->log = c->log ? c->log : &quiet;
    s->kind = c->into != NULL               ? WALQ__AUDIT_SINK_TABLE
              : strcmp(s->output, "-") == 0 ? WALQ__AUDIT_SINK_STREAM
                                            : WALQ__AUDIT_SINK_FILE;
    s->fd = -1;
}

int walq__audit_sink_open(walq__audit_sink *s, uint64_t *cursor)
{
    *cursor = 0;
    switch (s->kind) {
    case WALQ__AUDIT_SINK_FILE:
        return open_file(s, cursor);
    case WALQ__AUDIT_SINK_STREAM:
        s->fd = STDOUT_FILENO;
        return 0;
    case WALQ__AUDIT_SINK_TABLE:
        return open_table(s, cursor);
    }
    return WALQ_EINVAL;
}

int walq__audit_sink_from_elsewhere(const walq__audit_sink *s, uint64_t cursor, uint64_t wal_lsn)
{
    int file = s->kind == WALQ__AUDIT_SINK_FILE;
    char lsn[WALQ__LSN_BUFSZ], lsn2[WALQ__LSN_BUFSZ];

    return walq__error(WALQ_EINVAL,
                       file ? BAD_FILE_HINT : "Give each source server a table of its own.",
                       "the audit trail in \"%s\" ends at %s, beyond the source's WAL "
                       "position %s: it was written from another server",
                       file ? s->output : s->table_key, walq__lsn_format(cursor, lsn),
                       walq__lsn_format(wal_lsn, lsn2));
}

int walq__audit_sink_emit(walq__audit_sink *s, json_object *change, int last)
{
    json_object *v;
    const char *text;
    size_t len;

    if (json_object_object_get_ex(change, "last", &v))
        json_object_set_boolean(v, last);
    if (s->kind == WALQ__AUDIT_SINK_TABLE)
        return table_row(s, change);
    text = json_object_to_json_string_length(change, JSON_FLAGS, &len);
    if (text == NULL || walq__buf_append(&s->out, text, len) != 0 ||
        walq__buf_append(&s->out, "\n", 1) != 0)
        return walq__error(WALQ_ENOMEM, NULL, "out of memory");
    return s->out.len >= WRITE_CHUNK ? write_out(s) : 0;
}

void walq__audit_sink_end_txn(walq__audit_sink *s, uint64_t end_lsn, size_t nchanges)
{
    s->boundary = s->written + (off_t)s->out.len;
    s->cur_rows = 0;
    if (nchanges == 0)
        return;
    if (!s->dirty) {
        s->dirty = 1;
        s->dirty_since = walq__mono_us();
    }
    s->written_end = end_lsn;
    s->dirty_txns++;
    s->dirty_changes += nchanges;
}

int walq__audit_sink_pending(const walq__audit_sink *s)
{
    return s->dirty;
}

int walq__audit_sink_can_flush(const walq__audit_sink *s)
{
    return s->kind != WALQ__AUDIT_SINK_TABLE || s->cur_rows == 0;
}

int walq__audit_sink_flush_due(const walq__audit_sink *s, int64_t now)
{
    return now - s->dirty_since >= FLUSH_DELAY_US || s->batch_rows >= FLUSH_ROWS;
}

/* Commits the open transaction, if any; a lost connection is for later. */
static int flush_table(walq__audit_sink *s)
{
    if (s->in_copy) {
        int rc = target_failed(s, table_commit(s));

        if (rc != 0 || s->lost)
            return rc;
    }
    s->target_failures = 0;
    return 0;
}

int walq__audit_sink_flush(walq__audit_sink *s)
{
    int rc = 0;

    if (!s->dirty || !walq__audit_sink_ready(s))
        return 0;
    switch (s->kind) {
    case WALQ__AUDIT_SINK_FILE:
        rc = write_out(s);
        if (rc == 0 && fsync(s->fd) != 0)
            rc = walq__error(WALQ_ESYS, NULL, "could not fsync output file \"%s\": %s", s->output,
                             strerror(errno));
        break;
    case WALQ__AUDIT_SINK_STREAM:
        rc = write_out(s);
        break;
    case WALQ__AUDIT_SINK_TABLE:
        rc = flush_table(s);
        if (rc != 0 || s->lost)
            return rc;
        break;
    }
    if (rc != 0)
        return rc;
    s->dirty = 0;
    s->durable.flushes++;
    s->durable.transactions += s->dirty_txns;
    s->durable.changes += s->dirty_changes;
    s->dirty_txns = s->dirty_changes = 0;
    return 0;
}

/* Rolls back the rows of the transaction being received, and the whole ones before them. */
static int cut_table(walq__audit_sink *s)
{
    int rc = 0;

    if (s->cur_rows > 0) {
        rc = table_abort(s);
        s->dirty = 0;
        s->dirty_txns = s->dirty_changes = 0;
        s->cur_rows = 0;
    }
    return rc == WALQ_ECONN ? 0 : rc;
}

int walq__audit_sink_cut(walq__audit_sink *s)
{
    if (s->kind == WALQ__AUDIT_SINK_TABLE)
        return cut_table(s);
    if (s->boundary >= s->written) {
        s->out.len = (size_t)(s->boundary - s->written);
        if (s->out.data != NULL)
            s->out.data[s->out.len] = '\0';
    } else if (s->kind == WALQ__AUDIT_SINK_FILE) {
        walq__buf_reset(&s->out);
        if (ftruncate(s->fd, s->boundary) != 0)
            return walq__error(WALQ_ESYS, NULL, "could not cut output file \"%s\": %s", s->output,
                               strerror(errno));
        s->written = s->boundary;
        s->dirty = 1; /* the cut itself wants an fsync */
    } else {
        walq__buf_reset(&s->out);
    }
    return 0;
}

int walq__audit_sink_ready(const walq__audit_sink *s)
{
    return s->kind != WALQ__AUDIT_SINK_TABLE || s->tconn != NULL;
}

int walq__audit_sink_reconnect(walq__audit_sink *s, int64_t now, uint64_t *cursor)
{
    int rc;

    *cursor = 0;
    if (walq__audit_sink_ready(s) || now < s->target_retry_at)
        return 0;
    rc = reconnect_table(s, cursor);
    if (rc != 0)
        rc = target_failed(s, rc);
    /* What was lost was started over already; a failure here is only retried. */
    s->lost = 0;
    return rc;
}

int64_t walq__audit_sink_deadline(const walq__audit_sink *s)
{
    int64_t at = 0;

    if (s->dirty)
        at = s->dirty_since + FLUSH_DELAY_US;
    if (!walq__audit_sink_ready(s))
        at = walq__min_deadline(at, s->target_retry_at);
    return at;
}

int walq__audit_sink_lost(const walq__audit_sink *s)
{
    return s->lost;
}

int64_t walq__audit_sink_start_over(walq__audit_sink *s)
{
    walq__buf_reset(&s->out);
    s->in_copy = 0;
    s->batch_rows = s->cur_rows = 0;
    s->dirty = 0;
    s->dirty_txns = s->dirty_changes = 0;
    s->lost = 0;
    return s->target_retry_at;
}

void walq__audit_sink_counts_get(const walq__audit_sink *s, walq__audit_sink_counts *out)
{
    *out = s->durable;
}

void walq__audit_sink_close(walq__audit_sink *s)
{
    if (s->tconn != NULL)
        PQfinish(s->tconn);
    s->tconn = NULL;
    s->in_copy = 0;
    if (s->fd >= 0 && s->fd != STDOUT_FILENO)
        close(s->fd);
    s->fd = -1;
    walq__buf_free(&s->out);
    free(s->table_q);
    free(s->cursor_q);
    free(s->table_key);
    s->table_q = s->cursor_q = s->table_key = NULL;
}
