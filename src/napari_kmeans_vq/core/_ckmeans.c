/*
 * The k-means engine's hot loops in C: Lloyd's iterations on weighted points with
 * Hamerly's bounds, k-means++ seeding, and the grid summary of the points.
 *
 * The numpy path in kmeans.py does the same work; here a whole run is one call with no
 * per-pass overhead, which is what small K on a few hundred thousand colours needs.
 * Hamerly 2010, "Making k-means even faster": each point keeps an upper bound on the
 * distance to its centre and a lower bound on the distance to any other centre; a point
 * is searched again only when the bounds overlap.
 *
 * Exactness: distances are sums of squared differences (no |x|^2 - 2x.c + |c|^2
 * cancellation); a point is skipped only when its bounds clear with a relative margin
 * (LOOSEN, on every term of the bounds), so ties are always searched and go to the lower
 * centre index, as in numpy's argmin. Cluster sums are recomputed on every pass, over the same fixed slots in
 * the same order whether one thread or two pass over the points, so results depend on
 * nothing but the input. The GIL is released.
 *
 * Also here: the grid summary of the coarse stage and k-means++ seeding, each the numpy
 * code's arithmetic in the same order, so the same result bit for bit.
 *
 * Arrays come from _lloyd_kernel.py, which checks shapes and dtypes: points (M, D) and
 * centres (K, D) float64 C-contiguous (exact points may be uint8: exact = 2), weights
 * (M,) float64, labels (M,) int32, bounds (M,) float64.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_cbuffer.h"
/* No fused multiply-adds: the seeding and the summary must round as numpy does (gcc and
 * clang get -ffp-contract=off from setup.py; these cover the other compilers). */
#if defined(_MSC_VER) && !defined(__clang__)
#pragma fp_contract(off)
#elif defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#include <limits.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#define HAVE_THREADS 1
#endif

#define LOOSEN 1e-9

/* Cluster sums are kept in this many banks (point i adds to bank i % BANKS) so that
 * consecutive points of one cluster do not wait on each other's additions; and apart for
 * the two halves of the points, which two threads may pass over at once. The banks are
 * always added up in the same order, so the result does not depend on the threads. */
#define BANKS 4
#define SLOTS (2 * BANKS)
/* A pass runs on two threads when its work is about this many distances or more: 4 per
 * point for the bounds, plus k per point searched in full, as many as in the last pass.
 * Below it, starting a thread costs about what it saves (measured on 2 cores: K = 4 fits
 * 10-20% slower with a thread on every pass; K = 64-256 fits 1.4-1.7x faster with one). */
#define THREADED_WORK 300000

typedef struct {
    const double *x, *w;
    const unsigned char *u8; /* 8-bit points, read instead of x (which is then NULL) */
    double *c;
    int *labels;
    double *upper, *lower;
    double *acc; /* SLOTS x K x (D + 1): weighted sums, then mass */
    Py_ssize_t m, k, d, half;
    Py_ssize_t searched; /* points searched in full in the last pass */
    int threads; /* at most this many (1 or 2) */
    int exact;   /* integer points and weights: sums kept up to date, not recomputed */
} Problem;

/* Coordinate t of point i, from float64 points or from 8-bit ones (a byte each instead of
 * eight: 8-bit colours need no float64 copy, and a pass reads an eighth of the memory). */
static inline double coord(const Problem *p, Py_ssize_t i, Py_ssize_t t)
{
    return p->u8 ? (double)p->u8[i * p->d + t] : p->x[i * p->d + t];
}

/* Squared distance from point i to c, summed in coordinate order (as dist2). */
static inline double point_dist2(const Problem *p, Py_ssize_t i, const double *c)
{
    double s = 0.0;
    for (Py_ssize_t t = 0; t < p->d; t++) {
        double e = coord(p, i, t) - c[t];
        s += e * e;
    }
    return s;
}

static inline double dist2(const double *a, const double *b, Py_ssize_t d)
{
    double s = 0.0;
    for (Py_ssize_t t = 0; t < d; t++) {
        double e = a[t] - b[t];
        s += e * e;
    }
    return s;
}

/* Running minimum and runner-up; ties keep the lower index. Compilers make a branch of
 * this, which pays with many centres: the nearest is met early and the branch predicted
 * from then on (written with SSE2 min and max instead, fits at K = 256 were 25% slower). */
#define TAKE(s, j)                                                                       \
    do {                                                                                 \
        double high_ = (s) < best ? best : (s);                                          \
        runner = high_ < runner ? high_ : runner;                                        \
        label = (s) < best ? (int)(j) : label;                                           \
        best = (s) < best ? (s) : best;                                                  \
    } while (0)

/* SSE2 where scalar double maths is SSE2 too (x86-64): 32-bit x87 maths keeps excess
 * precision, and the pair and single-point searches could then disagree on a tie. */
#if defined(__SSE2_MATH__) || defined(_M_X64)
#define HAVE_SSE2 1
#include <emmintrin.h>
#endif

/* Nearest centre of point i (ties to the lower index) and the two smallest squared
 * distances. */
static inline int nearest_two(const Problem *p, Py_ssize_t i, double *first, double *second)
{
    double best = INFINITY, runner = INFINITY;
    int label = 0;
    if (p->d == 3) {
        const double x0 = coord(p, i, 0), x1 = coord(p, i, 1), x2 = coord(p, i, 2);
        for (Py_ssize_t j = 0; j < p->k; j++) {
            const double *cj = p->c + 3 * j;
            double e0 = x0 - cj[0], e1 = x1 - cj[1], e2 = x2 - cj[2];
            double s = e0 * e0 + e1 * e1 + e2 * e2;
            TAKE(s, j);
        }
    }
    else {
        for (Py_ssize_t j = 0; j < p->k; j++) {
            double s = point_dist2(p, i, p->c + j * p->d);
            TAKE(s, j);
        }
    }
    *first = best;
    *second = runner;
    return label;
}

#ifdef HAVE_SSE2
/* nearest_two for two points of a 3-d problem at once, one in each SSE2 lane (their
 * coordinates in x0, x1, x2): per lane the same operations in the same order, so the same
 * results (about twice as fast as two calls: the search is bound by instruction count). */
