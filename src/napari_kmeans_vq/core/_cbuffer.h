/*
 * Arrays handed to the C extensions through the buffer protocol (no numpy headers): each
 * argument is checked for kind, item size, item count, C order, native byte order and
 * writability before any C code reads it.
 */
#ifndef NAPARI_KMEANS_VQ_CBUFFER_H
#define NAPARI_KMEANS_VQ_CBUFFER_H

#include <Python.h>
#include <string.h>

/* One argument: its name (for errors), kind ('f' float, 'i' signed or 'u' unsigned
 * integer), item size in bytes, item count and whether it is written to. */
typedef struct {
    const char *name;
    char kind;
    Py_ssize_t itemsize, count;
    int writable;
} Spec;

static const char *kind_name(char kind, Py_ssize_t itemsize)
{
    static const char *names[3][9] = {
        {"", "", "", "", "float32", "", "", "", "float64"},
        {"", "int8", "int16", "", "int32", "", "", "", "int64"},
        {"", "uint8", "uint16", "", "uint32", "", "", "", "uint64"},
    };
    int row = kind == 'f' ? 0 : kind == 'i' ? 1 : 2;
    return itemsize >= 1 && itemsize <= 8 ? names[row][itemsize] : "?";
}

static int get(PyObject *obj, Py_buffer *view, const Spec *s)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (s->writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    const unsigned short one = 1;
    const char native = *(const char *)&one ? '<' : '>';
    if (*f == native || *f == '=' || *f == '@')
        f++;
    const char *codes = s->kind == 'f' ? "fd" : s->kind == 'i' ? "bhilq" : "BHILQ";
    int kind_ok = f[0] != '\0' && f[1] == '\0' && strchr(codes, f[0]) != NULL;
    if (!kind_ok || view->itemsize != s->itemsize || view->len != s->itemsize * s->count) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %s", s->name, s->count,
                     kind_name(s->kind, s->itemsize));
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Gets n buffers as specified; on failure releases those it got and returns -1. */
static int get_all(PyObject *const *objs, const Spec *specs, int n, Py_buffer *views)
{
    for (int v = 0; v < n; v++) {
        if (get(objs[v], &views[v], &specs[v]) < 0) {
            while (v-- > 0)
                PyBuffer_Release(&views[v]);
            return -1;
        }
    }
    return 0;
}

static void release_all(Py_buffer *views, int n)
{
    for (int v = 0; v < n; v++)
        PyBuffer_Release(&views[v]);
}

#endif
