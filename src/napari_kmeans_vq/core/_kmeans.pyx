# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The k-means kernels: the one compiled implementation of every hot loop of the fit.

Points are an image's distinct colours (uint8 or uint16 for integer images, float64 else)
weighted by their pixel counts. Every function releases the GIL and splits its points into
fixed chunks of ``CHUNK`` points that OpenMP threads take in any order; the results do not
depend on the number of threads nor on which thread ran which chunk:

* a point's distances are sums of squared differences taken axis by axis in order, in
  float64, with no fused multiply-add (the build passes ``-ffp-contract=off``);
* integer points' cluster sums are int64, exact in any order (per-thread buffers, reduced
  at the end);
* float sums are made per chunk and the chunks' partial sums added in chunk order, or the
  points are added in point order on one thread;
* ties between centres go to the lower index.

Shapes and label ranges are checked here, before any loop, so that nothing a caller
passes can make the loops read or write out of bounds.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset


cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define NKVQ_OPENMP _OPENMP
    #define nkvq_max_threads() omp_get_max_threads()
    #else
    #define NKVQ_OPENMP 0
    #define nkvq_max_threads() 1
    #endif
    """
    int NKVQ_OPENMP
    int nkvq_max_threads() nogil

cdef extern from *:
    """
    #define NKVQ_STR2(x) #x
    #define NKVQ_STR(x) NKVQ_STR2(x)
    #if defined(__clang__)
    #define NKVQ_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define NKVQ_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define NKVQ_COMPILER "msvc " NKVQ_STR(_MSC_VER)
    #else
    #define NKVQ_COMPILER "unknown"
    #endif
    #if defined(__SANITIZE_ADDRESS__)
    #define NKVQ_ASAN 1
    #elif defined(__has_feature)
    #if __has_feature(address_sanitizer)
    #define NKVQ_ASAN 1
    #endif
    #endif
    #ifndef NKVQ_ASAN
    #define NKVQ_ASAN 0
    #endif
    """
    const char* NKVQ_COMPILER
    int NKVQ_ASAN

ctypedef fused point_t:
    uint8_t
    uint16_t
    double

# Points per chunk: the unit of work of a thread and of a float partial sum.
cdef enum:
    CHUNK = 1024
# Centres whose distances search() computes at once (a thread's stack array).
cdef enum:
    BLOCK = 32
# Few centres: up to this many, every search is a full one (a vectorised pass over all
# the centres costs less than walking a centre's neighbour list with its bound tests), and
# float cluster sums are kept in registers through runs of points of one cluster (with
# more clusters the runs are too short to pay).
cdef enum:
    FEW_CENTRES = 24
# Relative margin on Hamerly's bounds: they are updated in floating point, and a point is
# skipped only when its bounds prove, with this margin, that its centre did not change.
cdef double LOOSEN = 1e-9


def max_threads():
    """OpenMP's default team size for the calling thread (threadpoolctl limits it)."""
    return nkvq_max_threads()


def compiler():
    """The C compiler that built the extension, and whether AddressSanitizer was on."""
    return (<bytes>NKVQ_COMPILER).decode("ascii", "replace"), bool(NKVQ_ASAN)


def openmp_version():
    """The OpenMP version the extension was built with (yyyymm)."""
    return NKVQ_OPENMP


cdef inline double dist2(const point_t* x, const double* c, Py_ssize_t d) noexcept nogil:
    """Squared distance, summed axis by axis in order."""
    cdef double s = 0.0
    cdef double t
    cdef Py_ssize_t j
    for j in range(d):
        t = <double>x[j] - c[j]
        s = s + t * t
    return s


cdef inline void sq_dists(
    const point_t* v, const double* a, Py_ssize_t stride, Py_ssize_t lo, Py_ssize_t hi,
    Py_ssize_t d, double* out,
) noexcept nogil:
    """out[i - lo] = squared distance from ``v`` to point i of ``a``, for i in [lo, hi);
    ``a`` holds its points axis by axis (coordinate c of point i at a[c * stride + i]).
    Each is the same sum as :func:`dist2` (axis by axis, in order; (a - b)**2 and
    (b - a)**2 are equal), in loops compilers vectorise, the first three axes in one."""
    cdef Py_ssize_t i, c
    cdef double t, s, u
    for i in range(lo, hi):
        t = a[i] - <double>v[0]
        s = t * t  # (0.0 + t * t, as dist2 starts)
        if d > 1:
            t = a[stride + i] - <double>v[1]
            s = s + t * t
        if d > 2:
            t = a[2 * stride + i] - <double>v[2]
            s = s + t * t
        out[i - lo] = s
    for c in range(3, d):
        u = <double>v[c]
        for i in range(lo, hi):
            t = a[c * stride + i] - u
            out[i - lo] = out[i - lo] + t * t


# (not inline: inlined into the passes, it slows their bound tests at K >= 32)
cdef int32_t search(
    const point_t* x, const double* ct, Py_ssize_t k, Py_ssize_t d,
    double* first, double* second,
) noexcept nogil:
    """Nearest centre (ties to the lower index); its squared distance and the second's.
    ``ct`` holds the centres axis by axis (coordinate c of centre j at ``ct[c * k + j]``),
    so that the distances to a block of centres come from :func:`sq_dists`."""
    cdef double s[BLOCK]
    cdef double b1 = INFINITY
    cdef double b2 = INFINITY
    cdef double v
    cdef int32_t best = 0
    cdef Py_ssize_t start = 0, n, j
    while start < k:
        n = min(<Py_ssize_t>BLOCK, k - start)
        sq_dists(x, ct + start, k, 0, n, d, s)
        for j in range(n):  # (no branches: which centre is nearest is unpredictable)
            v = s[j]
            if v < b1:
                best = <int32_t>(start + j)
            b2 = min(b2, max(b1, v))
            b1 = min(b1, v)
        start = start + n
    first[0] = b1
    second[0] = b2
    return best


