/*
** test_ckpt.c -- the checkpoint writer/reader of runtime/ckpt.c without Lua:
** exact round trips, the writer's structure checks, atomic file writes, and
** the reader on hostile input: every truncation of a valid buffer (raw, and
** with the header and checksum forged to match), every flipped byte, random
** garbage, random garbage behind a valid header and checksum, and crafted
** lengths that would make a careless reader over-read or over-allocate.
** Garbage is copied into exactly-sized heap blocks so a sanitizer build sees
** any over-read.
*/
#define _POSIX_C_SOURCE 200809L
#include "ckpt.h"
#include "check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A heap copy of exactly n bytes (n == 0: a 1-byte block, never read). */
static unsigned char *dup_exact(const void *p, size_t n) {
    unsigned char *b = malloc(n ? n : 1);
    if (n) memcpy(b, p, n);
    return b;
}

/* Wraps a payload in header + checksum: a file the reader's outer checks
   accept, so the payload parser itself is exercised. */
static unsigned char *seal(const void *payload, size_t plen, size_t *len) {
    *len = NR_CKPT_HEADER + plen + NR_CKPT_TRAILER;
    unsigned char *b = malloc(*len);
    memcpy(b, NR_CKPT_MAGIC, NR_CKPT_MAGIC_LEN);
    put_u32(b + 8, NR_CKPT_VERSION);
    put_u64(b + 12, plen);
    if (plen) memcpy(b + NR_CKPT_HEADER, payload, plen);
    put_u32(b + NR_CKPT_HEADER + plen, nr_ckpt_crc32(0, b, NR_CKPT_HEADER + plen));
    return b;
}

/* Walks a buffer like a loader would, materialising every tensor; returns
   the status.  Any crash or over-read here is a bug in the reader. */
static nr_status walk_all(const void *buf, size_t len, int flags) {
    nr_ckpt_reader r;
    nr_status st = nr_ckpt_reader_open(&r, buf, len, "fuzz", flags);
    if (st != NR_OK) return st;
    nr_ckpt_item it;
    int guard = 0;
    while (!(r.depth == 0 && r.rem[0] == 0)) {
        st = nr_ckpt_read(&r, &it);
        if (st != NR_OK) return st;
        if (it.tag == NR_CKPT_TENSOR) {
            nr_tensor *t = nr_ckpt_item_tensor(&it);
            if (!t) return NR_ENOMEM;
            volatile float sink = 0;
            for (int64_t i = 0; i < nr_numel(t); i++) sink += nr_data(t)[i];
            (void)sink;
            nr_tensor_release(t);
        } else if (it.tag == NR_CKPT_STRING) {
            volatile unsigned char sink = 0;
            for (size_t i = 0; i < it.len; i++) sink ^= (unsigned char)it.s[i];
            (void)sink;
        }
        if (++guard > 10000000) return NR_EUSAGE; /* would be an endless loop */
    }
    return nr_ckpt_reader_end(&r);
}

static int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* The sample document: every kind of value, nested tables, an empty table,
   tensors (0-dim, empty, strided, requires_grad) and a string with NULs. */
static nr_tensor *sample_w, *sample_v, *sample_s;
static unsigned char *make_sample(size_t *len) {
    nr_ckpt_writer w;
    CHECK(nr_ckpt_writer_init_mem(&w) == NR_OK);
    nr_ckpt_put_table(&w, 9);
    nr_ckpt_put_string(&w, "step", 4);   nr_ckpt_put_int(&w, -42);
    nr_ckpt_put_string(&w, "lr", 2);     nr_ckpt_put_float(&w, -0.0);
    nr_ckpt_put_string(&w, "s\0x", 3);   nr_ckpt_put_string(&w, "a\0b", 3);
    nr_ckpt_put_int(&w, 7);              nr_ckpt_put_bool(&w, 1);
    nr_ckpt_put_int(&w, 8);              nr_ckpt_put_bool(&w, 0);
    nr_ckpt_put_string(&w, "empty", 5);  nr_ckpt_put_table(&w, 0);
    nr_ckpt_put_string(&w, "w", 1);      nr_ckpt_put_tensor(&w, sample_w);
    nr_ckpt_put_string(&w, "v", 1);      nr_ckpt_put_tensor(&w, sample_v);
    nr_ckpt_put_string(&w, "sub", 3);
    nr_ckpt_put_table(&w, 2);
    nr_ckpt_put_int(&w, 1);          nr_ckpt_put_float(&w, INFINITY);
    nr_ckpt_put_int(&w, 2);
    nr_ckpt_put_table(&w, 1);
    nr_ckpt_put_string(&w, "z", 1);  nr_ckpt_put_tensor(&w, sample_s);
    void *buf = NULL;
    CHECK(nr_ckpt_writer_finish(&w, &buf, len) == NR_OK);
    return buf;
}

