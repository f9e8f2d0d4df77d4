/*
** data.c -- Fashion-MNIST (IDX, gzipped or plain) and CIFAR-10/100 binary
** readers, and the batch loader with its background prefetch thread.
** See data.h for the contract.
**
** Files are read through a small byte source that inflates gzip members
** with zlib as it goes (so the 47 MB of Fashion-MNIST pixels are inflated
** straight into the dataset buffer) or passes plain files through.  Every
** way a file can be wrong ends in one message naming the file.
**
** The loader's prefetch: the calling thread ("main") owns the iteration
** state (epoch, pos) and allocates every tensor; the worker fills the
** first batch of the next `prefetch` plan positions (pos, pos+1, ... rolling
** over into the next epoch) that is not in the ring yet, writing floats into
** a slot's preallocated tensors.  A slot is keyed by (epoch, batch), and
** its content is a pure function of that key, so repositioning only ever
** makes slots stale (reused later), never wrong.
*/
#define _POSIX_C_SOURCE 200809L
#include "data.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IN_CHUNK (1 << 18)

/* ------------------------------------------------------------ datasets */

nr_dataset *nr_dataset_new(const char *name, const char *split, int64_t n, int c, int h, int w,
                           int classes) {
    nr_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) goto oom;
    ds->refcount = 1;
    snprintf(ds->name, sizeof ds->name, "%s", name);
    snprintf(ds->split, sizeof ds->split, "%s", split);
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->classes = classes;
    size_t np = (size_t)n * (size_t)c * (size_t)h * (size_t)w;
    ds->pixels = calloc(np ? np : 1, 1);
    ds->labels = calloc(n ? (size_t)n : 1, 1);
    if (!ds->pixels || !ds->labels) {
        nr_dataset_release(ds);
        goto oom;
    }
    return ds;
oom:
    nr_seterror(NR_ENOMEM, "%s: out of memory for %lld images", name, (long long)n);
    return NULL;
}

void nr_dataset_retain(nr_dataset *ds) { ds->refcount++; }

void nr_dataset_release(nr_dataset *ds) {
    if (!ds || --ds->refcount > 0) return;
    free(ds->pixels);
    free(ds->labels);
    free(ds);
}

/* --------------------------------------------------------- byte source */

typedef struct {
    const char *who, *path;
    FILE *f;
    int gz;               /* gzip stream (else plain bytes) */
    z_stream zs;
    int zinit;
    unsigned char *in;    /* input buffer; zs.next_in/avail_in (also used when plain) */
    int in_eof;           /* the file has no more bytes */
    int ended;            /* gzip: the last member ended cleanly */
    int trunc;            /* gzip: the file ended inside a member */
    int err;              /* corrupt data or read error; errmsg says which */
    char errmsg[200];
} bsrc;

static nr_status src_open(bsrc *s, const char *who, const char *path) {
    memset(s, 0, sizeof *s);
    s->who = who;
    s->path = path;
    s->f = fopen(path, "rb");
    if (!s->f)
        return nr_seterror(NR_EIO, "%s: %s: cannot open: %s", who, path, strerror(errno));
    s->in = malloc(IN_CHUNK);
    if (!s->in) {
        fclose(s->f);
        return nr_seterror(NR_ENOMEM, "%s: %s: out of memory", who, path);
    }
    size_t got = fread(s->in, 1, IN_CHUNK, s->f);
    if (got < IN_CHUNK) {
        if (ferror(s->f)) {
            int e = errno;
            fclose(s->f);
            free(s->in);
            return nr_seterror(NR_EIO, "%s: %s: read error: %s", who, path, strerror(e));
        }
        s->in_eof = 1;
    }
    s->zs.next_in = s->in;
    s->zs.avail_in = (uInt)got;
    if (got >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b) {
        s->gz = 1;
        if (inflateInit2(&s->zs, 15 + 16) != Z_OK) {
            fclose(s->f);
            free(s->in);
            return nr_seterror(NR_ENOMEM, "%s: %s: cannot start zlib", who, path);
        }
        s->zinit = 1;
    }
    return NR_OK;
}

static void src_close(bsrc *s) {
    if (s->zinit) inflateEnd(&s->zs);
    if (s->f) fclose(s->f);
    free(s->in);
    s->f = NULL;
    s->in = NULL;
    s->zinit = 0;
}

/* Refills the input buffer when empty; 0 when the file has no more bytes. */
static int src_fill(bsrc *s) {
    if (s->zs.avail_in > 0) return 1;
    if (s->in_eof) return 0;
    size_t got = fread(s->in, 1, IN_CHUNK, s->f);
    if (got < IN_CHUNK) {
        if (ferror(s->f)) {
            snprintf(s->errmsg, sizeof s->errmsg, "read error: %s", strerror(errno));
            s->err = 1;
        }
        s->in_eof = 1;
    }
    s->zs.next_in = s->in;
    s->zs.avail_in = (uInt)got;
    return got > 0;
}