cdef inline int32_t search_from(
    const point_t* x, const double* centers, Py_ssize_t k, Py_ssize_t d,
    int32_t a, double r2, const int32_t* nbr, const double* gap, Py_ssize_t width,
    double slack, double* first, double* second,
) noexcept nogil:
    """:func:`search` starting from centre ``a`` (at squared distance ``r2``) and going
    through its nearest other centres in order of distance (``nbr``, ``gap``: ``width`` of
    them, measured when the centres were up to ``slack`` closer to or farther from ``a``
    than now). Once a centre is farther from ``a`` than r + (second best distance), no
    centre after it can be nearer than the best two (triangle inequality), so the search
    stops: the same answer as a full search, ties to the lower index included. A list run
    through without stopping that does not hold every other centre returns -1: the caller
    then makes the full search."""
    cdef double b1 = r2
    cdef double b2 = INFINITY
    cdef double r = sqrt(r2)
    cdef double s
    cdef double reach = INFINITY  # (r + sqrt(b2)) * (1 + LOOSEN), taken when b2 changes
    cdef int32_t best = a, j
    cdef Py_ssize_t n
    for n in range(width):
        if gap[n] - slack > reach:
            first[0] = b1
            second[0] = b2
            return best
        j = nbr[n]
        s = dist2(x, centers + j * d, d)
        if s < b1 or (s == b1 and j < best):
            b2 = b1
            b1 = s
            best = j
            reach = (r + sqrt(b2)) * (1.0 + LOOSEN)
        elif s < b2:
            b2 = s
            reach = (r + sqrt(b2)) * (1.0 + LOOSEN)
    if width == k - 1:
        first[0] = b1
        second[0] = b2
        return best
    return -1


cdef inline Py_ssize_t n_chunks(Py_ssize_t m) noexcept nogil:
    return (m + CHUNK - 1) // CHUNK


cdef double* transposed(const double[:, ::1] centers) except NULL:
    """The centres axis by axis, as search() takes them (free() it)."""
    cdef Py_ssize_t k = centers.shape[0], d = centers.shape[1], j, c
    if d < 1:  # search() and sq_dists() read the first axis whatever D is
        raise ValueError("centres need at least one coordinate, got (K, 0)")
    cdef double* ct = <double*>malloc(max(1, k * d) * sizeof(double))
    if ct == NULL:
        raise MemoryError()
    for j in range(k):
        for c in range(d):
            ct[c * k + j] = centers[j, c]
    return ct


def _check_rows(rows, Py_ssize_t m, Py_ssize_t d):
    """Whether integer ``rows`` are given (M, D + 1), or none (0 rows)."""
    if rows.shape[1] != d + 1 or rows.shape[0] not in (0, m):
        raise ValueError(f"rows: expected ({m}, {d + 1}) or (0, {d + 1})")
    return rows.shape[0] == m and m > 0


def _check_points(x, w, Py_ssize_t d=-1):
    if x.shape[1] < 1:
        raise ValueError("points need at least one coordinate, got (M, 0)")
    if w is not None and w.shape[0] != x.shape[0]:
        raise ValueError(f"weights: expected {x.shape[0]}, got {w.shape[0]}")
    if d >= 0 and x.shape[1] != d:
        raise ValueError(f"points have {x.shape[1]} coordinates, centers {d}")


