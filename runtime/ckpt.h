/*
** ckpt.h -- nasrt checkpoints in C, without Lua: a writer that serialises a
** tree of values (booleans, int64, doubles, byte strings, tables, float32
** tensors) into a byte buffer or atomically into a file, and a pull reader
** over a byte buffer that treats its input as hostile (fuzz target).
**
** File layout (every number little endian):
**
**     offset 0   "NASRTCK1"                 magic, 8 bytes
**     offset 8   u32 version                NR_CKPT_VERSION
**     offset 12  u64 payload length P
**     offset 20  payload: exactly one value
**     offset 20+P u32 crc32 (zlib) of bytes [0, 20+P)
**
** A value is a tag byte followed by its body:
**
**     0x01 false | 0x02 true
**     0x03 integer   i64
**     0x04 float     f64 (IEEE bits, so -0.0, inf and NaN survive)
**     0x05 string    u64 length, bytes (any bytes, NUL included)
**     0x06 table     u64 count, then count pairs (key value, value); a key
**                    is an integer or a string value
**     0x07 tensor    u8 ndim (<= NR_MAXDIM), u8 flags (bit 0: requires_grad),
**                    ndim x u64 sizes, numel x f32, row-major
**
** Writing, in memory:
**
**     nr_ckpt_writer w;
**     nr_ckpt_writer_init_mem(&w);
**     nr_ckpt_put_table(&w, 2);                       // 2 key/value pairs
**     nr_ckpt_put_string(&w, "step", 4); nr_ckpt_put_int(&w, 100);
**     nr_ckpt_put_string(&w, "w", 1);    nr_ckpt_put_tensor(&w, w_tensor);
**     void *buf; size_t len;
**     if (nr_ckpt_writer_finish(&w, &buf, &len) != NR_OK) ... nr_lasterror()
**     ... free(buf);
**
** nr_ckpt_writer_init_file streams to "<path>.tmp.<pid>" instead;
** nr_ckpt_writer_finish then flushes, fsyncs, renames the temp file over
** path and fsyncs the directory, so path always holds either the previous
** checkpoint or the complete new one.  nr_ckpt_writer_discard drops a
** writer at any point (and unlinks its temp file); it is idempotent and also
** safe after finish.  Errors are sticky: after the first failed put every
** later call returns the same status, and finish reports it.  The writer
** checks the shape of the tree (counts, key types, nesting depth) so it can
** only produce files the reader accepts.
**
** Reading:
**
**     nr_ckpt_reader r;
**     if (nr_ckpt_reader_open(&r, buf, len, "model.ckpt", 0) != NR_OK) ...
**     nr_ckpt_item it;
**     nr_ckpt_read(&r, &it);           // it.tag == NR_CKPT_TABLE, it.count
**     ...                              // 2 * count reads: key, value, ...
**     nr_ckpt_reader_end(&r);          // whole payload consumed?
**
** open checks the magic, version, length and checksum (messages name the
** file: "load: model.ckpt: checksum mismatch: file is corrupt or
** half-written").  Every length read afterwards is bounded by the bytes that
** remain, so no input makes the reader read outside [buf, buf+len), loop
** long, or allocate more than the input's size.  Failures of a file's
** content are NR_EIO; calling read after the root value is complete is
** NR_EUSAGE.  Items point into the caller's buffer (borrowed).
*/
#ifndef NASRT_CKPT_H
#define NASRT_CKPT_H

#include "nasrt.h"

#include <stdio.h>

#define NR_CKPT_MAGIC "NASRTCK1"
#define NR_CKPT_MAGIC_LEN 8
#define NR_CKPT_VERSION 1
#define NR_CKPT_HEADER 20   /* magic + version + payload length */
#define NR_CKPT_TRAILER 4   /* crc32 */
/* Most tables open at once (the root value is depth 0). */
#define NR_CKPT_MAXDEPTH 200

typedef enum {
    NR_CKPT_FALSE = 1,
    NR_CKPT_TRUE = 2,
    NR_CKPT_INT = 3,
    NR_CKPT_FLOAT = 4,
    NR_CKPT_STRING = 5,
    NR_CKPT_TABLE = 6,
    NR_CKPT_TENSOR = 7
} nr_ckpt_tag;

#define NR_CKPT_TENSOR_REQUIRES_GRAD 1

/* reader_open flags */
#define NR_CKPT_NOCRC 1   /* skip the checksum (fuzzers craft payloads) */

/* zlib's crc32, for any length (crc = 0 to start). */
NR_API uint32_t nr_ckpt_crc32(uint32_t crc, const void *p, size_t n);

/* ------------------------------------------------------------- writer */

