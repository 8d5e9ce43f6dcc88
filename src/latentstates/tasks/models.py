"""Models of the paper's experiments."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


def finite_weights(model: nn.Module) -> bool:
    """Whether every parameter is finite (a diverged run has NaN or inf weights)."""
    return all(torch.isfinite(p).all() for p in model.parameters())


class ImageInput(nn.Module):
    """Stored images (uint8, channels last) to the network's input, as torchvision's ToTensor
    (scale to [0, 1], channels first) and Normalize (per-channel mean and std), then optionally
    flattened. Part of the model, so that every stage (training, evaluation, the Hessian, an
    imported checkpoint) feeds it the stored images alike. No parameters, no state."""

    def __init__(self, mean=None, std=None, flatten: bool = False):
        super().__init__()
        self.mean, self.std, self.flatten = mean, std, flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.get_default_dtype()) / 255
        if self.flatten:
            return x.flatten(-2)  # (…, 28, 28) grey images
        x = x.movedim(-1, -3)  # (…, H, W, C) → (…, C, H, W)
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=x.device)[:, None, None]
            std = torch.tensor(self.std, device=x.device)[:, None, None]
            x = (x - mean) / std
        return x


class MLP(nn.Module):
    """ReLU multi-layer perceptron with Xavier-uniform weights and zero biases; `input` turns
    stored data into its input (e.g. `ImageInput`), identity by default."""

    def __init__(self, sizes: list[int], input: nn.Module | None = None):
        super().__init__()
        self.input = input if input is not None else nn.Identity()
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convolutions) with the released switches: without batch norm
    the block's two BatchNorms are skipped; without the residual its shortcut is not added. The
    downsample path (1×1 convolution + BatchNorm) keeps its BatchNorm either way."""

    def __init__(self, inplanes: int, planes: int, stride: int, batch_norm: bool, residual: bool):
        super().__init__()
        self.batch_norm, self.residual = batch_norm, residual
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes) if batch_norm else None
        self.bn2 = nn.BatchNorm2d(planes) if batch_norm else None
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.bn1 is not None:
            out = self.bn1(out)
        out = torch.relu(out)
        out = self.conv2(out)
        if self.bn2 is not None:
            out = self.bn2(out)
        if self.residual:
            out = out + (self.downsample(x) if self.downsample is not None else x)
        return torch.relu(out)


class ResNet18(nn.Module):
    """ResNet18 for 32×32 images as the released CIFAR-100 model (torchvision's ResNet with
    BasicBlock [2, 2, 2, 2], a 3×3 stride-1 stem and no max-pool; `batch_norm` and `residual`
    switch the blocks' BatchNorms and shortcuts; the stem's BatchNorm stays, as released).
    Initialisation as torchvision: Kaiming-normal convolutions, BatchNorm weight 1 and bias 0."""

    def __init__(
        self,
        n_classes: int = 100,
        batch_norm: bool = True,
        residual: bool = True,
        input: nn.Module | None = None,
    ):
        super().__init__()
        self.input = input if input is not None else nn.Identity()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for i in range(2):
                blocks.append(BasicBlock(inplanes, planes, stride if i == 0 else 1, batch_norm, residual))
                inplanes = planes
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(512, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(self.input(x))))
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(dim=(-2, -1)))  # global average pooling (vmap-friendly)

    def kernels(self) -> list[torch.Tensor]:
        """The convolutions the released statistics summarise: the stem and every block's two
        (not the downsample path's)."""
        return [self.conv1.weight, *(w for b in self.blocks for w in (b.conv1.weight, b.conv2.weight))]