static inline void search_pair(const Problem *p, __m128d x0, __m128d x1, __m128d x2,
                               int *label, __m128d *first, __m128d *second)
{
    __m128d best = _mm_set1_pd(INFINITY), runner = best, which = _mm_setzero_pd();
    for (Py_ssize_t j = 0; j < p->k; j++) {
        const double *cj = p->c + 3 * j;
        __m128d e0 = _mm_sub_pd(x0, _mm_set1_pd(cj[0]));
        __m128d e1 = _mm_sub_pd(x1, _mm_set1_pd(cj[1]));
        __m128d e2 = _mm_sub_pd(x2, _mm_set1_pd(cj[2]));
        __m128d s = _mm_add_pd(_mm_add_pd(_mm_mul_pd(e0, e0), _mm_mul_pd(e1, e1)),
                               _mm_mul_pd(e2, e2));
        __m128d closer = _mm_cmplt_pd(s, best);
        runner = _mm_min_pd(_mm_max_pd(best, s), runner);
        which = _mm_or_pd(_mm_and_pd(closer, _mm_set1_pd((double)j)),
                          _mm_andnot_pd(closer, which));
        best = _mm_min_pd(s, best);
    }
    __m128i index = _mm_cvttpd_epi32(which);
    label[0] = _mm_cvtsi128_si32(index);
    label[1] = _mm_cvtsi128_si32(_mm_srli_si128(index, 4));
    *first = best;
    *second = runner;
}

/* search_pair for points i and j. */
static inline void nearest_two_pair(const Problem *p, Py_ssize_t i, Py_ssize_t j, int *label,
                                    __m128d *first, __m128d *second)
{
    __m128d x0, x1, x2;
    if (p->u8) {
        const unsigned char *a = p->u8 + 3 * i, *b = p->u8 + 3 * j;
        x0 = _mm_set_pd(b[0], a[0]);
        x1 = _mm_set_pd(b[1], a[1]);
        x2 = _mm_set_pd(b[2], a[2]);
    }
    else if (j == i + 1) {
        const double *xi = p->x + 3 * i;
        __m128d a = _mm_loadu_pd(xi), b = _mm_loadu_pd(xi + 2), c = _mm_loadu_pd(xi + 4);
        x0 = _mm_shuffle_pd(a, b, 2);
        x1 = _mm_shuffle_pd(a, c, 1);
        x2 = _mm_shuffle_pd(b, c, 2);
    }
    else {
        const double *a = p->x + 3 * i, *b = p->x + 3 * j;
        x0 = _mm_set_pd(b[0], a[0]);
        x1 = _mm_set_pd(b[1], a[1]);
        x2 = _mm_set_pd(b[2], a[2]);
    }
    search_pair(p, x0, x1, x2, label, first, second);
}
#endif

static inline void accumulate(const Problem *p, Py_ssize_t i, int j)
{
    Py_ssize_t d = p->d;
    Py_ssize_t slot = (i < p->half ? 0 : BANKS) + i % BANKS;
    double *a = p->acc + (slot * p->k + j) * (d + 1);
    double wi = p->w[i];
    if (d == 3) {
        a[0] += wi * coord(p, i, 0);
        a[1] += wi * coord(p, i, 1);
        a[2] += wi * coord(p, i, 2);
    }
    else {
        for (Py_ssize_t t = 0; t < d; t++)
            a[t] += wi * coord(p, i, t);
    }
    a[d] += wi;
}

/* Point i leaves cluster `from` for cluster `to`. Only for exact problems: integer
 * products and sums below 2^53 (see integral()) come out the same in any order, so
 * sums kept up to date this way equal sums recomputed over all points, bit for bit. */
static inline void transfer(const Problem *p, Py_ssize_t i, int from, int to)
{
    Py_ssize_t d = p->d;
    Py_ssize_t slot = (i < p->half ? 0 : BANKS) + i % BANKS;
    double *a = p->acc + (slot * p->k + from) * (d + 1);
    double *b = p->acc + (slot * p->k + to) * (d + 1);
    double wi = p->w[i];
    for (Py_ssize_t t = 0; t < d; t++) {
        double v = wi * coord(p, i, t);
        a[t] -= v;
        b[t] += v;
    }
    a[d] -= wi;
    b[d] += wi;
}

static void clear_sums(const Problem *p)
{
    memset(p->acc, 0, sizeof(double) * SLOTS * p->k * (p->d + 1));
}

/* The clusters' weighted sums (K x D) and masses (K), banks added in a fixed order. */
static void combine_sums(const Problem *p, double *sums, double *mass)
{
    Py_ssize_t k = p->k, d = p->d;
    for (Py_ssize_t j = 0; j < k; j++) {
        for (Py_ssize_t t = 0; t <= d; t++) {
            double s = 0.0;
            for (int b = 0; b < SLOTS; b++)
                s += p->acc[(b * k + j) * (d + 1) + t];
            if (t < d)
                sums[j * d + t] = s;
            else
                mass[j] = s;
        }
    }
}

/* Nearest centres and bounds of points [lo, hi), with their cluster sums. */
static void assign_range(Problem *p, Py_ssize_t lo, Py_ssize_t hi)
{
#ifdef HAVE_SSE2
    if (p->d == 3) {
        for (; lo + 1 < hi; lo += 2) {
            int label[2];
            __m128d first, second;
            nearest_two_pair(p, lo, lo + 1, label, &first, &second);
            p->labels[lo] = label[0];
            p->labels[lo + 1] = label[1];
            _mm_storeu_pd(p->upper + lo, _mm_sqrt_pd(first));
            _mm_storeu_pd(p->lower + lo, _mm_sqrt_pd(second));
            accumulate(p, lo, label[0]);
            accumulate(p, lo + 1, label[1]);
        }
    }
#endif
    for (Py_ssize_t i = lo; i < hi; i++) {
        double a, b;
        int label = nearest_two(p, i, &a, &b);
        p->labels[i] = label;
        p->upper[i] = sqrt(a);
        p->lower[i] = sqrt(b);
        accumulate(p, i, label);
    }
}

/* Empty clusters: each takes the point that costs the most where it is (weight times
 * squared distance), the costliest first; returns how many were empty. */
