/*
** ckpt.c -- checkpoint writer and reader (format in ckpt.h).
**
** The writer streams: in file mode it holds at most WBUF_FLUSH pending bytes
** (tensor data above that goes straight to the file), so saving a model does
** not need a second copy of its weights in memory.  The header's payload
** length is only known at the end, so the file starts with a placeholder
** header that finish overwrites; the checksum of the final header and the
** streamed payload are joined with crc32_combine.
**
** The reader trusts nothing after the magic: every count, length and shape is
** checked against the bytes that remain before it is used.
*/
#define _POSIX_C_SOURCE 200809L
#include "ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define WBUF_FLUSH ((size_t)1 << 20)
#define MAX_DIM_SIZE ((uint64_t)1 << 40)
/* The smallest table pair: an integer key (9 bytes) and a boolean (1). */
#define MIN_PAIR 10

/* ------------------------------------------------------------ helpers */

static int host_little_endian(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void swap4(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++, p += 4) {
        unsigned char a = p[0], b = p[1];
        p[0] = p[3];
        p[1] = p[2];
        p[2] = b;
        p[3] = a;
    }
}

uint32_t nr_ckpt_crc32(uint32_t crc, const void *p, size_t n) {
    const unsigned char *b = p;
    uLong c = crc;
    while (n > 0) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

/* The product of the non-zero sizes stays <= 2^40 (the runtime's element
   limit), so even an empty tensor's strides cannot overflow. */
static int sizes_plausible(int nd, const int64_t *ne) {
    uint64_t n = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t d = (uint64_t)ne[i];
        if (ne[i] < 0 || d > MAX_DIM_SIZE) return 0;
        if (d > 0 && n > MAX_DIM_SIZE / d) return 0;
        if (d > 0) n *= d;
    }
    return 1;
}

static const char *tag_name(int tag) {
    switch (tag) {
    case NR_CKPT_FALSE: case NR_CKPT_TRUE: return "boolean";
    case NR_CKPT_INT: return "integer";
    case NR_CKPT_FLOAT: return "float";
    case NR_CKPT_STRING: return "string";
    case NR_CKPT_TABLE: return "table";
    case NR_CKPT_TENSOR: return "tensor";
    default: return "unknown";
    }
}

/* ------------------------------------------------------------- writer */

static const char *wname(const nr_ckpt_writer *w) {
    return w->path ? w->path : "<buffer>";
}

