/*
** tensor.c -- storage, tensors, views, refcounts, the error buffer and the
** generator.  Storage blocks are recycled through a small size-keyed cache so
** a training step does not pay mmap/munmap and page faults for every
** activation (glibc maps large blocks fresh on each malloc).
*/
#define _GNU_SOURCE /* mremap */
#include "nasrt.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* --------------------------------------------------------------- errors */

static _Thread_local char errbuf[512];

/* Formats through a stack buffer, so a message may quote the previous one:
   nr_seterror(st, "load_npy: %s: %s", path, nr_lasterror()) read and wrote
   errbuf at once and came out garbled (seen in test_npy). */
nr_status nr_seterror(nr_status st, const char *fmt, ...) {
    char buf[sizeof errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(errbuf, buf, sizeof buf);
    return st;
}

const char *nr_lasterror(void) { return errbuf; }

void nr_abort_(const char *file, int line, const char *cond) {
    fprintf(stderr, "nasrt: internal error at %s:%d: %s\n", file, line, cond);
    abort();
}

/* ------------------------------------------------------------ allocator */

/* Freed blocks are kept per exact size (sizes repeat step after step) up to
   a byte budget; anything above the budget goes back to the OS.  The cache
   is a list in the order blocks were freed, and a request takes the newest
   block of its size.  A request no cached block fits gets a fresh block
   while live + cached bytes stay within a quarter above the peak of live
   bytes (or their own earlier high-water mark); past that, a cached block
   is resized for it and the oldest cached blocks are freed to stay under
   the cap.  So the memory held is at most 1.25x the peak of live bytes
   when the cache can serve, not that plus every block of sizes the step
   no longer asks for (a DARTS step of C=16, batch 64 held ~0.5-0.8 GB of
   those). */
#define CACHE_SLOTS 4096
#define MAP_MIN ((size_t)256 << 10)
static struct { size_t bytes; void *p; } cache[CACHE_SLOTS];
static int ncache = 0;
static size_t cached_bytes = 0;
static size_t cache_budget = (size_t)4 << 30;
static size_t live_bytes = 0, peak_bytes = 0, held_mark = 0, live_mark = 0;

/* Blocks of MAP_MIN bytes and more are mappings of their own, so freeing
   one gives its memory back to the OS at once (malloc would keep such
   blocks in its heap once its adaptive mmap threshold has risen, where
   freed memory stays resident).  Smaller ones come from malloc. */
static void *block_alloc(size_t bytes) {
    if (bytes < MAP_MIN) return aligned_alloc(64, bytes);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void block_free(void *p, size_t bytes) {
    if (bytes < MAP_MIN) free(p);
    else munmap(p, bytes);
}

/* Block sizes: multiples of 64 bytes below MAP_MIN; above, 8 size classes
   per doubling (at most 12.5% over the request, and pages past it are only
   touched when a larger request of the class reuses the block), so steps
   whose shapes vary (sandwich sub-networks, random paths) still reuse
   cached blocks instead of mapping fresh ones. */
static size_t block_size(size_t bytes) {
    if (bytes < MAP_MIN) return bytes;
    int lg = 63 - __builtin_clzll((unsigned long long)bytes);
    size_t g = (size_t)1 << (lg - 3);
    return (bytes + g - 1) & ~(g - 1);
}

static void cache_remove(int i) {
    cached_bytes -= cache[i].bytes;
    memmove(cache + i, cache + i + 1, (size_t)(ncache - i - 1) * sizeof cache[0]);
    ncache--;
}

/* A block of at least *bytes; *bytes is set to its size. */
static void *block_get(size_t *bytes_io) {
    const size_t bytes = *bytes_io;
    int best = -1;
    for (int i = ncache - 1; i >= 0; i--) {
        if (cache[i].bytes == bytes) {
            best = i;
            break;
        }
        /* else the smallest block up to twice the size: shapes that vary
           from step to step (sandwich sub-networks) reuse larger blocks */
        if (bytes >= MAP_MIN && cache[i].bytes > bytes && cache[i].bytes <= 2 * bytes &&
            (best < 0 || cache[i].bytes < cache[best].bytes))
            best = i;
    }
    if (best >= 0) {
        void *p = cache[best].p;
        *bytes_io = cache[best].bytes;
        cache_remove(best);
        return p;
    }
    /* (smaller blocks come from malloc's heap, which reuses memory itself) */
    void *q = NULL;
    size_t qbytes = 0;
    if (bytes >= MAP_MIN) {
        /* The held bytes may pass the peak of the live bytes by a quarter:
           room for blocks of sizes only some steps ask for (random paths,
           sandwich sub-networks), which then stay cached for them. */
        size_t cap = live_mark + live_mark / 4;
        if (cap < held_mark) cap = held_mark;
        /* Without that room, a cached mapping is resized (mremap) instead
           of mapping a fresh block and freeing an old one: its resident
           pages are used again and only the growth faults (a fresh 10 MB
           block costs 2,500 page faults on first touch and as much again
           in munmap).  The closest smaller block, else the smallest larger
           one, is taken. */
        if (live_bytes + cached_bytes + bytes > cap) {
            int r = -1;
            for (int i = 0; i < ncache; i++) {
                size_t b = cache[i].bytes, rb = r < 0 ? 0 : cache[r].bytes;
                if (b < MAP_MIN) continue;
                if (r < 0 || (b < bytes ? (rb > bytes || b > rb) : (rb > bytes && b < rb))) r = i;
            }
            if (r >= 0) {
                q = cache[r].p;
                qbytes = cache[r].bytes;
                cache_remove(r);
            }
        }
        /* then the oldest cached blocks go until the new one fits */
        int k = 0;
        while (k < ncache && live_bytes + cached_bytes + bytes > cap) {
            cached_bytes -= cache[k].bytes;
            block_free(cache[k].p, cache[k].bytes);
            k++;
        }
        if (k > 0) {
            memmove(cache, cache + k, (size_t)(ncache - k) * sizeof cache[0]);
            ncache -= k;
        }
    }
    void *p = NULL;
    if (q) {
        p = mremap(q, qbytes, bytes, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
            munmap(q, qbytes);
            p = NULL;
        }
    }
    if (!p) p = block_alloc(bytes);
    if (!p && ncache > 0) {
        nr_storage_trim();
        p = block_alloc(bytes);
    }
    if (p && live_bytes + cached_bytes + bytes > held_mark)
        held_mark = live_bytes + cached_bytes + bytes;
    return p;
}

static void block_put(void *p, size_t bytes) {
    if (bytes >= 4096 && ncache < CACHE_SLOTS && cached_bytes + bytes <= cache_budget) {
        cache[ncache].bytes = bytes;
        cache[ncache].p = p;
        ncache++;
        cached_bytes += bytes;
    } else {
        block_free(p, bytes);
    }
}

void nr_storage_trim(void) {
    for (int i = 0; i < ncache; i++) block_free(cache[i].p, cache[i].bytes);
    ncache = 0;
    cached_bytes = 0;
}

size_t nr_live_bytes(void) { return live_bytes; }
size_t nr_cached_bytes(void) { return cached_bytes; }
size_t nr_peak_bytes(void) { return peak_bytes; }
void nr_reset_peak_bytes(void) { peak_bytes = live_bytes; }

/* Bytes of memory the process can still get: MemAvailable (Linux), else
   the physical memory.  With overcommit a huge malloc succeeds and the
   OOM killer strikes when the pages are touched, so nr_storage_new asks
   this for every block of 1 GiB or more and turns a hopeless request
   (say zeros{2^31, 2}) into an error. */
static size_t memory_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[128];
        unsigned long long kb;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                fclose(f);
                return (size_t)kb * 1024;
            }
        }
        fclose(f);
    }
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : SIZE_MAX;
}

