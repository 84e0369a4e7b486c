"""Forward-only passes with the forward rewrites (batch norm and rectifiers in place; see
_rewrites), for methods that only evaluate the model: occlusion, RISE.

`rewritten_forward(model, run)` calls run() under torch.no_grad() inside a RectifierRuleMode
that applies no rule (nothing is differentiated) and only rewrites. run may be called twice:
after a RewriteMismatch the plan refuses that layer and run() goes again, only watching.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from .. import _rectifier_reference as ref
from . import rewrites as _rewrites
from .rule_mode import RectifierRuleMode

T = TypeVar("T")


def rewritten_forward(model: torch.nn.Module, run: Callable[[], T], *, learn: bool = True) -> T:
    """run() with the rewrites. learn: the pass runs the whole model, so the plan may learn from
    it (False for passes that stop early, whose consumers are unknown)."""

    def attempt(rewrites):
        mode = RectifierRuleMode(ref.BACKPROP, "torch", nonlinear="ignore", rewrites=rewrites)
        with torch.no_grad(), mode:
            result = run()
        if rewrites is not None:
            rewrites.check_no_escapes()
            if learn:
                rewrites.learn()
        return result

    return _rewrites.run(model, attempt)
