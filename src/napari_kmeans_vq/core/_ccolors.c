/*
 * 8-bit RGB pixels in C: the colour histogram of large images, without sorting them
 * (which of the 2^24 colours occur, one bit each in 2 MiB, and how many pixels have
 * each); the histogram of sorted keys (runs); and each pixel's label and codeword in one
 * pass (encode_decode).
 *
 * A colour's key is r | g << 8 | b << 16 (histogram.KeyCodec's). Entries are numbered in
 * key order, as np.unique numbers them: a colour's entry is its rank, the number of
 * occurring colours with a smaller key, read from the bits and a count per 64-bit word
 * of the colours before it (1 MiB). Sorting the pixels (np.unique) is as fast up to about
 * a million pixels; on 16 million this is 2-2.5 times faster and needs 3 MiB, not a
 * 64 MiB table of counts.
 *
 * Call order: mark (every pixel, in any number of calls), index, keys, then tally (every
 * pixel again). The GIL is released meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_cbuffer.h"
#include <limits.h>
#include <stdint.h>
#ifndef _WIN32
#include <pthread.h>
#define HAVE_THREADS 1
#endif

#define WORDS ((Py_ssize_t)1 << 18) /* 2^24 bits */

static inline uint32_t key_of(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

/* Bits set in v (portable: no popcnt instruction is assumed). */
static inline uint32_t ones(uint64_t v)
{
    v = v - ((v >> 1) & UINT64_C(0x5555555555555555));
    v = (v & UINT64_C(0x3333333333333333)) + ((v >> 2) & UINT64_C(0x3333333333333333));
    v = (v + (v >> 4)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    return (uint32_t)((v * UINT64_C(0x0101010101010101)) >> 56);
}

/* Index of the lowest set bit of v != 0. */
static inline uint32_t lowest_bit(uint64_t v)
{
#if defined(__GNUC__) || defined(__clang__)
    return (uint32_t)__builtin_ctzll(v);
#else
    return ones((v & (0 - v)) - 1);
#endif
}

/* The entry of a marked key, or -1 if the key was not marked. */
static inline Py_ssize_t entry_of(const uint64_t *bits, const uint32_t *before, uint32_t key)
{
    uint64_t word = bits[key >> 6];
    uint32_t bit = key & 63;
    if (!((word >> bit) & 1))
        return -1;
    return (Py_ssize_t)before[key >> 6] + ones(word & ((UINT64_C(1) << bit) - 1));
}

static PyObject *py_mark(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[2];
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OOn", &o[0], &o[1], &n))
        return NULL;
    const Spec specs[2] = {{"pixels", 'u', 1, 3 * n, 0}, {"bits", 'u', 8, WORDS, 1}};
    Py_buffer views[2];
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "n must be >= 0");
    if (get_all(o, specs, 2, views) < 0)
        return NULL;
    const unsigned char *px = views[0].buf;
    uint64_t *bits = views[1].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t key = key_of(px + 3 * i);
        bits[key >> 6] |= UINT64_C(1) << (key & 63);
    }
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}

static PyObject *py_index(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[2];
    if (!PyArg_ParseTuple(args, "OO", &o[0], &o[1]))
        return NULL;
    const Spec specs[2] = {{"bits", 'u', 8, WORDS, 0}, {"before", 'u', 4, WORDS, 1}};
    Py_buffer views[2];
    if (get_all(o, specs, 2, views) < 0)
        return NULL;
    const uint64_t *bits = views[0].buf;
    uint32_t *before = views[1].buf;
    Py_ssize_t total = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t w = 0; w < WORDS; w++) {
        before[w] = (uint32_t)total;
        total += ones(bits[w]);
    }
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    return PyLong_FromSsize_t(total);
}

