"""The Sobol sequence of the authors' search: Bratley & Fox's direction numbers.

The authors of the data-parallelism paper draw their metaparameters from the
Sobol generator of Bratley and Fox (ACM TOMS 14(1), 1988, Algorithm 659), up to
40 dimensions and 30 bits, whose initial direction numbers and primitive
polynomials are the table below (as published with that algorithm).
`scipy.stats.qmc.Sobol` uses Joe and Kuo's numbers: its first two dimensions
agree with these, the third on do not. Point n is the XOR of the direction
numbers selected by the bits of n's Gray code (Antonov and Saleev's ordering);
point 0 is all zeros.
"""

import numpy as np

MAX_DIMENSIONS = 40
BITS = 30

# Primitive polynomials, one per dimension, as integers whose bits are the coefficients.
_POLYNOMIALS = (
    1, 3, 7, 11, 13, 19, 25, 37, 59, 47, 61, 55, 41, 67, 97, 91, 109, 103, 115, 131,
    193, 137, 145, 143, 241, 157, 185, 167, 229, 171, 213, 191, 253, 203, 211, 239, 247, 285,
    369, 299)
# Initial direction numbers m_{i,k}: column k of the table, for the dimensions from
# `first` on (0-based); dimension 0 has m = 1 throughout (van der Corput).
_INITIAL = (
    (0, (1,) * 40),
    (2, (1, 3, 1, 3, 1, 3, 3, 1, 3, 1, 3, 1, 3, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 1, 3, 1, 3, 1,
         3, 1, 1, 3, 1, 3, 1, 3, 1, 3)),
    (3, (7, 5, 1, 3, 3, 7, 5, 5, 7, 7, 1, 3, 3, 7, 5, 1, 1, 5, 3, 3, 1, 7, 5, 1, 3, 3, 7, 5,
         1, 1, 5, 7, 7, 5, 1, 3, 3)),
    (5, (1, 7, 9, 13, 11, 1, 3, 7, 9, 5, 13, 13, 11, 3, 15, 5, 3, 15, 7, 9, 13, 9, 1, 11, 7,
         5, 15, 1, 15, 11, 5, 3, 1, 7, 9)),
    (7, (9, 3, 27, 15, 29, 21, 23, 19, 11, 25, 7, 13, 17, 1, 25, 29, 3, 31, 11, 5, 23, 27,
         19, 21, 5, 1, 17, 13, 7, 15, 9, 31, 9)),
    (13, (37, 33, 7, 5, 11, 39, 63, 27, 17, 15, 23, 29, 3, 21, 13, 31, 25, 9, 49, 33, 19, 29,
          11, 19, 27, 15, 25)),
    (19, (13, 33, 115, 41, 79, 17, 29, 119, 75, 73, 105, 7, 59, 65, 21, 3, 113, 61, 89, 45,
          107)),
    (37, (7, 23, 39)),
)


def direction_numbers(dimensions):
    """`[dimensions, BITS]` integer direction numbers, scaled to `BITS` bits."""
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS:
        raise ValueError(f"Expected 1 to {MAX_DIMENSIONS} dimensions (Bratley & Fox's table). "
                         f"Received: dimensions={dimensions!r}")
    m = np.zeros((MAX_DIMENSIONS, BITS), np.int64)
    for column, (first, values) in enumerate(_INITIAL):
        m[first:first + len(values), column] = values
    m[0, :] = 1
    for i in range(1, dimensions):
        poly = _POLYNOMIALS[i]
        degree = poly.bit_length() - 1
        # the coefficients a_1 .. a_degree below the leading term (a_degree = 1)
        coefficients = [(poly >> (degree - k)) & 1 for k in range(1, degree + 1)]
        for j in range(degree, BITS):
            value = m[i, j - degree]
            for k in range(1, degree + 1):
                if coefficients[k - 1]:
                    value ^= (1 << k) * m[i, j - k]
            m[i, j] = value
    shifts = np.array([BITS - 1 - j for j in range(BITS)], np.int64)
    return m[:dimensions] << shifts


def points(dimensions, n, skip=1):
    """Points `skip` .. `skip + n - 1` of the sequence in [0, 1)^dimensions (`skip=1`
    leaves out the all-zero point 0, as the authors do)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected n to be an int >= 1. Received: n={n!r}")
    v = direction_numbers(dimensions)
    out = np.empty((n, dimensions))
    for row, index in enumerate(range(skip, skip + n)):
        gray = index ^ (index >> 1)
        x = np.zeros(dimensions, np.int64)
        bit = 0
        while gray:
            if gray & 1:
                x ^= v[:, bit]
            gray >>= 1
            bit += 1
        out[row] = x / float(1 << BITS)
    return out