typedef struct nr_ckpt_writer {
    unsigned char *buf;        /* mem: the whole file so far; file: pending bytes */
    size_t len, cap;
    FILE *f;                   /* file mode: the temp file, else NULL */
    char *path, *tmp;          /* file mode: target and temp names */
    uint32_t crc;              /* file mode: crc of payload bytes already written */
    uint64_t payload;          /* payload bytes emitted so far */
    int depth;                 /* open tables */
    uint64_t rem[NR_CKPT_MAXDEPTH + 1]; /* values still owed per level */
    nr_status st;              /* sticky error */
    char msg[320];             /* and its message */
    int done;                  /* finished or discarded */
} nr_ckpt_writer;

NR_API nr_status nr_ckpt_writer_init_mem(nr_ckpt_writer *w);
/* Creates "<path>.tmp.<pid>" (a stale file of that name is replaced). */
NR_API nr_status nr_ckpt_writer_init_file(nr_ckpt_writer *w, const char *path);

NR_API nr_status nr_ckpt_put_bool(nr_ckpt_writer *w, int b);
NR_API nr_status nr_ckpt_put_int(nr_ckpt_writer *w, int64_t v);
NR_API nr_status nr_ckpt_put_float(nr_ckpt_writer *w, double v);
NR_API nr_status nr_ckpt_put_string(nr_ckpt_writer *w, const void *s, size_t len);
/* Opens a table of `count` pairs: the next 2*count values are key, value,
   key, value, ... (values may be tables themselves). */
NR_API nr_status nr_ckpt_put_table(nr_ckpt_writer *w, uint64_t count);
/* Any strides; stores the values row-major and t->requires_grad. */
NR_API nr_status nr_ckpt_put_tensor(nr_ckpt_writer *w, const nr_tensor *t);

/* Completes the file.  Memory mode: *buf (malloc'ed, the caller frees) and
   *len receive the bytes; file mode: buf/len may be NULL, the temp file is
   committed over the path.  The writer is released either way. */
NR_API nr_status nr_ckpt_writer_finish(nr_ckpt_writer *w, void **buf, size_t *len);
/* Releases the writer without committing; unlinks the temp file. */
NR_API void nr_ckpt_writer_discard(nr_ckpt_writer *w);

/* ------------------------------------------------------------- reader */

typedef struct nr_ckpt_reader {
    const unsigned char *base;  /* start of the file */
    const unsigned char *p;     /* next payload byte */
    const unsigned char *end;   /* end of the payload */
    const char *name;           /* for messages (borrowed) */
    uint32_t version;
    int depth;
    uint64_t rem[NR_CKPT_MAXDEPTH + 1];
} nr_ckpt_reader;

typedef struct nr_ckpt_item {
    nr_ckpt_tag tag;
    int is_key;                 /* read in a key position of a table */
    int64_t i;                  /* NR_CKPT_INT */
    double f;                   /* NR_CKPT_FLOAT */
    const char *s;              /* NR_CKPT_STRING: bytes (borrowed, not 0-terminated) */
    size_t len;                 /*                  and length */
    uint64_t count;             /* NR_CKPT_TABLE: pairs that follow */
    int ndim;                   /* NR_CKPT_TENSOR */
    int64_t ne[NR_MAXDIM];
    int64_t numel;
    int flags;
    const unsigned char *data;  /* numel little-endian f32 (borrowed, unaligned) */
} nr_ckpt_item;

/* Validates the header, length and (unless NR_CKPT_NOCRC) the checksum.
   name is used in messages and must outlive the reader. */
NR_API nr_status nr_ckpt_reader_open(nr_ckpt_reader *r, const void *buf, size_t len,
                                     const char *name, int flags);
/* Reads the next value in document order. */
NR_API nr_status nr_ckpt_read(nr_ckpt_reader *r, nr_ckpt_item *it);
/* NR_OK when the root value is complete and no payload byte is left. */
NR_API nr_status nr_ckpt_reader_end(nr_ckpt_reader *r);
/* A new contiguous tensor (+1) from a tensor item, requires_grad restored;
   NULL with nr_lasterror on out of memory. */
NR_API nr_tensor *nr_ckpt_item_tensor(const nr_ckpt_item *it);
/* Walks a whole buffer: open + every value + end.  What a fuzzer calls. */
NR_API nr_status nr_ckpt_validate(const void *buf, size_t len, const char *name, int flags);

/* Reads a whole file into *buf (malloc'ed, the caller frees).  NR_EIO with
   "load: <path>: <reason>" when it is missing or unreadable. */
NR_API nr_status nr_ckpt_read_file(const char *path, void **buf, size_t *len);

#endif
