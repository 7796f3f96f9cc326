"""Residual: a block with a skip connection around it, ``y = x + block(x)`` (He et al. 2016)."""

from __future__ import annotations

from ..autograd import Tensor
from ..errors import ShapeError
from .module import Module, register_module


def _widths(block: Module) -> tuple:
    """(input width, output width) of ``block`` when its layers say (its first and last
    layer with ``in_features`` / ``out_features``), else None for the unknown one."""
    sized = [m for m in block.modules() if isinstance(getattr(m, "in_features", None), int) and isinstance(getattr(m, "out_features", None), int)]
    if not sized:
        return None, None
    return sized[0].in_features, sized[-1].out_features


@register_module
class Residual(Module):
    """``y = x + block(x)``: the block learns a change to its input, not a replacement of it.

    The gradient reaches ``x`` along two paths, through the block and straight along the
    skip, so however many blocks are stacked it never has to pass only through shrinking
    derivatives: the skip path carries it back unchanged. The block must keep the width.

    Raises ShapeError, naming both widths, when the block changes the width (at once when
    its layers show it, otherwise at the first call).

    Example:
        >>> block = nn.Residual(nn.Sequential(nn.Linear(64, 64), nn.ReLU()))
        >>> block(cr.randn(8, 64)).shape
        (8, 64)
    """

    def __init__(self, block: Module):
        super().__init__()
        if not isinstance(block, Module):
            raise TypeError(f"Residual takes a module, got {type(block).__name__}")
        n_in, n_out = _widths(block)
        if n_in is not None and n_in != n_out:
            raise ShapeError(
                f"Residual needs a block that keeps the width, but the block maps {n_in} features to {n_out}; "
                f"x + block(x) adds a width-{n_in} input to a width-{n_out} output"
            )
        self.block = block
        self.in_features = n_in
        self.out_features = n_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if tuple(out.data.shape) != tuple(x.data.shape):
            raise ShapeError(
                f"Residual needs a block that keeps the width, but the block maps input of shape {tuple(x.data.shape)} "
                f"to output of shape {tuple(out.data.shape)}; x + block(x) needs both the same"
            )
        return x + out

    def get_config(self) -> dict:
        return {}
