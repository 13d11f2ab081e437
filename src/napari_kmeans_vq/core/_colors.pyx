# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The colour-table kernels: packing 8-bit RGB pixels into keys, counting keys with a bit
per possible key, and encoding pixels through a key -> label table.

Keys of up to 24 bits (8-bit RGB, or any colour of at most 3 bytes) are counted without a
sort: a bitmap with a bit per possible key marks the keys present (2 MiB for 2**24 keys),
the set bits are ranked (a prefix count per 64-bit word), and each pixel's count is then
added at its key's rank. Every key and label is checked against the tables' sizes before
it is used as an index.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

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
    """
    int nkvq_popcount(unsigned long long v) nogil

ctypedef fused label_t:
    uint8_t
    uint16_t

ctypedef fused value_t:
    uint8_t
    uint16_t


def pack_rgb8(const uint8_t[:, :] pixels, uint32_t[::1] keys, int n_threads):
    """keys = r | g << 8 | b << 16 for each (n, 3) pixel (any strides)."""
    cdef Py_ssize_t n = pixels.shape[0], i
    if pixels.shape[1] != 3 or keys.shape[0] != n:
        raise ValueError("pack_rgb8: expected (n, 3) pixels and n keys")
    with nogil:
        for i in prange(n, schedule="static", num_threads=n_threads):
            keys[i] = pixels[i, 0] | (<uint32_t>pixels[i, 1] << 8) | (<uint32_t>pixels[i, 2] << 16)


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


def set_keys(const uint64_t[::1] bits, uint32_t[::1] keys, uint8_t[:, ::1] colors):
    """The keys whose bit is set, in increasing order (``keys`` must hold them all), and
    each key's little-endian bytes in the row of ``colors`` (m, bytes per colour)."""
    cdef Py_ssize_t words = bits.shape[0], m = keys.shape[0], i, j = 0, b, bad = 0
    cdef Py_ssize_t nbytes = colors.shape[1]
    cdef uint64_t v, low
    cdef uint32_t key
    if colors.shape[0] != m or nbytes > 4:
        raise ValueError("colors: expected (m, at most 4)")
    with nogil:
        for i in range(words):
            v = bits[i]
            while v:
                low = v & (~v + 1)
                if j >= m:
                    bad = 1
                    break
                key = <uint32_t>(i * 64 + nkvq_popcount(low - 1))
                keys[j] = key
                for b in range(nbytes):
                    colors[j, b] = (key >> (8 * b)) & 255
                j += 1
                v ^= low
            if bad:
                break
    if bad or j != m:
        raise ValueError("keys: wrong size for the bits set")


def tally(
    const uint32_t[::1] keys,
    const uint64_t[::1] bits,
    const uint32_t[::1] before,
    int64_t[::1] counts,
):
    """counts[rank of key] += 1 for every key; every key's bit must be set."""
    cdef Py_ssize_t n = keys.shape[0], words = bits.shape[0], m = counts.shape[0], i, bad = 0
    cdef uint32_t key
    cdef uint64_t word, below
    cdef Py_ssize_t at
    if before.shape[0] != words:
        raise ValueError("before needs one entry per word")
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
            counts[at] += 1
    if bad:
        raise ValueError("a key is not in the table")


def lookup_decode(
    const uint32_t[::1] keys,
    const label_t[::1] table,
    const value_t[:, ::1] palette,
    label_t[::1] labels,
    value_t[:, ::1] out,
    int n_threads,
):
    """labels[i] = table[keys[i]] and out[i] = palette[labels[i]]; raises if a key is past
    the table or a label past the palette (a pixel that was not in the histogram)."""
    cdef Py_ssize_t n = keys.shape[0], size = table.shape[0], k = palette.shape[0]
    cdef Py_ssize_t c = palette.shape[1], i, j, bad = 0
    cdef uint32_t key
    cdef label_t lab
    if labels.shape[0] != n or out.shape[0] != n or out.shape[1] != c:
        raise ValueError("labels and out need one row per key")
    with nogil:
        for i in prange(n, schedule="static", num_threads=n_threads):
            key = keys[i]
            if key >= size:
                bad += 1
                continue
            lab = table[key]
            if lab >= k:
                bad += 1
                continue
            labels[i] = lab
            for j in range(c):
                out[i, j] = palette[lab, j]
    if bad:
        raise ValueError(f"a label is {k} or more, or a key past the table: a pixel not in the histogram")