nr_storage *nr_storage_new(size_t nfloat) {
    if (nfloat > ((size_t)1 << 40)) {
        nr_seterror(NR_ENOMEM, "tensor of %zu elements is too large", nfloat);
        return NULL;
    }
    size_t bytes = block_size((nfloat * sizeof(float) + 63) & ~(size_t)63);
    if (bytes == 0) bytes = 64;
    if (bytes >= ((size_t)1 << 30)) {
        size_t avail = memory_available();
        if (avail != SIZE_MAX && bytes > avail + cached_bytes) {
            nr_seterror(NR_ENOMEM, "out of memory: a tensor of %zu elements needs %.1f GiB, "
                        "%.1f GiB available", nfloat, bytes / 1073741824.0,
                        (avail + cached_bytes) / 1073741824.0);
            return NULL;
        }
    }
    nr_storage *s = malloc(sizeof *s);
    if (!s) goto oom;
    s->data = block_get(&bytes);
    if (!s->data) { free(s); goto oom; }
    s->bytes = bytes;
    s->refcount = 1;
    live_bytes += bytes;
    if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    if (live_bytes > live_mark) live_mark = live_bytes;
    return s;
oom:
    nr_seterror(NR_ENOMEM, "out of memory allocating %zu bytes", nfloat * sizeof(float));
    return NULL;
}

