"""Connected-component labelling and marker-based watershed flooding on a pixel grid
(numba kernels: numpy in, numpy out, serial, deterministic).

* ``label8(mask)``: 8-connected components of a boolean image in linear time
  (two-pass union–find). Components are numbered 1..n in raster order of their first
  pixel, so the numbering of a sub-window agrees with the whole image's order.
* ``flood(values, mask, markers)`` / ``flood_clusters(values, clusters, n, markers)``:
  priority flooding from marker pixels over the
  4-connected pixels of ``mask``, brightest first — scikit-image's ``watershed(-values,
  markers, mask=mask)`` (connectivity 1, compactness 0): a pixel takes the label of the
  neighbour that reaches it first; equal values are processed in order of arrival.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(nogil=True, cache=True)
def label8(mask):
    """8-connected components of ``mask`` (bool, 2-D). Returns (labels int32 with 0
    outside the mask, number of components)."""
    nr, nc = mask.shape
    out = np.zeros((nr, nc), np.int32)
    n_pix = 0
    for r in range(nr):
        for c in range(nc):
            if mask[r, c]:
                n_pix += 1
    parent = np.empty(n_pix + 1, np.int32)
    parent[0] = 0
    nxt = 1
    for r in range(nr):
        for c in range(nc):
            if not mask[r, c]:
                continue
            best = 0
            # already visited neighbours: W, NW, N, NE
            for dr, dc in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
                rr = r + dr
                cc = c + dc
                if rr < 0 or cc < 0 or cc >= nc:
                    continue
                q = out[rr, cc]
                if q == 0:
                    continue
                if best == 0:
                    best = q
                else:
                    a = _find(parent, best)
                    b = _find(parent, q)
                    if a != b:
                        if a < b:
                            parent[b] = a
                        else:
                            parent[a] = b
            if best == 0:
                parent[nxt] = nxt
                best = nxt
                nxt += 1
            out[r, c] = best
    # final numbers in raster order of each component's first pixel
    final = np.zeros(nxt, np.int32)
    n = 0
    for r in range(nr):
        for c in range(nc):
            q = out[r, c]
            if q == 0:
                continue
            root = _find(parent, q)
            if final[root] == 0:
                n += 1
                final[root] = n
            out[r, c] = final[root]
    return out, n


# -- a binary min-heap on (key, age) carrying a flat pixel index --------------------------
@njit(nogil=True, cache=True)
def _less(keys, ages, i, j):
    return keys[i] < keys[j] or (keys[i] == keys[j] and ages[i] < ages[j])


@njit(nogil=True, cache=True)
def _swap(keys, ages, items, i, j):
    keys[i], keys[j] = keys[j], keys[i]
    ages[i], ages[j] = ages[j], ages[i]
    items[i], items[j] = items[j], items[i]


@njit(nogil=True, cache=True)
def _push(keys, ages, items, size, key, age, item):
    i = size
    keys[i] = key
    ages[i] = age
    items[i] = item
    while i > 0:
        p = (i - 1) >> 1
        if _less(keys, ages, i, p):
            _swap(keys, ages, items, i, p)
            i = p
        else:
            break
    return size + 1


@njit(nogil=True, cache=True)
def _pop(keys, ages, items, size):
    """Remove the smallest element; returns (item, new size)."""
    top = items[0]
    size -= 1
    if size > 0:
        keys[0] = keys[size]
        ages[0] = ages[size]
        items[0] = items[size]
        i = 0
        while True:
            a = 2 * i + 1
            if a >= size:
                break
            b = a + 1
            m = a
            if b < size and _less(keys, ages, b, a):
                m = b
            if _less(keys, ages, m, i):
                _swap(keys, ages, items, m, i)
                i = m
            else:
                break
    return top, size


@njit(nogil=True, cache=True)
def flood(values, mask, markers):
    """Watershed of ``-values`` from ``markers`` (int32, >0 = marker label) within
    ``mask`` (bool), 4-connected. Returns int32 labels (0 = not reached). Markers are
    queued in raster order; each pixel is labelled by the neighbour popped first."""
    nr, nc = values.shape
    out = np.zeros((nr, nc), np.int32)
    n = 0
    for r in range(nr):
        for c in range(nc):
            if mask[r, c]:
                n += 1
    keys = np.empty(n + 1, np.float64)
    ages = np.empty(n + 1, np.int64)
    items = np.empty(n + 1, np.int64)
    size = 0
    age = 0
    for r in range(nr):
        for c in range(nc):
            if markers[r, c] > 0 and mask[r, c]:
                out[r, c] = markers[r, c]
                size = _push(keys, ages, items, size, -np.float64(values[r, c]), age, r * nc + c)
                age += 1
    while size > 0:
        item, size = _pop(keys, ages, items, size)
        r = item // nc
        c = item - r * nc
        lab = out[r, c]
        for dr, dc in ((-1, 0), (0, -1), (0, 1), (1, 0)):
            rr = r + dr
            cc = c + dc
            if rr < 0 or rr >= nr or cc < 0 or cc >= nc:
                continue
            if not mask[rr, cc] or out[rr, cc] != 0:
                continue
            out[rr, cc] = lab
            size = _push(keys, ages, items, size, -np.float64(values[rr, cc]), age, rr * nc + cc)
            age += 1
    return out


@njit(nogil=True, cache=True)
def flood_clusters(values, clusters, n_clusters, markers):
    """``flood`` run separately inside each component of ``clusters`` (int32, 1..n):
    the same labels as flooding their union (components are not 4-adjacent), with a
    heap the size of one component, so it stays in cache."""
    nr, nc = values.shape
    count = np.zeros(n_clusters + 2, np.int64)
    for r in range(nr):
        for c in range(nc):
            q = clusters[r, c]
            if q > 0:
                count[q + 1] += 1
    biggest = 0
    for q in range(1, n_clusters + 1):
        biggest = max(biggest, count[q + 1])
        count[q + 1] += count[q]
    pix = np.empty(count[n_clusters + 1], np.int64)
    fill = count.copy()
    for r in range(nr):
        for c in range(nc):
            q = clusters[r, c]
            if q > 0:
                pix[fill[q]] = r * nc + c
                fill[q] += 1
    out = np.zeros((nr, nc), np.int32)
    keys = np.empty(biggest + 1, np.float64)
    ages = np.empty(biggest + 1, np.int64)
    items = np.empty(biggest + 1, np.int64)
    for q in range(1, n_clusters + 1):
        size = 0
        age = 0
        for t in range(count[q], count[q + 1]):
            i = pix[t]
            r = i // nc
            c = i - r * nc
            if markers[r, c] > 0:
                out[r, c] = markers[r, c]
                size = _push(keys, ages, items, size, -np.float64(values[r, c]), age, i)
                age += 1
        while size > 0:
            item, size = _pop(keys, ages, items, size)
            r = item // nc
            c = item - r * nc
            lab = out[r, c]
            for dr, dc in ((-1, 0), (0, -1), (0, 1), (1, 0)):
                rr = r + dr
                cc = c + dc
                if rr < 0 or rr >= nr or cc < 0 or cc >= nc:
                    continue
                if clusters[rr, cc] != q or out[rr, cc] != 0:
                    continue
                out[rr, cc] = lab
                size = _push(keys, ages, items, size, -np.float64(values[rr, cc]), age, rr * nc + cc)
                age += 1
    return out
