"""Models the tests register beside the demo ones."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def train_fragile(path: Path) -> Path:
    """A classifier whose pipeline takes sqrt of the inputs: a negative value makes it raise."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    iris = load_iris()
    model = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=1000))
    model.fit(iris.data, iris.target)
    joblib.dump(model, path)
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
