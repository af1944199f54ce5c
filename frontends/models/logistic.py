"""Multi-class logistic regression (the DeepLearningTutorials' ``logistic_sgd.py``)."""

from __future__ import annotations

from typing import Any

from frontends import init, nn
from frontends import tensor as T
from frontends.models._util import param


class LogisticRegression:
    """``p(y | x) = softmax(x W + b)``; W and b start at zero as in the tutorial."""

    def __init__(self, input: Any, n_in: int, n_out: int, W: Any = None, b: Any = None) -> None:
        self.input = input
        self.W = param(init.zeros((n_in, n_out)) if W is None else W, "W")
        self.b = param(init.zeros((n_out,)) if b is None else b, "b")
        self.logits = T.dot(input, self.W) + self.b
        self.p_y_given_x = nn.softmax(self.logits)
        self.y_pred = T.argmax(self.p_y_given_x, axis=1)
        self.params = [self.W, self.b]

    def negative_log_likelihood(self, y: Any) -> Any:
        """Mean over the minibatch of ``-log p(y_i | x_i)`` (computed as a stable log-softmax)."""
        log_p = nn.log_softmax(self.logits)
        return -T.mean(log_p[T.arange(y.shape[0]), y])

    def errors(self, y: Any) -> Any:
        """The fraction of the minibatch that is misclassified (floatX)."""
        if y.ndim != self.y_pred.ndim:
            raise TypeError(f"errors: y should have the shape of y_pred ({self.y_pred.type}), given {y.type}")
        return T.mean(T.neq(self.y_pred, y))