static Py_ssize_t reseed_empty(Problem *p, const double *mass, char *taken)
{
    Py_ssize_t empty = 0;
    int any = 0;
    for (Py_ssize_t j = 0; j < p->k; j++)
        any |= !(mass[j] > 0);
    if (!any)
        return 0;
    memset(taken, 0, p->m);
    for (Py_ssize_t j = 0; j < p->k; j++) {
        if (mass[j] > 0)
            continue;
        Py_ssize_t far = -1;
        double worst = -1.0;
        for (Py_ssize_t i = 0; i < p->m; i++) {
            double cost = p->w[i] * point_dist2(p, i, p->c + p->labels[i] * p->d);
            if (!taken[i] && cost > worst) {
                worst = cost;
                far = i;
            }
        }
        if (far < 0)
            break;
        taken[far] = 1;
        for (Py_ssize_t t = 0; t < p->d; t++)
            p->c[j * p->d + t] = coord(p, far, t);
        empty++;
    }
    return empty;
}

/* What a pass needs to know of the centres' last move (Hamerly's bounds). */
typedef struct {
    const double *shift, *half_gap;
    double top, second_top; /* the two largest shifts */
    Py_ssize_t top_j;
} Move;

static void describe_move(const Problem *p, const double *shift, double *half_gap, Move *mv)
{
    Py_ssize_t k = p->k, d = p->d;
    mv->shift = shift;
    mv->half_gap = half_gap;
    mv->top = mv->second_top = 0.0;
    mv->top_j = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        if (shift[j] > mv->top) {
            mv->second_top = mv->top;
            mv->top = shift[j];
            mv->top_j = j;
        }
        else if (shift[j] > mv->second_top) {
            mv->second_top = shift[j];
        }
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        double g = INFINITY;
        for (Py_ssize_t l = 0; l < k; l++) {
            if (l != j) {
                double s = dist2(p->c + j * d, p->c + l * d, d);
                g = s < g ? s : g;
            }
        }
        half_gap[j] = 0.5 * sqrt(g);
    }
}

/* A point searched in full: its new label, bounds and (exact problems) sums. */
static inline Py_ssize_t settle(Problem *p, Py_ssize_t i, int label, double first,
                                double runner)
{
    int a = p->labels[i];
    p->upper[i] = sqrt(first);
    p->lower[i] = sqrt(runner);
    p->labels[i] = label;
    if (label == a)
        return 0;
    if (p->exact)
        transfer(p, i, a, label);
    return 1;
}

/* Hamerly's pass over points [lo, hi) after the centres moved: update the bounds, search
 * the points whose bounds overlap; returns how many labels changed. A block of points at
 * a time: first the bounds, then the points to search, two at a time where SSE2 allows,
 * then (sums recomputed) every point's sums in point order, as one point at a time. */
#define BLOCK 256
static Py_ssize_t pass_bounded_range(Problem *p, const Move *mv, Py_ssize_t lo, Py_ssize_t hi,
                                     Py_ssize_t *searched)
{
    Py_ssize_t d = p->d;
    Py_ssize_t changed = 0, n = 0;
    Py_ssize_t todo[BLOCK];
    for (Py_ssize_t start = lo; start < hi; start += BLOCK) {
        Py_ssize_t end = hi - start > BLOCK ? start + BLOCK : hi, m = 0;
        for (Py_ssize_t i = start; i < end; i++) {
            int a = p->labels[i];
            /* Every term is loosened, not just the result: lower - shift can cancel, and
             * its rounding error is relative to the terms (found by review: a far move of
             * one centre left an exact tie unsearched). */
            double up = (p->upper[i] + mv->shift[a]) * (1.0 + LOOSEN);
            double low = p->lower[i] * (1.0 - LOOSEN) -
                         (a == mv->top_j ? mv->second_top : mv->top) * (1.0 + LOOSEN);
            double gap = mv->half_gap[a] * (1.0 - LOOSEN);
            double bound = gap > low ? gap : low;
            p->lower[i] = low;
            if (up >= bound) {
                up = sqrt(point_dist2(p, i, p->c + a * d));
                if (up >= bound) {
                    todo[m++] = i; /* bounds set when searched */
                    continue;
                }
            }
            p->upper[i] = up;
        }
        Py_ssize_t q = 0;
#ifdef HAVE_SSE2
        if (d == 3) {
            for (; q + 1 < m; q += 2) {
                int label[2];
                __m128d first, second;
                double f[2], r[2];
                nearest_two_pair(p, todo[q], todo[q + 1], label, &first, &second);
                _mm_storeu_pd(f, first);
                _mm_storeu_pd(r, second);
                changed += settle(p, todo[q], label[0], f[0], r[0]);
                changed += settle(p, todo[q + 1], label[1], f[1], r[1]);
            }
        }
#endif
        for (; q < m; q++) {
            double first, runner;
            int label = nearest_two(p, todo[q], &first, &runner);
            changed += settle(p, todo[q], label, first, runner);
        }
        n += m;
        if (!p->exact)
            for (Py_ssize_t i = start; i < end; i++)
                accumulate(p, i, p->labels[i]);
    }
    *searched = n;
    return changed;
}
#undef BLOCK

/* One pass over the points, as two halves (on two threads for heavy passes). */
typedef struct {
    Problem *p;
    const Move *mv; /* NULL: assign from scratch */
    Py_ssize_t lo, hi, changed, searched;
} Half;

static void *run_half(void *arg)
{
    Half *h = arg;
    h->changed = 0;
    h->searched = h->hi - h->lo;
    if (h->mv == NULL)
        assign_range(h->p, h->lo, h->hi);
    else
        h->changed = pass_bounded_range(h->p, h->mv, h->lo, h->hi, &h->searched);
    return NULL;
}

static Py_ssize_t pass(Problem *p, const Move *mv)
{
    Half first = {p, mv, 0, p->half, 0, 0}, second = {p, mv, p->half, p->m, 0, 0};
    if (mv == NULL || !p->exact)
        clear_sums(p);
    int done = 0;
#ifdef HAVE_THREADS
    pthread_t thread;
    if (p->threads > 1 && 4.0 * p->m + (double)p->searched * p->k >= THREADED_WORK &&
        pthread_create(&thread, NULL, run_half, &second) == 0) {
        run_half(&first);
        pthread_join(thread, NULL);
        done = 1;
    }
#endif
    if (!done) {
        run_half(&first);
        run_half(&second);
    }
    p->searched = first.searched + second.searched;
    return first.changed + second.changed;
}

