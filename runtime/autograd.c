/*
** autograd.c -- the tape: nodes recorded by ops, and the backward driver.
** A node is owned by the tensor it produced (+1) and owns its inputs and
** whatever it saved.  Backward visits nodes in reverse topological order,
** accumulates into each input's gradient (micrograd's `+=`), then drops the
** node's saved state at once so activations die as early as possible.
*/
#include "nasrt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local int grad_enabled = 1;

int nr_set_grad_enabled(int on) {
    int old = grad_enabled;
    grad_enabled = on;
    return old;
}

int nr_grad_enabled(void) { return grad_enabled; }

static void node_clear(nr_node *n) {
    for (int i = 0; i < NR_MAXIN; i++) {
        nr_tensor_release(n->in[i]);
        n->in[i] = NULL;
    }
    for (int i = 0; i < NR_MAXSAVED; i++) {
        nr_tensor_release(n->saved[i]);
        n->saved[i] = NULL;
    }
    nr_tensor_release(n->gout);
    n->gout = NULL;
    free(n->extra);
    n->extra = NULL;
}

void nr_node_release(nr_node *n) {
    if (!n || --n->refcount > 0) return;
    node_clear(n);
    free(n);
}

nr_node *nr_record(nr_tensor *out, const char *name, nr_bwd_fn bwd,
                   int n_in, nr_tensor *const *in) {
    if (!grad_enabled) return NULL;
    int any = 0;
    for (int i = 0; i < n_in; i++) any |= nr_needs_grad(in[i]);
    if (!any) return NULL;
    nr_node *n = calloc(1, sizeof *n);
    NR_ASSERT(n != NULL);
    n->refcount = 1;
    n->name = name;
    n->bwd = bwd;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        n->in[i] = in[i];
        if (in[i]) nr_tensor_retain(in[i]);
    }
    n->out_ndim = out->ndim;
    memcpy(n->out_ne, out->ne, sizeof n->out_ne);
    NR_ASSERT(out->node == NULL);
    out->node = n;
    return n;
}

void nr_save(nr_node *n, int slot, nr_tensor *t) {
    NR_ASSERT(slot >= 0 && slot < NR_MAXSAVED);
    if (t) nr_tensor_retain(t);
    nr_tensor_release(n->saved[slot]);
    n->saved[slot] = t;
}

void nr_forget_input(nr_node *n, int i) {
    nr_tensor *t = n->in[i];
    if (!t || !t->node || !t->storage) return; /* leaves keep their tensor: .grad lands there */
    nr_tensor *h = calloc(1, sizeof *h);
    if (!h) return; /* keeping the data is always correct */
    h->refcount = 1;
    h->ndim = t->ndim;
    memcpy(h->ne, t->ne, sizeof h->ne);
    memcpy(h->st, t->st, sizeof h->st);
    h->node = t->node;
    h->node->refcount++;
    h->requires_grad = t->requires_grad;
    n->in[i] = h;
    nr_tensor_release(t);
}

/* --------------------------------------------------------------- backward */

typedef struct {
    nr_node **v;
    size_t n, cap;
} nodevec;

static int push(nodevec *s, nr_node *n) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        nr_node **v = realloc(s->v, cap * sizeof *v);
        if (!v) return 0;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = n;
    return 1;
}

/* Iterative post-order DFS: order ends with the root.  mark: 0 unseen,
   1 on stack, 2 done. */
static nr_status topo(nr_node *root, nodevec *order) {
    nodevec stack = {0};
    nr_status st = NR_OK;
    if (!push(&stack, root)) goto oom;
    while (stack.n) {
        nr_node *n = stack.v[stack.n - 1];
        if (n->mark == 0) {
            n->mark = 1;
            for (int i = 0; i < n->n_in; i++) {
                nr_tensor *t = n->in[i];
                if (t && t->node && t->node->mark == 0 && t->node->bwd)
                    if (!push(&stack, t->node)) goto oom;
            }
        } else {
            stack.n--;
            if (n->mark == 1) {
                n->mark = 2;
                n->refcount++; /* the order list keeps it alive */
                if (!push(order, n)) {
                    n->refcount--;
                    goto oom;
                }
            }
        }
    }
    free(stack.v);
    return st;
oom:
    free(stack.v);
    return nr_seterror(NR_ENOMEM, "backward: out of memory sorting the graph");
}

/* The gradient accumulator of an input: created zeroed, or uninitialised
   when the op writes it on its first contribution (write != 0, and *fresh
   then says so), which saves a zero fill and a read of every element. */
static nr_tensor *ensure_acc(nr_tensor **slot, const nr_tensor *like, int write, int *fresh) {
    *fresh = 0;
    if (!*slot) {
        *slot = write ? nr_tensor_empty(like->ndim, like->ne) : nr_tensor_zeros(like->ndim, like->ne);
        *fresh = write;
    }
    return *slot;
}

