"""Per-tensor fits from running float64 sums over row blocks (used by `blend.py`).

Two parents: least squares child ~ alpha*A + (1-alpha)*B, i.e. y = C - B ~ alpha*d with
d = A - B, so alpha = <y,d>/<d,d>. One parent: relative distance and cosine to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Below this ||A - B|| / max(||A||, ||B||) the parents are one tensor and alpha is undetermined.
PARENTS_EQUAL = 1e-6
BLEND_SUMS = ("n", "yy", "yd", "dd", "aa", "bb")
DISTANCE_SUMS = ("n", "cc", "aa", "ca", "ee")


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    # numpy's own loop, not BLAS: threaded ddot was 8x slower on a busy 2-core machine.
    return float(np.einsum("i,i->", x, y))


def block_sums(c: np.ndarray, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Sums of one block (c, a, b: [k] float64, overwritten) in BLEND_SUMS or DISTANCE_SUMS
    order."""
    if b is None:
        cc, aa, ca = _dot(c, c), _dot(a, a), _dot(c, a)
        c -= a
        return np.array([c.size, cc, aa, ca, _dot(c, c)])
    aa, bb = _dot(a, a), _dot(b, b)
    c -= b  # y
    a -= b  # d
    return np.array([c.size, _dot(c, c), _dot(c, a), _dot(a, a), aa, bb])


@dataclass(frozen=True)
class BlendFit:
    """alpha, its standard error and the residual norm relative to ||A - B||; all three are None
    when the parents are equal on this tensor (any child fits), NaN when values are not finite."""

    n: int
    alpha: float | None
    alpha_se: float | None
    residual: float | None
    parents_equal: bool
    child_equals_parents: bool | None = None

    def residual_at(self, alpha: float) -> float:
        """||C - (alpha*A + (1-alpha)*B)|| / ||A - B|| for another alpha (e.g. the global one)."""
        return math.hypot(self.residual, self.alpha - alpha)


def blend_fit(sums: np.ndarray) -> BlendFit:
    n, yy, yd, dd, aa, bb = (float(s) for s in sums)
    if not all(math.isfinite(s) for s in (yy, yd, dd)):
        return BlendFit(int(n), math.nan, math.nan, math.nan, False)
    if dd <= PARENTS_EQUAL**2 * max(aa, bb) or dd == 0.0:
        return BlendFit(int(n), None, None, None, True, child_equals_parents=yy == 0.0)
    alpha = yd / dd
    rr = max(yy - yd * yd / dd, 0.0)  # ||y - alpha d||^2
    se = math.sqrt(rr / max(n - 1, 1) / dd)
    return BlendFit(int(n), alpha, se, math.sqrt(rr / dd), False)


@dataclass(frozen=True)
class DistanceFit:
    """||C - A|| / ||A|| and cos(C, A) (NaN when either tensor is all zeros)."""

    n: int
    distance: float
    cosine: float


def distance_fit(sums: np.ndarray) -> DistanceFit:
    n, cc, aa, ca, ee = (float(s) for s in sums)
    distance = math.sqrt(ee / aa) if aa > 0 else (0.0 if ee == 0 else math.inf)
    cosine = ca / math.sqrt(cc * aa) if cc > 0 and aa > 0 else math.nan
    return DistanceFit(int(n), distance, cosine)
