"""Exact Winograd / Toom-Cook matrices for 1-D correlation ``F(m, r)``.

``F(m, r)`` computes ``m`` outputs of the valid correlation ``y[i] = sum_k g[k] d[i + k]`` (``r`` taps, ``m + r - 1``
inputs) with ``m + r - 1`` multiplications instead of ``m * r``:

    y = AT @ ((G @ g) * (BT @ d))

(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). The matrices come from evaluating
polynomials at ``m + r - 2`` finite points plus the point at infinity. ``AT`` and ``G`` have closed forms;
``BT`` is solved exactly in rational arithmetic from the identity itself, so any valid point set works and the
result is checked, not trusted.

The lip tower uses this along TIME only (see :mod:`syncnet.fast_encoders`): the "multiplications" are whole 2-D
convolutions, which stay in oneDNN, so no spatial tiling code is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["WinogradMatrices", "winograd_matrices"]

Matrix = tuple[tuple[Fraction, ...], ...]


@dataclass(frozen=True)
class WinogradMatrices:
    """The three transforms of ``F(m, r)``, as exact fractions.

    Attributes:
        m: outputs per tile.
        r: filter taps.
        points: the finite interpolation points (the last row/column stands for infinity).
        AT: (m, n) output transform.
        G: (n, r) filter transform.
        BT: (n, n) input transform.
    """

    m: int
    r: int
    points: tuple[Fraction, ...]
    AT: Matrix
    G: Matrix
    BT: Matrix

    @property
    def n(self) -> int:
        """Inputs per tile = multiplications per tile = m + r - 1."""
        return self.m + self.r - 1

    def as_arrays(self, dtype: np.dtype = np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(AT, G, BT) as numpy arrays of ``dtype``."""
        return tuple(np.array(mat, dtype=np.float64).astype(dtype) for mat in (self.AT, self.G, self.BT))


def _solve(a: list[list[Fraction]], rhs: list[list[Fraction]]) -> list[list[Fraction]]:
    """Solve the square system ``a X = rhs`` exactly for all right-hand sides at once (Gauss-Jordan, pivot search).

    Args:
        a: (size, size) matrix.
        rhs: (size, count) right-hand sides, one per column.

    Returns:
        (size, count) solution.
    """
    size = len(a)
    rows = [list(row) + list(extra) for row, extra in zip(a, rhs)]
    for col in range(size):
        pivot = next((r for r in range(col, size) if rows[r][col] != 0), None)
        if pivot is None:
            raise ValueError("singular Winograd system: the interpolation points must be distinct")
        rows[col], rows[pivot] = rows[pivot], rows[col]
        inv = 1 / rows[col][col]
        rows[col] = [v * inv for v in rows[col]]
        for r in range(size):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [v - factor * p for v, p in zip(rows[r], rows[col])]
    return [row[size:] for row in rows]


@lru_cache(maxsize=16)   # exact rational arithmetic takes tens of milliseconds; the result is immutable
def winograd_matrices(m: int, r: int, points: tuple[Fraction | int, ...]) -> WinogradMatrices:
    """Build and verify the ``F(m, r)`` correlation matrices.

    Args:
        m: outputs per tile (>= 1).
        r: filter taps (>= 1).
        points: ``m + r - 2`` distinct finite points, e.g. ``(0, 1, -1, 2, -2, 1/2, -1/2)`` for ``F(4, 5)``.
            Small dyadic points keep ``BT`` dyadic, so the input transform of integer data is exact in float32.

    Returns:
        the exact matrices; the identity ``AT ((G g) * (BT d)) == correlate(d, g)`` holds exactly.
    """
    n = m + r - 1
    finite = tuple(Fraction(p) for p in points)
    if len(finite) != n - 1 or len(set(finite)) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points, got {points}")

    at = [[Fraction(0)] * n for _ in range(m)]
    g = [[Fraction(0)] * r for _ in range(n)]
    for j, p in enumerate(finite):
        denominator = Fraction(1)
        for q in finite:
            if q != p:
                denominator *= p - q
        for i in range(m):
            at[i][j] = p**i
        for k in range(r):
            g[j][k] = p**k / denominator
    at[m - 1][n - 1] = Fraction(1)   # the point at infinity picks the leading coefficient
    g[n - 1][r - 1] = Fraction(1)

    # Unknown BT: for every input position s, sum_j AT[i, j] G[j, k] BT[j, s] = [s == i + k] for all i, k.
    # That is m*r equations in n unknowns per column; solve the normal equations exactly (all columns in one
    # elimination: Fraction arithmetic is slow, and this runs when a scorer is first built), then verify.
    design = [[at[i][j] * g[j][k] for j in range(n)] for i in range(m) for k in range(r)]
    normal = [[sum(row[a] * row[b] for row in design) for b in range(n)] for a in range(n)]
    # design^T @ target, where target[(i, k), s] = [s == i + k]: sums the design rows of each s.
    rhs = [[sum((design[i * r + k][a] for i in range(m) for k in range(r) if i + k == s), Fraction(0))
            for s in range(n)] for a in range(n)]
    bt = _solve(normal, rhs)
    for i in range(m):
        for k in range(r):
            row = design[i * r + k]
            if any(sum(row[j] * bt[j][s] for j in range(n)) != int(s == i + k) for s in range(n)):
                raise ValueError(f"points {points} do not give an exact F({m}, {r})")

    freeze = lambda mat: tuple(tuple(row) for row in mat)  # noqa: E731 - tiny local helper
    return WinogradMatrices(m=m, r=r, points=finite, AT=freeze(at), G=freeze(g), BT=freeze(bt))
