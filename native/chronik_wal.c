/*
 * chronik_wal: pwritev + fdatasync on a dedicated thread, completion on an
 * eventfd.  See chronik_wal.h for the contract.
 *
 * Job hand-off: a mutex and a condition variable guard `state`:
 *
 *     IDLE --submit--> SUBMITTED --thread ran it--> DONE --result--> IDLE
 *
 * The thread reads the job (writes, nwrites) only while the state is
 * SUBMITTED, and publishes the result under the mutex before it signals the
 * eventfd, so a caller that saw the eventfd readable always finds DONE.
 * `state` and `stopping` are written under the mutex with atomic stores, so
 * that poll_for_job may read them atomically without it.
 */
#define _GNU_SOURCE

#include "chronik_wal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

enum job_state { STATE_IDLE, STATE_SUBMITTED, STATE_DONE };

/* A file to fdatasync: its fd and the first write of the job that names it. */
typedef struct {
    int fd;
    int index;
} sync_target;

struct chronik_worker {
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* signalled on submit and on stop */
    pthread_t thread;
    int efd;
    int stopping;            /* set once by chronik_worker_free */
    enum job_state state;
    uint64_t poll_ns;        /* after a job, poll this long for the next one before sleeping */
    const chronik_write *writes;
    int nwrites;
    sync_target *targets;    /* scratch, capacity >= nwrites of the current job */
    int targets_capacity;
    chronik_result result;   /* valid in state DONE */
};

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Write bufs[0..nbufs) at offset of fd, entirely.  0 or an errno.
 * `next` and `skip` track the first byte not yet written: byte `skip` of
 * bufs[next].  Empty buffers are skipped, so every pwritev asks for at least
 * one byte and a return of 0 means the file cannot grow (reported as EIO
 * rather than looping forever).
 */
static int write_fully(int fd, int64_t offset, const chronik_buf *bufs, int nbufs)
{
    struct iovec iov[IOV_MAX];
    int next = 0;
    size_t skip = 0;

    for (;;) {
        int niov = 0;
        size_t from = skip;
        for (int i = next; i < nbufs && niov < IOV_MAX; i++, from = 0) {
            if (bufs[i].len > from) {
                iov[niov].iov_base = (char *)bufs[i].base + from;
                iov[niov].iov_len = bufs[i].len - from;
                niov++;
            }
        }
        if (niov == 0)
            return 0;

        ssize_t written = pwritev(fd, iov, niov, (off_t)offset);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (written == 0)
            return EIO;
        offset += written;

        size_t left = (size_t)written;
        while (left > 0) {
            size_t rest = bufs[next].len - skip;
            if (left < rest) {
                skip += left;
                break;
            }
            left -= rest;
            next++;
            skip = 0;
        }
    }
}

/* Run the submitted job: all writes, then one fdatasync per distinct fd. */
static void run_job(chronik_worker *w, chronik_result *r)
{
    const chronik_write *writes = w->writes;
    int nwrites = w->nwrites;
    int ntargets = 0;

    r->err = 0;
    r->step = CHRONIK_STEP_NONE;
    r->index = -1;
    r->sync_calls = 0;
    r->sync_ns = 0;

    for (int i = 0; i < nwrites; i++) {
        int err = write_fully(writes[i].fd, writes[i].offset, writes[i].bufs, writes[i].nbufs);
        if (err) {
            r->err = err;
            r->step = CHRONIK_STEP_WRITE;
            r->index = i;
            return;
        }
        /* A batch touches a handful of files: a linear scan beats hashing. */
        int seen = 0;
        for (int t = 0; t < ntargets && !seen; t++)
            seen = w->targets[t].fd == writes[i].fd;
        if (!seen) {
            w->targets[ntargets].fd = writes[i].fd;
            w->targets[ntargets].index = i;
            ntargets++;
        }
    }

    for (int t = 0; t < ntargets; t++) {
        uint64_t started = monotonic_ns();
        int rc = fdatasync(w->targets[t].fd);
        int err = rc < 0 ? errno : 0;
        r->sync_ns += monotonic_ns() - started;
        r->sync_calls++;
        /* No EINTR retry: fdatasync does not fail with EINTR on Linux, and a
         * failed sync must never be retried (the kernel may have dropped the
         * dirty pages, so a second call could "succeed" over lost data). */
        if (err) {
            r->err = err;
            r->step = CHRONIK_STEP_SYNC;
            r->index = w->targets[t].index;
            return;
        }
    }
}