static PyObject *py_keys(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[2];
    Py_ssize_t m;
    if (!PyArg_ParseTuple(args, "OOn", &o[0], &o[1], &m))
        return NULL;
    const Spec specs[2] = {{"bits", 'u', 8, WORDS, 0}, {"keys", 'u', 4, m, 1}};
    Py_buffer views[2];
    if (m < 0)
        return PyErr_Format(PyExc_ValueError, "m must be >= 0");
    if (get_all(o, specs, 2, views) < 0)
        return NULL;
    const uint64_t *bits = views[0].buf;
    uint32_t *keys = views[1].buf;
    Py_ssize_t j = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t w = 0; w < WORDS; w++) {
        for (uint64_t word = bits[w]; word != 0 && j < m; word &= word - 1) {
            keys[j++] = (uint32_t)(w << 6) | lowest_bit(word);
        }
    }
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    if (j != m)
        return PyErr_Format(PyExc_ValueError, "keys: the bits hold %zd colours, not %zd", j, m);
    Py_RETURN_NONE;
}

static int unmarked(void)
{
    PyErr_SetString(PyExc_ValueError, "pixels: a colour is not in the table (not marked)");
    return -1;
}

static PyObject *py_tally(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[4];
    Py_ssize_t n, m;
    if (!PyArg_ParseTuple(args, "OOOOnn", &o[0], &o[1], &o[2], &o[3], &n, &m))
        return NULL;
    const Spec specs[4] = {
        {"pixels", 'u', 1, 3 * n, 0},
        {"bits", 'u', 8, WORDS, 0},
        {"before", 'u', 4, WORDS, 0},
        {"counts", 'i', 8, m, 1},
    };
    Py_buffer views[4];
    if (n < 0 || m < 0)
        return PyErr_Format(PyExc_ValueError, "n and m must be >= 0");
    if (get_all(o, specs, 4, views) < 0)
        return NULL;
    const unsigned char *px = views[0].buf;
    const uint64_t *bits = views[1].buf;
    const uint32_t *before = views[2].buf;
    int64_t *counts = views[3].buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t e = entry_of(bits, before, key_of(px + 3 * i));
        if (e < 0 || e >= m) {
            bad = 1;
            break;
        }
        counts[e]++;
    }
    Py_END_ALLOW_THREADS
    release_all(views, 4);
    if (bad)
        return unmarked(), NULL;
    Py_RETURN_NONE;
}

/* pack(pixels, keys, n): each pixel's key (numpy reads 3-byte steps 4x slower). */
static PyObject *py_pack(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[2];
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OOn", &o[0], &o[1], &n))
        return NULL;
    if (n < 0)
        return PyErr_Format(PyExc_ValueError, "n must be >= 0");
    const Spec specs[2] = {{"pixels", 'u', 1, 3 * n, 0}, {"keys", 'u', 4, n, 1}};
    Py_buffer views[2];
    if (get_all(o, specs, 2, views) < 0)
        return NULL;
    const unsigned char *px = views[0].buf;
    uint32_t *keys = views[1].buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        keys[i] = key_of(px + 3 * i);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
}

/* runs(sorted, n, keys, counts, colors, m) -> m: the distinct keys of n sorted keys,
 * how many times each occurs and its colour (3 bytes); with m = 0 only counts them
 * (then keys, counts and colors may be None). */
