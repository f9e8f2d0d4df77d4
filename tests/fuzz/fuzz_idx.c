/*
** fuzz_idx.c -- libFuzzer harness for the IDX reader (runtime/data.c,
** nr_idx_read): the input is read as a label file (1 dim) and as an image
** file (3 dims), once as plain bytes and once gzipped.  A successful read
** must hold exactly the declared bytes (every byte is touched, so ASan sees
** a short buffer) and its dims must multiply to the payload size.
*/
#include "fuzz.h"
#include "data.h"

static void read_as(const char *path, int ndim, size_t n) {
    int64_t dims[3] = {-1, -1, -1};
    uint8_t *buf = NULL;
    nr_status st = nr_idx_read("fuzz", path, ndim, ndim == 1 ? "labels" : "pixels", dims, &buf);
    if (st != NR_OK) {
        if (buf) FUZZ_BUG("failed read left a buffer");
        if (!nr_lasterror()[0]) FUZZ_BUG("failed read without a message");
        return;
    }
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) FUZZ_BUG("dim %d = %lld", i, (long long)dims[i]);
        total *= (uint64_t)dims[i];
    }
    /* plain input: header + payload is the whole file */
    if (n && total + 4 + 4 * (uint64_t)ndim != n) FUZZ_BUG("payload %llu in a %zu-byte file",
                                                          (unsigned long long)total, n);
    unsigned sum = 0;
    for (uint64_t i = 0; i < total; i++) sum += buf[i];
    (void)sum;
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(0, data, size);
    /* a plain file: the size check above applies (unless it is gzip itself) */
    size_t plain = size >= 2 && data[0] == 0x1f && data[1] == 0x8b ? 0 : size;
    read_as(path, 1, plain);
    read_as(path, 3, plain);
    size_t gn;
    unsigned char *gz = fuzz_gzip(data, size, &gn);
    path = fuzz_file(0, gz, gn);
    free(gz);
    read_as(path, 1, 0);
    read_as(path, 3, 0);
    return 0;
}
