/*
** fuzz_json.c -- libFuzzer harness for JSON as nasrt reads it: the run
** folder's files through recipe.decode (dkjson) and train.lua's arch.json
** reader.  The checks live in the driver, tests/fuzz/json.lua.
*/
#include "fuzz_lua.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_lua_open("json.lua");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_lua_run(data, size);
    return 0;
}
