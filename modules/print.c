/*
** print.c -- tostring(tensor), laid out exactly as PyTorch's
** torch/_tensor_str.py does with its default print options (precision 4,
** linewidth 80, threshold 1000, edgeitems 3):
**
**     tensor([[ 0.1000, -1.2000],
**             [ 3.0000,  4.0000]], requires_grad=True)
**
** One formatter is chosen for the whole tensor from the values that will be
** shown (integers as "3.", fixed "%.4f", or "%.4e" when the range is extreme)
** and every element is right-aligned to the widest.  Above 1000 elements each
** dim shows its first and last 3 entries around "...".  Works on any strides.
*/

/***
Tensor printing (C, modules/print.c).
@module nasrt
*/
#include "luabind.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define PR_PRECISION 4
#define PR_LINEWIDTH 80
#define PR_THRESHOLD 1000
#define PR_EDGEITEMS 3

typedef struct {
    int int_mode, sci_mode, max_width;
    /* statistics over the shown, nonzero, finite values */
    int any;
    double amin, amax;
} pr_fmt;

typedef struct {
    const nr_tensor *t;
    const float *data;
    int summarize;
    pr_fmt f;
    int pass; /* 0: statistics, 1: widths */
} pr_ctx;

/* ------------------------------------------------------------ formatter */

static int fmt_raw(char *buf, size_t cap, const pr_fmt *f, double v) {
    if (isnan(v)) return snprintf(buf, cap, "nan");
    if (isinf(v)) return snprintf(buf, cap, v < 0 ? "-inf" : "inf");
    if (f->sci_mode) return snprintf(buf, cap, "%.*e", PR_PRECISION, v);
    if (f->int_mode) return snprintf(buf, cap, "%.0f.", v);
    return snprintf(buf, cap, "%.*f", PR_PRECISION, v);
}

/* Visits the values the printout shows (torch's get_summarized_data). */
static void visit(pr_ctx *c, int d, int64_t off) {
    const nr_tensor *t = c->t;
    if (d == t->ndim) {
        double v = c->data[off];
        if (!isfinite(v) || v == 0) return;
        pr_fmt *f = &c->f;
        if (c->pass == 0) {
            double a = fabs(v);
            if (!f->any || a < f->amin) f->amin = a;
            if (!f->any || a > f->amax) f->amax = a;
            f->any = 1;
            if (v != ceil(v)) f->int_mode = 0;
        } else {
            char buf[64];
            int n = fmt_raw(buf, sizeof buf, f, v);
            if (n > f->max_width) f->max_width = n;
        }
        return;
    }
    int64_t n = t->ne[d];
    for (int64_t i = 0; i < n; i++) {
        if (c->summarize && n > 2 * PR_EDGEITEMS && i == PR_EDGEITEMS) i = n - PR_EDGEITEMS;
        visit(c, d + 1, off + i * t->st[d]);
    }
}

static void build_formatter(pr_ctx *c) {
    pr_fmt *f = &c->f;
    f->int_mode = 1;
    f->sci_mode = 0;
    f->max_width = 1;
    f->any = 0;
    c->pass = 0;
    visit(c, 0, 0);
    if (!f->any) return;
    double ratio = f->amax / f->amin;
    if (f->int_mode)
        f->sci_mode = ratio > 1000.0 || f->amax > 1.0e8;
    else
        f->sci_mode = ratio > 1000.0 || f->amax > 1.0e8 || f->amin < 1.0e-4;
    c->pass = 1;
    visit(c, 0, 0);
}

static void add_value(luaL_Buffer *b, const pr_fmt *f, double v) {
    char buf[64];
    int n = fmt_raw(buf, sizeof buf, f, v);
    for (int i = n; i < f->max_width; i++) luaL_addchar(b, ' ');
    luaL_addlstring(b, buf, (size_t)n);
}

static void add_spaces(luaL_Buffer *b, int n) {
    for (int i = 0; i < n; i++) luaL_addchar(b, ' ');
}

/* ------------------------------------------------------------- layout */