def nearest(
    const point_t[:, ::1] x,
    const double[:, ::1] centers,
    int32_t[::1] labels,
    double[::1] upper,
    double[::1] lower,
    const int32_t[:, ::1] nbr,
    const double[:, ::1] gap,
    const double[::1] slack,
    bint guess,
    int n_threads,
):
    """Every point's nearest centre, the distance to it (``upper``) and to the second
    nearest (``lower``, inf for one centre). With ``guess``, ``labels`` holds a centre near
    each point to start from, and the search goes through that centre's neighbours
    (``nbr``, ``gap`` from :func:`geometry`, ``slack`` as in :func:`move`; with up to
    ``FEW_CENTRES`` centres the search is a full one all the same); the answer is that
    of a full search."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = centers.shape[0]
    cdef Py_ssize_t c, i, stop, width = nbr.shape[1], bad = 0
    cdef double b1, b2
    cdef int32_t a
    cdef double* ct
    _check_points(x, None, centers.shape[1])
    if labels.shape[0] != m or upper.shape[0] != m or lower.shape[0] != m:
        raise ValueError("labels and bounds need one entry per point")
    if k < 1:
        raise ValueError("need at least one centre")
    if guess and (nbr.shape[0] != k or gap.shape[0] != k or gap.shape[1] != width or width > k - 1):
        raise ValueError("nbr and gap: expected (K, width) with width < K")
    if guess and slack.shape[0] != k:
        raise ValueError("slack needs one entry per centre")
    ct = transposed(centers)
    with nogil:
        for c in prange(n_chunks(m), schedule="dynamic", num_threads=max(1, n_threads)):
            stop = min(m, (c + 1) * CHUNK)
            for i in range(c * CHUNK, stop):
                b1 = b2 = 0.0  # (assigned here, so that each thread has its own)
                if guess:
                    a = labels[i]
                    if a < 0 or a >= k:
                        bad += 1
                        continue
                if k <= FEW_CENTRES or not guess:
                    labels[i] = search(&x[i, 0], ct, k, d, &b1, &b2)
                else:
                    labels[i] = search_from(
                        &x[i, 0], &centers[0, 0], k, d, a, dist2(&x[i, 0], &centers[a, 0], d),
                        &nbr[a, 0], &gap[a, 0], width, slack[a], &b1, &b2,
                    )
                    if labels[i] < 0:
                        labels[i] = search(&x[i, 0], ct, k, d, &b1, &b2)
                upper[i] = sqrt(b1)
                lower[i] = sqrt(b2)
    free(ct)
    if bad:
        raise ValueError("labels out of range")


def nearest_after_swap(
    const point_t[:, ::1] x,
    const double[:, ::1] centers,
    Py_ssize_t swapped,
    const int32_t[::1] labels_before,
    const double[::1] lower_before,
    const int32_t[:, ::1] nbr,
    const double[:, ::1] gap,
    int32_t[::1] labels,
    double[::1] upper,
    double[::1] lower,
    int n_threads,
):
    """:func:`nearest` once centre ``swapped`` has been replaced (the local search's
    swap), from each point's nearest centre before (``labels_before``) and a lower bound
    on its distance to the second nearest then (``lower_before``). A point whose centre
    stayed has it or the new centre for nearest (compared on squared distances, ties to
    the lower index, as a full search does); only the points of the swapped centre are
    searched (through ``nbr``, ``gap`` from :func:`geometry` with the new centres). The
    labels are those of a full search; ``upper`` is exact, ``lower`` a lower bound."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = centers.shape[0]
    cdef Py_ssize_t c, i, stop, width = nbr.shape[1], bad = 0
    cdef double b1, b2, s
    cdef int32_t a, b, j = <int32_t>swapped
    cdef double* ct
    _check_points(x, None, centers.shape[1])
    if labels.shape[0] != m or upper.shape[0] != m or lower.shape[0] != m:
        raise ValueError("labels and bounds need one entry per point")
    if labels_before.shape[0] != m or lower_before.shape[0] != m:
        raise ValueError("labels_before and lower_before need one entry per point")
    if not 0 <= swapped < k:
        raise ValueError("swapped: not a centre")
    if nbr.shape[0] != k or gap.shape[0] != k or gap.shape[1] != width or width > k - 1:
        raise ValueError("nbr and gap: expected (K, width) with width < K")
    ct = transposed(centers)
    with nogil:
        for c in prange(n_chunks(m), schedule="dynamic", num_threads=max(1, n_threads)):
            stop = min(m, (c + 1) * CHUNK)
            for i in range(c * CHUNK, stop):
                a = labels_before[i]
                if a < 0 or a >= k:
                    bad += 1
                    continue
                s = dist2(&x[i, 0], &centers[j, 0], d)
                if a != j:
                    b1 = dist2(&x[i, 0], &centers[a, 0], d)
                    if s < b1 or (s == b1 and j < a):
                        labels[i] = j
                        upper[i] = sqrt(s)
                        lower[i] = sqrt(b1)
                    else:
                        labels[i] = a
                        upper[i] = sqrt(b1)
                        lower[i] = min(lower_before[i], sqrt(s))
                    continue
                b1 = b2 = 0.0
                b = -1
                if k > FEW_CENTRES:
                    b = search_from(
                        &x[i, 0], &centers[0, 0], k, d, j, s, &nbr[j, 0], &gap[j, 0], width,
                        0.0, &b1, &b2,
                    )
                if b < 0:
                    b = search(&x[i, 0], ct, k, d, &b1, &b2)
                labels[i] = b
                upper[i] = sqrt(b1)
                lower[i] = sqrt(b2)
    free(ct)
    if bad:
        raise ValueError("labels out of range")


cdef inline bint ahead(double s, int32_t i, double t, int32_t j) noexcept nogil:
    """(distance, index) pairs in order: nearer first, then the lower index."""
    return s < t or (s == t and i < j)