/* Records the first error (message kept, so finish can repeat it). */
static nr_status wfail(nr_ckpt_writer *w, nr_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static nr_status wfail(nr_ckpt_writer *w, nr_status st, const char *fmt, ...) {
    if (w->st != NR_OK) return nr_seterror(w->st, "%s", w->msg);
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    w->st = st;
    nr_seterror(st, "save: %s: %s", wname(w), msg);
    size_t n = strlen(nr_lasterror());
    if (n >= sizeof w->msg) n = sizeof w->msg - 1;
    memcpy(w->msg, nr_lasterror(), n);
    w->msg[n] = '\0';
    return st;
}

static void wreset(nr_ckpt_writer *w) {
    memset(w, 0, sizeof *w);
    w->rem[0] = 1;
}

static int wgrow(nr_ckpt_writer *w, size_t need) {
    if (need <= w->cap - w->len) return 1;
    if (need > SIZE_MAX / 2 - w->len) return 0;
    size_t cap = w->cap ? w->cap : 4096;
    while (cap - w->len < need) cap *= 2;
    unsigned char *nb = realloc(w->buf, cap);
    if (!nb) return 0;
    w->buf = nb;
    w->cap = cap;
    return 1;
}

/* File mode: writes n bytes to the temp file, folding them into the crc. */
static nr_status wfile(nr_ckpt_writer *w, const void *p, size_t n) {
    if (n == 0) return NR_OK;
    if (fwrite(p, 1, n, w->f) != n)
        return wfail(w, NR_EIO, "write failed: %s", strerror(errno));
    w->crc = nr_ckpt_crc32(w->crc, p, n);
    return NR_OK;
}

static nr_status wflush(nr_ckpt_writer *w) {
    if (!w->f || w->len == 0) return NR_OK;
    nr_status st = wfile(w, w->buf, w->len);
    w->len = 0;
    return st;
}

/* Appends payload bytes. */
static nr_status wbytes(nr_ckpt_writer *w, const void *p, size_t n) {
    if (w->f && w->len + n > WBUF_FLUSH) {
        if (wflush(w) != NR_OK) return w->st;
        if (n >= WBUF_FLUSH) {
            if (wfile(w, p, n) != NR_OK) return w->st;
            w->payload += n;
            return NR_OK;
        }
    }
    if (!wgrow(w, n)) return wfail(w, NR_ENOMEM, "out of memory (%zu bytes)", w->len + n);
    if (n) memcpy(w->buf + w->len, p, n);
    w->len += n;
    w->payload += n;
    return NR_OK;
}

nr_status nr_ckpt_writer_init_mem(nr_ckpt_writer *w) {
    if (!w) return nr_seterror(NR_EUSAGE, "save: writer is NULL");
    wreset(w);
    unsigned char hdr[NR_CKPT_HEADER] = {0};
    if (!wgrow(w, NR_CKPT_HEADER)) {
        w->done = 1;
        return nr_seterror(NR_ENOMEM, "save: out of memory");
    }
    memcpy(w->buf, hdr, NR_CKPT_HEADER);
    w->len = NR_CKPT_HEADER;
    return NR_OK;
}

nr_status nr_ckpt_writer_init_file(nr_ckpt_writer *w, const char *path) {
    if (!w) return nr_seterror(NR_EUSAGE, "save: writer is NULL");
    wreset(w);
    if (!path || !*path) {
        w->done = 1;
        return nr_seterror(NR_EUSAGE, "save: empty path");
    }
    size_t plen = strlen(path);
    w->path = malloc(plen + 1);
    w->tmp = malloc(plen + 32);
    if (!w->path || !w->tmp) {
        nr_ckpt_writer_discard(w);
        return nr_seterror(NR_ENOMEM, "save: %s: out of memory", path);
    }
    memcpy(w->path, path, plen + 1);
    snprintf(w->tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    /* A stale temp file of ours (a crash, a reused pid) is replaced; O_EXCL
       after the unlink so we never write through a planted symlink. */
    if (unlink(w->tmp) != 0 && errno != ENOENT) {
        nr_status st = nr_seterror(NR_EIO, "save: %s: cannot remove stale temp file %s: %s",
                                   path, w->tmp, strerror(errno));
        free(w->tmp);
        w->tmp = NULL; /* not ours to unlink again */
        nr_ckpt_writer_discard(w);
        return st;
    }
    int fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        nr_status st = nr_seterror(NR_EIO, "save: %s: cannot create %s: %s", path, w->tmp,
                                   strerror(errno));
        free(w->tmp);
        w->tmp = NULL;
        nr_ckpt_writer_discard(w);
        return st;
    }
    w->f = fdopen(fd, "wb");
    if (!w->f) {
        close(fd);
        nr_status st = nr_seterror(NR_EIO, "save: %s: %s", path, strerror(errno));
        nr_ckpt_writer_discard(w);
        return st;
    }
    /* placeholder header: an all-zero length marks a file that was never
       finished (the reader calls it half-written) */
    unsigned char hdr[NR_CKPT_HEADER] = {0};
    memcpy(hdr, NR_CKPT_MAGIC, NR_CKPT_MAGIC_LEN);
    put_u32(hdr + 8, NR_CKPT_VERSION);
    if (fwrite(hdr, 1, sizeof hdr, w->f) != sizeof hdr) {
        nr_status st = nr_seterror(NR_EIO, "save: %s: write failed: %s", path, strerror(errno));
        nr_ckpt_writer_discard(w);
        return st;
    }
    return NR_OK;
}

/* Checks that a value with this tag may come next and counts it. */
static nr_status wbegin(nr_ckpt_writer *w, int tag) {
    if (w->done) return nr_seterror(NR_EUSAGE, "save: writer already finished");
    if (w->st != NR_OK) return nr_seterror(w->st, "%s", w->msg);
    if (w->depth == 0 && w->rem[0] == 0)
        return wfail(w, NR_EUSAGE, "a value after the complete root value");
    if (w->depth > 0 && w->rem[w->depth] % 2 == 0 && tag != NR_CKPT_INT &&
        tag != NR_CKPT_STRING)
        return wfail(w, NR_EUSAGE, "a table key must be an integer or a string, not a %s",
                     tag_name(tag));
    w->rem[w->depth]--;
    return NR_OK;
}

static void wpop(nr_ckpt_writer *w) {
    while (w->depth > 0 && w->rem[w->depth] == 0) w->depth--;
}

static nr_status wscalar(nr_ckpt_writer *w, int tag, const unsigned char *body, size_t n) {
    if (wbegin(w, tag) != NR_OK) return w->st != NR_OK ? w->st : NR_EUSAGE;
    unsigned char b[9];
    b[0] = (unsigned char)tag;
    if (n) memcpy(b + 1, body, n);
    if (wbytes(w, b, 1 + n) != NR_OK) return w->st;
    wpop(w);
    return NR_OK;
}

nr_status nr_ckpt_put_bool(nr_ckpt_writer *w, int b) {
    return wscalar(w, b ? NR_CKPT_TRUE : NR_CKPT_FALSE, NULL, 0);
}

nr_status nr_ckpt_put_int(nr_ckpt_writer *w, int64_t v) {
    unsigned char b[8];
    put_u64(b, (uint64_t)v);
    return wscalar(w, NR_CKPT_INT, b, 8);
}

nr_status nr_ckpt_put_float(nr_ckpt_writer *w, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    unsigned char b[8];
    put_u64(b, u);
    return wscalar(w, NR_CKPT_FLOAT, b, 8);
}

nr_status nr_ckpt_put_string(nr_ckpt_writer *w, const void *s, size_t len) {
    if (!s && len) return wfail(w, NR_EUSAGE, "string is NULL");
    if (wbegin(w, NR_CKPT_STRING) != NR_OK) return w->st != NR_OK ? w->st : NR_EUSAGE;
    unsigned char b[9];
    b[0] = NR_CKPT_STRING;
    put_u64(b + 1, (uint64_t)len);
    if (wbytes(w, b, 9) != NR_OK || wbytes(w, s, len) != NR_OK) return w->st;
    wpop(w);
    return NR_OK;
}

nr_status nr_ckpt_put_table(nr_ckpt_writer *w, uint64_t count) {
    if (wbegin(w, NR_CKPT_TABLE) != NR_OK) return w->st != NR_OK ? w->st : NR_EUSAGE;
    if (count > UINT64_MAX / 2) return wfail(w, NR_EUSAGE, "table of %llu pairs",
                                             (unsigned long long)count);
    if (count > 0 && w->depth >= NR_CKPT_MAXDEPTH)
        return wfail(w, NR_EUSAGE, "tables nested deeper than %d", NR_CKPT_MAXDEPTH);
    unsigned char b[9];
    b[0] = NR_CKPT_TABLE;
    put_u64(b + 1, count);
    if (wbytes(w, b, 9) != NR_OK) return w->st;
    if (count > 0) {
        w->depth++;
        w->rem[w->depth] = 2 * count;
    }
    wpop(w);
    return NR_OK;
}

nr_status nr_ckpt_put_tensor(nr_ckpt_writer *w, const nr_tensor *t) {
    if (!t) return wfail(w, NR_EUSAGE, "tensor is NULL");
    if (t->ndim < 0 || t->ndim > NR_MAXDIM)
        return wfail(w, NR_EUSAGE, "tensor with %d dims", t->ndim);
    if (!sizes_plausible(t->ndim, t->ne)) {
        char sh[NR_SHAPEBUF];
        return wfail(w, NR_EUSAGE, "tensor of shape %s is too large", nr_shape_str(t, sh));
    }
    if (wbegin(w, NR_CKPT_TENSOR) != NR_OK) return w->st != NR_OK ? w->st : NR_EUSAGE;
    unsigned char b[3 + 8 * NR_MAXDIM];
    b[0] = NR_CKPT_TENSOR;
    b[1] = (unsigned char)t->ndim;
    b[2] = t->requires_grad && !t->node ? NR_CKPT_TENSOR_REQUIRES_GRAD : 0;
    for (int i = 0; i < t->ndim; i++) put_u64(b + 3 + 8 * i, (uint64_t)t->ne[i]);
    if (wbytes(w, b, 3 + 8 * (size_t)t->ndim) != NR_OK) return w->st;
    int64_t numel = nr_numel(t);
    if (numel > 0) {
        if (nr_is_contiguous(t) && host_little_endian()) {
            if (wbytes(w, nr_data(t), (size_t)numel * 4) != NR_OK) return w->st;
        } else {
            /* strided walk in row-major order through a small buffer */
            float chunk[4096];
            size_t nb = 0;
            int64_t idx[NR_MAXDIM] = {0};
            int64_t off = 0;
            const float *d = nr_data(t);
            int swap = !host_little_endian();
            for (int64_t k = 0; k < numel; k++) {
                chunk[nb++] = d[off];
                if (nb == sizeof chunk / sizeof chunk[0] || k == numel - 1) {
                    if (swap) swap4((unsigned char *)chunk, nb);
                    if (wbytes(w, chunk, nb * 4) != NR_OK) return w->st;
                    nb = 0;
                }
                for (int i = t->ndim - 1; i >= 0; i--) {
                    off += t->st[i];
                    if (++idx[i] < t->ne[i]) break;
                    off -= t->st[i] * t->ne[i];
                    idx[i] = 0;
                }
            }
        }
    }
    wpop(w);
    return NR_OK;
}

void nr_ckpt_writer_discard(nr_ckpt_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp) unlink(w->tmp);
    free(w->buf);
    free(w->path);
    free(w->tmp);
    w->f = NULL;
    w->buf = NULL;
    w->path = w->tmp = NULL;
    w->len = w->cap = 0;
    w->done = 1;
}

