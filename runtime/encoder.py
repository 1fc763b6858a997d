"""Text -> embedding on device: tokenizer + ONNX encoder (pooling and L2 norm are in the graph)."""
from __future__ import annotations

import numpy as np

from .tokenize import encode_batch, load_tokenizer


class Encoder:
    def __init__(self, session, tokenizer_path, max_tokens: int, max_batch: int = 32):
        self.session = session
        self.tok = load_tokenizer(tokenizer_path, max_tokens)
        self.max_batch = max_batch
        self.dim = int(session.get_outputs()[0].shape[-1]) if isinstance(session.get_outputs()[0].shape[-1], int) else None

    def tokenize(self, texts: list[str]):
        return encode_batch(self.tok, texts)

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised embeddings [N, D] (float32)."""
        out = []
        for a in range(0, len(texts), self.max_batch):
            ids, mask = self.tokenize(texts[a : a + self.max_batch])
            out.append(self.run(ids, mask))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim or 0), np.float32)