def geometry(
    const double[:, ::1] old,
    const double[:, ::1] new,
    double[::1] shift,
    double[::1] half_gap,
    int32_t[:, ::1] nbr,
    double[:, ::1] gap,
    bint neighbours,
    int n_threads,
):
    """How far each centre moved; and, with ``neighbours``, half the distance from each new
    centre to the nearest other one (0 for a single centre) and each new centre's ``width``
    nearest other centres, nearest first (then the lower index), with their distances
    (``nbr``, ``gap``: (K, width)). The lists ``nbr`` holds on entry (any indices) are the
    order each row's sort starts from: lists of centres that moved a little are nearly
    sorted already."""
    cdef Py_ssize_t k = new.shape[0], d = new.shape[1], width = nbr.shape[1], j, i, n, p, q
    cdef Py_ssize_t nt = max(1, n_threads), t
    cdef double s, s2
    cdef double* key
    cdef int32_t* idx
    cdef char* mark
    cdef double* keys = NULL
    cdef int32_t* idxs = NULL
    cdef char* marks = NULL
    cdef int32_t c
    if old.shape[0] != k or old.shape[1] != d or shift.shape[0] != k or half_gap.shape[0] != k:
        raise ValueError("centres, shifts and gaps must have matching shapes")
    if nbr.shape[0] != k or gap.shape[0] != k or gap.shape[1] != width or width > k - 1:
        raise ValueError("nbr and gap: expected (K, width) with width < K")
    if neighbours and width:
        keys = <double*>malloc(nt * k * sizeof(double))
        idxs = <int32_t*>malloc(nt * k * sizeof(int32_t))
        marks = <char*>calloc(nt * k, sizeof(char))
        if keys == NULL or idxs == NULL or marks == NULL:
            free(keys)
            free(idxs)
            free(marks)
            raise MemoryError()
    with nogil:
        for j in prange(k, schedule="dynamic", num_threads=nt):
            shift[j] = sqrt(dist2(&old[j, 0], &new[j, 0], d))
            if not neighbours:
                continue
            if width == 0:
                half_gap[j] = 0.0
                s = INFINITY
                for i in range(k):
                    if i != j:
                        s2 = dist2(&new[i, 0], &new[j, 0], d)
                        if s2 < s:
                            s = s2
                if k > 1:
                    half_gap[j] = 0.5 * sqrt(s)
                continue
            t = threadid()
            key = keys + t * k
            idx = idxs + t * k
            mark = marks + t * k
            # every other centre's squared distance, the previous list's centres first
            n = 0
            for p in range(width):
                c = nbr[j, p]
                if c < 0 or c >= k or c == j or mark[c]:
                    continue
                mark[c] = 1
                key[n] = dist2(&new[c, 0], &new[j, 0], d)
                idx[n] = c
                n = n + 1
            for i in range(k):
                if i == j:
                    continue
                if mark[i]:
                    mark[i] = 0  # (the marks are all cleared for the next row)
                    continue
                key[n] = dist2(&new[i, 0], &new[j, 0], d)
                idx[n] = <int32_t>i
                n = n + 1
            # insertion sort of the first width; a later one enters only ahead of the last
            for p in range(1, n):
                s = key[p]
                c = idx[p]
                q = p
                if p >= width:
                    if not ahead(s, c, key[width - 1], idx[width - 1]):
                        continue
                    q = width - 1
                while q > 0 and ahead(s, c, key[q - 1], idx[q - 1]):
                    key[q] = key[q - 1]
                    idx[q] = idx[q - 1]
                    q = q - 1
                key[q] = s
                idx[q] = c
            for p in range(width):
                gap[j, p] = sqrt(key[p])
                nbr[j, p] = idx[p]
            half_gap[j] = 0.5 * gap[j, 0]
    free(keys)
    free(idxs)
    free(marks)


