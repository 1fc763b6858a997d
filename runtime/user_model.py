"""History embeddings -> user vector (ONNX user model), with per-item attention weights."""
from __future__ import annotations

import numpy as np


class UserModel:
    def __init__(self, session, max_history: int):
        self.session = session
        self.max_history = max_history

    def __call__(self, hist_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """hist_emb [H, D] (most recent last) -> user [D], weights [H'] over the last H' <= max_history."""
        h = hist_emb[-self.max_history :].astype(np.float32, copy=False)
        if len(h) == 0:
            return np.zeros(hist_emb.shape[1], np.float32), np.zeros(0, np.float32)
        mask = np.ones((1, len(h)), np.float32)
        u, w = self.session.run(None, {"history": h[None], "history_mask": mask})
        return u[0], w[0]
