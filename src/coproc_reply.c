/* A coprocess worker's reply line, parsed and checked. */
#include "coproc_reply.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common.h"
#include "text.h"

static int is_blank(char ch)
{
    return ch == '\r' || ch == ' ' || ch == '\t';
}

/* The reply's "error", or "" when it has none or only a null. */
static int take_error(json_object *root, char *out)
{
    json_object *error = NULL;
    const char *s;
    size_t n;
    char *clean;

    out[0] = '\0';
    if (!json_object_object_get_ex(root, "error", &error) ||
        json_object_is_type(error, json_type_null))
        return 0;
    /* Anything but a string counts as its JSON text, as it was sent. */
    s = json_object_get_string(error);
    if (s == NULL)
        return 0;
    n = json_object_is_type(error, json_type_string) ? (size_t)json_object_get_string_len(error)
                                                     : strlen(s);
    /*
     * PostgreSQL's text takes neither NUL nor invalid UTF-8, and a worker may
     * send either.  A character cut off at the limit is left out whole, so
     * the cleaning needs only a few bytes past it.
     */
    if (n > WALQ__COPROC_MAX_ERROR + 4)
        n = WALQ__COPROC_MAX_ERROR + 4;
    clean = walq__utf8_clean(s, n, WALQ__COPROC_MAX_ERROR + 1);
    if (clean == NULL)
        return WALQ_ENOMEM;
    memcpy(out, clean, strlen(clean) + 1);
    free(clean);
    return 0;
}

int walq__coproc_parse_reply(const char *line, size_t len, walq__coproc_reply *out,
                             const char **why)
{
    json_object *root = NULL, *id = NULL, *ok = NULL, *retry = NULL, *dead = NULL;
    enum json_tokener_error jerr;
    json_tokener *tok;
    const char *bad = NULL;
    size_t end;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    *why = NULL;
    while (len > 0 && is_blank(line[len - 1]))
        len--;
    if (len == 0)
        return WALQ__COPROC_BLANK;
    /* json-c counts in int; the limit keeps far below it. */
    if (len > WALQ__COPROC_MAX_LINE) {
        *why = "line too long";
        return WALQ_EPROTO;
    }
    tok = json_tokener_new();
    if (tok == NULL)
        return WALQ_ENOMEM;
    /* As in decode.c: strict JSON, trailing characters reported in our words. */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS);
    root = json_tokener_parse_ex(tok, line, (int)len);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (jerr == json_tokener_continue)
        bad = "incomplete JSON";
    else if (jerr != json_tokener_success)
        bad = "invalid JSON";
    else if (end < len)
        bad = "unexpected data after the JSON object";
    else if (!json_object_is_type(root, json_type_object))
        bad = "not a JSON object";
    else if (!json_object_object_get_ex(root, "id", &id) || !json_object_is_type(id, json_type_int))
        bad = "no integer \"id\"";
    else if (json_object_get_int64(id) == INT64_MAX && json_object_get_uint64(id) != INT64_MAX)
        bad = "\"id\" out of range";
    else if (!json_object_object_get_ex(root, "ok", &ok) ||
             !json_object_is_type(ok, json_type_boolean))
        bad = "no boolean \"ok\"";
    if (bad != NULL) {
        json_object_put(root);
        *why = bad;
        return WALQ_EPROTO;
    }
    out->id = json_object_get_int64(id);
    out->verdict = WALQ__VERDICT_DONE;
    if (!json_object_get_boolean(ok)) {
        int want_retry =
            json_object_object_get_ex(root, "retry", &retry) && json_object_get_boolean(retry);
        int want_dead =
            json_object_object_get_ex(root, "dead", &dead) && json_object_get_boolean(dead);

        /* Giving up is the stronger request: "dead" wins over "retry". */
        out->verdict = want_dead    ? WALQ__VERDICT_DEAD
                       : want_retry ? WALQ__VERDICT_RETRY
                                    : WALQ__VERDICT_FAIL;
        rc = take_error(root, out->error);
        if (rc == 0 && out->error[0] == '\0')
            strcpy(out->error, want_dead    ? "the coprocess worker gave up on the job"
                               : want_retry ? "the coprocess worker asked for a retry"
                                            : "the coprocess worker reported a failure without "
                                              "an error");
    }
    json_object_put(root);
    return rc;
}

void walq__coproc_excerpt(char *out, size_t outlen, const char *line, size_t len)
{
    const unsigned char *p = (const unsigned char *)line;
    size_t i = 0, k = 0;

    if (outlen == 0)
        return;
    out[0] = '\0';
    if (outlen < WALQ__COPROC_EXCERPT + 4)
        return;
    /*
     * Whole characters only, so that a cut never leaves half of one; a byte
     * that is not part of a valid character, and a control character, is a
     * "?" (a log line is one line).
     */
    while (i < len) {
        size_t n = walq__utf8_seq(p + i, len - i);

        if (k + (n ? n : 1) > WALQ__COPROC_EXCERPT)
            break;
        if (n == 0 || p[i] < 0x20 || p[i] == 0x7f) {
            out[k++] = '?';
            i++;
            continue;
        }
        memcpy(out + k, p + i, n);
        k += n;
        i += n;
    }
    if (i < len) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}
