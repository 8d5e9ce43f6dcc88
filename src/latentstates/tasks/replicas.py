"""Several models of one architecture stacked along a leading dimension and run as one.

Seed-batched training: replica i holds seed i's parameters; `torch.func.vmap` over
`functional_call` runs all replicas in each kernel, so small models use the hardware fully while
each replica computes exactly what its model would alone (no operation mixes replicas).

Multi-layer perceptrons (`models.MLP`) skip vmap and autograd: their stacked layers run as
batched matrix products (`baddbmm` over [replicas, batch, features]) and, when the task gives its
loss's derivative (`TaskKind.loss_grad`), their gradients come from the hand-written backward pass
of `loss_and_grads`. Small MLPs (the parities' 40→1000→1 at batch 32) spend most of a step in
per-operation overhead otherwise.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from latentstates.tasks.models import MLP
from latentstates.tasks.stacked_resnet import GroupedResNet, can_group


def loops_replicas(model: nn.Module) -> bool:
    """Whether `Replicas` of `model` run one replica after another (models with BatchNorm)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class Replicas:
    """`len(models)` models of one architecture as stacked tensors, called on stacked inputs.

    `replicas(x)` with `x` of shape (n_replicas, ...) returns the stacked outputs; `parameters()`
    are leaf tensors of shape (n_replicas, *parameter shape) for one optimiser over all replicas.
    """

    def __init__(self, models: list[nn.Module], grouped: bool = False):
        if not models:
            raise ValueError("Replicas needs at least one model")
        self.n = len(models)
        self.keys = list(models[0].state_dict())
        self.params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        self._forward = vmap(self._call)
        # BatchNorm in training mode updates its running statistics in place, which vmap does
        # not support on CUDA (cuDNN's kernel queries the memory format): such models run one
        # replica after another, each on views of the stacked tensors (the updates land in them).
        self.looped = loops_replicas(models[0])
        # Or, with `grouped`, ResNet18s as one network of grouped convolutions (stacked_resnet).
        self.grouped = None
        if grouped and can_group(models[0]):
            self.grouped = GroupedResNet(self.base, self.params, self.buffers, self.n)
            self.looped = False
        # An MLP whose input transform holds no state: (weight, bias) of each layer, stacked.
        first = models[0]
        self.layers = None
        if isinstance(first, MLP) and not any(True for _ in first.input.state_dict()):
            self.input = copy.deepcopy(first.input)
            self.layers = [
                (self.params[f"layers.{i}.weight"], self.params[f"layers.{i}.bias"])
                for i in range(len(first.layers))
            ]

    def _mlp_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stacked MLP's input and each layer's output (ReLU applied but to the last)."""
        acts = [self.input(x)]
        for i, (w, b) in enumerate(self.layers):
            h = torch.baddbmm(b.unsqueeze(1), acts[-1], w.transpose(1, 2))
            acts.append(torch.relu_(h) if i < len(self.layers) - 1 else h)
        return acts

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.layers is not None:
            return self._mlp_activations(x)[-1]
        if self.grouped is not None:
            return self.grouped(x)
        if self.looped:
            return torch.stack(
                [
                    self._call(
                        {k: v[i] for k, v in self.params.items()},
                        {k: v[i] for k, v in self.buffers.items()},
                        x[i],
                    )
                    for i in range(self.n)
                ]
            )
        return self._forward(self.params, self.buffers, x)

    def map(self, fn, *stacked: torch.Tensor) -> torch.Tensor:
        """`fn` applied to each replica's slice of `stacked` (e.g. a per-run loss), stacked."""
        return vmap(fn)(*stacked)

    def losses(self, kind, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each replica's `kind.loss` of its outputs: the task's stacked form where it has one."""
        if kind.stacked_loss is not None:
            return kind.stacked_loss(out, y)
        return self.map(kind.loss, out, y)

    def loss_and_grads(
        self, kind, x: torch.Tensor, y: torch.Tensor, by_hand: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and per-replica losses of `kind.loss` on the stacked batch (x, y); leaves in
        each stacked parameter's `.grad` the gradient of each replica's loss (of that replica's
        slice: no term depends on another replica).

        MLPs with a closed-form loss derivative backpropagate by hand (three batched matrix
        products per layer, no graph) unless `by_hand` is False; other models through autograd.
        """
        if not by_hand or self.layers is None or kind.loss_grad is None:
            out = self(x)
            losses = self.map(kind.loss, out, y)
            for p in self.params.values():
                p.grad = None
            losses.sum().backward()
            return out.detach(), losses.detach()
        with torch.no_grad():
            acts = self._mlp_activations(x)
            out = acts[-1]
            losses = self.losses(kind, out, y)
            delta = kind.loss_grad(out, y)  # d loss / d out, (replicas, batch, outputs)
            acts = acts[:-1]
            if delta.device.type == "cpu":
                acts, delta = rows_with_gradient(acts, delta, SPARSE_ROWS)
            for i in reversed(range(len(self.layers))):
                w, b = self.layers[i]
                w.grad = torch.bmm(delta.transpose(1, 2), acts[i])
                b.grad = delta.sum(1)
                if i:  # through the layer and the ReLU before it (autograd's ReLU backward:
                    # one fused kernel, faster than multiplying by the mask: benchmarks/README.md);
                    # through a layer of one output, an outer product: a broadcast product, the
                    # same values.
                    back = delta * w if w.shape[1] == 1 else torch.bmm(delta, w)
                    delta = torch.ops.aten.threshold_backward(back, acts[i], 0)
        return out, losses

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> Replicas:
        self.base.train(mode)
        return self

    def eval(self) -> Replicas:
        return self.train(False)

    def _tensor(self, key: str) -> torch.Tensor:
        return self.params[key] if key in self.params else self.buffers[key]

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Replica i's state dict on the CPU, loadable into the unstacked model."""
        return {k: self._tensor(k)[i].detach().cpu().clone() for k in self.keys}

    @torch.no_grad()
    def load_state_dicts(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Set every replica from its state dict (as written by `state_dict`)."""
        if len(states) != self.n:
            raise ValueError(f"{len(states)} state dicts for {self.n} replicas")
        for k in self.keys:
            t = self._tensor(k)
            t.copy_(torch.stack([s[k] for s in states]).to(t.device))

    @torch.no_grad()
    def finite(self) -> list[bool]:
        """Per replica: whether every parameter is finite."""
        ok = torch.ones(self.n, dtype=torch.bool, device=self.parameters()[0].device)
        for p in self.params.values():
            # 0·x is 0 for every finite x and NaN for ±inf and NaN: the sum is finite exactly when
            # every entry is (faster than isfinite(p).all(): benchmarks/README.md).
            ok &= torch.isfinite(p.reshape(self.n, -1).mul(0).sum(dim=1))
        return ok.tolist()


# Backpropagate over the examples with a gradient alone when they are at most this share of a batch.
SPARSE_ROWS = 0.75


def rows_with_gradient(
    acts: list[torch.Tensor], delta: torch.Tensor, most: float = SPARSE_ROWS
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The rows of a stacked batch that the backward pass needs: those whose loss gradient
    `delta` (replicas, batch, outputs) is not all zero, with the layer inputs `acts` of the same
    rows.

    An example with zero gradient adds nothing to any parameter's gradient: past the hinge loss's
    margin that is ~80 % of a sparse-parity run's examples. Each replica keeps its first m such
    rows, in batch order, m the most that any replica has; a replica with fewer is padded with
    rows of zero gradient, whose terms are exact zeros. The backward products are then the same,
    bit for bit, over m rows instead of the batch (the bias sums may round differently). Nothing
    is dropped when more than `most` of the batch would be kept (cross-entropy has no zero
    gradients): the gather would not pay.
    """
    n, batch = delta.shape[:2]
    live = delta.ne(0).any(dim=2)
    m = int(live.sum(dim=1).max())
    if m > most * batch:
        return acts, delta
    # Live rows first, both parts in batch order (a stable sort of 0 = live, 1 = not).
    rows = torch.argsort(live.logical_not().to(torch.uint8), dim=1, stable=True)[:, :m]
    flat = (rows + torch.arange(n, device=rows.device)[:, None] * batch).reshape(-1)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(n * batch, t.shape[-1]).index_select(0, flat).view(n, m, t.shape[-1])

    return [pick(a) for a in acts], pick(delta)


def split_optimizer_state(optimizer: torch.optim.Optimizer, n: int) -> list[dict]:
    """One optimiser state dict per replica: per-parameter tensors sliced to that replica.

    The slices keep a leading dimension of 1 so that `stack_optimizer_states` knows which
    tensors to join; scalar entries (Adam's step) are shared by every replica.
    """
    sd = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = []
    for i in range(n):
        state = {
            key: {
                name: v[i : i + 1].detach().cpu().clone()
                if torch.is_tensor(v) and v.shape == params[key].shape
                else v
                for name, v in st.items()
            }
            for key, st in sd["state"].items()
        }
        out.append({"state": state, "param_groups": sd["param_groups"]})
    return out


def stack_optimizer_states(states: list[dict], optimizer: torch.optim.Optimizer) -> dict:
    """The state dict of an optimiser over stacked parameters, from per-replica states."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stacked = {}
    for key, st in states[0]["state"].items():
        p = params[key]
        stacked[key] = {
            name: torch.cat([s["state"][key][name] for s in states])
            if torch.is_tensor(v) and v.dim() == p.dim() and v.shape[1:] == p.shape[1:] and len(v) == 1
            else v
            for name, v in st.items()
        }
    return {"state": stacked, "param_groups": states[0]["param_groups"]}