/* Test hook of the kill-and-resume harness (scripts/killtest.lua): with
   NASRT_CKPT_PAUSE_MS=n in the environment the writer stops for n ms once
   the payload is in the temp file but neither the checksum nor the real
   header is, so a SIGKILL sent then leaves a genuinely half-written file
   (the reader rejects it: zero payload length in the header). */
static void test_pause(FILE *f) {
    const char *e = getenv("NASRT_CKPT_PAUSE_MS");
    long ms = e ? strtol(e, NULL, 10) : 0;
    if (ms <= 0) return;
    fflush(f);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* fsync of the folder holding path, so the rename itself is durable. */
static int sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else {
        dir = malloc((size_t)(slash - path) + 1);
        if (dir) {
            memcpy(dir, path, (size_t)(slash - path));
            dir[slash - path] = '\0';
        }
    }
    if (!dir) return -1;
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    if (rc != 0 && (errno == EINVAL || errno == EROFS || errno == EBADF)) rc = 0;
    close(fd);
    return rc;
}

nr_status nr_ckpt_writer_finish(nr_ckpt_writer *w, void **buf, size_t *len) {
    if (!w || w->done) return nr_seterror(NR_EUSAGE, "save: writer already finished");
    if (buf) *buf = NULL;
    if (len) *len = 0;
    nr_status st = w->st;
    if (st != NR_OK) {
        nr_seterror(st, "%s", w->msg); /* the first failure */
        nr_ckpt_writer_discard(w);
        return st;
    }
    if (w->depth != 0 || w->rem[0] != 0) {
        st = nr_seterror(NR_EUSAGE, "save: %s: incomplete value tree (%llu values missing)",
                         wname(w), (unsigned long long)(w->rem[w->depth] + (w->rem[0] != 0)));
        nr_ckpt_writer_discard(w);
        return st;
    }
    unsigned char hdr[NR_CKPT_HEADER];
    memcpy(hdr, NR_CKPT_MAGIC, NR_CKPT_MAGIC_LEN);
    put_u32(hdr + 8, NR_CKPT_VERSION);
    put_u64(hdr + 12, w->payload);
    unsigned char crcb[NR_CKPT_TRAILER];

    if (!w->f) {
        if (!buf || !len) {
            nr_ckpt_writer_discard(w);
            return nr_seterror(NR_EUSAGE, "save: buf/len are NULL for an in-memory writer");
        }
        if (!wgrow(w, NR_CKPT_TRAILER)) {
            nr_ckpt_writer_discard(w);
            return nr_seterror(NR_ENOMEM, "save: out of memory");
        }
        memcpy(w->buf, hdr, NR_CKPT_HEADER);
        put_u32(crcb, nr_ckpt_crc32(0, w->buf, w->len));
        memcpy(w->buf + w->len, crcb, NR_CKPT_TRAILER);
        *buf = w->buf;
        *len = w->len + NR_CKPT_TRAILER;
        w->buf = NULL;
        nr_ckpt_writer_discard(w);
        return NR_OK;
    }

    const char *path = w->path;
    int err = 0;
    const char *what = "write failed";
    errno = 0;
    if (wflush(w) != NR_OK) {
        err = errno;
    } else {
        test_pause(w->f);
        uint32_t crc = (uint32_t)crc32_combine(crc32(0L, hdr, NR_CKPT_HEADER), w->crc,
                                               (z_off_t)w->payload);
        put_u32(crcb, crc);
        if (fwrite(crcb, 1, NR_CKPT_TRAILER, w->f) != NR_CKPT_TRAILER ||
            fseek(w->f, 0, SEEK_SET) != 0 ||
            fwrite(hdr, 1, NR_CKPT_HEADER, w->f) != NR_CKPT_HEADER || fflush(w->f) != 0)
            err = errno ? errno : EIO;
        else if (fsync(fileno(w->f)) != 0 && errno != EINVAL && errno != EROFS) {
            err = errno;
            what = "fsync failed";
        }
    }
    if (fclose(w->f) != 0 && !err) err = errno ? errno : EIO;
    w->f = NULL;
    if (!err && rename(w->tmp, path) != 0) {
        err = errno;
        what = "rename failed";
    }
    if (err) {
        st = nr_seterror(NR_EIO, "save: %s: %s: %s", path, what, strerror(err));
        nr_ckpt_writer_discard(w); /* unlinks the temp file */
        return st;
    }
    free(w->tmp); /* renamed: nothing to unlink any more */
    w->tmp = NULL;
    if (sync_dir(path) != 0)
        st = nr_seterror(NR_EIO, "save: %s: fsync of the folder failed: %s", path,
                         strerror(errno));
    nr_ckpt_writer_discard(w);
    return st;
}