def move(
    const point_t[:, ::1] x,
    const double[::1] w,
    const double[:, ::1] centers,
    const double[::1] shift,
    const double[::1] half_gap,
    const int32_t[:, ::1] nbr,
    const double[:, ::1] gap,
    const double[::1] slack,
    int32_t[::1] labels,
    double[::1] upper,
    double[::1] lower,
    const int64_t[:, ::1] rows,
    int64_t[:, :, ::1] delta,
    int n_threads,
):
    """Reassign the points after the centres moved by ``shift`` (Hamerly's bounds): only
    points whose bounds leave doubt (ties included) are searched again, so the labels are
    those of a full search. ``half_gap``, ``nbr`` and ``gap`` may be stale: each centre
    ``j`` is then at most ``slack[j]`` nearer to any other than they say. For integer
    points, or points with integer ``rows`` (M, D + 1: what each adds to its cluster's
    sums and weight; none: (0, D + 1)), ``delta`` (threads, K, D + 1) receives each
    thread's change of the clusters' int64 sums and weights. Returns how many points
    changed cluster."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = centers.shape[0]
    cdef Py_ssize_t c, i, j, stop, t, width = nbr.shape[1]
    cdef int32_t a, b
    cdef double u, u2, l, bound, b1, b2, step
    cdef double max1 = 0.0, max2 = 0.0
    cdef Py_ssize_t far = -1
    cdef Py_ssize_t changed = 0, bad = 0
    cdef int64_t wi
    cdef int64_t* row
    cdef double* ct
    cdef bint given = _check_rows(rows, m, x.shape[1])
    cdef bint track = point_t is not double or given
    _check_points(x, w, centers.shape[1])
    if labels.shape[0] != m or upper.shape[0] != m or lower.shape[0] != m:
        raise ValueError("labels and bounds need one entry per point")
    if shift.shape[0] != k or half_gap.shape[0] != k or slack.shape[0] != k or k < 1:
        raise ValueError("shift, half_gap and slack need one entry per centre")
    if nbr.shape[0] != k or gap.shape[0] != k or gap.shape[1] != width or width > k - 1:
        raise ValueError("nbr and gap: expected (K, width) with width < K")
    if track and (delta.shape[0] < max(1, n_threads) or delta.shape[1] != k or delta.shape[2] != d + 1):
        raise ValueError("delta: expected (threads, K, D + 1)")
    for j in range(k):  # the largest shift, and the largest of the others
        if shift[j] > max1:
            max2 = max1
            max1 = shift[j]
            far = j
        elif shift[j] > max2:
            max2 = shift[j]
    ct = transposed(centers)
    with nogil:
        for c in prange(n_chunks(m), schedule="dynamic", num_threads=max(1, n_threads)):
            t = threadid()
            stop = min(m, (c + 1) * CHUNK)
            for i in range(c * CHUNK, stop):
                a = labels[i]
                if a < 0 or a >= k:
                    bad += 1
                    continue
                u = (upper[i] + shift[a]) * (1.0 + LOOSEN)
                step = max2 if a == far else max1
                l = lower[i] * (1.0 - LOOSEN) - step * (1.0 + LOOSEN)
                bound = (half_gap[a] - 0.5 * slack[a]) * (1.0 - LOOSEN)
                if l > bound:
                    bound = l
                if u < bound:
                    upper[i] = u
                    lower[i] = l
                    continue
                b1 = b2 = 0.0  # (assigned here, so that each thread has its own)
                if k <= FEW_CENTRES:
                    b = search(&x[i, 0], ct, k, d, &b1, &b2)
                else:
                    u2 = dist2(&x[i, 0], &centers[a, 0], d)
                    u = sqrt(u2)
                    if u < bound:
                        upper[i] = u
                        lower[i] = l
                        continue
                    b = search_from(
                        &x[i, 0], &centers[0, 0], k, d, a, u2, &nbr[a, 0], &gap[a, 0], width,
                        slack[a], &b1, &b2,
                    )
                    if b < 0:
                        b = search(&x[i, 0], ct, k, d, &b1, &b2)
                upper[i] = sqrt(b1)
                lower[i] = sqrt(b2)
                if b != a:
                    labels[i] = b
                    changed += 1
                    if given:
                        row = &delta[t, a, 0]
                        for j in range(d + 1):
                            row[j] = row[j] - rows[i, j]
                        row = &delta[t, b, 0]
                        for j in range(d + 1):
                            row[j] = row[j] + rows[i, j]
                    elif track:
                        wi = <int64_t>w[i]
                        row = &delta[t, a, 0]
                        for j in range(d):
                            row[j] = row[j] - wi * <int64_t>x[i, j]
                        row[d] = row[d] - wi
                        row = &delta[t, b, 0]
                        for j in range(d):
                            row[j] = row[j] + wi * <int64_t>x[i, j]
                        row[d] = row[d] + wi
    free(ct)
    if bad:
        raise ValueError("labels out of range")
    return changed


cdef inline void _store3(
    double[:, ::1] sums, double[::1] mass, int32_t a, Py_ssize_t d,
    double s0, double s1, double s2, double sm,
) noexcept nogil:
    """Running sums of cluster ``a`` (none when ``a`` < 0) back into memory."""
    if a < 0:
        return
    sums[a, 0] = s0
    if d > 1:
        sums[a, 1] = s1
    if d > 2:
        sums[a, 2] = s2
    mass[a] = sm


cdef Py_ssize_t _float_sums3(
    const double[:, ::1] x,
    const double[::1] w,
    const int32_t[::1] labels,
    double[:, ::1] sums,
    double[::1] mass,
) noexcept nogil:
    """cluster_sums' float path for up to 3 axes, the same additions in the same order:
    a run of points in one cluster adds into running sums held in registers, not in
    memory, where each addition would wait for the last one's store (the summary's
    points, in grid order, come in such runs when the clusters are few). Returns 1 for a
    label out of range."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = sums.shape[0], i, bad = 0
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, sm = 0.0, wi
    cdef int32_t a, run = -1
    for i in range(m):
        a = labels[i]
        if a != run:
            if a < 0 or a >= k:
                bad = 1
                break
            _store3(sums, mass, run, d, s0, s1, s2, sm)
            run = a
            s0 = sums[a, 0]
            if d > 1:
                s1 = sums[a, 1]
            if d > 2:
                s2 = sums[a, 2]
            sm = mass[a]
        wi = w[i]
        s0 = s0 + wi * x[i, 0]
        if d > 1:
            s1 = s1 + wi * x[i, 1]
        if d > 2:
            s2 = s2 + wi * x[i, 2]
        sm = sm + wi
    _store3(sums, mass, run, d, s0, s1, s2, sm)
    return bad


def cluster_sums(
    const point_t[:, ::1] x,
    const double[::1] w,
    const int32_t[::1] labels,
    double[:, ::1] sums,
    double[::1] mass,
    const int64_t[:, ::1] rows,
    int n_threads,
):
    """Each cluster's weighted sum of points (K, D) and weight (K,). Integer points, or
    points with integer ``rows`` (as in :func:`move`): int64 sums per thread, added at
    the end (exact, any order; weights must be whole numbers). Float points: added in
    point order on one thread."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = sums.shape[0]
    cdef Py_ssize_t c, i, j, stop, t, nt = max(1, n_threads), bad = 0
    cdef int32_t a
    cdef int64_t wi
    cdef int64_t* buf
    cdef int64_t* row
    cdef bint given = _check_rows(rows, m, x.shape[1])
    _check_points(x, w, sums.shape[1])
    if labels.shape[0] != m or mass.shape[0] != k:
        raise ValueError("labels need one entry per point, mass one per cluster")
    if point_t is double and not given:
        with nogil:
            sums[:, :] = 0.0
            mass[:] = 0.0
            if d <= 3 and k <= FEW_CENTRES:
                bad = _float_sums3(x, w, labels, sums, mass)
            else:
                for i in range(m):
                    a = labels[i]
                    if a < 0 or a >= k:
                        bad += 1
                        break
                    for j in range(d):
                        sums[a, j] = sums[a, j] + w[i] * x[i, j]
                    mass[a] = mass[a] + w[i]
    else:
        buf = <int64_t*>calloc(nt * k * (d + 1), sizeof(int64_t))
        if buf == NULL:
            raise MemoryError()
        with nogil:
            for c in prange(n_chunks(m), schedule="static", num_threads=nt):
                t = threadid()
                stop = min(m, (c + 1) * CHUNK)
                for i in range(c * CHUNK, stop):
                    a = labels[i]
                    if a < 0 or a >= k:
                        bad += 1
                        continue
                    row = buf + (t * k + a) * (d + 1)
                    if given:
                        for j in range(d + 1):
                            row[j] = row[j] + rows[i, j]
                        continue
                    wi = <int64_t>w[i]
                    for j in range(d):
                        row[j] = row[j] + wi * <int64_t>x[i, j]
                    row[d] = row[d] + wi
            for a in range(k):
                for j in range(d + 1):
                    wi = 0
                    for t in range(nt):
                        wi = wi + buf[(t * k + a) * (d + 1) + j]
                    if j < d:
                        sums[a, j] = <double>wi
                    else:
                        mass[a] = <double>wi
        free(buf)
    if bad:
        raise ValueError("labels out of range")


def apply_delta(int64_t[:, :, ::1] delta, int64_t[:, ::1] total):
    """Add every thread's change of the int64 sums to ``total`` (K, D + 1), then clear it."""
    cdef Py_ssize_t nt = delta.shape[0], k = delta.shape[1], e = delta.shape[2], t, a, j
    if total.shape[0] != k or total.shape[1] != e:
        raise ValueError("total: expected (K, D + 1)")
    with nogil:
        for t in range(nt):
            for a in range(k):
                for j in range(e):
                    total[a, j] = total[a, j] + delta[t, a, j]
                    delta[t, a, j] = 0


