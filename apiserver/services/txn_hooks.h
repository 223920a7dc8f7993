/*
 * txn_hooks — work of another service that happens exactly when a datastore
 * transaction commits (docs/taskqueue.md, "Transactional adds").
 *
 * App Engine lets a task be added "in" a datastore transaction: the task
 * exists only if and when the transaction commits. The taskqueue keeps such
 * work keyed by the transaction handle; the datastore, which owns the
 * transactions, tells it how each one ends. This header is the whole
 * contract between the two, so neither includes the other:
 *
 *   datastore (the owner)                 taskqueue (a listener)
 *   af_txn_set_owner(touch, ds)           af_txn_listen(&ops, tq)
 *                                         Add: af_txn_touch(handle)?
 *   Commit: af_txn_prepare(handle)  ──▶   ops.prepare: store the tasks in an
 *           apply the writes              open SQLite transaction
 *           af_txn_commit(handle)   ──▶   ops.commit: COMMIT it
 *   Rollback, conflict, idle expiry,
 *   clear: af_txn_abort(handle)     ──▶   ops.abort: drop them
 *
 * Everything runs on the backend thread (apiserver/service.h): no locks.
 * The registry is process-wide because services do not see each other's
 * state; a service registers in create() and unregisters in destroy().
 */
#ifndef AF_TXN_HOOKS_H
#define AF_TXN_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* At most this many listeners at once (one per live taskqueue state). */
#define AF_TXN_MAX_LISTENERS 8

/*
 * A service with work tied to transactions. Handles are the datastore's
 * Transaction.handle. A listener with nothing for a handle returns 0 and
 * does nothing. Calls for one handle come in one of these orders:
 * prepare, commit | prepare, abort | abort.
 */
struct af_txn_listener {
    /* Named in the notice to the main thread when commit asks for one
     * (af_result.notify_service). */
    const char *service;
    /* The owner is about to apply the transaction's writes: get the work
     * ready so that commit can hardly fail (write it, uncommitted). Returns
     * 0, or -1 with a sentence in why: the owner then applies nothing. */
    int (*prepare)(void *arg, uint64_t handle, char *why, size_t whylen);
    /* The owner's writes are committed: make the work durable. Returns 0
     * (*notify set when the main thread should hear of it), or -1 with a
     * sentence in why: the work is lost, and the owner says so. */
    int (*commit)(void *arg, uint64_t handle, bool *notify, char *why, size_t whylen);
    /* The transaction ended without committing (or prepare failed): undo
     * what prepare did and forget the work. */
    void (*abort)(void *arg, uint64_t handle);
};

/* For listeners. ops is borrowed and must outlive the registration. */
void af_txn_listen(const struct af_txn_listener *ops, void *arg);
void af_txn_unlisten(const struct af_txn_listener *ops, void *arg);

/* Whether handle is an open transaction; marks it used, so that it does not
 * expire idle while work is added to it. False when no owner is set. */
bool af_txn_touch(uint64_t handle);

/* For the owner: touch(arg, handle) answers af_txn_touch. Clearing is a
 * no-op unless arg is the current owner. */
void af_txn_set_owner(bool (*touch)(void *arg, uint64_t handle), void *arg);
void af_txn_clear_owner(void *arg);

/* For the owner. af_txn_prepare returns 0, or -1 with why set after
 * aborting every listener. af_txn_commit returns 0, or -1 with why set when
 * a listener lost its work; *notify is the service to notify, or NULL. */
int af_txn_prepare(uint64_t handle, char *why, size_t whylen);
int af_txn_commit(uint64_t handle, const char **notify, char *why, size_t whylen);
void af_txn_abort(uint64_t handle);

#endif
