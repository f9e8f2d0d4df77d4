/*
** npy.c -- NumPy .npy files: the interchange format of the bench and parity
** tests.  Loading accepts format versions 1.0, 2.0 and 3.0, C order, and the
** dtypes numpy writes for floats, signed/unsigned integers and bools (every
** one converted to float32); saving always writes version 1.0 '<f4' C order.
**
** The header is a Python dict literal written by numpy, e.g.
**     {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
** It comes from files, so it is parsed as untrusted input: every malformed,
** truncated or unsupported file is reported as NR_EIO with a message that
** names the file and what is wrong, never a crash.
*/
#define _POSIX_C_SOURCE 200809L
#include "nasrt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* numpy refuses headers above 10000 bytes by default; be a little looser. */
#define NPY_MAX_HEADER (1 << 20)
#define NPY_CHUNK 65536

/* ------------------------------------------------------------ helpers */

static int host_little_endian(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static void byteswap(unsigned char *p, size_t n, size_t size) {
    for (size_t i = 0; i < n; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char c = p[a];
            p[a] = p[b];
            p[b] = c;
        }
}

/* ------------------------------------------------------ header parsing */

typedef struct {
    const char *s, *end;
} npy_lex;

static void skip_ws(npy_lex *x) {
    while (x->s < x->end && (*x->s == ' ' || *x->s == '\t' || *x->s == '\n' ||
                             *x->s == '\r'))
        x->s++;
}

static int accept(npy_lex *x, char c) {
    skip_ws(x);
    if (x->s < x->end && *x->s == c) {
        x->s++;
        return 1;
    }
    return 0;
}

/* A quoted Python string ('...' or "..."), no escapes needed for our keys
   and dtypes.  Copies at most cap-1 bytes into buf.  0 on failure. */
static int parse_str(npy_lex *x, char *buf, size_t cap) {
    skip_ws(x);
    if (x->s >= x->end || (*x->s != '\'' && *x->s != '"')) return 0;
    char q = *x->s++;
    size_t n = 0;
    while (x->s < x->end && *x->s != q) {
        if (*x->s == '\\' || n + 1 >= cap) return 0;
        buf[n++] = *x->s++;
    }
    if (x->s >= x->end) return 0;
    x->s++;
    buf[n] = '\0';
    return 1;
}

static int parse_word(npy_lex *x, const char *w) {
    skip_ws(x);
    size_t n = strlen(w);
    if ((size_t)(x->end - x->s) >= n && memcmp(x->s, w, n) == 0) {
        x->s += n;
        return 1;
    }
    return 0;
}

/* A non-negative integer (numpy may write 3L in old Python 2 files). */
static int parse_dim(npy_lex *x, int64_t *v) {
    skip_ws(x);
    if (x->s >= x->end || *x->s < '0' || *x->s > '9') return 0;
    int64_t n = 0;
    while (x->s < x->end && *x->s >= '0' && *x->s <= '9') {
        if (n > (INT64_MAX - 9) / 10) return 0;
        n = n * 10 + (*x->s++ - '0');
    }
    if (x->s < x->end && (*x->s == 'L' || *x->s == 'l')) x->s++;
    *v = n;
    return 1;
}

typedef struct {
    char descr[32];
    int fortran;
    int ndim;
    int64_t ne[NR_MAXDIM];
    int have_descr, have_fortran, have_shape;
} npy_header;

/* Fills why (a short phrase) and returns 0 on a malformed header. */
static int parse_header(const char *s, size_t n, npy_header *h, char *why, size_t whycap) {
    npy_lex x = {s, s + n};
    memset(h, 0, sizeof *h);
    if (!accept(&x, '{')) {
        snprintf(why, whycap, "header is not a dict");
        return 0;
    }
    for (;;) {
        if (accept(&x, '}')) break;
        char key[32];
        if (!parse_str(&x, key, sizeof key) || !accept(&x, ':')) {
            snprintf(why, whycap, "malformed header near offset %d", (int)(x.s - s));
            return 0;
        }
        if (strcmp(key, "descr") == 0) {
            if (!parse_str(&x, h->descr, sizeof h->descr)) {
                snprintf(why, whycap, "unsupported dtype descr (not a simple string)");
                return 0;
            }
            h->have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (parse_word(&x, "True")) h->fortran = 1;
            else if (parse_word(&x, "False")) h->fortran = 0;
            else {
                snprintf(why, whycap, "fortran_order is neither True nor False");
                return 0;
            }
            h->have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (!accept(&x, '(')) {
                snprintf(why, whycap, "shape is not a tuple");
                return 0;
            }
            h->ndim = 0;
            while (!accept(&x, ')')) {
                int64_t v;
                if (h->ndim >= NR_MAXDIM) {
                    snprintf(why, whycap, "more than %d dims", NR_MAXDIM);
                    return 0;
                }
                if (!parse_dim(&x, &v)) {
                    snprintf(why, whycap, "malformed shape");
                    return 0;
                }
                h->ne[h->ndim++] = v;
                if (!accept(&x, ',')) {
                    if (!accept(&x, ')')) {
                        snprintf(why, whycap, "malformed shape");
                        return 0;
                    }
                    break;
                }
            }
            h->have_shape = 1;
        } else {
            snprintf(why, whycap, "unexpected header key '%s'", key);
            return 0;
        }
        if (!accept(&x, ',')) {
            if (!accept(&x, '}')) {
                snprintf(why, whycap, "malformed header near offset %d", (int)(x.s - s));
                return 0;
            }
            break;
        }
    }
    skip_ws(&x);
    if (x.s != x.end) {
        snprintf(why, whycap, "trailing bytes after the header dict");
        return 0;
    }
    if (!h->have_descr || !h->have_fortran || !h->have_shape) {
        snprintf(why, whycap, "header lacks '%s'",
                 !h->have_descr ? "descr" : !h->have_fortran ? "fortran_order" : "shape");
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------- dtypes */

typedef enum { K_FLOAT, K_INT, K_UINT, K_BOOL } npy_kind;

typedef struct {
    npy_kind kind;
    int size;     /* bytes per element */
    int swap;     /* byte order differs from the host's */
} npy_dtype;

static int parse_dtype(const char *d, npy_dtype *dt) {
    char order = d[0];
    if (order != '<' && order != '>' && order != '|' && order != '=') return 0;
    char kind = d[1];
    if (!kind) return 0;
    char *end;
    long size = strtol(d + 2, &end, 10);
    if (end == d + 2 || *end != '\0') return 0;
    switch (kind) {
    case 'f': dt->kind = K_FLOAT; if (size != 4 && size != 8) return 0; break;
    case 'i': dt->kind = K_INT; break;
    case 'u': dt->kind = K_UINT; break;
    case 'b': dt->kind = K_BOOL; if (size != 1) return 0; break;
    default: return 0;
    }
    if (dt->kind == K_INT || dt->kind == K_UINT)
        if (size != 1 && size != 2 && size != 4 && size != 8) return 0;
    dt->size = (int)size;
    int little = host_little_endian();
    dt->swap = size > 1 && ((order == '<' && !little) || (order == '>' && little));
    if (size > 1 && order == '|') return 0;
    return 1;
}

/* Converts n elements of raw (already byte-swapped to host order) to float. */
static void convert(float *dst, const unsigned char *raw, size_t n, const npy_dtype *dt) {
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = raw + i * (size_t)dt->size;
        float v = 0;
        switch (dt->kind) {
        case K_FLOAT:
            if (dt->size == 4) { float f; memcpy(&f, p, 4); v = f; }
            else { double f; memcpy(&f, p, 8); v = (float)f; }
            break;
        case K_INT:
            switch (dt->size) {
            case 1: v = (float)(int8_t)p[0]; break;
            case 2: { int16_t a; memcpy(&a, p, 2); v = (float)a; } break;
            case 4: { int32_t a; memcpy(&a, p, 4); v = (float)a; } break;
            default: { int64_t a; memcpy(&a, p, 8); v = (float)a; } break;
            }
            break;
        case K_UINT:
            switch (dt->size) {
            case 1: v = (float)p[0]; break;
            case 2: { uint16_t a; memcpy(&a, p, 2); v = (float)a; } break;
            case 4: { uint32_t a; memcpy(&a, p, 4); v = (float)a; } break;
            default: { uint64_t a; memcpy(&a, p, 8); v = (float)a; } break;
            }
            break;
        case K_BOOL:
            v = p[0] ? 1.0f : 0.0f;
            break;
        }
        dst[i] = v;
    }
}

/* --------------------------------------------------------------- load */

/* Reads up to n bytes; returns how many were read (short only at EOF or on
   an error, which the caller tells apart with ferror). */
static size_t read_full(FILE *f, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t r = fread((char *)buf + got, 1, n - got, f);
        if (r == 0) break;
        got += r;
    }
    return got;
}

#define LOADFAIL(...) do { st = nr_seterror(NR_EIO, __VA_ARGS__); goto done; } while (0)

nr_status nr_npy_load(nr_tensor **out, const char *path) {
    nr_status st = NR_OK;
    nr_tensor *t = NULL;
    unsigned char *hbuf = NULL, *raw = NULL;
    FILE *f = NULL;
    if (!out) return nr_seterror(NR_EUSAGE, "load_npy: out is NULL");
    *out = NULL;
    if (!path) return nr_seterror(NR_EUSAGE, "load_npy: path is NULL");

    f = fopen(path, "rb");
    if (!f) LOADFAIL("load_npy: %s: %s", path, strerror(errno));
    struct stat sb;
    int have_stat = fstat(fileno(f), &sb) == 0;
    int regular = have_stat && S_ISREG(sb.st_mode);
    if (have_stat && S_ISDIR(sb.st_mode)) LOADFAIL("load_npy: %s: is a directory", path);

    unsigned char pre[12];
    size_t got = read_full(f, pre, 10);
    if (ferror(f)) LOADFAIL("load_npy: %s: read error: %s", path, strerror(errno));
    if (got < NPY_MAGIC_LEN || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        LOADFAIL("load_npy: %s: not a .npy file (bad magic)", path);
    if (got < 10) LOADFAIL("load_npy: %s: truncated header", path);
    int major = pre[6], minor = pre[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        LOADFAIL("load_npy: %s: unsupported .npy format version %d.%d", path, major, minor);
    size_t hlen, pos;
    if (major == 1) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
        pos = 10;
    } else {
        if (read_full(f, pre + 10, 2) < 2) LOADFAIL("load_npy: %s: truncated header", path);
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 |
               (size_t)pre[11] << 24;
        pos = 12;
    }
    if (hlen == 0) LOADFAIL("load_npy: %s: empty header", path);
    if (hlen > NPY_MAX_HEADER)
        LOADFAIL("load_npy: %s: header of %zu bytes is implausibly large", path, hlen);
    hbuf = malloc(hlen + 1);
    if (!hbuf) {
        st = nr_seterror(NR_ENOMEM, "load_npy: %s: out of memory", path);
        goto done;
    }
    got = read_full(f, hbuf, hlen);
    if (ferror(f)) LOADFAIL("load_npy: %s: read error: %s", path, strerror(errno));
    if (got < hlen)
        LOADFAIL("load_npy: %s: truncated header: expected %zu bytes, got %zu", path, hlen, got);
    hbuf[hlen] = '\0';
    pos += hlen;
    for (size_t i = 0; i < hlen; i++)
        if (hbuf[i] == '\0' || (hbuf[i] >= 0x80 && major < 3))
            LOADFAIL("load_npy: %s: header contains non-ASCII bytes", path);

    npy_header h;
    char why[96];
    if (!parse_header((const char *)hbuf, hlen, &h, why, sizeof why))
        LOADFAIL("load_npy: %s: bad header: %s", path, why);
    npy_dtype dt;
    if (!parse_dtype(h.descr, &dt))
        LOADFAIL("load_npy: %s: unsupported dtype '%s' (want '<f4'; also read: "
                 "f8, i1-i8, u1-u8, b1)", path, h.descr);
    if (h.fortran)
        LOADFAIL("load_npy: %s: fortran_order arrays are not supported "
                 "(save with np.ascontiguousarray)", path);
    /* nr_check_shape's rule, reported as a bad file: the non-zero sizes
       multiply to at most 2^40, so (0, 2^40, 2^40) is refused too (its
       strides would overflow) */
    int64_t numel = 1, nonzero = 1;
    for (int i = 0; i < h.ndim; i++) {
        if (h.ne[i] == 0) {
            numel = 0;
            continue;
        }
        if (nonzero > ((int64_t)1 << 40) / h.ne[i])
            LOADFAIL("load_npy: %s: shape too large (over 2^40 elements)", path);
        nonzero *= h.ne[i];
    }
    if (numel) numel = nonzero;
    size_t nbytes = (size_t)numel * (size_t)dt.size;
    /* Check the size before allocating, so a garbage shape cannot ask for
       terabytes. */
    if (regular && sb.st_size >= 0 && (uint64_t)sb.st_size < pos + nbytes) {
        size_t have = (uint64_t)sb.st_size > pos ? (size_t)sb.st_size - pos : 0;
        LOADFAIL("load_npy: %s: truncated: expected %zu bytes of data, got %zu", path,
                 nbytes, have);
    }

    t = nr_tensor_empty(h.ndim, h.ne);
    if (!t) {
        st = nr_seterror(NR_ENOMEM, "load_npy: %s: %s", path, nr_lasterror());
        goto done;
    }
    float *dst = nr_data(t);
    if (dt.kind == K_FLOAT && dt.size == 4) {
        got = read_full(f, dst, nbytes);
        if (ferror(f)) LOADFAIL("load_npy: %s: read error: %s", path, strerror(errno));
        if (got < nbytes)
            LOADFAIL("load_npy: %s: truncated: expected %zu bytes of data, got %zu", path,
                     nbytes, got);
        if (dt.swap) byteswap((unsigned char *)dst, (size_t)numel, 4);
    } else {
        raw = malloc((size_t)NPY_CHUNK * 8);
        if (!raw) {
            st = nr_seterror(NR_ENOMEM, "load_npy: %s: out of memory", path);
            goto done;
        }
        size_t done_n = 0, total = 0;
        while (done_n < (size_t)numel) {
            size_t n = (size_t)numel - done_n;
            if (n > NPY_CHUNK) n = NPY_CHUNK;
            size_t want = n * (size_t)dt.size;
            got = read_full(f, raw, want);
            total += got;
            if (ferror(f)) LOADFAIL("load_npy: %s: read error: %s", path, strerror(errno));
            if (got < want)
                LOADFAIL("load_npy: %s: truncated: expected %zu bytes of data, got %zu",
                         path, nbytes, total);
            if (dt.swap) byteswap(raw, n, (size_t)dt.size);
            convert(dst + done_n, raw, n, &dt);
            done_n += n;
        }
    }

done:
    if (f) fclose(f);
    free(hbuf);
    free(raw);
    if (st != NR_OK) {
        nr_tensor_release(t);
        return st;
    }
    *out = t;
    return NR_OK;
}

/* --------------------------------------------------------------- save */

/* Writes a C-order '<f4' v1.0 file: magic, version, a little-endian u16
   header length, the dict padded with spaces and ending in '\n' so the data
   starts at a multiple of 64 bytes. */
static int write_npy(FILE *f, const nr_tensor *t) {
    char dict[64 + NR_MAXDIM * 24];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < t->ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, i ? " %lld," : "%lld,",
                      (long long)t->ne[i]);
    if (t->ndim > 1) n--; /* numpy writes (3,) but (2, 3) */
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    size_t total = NPY_MAGIC_LEN + 2 + 2 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    size_t hlen = padded - NPY_MAGIC_LEN - 4;
    unsigned char pre[10];
    memcpy(pre, NPY_MAGIC, NPY_MAGIC_LEN);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hlen & 0xff);
    pre[9] = (unsigned char)(hlen >> 8);
    if (fwrite(pre, 1, 10, f) != 10 || fwrite(dict, 1, (size_t)n, f) != (size_t)n) return 0;
    for (size_t i = (size_t)n; i + 1 < hlen; i++)
        if (fputc(' ', f) == EOF) return 0;
    if (fputc('\n', f) == EOF) return 0;

    int64_t numel = nr_numel(t);
    if (numel == 0) return 1;
    int swap = !host_little_endian();
    if (nr_is_contiguous(t) && !swap)
        return fwrite(nr_data(t), sizeof(float), (size_t)numel, f) == (size_t)numel;
    /* strided walk in row-major order, through a small buffer */
    float buf[4096];
    size_t nb = 0;
    int64_t idx[NR_MAXDIM] = {0};
    int64_t off = 0;
    const float *d = nr_data(t);
    for (int64_t k = 0; k < numel; k++) {
        buf[nb++] = d[off];
        if (nb == sizeof buf / sizeof buf[0] || k == numel - 1) {
            if (swap) byteswap((unsigned char *)buf, nb, 4);
            if (fwrite(buf, sizeof(float), nb, f) != nb) return 0;
            nb = 0;
        }
        for (int i = t->ndim - 1; i >= 0; i--) {
            off += t->st[i];
            if (++idx[i] < t->ne[i]) break;
            off -= t->st[i] * t->ne[i];
            idx[i] = 0;
        }
    }
    return 1;
}

