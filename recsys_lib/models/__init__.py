"""Models: the TFRS two-tower retriever, baselines, ranking metrics and ANN indexes.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` (TFRS needs Keras 2) before
TensorFlow can be imported by any of its modules. Modules that do not need
TensorFlow (metrics, baselines, index) never import it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
