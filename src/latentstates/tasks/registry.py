"""Task registry: each kind of experiment says how to build its data, model, loss and matrices.

A task in the config names its `kind`; adding an experiment means registering one `TaskKind`
here, not editing the training or metric code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from latentstates.columns import LayerParts
from latentstates.tasks import data, image_data, models
from latentstates.tasks.exact_hessian import EigenResult, one_hidden_relu_piecewise_linear_top


@dataclass(frozen=True)
class TaskKind:
    """How to build and score one kind of experiment."""

    name: str
    make_data: Callable[[dict, int], data.Split]
    make_model: Callable[[dict, dict], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    correct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    matrices: Callable[[nn.Module], list[torch.Tensor]]
    biases: Callable[[nn.Module], list[torch.Tensor]]
    # Convolution weights (out, in, h, w), summarised per kernel (metrics.kernel_metrics).
    kernels: Callable[[nn.Module], list[torch.Tensor]] = lambda model: []
    # Where each of `matrices`, `biases` and `kernels` belongs for per-layer statistics
    # (metrics.per_layer): its block and part, in their order.
    parts: Callable[[nn.Module], LayerParts] | None = None
    # Training-time augmentation of one run's batch of stored inputs, drawing from the run's
    # own generator (its data-order stream); None = none.
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    # The loss's gradient with respect to the model's outputs in closed form, for outputs with any
    # leading dimensions (..., batch, outputs): MLPs then train without autograd
    # (Replicas.loss_and_grads).
    loss_grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    # The loss of stacked outputs (replicas, batch, outputs) against labels (replicas, batch):
    # each replica's loss, (replicas,), in one call instead of `Replicas.map` (vmap, whose per-call
    # cost matches a small model's whole step: benchmarks/README.md). None: vmap of `loss`.
    stacked_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    # The exact top eigenpair of the loss Hessian on a batch (model, x, y), where the model's
    # structure gives it in closed form (None from it, or no function: Lanczos iteration).
    hessian_top: Callable[[nn.Module, torch.Tensor, torch.Tensor], EigenResult | None] | None = None


TASKS: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> TaskKind:
    """Add a task kind to the registry."""
    TASKS[kind.name] = kind
    return kind


def get_task(kind: str) -> TaskKind:
    """Look up a task kind, listing the known ones if it is missing."""
    try:
        return TASKS[kind]
    except KeyError:
        raise KeyError(f"unknown task kind {kind!r}; known kinds: {sorted(TASKS)}") from None


def _hinge_terms(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Per example 1 - y·out, set to 0 where negative, as the released `hinge_loss[hinge_loss < 0]
    # = 0`: the gradient passes where 1 - y·out >= 0, the kink included, and a NaN stays NaN. Not
    # clamp(min=0), whose gradient at the kink is 1 up to torch 2.13 and 0 from torch 2.14.
    margin = 1 - out.squeeze(-1) * y
    return torch.where(margin < 0, 0.0, margin)


def _hinge(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _hinge_terms(out, y).mean()


def _hinge_stacked(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _hinge_terms(out, y).mean(-1)


def _hinge_grad(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # d/d out of _hinge for outputs (..., batch, 1): -y / batch where 1 - y·out >= 0 (the kink
    # included), as autograd's of _hinge.
    margin = 1 - out.squeeze(-1) * y
    return torch.where(margin < 0, 0.0, -y / y.shape[-1]).unsqueeze(-1).to(out.dtype)


def _cross_entropy_grad(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # d/d logits of the mean cross-entropy for logits (..., batch, classes): (softmax - one-hot) / batch.
    # The one-hot by comparison, not scatter_add_ (nondeterministic on CUDA).
    one_hot = torch.arange(out.shape[-1], device=out.device) == y.unsqueeze(-1)
    return (torch.softmax(out, dim=-1) - one_hot.to(out.dtype)) / y.shape[-1]


def _cross_entropy_stacked(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    per_example = F.cross_entropy(out.flatten(0, -2), y.flatten(), reduction="none")
    return per_example.view(y.shape).mean(-1)


def _sign_correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.squeeze(-1) * y > 0


def _argmax_correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.argmax(dim=-1) == y


def _mlp_matrices(model: nn.Module) -> list[torch.Tensor]:
    return [layer.weight for layer in model.layers]


def _mlp_biases(model: nn.Module) -> list[torch.Tensor]:
    return [layer.bias for layer in model.layers]


def _mlp_parts(model: nn.Module) -> LayerParts:
    # Each linear layer is a block of one part, dense.
    places = [(i, "dense") for i in range(len(model.layers))]
    return LayerParts(places, places)


def _transformer_parts(model: nn.Module) -> LayerParts:
    # One block: the attention's heads and output (attn), the MLP's matrices and biases (mlp).
    return LayerParts([(0, "attn")] * (3 * model.n_heads + 1) + [(0, "mlp")] * 2, [(0, "mlp")] * 2)


def _resnet_parts(model: nn.Module) -> LayerParts:
    # Block 0 the stem convolution, 1-8 the residual blocks' two convolutions each, 9 the classifier.
    n = len(model.blocks)
    kernels = [(0, "conv")] + [(b + 1, "conv") for b in range(n) for _ in range(2)]
    return LayerParts([(n + 1, "fc")], [(n + 1, "fc")], kernels)


def _transformer_matrices(model: nn.Module) -> list[torch.Tensor]:
    # K, Q, V per head, attention output, MLP in and out; not the embeddings.
    heads = [w[h] for w in (model.W_K, model.W_Q, model.W_V) for h in range(model.n_heads)]
    return heads + [model.W_O, model.W_in, model.W_out]


def _transformer_biases(model: nn.Module) -> list[torch.Tensor]:
    # The MLP's biases only, as the released code (LayerNorm biases are not weights statistics).
    return [model.b_in, model.b_out]


register(
    TaskKind(
        name="sparse_parity",
        make_data=lambda d, seed: data.sparse_parity(d["n_bits"], d["k"], d["n_train"], d["n_test"], seed),
        make_model=lambda m, d: models.MLP([d["n_bits"], *m["hidden"], 1]),
        loss=_hinge,
        loss_grad=_hinge_grad,
        stacked_loss=_hinge_stacked,
        hessian_top=lambda model, x, y: one_hidden_relu_piecewise_linear_top(model, x, y, _hinge_grad),
        correct=_sign_correct,
        matrices=_mlp_matrices,
        biases=_mlp_biases,
        parts=_mlp_parts,
    )
)

register(
    TaskKind(
        name="modular_addition",
        make_data=lambda d, seed: data.modular_addition(d["modulus"], d["train_fraction"], seed),
        make_model=lambda m, d: models.OneLayerTransformer(
            vocab=d["modulus"] + 1,
            n_out=d["modulus"] + 1,  # the released model predicts over the whole vocabulary
            d_model=m["d_model"],
            n_heads=m["n_heads"],
            d_mlp=m["d_mlp"],
            layer_norm=m["layer_norm"],
        ),
        loss=F.cross_entropy,
        correct=_argmax_correct,
        matrices=_transformer_matrices,
        biases=_transformer_biases,
        parts=_transformer_parts,
    )
)

# The paper's MNIST recipe (ReLU MLP, Xavier weights, zero biases, cross-entropy) on the digits
# bundled with scikit-learn: 8×8 = 64 inputs, 10 classes.
register(
    TaskKind(
        name="digits_mlp",
        make_data=lambda d, seed: data.digits(d["train_fraction"], seed),
        make_model=lambda m, d: models.MLP([64, *m["hidden"], 10]),
        loss=F.cross_entropy,
        loss_grad=_cross_entropy_grad,
        stacked_loss=_cross_entropy_stacked,
        correct=_argmax_correct,
        matrices=_mlp_matrices,
        biases=_mlp_biases,
        parts=_mlp_parts,
    )
)

# The paper's MNIST MLP (torchvision MNIST, ToTensor and flatten, no normalisation): 784 inputs,
# `hidden` as configured (the paper: two layers of 800; the released script's default: one).
register(
    TaskKind(
        name="mnist_mlp",
        make_data=lambda d, seed: data.images("mnist", d["dir"]),
        make_model=lambda m, d: models.MLP([784, *m["hidden"], 10], input=models.ImageInput(flatten=True)),
        loss=F.cross_entropy,
        loss_grad=_cross_entropy_grad,
        stacked_loss=_cross_entropy_stacked,
        correct=_argmax_correct,
        matrices=_mlp_matrices,
        biases=_mlp_biases,
        parts=_mlp_parts,
    )
)


def _fc_matrix(model: nn.Module) -> list[torch.Tensor]:
    # As released: trace, spectral norm and singular values of the final linear layer only.
    return [model.fc.weight]


def _fc_bias(model: nn.Module) -> list[torch.Tensor]:
    return [model.fc.bias]


# The paper's CIFAR-100 ResNet18 (with or without batch norm and residual connections), random
# crop with reflect padding and horizontal flip, CIFAR-100 normalisation; conv kernels are
# summarised per (out, in) kernel.
register(
    TaskKind(
        name="cifar100_resnet18",
        make_data=lambda d, seed: data.images("cifar100", d["dir"]),
        make_model=lambda m, d: models.ResNet18(
            100,
            batch_norm=m["batch_norm"],
            residual=m["residual"],
            input=models.ImageInput(*image_data.CIFAR100_STATS),
        ),
        loss=F.cross_entropy,
        correct=_argmax_correct,
        matrices=_fc_matrix,
        biases=_fc_bias,
        parts=_resnet_parts,
        kernels=lambda model: model.kernels(),
        augment=models.random_crop_flip,
    )
)
