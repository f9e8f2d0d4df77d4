/* test_data.c -- the IDX / CIFAR readers on synthetic good and bad files
   (plain and gzip, the gzip written by hand with stored deflate blocks so
   the test needs no zlib), and the loader's determinism and prefetch. */
#define _DEFAULT_SOURCE
#include "check.h"
#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

static void put32le(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put32be(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static const char *path_of(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static void write_file(const char *name, const uint8_t *p, size_t n) {
    FILE *f = fopen(path_of(name), "wb");
    if (!f) {
        perror(name);
        exit(2);
    }
    fwrite(p, 1, n, f);
    fclose(f);
}

/* gzip of p[0..n) with stored blocks; cut drops that many bytes from the
   end, garbage appends bytes after the stream, badcrc flips the CRC. */
static void write_gz(const char *name, const uint8_t *p, size_t n, size_t cut, int garbage,
                     int badcrc) {
    size_t cap = 64 + n + (n / 65535 + 1) * 5;
    uint8_t *g = malloc(cap);
    size_t k = 0;
    const uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    memcpy(g, hdr, 10);
    k = 10;
    size_t off = 0;
    do {
        size_t len = n - off > 65535 ? 65535 : n - off;
        g[k++] = off + len == n ? 1 : 0;
        g[k++] = (uint8_t)len;
        g[k++] = (uint8_t)(len >> 8);
        g[k++] = (uint8_t)~len;
        g[k++] = (uint8_t)(~len >> 8);
        memcpy(g + k, p + off, len);
        k += len;
        off += len;
    } while (off < n);
    put32le(g + k, crc32_of(p, n) ^ (badcrc ? 1u : 0u));
    put32le(g + k + 4, (uint32_t)n);
    k += 8;
    if (garbage) {
        memcpy(g + k, "junk", 4);
        k += 4;
    }
    write_file(name, g, k - cut);
    free(g);
}

/* An IDX file in memory: magic 0x0803 (3 dims n,28,28) or 0x0801 (n). */
static uint8_t *idx_images(int n, size_t *len) {
    *len = 16 + (size_t)n * 784;
    uint8_t *p = malloc(*len);
    put32be(p, 0x803);
    put32be(p + 4, (uint32_t)n);
    put32be(p + 8, 28);
    put32be(p + 12, 28);
    for (size_t i = 16; i < *len; i++) p[i] = (uint8_t)(i * 7);
    return p;
}

static uint8_t *idx_labels(int n, size_t *len) {
    *len = 8 + (size_t)n;
    uint8_t *p = malloc(*len);
    put32be(p, 0x801);
    put32be(p + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) p[8 + i] = (uint8_t)(i % 10);
    return p;
}

static int has(const char *s) { return strstr(nr_lasterror(), s) != NULL; }

#define EXPECT_FAIL(call, text)                                                       \
    do {                                                                              \
        nr_status st_ = (call);                                                       \
        CHECK(st_ == NR_EIO);                                                         \
        if (!has(text)) {                                                             \
            fprintf(stderr, "  message: %s\n  (wanted '%s')\n", nr_lasterror(), text); \
            CHECK(0);                                                                 \
        } else check_pass++;                                                          \
    } while (0)

static void test_idx(void) {
    size_t n;
    uint8_t *lab = idx_labels(5, &n), *data = NULL;
    int64_t dims[3];

    write_file("l.idx", lab, n);
    CHECK(nr_idx_read("t", path_of("l.idx"), 1, "labels", dims, &data) == NR_OK);
    CHECK(dims[0] == 5 && data && data[4] == 4);
    free(data);
    data = NULL;

    write_gz("l.gz", lab, n, 0, 0, 0);
    CHECK(nr_idx_read("t", path_of("l.gz"), 1, "labels", dims, &data) == NR_OK);
    CHECK(dims[0] == 5 && data && data[3] == 3);
    free(data);
    data = NULL;

    /* truncated payload, plain and gzip */
    write_file("trunc.idx", lab, n - 2);
    EXPECT_FAIL(nr_idx_read("t", path_of("trunc.idx"), 1, "labels", dims, &data),
                "trunc.idx: truncated: expected 5 bytes of labels, got 3");
    write_gz("trunc.gz", lab, n - 2, 0, 0, 0);
    EXPECT_FAIL(nr_idx_read("t", path_of("trunc.gz"), 1, "labels", dims, &data),
                "truncated: expected 5 bytes of labels, got 3");
    /* the gzip file itself cut short */
    write_gz("cut.gz", lab, n, 11, 0, 0);
    EXPECT_FAIL(nr_idx_read("t", path_of("cut.gz"), 1, "labels", dims, &data), "cut.gz: truncated");
    write_gz("cut2.gz", lab, n, 4, 0, 0); /* payload complete, trailer cut */
    EXPECT_FAIL(nr_idx_read("t", path_of("cut2.gz"), 1, "labels", dims, &data),
                "truncated gzip stream");
    /* header too short */
    write_file("short.idx", lab, 6);
    EXPECT_FAIL(nr_idx_read("t", path_of("short.idx"), 1, "labels", dims, &data),
                "truncated: expected a 8-byte IDX header, got 6");
    /* trailing data, plain and gzip */
    uint8_t *big = malloc(n + 3);
    memcpy(big, lab, n);
    memset(big + n, 9, 3);
    write_file("long.idx", big, n + 3);
    EXPECT_FAIL(nr_idx_read("t", path_of("long.idx"), 1, "labels", dims, &data),
                "trailing data: 3 bytes after the declared 5 bytes of labels");
    write_gz("long.gz", big, n + 3, 0, 0, 0);
    EXPECT_FAIL(nr_idx_read("t", path_of("long.gz"), 1, "labels", dims, &data), "trailing data: 3 bytes");
    free(big);
    /* garbage after the gzip stream, bad CRC */
    write_gz("garb.gz", lab, n, 0, 1, 0);
    EXPECT_FAIL(nr_idx_read("t", path_of("garb.gz"), 1, "labels", dims, &data),
                "4 bytes of trailing garbage after the gzip stream");
    write_gz("crc.gz", lab, n, 0, 0, 1);
    EXPECT_FAIL(nr_idx_read("t", path_of("crc.gz"), 1, "labels", dims, &data), "corrupt gzip data");
    /* wrong magic: an image file read as labels, and junk */
    size_t ni;
    uint8_t *img = idx_images(2, &ni);
    write_file("img.idx", img, ni);
    EXPECT_FAIL(nr_idx_read("t", path_of("img.idx"), 1, "labels", dims, &data),
                "bad magic 0x00000803, expected 0x00000801");
    CHECK(nr_idx_read("t", path_of("img.idx"), 3, "pixels", dims, &data) == NR_OK);
    CHECK(dims[0] == 2 && dims[1] == 28 && dims[2] == 28 && data[783] == (uint8_t)((16 + 783) * 7));
    free(data);
    data = NULL;
    write_file("junk.idx", (const uint8_t *)"hello world!", 12);
    EXPECT_FAIL(nr_idx_read("t", path_of("junk.idx"), 1, "labels", dims, &data), "not an IDX file");
    /* a header declaring 2^32-1 images must fail as truncated, not allocate */
    put32be(img + 4, 0x10000000u);
    write_file("huge.idx", img, ni);
    EXPECT_FAIL(nr_idx_read("t", path_of("huge.idx"), 3, "pixels", dims, &data),
                "truncated: expected 210453397504 bytes of pixels, got 1568");
    put32be(img + 4, 0xffffffffu);
    write_file("huge.idx", img, ni);
    EXPECT_FAIL(nr_idx_read("t", path_of("huge.idx"), 3, "pixels", dims, &data), "absurd size");
    /* missing file */
    EXPECT_FAIL(nr_idx_read("t", path_of("nope.idx"), 1, "labels", dims, &data), "nope.idx: cannot open");
    CHECK(data == NULL);
    free(img);
    free(lab);
}

static void test_fashion(void) {
    size_t ni, nl;
    uint8_t *img = idx_images(3, &ni), *lab = idx_labels(3, &nl);
    nr_dataset *ds = NULL;
    write_gz("train-images-idx3-ubyte.gz", img, ni, 0, 0, 0);
    write_file("train-labels-idx1-ubyte", lab, nl); /* plain, no .gz: accepted */
    CHECK(nr_fashion_mnist_load(&ds, dir, 1) == NR_OK);
    CHECK(ds && ds->n == 3 && ds->c == 1 && ds->h == 28 && ds->classes == 10);
    CHECK(ds && ds->labels[2] == 2 && ds->pixels[784] == img[16 + 784]);
    nr_dataset_release(ds);

    lab[8 + 1] = 10;
    write_file("train-labels-idx1-ubyte", lab, nl);
    EXPECT_FAIL(nr_fashion_mnist_load(&ds, dir, 1),
                "train-labels-idx1-ubyte: label 10 at index 1 is out of range 0..9");
    free(lab);
    lab = idx_labels(4, &nl);
    write_file("train-labels-idx1-ubyte", lab, nl);
    EXPECT_FAIL(nr_fashion_mnist_load(&ds, dir, 1), "4 labels, but");
    CHECK(has("train-images-idx3-ubyte.gz has 3 images"));
    EXPECT_FAIL(nr_fashion_mnist_load(&ds, dir, 0), "t10k-labels-idx1-ubyte.gz: cannot open");
    CHECK(ds == NULL);
    free(img);
    free(lab);
}

static void test_cifar(void) {
    /* 2 records per batch file: label (b + r) % 10, pixels patterned */
    uint8_t rec[2 * 3073];
    char name[64];
    for (int b = 1; b <= 5; b++) {
        for (int r = 0; r < 2; r++) {
            rec[r * 3073] = (uint8_t)((b + r) % 10);
            for (int k = 0; k < 3072; k++) rec[r * 3073 + 1 + k] = (uint8_t)(k + b + r);
        }
        snprintf(name, sizeof name, "data_batch_%d.bin", b);
        write_file(name, rec, sizeof rec);
    }
    nr_dataset *ds = NULL;
    CHECK(nr_cifar_load(&ds, dir, 10, 1) == NR_OK);
    CHECK(ds && ds->n == 10 && ds->c == 3 && ds->h == 32 && ds->w == 32 && ds->classes == 10);
    CHECK(ds && ds->labels[0] == 1 && ds->labels[9] == 6);
    CHECK(ds && ds->pixels[9 * 3072 + 1024] == (uint8_t)(1024 + 5 + 1));
    nr_dataset_release(ds);
    EXPECT_FAIL(nr_cifar_load(&ds, dir, 10, 0), "test_batch.bin: cannot open");
    write_file("data_batch_3.bin", rec, sizeof rec - 5);
    EXPECT_FAIL(nr_cifar_load(&ds, dir, 10, 1), "data_batch_3.bin: size 6141 is not a whole number");
    rec[3073] = 10;
    write_file("data_batch_3.bin", rec, sizeof rec);
    EXPECT_FAIL(nr_cifar_load(&ds, dir, 10, 1), "data_batch_3.bin: label 10 of record 1 is out of range");
    /* CIFAR-100: coarse + fine */
    uint8_t r100[3 * 3074];
    for (int r = 0; r < 3; r++) {
        r100[r * 3074] = (uint8_t)r;
        r100[r * 3074 + 1] = (uint8_t)(98 + r);
        memset(r100 + r * 3074 + 2, r, 3072);
    }
    write_file("test.bin", r100, sizeof r100);
    EXPECT_FAIL(nr_cifar_load(&ds, dir, 100, 0), "label 100 of record 2 is out of range 0..99");
    r100[2 * 3074 + 1] = 42;
    write_file("test.bin", r100, sizeof r100);
    CHECK(nr_cifar_load(&ds, dir, 100, 0) == NR_OK);
    CHECK(ds && ds->n == 3 && ds->classes == 100 && ds->labels[1] == 99 && ds->labels[2] == 42);
    CHECK(ds && ds->pixels[2 * 3072 + 5] == 2);
    nr_dataset_release(ds);
}

static int same(const nr_tensor *a, const nr_tensor *b) {
    return nr_same_shape(a, b) &&
           memcmp(nr_data(a), nr_data(b), (size_t)nr_numel(a) * sizeof(float)) == 0;
}

static void test_loader(void) {
    nr_dataset *ds = nr_dataset_new("synthetic", "train", 50, 1, 4, 4, 10);
    for (int i = 0; i < 50; i++) {
        ds->labels[i] = (uint8_t)(i % 10);
        for (int k = 0; k < 16; k++) ds->pixels[i * 16 + k] = (uint8_t)(i * 5 + k);
    }
    nr_loader_opts o = {.batch_size = 8, .shuffle = 1, .seed = 7, .prefetch = 3};
    o.aug.padding = 1;
    o.aug.flip_p = 0.5;
    o.aug.cutout = 2;
    nr_loader *l = NULL, *s = NULL;
    CHECK(nr_loader_new(&l, ds, NULL, 50, &o) == NR_OK);
    o.prefetch = 0;
    CHECK(nr_loader_new(&s, ds, NULL, 50, &o) == NR_OK);
    CHECK(nr_loader_len(l) == 7);
    /* prefetched == synchronous == the reference, over two epochs and a jump */
    int ok = 1, count = 0, labels_seen[10] = {0};
    for (int e = 3; e <= 4; e++) {
        nr_loader_set_state(l, e, 0);
        nr_loader_set_state(s, e, 0);
        nr_tensor *x, *y, *x2, *y2, *xr, *yr;
        for (int64_t b = 0;; b++) {
            CHECK(nr_loader_next(l, &x, &y) == NR_OK);
            CHECK(nr_loader_next(s, &x2, &y2) == NR_OK);
            if (!x) {
                ok &= x2 == NULL;
                break;
            }
            nr_loader_batch(l, e, b, &xr, &yr);
            ok &= same(x, x2) && same(y, y2) && same(x, xr) && same(y, yr);
            ok &= x->ne[0] == (b == 6 ? 2 : 8);
            if (e == 3) {
                count += (int)y->ne[0];
                for (int k = 0; k < y->ne[0]; k++) labels_seen[(int)nr_data(y)[k]]++;
            }
            nr_tensor_release(x);
            nr_tensor_release(y);
            nr_tensor_release(x2);
            nr_tensor_release(y2);
            nr_tensor_release(xr);
            nr_tensor_release(yr);
            if (e == 4 && b == 2) { /* jump back, then continue: still exact */
                nr_loader_set_state(l, 3, 5);
                nr_loader_set_state(s, 3, 5);
                CHECK(nr_loader_next(l, &x, &y) == NR_OK && nr_loader_next(s, &x2, &y2) == NR_OK);
                ok &= same(x, x2);
                nr_tensor_release(x);
                nr_tensor_release(y);
                nr_tensor_release(x2);
                nr_tensor_release(y2);
                nr_loader_set_state(l, 4, 3);
                nr_loader_set_state(s, 4, 3);
            }
        }
    }
    CHECK(ok);
    CHECK(count == 50);
    for (int c = 0; c < 10; c++) CHECK(labels_seen[c] == 5);
    int64_t e, p;
    nr_loader_state(l, &e, &p);
    CHECK(e == 4 && p == 7);
    nr_loader_free(l);
    nr_loader_free(s);

    /* augment_image: flip forced, crop off, cutout */
    nr_augment a = {.flip_p = 1.0};
    float lut[256], dst[16];
    for (int v = 0; v < 256; v++) lut[v] = (float)v;
    uint8_t src[16];
    for (int k = 0; k < 16; k++) src[k] = (uint8_t)k;
    nr_rng r;
    nr_rng_seed(&r, 1);
    nr_augment_image(&a, lut, src, dst, 1, 4, 4, &r);
    CHECK(dst[0] == 3 && dst[3] == 0 && dst[4] == 7 && dst[15] == 12);
    a.flip_p = 0;
    a.cutout = 8; /* covers the whole 4x4 image wherever the centre is */
    nr_augment_image(&a, lut, src, dst, 1, 4, 4, &r);
    int zeros = 0;
    for (int k = 0; k < 16; k++) zeros += dst[k] == 0;
    CHECK(zeros == 16);
    nr_dataset_release(ds);

    /* bad options */
    nr_loader_opts bad = {.batch_size = 0};
    nr_dataset *d2 = nr_dataset_new("s", "train", 4, 1, 2, 2, 10);
    CHECK(nr_loader_new(&l, d2, NULL, 4, &bad) == NR_EUSAGE && l == NULL);
    int64_t idx[2] = {1, 9};
    bad.batch_size = 2;
    CHECK(nr_loader_new(&l, d2, idx, 2, &bad) == NR_EUSAGE && has("index 9 out of range"));
    nr_dataset_release(d2);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/nasrt_test_data_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_idx();
    test_fashion();
    test_cifar();
    test_loader();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    DONE();
}
