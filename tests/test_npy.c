/*
** test_npy.c -- .npy save/load: round trips (contiguous, strided, 0-dim,
** empty), the exact header numpy expects, the other dtypes the loader
** converts, and that every malformed file is NR_EIO with its name in the
** message (never a crash, never a leak of a half-built tensor).
*/
#define _POSIX_C_SOURCE 200809L
#include "nasrt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int passed = 0, failed = 0;

#define CHECK(c, ...)                                              \
    do {                                                           \
        if (c) passed++;                                           \
        else {                                                     \
            failed++;                                              \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c); \
            fprintf(stderr, __VA_ARGS__);                          \
            fputc('\n', stderr);                                   \
        }                                                          \
    } while (0)

static char dir[256];

static const char *tmppath(const char *name) {
    static char buf[8][512];
    static int k = 0;
    char *p = buf[k++ & 7];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    if (n && fwrite(data, 1, n, f) != n) { perror(path); exit(2); }
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

/* Builds a .npy file by hand: version, header dict text, raw data. */
static size_t make_npy(unsigned char *buf, int major, const char *dict, const void *data,
                       size_t nbytes) {
    size_t pre = major == 1 ? 10 : 12;
    size_t dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64;
    size_t hlen = total - pre;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = hlen & 0xff;
    buf[9] = (hlen >> 8) & 0xff;
    if (major != 1) {
        buf[10] = (hlen >> 16) & 0xff;
        buf[11] = (hlen >> 24) & 0xff;
    }
    memcpy(buf + pre, dict, dl);
    memset(buf + pre + dl, ' ', hlen - dl - 1);
    buf[total - 1] = '\n';
    if (nbytes) memcpy(buf + total, data, nbytes);
    return total + nbytes;
}

static int same_values(const nr_tensor *a, const float *want, int64_t n) {
    nr_tensor *c = nr_tensor_clone(a);
    int ok = nr_numel(c) == n;
    for (int64_t i = 0; ok && i < n; i++)
        if (nr_data(c)[i] != want[i]) ok = 0;
    nr_tensor_release(c);
    return ok;
}

/* Loading must fail with NR_EIO, leave out NULL, and name the file and
   contain `what` in the message. */
static void expect_eio(const char *path, const char *what) {
    nr_tensor *t = (nr_tensor *)1;
    nr_status st = nr_npy_load(&t, path);
    CHECK(st == NR_EIO, "%s: status %d (%s)", path, st, st ? nr_lasterror() : "ok");
    CHECK(t == NULL, "%s: out not NULL", path);
    CHECK(strstr(nr_lasterror(), path) != NULL, "message '%s' lacks the path", nr_lasterror());
    if (what)
        CHECK(strstr(nr_lasterror(), what) != NULL, "message '%s' lacks '%s'", nr_lasterror(),
              what);
    if (st == NR_OK) nr_tensor_release(t);
}

static void test_roundtrip(void) {
    int64_t ne[3] = {2, 3, 4};
    nr_tensor *t = nr_tensor_randn(3, ne);
    const char *p = tmppath("rt.npy");
    CHECK(nr_npy_save(p, t) == NR_OK, "%s", nr_lasterror());
    nr_tensor *u = NULL;
    CHECK(nr_npy_load(&u, p) == NR_OK, "%s", nr_lasterror());
    CHECK(u && nr_same_shape(t, u), "shape");
    CHECK(u && memcmp(nr_data(t), nr_data(u), 24 * sizeof(float)) == 0, "data");
    nr_tensor_release(u);

    /* the header is exactly what numpy writes, padded to 64 bytes */
    size_t n;
    unsigned char *b = read_bytes(p, &n);
    CHECK(b && n == 128 + 24 * 4, "file size %zu", n);
    if (b) {
        const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }";
        CHECK(memcmp(b, "\x93NUMPY\x01\x00", 8) == 0, "magic");
        CHECK((b[8] | b[9] << 8) == 118, "header len %d", b[8] | b[9] << 8);
        CHECK(memcmp(b + 10, want, strlen(want)) == 0, "header '%.60s'", (char *)b + 10);
        CHECK(b[127] == '\n' && b[126] == ' ', "padding");
        free(b);
    }
    /* no temp file left behind */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    CHECK(access(tmp, F_OK) != 0, "temp file left: %s", tmp);

    /* strided: a transposed view is written in its logical order */
    nr_tensor *v = nr_alias(t); /* [2,3,4] -> view [4,3,2] by swapping dims 0 and 2 */
    v->ne[0] = 4; v->ne[2] = 2;
    v->st[0] = 1; v->st[2] = 12;
    float want[24];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 2; k++) want[(i * 3 + j) * 2 + k] = nr_data(t)[k * 12 + j * 4 + i];
    p = tmppath("rt_t.npy");
    CHECK(nr_npy_save(p, v) == NR_OK, "%s", nr_lasterror());
    u = NULL;
    CHECK(nr_npy_load(&u, p) == NR_OK, "%s", nr_lasterror());
    CHECK(u && u->ndim == 3 && u->ne[0] == 4 && u->ne[1] == 3 && u->ne[2] == 2, "shape");
    CHECK(u && same_values(u, want, 24), "strided data");
    nr_tensor_release(u);
    nr_tensor_release(v);
    nr_tensor_release(t);

    /* 0-dim, 1-dim, empty */
    t = nr_tensor_full(0, NULL, 3.5f);
    p = tmppath("rt0.npy");
    CHECK(nr_npy_save(p, t) == NR_OK, "%s", nr_lasterror());
    b = read_bytes(p, &n);
    CHECK(b && strstr((char *)b + 10, "'shape': (), }") != NULL, "0-dim header");
    free(b);
    u = NULL;
    CHECK(nr_npy_load(&u, p) == NR_OK && u && u->ndim == 0 && nr_data(u)[0] == 3.5f, "0-dim");
    nr_tensor_release(u);
    nr_tensor_release(t);

    int64_t n1 = 5;
    t = nr_tensor_full(1, &n1, -2.0f);
    p = tmppath("rt1.npy");
    CHECK(nr_npy_save(p, t) == NR_OK, "%s", nr_lasterror());
    b = read_bytes(p, &n);
    CHECK(b && strstr((char *)b + 10, "'shape': (5,), }") != NULL, "1-dim header");
    free(b);
    u = NULL;
    CHECK(nr_npy_load(&u, p) == NR_OK && u && u->ndim == 1 && u->ne[0] == 5 &&
              nr_data(u)[4] == -2.0f, "1-dim");
    nr_tensor_release(u);
    nr_tensor_release(t);

    int64_t ne0[2] = {0, 3};
    t = nr_tensor_empty(2, ne0);
    p = tmppath("rt_empty.npy");
    CHECK(nr_npy_save(p, t) == NR_OK, "%s", nr_lasterror());
    u = NULL;
    CHECK(nr_npy_load(&u, p) == NR_OK && u && u->ndim == 2 && u->ne[0] == 0 && u->ne[1] == 3,
          "empty");
    nr_tensor_release(u);
    nr_tensor_release(t);

    /* saving over an existing file replaces it */
    t = nr_tensor_full(1, &n1, 7.0f);
    p = tmppath("rt1.npy");
    CHECK(nr_npy_save(p, t) == NR_OK, "%s", nr_lasterror());
    u = NULL;
    CHECK(nr_npy_load(&u, p) == NR_OK && u && nr_data(u)[0] == 7.0f, "overwrite");
    nr_tensor_release(u);
    nr_tensor_release(t);

    /* saving into a missing directory is NR_EIO naming the file */
    t = nr_tensor_full(1, &n1, 1.0f);
    p = tmppath("no/such/dir/x.npy");
    CHECK(nr_npy_save(p, t) == NR_EIO && strstr(nr_lasterror(), p), "%s", nr_lasterror());
    nr_tensor_release(t);
}

