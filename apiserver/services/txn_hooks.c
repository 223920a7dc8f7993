/*
 * txn_hooks — the registry between the datastore, which owns transactions,
 * and the services whose work waits for them (txn_hooks.h). Backend thread
 * only: no locks.
 */
#include <stdlib.h>

#include "apiserver/services/txn_hooks.h"
#include "common/log.h"

struct txn_listener {
    const struct af_txn_listener *ops;
    void *arg;
};

static struct txn_listener listeners[AF_TXN_MAX_LISTENERS];
static size_t n_listeners;

static bool (*owner_touch)(void *arg, uint64_t handle);
static void *owner_arg;

void af_txn_listen(const struct af_txn_listener *ops, void *arg)
{
    if (n_listeners == AF_TXN_MAX_LISTENERS) {
        /* A programming error (a state created over and over without
         * destroy): losing commits silently would be worse. */
        af_error("txn_hooks: more than %d listeners", AF_TXN_MAX_LISTENERS);
        abort();
    }
    listeners[n_listeners++] = (struct txn_listener){ops, arg};
}

void af_txn_unlisten(const struct af_txn_listener *ops, void *arg)
{
    for (size_t i = 0; i < n_listeners; i++) {
        if (listeners[i].ops == ops && listeners[i].arg == arg) {
            listeners[i] = listeners[--n_listeners];
            return;
        }
    }
}

bool af_txn_touch(uint64_t handle)
{
    return owner_touch && owner_touch(owner_arg, handle);
}

void af_txn_set_owner(bool (*touch)(void *arg, uint64_t handle), void *arg)
{
    owner_touch = touch;
    owner_arg = arg;
}

void af_txn_clear_owner(void *arg)
{
    if (owner_arg == arg) {
        owner_touch = NULL;
        owner_arg = NULL;
    }
}

int af_txn_prepare(uint64_t handle, char *why, size_t whylen)
{
    for (size_t i = 0; i < n_listeners; i++) {
        if (listeners[i].ops->prepare(listeners[i].arg, handle, why, whylen) != 0) {
            af_txn_abort(handle);
            return -1;
        }
    }
    return 0;
}

int af_txn_commit(uint64_t handle, const char **notify, char *why, size_t whylen)
{
    int rc = 0;
    char later[256]; /* the first failure is the one reported */
    *notify = NULL;
    for (size_t i = 0; i < n_listeners; i++) {
        bool want = false;
        /* Every listener commits even after one failed: the owner's writes
         * are in, and each listener's work stands on its own. */
        if (listeners[i].ops->commit(listeners[i].arg, handle, &want, rc ? later : why,
                                     rc ? sizeof(later) : whylen) != 0)
            rc = -1;
        if (want && !*notify)
            *notify = listeners[i].ops->service;
    }
    return rc;
}

void af_txn_abort(uint64_t handle)
{
    for (size_t i = 0; i < n_listeners; i++)
        listeners[i].ops->abort(listeners[i].arg, handle);
}
