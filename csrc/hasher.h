/*
 * hasher.h — the storage's hashing pool: helper threads that compute SHA-256 chain hashes
 * (and check reads' CRCs) while the calling thread reads, copies, checksums and writes
 * (internal; see hasher.c for why it exists and its fallback rules).
 *
 * One kmb_hasher lives inside each kmb_storage; there is no global state. A zeroed
 * kmb_hasher is valid and has no thread; kmb_hasher_configure sets how many threads it may
 * have, they start on first need (kmb_hasher_ready) and are joined by kmb_hasher_stop.
 * A read job is shared by every thread of the pool and the caller; an append's chain (a
 * sequence) is run by thread 0 alone.
 *
 * Threads: every kmb_hasher_* function is called by the thread that owns the operation
 * (in the engine, one holding the storage's mutex), never by two threads at once; the
 * pool's own threads are the only other parties. It holds at most one job at a time.
 * Errors: none are reported. A hasher that cannot start says so (kmb_hasher_ready
 * returns 0) and the caller hashes inline.
 *
 * Needs _GNU_SOURCE (cpu_set_t), as every file of the engine is built with.
 */
#ifndef KIMBERLITE_HASHER_H
#define KIMBERLITE_HASHER_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kimberlite/chain.h"
#include "kimberlite/record.h"
#include "kimberlite/slice.h"

/*
 * How long a caller spins in kmb_hasher_wait before it starts yielding its CPU: a hash
 * takes microseconds, a sleeping thread (on a virtual machine especially) longer to wake.
 * The reader also uses it to tell a hasher that has no CPU of its own.
 */
#define KMB_HASHER_SPIN_NS 50000u

/* The shortest and longest backoff after a stall (kmb_hasher_backoff). */
#define KMB_HASHER_BACKOFF_MIN_NS 8000000u
#define KMB_HASHER_BACKOFF_MAX_NS 1000000000u

/* The most threads a pool can have (the read_threads option is capped at KMB_POOL_MAX + 1). */
#define KMB_POOL_MAX 63
/* The default cap: a pool sized from the CPUs has at most this many threads, caller included. */
#define KMB_POOL_DEFAULT_CAP 8

/* The verdict of a read job on each record (kmb_hash_job.status). */
enum { KMB_CHECK_OK = 0, KMB_CHECK_BAD_CRC = 1, KMB_CHECK_BAD_OFFSET = 2 };

/*
 * One job: an append's chain, or a read's checks and hashes. Every pointer is borrowed:
 * the caller keeps the memory valid, and does not write what the job reads, until the job
 * has ended (kmb_hasher_finish, or kmb_hasher_wait for all `count` items).
 */
typedef struct kmb_hash_job {
    size_t count;
    uint8_t (*out)[KMB_HASH_SIZE]; /* out[i]: hash of item i */
    /* Appends: chain these events from `start` (NULL at genesis), in order. */
    const kmb_slice *events;
    const uint8_t *start;
    /*
     * Appends, optional: called with seal_ctx just before event i is hashed, with its
     * length and the hash it follows (NULL at genesis), on the thread that runs the chain,
     * in order: the engine completes each record's header and CRC there (append.c), so
     * that the caller only copies and writes.
     */
    void (*seal)(void *seal_ctx, size_t len, const uint8_t *prev);
    void *seal_ctx;
    /*
     * Reads (events NULL): records 0..count-1 lie back to back in buf; record i starts at
     * byte pos[i] - pos[0] and ends where record i+1 starts, the last at `end` (positions
     * are the segment's, as in its index). Each is checked (CRC and offset: status[i],
     * offset expected first + i), decoded into recs[i] and hashed from its own stored
     * prev_hash. Items are independent: the worker and the caller both claim `block` of
     * them at a time.
     */
    const uint64_t *pos;
    uint64_t end;
    uint64_t first;
    const uint8_t *buf;
    kmb_record *recs;
    uint8_t *status;
    size_t block;
} kmb_hash_job;

struct kmb_hasher;

/* One thread of the pool: its index (0 runs appends' chains) and its pool. */
typedef struct kmb_pool_thread {
    struct kmb_hasher *h;
    unsigned index;
    pthread_t thread;
} kmb_pool_thread;

/* The pool and its state. Fields are the hasher's own: use the functions. */
typedef struct kmb_hasher {
    unsigned want;        /* threads to start (kmb_hasher_configure); survives stop/forget */
    int forced;           /* start them even on one CPU (an explicit pool size) */
    unsigned nthreads;    /* threads running (in process `pid`) */
    kmb_pool_thread threads[KMB_POOL_MAX];
    pid_t pid;            /* process that started the threads; 0 when there are none */
    pid_t single_cpu_pid; /* process found to run on one CPU: no worker there */
    uint64_t backoff_until; /* CLOCK_MONOTONIC ns: no pool before then (it stalled) */
    uint64_t backoff_ns;    /* the next backoff's length: doubles while stalls repeat */
    unsigned good;          /* chunks the pool shared well in a row */
    unsigned slow;          /* slow chunks (kmb_hasher_slow) since the last good streak */
    cpu_set_t allowed;    /* the CPUs the process may use */
    atomic_int cpu;       /* the CPU thread 0 last started a job on */
    pthread_mutex_t mu;
    pthread_cond_t cv_job;  /* a job was posted, or quit */
    pthread_cond_t cv_done; /* progress (when someone waits) or the job ended */
    atomic_int has_job;     /* written under mu; the lingering workers read it without */
    atomic_uint gen;        /* bumped by every post: a thread takes each generation once */
    atomic_uint active;     /* threads that have not yet ended the current job */
    atomic_int quit;
    kmb_hash_job job;
    atomic_size_t done;  /* items of the current job that are finished */
    atomic_size_t claim; /* reads: the next item nobody has claimed */
    atomic_int waiting; /* the caller sleeps on cv_done */
    atomic_int cancel;  /* the caller gave up on the job */
    atomic_size_t helped; /* read items checked by the pool's threads, ever (for tests) */
} kmb_hasher;