def update(
    const double[:, ::1] sums,
    const double[::1] mass,
    const double[:, ::1] centers,
    double[:, ::1] means,
):
    """Lloyd's update: ``means`` = each cluster's sum over its weight. Returns how many
    clusters are empty (weight 0: their means are not set), the summed squared shift of
    the others' centres, and the summed weight times squared shift (the cost the update
    takes off), both added in cluster order."""
    cdef Py_ssize_t k = centers.shape[0], d = centers.shape[1], j, a
    cdef Py_ssize_t empty = 0
    cdef double step, t, shift2 = 0.0, gain = 0.0
    if sums.shape[0] != k or sums.shape[1] != d or mass.shape[0] != k:
        raise ValueError("sums (K, D) and mass (K,) must match the centres")
    if means.shape[0] != k or means.shape[1] != d:
        raise ValueError("means: expected (K, D)")
    with nogil:
        for a in range(k):
            if not mass[a] > 0.0:
                empty += 1
                continue
            step = 0.0
            for j in range(d):
                means[a, j] = sums[a, j] / mass[a]
                t = means[a, j] - centers[a, j]
                step = step + t * t
            shift2 = shift2 + step
            gain = gain + mass[a] * step
    return empty, shift2, gain


def weighted_error(
    const point_t[:, ::1] x,
    const double[::1] w,
    const double[:, ::1] centers,
    const int32_t[::1] labels,
    double[::1] mass,
    int n_threads,
):
    """Sum of weight times squared distance to the labelled centre (per-chunk partial sums
    added in chunk order), and each centre's total weight into ``mass``."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = centers.shape[0]
    cdef Py_ssize_t c, i, stop, nc = n_chunks(m), bad = 0
    cdef int32_t a
    cdef double s, total = 0.0
    cdef double* part
    _check_points(x, w, centers.shape[1])
    if labels.shape[0] != m or mass.shape[0] != k:
        raise ValueError("labels need one entry per point, mass one per centre")
    part = <double*>malloc(max(nc, 1) * sizeof(double))
    if part == NULL:
        raise MemoryError()
    with nogil:
        for c in prange(nc, schedule="static", num_threads=max(1, n_threads)):
            s = 0.0
            stop = min(m, (c + 1) * CHUNK)
            for i in range(c * CHUNK, stop):
                a = labels[i]
                if a < 0 or a >= k:
                    bad += 1
                    continue
                s = s + w[i] * dist2(&x[i, 0], &centers[a, 0], d)
            part[c] = s
        for c in range(nc):
            total = total + part[c]
        mass[:] = 0.0
        if not bad:
            for i in range(m):
                mass[labels[i]] = mass[labels[i]] + w[i]
    free(part)
    if bad:
        raise ValueError("labels out of range")
    return total


def moments(const point_t[:, ::1] x, const double[::1] w, double[::1] out, int n_threads):
    """[sum w, sum w x (D), sum w x**2 (D)]: per-chunk partial sums added in chunk order."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], e = 1 + 2 * d
    cdef Py_ssize_t c, i, j, stop, nc = n_chunks(m)
    cdef double v
    cdef double* part
    cdef double* p
    _check_points(x, w)
    if out.shape[0] != e:
        raise ValueError("out: expected 1 + 2 D entries")
    part = <double*>calloc(max(nc, 1) * e, sizeof(double))
    if part == NULL:
        raise MemoryError()
    with nogil:
        for c in prange(nc, schedule="static", num_threads=max(1, n_threads)):
            p = part + c * e
            stop = min(m, (c + 1) * CHUNK)
            for i in range(c * CHUNK, stop):
                p[0] = p[0] + w[i]
                for j in range(d):
                    v = w[i] * x[i, j]
                    p[1 + j] = p[1 + j] + v
                    p[1 + d + j] = p[1 + d + j] + v * x[i, j]
        out[:] = 0.0
        for c in range(nc):
            for j in range(e):
                out[j] = out[j] + part[c * e + j]
    free(part)


cdef inline Py_ssize_t draw(const double* cumulative, Py_ssize_t m, double u) noexcept nogil:
    """The first index whose cumulative weight exceeds ``u`` times the total (the last one
    at most), as numpy's ``searchsorted(..., side="right")`` finds it."""
    cdef double target = u * cumulative[m - 1]
    cdef Py_ssize_t lo = 0, hi = m, mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if cumulative[mid] > target:
            hi = mid
        else:
            lo = mid + 1
    return lo if lo < m else m - 1


