/*
 * chronik_wal: the hot path of Chronik's write-ahead log, off the event loop.
 *
 * A chronik_worker owns one POSIX thread and one eventfd.  The Python side
 * (chronik/storage/sync_worker.py) submits one job at a time -- a list of
 * writes, each a list of buffers to place at an offset of a file -- and waits
 * for the eventfd to become readable.  The thread then:
 *
 *   1. for each write, in list order, pwritev()s all its buffers at its
 *      offset (partial writes and EINTR are retried; at most IOV_MAX buffers
 *      per call);
 *   2. fdatasync()s every distinct fd of the job exactly once, in order of
 *      first appearance, only after every write succeeded;
 *   3. stops at the first error, records it (errno, step, write index), and
 *      signals completion by adding 1 to the eventfd.
 *
 * Invariants:
 *   - At most one job per worker exists between chronik_worker_submit() and
 *     chronik_worker_result(); the caller's buffers and arrays must stay valid
 *     and unchanged until chronik_worker_result() returned 0 (or the worker
 *     was freed).
 *   - The library never touches Python objects and never takes the GIL.
 *   - The worker thread blocks every signal, so signals (SIGINT for Python)
 *     are delivered to the application's own threads.
 *
 * This header is also the cffi cdef (native/build_native.py feeds it to cffi
 * with preprocessor lines removed): keep it free of macros and C++ guards.
 */
#ifndef CHRONIK_WAL_H
#define CHRONIK_WAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct chronik_worker chronik_worker;

/* One buffer of a write (the same shape as struct iovec). */
typedef struct {
    const void *base;
    size_t len;
} chronik_buf;

/* The buffers bufs[0..nbufs) concatenated, placed at offset of fd. */
typedef struct {
    int fd;
    int64_t offset;
    const chronik_buf *bufs;
    int nbufs;
} chronik_write;

/* Which step of a job failed (chronik_result.step). */
enum {
    CHRONIK_STEP_NONE = 0,  /* the job succeeded */
    CHRONIK_STEP_WRITE = 1, /* pwritev of writes[index] failed */
    CHRONIK_STEP_SYNC = 2   /* fdatasync of writes[index].fd failed */
};

/* The outcome of one finished job. */
typedef struct {
    int err;             /* 0 on success, else the errno of the failing call */
    int step;            /* CHRONIK_STEP_* */
    int index;           /* the failing write (for SYNC: first write to that fd); -1 on success */
    uint64_t sync_calls; /* fdatasync calls made by this job (the failing one included) */
    uint64_t sync_ns;    /* CLOCK_MONOTONIC nanoseconds spent inside those calls */
    uint64_t started_ns; /* CLOCK_MONOTONIC when the thread began the job */
    uint64_t ended_ns;   /* CLOCK_MONOTONIC when it ended it (just before signalling) */
} chronik_result;

/* Start a worker thread.  NULL with errno set on failure. */
chronik_worker *chronik_worker_new(void);

/* The worker's eventfd (EFD_NONBLOCK | EFD_CLOEXEC): readable once a job has
 * finished.  The caller reads (drains) it; the worker owns and closes it. */
int chronik_worker_eventfd(const chronik_worker *w);

/* Hand a job to the thread and return at once.  0, or a negative errno:
 * -EBUSY if a job was submitted and not yet collected, -EINVAL for a negative
 * count or a NULL array with a positive count, -ENOMEM if out of memory.  On
 * error nothing was submitted and the eventfd will not be signalled. */
int chronik_worker_submit(chronik_worker *w, const chronik_write *writes, int nwrites);

/* Collect the finished job's outcome into *out and make the worker idle, so
 * the next job may be submitted.  0, or -EAGAIN if the job has not finished
 * yet, or -EINVAL if no job was submitted.  Does not touch the eventfd. */
int chronik_worker_result(chronik_worker *w, chronik_result *out);

/* After each job, have the thread poll for the next one for up to poll_ns
 * (busy, on its own core) before it sleeps on its condition variable, so a
 * job submitted within that window starts without a thread wake-up.  0 (the
 * default) never polls.  Trades CPU for latency; takes effect after the
 * current job. */
void chronik_worker_set_poll(chronik_worker *w, uint64_t poll_ns);

/* Stop and join the thread (after it finished a job in flight, if any), close
 * the eventfd and free the worker.  NULL is a no-op. */
void chronik_worker_free(chronik_worker *w);

#endif /* CHRONIK_WAL_H */