static void signal_completion(int efd)
{
    uint64_t one = 1;
    /* Cannot fail otherwise: the counter holds at most 1 per collected job. */
    while (write(efd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

/*
 * Called with the lock held, returns with it held: drop it and watch `state`
 * and `stopping` for up to poll_ns, so that a job submitted soon after the
 * last one starts without the futex wake-up of a sleeping thread (tens of
 * microseconds on a virtual machine, as much as a fast fdatasync).  The
 * reads are atomic; the caller re-checks both under the lock.
 */
static void poll_for_job(chronik_worker *w)
{
    uint64_t until = monotonic_ns() + w->poll_ns;
    pthread_mutex_unlock(&w->lock);
    while (__atomic_load_n(&w->state, __ATOMIC_ACQUIRE) != STATE_SUBMITTED
           && !__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE) && monotonic_ns() < until) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    pthread_mutex_lock(&w->lock);
}

static void *worker_main(void *arg)
{
    chronik_worker *w = arg;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        if (w->poll_ns && w->state != STATE_SUBMITTED && !w->stopping)
            poll_for_job(w);
        while (w->state != STATE_SUBMITTED && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        /* A job submitted before the stop request still runs: its submitter
         * may be waiting for it. */
        if (w->state != STATE_SUBMITTED)
            break;
        pthread_mutex_unlock(&w->lock);

        chronik_result result;
        uint64_t started = monotonic_ns();
        run_job(w, &result);
        result.started_ns = started;
        result.ended_ns = monotonic_ns();

        pthread_mutex_lock(&w->lock);
        w->result = result;
        __atomic_store_n(&w->state, STATE_DONE, __ATOMIC_RELEASE);
        signal_completion(w->efd);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

chronik_worker *chronik_worker_new(void)
{
    chronik_worker *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;

    int err = pthread_mutex_init(&w->lock, NULL);
    if (err)
        goto fail_free;
    err = pthread_cond_init(&w->wake, NULL);
    if (err)
        goto fail_mutex;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        err = errno;
        goto fail_cond;
    }
    w->state = STATE_IDLE;

    /* The thread inherits the creator's signal mask: block everything while
     * creating it, so no signal handler ever runs on the worker thread. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    err = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (err)
        goto fail_eventfd;
    return w;

fail_eventfd:
    close(w->efd);
fail_cond:
    pthread_cond_destroy(&w->wake);
fail_mutex:
    pthread_mutex_destroy(&w->lock);
fail_free:
    free(w);
    errno = err;
    return NULL;
}

int chronik_worker_eventfd(const chronik_worker *w)
{
    return w->efd;
}

int chronik_worker_submit(chronik_worker *w, const chronik_write *writes, int nwrites)
{
    if (nwrites < 0 || (nwrites > 0 && writes == NULL))
        return -EINVAL;

    pthread_mutex_lock(&w->lock);
    if (w->state != STATE_IDLE) {
        pthread_mutex_unlock(&w->lock);
        return -EBUSY;
    }
    /* Sized here, on the caller's thread, so the job itself cannot run out of
     * memory halfway through. */
    if (nwrites > w->targets_capacity) {
        sync_target *grown = realloc(w->targets, (size_t)nwrites * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&w->lock);
            return -ENOMEM;
        }
        w->targets = grown;
        w->targets_capacity = nwrites;
    }
    w->writes = writes;
    w->nwrites = nwrites;
    __atomic_store_n(&w->state, STATE_SUBMITTED, __ATOMIC_RELEASE);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

int chronik_worker_result(chronik_worker *w, chronik_result *out)
{
    int rc = 0;

    pthread_mutex_lock(&w->lock);
    if (w->state == STATE_DONE) {
        *out = w->result;
        __atomic_store_n(&w->state, STATE_IDLE, __ATOMIC_RELEASE);
        w->writes = NULL;
        w->nwrites = 0;
    } else {
        rc = w->state == STATE_SUBMITTED ? -EAGAIN : -EINVAL;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void chronik_worker_free(chronik_worker *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);

    close(w->efd);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w->targets);
    free(w);
}

void chronik_worker_set_poll(chronik_worker *w, uint64_t poll_ns)
{
    pthread_mutex_lock(&w->lock);
    w->poll_ns = poll_ns;
    pthread_mutex_unlock(&w->lock);
}