def draw_far(const double[::1] w, const double[::1] dist, double u):
    """The point drawn with probability proportional to weight times squared ``dist`` by
    the uniform number ``u`` (cumulative sums added in point order: the same draw on every
    machine); -1 when every product is 0."""
    cdef Py_ssize_t m = w.shape[0], i, found = -1
    cdef double total = 0.0
    cdef double* cumulative
    if dist.shape[0] != m:
        raise ValueError("dist needs one entry per weight")
    if m == 0:
        return -1
    cumulative = <double*>malloc(m * sizeof(double))
    if cumulative == NULL:
        raise MemoryError()
    with nogil:
        for i in range(m):
            total = total + w[i] * dist[i] * dist[i]
            cumulative[i] = total
        if total > 0.0:
            found = draw(cumulative, m, u)
    free(cumulative)
    return found


cdef inline void far_costs(
    const double* xt, Py_ssize_t m, Py_ssize_t d, Py_ssize_t lo, Py_ssize_t hi,
    const double* p, const double* w, const double* closest, double* out,
) noexcept nogil:
    """out[i - lo] = w[i] * min(closest[i], squared distance from point i to ``p``) for
    the points [lo, hi) of ``xt`` (the points axis by axis, as :func:`sq_dists` takes
    them)."""
    cdef Py_ssize_t i
    sq_dists(p, xt, m, lo, hi, d, out)
    for i in range(lo, hi):
        out[i - lo] = w[i] * min(closest[i], out[i - lo])


def plusplus(
    const double[:, ::1] x,
    const double[::1] w,
    const double[::1] uniforms,
    Py_ssize_t trials,
    double[:, ::1] centers,
    int n_threads,
):
    """Greedy k-means++ seeding of ``centers`` (K, D): the first centre drawn with
    probability proportional to weight, each next one the best of ``trials`` candidates
    drawn with probability proportional to weight times squared distance to the nearest
    centre so far (the one whose potential, the sum of weight times squared distance to
    the nearest centre with it, is least; the first of equal ones). ``uniforms`` holds the
    1 + (K - 1) * trials numbers in [0, 1) the draws take, in order. Cumulative weights
    are added in point order and potentials per chunk, in point order, the chunks' sums
    in chunk order."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = centers.shape[0]
    cdef Py_ssize_t c, i, j, t, q, lo, hi, nc = n_chunks(m), best, nt = max(1, n_threads)
    cdef double s, total, a0, a1, a2, a3
    cdef double* xt
    cdef double* closest
    cdef double* cumulative
    cdef double* part
    cdef double* potential
    cdef double* costs
    cdef double* cost
    cdef double* p
    cdef Py_ssize_t* pick
    _check_points(x, w, centers.shape[1])
    if m < 1 or k < 1 or trials < 1:
        raise ValueError("plusplus needs points, centres and trials")
    if uniforms.shape[0] != 1 + (k - 1) * trials:
        raise ValueError("uniforms: expected 1 + (K - 1) * trials numbers")
    xt = <double*>malloc(m * d * sizeof(double))
    closest = <double*>malloc(m * sizeof(double))
    cumulative = <double*>malloc(m * sizeof(double))
    part = <double*>malloc(nc * trials * sizeof(double))
    potential = <double*>malloc(trials * sizeof(double))
    # each thread's costs of a chunk's points, for every candidate
    costs = <double*>malloc(nt * trials * CHUNK * sizeof(double))
    pick = <Py_ssize_t*>malloc(trials * sizeof(Py_ssize_t))
    if (xt == NULL or closest == NULL or cumulative == NULL or part == NULL
            or potential == NULL or costs == NULL or pick == NULL):
        free(xt)
        free(closest)
        free(cumulative)
        free(part)
        free(potential)
        free(costs)
        free(pick)
        raise MemoryError()
    with nogil:
        for i in range(m):
            for j in range(d):
                xt[j * m + i] = x[i, j]
        total = 0.0
        for i in range(m):
            total = total + w[i]
            cumulative[i] = total
        best = draw(cumulative, m, uniforms[0])
        for j in range(d):
            centers[0, j] = x[best, j]
        for i in prange(m, schedule="static", num_threads=nt):
            closest[i] = dist2(&x[i, 0], &centers[0, 0], d)
        for c in range(1, k):
            total = 0.0
            for i in range(m):
                total = total + w[i] * closest[i]
                cumulative[i] = total
            for t in range(trials):
                pick[t] = draw(cumulative, m, uniforms[1 + (c - 1) * trials + t])
            for j in prange(nc, schedule="static", num_threads=nt):
                lo = j * CHUNK
                hi = min(m, lo + CHUNK)
                cost = costs + threadid() * trials * CHUNK
                for t in range(trials):
                    far_costs(xt, m, d, lo, hi, &x[pick[t], 0], &w[0], closest, cost + t * CHUNK)
                # each candidate's sum in point order; four at a time, in registers
                for t in range(0, trials, 4):
                    q = min(4, trials - t)
                    a0 = a1 = a2 = a3 = 0.0
                    for i in range(hi - lo):
                        a0 = a0 + cost[t * CHUNK + i]
                        if q > 1:
                            a1 = a1 + cost[(t + 1) * CHUNK + i]
                        if q > 2:
                            a2 = a2 + cost[(t + 2) * CHUNK + i]
                        if q > 3:
                            a3 = a3 + cost[(t + 3) * CHUNK + i]
                    part[j * trials + t] = a0
                    if q > 1:
                        part[j * trials + t + 1] = a1
                    if q > 2:
                        part[j * trials + t + 2] = a2
                    if q > 3:
                        part[j * trials + t + 3] = a3
            best = 0
            for t in range(trials):
                s = 0.0
                for j in range(nc):
                    s = s + part[j * trials + t]
                potential[t] = s
                if s < potential[best]:
                    best = t
            for j in range(d):
                centers[c, j] = x[pick[best], j]
            for i in prange(m, schedule="static", num_threads=nt):
                s = dist2(&x[i, 0], &centers[c, 0], d)
                if s < closest[i]:
                    closest[i] = s
    free(xt)
    free(closest)
    free(cumulative)
    free(part)
    free(potential)
    free(costs)
    free(pick)


def grid_keys(
    const point_t[:, ::1] x,
    const double[::1] low,
    const double[::1] factor,
    int64_t cells,
    int64_t[::1] keys,
    uint8_t[::1] occupied,
    int n_threads,
):
    """Each point's cell in a grid of ``cells`` per axis: (x - low) * factor, truncated and
    clipped to 0 .. cells - 1 per axis, numbered row-major; and ``occupied[cell]`` set to
    1 for every cell with a point (``occupied``: cells**D entries, clear on entry). The
    caller keeps cells**D within int64 (and NaN, which cannot come from finite inputs,
    lands in cell 0)."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], i, j
    cdef double v
    cdef int64_t key, cell, size = 1
    if low.shape[0] != d or factor.shape[0] != d or keys.shape[0] != m:
        raise ValueError("low and factor need D entries, keys one per point")
    if cells < 1:
        raise ValueError("cells must be positive")
    for j in range(d):
        size = size * cells
    if occupied.shape[0] != size:
        raise ValueError("occupied needs cells**D entries")
    with nogil:
        for i in prange(m, schedule="static", num_threads=max(1, n_threads)):
            key = 0
            for j in range(d):
                v = (<double>x[i, j] - low[j]) * factor[j]
                if v >= <double>cells:
                    cell = cells - 1
                elif v >= 1.0:
                    cell = <int64_t>v
                else:
                    cell = 0
                key = key * cells + cell
            keys[i] = key
        for i in range(m):  # (one thread: no two threads write one byte)
            occupied[keys[i]] = 1