/* ------------------------------------------------------------- reader */

static nr_status rcorrupt(const nr_ckpt_reader *r, const unsigned char *at, const char *fmt,
                          ...) __attribute__((format(printf, 3, 4)));
static nr_status rcorrupt(const nr_ckpt_reader *r, const unsigned char *at, const char *fmt,
                          ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nr_seterror(NR_EIO, "load: %s: corrupt checkpoint at byte %zu: %s", r->name,
                       (size_t)(at - r->base), msg);
}

nr_status nr_ckpt_reader_open(nr_ckpt_reader *r, const void *buf, size_t len,
                              const char *name, int flags) {
    if (!r) return nr_seterror(NR_EUSAGE, "load: reader is NULL");
    memset(r, 0, sizeof *r);
    r->name = name ? name : "<buffer>";
    if (!buf && len) return nr_seterror(NR_EUSAGE, "load: %s: buffer is NULL", r->name);
    const unsigned char *b = buf;
    r->base = b;
    r->p = r->end = b;
    r->depth = 0;
    r->rem[0] = 0; /* nothing readable until the checks pass */
    if (len < NR_CKPT_MAGIC_LEN) {
        if (len == 0 || memcmp(b, NR_CKPT_MAGIC, len) == 0)
            return nr_seterror(NR_EIO, "load: %s: truncated: %zu bytes, expected at least %d",
                               r->name, len, NR_CKPT_HEADER + NR_CKPT_TRAILER);
        return nr_seterror(NR_EIO, "load: %s: not a nasrt checkpoint", r->name);
    }
    if (memcmp(b, NR_CKPT_MAGIC, NR_CKPT_MAGIC_LEN) != 0)
        return nr_seterror(NR_EIO, "load: %s: not a nasrt checkpoint", r->name);
    if (len < 12)
        return nr_seterror(NR_EIO, "load: %s: truncated: %zu bytes, expected at least %d",
                           r->name, len, NR_CKPT_HEADER + NR_CKPT_TRAILER);
    r->version = get_u32(b + 8);
    if (r->version > NR_CKPT_VERSION)
        return nr_seterror(NR_EIO,
                           "load: %s: checkpoint format version %lu is newer than this "
                           "nasrt (%d)", r->name, (unsigned long)r->version, NR_CKPT_VERSION);
    if (r->version == 0)
        return nr_seterror(NR_EIO, "load: %s: unknown checkpoint format version 0", r->name);
    if (len < NR_CKPT_HEADER + NR_CKPT_TRAILER)
        return nr_seterror(NR_EIO, "load: %s: truncated: %zu bytes, expected at least %d",
                           r->name, len, NR_CKPT_HEADER + NR_CKPT_TRAILER);
    uint64_t plen = get_u64(b + 12);
    if (plen == 0)
        return nr_seterror(NR_EIO, "load: %s: half-written checkpoint (its header was never "
                           "completed)", r->name);
    size_t room = len - NR_CKPT_HEADER - NR_CKPT_TRAILER;
    if (plen > room)
        return nr_seterror(NR_EIO, "load: %s: truncated: expected %llu bytes, got %zu",
                           r->name,
                           plen > UINT64_MAX - NR_CKPT_HEADER - NR_CKPT_TRAILER
                               ? (unsigned long long)UINT64_MAX
                               : (unsigned long long)(plen + NR_CKPT_HEADER + NR_CKPT_TRAILER),
                           len);
    if (plen < room)
        return nr_seterror(NR_EIO, "load: %s: %zu unexpected bytes after the end of the "
                           "checkpoint (file is corrupt)", r->name, (size_t)(room - plen));
    size_t body = NR_CKPT_HEADER + (size_t)plen;
    if (!(flags & NR_CKPT_NOCRC) && nr_ckpt_crc32(0, b, body) != get_u32(b + body))
        return nr_seterror(NR_EIO, "load: %s: checksum mismatch: file is corrupt or "
                           "half-written", r->name);
    r->p = b + NR_CKPT_HEADER;
    r->end = b + body;
    r->rem[0] = 1;
    return NR_OK;
}

