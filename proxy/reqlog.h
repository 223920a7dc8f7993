/*
 * reqlog — the front end's request log for the logservice: every request
 * the front end finished (forwarded to an instance or answered by appfront
 * itself) becomes one record (apiserver/reqlog.h), which the logservice
 * joins with the app's log lines by request id (docs/services.md).
 *
 * Cheap on the hot path: a record is a few memcpy into this thread's batch;
 * the batch goes to the API backend once per event-loop turn
 * (af_reqlog_flush, from the main loop's after-turn hook), joined to the
 * previous turn's post while that one still waits in the backend's inbox
 * (AF_API_POST_JOIN: one job for many turns), and without waking the
 * backend until AF_REQLOG_WAKE_RECORDS records, AF_REQLOG_WAKE_BYTES bytes
 * or AF_REQLOG_WAKE_POSTS jobs wait (the next API call, a Read included,
 * takes them first: the inbox is one FIFO).
 * While the backend is behind (af_api_post_full: it has not run and handed
 * back enough of the batches), a turn's records wait in the front end's one
 * buffer (AF_API_POST_MAX_BYTES, made at the start) and go with the next
 * turn's; once it is full, records are dropped and counted in a warning.
 * The memory all this takes is fixed from the first request on. Main
 * thread only.
 */
#ifndef AF_PROXY_REQLOG_H
#define AF_PROXY_REQLOG_H

#include <sys/time.h>

struct af_api;
struct af_exchange;

/* A wake-up of the backend for every 512 records, not 64, cut its context
 * switches under load by 8 (3,388 to 454 in 3 s at 16 connections). */
#define AF_REQLOG_WAKE_RECORDS 512
#define AF_REQLOG_WAKE_BYTES (64u << 10)
/* Half of the posts the API server lets out at once (POST_MAX_OUT). */
#define AF_REQLOG_WAKE_POSTS 8

/* Records go to api from now on (borrowed until af_reqlog_stop). Before
 * it, and after the stop, af_reqlog_add does nothing. */
void af_reqlog_start(struct af_api *api);
/* Adds the record of ex, which finished at now (wall clock). ex's request
 * id must be set. */
void af_reqlog_add(const struct af_exchange *ex, const struct timeval *now);
/* Hands the batch of this turn to the backend. */
void af_reqlog_flush(void);
/* Hands over what is left and forgets the API server. */
void af_reqlog_stop(void);

#endif