/* Bytes of the file not consumed yet (for the trailing-garbage message). */
static long long src_remaining(bsrc *s) {
    long long n = s->zs.avail_in;
    if (!s->in_eof) {
        long here = ftell(s->f);
        if (here >= 0 && fseek(s->f, 0, SEEK_END) == 0) {
            long end = ftell(s->f);
            if (end >= here) n += end - here;
        }
        s->in_eof = 1;
    }
    s->zs.avail_in = 0;
    return n;
}

/* Reads up to n bytes; fewer only at the end of the data or on an error
   (s->err, s->trunc tell which). */
static size_t src_read(bsrc *s, void *dst, size_t n) {
    unsigned char *d = dst;
    size_t got = 0;
    if (!s->gz) {
        while (got < n && !s->err) {
            if (!src_fill(s)) break;
            size_t k = s->zs.avail_in < n - got ? s->zs.avail_in : n - got;
            memcpy(d + got, s->zs.next_in, k);
            s->zs.next_in += k;
            s->zs.avail_in -= (uInt)k;
            got += k;
        }
        return got;
    }
    while (got < n && !s->err && !s->ended && !s->trunc) {
        size_t want = n - got;
        if (want > (1u << 30)) want = 1u << 30;
        s->zs.next_out = d + got;
        s->zs.avail_out = (uInt)want;
        src_fill(s);
        if (s->err) break;
        int rc = inflate(&s->zs, Z_NO_FLUSH);
        got += want - s->zs.avail_out;
        if (rc == Z_STREAM_END) {
            /* another gzip member may follow (concatenated .gz is legal) */
            if (!src_fill(s)) {
                if (!s->err) s->ended = 1;
                break;
            }
            if (s->zs.next_in[0] == 0x1f && (s->zs.avail_in < 2 || s->zs.next_in[1] == 0x8b)) {
                inflateReset(&s->zs);
                continue;
            }
            snprintf(s->errmsg, sizeof s->errmsg,
                     "%lld bytes of trailing garbage after the gzip stream", src_remaining(s));
            s->err = 1;
        } else if (rc == Z_BUF_ERROR) {
            /* no progress possible: out of input inside a member */
            if (s->zs.avail_in == 0 && s->in_eof) s->trunc = 1;
        } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
            snprintf(s->errmsg, sizeof s->errmsg, "corrupt gzip data (%s)",
                     s->zs.msg ? s->zs.msg : "invalid deflate stream");
            s->err = 1;
        } else if (rc == Z_MEM_ERROR) {
            snprintf(s->errmsg, sizeof s->errmsg, "out of memory in zlib");
            s->err = 1;
        }
    }
    return got;
}

/* After the declared payload: the file must end here, cleanly. */
static nr_status src_expect_end(bsrc *s, const char *what, long long declared) {
    unsigned char buf[4096];
    long long extra = 0;
    size_t k;
    while ((k = src_read(s, buf, sizeof buf)) > 0) extra += (long long)k;
    if (extra > 0)
        return nr_seterror(NR_EIO, "%s: %s: trailing data: %lld bytes after the declared %lld bytes of %s",
                           s->who, s->path, extra, declared, what);
    if (s->err) return nr_seterror(NR_EIO, "%s: %s: %s", s->who, s->path, s->errmsg);
    if (s->trunc)
        return nr_seterror(NR_EIO, "%s: %s: truncated gzip stream (the data is complete but the "
                                   "end of the stream and its checksum are missing)",
                           s->who, s->path);
    return NR_OK;
}

/* Reads exactly n bytes into a buffer that grows as the data arrives (so a
   header declaring absurd sizes fails as truncated, not as a huge malloc).
   It starts at 1 MB: a 12-byte file claiming a gigabyte costs 1 MB, and the
   47 MB of Fashion-MNIST pixels cost six doublings. */
static nr_status src_read_exact(bsrc *s, uint8_t **out, size_t n, const char *what) {
    size_t cap = n < ((size_t)1 << 20) ? n : ((size_t)1 << 20);
    uint8_t *buf = malloc(cap ? cap : 1);
    size_t got = 0;
    if (!buf) return nr_seterror(NR_ENOMEM, "%s: %s: out of memory", s->who, s->path);
    while (got < n) {
        if (got == cap) {
            size_t nc = cap * 2 < n ? cap * 2 : n;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                return nr_seterror(NR_EIO, "%s: %s: cannot allocate %zu bytes of %s declared "
                                           "by the header", s->who, s->path, n, what);
            }
            buf = nb;
            cap = nc;
        }
        size_t ask = cap - got, k = src_read(s, buf + got, ask);
        got += k;
        if (k < ask) break; /* short read: end of data or error */
    }
    if (got < n) {
        free(buf);
        if (s->err)
            return nr_seterror(NR_EIO, "%s: %s: %s after %zu of %zu bytes of %s", s->who, s->path,
                               s->errmsg, got, n, what);
        return nr_seterror(NR_EIO, "%s: %s: truncated: expected %zu bytes of %s, got %zu", s->who,
                           s->path, n, what, got);
    }
    *out = buf;
    return NR_OK;
}

