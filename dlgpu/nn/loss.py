"""SoftmaxCrossEntropy: the score-per-class loss at the top of a classifier."""

from __future__ import annotations

import dlgpu.functional as F
from dlgpu.nn.module import Module


class SoftmaxCrossEntropy(Module):
    """Mean cross-entropy of softmax(logits) against integer labels.

    ``forward(logits, labels)`` returns the loss as a 0-d array of the
    logits' dtype (float32 for float16 or bfloat16 logits) and keeps the softmax probabilities; ``backward()`` returns
    dE/d(logits) = (probs - onehot(labels)) / N, the gradient that starts a
    network's backward pass.
    """

    def forward(self, logits, labels):
        loss, probs = F.softmax_cross_entropy(logits, labels)
        self._save(probs=probs, labels=labels)
        return loss

    def backward(self):
        saved = self._saved()
        return F.softmax_cross_entropy_backward(saved["probs"], saved["labels"])
