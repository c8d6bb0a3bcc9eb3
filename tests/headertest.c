/* Compiled on its own to prove that walq.h needs nothing else. */
#include <walq.h>

int walq_headertest(void);

static void on_log(walq_log_level level, const char *msg, void *payload)
{
    (void)level;
    (void)msg;
    (void)payload;
}

static walq_verdict on_job(char *err, size_t errlen, const walq_job *job, void *payload)
{
    (void)err;
    (void)errlen;
    (void)payload;
    return walq_job_attempt(job) > 1 ? WALQ_JOB_DEAD : WALQ_JOB_RETRY;
}

int walq_headertest(void)
{
    walq_options opts = WALQ_OPTIONS_INIT;

    opts.log = on_log;
    opts.callback = on_job;
    return (int)opts.version + (int)(opts.timeout_ms / 1000) + WALQ_EINVAL;
}