/* ------------------------------------------------------------------ IDX */

nr_status nr_idx_read(const char *who, const char *path, int ndim, const char *what,
                      int64_t *dims, uint8_t **data) {
    bsrc s;
    nr_status st = src_open(&s, who, path);
    if (st != NR_OK) return st;
    unsigned char hdr[4 + 4 * 8];
    size_t hlen = 4 + 4 * (size_t)ndim;
    size_t got = src_read(&s, hdr, 4);
    if (got < 4) goto short_header;
    uint32_t magic = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    uint32_t want = 0x800u | (uint32_t)ndim;
    if (magic != want) {
        const char *hint = "";
        if (hdr[0] == 0 && hdr[1] == 0 && hdr[2] == 0x08 && hdr[3] != ndim)
            hint = hdr[3] == 1 ? ": a label file, not images"
                 : hdr[3] == 3 ? ": an image file, not labels" : "";
        else if (hdr[0] != 0 || hdr[1] != 0)
            hint = ": not an IDX file";
        else
            hint = ": not unsigned bytes";
        src_close(&s);
        return nr_seterror(NR_EIO, "%s: %s: bad magic 0x%08x, expected 0x%08x (IDX unsigned bytes, "
                                   "%d dims)%s", who, path, (unsigned)magic, (unsigned)want, ndim, hint);
    }
    got += src_read(&s, hdr + 4, hlen - 4);
    if (got < hlen) goto short_header;
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        const unsigned char *p = hdr + 4 + 4 * i;
        dims[i] = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        total *= (uint64_t)dims[i];
        if (total > ((uint64_t)1 << 40)) {
            src_close(&s);
            return nr_seterror(NR_EIO, "%s: %s: header declares an absurd size", who, path);
        }
    }
    uint8_t *buf = NULL;
    st = src_read_exact(&s, &buf, (size_t)total, what);
    if (st == NR_OK) st = src_expect_end(&s, what, (long long)total);
    src_close(&s);
    if (st != NR_OK) {
        free(buf);
        return st;
    }
    *data = buf;
    return NR_OK;
short_header:
    if (s.err) st = nr_seterror(NR_EIO, "%s: %s: %s", who, path, s.errmsg);
    else st = nr_seterror(NR_EIO, "%s: %s: truncated: expected a %zu-byte IDX header, got %zu bytes",
                          who, path, hlen, got);
    src_close(&s);
    return st;
}

/* root/name.gz, else root/name if that exists (plain IDX), else the .gz
   path (so the message names what was looked for first). */
static void idx_path(char *buf, size_t cap, const char *root, const char *name) {
    struct stat sb;
    snprintf(buf, cap, "%s/%s.gz", root, name);
    if (stat(buf, &sb) == 0) return;
    snprintf(buf, cap, "%s/%s", root, name);
    if (stat(buf, &sb) == 0) return;
    snprintf(buf, cap, "%s/%s.gz", root, name);
}

nr_status nr_fashion_mnist_load(nr_dataset **out, const char *root, int train) {
    const char *who = "fashion_mnist";
    const char *pre = train ? "train" : "t10k";
    char ipath[4096], lpath[4096], name[64];
    *out = NULL;
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", pre);
    idx_path(ipath, sizeof ipath, root, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", pre);
    idx_path(lpath, sizeof lpath, root, name);

    int64_t idims[3], ldims[1];
    uint8_t *px = NULL, *lb = NULL;
    /* labels first: small, and a missing/wrong label file fails fast */
    nr_status st = nr_idx_read(who, lpath, 1, "labels", ldims, &lb);
    if (st != NR_OK) return st;
    for (int64_t i = 0; i < ldims[0]; i++)
        if (lb[i] > 9) {
            st = nr_seterror(NR_EIO, "%s: %s: label %d at index %lld is out of range 0..9", who,
                             lpath, lb[i], (long long)i);
            free(lb);
            return st;
        }
    st = nr_idx_read(who, ipath, 3, "pixels", idims, &px);
    if (st != NR_OK) {
        free(lb);
        return st;
    }
    if (idims[1] != 28 || idims[2] != 28) {
        st = nr_seterror(NR_EIO, "%s: %s: images are %lldx%lld, expected 28x28", who, ipath,
                         (long long)idims[1], (long long)idims[2]);
    } else if (idims[0] != ldims[0]) {
        st = nr_seterror(NR_EIO, "%s: %s: %lld labels, but %s has %lld images", who, lpath,
                         (long long)ldims[0], ipath, (long long)idims[0]);
    }
    if (st != NR_OK) {
        free(lb);
        free(px);
        return st;
    }
    nr_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) {
        free(lb);
        free(px);
        return nr_seterror(NR_ENOMEM, "%s: out of memory", who);
    }
    ds->refcount = 1;
    snprintf(ds->name, sizeof ds->name, "fashion_mnist");
    snprintf(ds->split, sizeof ds->split, "%s", train ? "train" : "test");
    ds->n = idims[0];
    ds->c = 1;
    ds->h = 28;
    ds->w = 28;
    ds->classes = 10;
    ds->pixels = px;
    ds->labels = lb;
    *out = ds;
    return NR_OK;
}