void nr_storage_retain(nr_storage *s) { s->refcount++; }

void nr_storage_release(nr_storage *s) {
    if (!s || --s->refcount > 0) return;
    live_bytes -= s->bytes;
    block_put(s->data, s->bytes);
    free(s);
}

/* --------------------------------------------------------------- tensor */

/* The product of the non-zero sizes is bounded, not just numel: an empty
   tensor {0, 2^40, 2^40} has numel 0 but contiguous strides {2^80, 2^40, 1},
   and strides, offsets and stride * size products must all fit in int64. */
nr_status nr_check_shape(const char *fn, int ndim, const int64_t *ne) {
    if (ndim < 0 || ndim > NR_MAXDIM)
        return nr_seterror(NR_ESHAPE, "%s: %d dims (at most %d)", fn, ndim, NR_MAXDIM);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (ne[i] < 0)
            return nr_seterror(NR_ESHAPE, "%s: negative size %lld in dim %d", fn,
                               (long long)ne[i], i + 1);
        if (ne[i] == 0) continue;
        if (n > ((int64_t)1 << 40) / ne[i])
            return nr_seterror(NR_ENOMEM, "%s: shape too large (its non-zero sizes multiply "
                                          "past 2^40)", fn);
        n *= ne[i];
    }
    return NR_OK;
}

static void set_contig_strides(nr_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->st[i] = s;
        s *= t->ne[i];
    }
}

static nr_tensor *header_new(int ndim, const int64_t *ne) {
    nr_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        nr_seterror(NR_ENOMEM, "out of memory");
        return NULL;
    }
    t->refcount = 1;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->ne[i] = ne[i];
    set_contig_strides(t);
    return t;
}

/* NASRT_POISON=1 (ctest sets it for every test): each tensor
   nr_tensor_empty hands out is NaN-filled first, so an op that leaves part
   of its output unwritten fails its checks.  Without it, a freed block of
   the same size comes back holding whatever it held, often the right
   values from a reference run of the same op (test_conv's fused
   sep_conv2d ran after its reference: a kernel that dropped an output row
   passed). */
static int poison_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("NASRT_POISON");
        on = e && *e && strcmp(e, "0") != 0;
    }
    return on;
}

nr_tensor *nr_tensor_empty(int ndim, const int64_t *ne) {
    if (nr_check_shape("tensor", ndim, ne) != NR_OK) return NULL;
    nr_tensor *t = header_new(ndim, ne);
    if (!t) return NULL;
    t->storage = nr_storage_new((size_t)nr_numel(t));
    if (!t->storage) {
        free(t);
        return NULL;
    }
    if (poison_on()) {
        float *d = t->storage->data;
        for (int64_t i = 0, n = nr_numel(t); i < n; i++) d[i] = NAN;
    }
    return t;
}

nr_tensor *nr_tensor_zeros(int ndim, const int64_t *ne) {
    nr_tensor *t = nr_tensor_empty(ndim, ne);
    if (t) memset(t->storage->data, 0, (size_t)nr_numel(t) * sizeof(float));
    return t;
}

nr_tensor *nr_tensor_full(int ndim, const int64_t *ne, float v) {
    nr_tensor *t = nr_tensor_empty(ndim, ne);
    if (!t) return NULL;
    float *d = t->storage->data;
    int64_t n = nr_numel(t);
    for (int64_t i = 0; i < n; i++) d[i] = v;
    return t;
}

nr_tensor *nr_tensor_empty_like(const nr_tensor *t) { return nr_tensor_empty(t->ndim, t->ne); }
nr_tensor *nr_tensor_zeros_like(const nr_tensor *t) { return nr_tensor_zeros(t->ndim, t->ne); }

nr_tensor *nr_tensor_rand(int ndim, const int64_t *ne) {
    nr_tensor *t = nr_tensor_empty(ndim, ne);
    if (!t) return NULL;
    nr_rng *r = nr_rng_global();
    int64_t n = nr_numel(t);
    for (int64_t i = 0; i < n; i++) t->storage->data[i] = nr_rng_uniform(r);
    return t;
}

nr_tensor *nr_tensor_randn(int ndim, const int64_t *ne) {
    nr_tensor *t = nr_tensor_empty(ndim, ne);
    if (!t) return NULL;
    nr_rng *r = nr_rng_global();
    int64_t n = nr_numel(t);
    for (int64_t i = 0; i < n; i++) t->storage->data[i] = nr_rng_normal(r);
    return t;
}

