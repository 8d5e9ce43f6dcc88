"""A seed group's ResNet18s (`models.ResNet18`) run as one network of grouped convolutions.

Replica r's channels are the r-th block of every layer's channels: its input images are the r-th
group of input channels, every convolution has `groups = replicas` (group r reads only replica r's
channels with replica r's kernels), and BatchNorm over replicas × C channels is each replica's own
BatchNorm (its statistics are per channel: per replica, over that replica's batch), its running
statistics updated in place in the stacked buffers. The classifier is a batched matrix product.
No operation mixes replicas, so each replica computes what its model computes alone (to
floating-point rounding: the convolution algorithms differ), in one kernel per layer for all
replicas instead of one per replica and layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentstates.tasks.models import ImageInput, ResNet18


def can_group(model: torch.nn.Module) -> bool:
    """Whether `model` is a ResNet18 whose input transform holds no state (stackable as groups)."""
    return isinstance(model, ResNet18) and isinstance(model.input, ImageInput | torch.nn.Identity)


class GroupedResNet:
    """The forward pass of R stacked `ResNet18`s (`params`, `buffers`: name → (R, *shape)
    tensors, as `torch.func.stack_module_state` gives) as one grouped network; `base` is one of
    the models (its structure, switches, input transform and training mode)."""

    def __init__(self, base: ResNet18, params: dict, buffers: dict, replicas: int):
        self.base, self.params, self.buffers, self.n = base, params, buffers, replicas

    def _conv(self, name: str, x: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        w = self.params[f"{name}.weight"]  # (R, out, in, k, k) → (R·out, in, k, k)
        return F.conv2d(x, w.flatten(0, 1), stride=stride, padding=padding, groups=self.n)

    def _bn(self, name: str, x: torch.Tensor) -> torch.Tensor:
        module = self.base.get_submodule(name)
        training = self.base.training
        if training:  # as BatchNorm2d: count the batch (momentum is set, so it is not used)
            self.buffers[f"{name}.num_batches_tracked"].add_(1)
        return F.batch_norm(
            x,
            self.buffers[f"{name}.running_mean"].view(-1),  # views: updated in the stacked buffers
            self.buffers[f"{name}.running_var"].view(-1),
            self.params[f"{name}.weight"].flatten(),
            self.params[f"{name}.bias"].flatten(),
            training,
            module.momentum,
            module.eps,
        )

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        block, name = self.base.blocks[i], f"blocks.{i}"
        stride = block.conv1.stride[0]
        out = self._conv(f"{name}.conv1", x, stride, 1)
        if block.bn1 is not None:
            out = self._bn(f"{name}.bn1", out)
        out = self._conv(f"{name}.conv2", torch.relu(out), 1, 1)
        if block.bn2 is not None:
            out = self._bn(f"{name}.bn2", out)
        if block.residual:
            if block.downsample is not None:
                short = self._bn(f"{name}.downsample.1", self._conv(f"{name}.downsample.0", x, stride, 0))
            else:
                short = x
            out = out + short
        return torch.relu(out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (R, batch, classes) of the stacked inputs `x` (R, batch, ...)."""
        images = self.base.input(x)  # (R, B, C, H, W)
        r, b = images.shape[:2]
        h = images.transpose(0, 1).flatten(1, 2)  # (B, R·C, H, W): replica r's channels r·C …
        h = torch.relu(self._bn("bn1", self._conv("conv1", h, 1, 1)))
        for i in range(len(self.base.blocks)):
            h = self._block(i, h)
        pooled = h.mean(dim=(-2, -1)).view(b, r, -1).transpose(0, 1)  # (R, B, 512)
        w, bias = self.params["fc.weight"], self.params["fc.bias"]
        return torch.baddbmm(bias.unsqueeze(1), pooled, w.transpose(1, 2))