#define NEED(n)                                                                     \
    do {                                                                            \
        if ((size_t)(r->end - p) < (size_t)(n))                                     \
            return rcorrupt(r, start, "%s runs past the end of the payload",        \
                            tag_name(tag));                                         \
    } while (0)

nr_status nr_ckpt_read(nr_ckpt_reader *r, nr_ckpt_item *it) {
    if (!r || !it) return nr_seterror(NR_EUSAGE, "load: reader or item is NULL");
    if (r->depth == 0 && r->rem[0] == 0)
        return nr_seterror(NR_EUSAGE, "load: %s: read past the end of the root value",
                           r->name);
    memset(it, 0, sizeof *it);
    const unsigned char *start = r->p, *p = r->p;
    int is_key = r->depth > 0 && r->rem[r->depth] % 2 == 0;
    if (p >= r->end) return rcorrupt(r, p, "payload ends before the value tree is complete");
    int tag = *p++;
    switch (tag) {
    case NR_CKPT_FALSE:
    case NR_CKPT_TRUE:
        break;
    case NR_CKPT_INT:
        NEED(8);
        it->i = (int64_t)get_u64(p);
        p += 8;
        break;
    case NR_CKPT_FLOAT: {
        NEED(8);
        uint64_t u = get_u64(p);
        memcpy(&it->f, &u, 8);
        p += 8;
        break;
    }
    case NR_CKPT_STRING: {
        NEED(8);
        uint64_t n = get_u64(p);
        p += 8;
        if (n > (uint64_t)(r->end - p))
            return rcorrupt(r, start, "string of %llu bytes runs past the end of the payload",
                            (unsigned long long)n);
        it->s = (const char *)p;
        it->len = (size_t)n;
        p += n;
        break;
    }
    case NR_CKPT_TABLE: {
        NEED(8);
        uint64_t n = get_u64(p);
        p += 8;
        if (n > (uint64_t)(r->end - p) / MIN_PAIR)
            return rcorrupt(r, start, "table of %llu pairs cannot fit in the %zu bytes left",
                            (unsigned long long)n, (size_t)(r->end - p));
        if (n > 0 && r->depth >= NR_CKPT_MAXDEPTH)
            return rcorrupt(r, start, "tables nested deeper than %d", NR_CKPT_MAXDEPTH);
        it->count = n;
        break;
    }
    case NR_CKPT_TENSOR: {
        NEED(2);
        int nd = p[0], fl = p[1];
        p += 2;
        if (nd > NR_MAXDIM) return rcorrupt(r, start, "tensor with %d dims", nd);
        if (fl & ~NR_CKPT_TENSOR_REQUIRES_GRAD)
            return rcorrupt(r, start, "unknown tensor flags 0x%02x", fl);
        NEED(8 * (size_t)nd);
        size_t left = (size_t)(r->end - p) - 8 * (size_t)nd;
        int has_zero = 0;
        for (int i = 0; i < nd; i++) {
            uint64_t d = get_u64(p + 8 * (size_t)i);
            if (d > MAX_DIM_SIZE)
                return rcorrupt(r, start, "tensor size %llu in dim %d is implausible",
                                (unsigned long long)d, i + 1);
            it->ne[i] = (int64_t)d;
            if (d == 0) has_zero = 1;
        }
        if (!sizes_plausible(nd, it->ne))
            return rcorrupt(r, start, "tensor shape is implausibly large");
        uint64_t numel = has_zero ? 0 : 1;
        /* numel * 4 must fit in what is left: checked per factor so the
           product never overflows */
        for (int i = 0; i < nd && numel > 0; i++) {
            uint64_t d = (uint64_t)it->ne[i];
            if (numel > (uint64_t)(left / 4) / d)
                return rcorrupt(r, start, "tensor data runs past the end of the payload");
            numel *= d;
        }
        p += 8 * (size_t)nd;
        if (numel * 4 > left)
            return rcorrupt(r, start, "tensor data runs past the end of the payload");
        it->ndim = nd;
        it->flags = fl;
        it->numel = (int64_t)numel;
        it->data = p;
        p += numel * 4;
        break;
    }
    default:
        return rcorrupt(r, start, "unknown value tag 0x%02x", tag);
    }
    if (is_key && tag != NR_CKPT_INT && tag != NR_CKPT_STRING)
        return rcorrupt(r, start, "a table key is a %s (keys are integers or strings)",
                        tag_name(tag));
    it->tag = (nr_ckpt_tag)tag;
    it->is_key = is_key;
    r->p = p;
    r->rem[r->depth]--;
    if (tag == NR_CKPT_TABLE && it->count > 0) {
        r->depth++;
        r->rem[r->depth] = 2 * it->count;
    }
    while (r->depth > 0 && r->rem[r->depth] == 0) r->depth--;
    return NR_OK;
}

