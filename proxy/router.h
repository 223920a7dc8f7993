/*
 * router — app.yaml's handlers on the main port (issue: app.yaml routing).
 *
 * af_router_handle() is called for every request on the main port once its
 * head is complete and valid, before an instance is chosen. It either
 * answers the request itself — static files, login redirects and pages,
 * secure redirects, 404 when no handler matches — with af_ex_reply() or
 * af_ex_fail() and returns true, or returns false to forward it to the
 * module's instances (a script handler).
 */
#ifndef AF_ROUTER_H
#define AF_ROUTER_H

#include <stdbool.h>

struct af_exchange;

bool af_router_handle(struct af_exchange *ex);

#endif
