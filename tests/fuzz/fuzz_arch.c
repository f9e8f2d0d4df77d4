/*
** fuzz_arch.c -- libFuzzer harness for the architecture text parsers, all
** written in Lua: DARTS genotype text (supernet.genotype_from_string),
** NAS-Bench-201 arch strings (bench.parse_nb201) and train.lua's --arch
** reader.  The checks live in the driver, tests/fuzz/arch.lua.
*/
#include "fuzz_lua.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_lua_open("arch.lua");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_lua_run(data, size);
    return 0;
}