static void test_dtypes(void) {
    unsigned char buf[1024];
    float want[4] = {1, -2, 3, 100};
    struct { const char *descr; int size; } cases[] = {
        {"<f8", 8}, {"<i8", 8}, {"<i4", 4}, {"<i2", 2}, {"|u1", 1}, {"|i1", 1}, {">f4", 4},
        {"<u2", 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        unsigned char data[64];
        for (int i = 0; i < 4; i++) {
            double v = want[i];
            unsigned char *p = data + i * cases[c].size;
            const char *d = cases[c].descr;
            if (!strcmp(d, "<f8")) memcpy(p, &v, 8);
            else if (!strcmp(d, "<i8")) { int64_t a = (int64_t)v; memcpy(p, &a, 8); }
            else if (!strcmp(d, "<i4")) { int32_t a = (int32_t)v; memcpy(p, &a, 4); }
            else if (!strcmp(d, "<i2")) { int16_t a = (int16_t)v; memcpy(p, &a, 2); }
            else if (!strcmp(d, "|i1")) { int8_t a = (int8_t)v; memcpy(p, &a, 1); }
            else if (!strcmp(d, "|u1")) { p[0] = (unsigned char)(uint8_t)(int)(v < 0 ? 254 : v); }
            else if (!strcmp(d, "<u2")) { uint16_t a = (uint16_t)(v < 0 ? 65534 : v); memcpy(p, &a, 2); }
            else { float f = (float)v; unsigned char q[4]; memcpy(q, &f, 4);
                   p[0] = q[3]; p[1] = q[2]; p[2] = q[1]; p[3] = q[0]; }
        }
        char dict[128];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (2, 2), }",
                 cases[c].descr);
        size_t n = make_npy(buf, 1, dict, data, 4 * (size_t)cases[c].size);
        const char *p = tmppath("dtype.npy");
        write_bytes(p, buf, n);
        nr_tensor *t = NULL;
        nr_status st = nr_npy_load(&t, p);
        CHECK(st == NR_OK, "%s: %s", cases[c].descr, nr_lasterror());
        float w[4] = {1, -2, 3, 100};
        if (cases[c].descr[1] == 'u') w[1] = cases[c].size == 1 ? 254 : 65534;
        CHECK(t && t->ndim == 2 && same_values(t, w, 4), "%s values", cases[c].descr);
        nr_tensor_release(t);
    }

    /* version 2.0 and 3.0 headers, double-quoted keys, odd spacing, no
       trailing comma */
    float f4[3] = {0.5f, 1.5f, -7.25f};
    const char *dicts[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
        "{\"shape\":(3,),\"descr\":\"<f4\",\"fortran_order\":False}",
        "{ 'fortran_order' : False , 'descr' : '<f4' , 'shape' : ( 3 , ) }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }",
    };
    for (int major = 1; major <= 3; major++)
        for (size_t d = 0; d < sizeof dicts / sizeof dicts[0]; d++) {
            size_t n = make_npy(buf, major, dicts[d], f4, sizeof f4);
            const char *p = tmppath("ver.npy");
            write_bytes(p, buf, n);
            nr_tensor *t = NULL;
            CHECK(nr_npy_load(&t, p) == NR_OK, "v%d %s: %s", major, dicts[d], nr_lasterror());
            CHECK(t && t->ndim == 1 && t->ne[0] == 3 && same_values(t, f4, 3), "v%d values",
                  major);
            nr_tensor_release(t);
        }
}