static PyObject *py_runs(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[4];
    Py_ssize_t n, m;
    if (!PyArg_ParseTuple(args, "OnOOOn", &o[0], &n, &o[1], &o[2], &o[3], &m))
        return NULL;
    if (n < 0 || m < 0)
        return PyErr_Format(PyExc_ValueError, "n and m must be >= 0");
    const Spec specs[4] = {
        {"sorted", 'u', 4, n, 0},
        {"keys", 'u', 4, m, 1},
        {"counts", 'i', 8, m, 1},
        {"colors", 'u', 1, 3 * m, 1},
    };
    Py_buffer views[4];
    int parts = m > 0 ? 4 : 1;
    if (get_all(o, specs, parts, views) < 0)
        return NULL;
    const uint32_t *sorted = views[0].buf;
    Py_ssize_t found = 0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    if (m == 0) {
        for (Py_ssize_t i = 0; i < n; i++) {
            found += i == 0 || sorted[i] != sorted[i - 1];
            bad |= (i > 0 && sorted[i] < sorted[i - 1]) || sorted[i] >> 24;
        }
    }
    else {
        uint32_t *keys = views[1].buf;
        int64_t *counts = views[2].buf;
        unsigned char *colors = views[3].buf;
        /* Branch-free (a new run every other pixel or so defeats branch prediction; 3x
         * slower with a branch): every pixel writes its run's key, colour and last index;
         * a run's count is then its last index minus the previous run's. */
        Py_ssize_t f = -1;
        uint32_t previous = UINT32_MAX; /* no 24-bit key */
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t key = sorted[i];
            /* (a predictable branch: never taken on keys from pack() and a sort) */
            if ((key >> 24) || (i > 0 && key < previous) || (f += key != previous) >= m) {
                bad = 1;
                break;
            }
            previous = key;
            keys[f] = key;
            counts[f] = i;
            colors[3 * f] = (unsigned char)key;
            colors[3 * f + 1] = (unsigned char)(key >> 8);
            colors[3 * f + 2] = (unsigned char)(key >> 16);
        }
        found = f + 1;
        if (!bad) {
            for (Py_ssize_t j = found - 1; j > 0; j--)
                counts[j] -= counts[j - 1];
            if (found > 0)
                counts[0] += 1;
        }
        bad |= found != m;
    }
    Py_END_ALLOW_THREADS
    release_all(views, parts);
    if (bad)
        return PyErr_Format(PyExc_ValueError,
                            "sorted: not sorted 24-bit keys, or not %zd distinct ones", m);
    return PyLong_FromSsize_t(found);
}

/* Pixels [lo, hi): label = table[key] (or, without a table, the nearest palette entry,
 * ties to the lower index), codeword = palette[label]. */
typedef struct {
    const unsigned char *px, *palette;
    const void *table;
    void *labels;
    unsigned char *out;
    Py_ssize_t lo, hi, k;
    int wide; /* uint16 labels, else uint8 */
    int bad;
    long long *tally; /* NULL, or each label's pixel count (k) ... */
    long long error;  /* ... and the sum of squared errors, pixel minus codeword */
} Encoding;

static inline Py_ssize_t nearest(const unsigned char *p, const unsigned char *palette,
                                 Py_ssize_t k)
{
    /* Integer squared distances, exact (below 2^18), as the double ones are. */
    if (k <= 256) {
        /* Distance and index in one integer: its minimum is the nearest entry, ties to
         * the lower index, with no branch (which entry is nearest is a coin toss per
         * pixel: a branch on it was mispredicted often, 5 ns a pixel at K = 4). */
        int best = INT_MAX;
        for (int j = 0; j < (int)k; j++) {
            const unsigned char *c = palette + 3 * j;
            int e0 = p[0] - c[0], e1 = p[1] - c[1], e2 = p[2] - c[2];
            int s = ((e0 * e0 + e1 * e1 + e2 * e2) << 8) | j;
            best = s < best ? s : best;
        }
        return best & 0xFF;
    }
    int best = INT_MAX;
    Py_ssize_t label = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        const unsigned char *c = palette + 3 * j;
        int e0 = p[0] - c[0], e1 = p[1] - c[1], e2 = p[2] - c[2];
        int s = e0 * e0 + e1 * e1 + e2 * e2;
        label = s < best ? j : label;
        best = s < best ? s : best;
    }
    return label;
}

