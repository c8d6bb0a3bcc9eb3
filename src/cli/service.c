/* What runs beside a long-running command's loop (service.h). */
#include "service.h"

#include "cli.h"

void walq__service_init(walq__service *s, void (*describe)(char *buf, size_t len, void *obj))
{
    s->web = NULL;
    s->stop_on = s->reload_on = 0;
    walq__notify_init(&s->notify, describe, NULL);
}

int walq__service_start(walq__service *s, void *obj, const walq__web_config *web, walq__metrics *m,
                        void (*stop)(void *obj, int immediate), walq__reload *r)
{
    if (web->listen != NULL && walq__web_start(&s->web, web, m) != 0)
        return -1;
    s->notify.arg = obj;
    walq__cli_on_stop(stop, obj);
    s->stop_on = 1;
    r->arg = obj;
    if (walq__cli_on_reload(walq__settings_reload, r) == 0)
        s->reload_on = 1;
    else
        walq__cli_message("WARNING", "could not start the thread of SIGHUP's reloads: SIGHUP is "
                                     "ignored");
    return 0;
}

void walq__service_stop(walq__service *s)
{
    if (s->reload_on)
        walq__cli_on_reload(NULL, NULL);
    s->reload_on = 0;
    walq__notify_stopping(&s->notify);
    if (s->stop_on)
        walq__cli_on_stop(NULL, NULL);
    s->stop_on = 0;
    walq__web_stop(s->web);
    s->web = NULL;
}
