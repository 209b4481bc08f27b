"""The losses at the top of a network: SoftmaxCrossEntropy for a classifier's scores, and
SquaredError, the review's Figure 1 loss."""

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


class SquaredError(Module):
    """Figure 1's squared error: 0.5 * (y - t)^2 summed over each example's outputs, averaged over the batch.

    ``forward(y, t)`` returns the loss as a 0-d array of y's dtype and keeps y
    and t; ``backward()`` returns dE/dy = (y - t) / N, the gradient that starts
    a network's backward pass (see :func:`dlgpu.functional.mse_loss` for why
    this definition).
    """

    def forward(self, y, t):
        loss = F.mse_loss(y, t)
        self._save(y=y, t=t)
        return loss

    def backward(self):
        saved = self._saved()
        return F.mse_loss_backward(saved["y"], saved["t"])