nr_status nr_backward(nr_tensor *root, const nr_tensor *gout) {
    char b1[NR_SHAPEBUF], b2[NR_SHAPEBUF];
    if (gout && !nr_same_shape(gout, root))
        return nr_seterror(NR_ESHAPE, "backward: gradient %s does not match output %s",
                           nr_shape_str(gout, b1), nr_shape_str(root, b2));
    if (!gout && nr_numel(root) != 1)
        return nr_seterror(NR_EUSAGE,
                           "backward: output %s has more than one element; pass a gradient",
                           nr_shape_str(root, b1));
    if (!nr_needs_grad(root))
        return nr_seterror(NR_EUSAGE,
                           "backward: tensor does not require grad and has no grad_fn");
    nr_tensor *seed = gout ? nr_tensor_clone(gout) : nr_tensor_full(root->ndim, root->ne, 1.0f);
    if (!seed) return NR_ENOMEM;
    if (!root->node) { /* a leaf */
        int fresh;
        nr_tensor *g = ensure_acc(&root->grad, root, 0, &fresh);
        if (!g) {
            nr_tensor_release(seed);
            return NR_ENOMEM;
        }
        float *gd = nr_data(g);
        const float *sd = nr_data(seed);
        for (int64_t i = 0, n = nr_numel(g); i < n; i++) gd[i] += sd[i];
        nr_tensor_release(seed);
        return NR_OK;
    }
    if (!root->node->bwd) {
        nr_tensor_release(seed);
        return nr_seterror(NR_EUSAGE,
                           "backward: trying to backward through the graph a second time "
                           "(its saved tensors were freed)");
    }
    nodevec order = {0};
    nr_status st = topo(root->node, &order);
    for (size_t i = 0; i < order.n; i++) order.v[i]->mark = 0;
    if (st != NR_OK) goto done;
    nr_tensor_release(root->node->gout);
    root->node->gout = seed;
    seed = NULL;
    for (size_t k = order.n; k-- > 0;) {
        nr_node *n = order.v[k];
        if (st == NR_OK && n->gout && n->bwd) {
            nr_tensor *gin[NR_MAXIN] = {0};
            n->fresh = 0;
            for (int i = 0; i < n->n_in; i++) {
                nr_tensor *t = n->in[i];
                if (!nr_needs_grad(t)) continue;
                int write = (n->writes >> i) & 1, fresh;
                if (t->node) {
                    if (!t->node->bwd) continue; /* already consumed elsewhere */
                    gin[i] = ensure_acc(&t->node->gout, t, write, &fresh);
                } else {
                    gin[i] = ensure_acc(&t->grad, t, write, &fresh);
                }
                n->fresh |= (unsigned)fresh << i;
                if (!gin[i]) {
                    st = NR_ENOMEM;
                    break;
                }
            }
            if (st == NR_OK && nr_aborted()) st = nr_seterror(NR_EABORT, "backward: interrupted");
            if (st == NR_OK) st = n->bwd(n, n->gout, gin);
        }
        n->bwd = NULL;
        node_clear(n);
        nr_node_release(n);
    }
done:
    nr_tensor_release(seed);
    free(order.v);
    return st;
}

/* ------------------------------------------------------- tape accounting */

/* Storages already counted, an open-addressing set of pointers. */
typedef struct {
    const void **v;
    size_t cap, n;
} ptrset;

static int ptrset_add(ptrset *s, const void *p) {
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        const void **v = calloc(cap, sizeof *v);
        if (!v) return -1;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->v[i]) continue;
            size_t h = ((uintptr_t)s->v[i] >> 6) & (cap - 1);
            while (v[h]) h = (h + 1) & (cap - 1);
            v[h] = s->v[i];
        }
        free(s->v);
        s->v = v;
        s->cap = cap;
    }
    size_t h = ((uintptr_t)p >> 6) & (s->cap - 1);
    while (s->v[h]) {
        if (s->v[h] == p) return 0;
        h = (h + 1) & (s->cap - 1);
    }
    s->v[h] = p;
    s->n++;
    return 1;
}

static void count_storage(ptrset *seen, const nr_tensor *t, const char *what,
                          nr_tape_fn fn, void *ud, size_t *total) {
    if (!t || !t->storage || ptrset_add(seen, t->storage) != 1) return;
    *total += t->storage->bytes;
    if (fn) fn(ud, what, t->storage->bytes);
}

size_t nr_tape_memory(const nr_tensor *root, nr_tape_fn fn, void *ud) {
    if (!root || !root->node) return 0;
    nodevec order = {0};
    if (topo(root->node, &order) != NR_OK) return 0;
    ptrset seen = {0};
    size_t total = 0;
    for (size_t k = 0; k < order.n; k++) {
        nr_node *n = order.v[k];
        n->mark = 0;
        char buf[96];
        for (int i = 0; i < n->n_in; i++) {
            const nr_tensor *t = n->in[i];
            if (!t) continue;
            const char *what = t->node ? t->node->name : t->requires_grad ? "parameter" : "input";
            count_storage(&seen, t, what, fn, ud, &total);
        }
        for (int i = 0; i < NR_MAXSAVED; i++) {
            snprintf(buf, sizeof buf, "saved by %s", n->name);
            count_storage(&seen, n->saved[i], buf, fn, ud, &total);
        }
    }
    for (size_t k = 0; k < order.n; k++) nr_node_release(order.v[k]);
    free(order.v);
    free(seen.v);
    return total;
}
