/*
** data.h -- datasets and the batch loader of nasrt.data (plain C, no Lua).
**
** Datasets live in memory as uint8 pixels [N, C, H, W] plus one class id per
** image, read from
**   - Fashion-MNIST's IDX files (gzipped as Debian's dataset-fashion-mnist
**     ships them, or plain), e.g. train-images-idx3-ubyte.gz;
**   - CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin: records
**     of 1 label byte + 3072 pixel bytes) and CIFAR-100 binary files
**     (train.bin, test.bin: coarse label, fine label, 3072 pixels; the fine
**     label is the class).
** Every file is untrusted input: magic numbers, dims, sizes, label ranges
** and image/label counts are checked, and a corrupt, truncated or wrong
** file fails with NR_EIO and a message "who: path: what is wrong".
**
** The loader turns a dataset (or an index subset of it) into float32
** batches x [B, C, H, W] = (pixel/255 - mean) / std, augmented, and
** y [B] holding class ids as floats.  Batch order and augmentation draws are
** pure functions of (seed, epoch, position in the epoch), so results never
** depend on thread timing, and (epoch, pos) is the whole resumable state.
** With prefetch > 0 one background thread fills a ring of ready batches;
** it only writes pixel floats into tensors the calling thread allocated
** (the storage allocator is single-threaded), and never touches Lua.
** All other loader calls belong to one thread (the one that made it).
*/
#ifndef NASRT_DATA_H
#define NASRT_DATA_H

#include "nasrt.h"

#define NR_DATA_MAXC 4

typedef struct nr_dataset {
    int refcount;
    char name[32];      /* "fashion_mnist", "cifar10", ... */
    char split[16];     /* "train", "test" */
    int64_t n;          /* images */
    int c, h, w;
    int classes;
    uint8_t *pixels;    /* n * c * h * w, CHW per image */
    uint8_t *labels;    /* n, each < classes */
} nr_dataset;

/* A new empty dataset owning zeroed buffers (+1), or NULL (out of memory). */
NR_API nr_dataset *nr_dataset_new(const char *name, const char *split, int64_t n, int c, int h,
                                  int w, int classes);
NR_API void nr_dataset_retain(nr_dataset *ds);
NR_API void nr_dataset_release(nr_dataset *ds);   /* NULL is fine */

/* Reads one IDX file of unsigned bytes (gzip or plain), checking that the
   magic is 0x0000080<ndim>, that the payload is exactly the declared size
   (no less: "truncated", no more: "trailing data").  dims[0..ndim-1] get the
   sizes; *data a malloc'ed buffer the caller frees.  `what` names the
   payload in messages ("pixels", "labels"); `who` prefixes them. */
NR_API nr_status nr_idx_read(const char *who, const char *path, int ndim, const char *what,
                             int64_t *dims, uint8_t **data);

/* Fashion-MNIST from root (train-images-idx3-ubyte[.gz] etc.); train != 0
   for the 60000-image training set, 0 for the 10000-image test set. */
NR_API nr_status nr_fashion_mnist_load(nr_dataset **out, const char *root, int train);
/* CIFAR-10 (variant 10) or CIFAR-100 (variant 100) binary files from root
   (or root/cifar-10-batches-bin, root/cifar-100-binary). */
NR_API nr_status nr_cifar_load(nr_dataset **out, const char *root, int variant, int train);

/* ---------------------------------------------------------------- loader */

typedef struct {
    int64_t padding;    /* random crop to the image size after zero padding; 0 = off */
    double flip_p;      /* horizontal flip probability; 0 = off */
    int64_t cutout;     /* cutout square side (DARTS: centre uniform, clipped); 0 = off */
    int normalize;      /* apply mean/std (else x = pixel / 255) */
    double mean[NR_DATA_MAXC], std[NR_DATA_MAXC];
} nr_augment;

typedef struct {
    int64_t batch_size;
    int shuffle;
    uint64_t seed;
    int drop_last;
    int prefetch;       /* ready batches kept ahead by the worker; 0 = no thread */
    nr_augment aug;
} nr_loader_opts;

typedef struct nr_loader nr_loader;

/* idx: n dataset indices (0-based, each < ds->n) or NULL for 0..n-1.  The
   loader retains ds and copies idx. */
NR_API nr_status nr_loader_new(nr_loader **out, nr_dataset *ds, const int64_t *idx, int64_t n,
                               const nr_loader_opts *o);
/* Stops and joins the worker, releases everything.  NULL is fine. */
NR_API void nr_loader_free(nr_loader *l);
NR_API int64_t nr_loader_len(const nr_loader *l);      /* batches per epoch */
NR_API int64_t nr_loader_size(const nr_loader *l);     /* samples */
NR_API const nr_loader_opts *nr_loader_options(const nr_loader *l);
/* The iteration state: epoch and batches already handed out in it. */
NR_API void nr_loader_state(const nr_loader *l, int64_t *epoch, int64_t *pos);
/* Moves to (epoch, pos); pos in 0..len.  Batches already prefetched for
   positions ahead of the new one are kept. */
NR_API nr_status nr_loader_set_state(nr_loader *l, int64_t epoch, int64_t pos);
/* The next batch of the current epoch (+1 each), or *x = *y = NULL at the
   end of the epoch (the state then stays at (epoch, len)). */
NR_API nr_status nr_loader_next(nr_loader *l, nr_tensor **x, nr_tensor **y);
/* Batch b of epoch e computed on the calling thread, without touching the
   state: the reference the prefetched batches must equal. */
NR_API nr_status nr_loader_batch(nr_loader *l, int64_t epoch, int64_t b, nr_tensor **x,
                                 nr_tensor **y);

/* Applies the augmentation to one image: src uint8 [c,h,w] -> dst float
   [c,h,w], drawing from r (crop offsets, flip, cutout centre, in that order).
   lut: c x 256 floats mapping a pixel to its normalised value. */
NR_API void nr_augment_image(const nr_augment *a, const float *lut, const uint8_t *src, float *dst,
                             int c, int h, int w, nr_rng *r);

#endif