#undef NEED

nr_status nr_ckpt_reader_end(nr_ckpt_reader *r) {
    if (!r) return nr_seterror(NR_EUSAGE, "load: reader is NULL");
    if (r->depth != 0 || r->rem[0] != 0)
        return rcorrupt(r, r->p, "the value tree is incomplete");
    if (r->p != r->end)
        return rcorrupt(r, r->p, "%zu bytes left after the root value",
                        (size_t)(r->end - r->p));
    return NR_OK;
}

nr_tensor *nr_ckpt_item_tensor(const nr_ckpt_item *it) {
    if (!it || it->tag != NR_CKPT_TENSOR) {
        nr_seterror(NR_EUSAGE, "load: item is not a tensor");
        return NULL;
    }
    nr_tensor *t = nr_tensor_empty(it->ndim, it->ne);
    if (!t) return NULL;
    if (it->numel > 0) {
        memcpy(nr_data(t), it->data, (size_t)it->numel * 4);
        if (!host_little_endian()) swap4((unsigned char *)nr_data(t), (size_t)it->numel);
    }
    t->requires_grad = (it->flags & NR_CKPT_TENSOR_REQUIRES_GRAD) != 0;
    return t;
}

nr_status nr_ckpt_validate(const void *buf, size_t len, const char *name, int flags) {
    nr_ckpt_reader r;
    nr_status st = nr_ckpt_reader_open(&r, buf, len, name, flags);
    if (st != NR_OK) return st;
    nr_ckpt_item it;
    while (!(r.depth == 0 && r.rem[0] == 0))
        if ((st = nr_ckpt_read(&r, &it)) != NR_OK) return st;
    return nr_ckpt_reader_end(&r);
}