/* One mode's loop: LABEL(i) gives pixel i's label. */
#define ENCODE_LOOP(T, LABEL)                                                            \
    {                                                                                    \
    for (Py_ssize_t i = lo; i < hi; i++) {                                               \
        Py_ssize_t label = (LABEL);                                                      \
        if (label >= k) {                                                                \
            e->bad = 1;                                                                  \
            return NULL;                                                                 \
        }                                                                                \
        ((T *)labels)[i] = (T)label;                                                     \
        const unsigned char *c = palette + 3 * label, *p = px + 3 * i;                   \
        out[3 * i] = c[0];                                                               \
        out[3 * i + 1] = c[1];                                                           \
        out[3 * i + 2] = c[2];                                                           \
        if (tally) {                                                                     \
            int e0 = p[0] - c[0], e1 = p[1] - c[1], e2 = p[2] - c[2];                    \
            tally[label]++;                                                              \
            error += e0 * e0 + e1 * e1 + e2 * e2;                                        \
        }                                                                                \
    }                                                                                    \
    e->error = error;                                                                    \
    }

static void *encode_range(void *arg)
{
    Encoding *e = arg;
    /* Locals, not the struct's fields: stores through the byte pointers below may alias
     * those, which made the compiler reload them on every pixel. */
    const unsigned char *px = e->px, *palette = e->palette;
    const void *table = e->table;
    void *labels = e->labels;
    unsigned char *out = e->out;
    const Py_ssize_t lo = e->lo, hi = e->hi, k = e->k;
    long long *tally = e->tally, error = 0;
    if (table == NULL && k <= 4 && !e->wide) {
        /* Up to four entries (the usual case here, see histogram.encode_decode): the four
         * distances unrolled, the palette padded with copies of its last entry, which
         * never win (the packed minimum prefers the lower index). */
        int c[4][3];
        for (int j = 0; j < 4; j++)
            for (int t = 0; t < 3; t++)
                c[j][t] = palette[3 * (j < k ? j : k - 1) + t];
#define PACKED(j)                                                                        \
    ((((p[0] - c[j][0]) * (p[0] - c[j][0]) + (p[1] - c[j][1]) * (p[1] - c[j][1]) +       \
       (p[2] - c[j][2]) * (p[2] - c[j][2]))                                               \
      << 8) |                                                                            \
     (j))
        for (Py_ssize_t i = lo; i < hi; i++) {
            const unsigned char *p = px + 3 * i;
            int a = PACKED(0), b = PACKED(1), d = PACKED(2), f = PACKED(3);
            a = b < a ? b : a;
            d = f < d ? f : d;
            int best = d < a ? d : a, label = best & 0xFF;
            ((uint8_t *)labels)[i] = (uint8_t)label;
            out[3 * i] = (unsigned char)c[label][0];
            out[3 * i + 1] = (unsigned char)c[label][1];
            out[3 * i + 2] = (unsigned char)c[label][2];
            if (tally) {
                tally[label]++;
                error += best >> 8;
            }
        }
#undef PACKED
        e->error = error;
    }
    else if (table == NULL && e->wide)
        ENCODE_LOOP(uint16_t, nearest(px + 3 * i, palette, k))
    else if (table == NULL)
        ENCODE_LOOP(uint8_t, nearest(px + 3 * i, palette, k))
    else if (e->wide)
        ENCODE_LOOP(uint16_t, ((const uint16_t *)table)[key_of(px + 3 * i)])
    else
        ENCODE_LOOP(uint8_t, ((const uint8_t *)table)[key_of(px + 3 * i)])
    return NULL;
}
#undef ENCODE_LOOP

/* Half the pixels each on two threads from this many (measured: 1.6-1.9x faster on
 * 400k pixels; a thread costs about what it saves below 100k). */
#define THREADED_PIXELS 200000