/* Every point's nearest centre and bounds, with the cluster sums. */
static void assign_all(Problem *p)
{
    pass(p, NULL);
}

/* Relabel the points after the centres moved by shift; returns how many changed. */
static Py_ssize_t move_pass(Problem *p, const double *shift, double *half_gap)
{
    Move mv;
    describe_move(p, shift, half_gap, &mv);
    return pass(p, &mv);
}

/* Lloyd's iterations from an assigned state (labels, sums, bounds); see iterate(). */
static Py_ssize_t lloyd(Problem *p, Py_ssize_t max_iter, double tol_abs, double *work,
                        char *taken, int *converged)
{
    Py_ssize_t k = p->k, d = p->d;
    double *sums = work, *mass = sums + k * d, *shift = mass + k, *half_gap = shift + k;
    *converged = 0;
    Py_ssize_t n_iter;
    for (n_iter = 1; n_iter <= max_iter; n_iter++) {
        combine_sums(p, sums, mass);
        if (reseed_empty(p, mass, taken) > 0) {
            assign_all(p);
            continue;
        }
        double shift2 = 0.0;
        for (Py_ssize_t j = 0; j < k; j++) {
            double s = 0.0;
            for (Py_ssize_t t = 0; t < d; t++) {
                double mean = sums[j * d + t] / mass[j];
                double e = mean - p->c[j * d + t];
                p->c[j * d + t] = mean;
                s += e * e;
            }
            shift[j] = sqrt(s);
            shift2 += s;
        }
        Py_ssize_t changed = move_pass(p, shift, half_gap);
        if (changed == 0 || shift2 <= tol_abs) {
            *converged = 1;
            return n_iter;
        }
    }
    return max_iter;
}

#define N_STATE 7

/* Parses the state (x, w, centers, labels, upper, lower, sums) of m points and k centres
 * in d dimensions; fills p and views. */
static int problem(PyObject *const *objs, Py_ssize_t m, Py_ssize_t k, Py_ssize_t d,
                   int threads, int exact, Py_buffer *views, Problem *p)
{
    if (m < 1 || k < 1 || d < 1 || k > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "need m, k, d >= 1");
        return -1;
    }
    /* exact 2: exact, and the points are 8-bit values (uint8), not float64 */
    const Spec specs[N_STATE] = {
        {"points", exact == 2 ? 'u' : 'f', exact == 2 ? 1 : 8, m * d, 0},
        {"weights", 'f', 8, m, 0},
        {"centers", 'f', 8, k * d, 1},
        {"labels", 'i', 4, m, 1},     {"upper", 'f', 8, m, 1},   {"lower", 'f', 8, m, 1},
        {"sums", 'f', 8, SLOTS * k * (d + 1), 1},
    };
    if (get_all(objs, specs, N_STATE, views) < 0)
        return -1;
    p->x = exact == 2 ? NULL : views[0].buf;
    p->u8 = exact == 2 ? views[0].buf : NULL;
    p->w = views[1].buf;
    p->c = views[2].buf;
    p->labels = views[3].buf;
    p->upper = views[4].buf;
    p->lower = views[5].buf;
    p->acc = views[6].buf;
    p->m = m;
    p->k = k;
    p->d = d;
    p->half = (m + 1) / 2;
    p->searched = m;
    p->threads = threads;
    p->exact = exact != 0;
    return 0;
}

static int check_labels(const Problem *p)
{
    for (Py_ssize_t i = 0; i < p->m; i++) {
        if (p->labels[i] < 0 || p->labels[i] >= p->k) {
            PyErr_SetString(PyExc_ValueError, "labels: out of range of the centres");
            return -1;
        }
    }
    return 0;
}

static void release(Py_buffer *views)
{
    release_all(views, N_STATE);
}

