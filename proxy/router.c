/*
 * router — see router.h. Until handlers are matched, every request goes to
 * the module's instances, which is what a single `script` handler for
 * `/.*` means.
 */
#include "proxy/router.h"

bool af_router_handle(struct af_exchange *ex)
{
    (void)ex;
    return false;
}