static void test_errors(void) {
    unsigned char buf[4096];
    float data[256] = {0};
    const char *p;

    expect_eio(tmppath("does_not_exist.npy"), "No such file");
    expect_eio(dir, "directory");

    p = tmppath("empty.npy");
    write_bytes(p, "", 0);
    expect_eio(p, "bad magic");

    p = tmppath("garbage.npy");
    write_bytes(p, "hello, this is not numpy at all\n", 32);
    expect_eio(p, "bad magic");

    /* truncated data */
    size_t n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (32, 32), }",
                        data, sizeof data);
    p = tmppath("trunc.npy");
    write_bytes(p, buf, n - 924);
    expect_eio(p, "truncated: expected 4096 bytes of data, got 100");

    /* truncated header */
    p = tmppath("trunc_hdr.npy");
    write_bytes(p, buf, 40);
    expect_eio(p, "truncated header");
    write_bytes(p, buf, 9);
    expect_eio(p, "truncated header");

    /* wrong dtypes */
    const char *bad_dtypes[] = {"<c8", "<f2", "<U10", "|O", "<M8[ns]", "|b2", "|i4", "f4", ""};
    for (size_t i = 0; i < sizeof bad_dtypes / sizeof bad_dtypes[0]; i++) {
        char dict[128];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (4,), }",
                 bad_dtypes[i]);
        n = make_npy(buf, 1, dict, data, 64);
        p = tmppath("dtype_bad.npy");
        write_bytes(p, buf, n);
        expect_eio(p, "unsupported dtype");
    }
    /* structured dtype */
    n = make_npy(buf, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }",
                 data, 64);
    p = tmppath("struct.npy");
    write_bytes(p, buf, n);
    expect_eio(p, "dtype");

    /* fortran order */
    n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", data, 16);
    p = tmppath("fortran.npy");
    write_bytes(p, buf, n);
    expect_eio(p, "fortran_order");

    /* malformed headers */
    const char *bad[] = {
        "{'descr': '<f4', 'fortran_order': False}",              /* no shape */
        "{'descr': '<f4', 'shape': (4,)}",                       /* no fortran_order */
        "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (4,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4,}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': [4]}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
        "['descr', '<f4']",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} extra",
        "{'descr: '<f4'}",
        "{",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = make_npy(buf, 1, bad[i], data, 64);
        p = tmppath("bad_hdr.npy");
        write_bytes(p, buf, n);
        expect_eio(p, "header");
    }

    /* a huge shape in a tiny file is caught before allocating */
    n = make_npy(buf, 1,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }",
                 data, 16);
    p = tmppath("huge.npy");
    write_bytes(p, buf, n);
    expect_eio(p, "truncated");
    n = make_npy(buf, 1,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, 100000000), }",
                 data, 16);
    write_bytes(p, buf, n);
    expect_eio(p, "too large");
    /* no data at all, but strides of 2^80: a bad file (NR_EIO), not an
       out-of-memory error from the tensor allocator */
    n = make_npy(buf, 1,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1099511627776, "
                 "1099511627776), }", data, 0);
    write_bytes(p, buf, n);
    expect_eio(p, "too large");
    /* an empty array with a large but legal other size loads */
    n = make_npy(buf, 1,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1048576, 1048576), }",
                 data, 0);
    write_bytes(p, buf, n);
    {
        nr_tensor *t = NULL;
        CHECK(nr_npy_load(&t, p) == NR_OK && t && nr_numel(t) == 0 && t->ne[2] == 1048576,
              "empty (0, 2^20, 2^20): %s", nr_lasterror());
        nr_tensor_release(t);
    }

    /* unsupported version; header length pointing past the end */
    n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data, 16);
    buf[6] = 4;
    p = tmppath("version.npy");
    write_bytes(p, buf, n);
    expect_eio(p, "version 4.0");
    buf[6] = 1;
    buf[8] = 0xff;
    buf[9] = 0xff;
    write_bytes(p, buf, n);
    expect_eio(p, "truncated header");
    buf[8] = 0;
    buf[9] = 0;
    write_bytes(p, buf, n);
    expect_eio(p, "empty header");
    make_npy(buf, 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data, 16);
    buf[11] = 0x7f;
    write_bytes(p, buf, n);
    expect_eio(p, "large");
    /* NUL inside the header */
    n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data, 16);
    buf[20] = 0;
    write_bytes(p, buf, n);
    expect_eio(p, "non-ASCII");
}