/* ------------------------------------------------------------- tests */

static void test_crc(void) {
    CHECK(nr_ckpt_crc32(0, "123456789", 9) == 0xCBF43926u);
    CHECK(nr_ckpt_crc32(nr_ckpt_crc32(0, "1234", 4), "56789", 5) == 0xCBF43926u);
}

static void test_roundtrip(void) {
    size_t len;
    unsigned char *buf = make_sample(&len);
    CHECK(buf != NULL);
    if (!buf) return;
    CHECK(memcmp(buf, "NASRTCK1", 8) == 0);
    CHECK(nr_ckpt_validate(buf, len, "sample", 0) == NR_OK);
    CHECK(walk_all(buf, len, 0) == NR_OK);

    nr_ckpt_reader r;
    nr_ckpt_item it;
    CHECK(nr_ckpt_reader_open(&r, buf, len, "sample", 0) == NR_OK);
    CHECK(r.version == 1);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_TABLE && it.count == 9);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_STRING && it.is_key &&
          it.len == 4 && memcmp(it.s, "step", 4) == 0);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_INT && !it.is_key && it.i == -42);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_STRING);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_FLOAT && it.f == 0 &&
          signbit(it.f));
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.len == 3 && memcmp(it.s, "s\0x", 3) == 0);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.len == 3 && memcmp(it.s, "a\0b", 3) == 0);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_INT && it.is_key && it.i == 7);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_TRUE);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.i == 8);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_FALSE);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_TABLE && it.count == 0);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK); /* "w" */
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_TENSOR && it.ndim == 2 &&
          it.ne[0] == 3 && it.ne[1] == 2 && it.flags == NR_CKPT_TENSOR_REQUIRES_GRAD);
    nr_tensor *t = nr_ckpt_item_tensor(&it);
    CHECK(t && t->requires_grad && nr_is_contiguous(t));
    if (t) {
        /* sample_w is the transpose of a [2,3] tensor: row-major of the view */
        int ok = 1;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 2; j++) {
                float a = nr_data(t)[i * 2 + j];
                float b = nr_data(sample_w)[i * sample_w->st[0] + j * sample_w->st[1]];
                if (memcmp(&a, &b, 4) != 0) ok = 0;
            }
        CHECK(ok);
    }
    nr_tensor_release(t);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK); /* "v" */
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_TENSOR && it.ndim == 2 &&
          it.ne[0] == 2 && it.ne[1] == 0 && it.numel == 0 && it.flags == 0);
    t = nr_ckpt_item_tensor(&it);
    CHECK(t && nr_numel(t) == 0 && t->ndim == 2);
    nr_tensor_release(t);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK); /* "sub" */
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_TABLE && it.count == 2);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.i == 1);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_FLOAT && isinf(it.f));
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.i == 2);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.count == 1);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.len == 1);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_TENSOR && it.ndim == 0 &&
          it.numel == 1);
    CHECK(r.depth == 0 && r.rem[0] == 0);
    CHECK(nr_ckpt_reader_end(&r) == NR_OK);
    CHECK(nr_ckpt_read(&r, &it) == NR_EUSAGE); /* past the root value */
    free(buf);
}

