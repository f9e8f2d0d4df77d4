/*
** fuzz.h -- what the libFuzzer harnesses share: the fuzz input as a file the
** readers can open by path (a memfd, so nothing touches the disk), as a gzip
** stream (so the inflate path sees well-formed streams of arbitrary content),
** a scratch folder, and FUZZ_BUG, the abort that turns a broken invariant
** into a finding.
**
** Every harness is one translation unit that includes this header; the
** helpers are static so each harness links on its own.
*/
#ifndef NASRT_FUZZ_H
#define NASRT_FUZZ_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create, mkdtemp */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

/* A broken invariant: print and abort, which libFuzzer reports as a crash
   and saves the input. */
#define FUZZ_BUG(...)                                                            \
    do {                                                                         \
        fprintf(stderr, "FUZZ_BUG %s:%d: ", __FILE__, __LINE__);                 \
        fprintf(stderr, __VA_ARGS__);                                            \
        fputc('\n', stderr);                                                     \
        abort();                                                                 \
    } while (0)

/* One reusable in-memory file per slot; returns "/proc/self/fd/N" holding
   exactly the n bytes (fopen of that path opens the memfd afresh). */
static inline const char *fuzz_file(int slot, const void *data, size_t n) {
    static int fds[4] = {-1, -1, -1, -1};
    static char paths[4][64];
    if (fds[slot] < 0) {
        fds[slot] = memfd_create("nasrt-fuzz", 0);
        if (fds[slot] < 0) FUZZ_BUG("memfd_create failed");
        snprintf(paths[slot], sizeof paths[slot], "/proc/self/fd/%d", fds[slot]);
    }
    if (ftruncate(fds[slot], 0) != 0) FUZZ_BUG("ftruncate failed");
    const char *p = data;
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(fds[slot], p + done, n - done, (off_t)done);
        if (k <= 0) FUZZ_BUG("pwrite failed");
        done += (size_t)k;
    }
    return paths[slot];
}

/* The n bytes as one gzip member (malloc'ed, *out_n its length). */
static inline unsigned char *fuzz_gzip(const void *data, size_t n, size_t *out_n) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        FUZZ_BUG("deflateInit2 failed");
    size_t cap = deflateBound(&zs, (uLong)n) + 32;
    unsigned char *out = malloc(cap);
    if (!out) FUZZ_BUG("out of memory");
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) FUZZ_BUG("deflate did not finish");
    *out_n = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

/* A private scratch folder under /dev/shm (else /tmp), made once and
   removed (with the entries named in fuzz_dir_entry calls) at exit. */
static char fuzz_dir_path[64];
static char fuzz_dir_names[8][32];
static int fuzz_dir_n = 0;

static inline void fuzz_dir_cleanup(void) {
    char p[128];
    for (int i = 0; i < fuzz_dir_n; i++) {
        snprintf(p, sizeof p, "%s/%s", fuzz_dir_path, fuzz_dir_names[i]);
        unlink(p);
    }
    rmdir(fuzz_dir_path);
}

static inline const char *fuzz_dir(void) {
    if (fuzz_dir_path[0]) return fuzz_dir_path;
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "/dev/shm/nasrt-fuzz-XXXXXX");
    if (!mkdtemp(fuzz_dir_path)) {
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "/tmp/nasrt-fuzz-XXXXXX");
        if (!mkdtemp(fuzz_dir_path)) FUZZ_BUG("mkdtemp failed");
    }
    atexit(fuzz_dir_cleanup);
    return fuzz_dir_path;
}

/* Makes <fuzz_dir>/name a symlink to target (replacing an older one). */
static inline void fuzz_dir_link(const char *name, const char *target) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir(), name);
    unlink(p);
    if (symlink(target, p) != 0) FUZZ_BUG("symlink %s failed", p);
    for (int i = 0; i < fuzz_dir_n; i++)
        if (strcmp(fuzz_dir_names[i], name) == 0) return;
    if (fuzz_dir_n < 8) snprintf(fuzz_dir_names[fuzz_dir_n++], sizeof fuzz_dir_names[0], "%s", name);
}

#endif
