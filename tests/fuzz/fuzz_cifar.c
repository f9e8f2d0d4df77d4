/*
** fuzz_cifar.c -- libFuzzer harness for the CIFAR-10/100 binary readers
** (runtime/data.c, nr_cifar_load): the input becomes test_batch.bin
** (CIFAR-10) and test.bin (CIFAR-100) of a scratch folder, plain and
** gzipped.  A loaded dataset must have n = size / record size images, every
** label below its class count, and pixels equal to the records' bytes.
*/
#include "fuzz.h"
#include "data.h"

static void load(int variant, const uint8_t *plain, size_t n) {
    nr_dataset *ds = NULL;
    nr_status st = nr_cifar_load(&ds, fuzz_dir(), variant, 0);
    if (st != NR_OK) {
        if (ds) FUZZ_BUG("failed load returned a dataset");
        if (!nr_lasterror()[0]) FUZZ_BUG("failed load without a message");
        return;
    }
    size_t rec = variant == 100 ? 3074 : 3073, nlab = rec - 3072;
    if (ds->c != 3 || ds->h != 32 || ds->w != 32 || ds->classes != variant)
        FUZZ_BUG("dataset %dx%dx%d, %d classes", ds->c, ds->h, ds->w, ds->classes);
    for (int64_t i = 0; i < ds->n; i++) {
        if (ds->labels[i] >= ds->classes) FUZZ_BUG("label %d", ds->labels[i]);
        if (plain) {
            const uint8_t *r = plain + (size_t)i * rec;
            if (r[nlab - 1] != ds->labels[i] || memcmp(r + nlab, ds->pixels + (size_t)i * 3072, 3072))
                FUZZ_BUG("record %lld differs from the file", (long long)i);
        }
    }
    if (plain && (size_t)ds->n * rec != n) FUZZ_BUG("%lld records from %zu bytes", (long long)ds->n, n);
    nr_dataset_release(ds);
}

static void both(const char *path, const uint8_t *plain, size_t n) {
    fuzz_dir_link("test_batch.bin", path);
    fuzz_dir_link("test.bin", path);
    load(10, plain, n);
    load(100, plain, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int is_gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    both(fuzz_file(0, data, size), is_gz ? NULL : data, size);
    size_t gn;
    unsigned char *gz = fuzz_gzip(data, size, &gn);
    const char *path = fuzz_file(0, gz, gn);
    free(gz);
    both(path, is_gz ? NULL : data, size);
    return 0;
}
