"""The UCI optical handwritten digits: 1797 real 8×8 images of the digits 0-9, grey levels 0..16.

Alpaydin & Kaynak 1998, UCI Machine Learning Repository (Optical Recognition of Handwritten Digits), as shipped
inside scikit-learn (``sklearn.datasets.load_digits``), so it needs no download. Real handwriting at MNIST-1D's
scale: a second small benchmark on which a trick's effect can be checked. It has no official test split, so
``load_data`` carves one (``test_fraction``).
"""

from __future__ import annotations

import numpy as np

from tricklab.data.registry import DATASETS
from tricklab.data.source import LoadRequest, RawData


@DATASETS.register(
    "digits",
    formula="x: (N, 1, 8, 8) grey levels 0..16; y: 10 digit classes; N = 1797; test split carved",
    reference="Alpaydin & Kaynak 1998, UCI Optical Recognition of Handwritten Digits (sklearn.datasets.load_digits)",
    note="real 8x8 handwritten digits shipped inside scikit-learn; no download",
)
def load_digits(request: LoadRequest) -> RawData:
    """The 1797 digits as ``(N, 1, 8, 8)`` images (``size`` caps the count)."""
    from sklearn.datasets import load_digits as sklearn_digits

    request.choose_variant((), None)
    bunch = sklearn_digits()
    x = np.asarray(bunch.data).reshape(-1, 1, 8, 8)
    return RawData(
        x=x,
        y=np.asarray(bunch.target, dtype=np.int64),
        num_classes=10,
        classes=[str(d) for d in range(10)],
        where="digits",
    )
