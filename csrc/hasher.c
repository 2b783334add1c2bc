/*
 * hasher.c — the storage's hashing pool (hasher.h).
 *
 * SHA-256 is most of the cost of every append, read and verify. Large operations hand it
 * to the pool's threads (started on first need, joined by kmb_storage_close) so that it
 * runs on other cores while the calling thread does the rest: reading, copying, CRCs,
 * writing. An append's chain is sequential (each hash needs the one before), so thread 0
 * alone chains it; a read's records hash independently (each from its own stored
 * prev_hash), so every thread and the caller claim blocks of the same chunk. The caller
 * posts one job, does its own work, and waits for the job's progress (`done`) only where
 * it needs the hashes: a read or verify never acts on a record before its link has been
 * compared, in order, by the caller.
 *
 * Fallback: the caller hashes inline whenever the pool would not help — on a process
 * limited to one CPU (unless the pool size was given explicitly), when no thread can be
 * started, and for a few milliseconds after the pool stalled (the machine was too busy to
 * give it a CPU of its own; the backoff doubles while stalls repeat). Which operations are large enough to hand off is the
 * engine's decision (engine.h worker_use, pool_use).
 *
 * All state is in the kmb_hasher of one storage: no globals.
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kimberlite/chain.h"
#include "kimberlite/record.h"

#include "hasher.h"

#define WORKER_YIELD_NS 2000000u /* a caller spins KMB_HASHER_SPIN_NS, then yields its CPU
                                    this long, then sleeps */
#define WORKER_LINGER_NS 200000u /* the worker spins this long for a next job, then sleeps */
#define WORKER_STALL_NS 300000u /* a wait this long means the worker had no CPU */
#define WORKER_YIELD_LATE_NS 20000u /* a lingering worker's yield this long: the CPU is wanted */

/* Check and hash record i of a read job (see kmb_hash_job). */
static void check_one(const kmb_hash_job *j, size_t i)
{
    uint64_t pos = j->pos[i];
    uint64_t end = i + 1 < j->count ? j->pos[i + 1] : j->end;
    size_t size = (size_t)(end - pos), used;
    kmb_record *r = &j->recs[i];
    if (!kmb_record_probe(r, &used, j->buf + (pos - j->pos[0]), size) || used != size) {
        j->status[i] = KMB_CHECK_BAD_CRC;
    } else if (r->offset != j->first + i) {
        j->status[i] = KMB_CHECK_BAD_OFFSET;
    } else {
        j->status[i] = KMB_CHECK_OK;
        kmb_record_hash(j->out[i], r);
    }
}

/* Publish progress; wake the caller if it sleeps. */
static void worker_progress(kmb_hasher *w, size_t n, int add)
{
    if (add)
        atomic_fetch_add(&w->done, n);
    else
        atomic_store(&w->done, n);
    if (atomic_load(&w->waiting)) {
        pthread_mutex_lock(&w->mu);
        pthread_cond_broadcast(&w->cv_done);
        pthread_mutex_unlock(&w->mu);
    }
}