static void test_writer_misuse(void) {
    nr_ckpt_writer w;
    void *buf;
    size_t len;
    /* value after the root */
    nr_ckpt_writer_init_mem(&w);
    CHECK(nr_ckpt_put_int(&w, 1) == NR_OK);
    CHECK(nr_ckpt_put_int(&w, 2) == NR_EUSAGE);
    CHECK(nr_ckpt_put_int(&w, 3) == NR_EUSAGE); /* sticky */
    CHECK(nr_ckpt_writer_finish(&w, &buf, &len) == NR_EUSAGE && buf == NULL);
    /* keys must be integers or strings */
    nr_ckpt_writer_init_mem(&w);
    nr_ckpt_put_table(&w, 1);
    CHECK(nr_ckpt_put_float(&w, 1.5) == NR_EUSAGE);
    CHECK(contains(nr_lasterror(), "key"));
    nr_ckpt_writer_discard(&w);
    nr_ckpt_writer_init_mem(&w);
    nr_ckpt_put_table(&w, 1);
    CHECK(nr_ckpt_put_table(&w, 0) == NR_EUSAGE);
    nr_ckpt_writer_discard(&w);
    /* incomplete tree */
    nr_ckpt_writer_init_mem(&w);
    nr_ckpt_put_table(&w, 2);
    nr_ckpt_put_int(&w, 1);
    nr_ckpt_put_int(&w, 1);
    CHECK(nr_ckpt_writer_finish(&w, &buf, &len) == NR_EUSAGE);
    CHECK(contains(nr_lasterror(), "incomplete"));
    /* nothing written at all */
    nr_ckpt_writer_init_mem(&w);
    CHECK(nr_ckpt_writer_finish(&w, &buf, &len) == NR_EUSAGE);
    /* depth: NR_CKPT_MAXDEPTH open tables are fine, one more is not */
    nr_ckpt_writer_init_mem(&w);
    int opened = 1;
    for (int d = 0; d < NR_CKPT_MAXDEPTH; d++) {
        if (nr_ckpt_put_table(&w, 1) != NR_OK) opened = 0;
        nr_ckpt_put_int(&w, d);
    }
    CHECK(opened);
    CHECK(nr_ckpt_put_table(&w, 1) == NR_EUSAGE);
    CHECK(contains(nr_lasterror(), "nested deeper"));
    nr_ckpt_writer_discard(&w);
    nr_ckpt_writer_init_mem(&w);
    for (int d = 0; d < NR_CKPT_MAXDEPTH; d++) {
        nr_ckpt_put_table(&w, 1);
        nr_ckpt_put_int(&w, d);
    }
    CHECK(nr_ckpt_put_table(&w, 0) == NR_OK); /* an empty table opens nothing */
    CHECK(nr_ckpt_writer_finish(&w, &buf, &len) == NR_OK);
    CHECK(nr_ckpt_validate(buf, len, "deep", 0) == NR_OK);
    free(buf);
    /* discard twice, finish after discard */
    nr_ckpt_writer_init_mem(&w);
    nr_ckpt_writer_discard(&w);
    nr_ckpt_writer_discard(&w);
    CHECK(nr_ckpt_writer_finish(&w, &buf, &len) == NR_EUSAGE);
}

/* Every prefix of a valid buffer is rejected, and so is every prefix of the
   payload once the header and checksum are forged to match it. */
static void test_truncations(void) {
    size_t len;
    unsigned char *buf = make_sample(&len);
    if (!buf) return;
    int all_rejected = 1, all_named = 1, forged_rejected = 1;
    for (size_t n = 0; n < len; n++) {
        unsigned char *b = dup_exact(buf, n);
        nr_status st = walk_all(b, n, 0);
        if (st != NR_EIO) all_rejected = 0;
        if (!contains(nr_lasterror(), "fuzz")) all_named = 0;
        if (n >= 8 && !contains(nr_lasterror(), "truncated")) all_rejected = 0;
        if (walk_all(b, n, NR_CKPT_NOCRC) != NR_EIO) all_rejected = 0;
        free(b);
    }
    size_t plen = len - NR_CKPT_HEADER - NR_CKPT_TRAILER;
    for (size_t k = 0; k < plen; k++) {
        size_t flen;
        unsigned char *f = seal(buf + NR_CKPT_HEADER, k, &flen);
        unsigned char *b = dup_exact(f, flen);
        nr_status st = walk_all(b, flen, 0);
        if (st != NR_EIO || (k > 0 && !contains(nr_lasterror(), "corrupt checkpoint")))
            forged_rejected = 0;
        free(f);
        free(b);
    }
    CHECK(all_rejected);
    CHECK(all_named);
    CHECK(forged_rejected);
    free(buf);
}