def reseed_costs(
    const point_t[:, ::1] x,
    const double[::1] w,
    const double[:, ::1] centers,
    const int32_t[::1] labels,
    double[::1] cost,
    int n_threads,
):
    """Each point's weight times its squared distance to its centre."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = centers.shape[0], i, bad = 0
    cdef int32_t a
    _check_points(x, w, centers.shape[1])
    if labels.shape[0] != m or cost.shape[0] != m:
        raise ValueError("labels and cost need one entry per point")
    with nogil:
        for i in prange(m, schedule="static", num_threads=max(1, n_threads)):
            a = labels[i]
            if a < 0 or a >= k:
                bad += 1
                cost[i] = 0.0
            else:
                cost[i] = w[i] * dist2(&x[i, 0], &centers[a, 0], d)
    if bad:
        raise ValueError("labels out of range")




def swap_costs(
    const point_t[:, ::1] x,
    const double[::1] w,
    const int32_t[::1] labels,
    const double[::1] upper,
    const double[::1] lower,
    const double[::1] candidate,
    double[::1] cost,
    int n_threads,
):
    """What swapping each centre for a candidate point would cost before Lloyd's
    iterations move anything (the swap of Lattanzi and Sohler's k-means++ local search):
    ``cost[j]``, the sum over points of weight times the squared distance to the nearest
    centre once centre ``j`` is replaced by ``candidate``. ``labels``, ``upper`` and
    ``lower`` must be those of a full search (:func:`nearest`): each point's centre and
    the distances to it and to the second nearest. Per-chunk partial sums added in chunk
    order."""
    cdef Py_ssize_t m = x.shape[0], d = x.shape[1], k = cost.shape[0], e = k + 1
    cdef Py_ssize_t c, i, j, stop, nc = n_chunks(m), bad = 0
    cdef int32_t a
    cdef double s, d1, d2, near, other, total
    cdef double* part
    cdef double* row
    _check_points(x, w, candidate.shape[0])
    if labels.shape[0] != m or upper.shape[0] != m or lower.shape[0] != m:
        raise ValueError("labels and bounds need one entry per point")
    if k < 1:
        raise ValueError("need at least one centre")
    part = <double*>calloc(max(nc, 1) * e, sizeof(double))
    if part == NULL:
        raise MemoryError()
    with nogil:
        # per chunk: the change, cluster by cluster, if that cluster's centre goes (its
        # points then go to the candidate or to their second nearest); then the cost with
        # the candidate added to all the centres
        for c in prange(nc, schedule="static", num_threads=max(1, n_threads)):
            row = part + c * e
            stop = min(m, (c + 1) * CHUNK)
            for i in range(c * CHUNK, stop):
                a = labels[i]
                if a < 0 or a >= k:
                    bad += 1
                    continue
                d1 = upper[i] * upper[i]
                d2 = lower[i] * lower[i]
                s = dist2(&x[i, 0], &candidate[0], d)
                near = s if s < d1 else d1
                other = s if s < d2 else d2
                row[k] = row[k] + w[i] * near
                row[a] = row[a] + w[i] * (other - near)
        total = 0.0
        for c in range(nc):
            total = total + part[c * e + k]
        for j in range(k):
            s = 0.0
            for c in range(nc):
                s = s + part[c * e + j]
            cost[j] = total + s
    free(part)
    if bad:
        raise ValueError("labels out of range")