nr_status nr_npy_save(const char *path, const nr_tensor *t) {
    return nr_npy_save_flags(path, t, NR_NPY_SYNC);
}

nr_status nr_npy_save_flags(const char *path, const nr_tensor *t, unsigned flags) {
    if (!path) return nr_seterror(NR_EUSAGE, "save_npy: path is NULL");
    if (!t) return nr_seterror(NR_EUSAGE, "save_npy: tensor is NULL");
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return nr_seterror(NR_ENOMEM, "save_npy: %s: out of memory", path);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    nr_status st = NR_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = nr_seterror(NR_EIO, "save_npy: %s: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    int ok = write_npy(f, t);
    int err = errno;
    if (ok && fflush(f) != 0) { ok = 0; err = errno; }
    if (ok && (flags & NR_NPY_SYNC) && fsync(fileno(f)) != 0 && errno != EINVAL &&
        errno != EROFS) {
        ok = 0;
        err = errno;
    }
    if (fclose(f) != 0 && ok) { ok = 0; err = errno; }
    if (!ok) {
        st = nr_seterror(NR_EIO, "save_npy: %s: write failed: %s", path, strerror(err));
        unlink(tmp);
    } else if (rename(tmp, path) != 0) {
        st = nr_seterror(NR_EIO, "save_npy: %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return st;
}