nr_status nr_ckpt_read_file(const char *path, void **buf, size_t *len) {
    if (!path || !buf || !len) return nr_seterror(NR_EUSAGE, "load: NULL argument");
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return nr_seterror(NR_EIO, "load: %s: %s", path, strerror(errno));
    struct stat sb;
    size_t cap = 1 << 16;
    if (fstat(fileno(f), &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            fclose(f);
            return nr_seterror(NR_EIO, "load: %s: is a directory", path);
        }
        if (S_ISREG(sb.st_mode) && sb.st_size >= 0 && (uint64_t)sb.st_size < SIZE_MAX - 1)
            cap = (size_t)sb.st_size + 1; /* +1: EOF is seen without a regrow */
    }
    unsigned char *b = malloc(cap);
    size_t n = 0;
    nr_status st = NR_OK;
    if (!b) {
        st = nr_seterror(NR_ENOMEM, "load: %s: out of memory (%zu bytes)", path, cap);
        goto done;
    }
    for (;;) {
        if (n == cap) {
            if (cap > SIZE_MAX / 2) {
                st = nr_seterror(NR_ENOMEM, "load: %s: file too large", path);
                goto done;
            }
            unsigned char *nb = realloc(b, cap * 2);
            if (!nb) {
                st = nr_seterror(NR_ENOMEM, "load: %s: out of memory", path);
                goto done;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) st = nr_seterror(NR_EIO, "load: %s: read error: %s", path,
                                            strerror(errno));
            break;
        }
    }
done:
    fclose(f);
    if (st != NR_OK) {
        free(b);
        return st;
    }
    *buf = b;
    *len = n;
    return NR_OK;
}
