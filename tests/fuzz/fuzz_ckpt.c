/*
** fuzz_ckpt.c -- libFuzzer harness for the checkpoint reader
** (runtime/ckpt.c) and nasrt.load (modules/bind_ckpt.c).
**
**   1. nr_ckpt_validate on the raw bytes with the checksum skipped, and a
**      walk that materialises every tensor item (ASan checks its bytes lie
**      inside the input); both must agree.
**   2. The bytes with their trailing CRC recomputed (so the fuzzer's
**      payloads get past the checksum) must read the same with the checksum
**      on, then go through nasrt.load in Lua (tests/fuzz/ckpt.lua), which
**      saves what it loaded and loads it back.
*/
#include "fuzz_lua.h"
#include "ckpt.h"

static nr_status walk(const uint8_t *data, size_t size, int flags) {
    nr_ckpt_reader r;
    nr_status st = nr_ckpt_reader_open(&r, data, size, "fuzz", flags);
    if (st != NR_OK) return st;
    nr_ckpt_item it;
    while (!(r.depth == 0 && r.rem[0] == 0)) {
        if ((st = nr_ckpt_read(&r, &it)) != NR_OK) return st;
        if (it.tag == NR_CKPT_STRING && it.len &&
            ((const uint8_t *)it.s < data || (const uint8_t *)it.s + it.len > data + size))
            FUZZ_BUG("string outside the input");
        if (it.tag == NR_CKPT_TENSOR) {
            nr_tensor *t = nr_ckpt_item_tensor(&it);
            if (!t) FUZZ_BUG("tensor item of %lld floats not materialised: %s",
                             (long long)it.numel, nr_lasterror());
            if (nr_numel(t) != it.numel) FUZZ_BUG("numel differs");
            nr_tensor_release(t);
        }
    }
    return nr_ckpt_reader_end(&r);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_lua_open("ckpt.lua");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nr_status a = nr_ckpt_validate(data, size, "fuzz", NR_CKPT_NOCRC);
    nr_status b = walk(data, size, NR_CKPT_NOCRC);
    if (a != b) FUZZ_BUG("validate says %d, the walk %d", a, b);
    if (size < NR_CKPT_HEADER + NR_CKPT_TRAILER) return 0;
    uint8_t *fixed = malloc(size);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    uint32_t crc = nr_ckpt_crc32(0, fixed, size - NR_CKPT_TRAILER);
    for (int i = 0; i < 4; i++) fixed[size - 4 + i] = (uint8_t)(crc >> (8 * i));
    nr_status c = walk(fixed, size, 0);
    if (c != a) FUZZ_BUG("with a good CRC: %d, without checking it: %d", c, a);
    const char *path = fuzz_file(0, fixed, size);
    free(fixed);
    fuzz_lua_run((const uint8_t *)path, strlen(path));
    return 0;
}
