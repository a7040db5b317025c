"""Images: grey pictures -> arrays [height, width] in [0, 1]; rows are image rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class ArrayFeaturizer:
    """Features already in memory ([N, rows, steps], table order), served batch by batch."""

    def __init__(self, arrays: np.ndarray, attrs: dict[str, Any]) -> None:
        self.arrays, self.attrs = arrays, attrs
        self.shape = tuple(arrays.shape[1:])

    def __call__(self, rows: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        return self.arrays[rows.index.to_numpy()], [""] * len(rows)


class Image:
    name = "image"
    compatible_keys = ("height", "width", "scale")

    def featurizer(self, spec, root: Path, table: pd.DataFrame, settings: dict[str, Any],
                   threads: int = 1) -> ArrayFeaturizer:
        images = spec.load_images(Path(root), table, settings)  # uint8 [N, H, W], table order
        attrs = {"height": images.shape[1], "width": images.shape[2], "scale": "x/255"}
        return ArrayFeaturizer(images.astype(np.float32) / 255.0, attrs)

    def step_ms(self, attrs: dict[str, Any]) -> tuple[float, float] | None:
        return None  # no time axis


MODALITY = Image()