static void test_flips(void) {
    size_t len;
    unsigned char *buf = make_sample(&len);
    if (!buf) return;
    int rejected = 1, crc_msg = 1, forged_ok = 1;
    for (size_t i = 0; i < len; i++)
        for (int bit = 0; bit < 8; bit++) {
            unsigned char *b = dup_exact(buf, len);
            b[i] ^= (unsigned char)(1u << bit);
            if (walk_all(b, len, 0) != NR_EIO) rejected = 0;
            if (i >= NR_CKPT_HEADER && i < len - NR_CKPT_TRAILER &&
                !contains(nr_lasterror(), "checksum mismatch"))
                crc_msg = 0;
            /* the same flip with a valid checksum: parse or clean failure */
            if (i >= NR_CKPT_HEADER && i < len - NR_CKPT_TRAILER) {
                put_u32(b + len - 4, nr_ckpt_crc32(0, b, len - 4));
                nr_status st = walk_all(b, len, 0);
                if (st != NR_OK && st != NR_EIO) forged_ok = 0;
            }
            free(b);
        }
    CHECK(rejected);
    CHECK(crc_msg);
    CHECK(forged_ok);
    free(buf);
}

static void test_header_messages(void) {
    size_t len;
    unsigned char *buf = make_sample(&len);
    if (!buf) return;
    unsigned char *b = dup_exact(buf, len);
    put_u32(b + 8, 7);
    CHECK(nr_ckpt_validate(b, len, "ck", 0) == NR_EIO);
    CHECK(strcmp(nr_lasterror(),
                 "load: ck: checkpoint format version 7 is newer than this nasrt (1)") == 0);
    memcpy(b, "NOTACKPT", 8);
    CHECK(nr_ckpt_validate(b, len, "ck", 0) == NR_EIO);
    CHECK(strcmp(nr_lasterror(), "load: ck: not a nasrt checkpoint") == 0);
    memcpy(b, buf, len);
    b[len - 1] ^= 1;
    CHECK(nr_ckpt_validate(b, len, "ck", 0) == NR_EIO);
    CHECK(strcmp(nr_lasterror(), "load: ck: checksum mismatch: file is corrupt or half-written") == 0);
    CHECK(nr_ckpt_validate(b, len, "ck", NR_CKPT_NOCRC) == NR_OK);
    memcpy(b, buf, len);
    put_u64(b + 12, 0);
    CHECK(nr_ckpt_validate(b, len, "ck", 0) == NR_EIO && contains(nr_lasterror(), "half-written"));
    free(b);
    unsigned char *longer = malloc(len + 3);
    memcpy(longer, buf, len);
    memset(longer + len, 0, 3);
    CHECK(nr_ckpt_validate(longer, len + 3, "ck", 0) == NR_EIO &&
          contains(nr_lasterror(), "unexpected bytes"));
    free(longer);
    CHECK(nr_ckpt_validate(NULL, 0, "ck", 0) == NR_EIO);
    CHECK(nr_ckpt_validate(NULL, 5, "ck", 0) == NR_EUSAGE);
    free(buf);
}

