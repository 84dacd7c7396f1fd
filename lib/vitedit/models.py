"""Model configs (timm Vision Transformers), one preprocessing function, batched inference.

All models are timm ``VisionTransformer`` instances, so every block stays hookable at
``model.blocks[i].mlp.fc2`` and ``model.blocks[i].attn.proj``; the classifier is ``model.head``.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import timm
import torch
import torch.nn.functional as F

from . import paths
from .progress import bar as progress_bar


class ModelError(ValueError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    name: str
    timm_name: str  # timm architecture (pretrained weights are looked up under it)
    img_size: int
    kwargs: dict = field(default_factory=dict)  # overrides passed to timm.create_model
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pretrained_default: bool = False
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_CONFIGS: dict[str, ModelConfig] = {
    c.name: c
    for c in [
        ModelConfig(
            "vit_small_p4_28",
            "vit_small_patch16_224",
            28,
            dict(img_size=28, patch_size=4, embed_dim=96, depth=12, num_heads=3, mlp_ratio=2.0),
            description="CPU default: 12 blocks, width 96, patch 4 on 28x28 (49 patches + CLS), "
            "trained from scratch",
        ),
        ModelConfig(
            "vit_tiny_test",
            "vit_small_patch16_224",
            28,
            dict(img_size=28, patch_size=7, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0),
            description="tests and the first run: 4 blocks, width 32, patch 7 on 28x28",
        ),
        ModelConfig(
            "vit_base_patch16_224",
            "vit_base_patch16_224",
            224,
            {},
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            pretrained_default=True,
            description="the original system's ViT-B/16 at 224x224 "
            "(ImageNet weights via timm or weights_path)",
        ),
    ]
}


def get_config(name: str) -> ModelConfig:
    if name not in MODEL_CONFIGS:
        raise ModelError(f"unknown model config '{name}'. Known: {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[name]


def build_model(
    config: ModelConfig | str,
    num_classes: int,
    pretrained: bool | None = None,
    weights_path: str | None = None,
    drop_path: float = 0.0,
) -> torch.nn.Module:
    """Create the model; with ``pretrained`` load ImageNet weights (timm hub or ``weights_path``).

    A pretrained model whose weights cannot be loaded is an error, never a silent scratch init.
    """
    cfg = get_config(config) if isinstance(config, str) else config
    pretrained = cfg.pretrained_default if pretrained is None else pretrained
    kwargs = dict(cfg.kwargs, num_classes=num_classes, drop_path_rate=drop_path)
    if not pretrained:
        if weights_path:
            raise ModelError(
                "weights_path is given but pretrained is false; set pretrained: true to load it"
            )
        return timm.create_model(cfg.timm_name, pretrained=False, **kwargs)
    if weights_path:
        wp = paths.resolve(weights_path)
        if not wp.is_file():
            raise ModelError(f"weights file {wp} does not exist (weights_path)")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(wp))
    try:
        return timm.create_model(cfg.timm_name, pretrained=True, **kwargs)
    except Exception as e:  # network errors, hub errors, bad files: all end here
        raise ModelError(
            f"could not load pretrained weights for {cfg.timm_name} ({type(e).__name__}: {str(e)[:300]}). "
            f"Give a local weights file with weights_path: /path/to/{cfg.timm_name}.safetensors "
            f"(or .pth/.npz), "
            f"make the Hugging Face hub reachable, or set pretrained: false to train from scratch."
        ) from e


def depth(config: ModelConfig | str) -> int:
    """Number of transformer blocks of a config (built on the meta device: no memory, no weights;
    a registered config's answer is cached: a sweep's plan asks once per grid point)."""
    if isinstance(config, str):
        return _registered_depth(config)
    return _build_depth(config)


@functools.cache
def grid_side(name: str) -> int:
    """The side of a registered config's square patch grid (28 px / patch 4 -> 7), on the meta
    device like :func:`depth`."""
    cfg = get_config(name)
    with torch.device("meta"):
        model = timm.create_model(
            cfg.timm_name, pretrained=False, **dict(cfg.kwargs, num_classes=2)
        )
    return int(model.patch_embed.grid_size[0])


@functools.cache
def _registered_depth(name: str) -> int:
    return _build_depth(get_config(name))


def _build_depth(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return len(
            timm.create_model(
                cfg.timm_name, pretrained=False, **dict(cfg.kwargs, num_classes=2)
            ).blocks
        )


def use_math_attention(model: torch.nn.Module) -> Callable[[], None]:
    """Switch timm's attention modules to the explicit (math) computation; returns the undo."""
    before = {m: m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")}
    for m in before:
        m.fused_attn = False

    def restore() -> None:
        for m, v in before.items():
            m.fused_attn = v

    return restore


def resolve_device(device: str = "auto") -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "device 'cuda' requested but CUDA is not available; use device: auto or cpu"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def preprocess(
    batch: np.ndarray | torch.Tensor,
    cfg: ModelConfig,
    device: torch.device | str = "cpu",
    pin_memory: bool = False,
) -> torch.Tensor:
    """Raw images -> normalised (B, 3, S, S) float tensor, identical in every stage.

    uint8 images (MedMNIST) are scaled to [0, 1] and normalised with the model's mean/std;
    float images (liver data, already z-scored) are used as they are. Grayscale becomes three
    channels; images are resized (bilinear, antialiased) to the model's input size.
    """
    if not isinstance(batch, torch.Tensor):
        a = np.asarray(batch)  # a dataset's arrays are read-only (vitedit.datasets.Data)
        batch = torch.as_tensor(a if a.flags.writeable else a.copy())
    x = batch
    if pin_memory:
        x = x.pin_memory()
    x = x.to(device, non_blocking=pin_memory)
    is_uint8 = x.dtype == torch.uint8
    x = x.float()
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    x = x.permute(0, 3, 1, 2)  # B, C, H, W
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != cfg.img_size or x.shape[-2] != cfg.img_size:
        x = F.interpolate(
            x,
            size=(cfg.img_size, cfg.img_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    if is_uint8:
        mean = torch.tensor(cfg.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std, device=x.device).view(1, 3, 1, 1)
        x = (x / 255.0 - mean) / std
    return x.contiguous()


def iter_batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@torch.no_grad()
def _batched(
    model, images, cfg, batch_size, device, *, forward, width: int, progress=False, desc=""
):
    """``forward(model, x)`` (float32, on the CPU) over ``images`` in batches, in eval mode and the
    inference precision; (0, ``width``) for no images."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    for sl in progress_bar(
        list(iter_batches(len(images), batch_size)), desc=desc, disable=not progress, leave=False
    ):
        x = preprocess(images[sl], cfg, device)
        with autocast(device):
            out.append(forward(model, x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, width)


def predict_logits(
    model: torch.nn.Module,
    images: np.ndarray,
    cfg: ModelConfig,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "predict",
) -> torch.Tensor:
    """Logits (float32, on the CPU) of ``model`` on raw ``images``, in eval mode."""
    return _batched(
        model,
        images,
        cfg,
        batch_size,
        device,
        forward=lambda m, x: m(x),
        width=model.num_classes,
        progress=progress,
        desc=desc,
    )


def predict_pre_logits(
    model: torch.nn.Module,
    images: np.ndarray,
    cfg: ModelConfig,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """What ``model.head`` reads (float32, on the CPU), by the same batches and precision as
    :func:`predict_logits`: ``head_logits`` of it equals ``predict_logits`` bit for bit in fp32."""
    return _batched(
        model,
        images,
        cfg,
        batch_size,
        device,
        forward=lambda m, x: m.forward_head(m.forward_features(x), pre_logits=True),
        width=model.head.in_features,
    )


@torch.no_grad()
def head_logits(model: torch.nn.Module, feats: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model.head`` on pre-logit features, batch by batch (the batches of ``predict_logits``)."""
    head = model.head
    w = head.weight
    out = [
        head(feats[sl].to(w.device, w.dtype)).float().cpu()
        for sl in iter_batches(len(feats), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, head.out_features)


def autocast(device: torch.device | str):
    """The precision of every inference pass: bf16 autocast on CUDA, fp32 on the CPU. Evaluation,
    the editors' targets, keys and statistics all run under it, so an edit is optimised in the
    precision it is judged in."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def predict_probs(
    model: torch.nn.Module,
    images: np.ndarray,
    cfg: ModelConfig,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Softmax probabilities (float32, on the CPU) of ``model`` on raw ``images``; (0, C) for none."""
    return torch.softmax(predict_logits(model, images, cfg, batch_size, device), -1)


@dataclass(frozen=True)
class Runner:
    """How models are run on raw images: the preprocessing config, the inference batch size and the
    device, passed as one object (editors, evaluation and tracing take a runner instead of the
    three). Its methods are :func:`predict_logits` and its siblings with these three filled in."""

    cfg: ModelConfig
    batch_size: int
    device: torch.device

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ModelError(
                f"Runner batch_size must be a positive integer, got {self.batch_size!r}"
            )
        object.__setattr__(self, "device", torch.device(self.device))

    def inputs(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw images as the model's input on the device (:func:`preprocess`)."""
        return preprocess(images, self.cfg, self.device)

    def batches(self, n: int) -> Iterator[slice]:
        return iter_batches(n, self.batch_size)

    def autocast(self):
        return autocast(self.device)

    def logits(self, model, images, progress: bool = False, desc: str = "predict") -> torch.Tensor:
        return predict_logits(model, images, self.cfg, self.batch_size, self.device, progress, desc)

    def probs(self, model, images) -> torch.Tensor:
        return predict_probs(model, images, self.cfg, self.batch_size, self.device)

    def pre_logits(self, model, images) -> torch.Tensor:
        return predict_pre_logits(model, images, self.cfg, self.batch_size, self.device)


def save_atomic(obj, path) -> None:
    """``torch.save`` so that ``path`` is either the old file or the complete new one."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    paths.atomic_write_bytes(path, buf.getvalue())