/* ---------------------------------------------------------------- CIFAR */

/* Reads a whole file (gzip or plain) into a malloc'ed buffer. */
static nr_status read_all(bsrc *s, uint8_t **out, size_t *len) {
    struct stat sb;
    size_t cap = 1 << 20;
    if (!s->gz && fstat(fileno(s->f), &sb) == 0 && sb.st_size > 0) cap = (size_t)sb.st_size + 1;
    uint8_t *buf = malloc(cap);
    size_t got = 0;
    if (!buf) return nr_seterror(NR_ENOMEM, "%s: %s: out of memory", s->who, s->path);
    for (;;) {
        if (got == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return nr_seterror(NR_ENOMEM, "%s: %s: out of memory", s->who, s->path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t k = src_read(s, buf + got, cap - got);
        got += k;
        if (got < cap) break;
    }
    if (s->err || s->trunc) {
        free(buf);
        return nr_seterror(NR_EIO, "%s: %s: %s", s->who, s->path,
                           s->err ? s->errmsg : "truncated gzip stream");
    }
    *out = buf;
    *len = got;
    return NR_OK;
}

nr_status nr_cifar_load(nr_dataset **out, const char *root, int variant, int train) {
    const char *who = variant == 100 ? "cifar100" : "cifar10";
    const char *sub = variant == 100 ? "cifar-100-binary" : "cifar-10-batches-bin";
    static const char *const c10_train[] = {"data_batch_1.bin", "data_batch_2.bin",
                                            "data_batch_3.bin", "data_batch_4.bin",
                                            "data_batch_5.bin", NULL};
    static const char *const c10_test[] = {"test_batch.bin", NULL};
    static const char *const c100_train[] = {"train.bin", NULL};
    static const char *const c100_test[] = {"test.bin", NULL};
    const char *const *files = variant == 100 ? (train ? c100_train : c100_test)
                                              : (train ? c10_train : c10_test);
    const size_t nlab = variant == 100 ? 2 : 1, rec = nlab + 3072;
    const int classes = variant == 100 ? 100 : 10;
    *out = NULL;
    if (variant != 10 && variant != 100)
        return nr_seterror(NR_EUSAGE, "cifar: variant must be 10 or 100");

    /* root itself, or the folder the archive extracts to */
    char dir[4096], path[4096 + 64];
    struct stat sb;
    snprintf(dir, sizeof dir, "%s", root);
    snprintf(path, sizeof path, "%s/%s", root, files[0]);
    if (stat(path, &sb) != 0) {
        char alt[4096];
        snprintf(alt, sizeof alt, "%s/%s/%s", root, sub, files[0]);
        if (stat(alt, &sb) == 0) snprintf(dir, sizeof dir, "%s/%s", root, sub);
    }

    nr_dataset *ds = nr_dataset_new(who, train ? "train" : "test", 0, 3, 32, 32, classes);
    if (!ds) return NR_ENOMEM;
    for (int fi = 0; files[fi]; fi++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[fi]);
        bsrc s;
        uint8_t *buf = NULL;
        size_t len = 0;
        nr_status st = src_open(&s, who, path);
        if (st == NR_OK) {
            st = read_all(&s, &buf, &len);
            src_close(&s);
        }
        if (st == NR_OK && (len == 0 || len % rec != 0))
            st = nr_seterror(NR_EIO, "%s: %s: size %zu is not a whole number of %zu-byte records "
                                     "(%zu records and %zu bytes over)%s", who, path, len, rec,
                             len / rec, len % rec,
                             variant == 10 && len % 3074 == 0 && len > 0 ? "; a CIFAR-100 file?"
                             : variant == 100 && len % 3073 == 0 && len > 0 ? "; a CIFAR-10 file?"
                                                                            : "");
        int64_t nrec = (int64_t)(len / rec);
        for (int64_t r = 0; st == NR_OK && r < nrec; r++) {
            const uint8_t *p = buf + r * rec;
            if (variant == 100 && p[0] >= 20)
                st = nr_seterror(NR_EIO, "%s: %s: coarse label %d of record %lld is out of range "
                                         "0..19", who, path, p[0], (long long)r);
            else if (p[nlab - 1] >= classes)
                st = nr_seterror(NR_EIO, "%s: %s: label %d of record %lld is out of range 0..%d",
                                 who, path, p[nlab - 1], (long long)r, classes - 1);
        }
        if (st != NR_OK) {
            free(buf);
            nr_dataset_release(ds);
            return st;
        }
        int64_t n0 = ds->n;
        uint8_t *np = realloc(ds->pixels, (size_t)(n0 + nrec) * 3072);
        if (np) ds->pixels = np;
        uint8_t *nl = np ? realloc(ds->labels, (size_t)(n0 + nrec)) : NULL;
        if (nl) ds->labels = nl;
        if (!np || !nl) {
            free(buf);
            nr_dataset_release(ds);
            return nr_seterror(NR_ENOMEM, "%s: out of memory", who);
        }
        for (int64_t r = 0; r < nrec; r++) {
            const uint8_t *p = buf + r * rec;
            ds->labels[n0 + r] = p[nlab - 1];
            memcpy(ds->pixels + (size_t)(n0 + r) * 3072, p + nlab, 3072);
        }
        ds->n = n0 + nrec;
        free(buf);
    }
    *out = ds;
    return NR_OK;
}

/* ------------------------------------------------------------ augment */

static inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The generator of one stream: a pure function of its key. */
static void rng_for(nr_rng *r, uint64_t seed, int64_t epoch, uint64_t stream, int64_t pos) {
    uint64_t h = mix64(seed ^ 0x6e61737274646174ULL);
    h = mix64(h ^ (uint64_t)epoch);
    h = mix64(h ^ stream);
    h = mix64(h ^ (uint64_t)pos);
    nr_rng_seed(r, h);
}

/* Uniform integer in [0, n), n < 2^32. */
static inline int64_t randint(nr_rng *r, int64_t n) {
    return (int64_t)(((nr_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

void nr_augment_image(const nr_augment *a, const float *lut, const uint8_t *src, float *dst, int c,
                      int h, int w, nr_rng *r) {
    int64_t oi = 0, oj = 0;
    if (a->padding > 0) {
        /* torchvision RandomCrop(size, padding=p): top-left corner of the
           crop uniform in [0, 2p] of the padded image */
        oi = randint(r, 2 * a->padding + 1) - a->padding;
        oj = randint(r, 2 * a->padding + 1) - a->padding;
    }
    int flip = a->flip_p > 0 && nr_rng_uniform(r) < a->flip_p;
    for (int ch = 0; ch < c; ch++) {
        const float *L = lut + 256 * ch;
        const float zero = L[0];
        for (int y = 0; y < h; y++) {
            float *d = dst + ((size_t)ch * h + y) * w;
            int64_t sy = y + oi;
            if (sy < 0 || sy >= h) {
                for (int x = 0; x < w; x++) d[x] = zero;
                continue;
            }
            const uint8_t *s = src + ((size_t)ch * h + sy) * w;
            /* destination x reads source column (flip ? w-1-x : x) + oj */
            int x0 = 0, x1 = w; /* range of x whose source column is inside */
            if (!flip) {
                if (oj < 0) x0 = (int)-oj;
                if (oj > 0) x1 = w - (int)oj;
                for (int x = 0; x < x0; x++) d[x] = zero;
                for (int x = x0; x < x1; x++) d[x] = L[s[x + oj]];
                for (int x = x1 > x0 ? x1 : x0; x < w; x++) d[x] = zero;
            } else {
                for (int x = 0; x < w; x++) {
                    int64_t sx = (w - 1 - x) + oj;
                    d[x] = sx >= 0 && sx < w ? L[s[sx]] : zero;
                }
            }
        }
    }
    if (a->cutout > 0) {
        /* DARTS utils.Cutout: centre uniform over the image, square of side
           `length` clipped to the image, zeroed after normalisation */
        int64_t cy = randint(r, h), cx = randint(r, w), half = a->cutout / 2;
        int64_t y1 = cy - half < 0 ? 0 : cy - half, y2 = cy + half > h ? h : cy + half;
        int64_t x1 = cx - half < 0 ? 0 : cx - half, x2 = cx + half > w ? w : cx + half;
        for (int ch = 0; ch < c; ch++)
            for (int64_t y = y1; y < y2; y++)
                memset(dst + ((size_t)ch * h + y) * w + x1, 0, (size_t)(x2 - x1) * sizeof(float));
    }
}

/* -------------------------------------------------------------- loader */

enum { SLOT_FREE, SLOT_BUSY, SLOT_READY };

typedef struct {
    int state;
    int64_t epoch, b;
    nr_tensor *x, *y;       /* full-batch tensors, allocated by the main thread */
} slot_t;

struct nr_loader {
    nr_dataset *ds;
    int64_t n, *idx;        /* the samples (dataset indices) */
    nr_loader_opts o;
    int64_t nb;             /* batches per epoch */
    float *lut;             /* c x 256 */
    int64_t epoch, pos;     /* iteration state (written by main under mu) */
    /* shuffled orders of two recent epochs (positions into idx) */
    int64_t perm_epoch[2];
    int64_t *perm[2];
    int perm_next;
    /* prefetch */
    int nslots;
    slot_t *slots;
    int started, has_thread, stop;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_ready;
    int64_t *widx, *midx;   /* batch index buffers of the worker and of main */
};

int64_t nr_loader_len(const nr_loader *l) { return l->nb; }
int64_t nr_loader_size(const nr_loader *l) { return l->n; }
const nr_loader_opts *nr_loader_options(const nr_loader *l) { return &l->o; }

void nr_loader_state(const nr_loader *l, int64_t *epoch, int64_t *pos) {
    *epoch = l->epoch;
    *pos = l->pos;
}

/* Order of epoch e as positions into idx (NULL: identity).  Called with mu
   held once the worker runs. */
static const int64_t *get_perm(nr_loader *l, int64_t e) {
    if (!l->o.shuffle) return NULL;
    for (int i = 0; i < 2; i++)
        if (l->perm[i] && l->perm_epoch[i] == e) return l->perm[i];
    int k = l->perm_next;
    l->perm_next ^= 1;
    int64_t *p = l->perm[k];
    nr_rng r;
    rng_for(&r, l->o.seed, e, 1, -1);
    for (int64_t i = 0; i < l->n; i++) p[i] = i;
    for (int64_t i = l->n - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = randint(&r, i + 1);
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    l->perm_epoch[k] = e;
    return p;
}

static int64_t batch_rows(const nr_loader *l, int64_t b) {
    int64_t s = b * l->o.batch_size, e = s + l->o.batch_size;
    return (e > l->n ? l->n : e) - s;
}

/* Dataset indices of batch b of epoch e into out (returns the count). */
static int64_t batch_indices(nr_loader *l, int64_t e, int64_t b, int64_t *out) {
    const int64_t *p = get_perm(l, e);
    int64_t s = b * l->o.batch_size, m = batch_rows(l, b);
    for (int64_t k = 0; k < m; k++) out[k] = l->idx[p ? p[s + k] : s + k];
    return m;
}

/* Pure function of (seed, epoch, b): fills m rows of xd, yd. */
static void compute_batch(const nr_loader *l, int64_t e, int64_t b, const int64_t *di, int64_t m,
                          float *xd, float *yd) {
    const nr_dataset *ds = l->ds;
    size_t isz = (size_t)ds->c * ds->h * ds->w;
    for (int64_t k = 0; k < m; k++) {
        nr_rng r;
        rng_for(&r, l->o.seed, e, 2, b * l->o.batch_size + k);
        nr_augment_image(&l->o.aug, l->lut, ds->pixels + (size_t)di[k] * isz, xd + (size_t)k * isz,
                         ds->c, ds->h, ds->w, &r);
        yd[k] = (float)ds->labels[di[k]];
    }
}

/* Plan position k (0 = the next batch to hand out), rolling over epochs. */
static void plan_at(const nr_loader *l, int64_t k, int64_t *e, int64_t *b) {
    int64_t E = l->epoch, p = l->pos + k;
    if (p >= l->nb) {
        E += 1 + (p - l->nb) / l->nb;
        p = (p - l->nb) % l->nb;
    }
    *e = E;
    *b = p;
}

static int find_slot(const nr_loader *l, int64_t e, int64_t b) {
    for (int i = 0; i < l->nslots; i++)
        if (l->slots[i].state != SLOT_FREE && l->slots[i].epoch == e && l->slots[i].b == b) return i;
    return -1;
}

static int in_window(const nr_loader *l, int64_t e, int64_t b) {
    for (int k = 0; k < l->nslots; k++) {
        int64_t pe, pb;
        plan_at(l, k, &pe, &pb);
        if (pe == e && pb == b) return 1;
    }
    return 0;
}

static void *worker(void *arg) {
    nr_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        int64_t e = 0, b = 0;
        int found = 0, s = -1;
        for (int k = 0; k < l->nslots && !found; k++) {
            plan_at(l, k, &e, &b);
            found = find_slot(l, e, b) < 0;
        }
        if (found)
            for (int i = 0; i < l->nslots && s < 0; i++) {
                slot_t *sl = &l->slots[i];
                if (sl->state == SLOT_FREE ||
                    (sl->state == SLOT_READY && !in_window(l, sl->epoch, sl->b)))
                    s = i;
            }
        if (!found || s < 0) {
            pthread_cond_wait(&l->cv_work, &l->mu);
            continue;
        }
        slot_t *sl = &l->slots[s];
        sl->state = SLOT_BUSY;
        sl->epoch = e;
        sl->b = b;
        int64_t m = batch_indices(l, e, b, l->widx);
        float *xd = nr_data(sl->x), *yd = nr_data(sl->y);
        pthread_mutex_unlock(&l->mu);
        compute_batch(l, e, b, l->widx, m, xd, yd);
        pthread_mutex_lock(&l->mu);
        sl->state = SLOT_READY;
        pthread_cond_broadcast(&l->cv_ready);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static nr_status batch_tensors(const nr_loader *l, int64_t m, nr_tensor **x, nr_tensor **y) {
    int64_t xs[4] = {m, l->ds->c, l->ds->h, l->ds->w}, ys[1] = {m};
    *x = nr_tensor_empty(4, xs);
    *y = *x ? nr_tensor_empty(1, ys) : NULL;
    if (!*y) {
        nr_tensor_release(*x);
        *x = NULL;
        return NR_ENOMEM;
    }
    return NR_OK;
}

nr_status nr_loader_new(nr_loader **out, nr_dataset *ds, const int64_t *idx, int64_t n,
                        const nr_loader_opts *o) {
    *out = NULL;
    if (o->batch_size < 1)
        return nr_seterror(NR_EUSAGE, "loader: batch_size must be at least 1, got %lld",
                           (long long)o->batch_size);
    if (n < 0)
        return nr_seterror(NR_EUSAGE, "loader: bad sample count %lld", (long long)n);
    if (ds->c > NR_DATA_MAXC)
        return nr_seterror(NR_EUSAGE, "loader: %d channels (at most %d)", ds->c, NR_DATA_MAXC);
    if (o->prefetch < 0 || o->prefetch > 64)
        return nr_seterror(NR_EUSAGE, "loader: prefetch must be in 0..64, got %d", o->prefetch);
    if (o->aug.padding < 0 || o->aug.padding > ds->h || o->aug.padding > ds->w)
        return nr_seterror(NR_EUSAGE, "loader: crop padding %lld out of range 0..%d",
                           (long long)o->aug.padding, ds->h < ds->w ? ds->h : ds->w);
    if (o->aug.cutout < 0)
        return nr_seterror(NR_EUSAGE, "loader: cutout length must be >= 0");
    if (!(o->aug.flip_p >= 0 && o->aug.flip_p <= 1))
        return nr_seterror(NR_EUSAGE, "loader: flip probability must be in [0, 1]");
    for (int c = 0; o->aug.normalize && c < ds->c; c++)
        if (!(o->aug.std[c] > 0))
            return nr_seterror(NR_EUSAGE, "loader: std[%d] must be positive, got %g", c + 1,
                               o->aug.std[c]);
    if (idx)
        for (int64_t i = 0; i < n; i++)
            if (idx[i] < 0 || idx[i] >= ds->n)
                return nr_seterror(NR_EUSAGE, "loader: index %lld out of range 0..%lld",
                                   (long long)idx[i], (long long)ds->n - 1);
    if (!idx && n > ds->n)
        return nr_seterror(NR_EUSAGE, "loader: %lld samples from a dataset of %lld", (long long)n,
                           (long long)ds->n);

    nr_loader *l = calloc(1, sizeof *l);
    if (!l) return nr_seterror(NR_ENOMEM, "loader: out of memory");
    l->ds = ds;
    nr_dataset_retain(ds);
    l->n = n;
    l->o = *o;
    l->nb = o->drop_last ? n / o->batch_size : (n + o->batch_size - 1) / o->batch_size;
    l->perm_epoch[0] = l->perm_epoch[1] = -1;
    l->idx = malloc((size_t)(n ? n : 1) * sizeof *l->idx);
    l->lut = malloc((size_t)ds->c * 256 * sizeof *l->lut);
    l->widx = malloc((size_t)o->batch_size * sizeof *l->widx);
    l->midx = malloc((size_t)o->batch_size * sizeof *l->midx);
    if (o->shuffle) {
        l->perm[0] = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
        l->perm[1] = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_ready, NULL);
    if (!l->idx || !l->lut || !l->widx || !l->midx || (o->shuffle && (!l->perm[0] || !l->perm[1])))
        goto oom;
    for (int64_t i = 0; i < n; i++) l->idx[i] = idx ? idx[i] : i;
    for (int c = 0; c < ds->c; c++)
        for (int v = 0; v < 256; v++) {
            double x = v / 255.0;
            if (o->aug.normalize) x = (x - o->aug.mean[c]) / o->aug.std[c];
            l->lut[c * 256 + v] = (float)x;
        }
    if (o->prefetch > 0 && l->nb > 0) {
        l->nslots = o->prefetch;
        l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
        if (!l->slots) goto oom;
        for (int i = 0; i < l->nslots; i++)
            if (batch_tensors(l, o->batch_size, &l->slots[i].x, &l->slots[i].y) != NR_OK) goto oom;
    }
    *out = l;
    return NR_OK;
oom:
    nr_loader_free(l);
    return nr_seterror(NR_ENOMEM, "loader: out of memory");
}

void nr_loader_free(nr_loader *l) {
    if (!l) return;
    if (l->has_thread) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->th, NULL);
    }
    for (int i = 0; l->slots && i < l->nslots; i++) {
        nr_tensor_release(l->slots[i].x);
        nr_tensor_release(l->slots[i].y);
    }
    free(l->slots);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv_work);
    pthread_cond_destroy(&l->cv_ready);
    free(l->perm[0]);
    free(l->perm[1]);
    free(l->idx);
    free(l->lut);
    free(l->widx);
    free(l->midx);
    nr_dataset_release(l->ds);
    free(l);
}

nr_status nr_loader_set_state(nr_loader *l, int64_t epoch, int64_t pos) {
    if (epoch < 0)
        return nr_seterror(NR_EUSAGE, "loader: epoch must be >= 0, got %lld", (long long)epoch);
    if (pos < 0 || pos > l->nb)
        return nr_seterror(NR_EUSAGE, "loader: position %lld out of range 0..%lld (batches per "
                                      "epoch)", (long long)pos, (long long)l->nb);
    pthread_mutex_lock(&l->mu);
    l->epoch = epoch;
    l->pos = pos;
    pthread_cond_signal(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return NR_OK;
}

nr_status nr_loader_batch(nr_loader *l, int64_t epoch, int64_t b, nr_tensor **x, nr_tensor **y) {
    *x = *y = NULL;
    if (epoch < 0)
        return nr_seterror(NR_EUSAGE, "loader: epoch must be >= 0, got %lld", (long long)epoch);
    if (b < 0 || b >= l->nb)
        return nr_seterror(NR_EUSAGE, "loader: batch %lld out of range 0..%lld", (long long)b,
                           (long long)l->nb - 1);
    int64_t m = batch_rows(l, b);
    nr_status st = batch_tensors(l, m, x, y);
    if (st != NR_OK) return st;
    pthread_mutex_lock(&l->mu);
    batch_indices(l, epoch, b, l->midx);
    pthread_mutex_unlock(&l->mu);
    compute_batch(l, epoch, b, l->midx, m, nr_data(*x), nr_data(*y));
    return NR_OK;
}

nr_status nr_loader_next(nr_loader *l, nr_tensor **x, nr_tensor **y) {
    *x = *y = NULL;
    if (l->pos >= l->nb) return NR_OK;
    if (l->nslots > 0 && !l->started) {
        l->started = 1;
        l->has_thread = pthread_create(&l->th, NULL, worker, l) == 0;
    }
    if (!l->has_thread) {
        nr_status st = nr_loader_batch(l, l->epoch, l->pos, x, y);
        if (st == NR_OK) l->pos++;
        return st;
    }
    int64_t m = batch_rows(l, l->pos);
    nr_tensor *nx = NULL, *ny = NULL;
    /* fresh tensors for the slot (or, for a short last batch, the result) */
    nr_status st = batch_tensors(l, m, &nx, &ny);
    if (st != NR_OK) return st;
    pthread_mutex_lock(&l->mu);
    int s;
    while ((s = find_slot(l, l->epoch, l->pos)) < 0 || l->slots[s].state != SLOT_READY) {
        pthread_cond_signal(&l->cv_work);
        pthread_cond_wait(&l->cv_ready, &l->mu);
    }
    slot_t *sl = &l->slots[s];
    if (m == l->o.batch_size) {
        *x = sl->x;
        *y = sl->y;
        sl->x = nx;
        sl->y = ny;
    } else {
        memcpy(nr_data(nx), nr_data(sl->x), (size_t)nr_numel(nx) * sizeof(float));
        memcpy(nr_data(ny), nr_data(sl->y), (size_t)m * sizeof(float));
        *x = nx;
        *y = ny;
    }
    sl->state = SLOT_FREE;
    l->pos++;
    pthread_cond_signal(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return NR_OK;
}
