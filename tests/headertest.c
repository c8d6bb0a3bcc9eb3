/* Compiled on its own to prove that walq.h needs nothing else. */
#include <walq.h>

int walq_headertest(void);

int walq_headertest(void)
{
    walq_options opts = WALQ_OPTIONS_INIT;
    return (int)opts.version + WALQ_EINVAL;
}