int64_t nr_numel(const nr_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

int nr_is_contiguous(const nr_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->ne[i] != 1 && t->st[i] != s) return 0;
        s *= t->ne[i];
    }
    return 1;
}

int nr_same_shape(const nr_tensor *a, const nr_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->ne[i] != b->ne[i]) return 0;
    return 1;
}

char *nr_shape_str(const nr_tensor *t, char *buf) {
    int n = 0;
    n += snprintf(buf + n, NR_SHAPEBUF - n, "[");
    for (int i = 0; i < t->ndim && n < NR_SHAPEBUF - 24; i++)
        n += snprintf(buf + n, NR_SHAPEBUF - n, i ? ",%lld" : "%lld", (long long)t->ne[i]);
    snprintf(buf + n, NR_SHAPEBUF - n, "]");
    return buf;
}

/* dst = src or (acc) dst += src for two tensors of one shape, any strides.
   Dims are merged where both tensors run on across them (stride times
   extent of the inner one), size-1 dims dropped; what is left is rows of
   the innermost merged dim, walked by row ranges in parallel.  A cat's
   piece of [N,C,H,W] along C is N rows of C*H*W floats (it was N*C*H rows
   of W, one index update per row, on the main thread alone). */
typedef struct {
    int nd;                   /* outer dims, outermost first */
    int64_t ne[NR_MAXDIM], ds[NR_MAXDIM], ss[NR_MAXDIM];
    int64_t len, dsi, ssi;    /* the rows: length and element strides */
    float *d;
    const float *s;
    int acc;
} walk2;

static void walk2_task(void *ctx, int64_t r0, int64_t r1, int ith) {
    (void)ith;
    const walk2 *w = ctx;
    int64_t idx[NR_MAXDIM], doff = 0, soff = 0, r = r0;
    for (int i = w->nd - 1; i >= 0; i--) { /* row r0's position */
        idx[i] = r % w->ne[i];
        r /= w->ne[i];
        doff += idx[i] * w->ds[i];
        soff += idx[i] * w->ss[i];
    }
    const int64_t len = w->len, dsi = w->dsi, ssi = w->ssi;
    for (int64_t k = r0; k < r1; k++) {
        float *restrict d = w->d + doff;
        const float *restrict s = w->s + soff;
        if (dsi == 1 && ssi == 1) {
            if (w->acc)
                for (int64_t j = 0; j < len; j++) d[j] += s[j];
            else
                memmove(d, s, (size_t)len * sizeof(float));
        } else if (w->acc) {
            for (int64_t j = 0; j < len; j++) d[j * dsi] += s[j * ssi];
        } else {
            for (int64_t j = 0; j < len; j++) d[j * dsi] = s[j * ssi];
        }
        for (int i = w->nd - 1; i >= 0; i--) {
            doff += w->ds[i];
            soff += w->ss[i];
            if (++idx[i] < w->ne[i]) break;
            doff -= w->ds[i] * w->ne[i];
            soff -= w->ss[i] * w->ne[i];
            idx[i] = 0;
        }
    }
}

#define WALK_CHUNK ((int64_t)1 << 14) /* floats per task item of a contiguous run */

void nr_walk2(nr_tensor *dst, const nr_tensor *src, int acc) {
    NR_ASSERT(nr_same_shape(dst, src));
    const int64_t n = nr_numel(dst);
    if (n == 0) return;
    walk2 w = {.d = nr_data(dst), .s = nr_data(src), .acc = acc, .len = 1, .dsi = 1, .ssi = 1};
    /* merged dims, innermost first into m[] */
    int64_t mne[NR_MAXDIM], mds[NR_MAXDIM], mss[NR_MAXDIM];
    int m = 0;
    for (int i = dst->ndim - 1; i >= 0; i--) {
        if (dst->ne[i] == 1) continue;
        if (m > 0 && dst->st[i] == mds[m - 1] * mne[m - 1] && src->st[i] == mss[m - 1] * mne[m - 1]) {
            mne[m - 1] *= dst->ne[i];
            continue;
        }
        mne[m] = dst->ne[i], mds[m] = dst->st[i], mss[m] = src->st[i];
        m++;
    }
    if (m > 0) {
        w.len = mne[0], w.dsi = mds[0], w.ssi = mss[0];
        w.nd = m - 1;
        for (int i = 1; i < m; i++) { /* outermost first */
            w.ne[m - 1 - i] = mne[i];
            w.ds[m - 1 - i] = mds[i];
            w.ss[m - 1 - i] = mss[i];
        }
    }
    if (w.nd == 0 && w.dsi == 1 && w.ssi == 1 && w.len > WALK_CHUNK && dst->storage != src->storage) {
        /* one contiguous run: rows of WALK_CHUNK (and a shorter last one) */
        const int64_t full = w.len / WALK_CHUNK, rest = w.len % WALK_CHUNK;
        w.nd = 1, w.ne[0] = full, w.ds[0] = w.ss[0] = WALK_CHUNK, w.len = WALK_CHUNK;
        nr_parallel_for(full, 4, walk2_task, &w);
        if (rest) {
            walk2 t = w;
            t.nd = 0, t.len = rest, t.d += full * WALK_CHUNK, t.s += full * WALK_CHUNK;
            walk2_task(&t, 0, 1, 0);
        }
        return;
    }
    const int64_t rows = n / w.len;
    if (dst->storage == src->storage) /* overlapping: in order, on this thread */
        walk2_task(&w, 0, rows, 0);
    else
        nr_parallel_for(rows, (4 * WALK_CHUNK + w.len - 1) / w.len, walk2_task, &w);
}