size_t kmb_hash_job_run(const kmb_hash_job *j, kmb_hasher *w)
{
    size_t mine = 0;
    if (j->events) {
        for (size_t i = 0; i < j->count; i++) {
            const uint8_t *prev = i ? j->out[i - 1] : j->start;
            if (j->seal) j->seal(j->seal_ctx, j->events[i].len, prev);
            kmb_chain_hash(j->out[i], prev, j->events[i].data, j->events[i].len);
            if (!w) continue;
            worker_progress(w, i + 1, 0);
            if (atomic_load_explicit(&w->cancel, memory_order_relaxed)) break;
        }
        return j->count;
    }
    if (!w) {
        for (size_t i = 0; i < j->count; i++) check_one(j, i);
        return j->count;
    }
    for (;;) {
        if (atomic_load_explicit(&w->cancel, memory_order_relaxed)) break;
        size_t b = atomic_fetch_add(&w->claim, j->block);
        if (b >= j->count) break;
        size_t e = j->count - b < j->block ? j->count : b + j->block;
        for (size_t i = b; i < e; i++) check_one(j, i);
        worker_progress(w, e - b, 1);
        mine += e - b;
    }
    return mine;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * A thread's loop. Between jobs it lingers, spinning, for WORKER_LINGER_NS before it
 * sleeps: the jobs of one large operation come every few hundred microseconds, and a
 * thread that sleeps between them wakes late and, woken by the caller, tends to be put on
 * the caller's own CPU — they would then take turns instead of working side by side.
 * Every thread sees every job once (by generation); a read job is shared by all of them
 * (active = nthreads), an append's chain belongs to thread 0 alone (active = 1): the others
 * skip it and go back to sleep without lingering, so a large append keeps one core busy,
 * not all of them. The last thread to end a job ends it for the caller (has_job = 0).
 */
static void *worker_main(void *arg)
{
    kmb_pool_thread *self = arg;
    kmb_hasher *w = self->h;
    unsigned seen = 0;
    int linger = 1;
    for (;;) {
        uint64_t t0 = 0;
        for (unsigned spin = 1;
             linger && atomic_load(&w->gen) == seen && !atomic_load(&w->quit); spin++) {
            if ((spin & 63) == 0) {
                if (!t0)
                    t0 = now_ns();
                else if (now_ns() - t0 > WORKER_LINGER_NS)
                    break;
            }
            cpu_relax();
        }
        pthread_mutex_lock(&w->mu);
        while (atomic_load(&w->gen) == seen && !atomic_load(&w->quit))
            pthread_cond_wait(&w->cv_job, &w->mu);
        if (atomic_load(&w->quit)) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        seen = atomic_load(&w->gen);
        kmb_hash_job job = w->job;
        pthread_mutex_unlock(&w->mu);
        linger = !job.events || self->index == 0;
        if (!linger) continue; /* an append's chain: thread 0's */
        if (self->index == 0)
            atomic_store_explicit(&w->cpu, sched_getcpu(), memory_order_relaxed);
        if (!job.events) {
            size_t n = kmb_hash_job_run(&job, w);
            atomic_fetch_add_explicit(&w->helped, n, memory_order_relaxed);
        } else {
            kmb_hash_job_run(&job, w);
        }
        pthread_mutex_lock(&w->mu);
        if (atomic_fetch_sub(&w->active, 1) == 1) {
            atomic_store(&w->has_job, 0);
            pthread_cond_broadcast(&w->cv_done);
        }
        pthread_mutex_unlock(&w->mu);
    }
}

unsigned kmb_pool_default_size(void)
{
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    if (sched_getaffinity(0, sizeof(cpus), &cpus) != 0) return 1;
    int n = CPU_COUNT(&cpus);
    if (n < 1) return 1;
    return n > KMB_POOL_DEFAULT_CAP ? KMB_POOL_DEFAULT_CAP : (unsigned)n;
}

void kmb_hasher_configure(kmb_hasher *w, unsigned threads, int forced)
{
    if (threads < 1) threads = 1;
    if (threads > KMB_POOL_MAX) threads = KMB_POOL_MAX;
    w->want = threads;
    w->forced = forced;
}

/* Start the threads if this process has none yet (also after a fork). 0 if it cannot. */
static int worker_start(kmb_hasher *w)
{
    pid_t pid = getpid();
    if (w->pid == pid) return 1;
    if (w->single_cpu_pid == pid) return 0;
    unsigned want = w->want ? w->want : 1;
    int forced = w->forced;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    if (sched_getaffinity(0, sizeof(cpus), &cpus) != 0 || (CPU_COUNT(&cpus) < 2 && !forced)) {
        w->single_cpu_pid = pid; /* one CPU: a second thread could only get in the way */
        return 0;
    }
    /* Never started, or started by the parent of a fork: the threads are not in this process. */
    memset(w, 0, sizeof(*w));
    w->want = want;
    w->forced = forced;
    if (pthread_mutex_init(&w->mu, NULL) != 0) return 0;
    if (pthread_cond_init(&w->cv_job, NULL) != 0) {
        pthread_mutex_destroy(&w->mu);
        return 0;
    }
    if (pthread_cond_init(&w->cv_done, NULL) != 0) {
        pthread_cond_destroy(&w->cv_job);
        pthread_mutex_destroy(&w->mu);
        return 0;
    }
    /* Signals stay with the application's threads: the pool blocks them all. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < want; i++) {
        w->threads[i].h = w;
        w->threads[i].index = i;
        if (pthread_create(&w->threads[i].thread, NULL, worker_main, &w->threads[i]) != 0)
            break;
        w->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (w->nthreads == 0) {
        pthread_cond_destroy(&w->cv_done);
        pthread_cond_destroy(&w->cv_job);
        pthread_mutex_destroy(&w->mu);
        return 0;
    }
    w->pid = pid;
    w->allowed = cpus;
    atomic_store(&w->cpu, -1);
    return 1;
}

/*
 * Not for a while after the worker stalled: waits longer than WORKER_STALL_NS mean that
 * the machine is too busy to give it a CPU of its own, and then it would only slow the
 * caller down.
 */
int kmb_hasher_ready(kmb_hasher *w)
{
    if (w->backoff_until) {
        if (now_ns() < w->backoff_until) return 0;
        w->backoff_until = 0;
    }
    return worker_start(w);
}

void kmb_hasher_stop(kmb_hasher *w)
{
    if (w->pid != getpid()) return; /* none here; a parent's after fork is not ours to join */
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->quit, 1);
    pthread_cond_broadcast(&w->cv_job);
    pthread_mutex_unlock(&w->mu);
    for (unsigned i = 0; i < w->nthreads; i++) pthread_join(w->threads[i].thread, NULL);
    w->nthreads = 0;
    atomic_store(&w->quit, 0);
    pthread_cond_destroy(&w->cv_done);
    pthread_cond_destroy(&w->cv_job);
    pthread_mutex_destroy(&w->mu);
    w->pid = 0;
}

void kmb_hasher_post(kmb_hasher *w, const kmb_hash_job *job)
{
    /*
     * Woken by the caller, the worker is sometimes placed on the caller's own CPU and the
     * two then take turns. When that is seen, keep the worker off the caller's CPU (within
     * the CPUs the process may use); it is re-checked at every job.
     */
    int cpu = sched_getcpu();
    if (cpu >= 0 && cpu == atomic_load_explicit(&w->cpu, memory_order_relaxed)) {
        cpu_set_t m = w->allowed;
        CPU_CLR(cpu, &m);
        if (CPU_COUNT(&m) > 0) pthread_setaffinity_np(w->threads[0].thread, sizeof(m), &m);
        atomic_store_explicit(&w->cpu, -1, memory_order_relaxed);
    }
    pthread_mutex_lock(&w->mu);
    while (atomic_load(&w->has_job)) pthread_cond_wait(&w->cv_done, &w->mu);
    w->job = *job;
    atomic_store(&w->done, 0);
    atomic_store(&w->claim, 0);
    atomic_store(&w->cancel, 0);
    atomic_store(&w->active, job->events ? 1u : w->nthreads);
    atomic_store(&w->has_job, 1);
    atomic_fetch_add(&w->gen, 1);
    pthread_cond_broadcast(&w->cv_job);
    pthread_mutex_unlock(&w->mu);
}

/* A wait's bookkeeping: the longest stretch without progress so far. */
typedef struct wait_clock {
    uint64_t t_progress; /* when progress was last seen (0: not yet timed) */
    uint64_t still;      /* the longest stretch without progress */
    size_t seen;         /* the progress then */
} wait_clock;

static void wait_tick(wait_clock *c, size_t done, uint64_t now)
{
    if (!c->t_progress) c->t_progress = now;
    if (now - c->t_progress > c->still) c->still = now - c->t_progress;
    if (done != c->seen) { /* a stretch ends here */
        c->seen = done;
        c->t_progress = now;
    }
}

/*
 * Spins for up to KMB_HASHER_SPIN_NS (a hash takes microseconds; a sleeping thread, on a
 * virtual machine especially, takes longer to wake), then yields the CPU between checks
 * (on a busy machine the worker may be waiting for this CPU) and after WORKER_YIELD_NS
 * sleeps on the condition variable. What it returns is the longest stretch without
 * progress, not the whole wait: a caller that waits 300 µs for an append's chain of 256 KiB
 * waits for a worker hard at work (it publishes every hash), not for a stalled one.
 */
uint64_t kmb_hasher_wait(kmb_hasher *w, size_t need)
{
    uint64_t t0 = 0, waited = 0;
    wait_clock c = {0, 0, 0};
    for (unsigned spin = 1;; spin++) {
        size_t done = atomic_load_explicit(&w->done, memory_order_acquire);
        if (done >= need) {
            if (t0) wait_tick(&c, done, now_ns());
            return c.still;
        }
        if ((spin & 63) == 0) {
            uint64_t now = now_ns();
            if (!t0) t0 = now;
            wait_tick(&c, done, now);
            waited = now - t0;
            if (waited > WORKER_YIELD_NS) break;
        }
        if (waited > KMB_HASHER_SPIN_NS)
            sched_yield(); /* the worker may be waiting for this very CPU */
        else
            cpu_relax();
    }
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->waiting, 1);
    for (;;) {
        size_t done = atomic_load(&w->done);
        wait_tick(&c, done, now_ns());
        if (!atomic_load(&w->has_job) || done >= need) break;
        pthread_cond_wait(&w->cv_done, &w->mu);
    }
    atomic_store(&w->waiting, 0);
    pthread_mutex_unlock(&w->mu);
    return c.still;
}