static PyObject *py_assign(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[N_STATE];
    Py_ssize_t m, k, d;
    int threads, exact;
    if (!PyArg_ParseTuple(args, "OOOOOOOnnnii", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                          &m, &k, &d, &threads, &exact))
        return NULL;
    Py_buffer views[N_STATE];
    Problem p;
    if (problem(o, m, k, d, threads, exact, views, &p) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    assign_all(&p);
    Py_END_ALLOW_THREADS
    release(views);
    Py_RETURN_NONE;
}

static PyObject *py_iterate(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[N_STATE];
    Py_ssize_t m, k, d, max_iter;
    double tol_abs;
    int threads, exact;
    if (!PyArg_ParseTuple(args, "OOOOOOOnnniind", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                          &o[6], &m, &k, &d, &threads, &exact, &max_iter, &tol_abs))
        return NULL;
    Py_buffer views[N_STATE];
    Problem p;
    if (problem(o, m, k, d, threads, exact, views, &p) < 0)
        return NULL;
    if (check_labels(&p) < 0) {
        release(views);
        return NULL;
    }
    double *work = malloc(sizeof(double) * (k * d + 3 * k));
    char *taken = malloc(m);
    if (!work || !taken) {
        free(work);
        free(taken);
        release(views);
        return PyErr_NoMemory();
    }
    Py_ssize_t n_iter = 0;
    int converged = 0;
    Py_BEGIN_ALLOW_THREADS
    n_iter = lloyd(&p, max_iter, tol_abs, work, taken, &converged);
    Py_END_ALLOW_THREADS
    free(work);
    free(taken);
    release(views);
    return Py_BuildValue("(nO)", n_iter, converged ? Py_True : Py_False);
}

static PyObject *py_move(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[N_STATE], *target;
    Py_ssize_t m, k, d;
    int threads, exact;
    if (!PyArg_ParseTuple(args, "OOOOOOOnnniiO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                          &m, &k, &d, &threads, &exact, &target))
        return NULL;
    Py_buffer views[N_STATE], tv;
    Problem p;
    if (problem(o, m, k, d, threads, exact, views, &p) < 0)
        return NULL;
    const Spec spec = {"new centers", 'f', 8, k * d, 0};
    if (get(target, &tv, &spec) < 0) {
        release(views);
        return NULL;
    }
    if (check_labels(&p) < 0) {
        PyBuffer_Release(&tv);
        release(views);
        return NULL;
    }
    double *work = malloc(sizeof(double) * 2 * k);
    if (!work) {
        PyBuffer_Release(&tv);
        release(views);
        return PyErr_NoMemory();
    }
    Py_ssize_t changed;
    Py_BEGIN_ALLOW_THREADS
    const double *target_c = tv.buf;
    for (Py_ssize_t j = 0; j < k; j++)
        work[j] = sqrt(dist2(p.c + j * d, target_c + j * d, d));
    memcpy(p.c, target_c, sizeof(double) * k * d);
    changed = move_pass(&p, work, work + k);
    Py_END_ALLOW_THREADS
    free(work);
    PyBuffer_Release(&tv);
    release(views);
    return PyLong_FromSsize_t(changed);
}

/* The grid summary of kmeans._summary, step for step and bit for bit: the points'
 * bounding box is cut into cells per axis (from `cells`, grown by 1.25x + 1 up to `limit`,
 * several steps at once where the occupied cells predict it) until at least target / 2
 * cells are occupied or the next grid would have more than
 * max_cells cells. A point's cell along an axis is (x - low) * (cells / span): one
 * multiplication, where a division per point made this 2-3 times slower. Fills keys with
 * each point's rank among the occupied cells (in cell order) and returns their number, or
 * 0 when that is at least half the points (no summary worth making); grid_means then
 * adds the points up. */
/* One grid pass over points [lo, hi): each point's cell into keys, a flag per occupied
 * cell into flags. */
typedef struct {
    const double *x, *low, *factor;
    const unsigned char *u8; /* 8-bit points instead of x: cells from lut */
    const int *lut;          /* d x 256: the cell of each value along each axis */
    Py_ssize_t d, cells, lo, hi;
    int *keys;
    unsigned char *flags;
} GridPass;

static void *grid_range(void *arg)
{
    GridPass *g = arg;
    /* Locals, not the struct's fields: the stores below could alias those, which made
     * the compiler reload them on every point. */
    const Py_ssize_t d = g->d, cells = g->cells, hi = g->hi;
    int *keys = g->keys;
    unsigned char *flags = g->flags;
    if (g->u8) {
        const unsigned char *u8 = g->u8;
        const int *lut = g->lut;
        if (d == 3) {
            for (Py_ssize_t i = g->lo; i < hi; i++) {
                const unsigned char *p = u8 + 3 * i;
                Py_ssize_t key = ((Py_ssize_t)lut[p[0]] * cells + lut[256 + p[1]]) * cells +
                                 lut[512 + p[2]];
                keys[i] = (int)key;
                flags[key] = 1;
            }
            return NULL;
        }
        for (Py_ssize_t i = g->lo; i < hi; i++) {
            Py_ssize_t key = 0;
            for (Py_ssize_t t = 0; t < d; t++)
                key = key * cells + lut[t * 256 + u8[i * d + t]];
            keys[i] = (int)key;
            flags[key] = 1;
        }
        return NULL;
    }
    const double *x = g->x, *low = g->low, *factor = g->factor;
    for (Py_ssize_t i = g->lo; i < hi; i++) {
        Py_ssize_t key = 0;
        for (Py_ssize_t t = 0; t < d; t++) {
            Py_ssize_t c = (Py_ssize_t)((x[i * d + t] - low[t]) * factor[t]);
            key = key * cells + (c < cells - 1 ? c : cells - 1);
        }
        keys[i] = (int)key;
        flags[key] = 1;
    }
    return NULL;
}

/* Grid passes run on two threads from this many points (each thread flags its own copy
 * of the cells; measured 1.6x faster on 112k colours). */
#define THREADED_GRID 50000

/* x: float64 points, or with u8 their 8-bit values (the same points, a byte each). */
static Py_ssize_t grid_cells(const double *x, const unsigned char *u8, Py_ssize_t m,
                             Py_ssize_t d, Py_ssize_t cells, Py_ssize_t limit, Py_ssize_t target,
                             Py_ssize_t max_cells, int threads, int *keys, int *failed)
{
    double low[8], high[8], span[8], factor[8];
    int lut[8 * 256];
    if (u8) {
        /* Which values occur along each axis: a flag per value (one pass over the bytes,
         * no running extremes). */
        unsigned char seen[8][256];
        memset(seen, 0, sizeof(seen));
        if (d == 3) {
            for (Py_ssize_t i = 0; i < m; i++) {
                seen[0][u8[3 * i]] = 1;
                seen[1][u8[3 * i + 1]] = 1;
                seen[2][u8[3 * i + 2]] = 1;
            }
        }
        else {
            for (Py_ssize_t i = 0; i < m; i++)
                for (Py_ssize_t t = 0; t < d; t++)
                    seen[t][u8[i * d + t]] = 1;
        }
        for (Py_ssize_t t = 0; t < d; t++) {
            int a = 0, b = 255;
            while (!seen[t][a])
                a++;
            while (!seen[t][b])
                b--;
            low[t] = a;
            high[t] = b;
        }
    }
    else {
        /* An axis at a time, so that the running extremes stay in registers (kept in
         * arrays indexed by axis, they went through memory on every point: 4x slower). */
        for (Py_ssize_t t = 0; t < d; t++) {
            double lo = x[t], hi = lo;
            for (Py_ssize_t i = 1; i < m; i++) {
                double v = x[i * d + t];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            low[t] = lo;
            high[t] = hi;
        }
    }
    for (Py_ssize_t t = 0; t < d; t++)
        span[t] = high[t] - low[t] > 1e-12 ? high[t] - low[t] : 1e-12;
    unsigned char *flags = NULL;
    Py_ssize_t n = 0, size = 0;
    for (;;) {
        size = 1;
        for (Py_ssize_t t = 0; t < d; t++) {
            size *= cells;
            factor[t] = (double)cells / span[t];
        }
        free(flags);
        flags = calloc(2 * size, 1);
        if (!flags) {
            *failed = 1;
            return 0;
        }
        /* 8-bit values: each one's cell, by the same arithmetic as for a float64 point. */
        for (Py_ssize_t t = 0; u8 && t < d; t++) {
            for (int v = 0; v < 256; v++) {
                Py_ssize_t c = (Py_ssize_t)(((double)v - low[t]) * factor[t]);
                lut[t * 256 + v] = (int)(c < cells - 1 ? c : cells - 1);
            }
        }
        GridPass first = {x, low, factor, u8, lut, d, cells, 0, m, keys, flags};
        GridPass second = first;
        int done = 0;
#ifdef HAVE_THREADS
        pthread_t thread;
        if (threads > 1 && m >= THREADED_GRID) {
            first.hi = second.lo = m / 2;
            second.flags = flags + size;
            if (pthread_create(&thread, NULL, grid_range, &second) == 0) {
                grid_range(&first);
                pthread_join(thread, NULL);
                done = 1;
            }
        }
#endif
        if (!done) {
            first.hi = m;
            grid_range(&first);
        }
        n = 0;
        for (Py_ssize_t c = 0; c < size; c++) {
            flags[c] |= flags[size + c];
            n += flags[c];
        }
        Py_ssize_t next = 1;
        for (Py_ssize_t t = 0; t < d; t++)
            next *= cells + 1;
        if (n >= target / 2 || next > max_cells)
            break;
        /* kmeans._finer_grid: skip the grids that would still be too coarse. */
        double want = (double)cells * sqrt((double)(target / 2) / (double)(n > 0 ? n : 1));
        do {
            Py_ssize_t grown = (Py_ssize_t)((double)cells * 1.25) + 1;
            cells = grown < limit ? grown : limit;
        } while ((double)cells < want && cells < limit);
    }
    if (n >= m / 2) {
        free(flags);
        return 0;
    }
    int *rank = malloc(sizeof(int) * size);
    if (!rank) {
        free(flags);
        *failed = 1;
        return 0;
    }
    int r = 0;
    for (Py_ssize_t c = 0; c < size; c++)
        rank[c] = flags[c] ? r++ : -1;
    for (Py_ssize_t i = 0; i < m; i++)
        keys[i] = rank[keys[i]];
    free(rank);
    free(flags);
    return n;
}

/* Each cell's weighted sum and total weight over points [lo, hi), from grid_cells' ranks
 * (added into means and total); bad is set for a rank out of range. */
typedef struct {
    const double *x, *w;
    const unsigned char *u8;
    const int *keys;
    Py_ssize_t d, n, lo, hi;
    double *means, *total;
    int bad;
} MeansPass;

static void *means_range(void *arg)
{
    MeansPass *g = arg;
    const Py_ssize_t d = g->d, n = g->n, hi = g->hi;
    const double *x = g->x, *w = g->w;
    const unsigned char *u8 = g->u8;
    const int *keys = g->keys;
    double *means = g->means, *total = g->total;
    for (Py_ssize_t i = g->lo; i < hi; i++) {
        Py_ssize_t r = keys[i];
        if (r < 0 || r >= n) {
            g->bad = 1;
            return NULL;
        }
        for (Py_ssize_t t = 0; t < d; t++)
            means[r * d + t] += (u8 ? (double)u8[i * d + t] : x[i * d + t]) * w[i];
        total[r] += w[i];
    }
    return NULL;
}

/* Each cell's weighted mean and total weight; returns 0, or -1 for a rank out of range
 * and -2 out of memory. Sums run in point order (numpy's bincount adds in the same
 * order), except for exact points (integer values and weights, sums below 2^53: the
 * same in any order), whose halves are added up on two threads. */
static int grid_means(const double *x, const unsigned char *u8, const double *w,
                      const int *keys, Py_ssize_t m, Py_ssize_t d, Py_ssize_t n, double *means,
                      double *total, int threads, int exact)
{
    memset(means, 0, sizeof(double) * n * d);
    memset(total, 0, sizeof(double) * n);
    MeansPass first = {x, w, u8, keys, d, n, 0, m, means, total, 0};
    int done = 0;
#ifdef HAVE_THREADS
    if (exact && threads > 1 && m >= THREADED_GRID) {
        double *other = calloc(n * (d + 1), sizeof(double));
        if (!other)
            return -2;
        MeansPass second = first;
        first.hi = second.lo = m / 2;
        second.means = other;
        second.total = other + n * d;
        pthread_t thread;
        if (pthread_create(&thread, NULL, means_range, &second) == 0) {
            means_range(&first);
            pthread_join(thread, NULL);
            for (Py_ssize_t j = 0; j < n * d; j++)
                means[j] += other[j];
            for (Py_ssize_t r = 0; r < n; r++)
                total[r] += other[n * d + r];
            first.bad |= second.bad;
            done = 1;
        }
        else {
            first.hi = m;
        }
        free(other);
    }
#endif
    if (!done)
        means_range(&first);
    if (first.bad)
        return -1;
    for (Py_ssize_t r = 0; r < n; r++)
        for (Py_ssize_t t = 0; t < d; t++)
            means[r * d + t] /= total[r];
    return 0;
}

static PyObject *py_grid_cells(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[2];
    Py_ssize_t m, d, cells, limit, target, max_cells;
    int threads, bytes;
    if (!PyArg_ParseTuple(args, "OOnnnnnnii", &o[0], &o[1], &m, &d, &cells, &limit, &target,
                          &max_cells, &threads, &bytes))
        return NULL;
    if (m < 1 || d < 1 || d > 8 || cells < 1 || limit < 1 || max_cells > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "need m >= 1, 1 <= d <= 8, cells and limit >= 1");
        return NULL;
    }
    /* bytes: the points are uint8 values, not float64 */
    const Spec specs[2] = {
        {"points", bytes ? 'u' : 'f', bytes ? 1 : 8, m * d, 0},
        {"keys", 'i', 4, m, 1},
    };
    Py_buffer views[2];
    if (get_all(o, specs, 2, views) < 0)
        return NULL;
    Py_ssize_t n = 0;
    int failed = 0;
    const double *x = bytes ? NULL : views[0].buf;
    const unsigned char *u8 = bytes ? views[0].buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    n = grid_cells(x, u8, m, d, cells, limit, target, max_cells, threads, views[1].buf,
                   &failed);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    if (failed)
        return PyErr_NoMemory();
    return PyLong_FromSsize_t(n);
}

static PyObject *py_grid_means(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[5];
    Py_ssize_t m, d, n;
    int bytes, threads, exact;
    if (!PyArg_ParseTuple(args, "OOOOOnnniii", &o[0], &o[1], &o[2], &o[3], &o[4], &m, &d, &n,
                          &bytes, &threads, &exact))
        return NULL;
    if (m < 1 || d < 1 || n < 1) {
        PyErr_SetString(PyExc_ValueError, "need m, d, n >= 1");
        return NULL;
    }
    const Spec specs[5] = {
        {"points", bytes ? 'u' : 'f', bytes ? 1 : 8, m * d, 0},
        {"weights", 'f', 8, m, 0},
        {"keys", 'i', 4, m, 0},
        {"means", 'f', 8, n * d, 1},
        {"total", 'f', 8, n, 1},
    };
    Py_buffer views[5];
    if (get_all(o, specs, 5, views) < 0)
        return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = grid_means(bytes ? NULL : views[0].buf, bytes ? views[0].buf : NULL, views[1].buf,
                        views[2].buf, m, d, n, views[3].buf, views[4].buf, threads, exact);
    Py_END_ALLOW_THREADS
    release_all(views, 5);
    if (status == -2)
        return PyErr_NoMemory();
    if (status < 0) {
        PyErr_SetString(PyExc_ValueError, "keys: out of range of the cells");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Index of the first cumulative weight above target (numpy's searchsorted, side
 * "right"), at most m - 1. */
static Py_ssize_t pick(const double *cumulative, Py_ssize_t m, double target)
{
    Py_ssize_t lo = 0, hi = m;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (cumulative[mid] <= target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m - 1 ? lo : m - 1;
}

/* kmeans.kmeans_plusplus step for step, with the same arithmetic in the same order (so
 * the same centres, bit for bit): greedy weighted k-means++ with `trials` candidates per
 * centre, drawn with the given uniforms (1 + (k - 1) * trials of them). work: (trials +
 * 2) x m doubles. */
static void seed(const double *x, const double *w, Py_ssize_t m, Py_ssize_t d, Py_ssize_t k,
                 Py_ssize_t trials, const double *uniforms, double *centers, double *work)
{
    double *closest = work, *cumulative = work + m, *d2 = work + 2 * m;
    double total = 0.0;
    for (Py_ssize_t i = 0; i < m; i++)
        cumulative[i] = total += w[i];
    Py_ssize_t first = pick(cumulative, m, uniforms[0] * cumulative[m - 1]);
    memcpy(centers, x + first * d, sizeof(double) * d);
    for (Py_ssize_t i = 0; i < m; i++)
        closest[i] = dist2(x + i * d, centers, d);
    for (Py_ssize_t c = 1; c < k; c++) {
        total = 0.0;
        for (Py_ssize_t i = 0; i < m; i++)
            cumulative[i] = total += w[i] * closest[i];
        const double *u = uniforms + 1 + (c - 1) * trials;
        Py_ssize_t best = -1;
        double best_potential = INFINITY;
        for (Py_ssize_t t = 0; t < trials; t++) {
            Py_ssize_t candidate = pick(cumulative, m, u[t] * cumulative[m - 1]);
            const double *cx = x + candidate * d;
            double *row = d2 + t * m, potential = 0.0;
            for (Py_ssize_t i = 0; i < m; i++) {
                double s = dist2(x + i * d, cx, d);
                row[i] = s < closest[i] ? s : closest[i];
                potential += row[i] * w[i];
            }
            if (t == 0 || potential < best_potential) {
                best_potential = potential;
                best = t;
                memcpy(centers + c * d, cx, sizeof(double) * d);
            }
        }
        memcpy(closest, d2 + best * m, sizeof(double) * m);
    }
}

static PyObject *py_seed(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[4];
    Py_ssize_t m, d, k, trials;
    if (!PyArg_ParseTuple(args, "OOOOnnnn", &o[0], &o[1], &o[2], &o[3], &m, &d, &k, &trials))
        return NULL;
    if (m < 1 || d < 1 || k < 1 || trials < 1) {
        PyErr_SetString(PyExc_ValueError, "need m, d, k, trials >= 1");
        return NULL;
    }
    const Spec specs[4] = {{"points", 'f', 8, m * d, 0},
                           {"weights", 'f', 8, m, 0},
                           {"uniforms", 'f', 8, 1 + (k - 1) * trials, 0},
                           {"centers", 'f', 8, k * d, 1}};
    Py_buffer views[4];
    if (get_all(o, specs, 4, views) < 0)
        return NULL;
    double *work = malloc(sizeof(double) * (trials + 2) * m);
    if (work) {
        Py_BEGIN_ALLOW_THREADS
        seed(views[0].buf, views[1].buf, m, d, k, trials, views[2].buf, views[3].buf, work);
        Py_END_ALLOW_THREADS
    }
    free(work);
    release_all(views, 4);
    if (!work)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* error(x, w, centers, labels, mass, m, k, d): the weighted squared error, with each
 * cluster's total weight added into mass (K, zeroed by the caller) or, with mass None,
 * not. */
static PyObject *py_error(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[5];
    Py_ssize_t m, k, d;
    if (!PyArg_ParseTuple(args, "OOOOOnnn", &o[0], &o[1], &o[2], &o[3], &o[4], &m, &k, &d))
        return NULL;
    int with_mass = o[4] != Py_None;
    const Spec specs[5] = {
        {"points", 'f', 8, m * d, 0}, {"weights", 'f', 8, m, 0}, {"centers", 'f', 8, k * d, 0},
        {"labels", 'i', 4, m, 0},     {"mass", 'f', 8, k, 1},
    };
    Py_buffer views[5];
    if (get_all(o, specs, 4 + with_mass, views) < 0)
        return NULL;
    const double *x = views[0].buf, *w = views[1].buf, *c = views[2].buf;
    const int *labels = views[3].buf;
    double *mass = with_mass ? views[4].buf : NULL;
    double total = 0.0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m; i++) {
        if (labels[i] < 0 || labels[i] >= k) {
            bad = 1;
            break;
        }
        total += w[i] * dist2(x + i * d, c + labels[i] * d, d);
        if (mass)
            mass[labels[i]] += w[i];
    }
    Py_END_ALLOW_THREADS
    release_all(views, 4 + with_mass);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "labels: out of range of the centres");
        return NULL;
    }
    return PyFloat_FromDouble(total);
}

/* moments(x, w, out, m, d, exact): out = [sum w, sum w x (d), sum w x^2 (d)], each summed
 * in point order (kmeans._weighted_variance's numpy path adds in the same order); exact 2:
 * the points are uint8 (exact ones, see integral()). Three dimensions take one pass over
 * the points instead of one per axis: the seven sums are the same, each in point order. */
static PyObject *py_moments(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[3];
    Py_ssize_t m, d;
    int exact;
    if (!PyArg_ParseTuple(args, "OOOnni", &o[0], &o[1], &o[2], &m, &d, &exact))
        return NULL;
    if (m < 0 || d < 1)
        return PyErr_Format(PyExc_ValueError, "need m >= 0 and d >= 1");
    const Spec specs[3] = {{"points", exact == 2 ? 'u' : 'f', exact == 2 ? 1 : 8, m * d, 0},
                           {"weights", 'f', 8, m, 0},
                           {"out", 'f', 8, 1 + 2 * d, 1}};
    Py_buffer views[3];
    if (get_all(o, specs, 3, views) < 0)
        return NULL;
    const double *x = exact == 2 ? NULL : views[0].buf, *w = views[1].buf;
    const unsigned char *u8 = exact == 2 ? views[0].buf : NULL;
#define AT(i, t) (u8 ? (double)u8[(i) * d + (t)] : x[(i) * d + (t)])
    double *out = views[2].buf;
    Py_BEGIN_ALLOW_THREADS
    if (d == 3) {
        /* one pass over the points; the seven sums do not wait on one another */
        double mass = 0.0, a0 = 0.0, a1 = 0.0, a2 = 0.0, b0 = 0.0, b1 = 0.0, b2 = 0.0;
        for (Py_ssize_t i = 0; i < m; i++) {
            double x0 = AT(i, 0), x1 = AT(i, 1), x2 = AT(i, 2);
            double wi = w[i], v0 = wi * x0, v1 = wi * x1, v2 = wi * x2;
            mass += wi;
            a0 += v0;
            a1 += v1;
            a2 += v2;
            b0 += v0 * x0;
            b1 += v1 * x1;
            b2 += v2 * x2;
        }
        out[0] = mass;
        out[1] = a0;
        out[2] = a1;
        out[3] = a2;
        out[4] = b0;
        out[5] = b1;
        out[6] = b2;
    }
    else {
        double mass = 0.0;
        for (Py_ssize_t i = 0; i < m; i++)
            mass += w[i];
        out[0] = mass;
        for (Py_ssize_t t = 0; t < d; t++) {
            /* an axis at a time: the sums stay in registers */
            double s1 = 0.0, s2 = 0.0;
            for (Py_ssize_t i = 0; i < m; i++) {
                double v = AT(i, t);
                double wv = w[i] * v;
                s1 += wv;
                s2 += wv * v;
            }
            out[1 + t] = s1;
            out[1 + d + t] = s2;
        }
    }
    Py_END_ALLOW_THREADS
#undef AT
    release_all(views, 3);
    Py_RETURN_NONE;
}

/* Whether the points and weights are integers whose weighted sums stay below 2^53, so
 * that every sum of products of them is exact (see transfer()). */
static PyObject *py_integral(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o[2];
    Py_ssize_t m, d;
    if (!PyArg_ParseTuple(args, "OOnn", &o[0], &o[1], &m, &d))
        return NULL;
    const Spec specs[2] = {{"points", 'f', 8, m * d, 0}, {"weights", 'f', 8, m, 0}};
    Py_buffer views[2];
    if (get_all(o, specs, 2, views) < 0)
        return NULL;
    const double *x = views[0].buf, *w = views[1].buf;
    const double limit = 4503599627370496.0; /* 2^52, a margin below 2^53 */
    double mass = 0.0, moment = 0.0;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m && ok; i++) {
        double top = 0.0;
        for (Py_ssize_t t = 0; t < d; t++) {
            double v = fabs(x[i * d + t]);
            /* The cast is defined below 2^52; floor() is a call on baseline x86-64. */
            ok &= v < limit && (double)(int64_t)v == v;
            top = v > top ? v : top;
        }
        ok &= w[i] >= 0 && w[i] < limit && (double)(int64_t)w[i] == w[i];
        mass += w[i];
        moment += w[i] * top;
    }
    ok &= mass < limit && moment < limit;
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"assign", py_assign, METH_VARARGS,
     "assign(x, w, centers, labels, upper, lower, sums, m, k, d, threads, exact): every "
     "point's nearest centre, its bounds and the cluster sums, on at most threads (1 or 2) "
     "threads; exact: 1 see integral(), 2 the same with x uint8."},
    {"iterate", py_iterate, METH_VARARGS,
     "iterate(x, w, centers, labels, upper, lower, sums, m, k, d, threads, exact, max_iter, "
     "tol_abs) -> "
     "(n_iter, converged): Lloyd's iterations from an assigned state."},
    {"move", py_move, METH_VARARGS,
     "move(x, w, centers, labels, upper, lower, sums, m, k, d, threads, exact, new_centers) "
     "-> changed: move the centres and relabel the points whose bounds leave doubt."},
    {"grid_cells", py_grid_cells, METH_VARARGS,
     "grid_cells(x, keys, m, d, cells, limit, target, max_cells, threads, bytes) -> n: the "
     "occupied cells of a grid over the points (see kmeans._summary; float64, or uint8 with "
     "bytes) and each point's cell, or 0."},
    {"grid_means", py_grid_means, METH_VARARGS,
     "grid_means(x, w, keys, means, total, m, d, n, bytes, threads, exact): the weighted "
     "means and totals of the n cells."},
    {"seed", py_seed, METH_VARARGS,
     "seed(x, w, uniforms, centers, m, d, k, trials): greedy weighted k-means++ (see "
     "kmeans.kmeans_plusplus), into centers."},
    {"moments", py_moments, METH_VARARGS,
     "moments(x, w, out, m, d, exact): out = [sum w, sum w x, sum w x^2], in point order "
     "(exact 2: x is uint8)."},
    {"integral", py_integral, METH_VARARGS,
     "integral(x, w, m, d) -> bool: integer points and weights, weighted sums below 2^52."},
    {"error", py_error, METH_VARARGS,
     "error(x, w, centers, labels, mass, m, k, d) -> sum of w |x - c[label]|^2; adds "
     "each cluster's weight into mass (K) unless it is None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ckmeans", "The k-means engine's hot loops.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ckmeans(void)
{
    return PyModule_Create(&module);
}