/* Every truncation and many random corruptions of a valid file either load
   or fail with NR_EIO; none crashes (run under ASan/valgrind to be sure). */
static void test_fuzz(void) {
    int64_t ne[2] = {3, 5};
    nr_tensor *t = nr_tensor_randn(2, ne);
    const char *p = tmppath("fuzz_src.npy");
    nr_npy_save(p, t);
    nr_tensor_release(t);
    size_t n;
    unsigned char *orig = read_bytes(p, &n);
    unsigned char *b = malloc(n);
    const char *q = tmppath("fuzz.npy");
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(q, orig, len);
        nr_tensor *u = NULL;
        if (nr_npy_load(&u, q) != NR_EIO || u) bad++;
        nr_tensor_release(u);
    }
    CHECK(bad == 0, "%d truncations did not fail with NR_EIO", bad);
    uint64_t s = 12345;
    bad = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(b, orig, n);
        int k = 1 + (int)(s % 4);
        for (int j = 0; j < k; j++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)(s >> 33) % 128; /* mostly the header */
            b[at] = (unsigned char)(s >> 20);
        }
        write_bytes(q, b, n);
        nr_tensor *u = NULL;
        nr_status st = nr_npy_load(&u, q);
        if (!(st == NR_OK || st == NR_EIO) || (st == NR_OK) != (u != NULL)) bad++;
        if (st == NR_EIO && !strstr(nr_lasterror(), q)) bad++;
        nr_tensor_release(u);
    }
    CHECK(bad == 0, "%d corruptions misbehaved", bad);
    free(b);
    free(orig);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/nasrt_test_npy.%ld", (long)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 2;
    nr_manual_seed(1);
    test_roundtrip();
    test_dtypes();
    test_errors();
    test_fuzz();
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