class OneLayerTransformer(nn.Module):
    """One-layer transformer of the grokking experiments, as released (Nanda et al.'s model).

    Attention and a ReLU MLP, each added to the residual stream; with `layer_norm`, a LayerNorm
    follows each residual addition (post-LN) and there is no final LayerNorm. Embeddings are
    scaled by 1/√d_model, the unembedding (which has `n_out` outputs: the released model predicts
    over the whole vocabulary, "=" included) by 1/√n_out.

    Only the last position ("=") is read out, so the query, the MLP and the unembedding are
    computed for that position alone: identical outputs to the full causal model, less compute.
    Keys and values depend on a position and its token alone, the query on the last token: for
    batches larger than the vocabulary they are computed once per (position, token) and gathered
    per example (faster training and Hessian-vector products for modular addition's full batch:
    benchmarks/README.md).
    """

    def __init__(
        self,
        vocab: int,
        n_out: int,
        d_model: int,
        n_heads: int,
        d_mlp: int,
        n_ctx: int = 3,
        layer_norm: bool = False,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        d_head = d_model // n_heads
        self.n_heads, self.d_head = n_heads, d_head
        scale = 1 / math.sqrt(d_model)
        self.W_E = nn.Parameter(torch.randn(vocab, d_model) * scale)
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) * scale)
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_head, d_model) * scale)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_head, d_model) * scale)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_head, d_model) * scale)
        self.W_O = nn.Parameter(torch.randn(d_model, d_model) * scale)
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model) * scale)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp) * scale)
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.W_U = nn.Parameter(torch.randn(d_model, n_out) / math.sqrt(n_out))
        if layer_norm:
            self.ln_attn = nn.LayerNorm(d_model)
            self.ln_mlp = nn.LayerNorm(d_model)
        else:
            self.ln_attn = self.ln_mlp = nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n = tokens.shape
        h, e = self.n_heads, self.d_head
        # Keys and values of every position in one matrix product; the query of the last one.
        w_kv = torch.cat([self.W_K, self.W_V]).reshape(2 * h * e, -1)
        w_q = self.W_Q.reshape(h * e, -1)
        vocab = self.W_E.shape[0]
        if b > vocab:
            # A position's key and value depend on its token alone, the query on the last token
            # alone: keys, values and queries once per (position, token) of the vocabulary, then
            # gathered per example (for modular addition's full batch 144 rows instead of 3,642).
            emb = self.W_E + self.W_pos[:n, None]  # (pos, vocab, d)
            k_t, v_t = (emb @ w_kv.T).view(n, vocab, 2, h, e).unbind(2)  # (pos, vocab, head, d_head)
            q_t = (emb[-1] @ w_q.T).view(vocab, h, e)
            pos, last_token = torch.arange(n, device=tokens.device), tokens[:, -1]
            # Products and sums over the three positions, not matrix products: a run then rounds
            # the same in a seed group as alone (an attention-score table by matrix products did
            # not, and drifted by 1e-4 in 300 steps).
            scores = (q_t[last_token][:, None] * k_t[pos, tokens]).sum(-1)  # (batch, pos, head)
            v = v_t[pos, tokens]  # (batch, pos, head, d_head)
            last = emb[-1][last_token]
        else:
            resid = self.W_E[tokens] + self.W_pos[:n]  # (batch, pos, d)
            k, v = (resid @ w_kv.T).view(b, n, 2, h, e).unbind(2)  # (batch, pos, head, d_head)
            last = resid[:, -1]
            q = (last @ w_q.T).view(b, 1, h, e)
            # Three positions: products and sums over them beat many tiny batched matrix products.
            scores = (q * k).sum(-1)
        attn = torch.softmax(scores / math.sqrt(e), dim=1)  # (batch, pos, head)
        z = (attn.unsqueeze(-1) * v).sum(1).reshape(b, -1)
        x = self.ln_attn(last + z @ self.W_O.T)
        mlp = torch.relu(x @ self.W_in.T + self.b_in) @ self.W_out.T + self.b_out
        return self.ln_mlp(x + mlp) @ self.W_U


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding, padding_mode="reflect") then
    RandomHorizontalFlip(), per image of a batch of stored images (B, H, W, C), any dtype: each
    image draws its crop offsets (0 … 2·padding) and whether it flips from `generator`, which
    stays on the CPU (so a run's draws do not depend on the device)."""
    b, h, w = x.shape[:3]
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5

    def reflect(k: torch.Tensor, n: int) -> torch.Tensor:
        k = k.abs()  # reflect padding mirrors without repeating the edge
        return torch.where(k > n - 1, 2 * (n - 1) - k, k)

    rows = reflect(torch.arange(h) + top[:, None] - padding, h)
    cols = reflect(torch.arange(w) + left[:, None] - padding, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    dev = x.device
    batch = torch.arange(b, device=dev)[:, None, None]
    return x[batch, rows.to(dev)[:, :, None], cols.to(dev)[:, None, :]]


def fit_state(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """Load a state dict read from `path` into `model`, naming the file when it does not fit:
    a missing, unexpected or misshapen tensor, or integer or boolean values where the model has
    floating-point weights (refused rather than cast)."""
    from latentstates.validation import InputError, require_floating

    own = model.state_dict()
    for name, tensor in state.items():
        if name in own and own[name].is_floating_point():
            require_floating(path, name, tensor.dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split("\n\t")[1:]) or str(exc)
        raise InputError(path, f"weights do not fit the configured model: {detail}") from exc