int kmb_hasher_stalled(kmb_hasher *w, uint64_t waited)
{
    if (waited <= WORKER_STALL_NS) return 0;
    kmb_hasher_backoff(w);
    return 1;
}

void kmb_hasher_forget(kmb_hasher *w)
{
    unsigned want = w->want;
    int forced = w->forced;
    memset(w, 0, sizeof(*w));
    w->want = want;
    w->forced = forced;
}

void kmb_hasher_backoff(kmb_hasher *w)
{
    uint64_t len = w->backoff_ns ? w->backoff_ns : KMB_HASHER_BACKOFF_MIN_NS;
    w->backoff_until = now_ns() + len;
    w->backoff_ns = len * 2 > KMB_HASHER_BACKOFF_MAX_NS ? KMB_HASHER_BACKOFF_MAX_NS : len * 2;
    w->good = 0;
    w->slow = 0;
}

int kmb_hasher_slow(kmb_hasher *w)
{
    w->good = 0;
    if (++w->slow < 2) return 0;
    kmb_hasher_backoff(w);
    return 1;
}

void kmb_hasher_recovered(kmb_hasher *w)
{
    if (++w->good < KMB_HASHER_GOOD_STREAK) return;
    w->good = 0;
    w->slow = 0;
    w->backoff_ns /= 2;
    if (w->backoff_ns < KMB_HASHER_BACKOFF_MIN_NS) w->backoff_ns = 0;
}

void kmb_hasher_finish(kmb_hasher *w, int cancel)
{
    if (cancel) atomic_store(&w->cancel, 1);
    pthread_mutex_lock(&w->mu);
    while (atomic_load(&w->has_job)) pthread_cond_wait(&w->cv_done, &w->mu);
    pthread_mutex_unlock(&w->mu);
}