static PyObject *py_encode_decode(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[6] = {NULL};
    Py_ssize_t n, k, size;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOnnni|O", &o[0], &o[1], &o[2], &o[3], &o[4], &n, &k, &size,
                          &threads, &o[5]))
        return NULL;
    /* stats (optional, int64, k + 1): each label's pixel count and, last, the sum of
     * squared errors are added to it */
    int with_stats = o[5] != NULL && o[5] != Py_None;
    if (n < 0 || k < 1 || !(size == 1 || size == 2))
        return PyErr_Format(PyExc_ValueError, "need n >= 0, k >= 1, an item size of 1 or 2");
    /* No table (None): each pixel's nearest palette entry. */
    int nearest_entry = o[1] == Py_None;
    if (nearest_entry)
        o[1] = o[0]; /* any buffer: not read */
    const Spec specs[6] = {
        {"pixels", 'u', 1, 3 * n, 0},
        {"table", 'u', nearest_entry ? 1 : size, nearest_entry ? 3 * n : (Py_ssize_t)1 << 24, 0},
        {"palette", 'u', 1, 3 * k, 0},
        {"labels", 'u', size, n, 1},
        {"out", 'u', 1, 3 * n, 1},
        {"stats", 'i', 8, k + 1, 1},
    };
    Py_buffer views[6];
    if (get_all(o, specs, 5 + with_stats, views) < 0)
        return NULL;
    long long *tallies = with_stats ? calloc(2 * k, sizeof(long long)) : NULL;
    if (with_stats && !tallies) {
        release_all(views, 5 + with_stats);
        return PyErr_NoMemory();
    }
    Encoding first = {views[0].buf, views[2].buf, nearest_entry ? NULL : views[1].buf,
                      views[3].buf, views[4].buf, 0, n, k, size == 2, 0, tallies, 0};
    Encoding second = first;
    second.tally = tallies ? tallies + k : NULL;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    int done = 0;
#ifdef HAVE_THREADS
    pthread_t thread;
    if (threads > 1 && n >= THREADED_PIXELS) {
        first.hi = second.lo = n / 2;
        if (pthread_create(&thread, NULL, encode_range, &second) == 0) {
            encode_range(&first);
            pthread_join(thread, NULL);
            done = 1;
        }
    }
#endif
    if (!done) {
        first.hi = n;
        encode_range(&first);
        second.bad = 0;
        second.error = 0;
    }
    bad = first.bad || second.bad;
    if (with_stats && !bad) {
        long long *stats = views[5].buf;
        for (Py_ssize_t j = 0; j < k; j++)
            stats[j] += tallies[j] + tallies[k + j];
        stats[k] += first.error + second.error;
    }
    Py_END_ALLOW_THREADS
    free(tallies);
    release_all(views, 5 + with_stats);
    if (bad)
        return PyErr_Format(PyExc_ValueError, "table: a label is %zd or more", k);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"mark", py_mark, METH_VARARGS,
     "mark(pixels, bits, n): set the bit of each of n RGB pixels' colour (uint8, n x 3)."},
    {"index", py_index, METH_VARARGS,
     "index(bits, before) -> m: count the colours marked before each word; m in all."},
    {"keys", py_keys, METH_VARARGS, "keys(bits, keys, m): the m marked keys, in order."},
    {"tally", py_tally, METH_VARARGS,
     "tally(pixels, bits, before, counts, n, m): add each pixel to its colour's count."},
    {"pack", py_pack, METH_VARARGS, "pack(pixels, keys, n): the 24-bit key of each pixel."},
    {"runs", py_runs, METH_VARARGS,
     "runs(sorted, n, keys, counts, colors, m) -> m: distinct keys of n sorted 24-bit keys, "
     "their counts and colours; m = 0 counts them only."},
    {"encode_decode", py_encode_decode, METH_VARARGS,
     "encode_decode(pixels, table, palette, labels, out, n, k, itemsize, threads[, stats]): "
     "each pixel's label (table[key], or with table None the nearest palette entry; uint8 "
     "or uint16) and codeword (palette[label]); stats (int64, k + 1): each label's pixel "
     "count and the sum of squared errors are added to it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ccolors", "The colour table of 8-bit RGB pixels.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ccolors(void)
{
    return PyModule_Create(&module);
}