/* Payloads built by hand to hit each bounds check. */
static void test_crafted(void) {
    unsigned char p[64];
    size_t flen;
    unsigned char *f;
#define EXPECT_CORRUPT(n, what)                                                    \
    do {                                                                           \
        f = seal(p, (n), &flen);                                                   \
        CHECK(walk_all(f, flen, 0) == NR_EIO && contains(nr_lasterror(), what));   \
        free(f);                                                                   \
    } while (0)
    /* a string claiming 2^64-1 bytes */
    p[0] = NR_CKPT_STRING; put_u64(p + 1, UINT64_MAX);
    EXPECT_CORRUPT(9, "runs past the end");
    /* a string one byte longer than what is left */
    p[0] = NR_CKPT_STRING; put_u64(p + 1, 4); memcpy(p + 9, "abc", 3);
    EXPECT_CORRUPT(12, "runs past the end");
    /* a table claiming 2^62 pairs (must not be allocated or looped over) */
    p[0] = NR_CKPT_TABLE; put_u64(p + 1, (uint64_t)1 << 62);
    EXPECT_CORRUPT(9, "cannot fit");
    /* a tensor whose shape product overflows 64 bits */
    p[0] = NR_CKPT_TENSOR; p[1] = 4; p[2] = 0;
    for (int i = 0; i < 4; i++) put_u64(p + 3 + 8 * i, (uint64_t)1 << 20);
    EXPECT_CORRUPT(3 + 32, "implausibly large");
    /* a plausible shape whose data is not there */
    p[0] = NR_CKPT_TENSOR; p[1] = 2; p[2] = 0;
    put_u64(p + 3, 1000); put_u64(p + 11, 1000);
    EXPECT_CORRUPT(19, "tensor data runs past");
    /* a huge dim next to a zero dim */
    p[0] = NR_CKPT_TENSOR; p[1] = 2; p[2] = 0;
    put_u64(p + 3, 0); put_u64(p + 11, UINT64_MAX);
    EXPECT_CORRUPT(19, "implausible");
    /* an empty tensor as the very last value: a zero dim after a non-zero
       one, with no bytes left, is fine */
    p[0] = NR_CKPT_TENSOR; p[1] = 3; p[2] = 0;
    put_u64(p + 3, 2); put_u64(p + 11, 0); put_u64(p + 19, 3);
    f = seal(p, 27, &flen);
    CHECK(walk_all(f, flen, 0) == NR_OK);
    free(f);
    {
        nr_tensor *e = nr_tensor_zeros(3, (int64_t[]){2, 0, 3});
        nr_ckpt_writer w;
        nr_ckpt_writer_init_mem(&w);
        nr_ckpt_put_tensor(&w, e);
        void *buf = NULL;
        size_t len = 0;
        CHECK(nr_ckpt_writer_finish(&w, &buf, &len) == NR_OK);
        CHECK(nr_ckpt_validate(buf, len, "empty", 0) == NR_OK);
        free(buf);
        nr_tensor_release(e);
    }
    /* a zero dim next to sizes whose product would overflow strides */
    p[0] = NR_CKPT_TENSOR; p[1] = 3; p[2] = 0;
    put_u64(p + 3, (uint64_t)1 << 30); put_u64(p + 11, (uint64_t)1 << 30); put_u64(p + 19, 0);
    EXPECT_CORRUPT(27, "implausibly large");
    /* 9 dims */
    p[0] = NR_CKPT_TENSOR; p[1] = 9; p[2] = 0;
    EXPECT_CORRUPT(3, "dims");
    /* unknown flags */
    p[0] = NR_CKPT_TENSOR; p[1] = 0; p[2] = 0x80;
    EXPECT_CORRUPT(3 + 4, "flags");
    /* a 0-dim tensor without its 4 data bytes */
    p[0] = NR_CKPT_TENSOR; p[1] = 0; p[2] = 0;
    EXPECT_CORRUPT(3 + 3, "runs past");
    /* unknown tag */
    p[0] = 0x42;
    EXPECT_CORRUPT(1, "unknown value tag 0x42");
    p[0] = 0;
    EXPECT_CORRUPT(1, "unknown value tag 0x00");
    /* a table key that is a float */
    p[0] = NR_CKPT_TABLE; put_u64(p + 1, 1);
    p[9] = NR_CKPT_FLOAT; put_u64(p + 10, 0);
    p[18] = NR_CKPT_TRUE;
    EXPECT_CORRUPT(19, "key is a float");
    /* bytes after the root value */
    p[0] = NR_CKPT_TRUE; p[1] = NR_CKPT_FALSE;
    EXPECT_CORRUPT(2, "left after the root value");
    /* a table whose pairs stop early: {[1] = <20-byte string>, [2] = ?} */
    p[0] = NR_CKPT_TABLE; put_u64(p + 1, 2);
    p[9] = NR_CKPT_INT; put_u64(p + 10, 1);
    p[18] = NR_CKPT_STRING; put_u64(p + 19, 20); memset(p + 27, 'x', 20);
    p[47] = NR_CKPT_INT; put_u64(p + 48, 2);
    EXPECT_CORRUPT(56, "ends before");
    /* the same table complete is fine */
    p[56] = NR_CKPT_FALSE;
    f = seal(p, 57, &flen);
    CHECK(walk_all(f, flen, 0) == NR_OK);
    free(f);
#undef EXPECT_CORRUPT

    /* nesting deeper than the limit: {[1]={[1]=...}} 201 levels */
    size_t depth = NR_CKPT_MAXDEPTH + 1, n = depth * 18 + 1;
    unsigned char *deep = malloc(n);
    for (size_t d = 0; d < depth; d++) {
        deep[d * 18] = NR_CKPT_TABLE;
        put_u64(deep + d * 18 + 1, 1);
        deep[d * 18 + 9] = NR_CKPT_INT;
        put_u64(deep + d * 18 + 10, 1);
    }
    deep[n - 1] = NR_CKPT_TRUE;
    f = seal(deep, n, &flen);
    CHECK(walk_all(f, flen, 0) == NR_EIO && contains(nr_lasterror(), "nested deeper"));
    free(f);
    /* one level less is accepted */
    f = seal(deep + 18, n - 18, &flen);
    CHECK(walk_all(f, flen, 0) == NR_OK);
    free(f);
    free(deep);
}