/* Generic strided copy: walks dst's index space in row-major order. */
void nr_copy_into(nr_tensor *dst, const nr_tensor *src) {
    int64_t n = nr_numel(dst);
    NR_ASSERT(n == nr_numel(src));
    if (nr_same_shape(dst, src)) {
        nr_walk2(dst, src, 0);
        return;
    }
    if (nr_is_contiguous(dst) && nr_is_contiguous(src)) {
        memmove(nr_data(dst), nr_data(src), (size_t)n * sizeof(float));
        return;
    }
    float *d = nr_data(dst);
    const float *s = nr_data(src);
    int64_t di[NR_MAXDIM] = {0}, si[NR_MAXDIM] = {0};
    int64_t doff = 0, soff = 0;
    /* different shapes, same numel: both walked in their own row-major order */
    for (int64_t k = 0; k < n; k++) {
        d[doff] = s[soff];
        for (int i = dst->ndim - 1; i >= 0; i--) {
            doff += dst->st[i];
            if (++di[i] < dst->ne[i]) break;
            doff -= dst->st[i] * dst->ne[i];
            di[i] = 0;
        }
        for (int i = src->ndim - 1; i >= 0; i--) {
            soff += src->st[i];
            if (++si[i] < src->ne[i]) break;
            soff -= src->st[i] * src->ne[i];
            si[i] = 0;
        }
    }
}

nr_tensor *nr_tensor_clone(const nr_tensor *t) {
    nr_tensor *c = nr_tensor_empty(t->ndim, t->ne);
    if (c) nr_copy_into(c, t);
    return c;
}

nr_tensor *nr_alias(const nr_tensor *t) {
    nr_tensor *a = calloc(1, sizeof *a);
    if (!a) {
        nr_seterror(NR_ENOMEM, "out of memory");
        return NULL;
    }
    a->refcount = 1;
    a->ndim = t->ndim;
    memcpy(a->ne, t->ne, sizeof a->ne);
    memcpy(a->st, t->st, sizeof a->st);
    a->offset = t->offset;
    a->storage = t->storage;
    nr_storage_retain(a->storage);
    return a;
}

nr_tensor *nr_tensor_detach(const nr_tensor *t) { return nr_alias(t); }

void nr_tensor_retain(nr_tensor *t) { t->refcount++; }

void nr_node_release(nr_node *n);

void nr_tensor_release(nr_tensor *t) {
    if (!t || --t->refcount > 0) return;
    nr_storage_release(t->storage);
    nr_tensor_release(t->grad);
    if (t->node) nr_node_release(t->node);
    free(t);
}

/* ------------------------------------------------------------------ RNG */
/* xoshiro256** (Blackman & Vigna), seeded through splitmix64. */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void nr_rng_seed(nr_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t nr_rng_next(nr_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float nr_rng_uniform(nr_rng *r) {
    return (float)(nr_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float nr_rng_normal(nr_rng *r) {
    /* Box-Muller, one value per call (no cached pair: the state alone is the
       generator's state, so saving 4 words restores it exactly). */
    double u1 = ((nr_rng_next(r) >> 11) + 1) * (1.0 / 9007199254740993.0);
    double u2 = (nr_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static nr_rng global_rng = {{0x853c49e6748fea9bULL, 0xda3e39cb94b95bdbULL,
                             0x2545f4914f6cdd1dULL, 0x9e3779b97f4a7c15ULL}};

nr_rng *nr_rng_global(void) { return &global_rng; }
void nr_manual_seed(uint64_t seed) { nr_rng_seed(&global_rng, seed); }
