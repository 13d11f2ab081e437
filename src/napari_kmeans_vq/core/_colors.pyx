# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The colour-table kernels: packing 8-bit RGB pixels into keys, counting keys with a bit
per possible key, and encoding pixels through a key -> label table.

Keys of up to 24 bits (8-bit RGB, or any colour of at most 3 bytes) are counted without a
sort: a bitmap with a bit per possible key marks the keys present (2 MiB for 2**24 keys),
the set bits are ranked (a prefix count per 64-bit word) and read out in key order. So
that the counting stays in cache with many colours, the keys are first partitioned into
buckets of 2**16 by their high bits, and each bucket is counted in a small table of its
own. Histograms are merged by marking their keys, ranking, and adding each one's counts at
its keys' ranks. Every key and label is checked against the tables' sizes before it is
used as an index.
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__POPCNT__) || defined(__aarch64__))
    static inline int nkvq_popcount(unsigned long long v) { return __builtin_popcountll(v); }
    #else
    static inline int nkvq_popcount(unsigned long long v) {
        v = v - ((v >> 1) & 0x5555555555555555ULL);
        v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
        v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
        return (int)((v * 0x0101010101010101ULL) >> 56);
    }
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    static inline int nkvq_ctz(unsigned long long v) { return __builtin_ctzll(v); }
    #elif defined(_MSC_VER) && defined(_WIN64)
    #include <intrin.h>
    static inline int nkvq_ctz(unsigned long long v) {
        unsigned long i; _BitScanForward64(&i, v); return (int)i;
    }
    #else
    static inline int nkvq_ctz(unsigned long long v) { return nkvq_popcount((v & (~v + 1)) - 1); }
    #endif
    #include <stdint.h>
    #include <string.h>
    /* r | g << 8 | b << 16 of the 3 bytes at p, reading a fourth (which must exist). */
    static inline uint32_t nkvq_load24(const uint8_t *p) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        return p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
    #else
        uint32_t v;
        memcpy(&v, p, 4);
        return v & 0xFFFFFFu;
    #endif
    }
    """
    int nkvq_popcount(unsigned long long v) nogil
    int nkvq_ctz(unsigned long long v) nogil
    uint32_t nkvq_load24(const uint8_t *p) nogil

ctypedef fused label_t:
    uint8_t
    uint16_t
    uint32_t

ctypedef fused value_t:
    uint8_t
    uint16_t


def pack_rgb8(const uint8_t[:, :] pixels, uint32_t[::1] keys):
    """keys = r | g << 8 | b << 16 for each (n, 3) pixel (any strides)."""
    cdef Py_ssize_t n = pixels.shape[0], i
    if pixels.shape[1] != 3 or keys.shape[0] != n:
        raise ValueError("pack_rgb8: expected (n, 3) pixels and n keys")
    with nogil:
        for i in range(n):
            keys[i] = pixels[i, 0] | (<uint32_t>pixels[i, 1] << 8) | (<uint32_t>pixels[i, 2] << 16)


cdef Py_ssize_t _bucket_sizes(
    const uint32_t *keys, const uint8_t *rgb, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t size,
    Py_ssize_t *sizes,
) noexcept nogil:
    """sizes[key >> 16] += 1 for the keys of rows [lo, hi) (see :func:`_key`); returns how
    many keys are past ``size``."""
    cdef Py_ssize_t i, bad = 0
    cdef uint32_t key
    for i in range(lo, hi):
        key = _key(keys, rgb, i, hi)
        if key >= size:
            bad += 1
        else:
            sizes[key >> 16] += 1
    return bad


cdef void _scatter_low(
    const uint32_t *keys, const uint8_t *rgb, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t *at,
    uint16_t *low,
) noexcept nogil:
    """Each key of rows [lo, hi) to the next place of its bucket: low[at[key >> 16]++]."""
    cdef Py_ssize_t i
    cdef uint32_t key
    for i in range(lo, hi):
        key = _key(keys, rgb, i, hi)
        low[at[key >> 16]] = key & 0xFFFF
        at[key >> 16] += 1


cdef Py_ssize_t _count_bucket(
    const uint16_t *low,
    Py_ssize_t n,
    uint64_t *bits,
    Py_ssize_t words,
    uint32_t *tally,
    uint32_t *table,
) noexcept nogil:
    """One bucket: its n low halves counted in ``table`` (2**16 zeros, left zero) with
    their bits set in its ``words`` words of ``bits``, then the counts of its distinct keys,
    in key order, to the front of ``tally``; returns 1 if ``bits`` was not clear."""
    cdef Py_ssize_t i, w, j = 0
    cdef uint16_t v
    cdef uint64_t word
    for i in range(n):
        v = low[i]
        table[v] += 1
        bits[v >> 6] |= (<uint64_t>1) << (v & 63)
    for w in range(words):
        word = bits[w]
        while word:
            i = (w << 6) + nkvq_ctz(word)
            if j >= n:  # (bits that were set before: no room, and not ours)
                return 1
            tally[j] = table[i]
            table[i] = 0
            j += 1
            word = word & (word - 1)
    return 0


def mark(const uint32_t[::1] keys, uint64_t[::1] bits):
    """Set the bit of every key."""
    cdef Py_ssize_t n = keys.shape[0], words = bits.shape[0], i, bad = 0
    cdef uint32_t key
    with nogil:
        for i in range(n):
            key = keys[i]
            if (key >> 6) >= <uint64_t>words:
                bad = 1
                break
            bits[key >> 6] |= (<uint64_t>1) << (key & 63)
    if bad:
        raise ValueError("a key is larger than the bitmap")


def rank(const uint64_t[::1] bits, uint32_t[::1] before):
    """before[w] = set bits in the words before w; returns the number of set bits."""
    cdef Py_ssize_t words = bits.shape[0], i
    cdef int64_t total = 0
    if before.shape[0] != words:
        raise ValueError("before needs one entry per word")
    if words > (1 << 26):
        raise ValueError("bitmap too large")
    with nogil:
        for i in range(words):
            before[i] = <uint32_t>total
            total += nkvq_popcount(bits[i])
    return total


def set_keys(
    const uint64_t[::1] bits,
    const uint32_t[::1] before,
    uint32_t[::1] keys,
    uint8_t[:, ::1] colors,
    int n_threads,
):
    """The keys whose bit is set, in increasing order (``keys`` must hold them all, and
    ``before`` is :func:`rank`'s), and each key's little-endian bytes in the row of
    ``colors`` (m, bytes per colour)."""
    cdef Py_ssize_t words = bits.shape[0], m = keys.shape[0], i, j, b, bad = 0
    cdef Py_ssize_t nbytes = colors.shape[1]
    cdef uint64_t v
    cdef uint32_t key
    if colors.shape[0] != m or nbytes > 4:
        raise ValueError("colors: expected (m, at most 4)")
    if before.shape[0] != words:
        raise ValueError("before needs one entry per word")
    if words and before[words - 1] + nkvq_popcount(bits[words - 1]) != m:
        raise ValueError("keys: wrong size for the bits set")
    with nogil:
        for i in prange(words, schedule="static", num_threads=max(1, n_threads)):
            v = bits[i]
            j = before[i]
            if j + nkvq_popcount(v) > m:  # (a ``before`` that is not rank's)
                bad += 1
                continue
            while v:
                key = <uint32_t>(i * 64 + nkvq_ctz(v))
                keys[j] = key
                for b in range(nbytes):
                    colors[j, b] = (key >> (8 * b)) & 255
                j = j + 1
                v = v & (v - 1)
    if bad:
        raise ValueError("set_keys: before is not the bits' rank")


def tally(
    const uint32_t[::1] keys,
    const uint64_t[::1] bits,
    const uint32_t[::1] before,
    const int64_t[::1] weights,
    int64_t[::1] counts,
):
    """counts[rank of key] += weight for every key; every key's bit must be set."""
    cdef Py_ssize_t n = keys.shape[0], words = bits.shape[0], m = counts.shape[0], i, bad = 0
    cdef uint32_t key
    cdef uint64_t word, below
    cdef Py_ssize_t at
    if before.shape[0] != words or weights.shape[0] != n:
        raise ValueError("tally: before needs one entry per word, weights one per key")
    with nogil:
        for i in range(n):
            key = keys[i]
            if (key >> 6) >= <uint64_t>words:
                bad = 1
                break
            word = bits[key >> 6]
            below = (<uint64_t>1) << (key & 63)
            if not (word & below):
                bad = 1
                break
            at = before[key >> 6] + nkvq_popcount(word & (below - 1))
            if at >= m:
                bad = 1
                break
            counts[at] += weights[i]
    if bad:
        raise ValueError("a key is not in the table")


def count(
    const uint32_t[::1] keys,
    const uint8_t[:, ::1] rgb,
    uint64_t[::1] bits,
    uint16_t[::1] scratch,
    uint32_t[::1] tally,
    int64_t[::1] first,
    int n_threads,
):
    """Count the keys (``keys``, or 8-bit RGB pixels ``rgb`` (n, 3) packed on the fly when
    ``keys`` is empty): each distinct key's bit set in ``bits`` (clear on entry, a bit per
    possible key), and for each bucket b of 2**16 possible keys, its distinct keys' counts
    in increasing key order in ``tally[first[b]:]``.

    The keys are partitioned into the buckets by their high bits (their low halves into
    ``scratch``, the buckets' starts into ``first``, one entry per bucket and one more);
    each bucket is then counted in a table of 2**16 entries of its own thread (in cache),
    the buckets in parallel. ``scratch`` and ``tally`` hold at least one value per key;
    ``tally`` may be ``keys`` itself (the keys are read before any count is written).
    """
    cdef const uint32_t *key_at = NULL
    cdef const uint8_t *rgb_at = NULL
    cdef Py_ssize_t n = _rows(keys, rgb, &key_at, &rgb_at)
    cdef Py_ssize_t words = bits.shape[0], size = words * 64
    cdef Py_ssize_t i, t, b, at, bad = 0, buckets = max(1, size >> 16)
    cdef Py_ssize_t bucket_words = min(words, 1 << 10), teams = max(1, n_threads)
    cdef Py_ssize_t *start
    cdef uint16_t *low
    cdef uint32_t *tables
    if words < 1 or size > (1 << 32) or (size > (1 << 16) and size & 0xFFFF):
        raise ValueError("count: bits need a bit per possible key, at most 2**32")
    if scratch.shape[0] < n or tally.shape[0] < n or first.shape[0] != buckets + 1:
        raise ValueError("count: scratch and tally need one entry per key, first one per bucket and one more")
    first[0] = 0
    first[buckets] = n
    if n == 0:
        for b in range(buckets):
            first[b] = 0
        return
    start = <Py_ssize_t *>calloc(teams * buckets, sizeof(Py_ssize_t))
    tables = <uint32_t *>calloc(teams << 16, sizeof(uint32_t))
    low = &scratch[0]
    try:
        if start == NULL or tables == NULL:
            raise MemoryError()
        with nogil:
            # 1. each thread counts its share of the keys per bucket
            for t in prange(teams, schedule="static", num_threads=teams):
                bad += _bucket_sizes(
                    key_at, rgb_at, n * t // teams, n * (t + 1) // teams, size,
                    start + t * buckets,
                )
        if bad:
            raise ValueError("a key is larger than the bitmap")
        with nogil:
            # 2. where each (bucket, thread) share goes: buckets in order, threads within
            at = 0
            for b in range(buckets):
                first[b] = at
                for t in range(teams):
                    i = start[t * buckets + b]
                    start[t * buckets + b] = at
                    at += i
            # 3. each thread moves its keys' low 16 bits into their buckets
            for t in prange(teams, schedule="static", num_threads=teams):
                _scatter_low(
                    key_at, rgb_at, n * t // teams, n * (t + 1) // teams, start + t * buckets,
                    low,
                )
            # 4. the buckets, each in the calling thread's table
            for b in prange(buckets, schedule="dynamic", num_threads=teams):
                bad += _count_bucket(
                    low + first[b],
                    first[b + 1] - first[b],
                    &bits[b * bucket_words],
                    bucket_words,
                    &tally[0] + first[b],
                    tables + (<Py_ssize_t>threadid() << 16),
                )
        if bad:
            raise ValueError("count: the bits were not clear")
    finally:
        free(start)
        free(tables)


def count_values(const label_t[::1] values, int64_t[::1] counts):
    """counts[v] += 1 for each of ``values`` (labels); raises if a value is past
    ``counts``. Four interleaved tallies, so that runs of one value do not wait on each
    other's increments."""
    cdef Py_ssize_t n = values.shape[0], m = counts.shape[0], i, j, bad = 0
    cdef int64_t *lanes
    if m == 0:
        if n:
            raise ValueError("a value is past the counts")
        return
    lanes = <int64_t *>calloc(4 * m, sizeof(int64_t))
    if lanes == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in range(n):
                if values[i] >= m:
                    bad += 1
                else:
                    lanes[(i & 3) * m + values[i]] += 1
            for j in range(m):
                counts[j] += lanes[j] + lanes[m + j] + lanes[2 * m + j] + lanes[3 * m + j]
    finally:
        free(lanes)
    if bad:
        raise ValueError("a value is past the counts")


def count_in_table(
    const uint32_t[::1] keys,
    const uint8_t[:, ::1] rgb,
    uint32_t[::1] table,
    uint32_t[::1] seen,
):
    """table[key] += 1 for every key (``keys``, or 8-bit RGB pixels ``rgb`` (n, 3) packed
    on the fly when ``keys`` is empty), in one thread; each key's first appearance goes to
    ``seen`` (n entries) in order. ``table`` holds a count per possible key and is zero
    where these keys fall on entry; :func:`take_counts` reads the counts and clears them.
    Returns (distinct keys in ``seen``, keys past the table, which are not counted). At
    most 2**32 - 1 keys, so that no count wraps."""
    cdef const uint32_t *key_at = NULL
    cdef const uint8_t *rgb_at = NULL
    cdef Py_ssize_t n = _rows(keys, rgb, &key_at, &rgb_at)
    cdef Py_ssize_t size = table.shape[0], i, found = 0, bad = 0
    cdef uint32_t key
    cdef uint32_t *at
    cdef uint32_t *first
    if seen.shape[0] < n or n > 0xFFFFFFFF:
        raise ValueError("count_in_table: at most 2**32 - 1 keys, and seen needs one entry per key")
    if n == 0:
        return 0, 0
    at = &table[0]
    first = &seen[0]
    with nogil:
        for i in range(n):
            key = _key(key_at, rgb_at, i, n)
            if key >= size:
                bad += 1
                continue
            if at[key] == 0:
                first[found] = key
                found += 1
            at[key] += 1
    return found, bad


def take_counts(uint32_t[::1] table, const uint32_t[::1] keys, int64_t[::1] counts):
    """counts[i] = table[keys[i]], each entry cleared once read (so the table is zero again
    when every key :func:`count_in_table` saw is taken)."""
    cdef Py_ssize_t n = keys.shape[0], size = table.shape[0], i, bad = 0
    if counts.shape[0] != n:
        raise ValueError("take_counts: need one count per key")
    with nogil:
        for i in range(n):
            if keys[i] >= size:
                bad += 1
            else:
                counts[i] = table[keys[i]]
                table[keys[i]] = 0
    if bad:
        raise ValueError("a key is past the table")


cdef Py_ssize_t _rows(
    const uint32_t[::1] keys, const uint8_t[:, ::1] rgb, const uint32_t **key_at,
    const uint8_t **rgb_at,
) except -1:
    """The rows to look up: ``keys``, or 8-bit RGB pixels ``rgb`` (n, 3) when ``keys`` is
    empty; sets the pointer of the one given."""
    if keys.shape[0] == 0 and rgb.shape[0]:
        if rgb.shape[1] != 3:
            raise ValueError("rgb: expected (n, 3) pixels")
        rgb_at[0] = &rgb[0, 0]
        return rgb.shape[0]
    if rgb.shape[0]:
        raise ValueError("give keys or rgb pixels, not both")
    if keys.shape[0]:
        key_at[0] = &keys[0]
    return keys.shape[0]


cdef inline uint32_t _key(
    const uint32_t *keys, const uint8_t *rgb, Py_ssize_t i, Py_ssize_t end
) noexcept nogil:
    """The key of row i: keys[i], or 8-bit RGB row i packed, rows up to ``end`` readable.
    Rows before the last are read in one 4-byte load (the fourth byte, the next row's, is
    masked off): three byte loads cost the table passes a fifth of their time."""
    if keys != NULL:
        return keys[i]
    if i + 1 < end:
        return nkvq_load24(rgb + 3 * i)
    return rgb[3 * i] | (<uint32_t>rgb[3 * i + 1] << 8) | (<uint32_t>rgb[3 * i + 2] << 16)


def lookup(
    const uint32_t[::1] keys,
    const uint8_t[:, ::1] rgb,
    const label_t[::1] table,
    label_t[::1] labels,
    int64_t[::1] missing,
    int n_threads,
):
    """labels[i] = table[key], the key being ``keys[i]`` or, for 8-bit RGB pixels given
    as ``rgb`` (n, 3) instead (``keys`` empty), packed on the fly (no keys array to write
    and read back); raises if a key is past the table. With ``missing`` of n entries, the
    rows whose value is the dtype's largest (a table's mark for a colour it does not
    hold) go to its front, in order, and their number is returned (else 0)."""
    cdef const uint32_t *key_at = NULL
    cdef const uint8_t *rgb_at = NULL
    cdef Py_ssize_t n = _rows(keys, rgb, &key_at, &rgb_at)
    cdef Py_ssize_t size = table.shape[0], t, teams = max(1, n_threads), bad = 0, found = 0
    cdef Py_ssize_t lo, hi
    cdef Py_ssize_t *marks
    cdef int64_t *at = NULL
    if labels.shape[0] != n:
        raise ValueError("labels: need one per key")
    if missing.shape[0] not in (0, n):
        raise ValueError("missing: need one entry per key, or none")
    if n == 0:
        return 0
    if missing.shape[0]:
        at = &missing[0]
    marks = <Py_ssize_t *>calloc(teams, sizeof(Py_ssize_t))
    if marks == NULL:
        raise MemoryError()
    try:
        with nogil:
            for t in prange(teams, schedule="static", num_threads=teams):
                bad += _lookup_rows(
                    key_at, rgb_at, n * t // teams, n * (t + 1) // teams, &table[0], size,
                    &labels[0], at, marks + t
                )
            for t in range(teams):  # each team's rows to the front, in order
                lo = n * t // teams
                for hi in range(marks[t]):
                    missing[found + hi] = missing[lo + hi]
                found = found + marks[t]
    finally:
        free(marks)
    if bad:
        raise ValueError("a key is past the table")
    return found


cdef Py_ssize_t _lookup_rows(
    const uint32_t *keys,
    const uint8_t *rgb,
    Py_ssize_t lo,
    Py_ssize_t hi,
    const label_t *table,
    Py_ssize_t size,
    label_t *labels,
    int64_t *missing,
    Py_ssize_t *found,
) noexcept nogil:
    """lookup for rows [lo, hi), the rows holding the mark to missing[lo:] (if given),
    their number to ``found``; returns how many keys were past the table."""
    cdef Py_ssize_t i, bad = 0, j = lo
    cdef uint32_t key
    cdef label_t mark = <label_t>(-1)
    for i in range(lo, hi):
        key = _key(keys, rgb, i, hi)
        if key >= size:
            bad += 1
        else:
            labels[i] = table[key]
            if missing != NULL and labels[i] == mark:
                missing[j] = i
                j += 1
    found[0] = j - lo
    return bad


def lookup_decode(
    const uint32_t[::1] keys,
    const uint8_t[:, ::1] rgb,
    const label_t[::1] table,
    const value_t[:, ::1] palette,
    label_t[::1] labels,
    value_t[:, ::1] out,
    int n_threads,
):
    """:func:`lookup` (from ``keys`` or ``rgb`` pixels) and out[i] = palette[labels[i]];
    raises if a key is past the table or a label past the palette (a pixel that was not
    in the histogram)."""
    cdef const uint32_t *key_at = NULL
    cdef const uint8_t *rgb_at = NULL
    cdef Py_ssize_t n = _rows(keys, rgb, &key_at, &rgb_at)
    cdef Py_ssize_t size = table.shape[0], k = palette.shape[0]
    cdef Py_ssize_t c = palette.shape[1], t, teams = max(1, n_threads), bad = 0
    if labels.shape[0] != n or out.shape[0] != n or out.shape[1] != c:
        raise ValueError("labels and out need one row per key")
    if n == 0 or c == 0:
        return
    with nogil:
        for t in prange(teams, schedule="static", num_threads=teams):
            bad += _decode_rows(
                key_at, rgb_at, n * t // teams, n * (t + 1) // teams, &table[0], size,
                &palette[0, 0], k, c, &labels[0], &out[0, 0]
            )
    if bad:
        raise ValueError(f"a label is {k} or more, or a key past the table: a pixel not in the histogram")


cdef Py_ssize_t _decode_rows(
    const uint32_t *keys,
    const uint8_t *rgb,
    Py_ssize_t lo,
    Py_ssize_t hi,
    const label_t *table,
    Py_ssize_t size,
    const value_t *palette,
    Py_ssize_t k,
    Py_ssize_t c,
    label_t *labels,
    value_t *out,
) noexcept nogil:
    """lookup_decode for rows [lo, hi); returns how many rows were refused."""
    cdef Py_ssize_t i, j, bad = 0
    cdef uint32_t key
    cdef label_t lab
    cdef const value_t *row
    for i in range(lo, hi):
        key = _key(keys, rgb, i, hi)
        if key >= size:
            bad += 1
            continue
        lab = table[key]
        if lab >= k:
            bad += 1
            continue
        labels[i] = lab
        row = palette + lab * c
        if c == 3:  # (RGB: three stores the compiler can see)
            out[3 * i] = row[0]
            out[3 * i + 1] = row[1]
            out[3 * i + 2] = row[2]
        else:
            for j in range(c):
                out[i * c + j] = row[j]
    return bad