/*
 * Set the pool size: `threads` helper threads (at least 1, at most KMB_POOL_MAX); `forced`
 * starts them even when the process may use one CPU only (otherwise that falls back to
 * inline work). Takes effect when the threads next start: call it before first use (or
 * after kmb_hasher_stop). A zeroed hasher behaves as configured with (1, 0).
 */
void kmb_hasher_configure(kmb_hasher *h, unsigned threads, int forced);

/*
 * The number of threads, caller included, that a pool sized from the CPUs would use for
 * reads: the CPUs this process may use (sched_getaffinity), at most KMB_POOL_DEFAULT_CAP;
 * 1 when they cannot be read.
 */
unsigned kmb_pool_default_size(void);

/*
 * Whether an operation may use the hasher now: 1 if so (its threads are running, started
 * here if this process has none yet, also after a fork); 0 while it backs off after a
 * stall (each such call counts one operation without it), on a single CPU (unless
 * forced), or if no thread can be started (a pool that starts fewer threads than asked
 * works with those). The caller decides first whether the operation is large
 * enough to be worth it.
 */
int kmb_hasher_ready(kmb_hasher *h);

/*
 * Stop and join the threads, and release what kmb_hasher_ready set up; nothing if this
 * process never started any (a parent's threads after a fork are not ours to join). No
 * job may be in progress. The hasher can be made ready again afterwards.
 */
void kmb_hasher_stop(kmb_hasher *h);

/*
 * Post a job to a ready hasher (waiting first for a previous job to end). The job is
 * copied; what it points to stays borrowed (see kmb_hash_job).
 */
void kmb_hasher_post(kmb_hasher *h, const kmb_hash_job *job);

/*
 * Work on a job on this thread. With h NULL, run the whole job inline (no hasher needed).
 * With h, share the read job just posted to h: claim its blocks alongside the hasher's
 * thread and publish progress (an append's chain is run with h only by that thread).
 * Returns the items done by this call.
 */
size_t kmb_hash_job_run(const kmb_hash_job *j, kmb_hasher *h);

/*
 * Wait until the current job has finished `need` items, or has ended. Spins, then yields,
 * then sleeps (see hasher.c). Returns the longest time, in nanoseconds, during which the
 * job made no progress while this thread waited (0 if no wait was needed): the measure of
 * a stall, which a long wait for a busy worker is not.
 */
uint64_t kmb_hasher_wait(kmb_hasher *h, size_t need);

/*
 * Note how long the caller waited (kmb_hasher_wait); 1 if that means the hasher stalled
 * (had no CPU of its own), and then the pool is not used for a while (kmb_hasher_backoff).
 */
int kmb_hasher_stalled(kmb_hasher *h, uint64_t waited);

/*
 * In the child of a fork(): forget the parent's threads (they do not exist here; the mutex
 * may even have been held by one of them at the fork) without touching them. The hasher is
 * then as if zeroed but keeps its configuration: new threads start on first need. No job may be in progress (the engine calls
 * it with the storage's mutex held since before the fork).
 */
void kmb_hasher_forget(kmb_hasher *h);

/*
 * Go without the pool for a while, as after a stall: kmb_hasher_ready answers 0 until the
 * backoff ends. It is measured in time, not operations (one hiccup of a quiet machine must
 * not cost the rest of a long read): KMB_HASHER_BACKOFF_MIN_NS at first, twice as long as
 * the one before while trouble repeats (a machine busy for good: the caller then works
 * alone nearly all the time), at most KMB_HASHER_BACKOFF_MAX_NS.
 */
void kmb_hasher_backoff(kmb_hasher *h);

/*
 * The pool did under its share of a chunk while the caller waited for it: a hint that it
 * has no CPU of its own, weaker than a stall. The second such chunk before a good streak
 * starts a backoff (a quiet machine's single hiccup does not). 1 if it did.
 */
int kmb_hasher_slow(kmb_hasher *h);

/*
 * The pool did its share of one more chunk: after KMB_HASHER_GOOD_STREAK of them in a row
 * the next backoff is half as long (the machine is quieter again).
 */
void kmb_hasher_recovered(kmb_hasher *h);

#define KMB_HASHER_GOOD_STREAK 32

/* Wait for the whole current job to end (cancelling it first when `cancel`). */
void kmb_hasher_finish(kmb_hasher *h, int cancel);

#endif