static void test_random_garbage(void) {
    int bad_status = 0;
    unsigned char tmp[600];
    for (int iter = 0; iter < 100000; iter++) {
        size_t n = (size_t)(rnd() % 300);
        for (size_t i = 0; i < n; i++) tmp[i] = (unsigned char)rnd();
        /* plain garbage, garbage after the magic, and a sealed random payload
           biased towards valid tags so the parser gets deep */
        if (iter % 3 == 1 && n >= 8) memcpy(tmp, NR_CKPT_MAGIC, 8);
        unsigned char *b;
        size_t blen = n;
        if (iter % 3 == 2) {
            for (size_t i = 0; i < n; i++)
                if (rnd() % 2) tmp[i] = (unsigned char)(1 + rnd() % 7);
                else if (rnd() % 2) tmp[i] = 0;
            b = seal(tmp, n, &blen);
        } else {
            b = dup_exact(tmp, n);
        }
        nr_status st = walk_all(b, blen, 0);
        if (st != NR_OK && st != NR_EIO) bad_status++;
        st = walk_all(b, blen, NR_CKPT_NOCRC);
        if (st != NR_OK && st != NR_EIO) bad_status++;
        free(b);
    }
    CHECK(bad_status == 0);
}

static void test_files(void) {
    char dir[] = "/tmp/nasrt_ckpt_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp failed");
        return;
    }
    char path[256], tmp[300];
    snprintf(path, sizeof path, "%s/a.ckpt", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());

    /* a stale temp file of ours, read-only even */
    FILE *f = fopen(tmp, "wb");
    fputs("stale", f);
    fclose(f);
    chmod(tmp, 0444);

    nr_ckpt_writer w;
    CHECK(nr_ckpt_writer_init_file(&w, path) == NR_OK);
    nr_tensor *big = nr_tensor_randn(2, (int64_t[]){1024, 600}); /* > the write buffer */
    nr_ckpt_put_table(&w, 2);
    nr_ckpt_put_string(&w, "big", 3);
    nr_ckpt_put_tensor(&w, big);
    nr_ckpt_put_string(&w, "n", 1);
    nr_ckpt_put_int(&w, 5);
    CHECK(access(path, F_OK) != 0); /* nothing at the target before finish */
    CHECK(nr_ckpt_writer_finish(&w, NULL, NULL) == NR_OK);
    CHECK(access(tmp, F_OK) != 0);

    void *buf = NULL;
    size_t len = 0;
    CHECK(nr_ckpt_read_file(path, &buf, &len) == NR_OK);
    CHECK(nr_ckpt_validate(buf, len, path, 0) == NR_OK);
    nr_ckpt_reader r;
    nr_ckpt_item it;
    CHECK(nr_ckpt_reader_open(&r, buf, len, path, 0) == NR_OK);
    nr_ckpt_read(&r, &it);
    nr_ckpt_read(&r, &it);
    CHECK(nr_ckpt_read(&r, &it) == NR_OK && it.tag == NR_CKPT_TENSOR);
    nr_tensor *t = nr_ckpt_item_tensor(&it);
    CHECK(t && memcmp(nr_data(t), nr_data(big), 1024 * 600 * 4) == 0);
    nr_tensor_release(t);
    free(buf);

    /* the same document in memory gives the same bytes */
    nr_ckpt_writer_init_mem(&w);
    nr_ckpt_put_table(&w, 2);
    nr_ckpt_put_string(&w, "big", 3);
    nr_ckpt_put_tensor(&w, big);
    nr_ckpt_put_string(&w, "n", 1);
    nr_ckpt_put_int(&w, 5);
    void *mem = NULL;
    size_t mlen = 0;
    CHECK(nr_ckpt_writer_finish(&w, &mem, &mlen) == NR_OK);
    CHECK(nr_ckpt_read_file(path, &buf, &len) == NR_OK);
    CHECK(len == mlen && memcmp(buf, mem, len) == 0);
    free(buf);
    free(mem);

    /* a discarded save keeps the old file and removes its temp file */
    CHECK(nr_ckpt_writer_init_file(&w, path) == NR_OK);
    nr_ckpt_put_table(&w, 1);
    nr_ckpt_put_string(&w, "x", 1);
    CHECK(access(tmp, F_OK) == 0);
    nr_ckpt_writer_discard(&w);
    CHECK(access(tmp, F_OK) != 0);
    CHECK(nr_ckpt_read_file(path, &buf, &len) == NR_OK);
    CHECK(nr_ckpt_validate(buf, len, path, 0) == NR_OK);
    free(buf);
    /* an incomplete tree is not committed either */
    CHECK(nr_ckpt_writer_init_file(&w, path) == NR_OK);
    nr_ckpt_put_table(&w, 1);
    CHECK(nr_ckpt_writer_finish(&w, NULL, NULL) == NR_EUSAGE);
    CHECK(access(tmp, F_OK) != 0);

    /* missing file and folder; an uncreatable temp file */
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope.ckpt", dir);
    CHECK(nr_ckpt_read_file(missing, &buf, &len) == NR_EIO && contains(nr_lasterror(), missing));
    CHECK(nr_ckpt_read_file(dir, &buf, &len) == NR_EIO &&
          contains(nr_lasterror(), "is a directory"));
    snprintf(missing, sizeof missing, "%s/no/such/x.ckpt", dir);
    CHECK(nr_ckpt_writer_init_file(&w, missing) == NR_EIO && contains(nr_lasterror(), missing));
    nr_ckpt_writer_discard(&w); /* harmless after a failed init */

    nr_tensor_release(big);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    nr_runtime_init(1);
    nr_manual_seed(3);
    nr_tensor *base = nr_tensor_randn(2, (int64_t[]){2, 3});
    nr_data(base)[0] = -0.0f;
    nr_data(base)[1] = INFINITY;
    nr_transpose(&sample_w, base, 0, 1);
    sample_w->requires_grad = 1;
    sample_v = nr_tensor_zeros(2, (int64_t[]){2, 0});
    sample_s = nr_tensor_full(0, NULL, -2.5f);

    test_crc();
    test_roundtrip();
    test_writer_misuse();
    test_truncations();
    test_flips();
    test_header_messages();
    test_crafted();
    test_random_garbage();
    test_files();

    nr_tensor_release(sample_w);
    nr_tensor_release(sample_v);
    nr_tensor_release(sample_s);
    nr_tensor_release(base);
    DONE();
}