static void emit(pr_ctx *c, luaL_Buffer *b, int d, int64_t off, int indent) {
    const nr_tensor *t = c->t;
    int rem = t->ndim - d;
    if (rem == 0) {
        add_value(b, &c->f, c->data[off]);
        return;
    }
    int64_t n = t->ne[d];
    int skip = c->summarize && n > 2 * PR_EDGEITEMS;
    luaL_addchar(b, '[');
    if (rem == 1) {
        int per_line = (PR_LINEWIDTH - indent) / (c->f.max_width + 2);
        if (per_line < 1) per_line = 1;
        int64_t k = 0; /* elements emitted, "..." included */
        for (int64_t i = 0; i < n; i++) {
            if (k > 0) {
                if (k % per_line == 0) {
                    luaL_addstring(b, ",\n");
                    add_spaces(b, indent + 1);
                } else
                    luaL_addstring(b, ", ");
            }
            if (skip && i == PR_EDGEITEMS) {
                luaL_addstring(b, " ...");
                k++;
                i = n - PR_EDGEITEMS - 1;
                continue;
            }
            add_value(b, &c->f, c->data[off + i * t->st[d]]);
            k++;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            if (i > 0) {
                luaL_addchar(b, ',');
                for (int j = 0; j < rem - 1; j++) luaL_addchar(b, '\n');
                add_spaces(b, indent + 1);
            }
            if (skip && i == PR_EDGEITEMS) {
                luaL_addstring(b, "...");
                i = n - PR_EDGEITEMS - 1;
                continue;
            }
            emit(c, b, d + 1, off + i * t->st[d], indent + 1);
        }
    }
    luaL_addchar(b, ']');
}

/* torch's _add_suffixes: ", suffix" on the last line while it fits in the
   line width, else on a new line indented under "tensor(". */
static void add_suffix(luaL_Buffer *b, const char *s, size_t len, const char *prefix) {
    const char *buf = luaL_buffaddr(b);
    size_t n = luaL_bufflen(b);
    size_t nl = n;
    while (nl > 0 && buf[nl - 1] != '\n') nl--;
    /* len(str) - str.rfind("\n") + 1, as torch computes it */
    size_t last = nl > 0 ? n - (nl - 1) + 1 : n + 2;
    if (last + len + 2 > PR_LINEWIDTH) {
        luaL_addstring(b, ",\n");
        add_spaces(b, (int)strlen(prefix));
    } else
        luaL_addstring(b, ", ");
    luaL_addlstring(b, s, len);
}

/*** PyTorch-style text of a tensor (its __tostring).
@function Tensor:__tostring
@treturn string */
int nrL_tensor_tostring(lua_State *L) {
    nr_tensor **box = luaL_testudata(L, 1, NR_TENSOR_MT);
    if (box && !*box) {
        lua_pushliteral(L, "tensor(<closed>)");
        return 1;
    }
    nr_tensor *t = nrL_checktensor(L, 1);
    const char *prefix = "tensor(";
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, prefix);
    int64_t numel = nr_numel(t);
    char sizebuf[32 + NR_MAXDIM * 24];
    sizebuf[0] = '\0';
    if (numel == 0) {
        luaL_addstring(&b, "[]");
        if (t->ndim != 1) {
            int n = snprintf(sizebuf, sizeof sizebuf, "size=(");
            for (int i = 0; i < t->ndim; i++)
                n += snprintf(sizebuf + n, sizeof sizebuf - (size_t)n, i ? ", %lld" : "%lld",
                              (long long)t->ne[i]);
            snprintf(sizebuf + n, sizeof sizebuf - (size_t)n, t->ndim == 1 ? ",)" : ")");
        }
    } else {
        pr_ctx c;
        memset(&c, 0, sizeof c);
        c.t = t;
        c.data = nr_data(t);
        c.summarize = numel > PR_THRESHOLD;
        build_formatter(&c);
        emit(&c, &b, 0, 0, (int)strlen(prefix));
    }
    if (sizebuf[0]) add_suffix(&b, sizebuf, strlen(sizebuf), prefix);
    if (t->node) {
        char name[96];
        /* "conv2d" -> "grad_fn=<Conv2dBackward>", "max_pool2d" ->
           "grad_fn=<MaxPool2dBackward>" */
        int n = snprintf(name, sizeof name, "grad_fn=<");
        int up = 1;
        for (const char *p = t->node->name ? t->node->name : "unknown";
             *p && n < (int)sizeof name - 12; p++) {
            if (*p == '_') {
                up = 1;
                continue;
            }
            char ch = *p;
            if (up && ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
            up = 0;
            name[n++] = ch;
        }
        n += snprintf(name + n, sizeof name - (size_t)n, "Backward>");
        add_suffix(&b, name, (size_t)n, prefix);
    } else if (t->requires_grad) {
        add_suffix(&b, "requires_grad=True", 18, prefix);
    }
    luaL_addchar(&b, ')');
    luaL_pushresult(&b);
    return 1;
}
