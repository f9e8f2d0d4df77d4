/*
** fuzz_npy.c -- libFuzzer harness for the .npy reader (runtime/npy.c,
** nr_npy_load).  A loaded tensor must be contiguous with a sane shape and
** every float readable; small ones are saved again and must load back
** bit-identical (save writes '<f4', so the round trip is exact).
*/
#include "fuzz.h"
#include "nasrt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nr_tensor *t = NULL;
    nr_status st = nr_npy_load(&t, fuzz_file(0, data, size));
    if (st != NR_OK) {
        if (t) FUZZ_BUG("failed load returned a tensor");
        if (!nr_lasterror()[0]) FUZZ_BUG("failed load without a message");
        return 0;
    }
    int64_t numel = nr_numel(t);
    if (!nr_is_contiguous(t) || numel < 0 || (size_t)numel > size)
        FUZZ_BUG("loaded numel %lld from %zu bytes", (long long)numel, size);
    const float *d = nr_data(t);
    unsigned bits = 0;
    for (int64_t i = 0; i < numel; i++) {
        unsigned u;
        memcpy(&u, d + i, 4);
        bits ^= u;
    }
    (void)bits;
    if (numel <= 4096) {
        char path[128];
        snprintf(path, sizeof path, "%s/t.npy", fuzz_dir());
        if (nr_npy_save(path, t) != NR_OK) FUZZ_BUG("save failed: %s", nr_lasterror());
        nr_tensor *u = NULL;
        if (nr_npy_load(&u, path) != NR_OK) FUZZ_BUG("reload failed: %s", nr_lasterror());
        if (u->ndim != t->ndim || memcmp(u->ne, t->ne, sizeof(int64_t) * (size_t)t->ndim) ||
            memcmp(nr_data(u), d, (size_t)numel * 4))
            FUZZ_BUG("round trip differs");
        nr_tensor_release(u);
        unlink(path);
    }
    nr_tensor_release(t);
    return 0;
}
