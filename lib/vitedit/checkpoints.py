"""Content-addressed checkpoints and the run's reference to the one it trained.

A checkpoint's name encodes everything that determined its weights (dataset, data file, split,
model config, weights source, seed, training recipe, precision, CPU threads, the CPU's kind),
so a run with another seed or ratio can never pick up a model that saw its
Edit-Discovery samples; a run records the exact file (path and sha256) it trained, and every later
stage loads that file only.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import platform
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import filelock
import torch

from . import models, paths
from .datasets import Data
from .params import digest
from .splits import Split

RECIPE_VERSION = 1  # bump when the training loop changes what weights a key produces


TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_frac",
    "label_smoothing",
    "drop_path",
    "augment",
    "patience",
)


CHECKPOINT_REF = "checkpoint.json"


class CheckpointError(ValueError):
    pass


# --------------------------------------------------------------------------- keys
def checkpoint_fields(
    params: Mapping[str, Any], data: Data, split: Split, device: torch.device
) -> dict:
    cfg = models.get_config(params["model"])
    pretrained = (
        cfg.pretrained_default if params.get("pretrained") is None else params["pretrained"]
    )
    weights = None
    if pretrained:
        weights = "timm-hub"
        if params.get("weights_path"):
            weights = "file-sha256:" + sha256_file(paths.resolve(params["weights_path"]))
    fields = {}
    if str(data.info.name).startswith("liver"):
        # the liver data's official train/val/test split is drawn with this seed: neither the data
        # MD5 nor the FT-Train/Edit-Discovery digest sees it
        fields["liver_split_seed"] = params["liver_split_seed"]
    return canonical(
        {
            **fields,
            "recipe": RECIPE_VERSION,
            "dataset": data.info.name,
            "size": params.get("size"),
            "data_md5": data.md5,
            "split": split.digest,
            "seed": params["seed"],
            "ft_train_ratio": params["ft_train_ratio"],
            "model": cfg.to_dict(),
            "weights": weights,
            **precision_fields(params, device),
            "train": train_fields(params),
        }
    )


def precision(params: Mapping[str, Any], device: torch.device) -> str:
    """``fp32`` or ``bf16``: ``train_precision``, with ``auto`` bf16 on CUDA only."""
    choice = params.get("train_precision", "auto")
    return ("bf16" if device.type == "cuda" else "fp32") if choice == "auto" else choice


def precision_fields(params: Mapping[str, Any], device: torch.device) -> dict:
    """What a checkpoint's name records of its arithmetic: the precision, on the CPU in bf16 the
    math attention it needs (a different computation from the fused kernel), and on the CPU a
    thread count other than one: the matmuls' reductions split by thread, so one epoch of the
    same seed at 1 and at 2 threads already differs (by ~1e-5; the models drift apart over the
    epochs), and the CPU's kind (:func:`cpu_kernels`). Called where the training applies its
    threads (:func:`vitedit.train.fit`)."""
    prec = precision(params, device)
    cpu = device.type != "cuda"
    math_attention = prec == "bf16" and cpu
    n = torch.get_num_threads() if cpu else 1
    kind = cpu_kernels(prec) if cpu else None  # a GPU's arithmetic is not the CPU's
    return (
        {"precision": prec}
        | ({"attention": "math"} if math_attention else {})
        | ({"threads": n} if n != 1 else {})
        # added later: only where it differs from the published models' CPUs (Intel Xeons with
        # AVX-512 and AMX), so that their checkpoints keep their names
        | ({"cpu_kernels": kind} if kind not in (None, PUBLISHED_CPU[prec]) else {})
    )


PUBLISHED_CPU = {"fp32": "intel_avx512", "bf16": "intel_amx"}
X86 = ("x86_64", "amd64", "i386", "i686")


def cpu_kernels(prec: str) -> str:
    """The kind of CPU a training ran its matmuls on, as ``<vendor>_<instruction set>``: the math
    libraries (MKL, oneDNN) pick their kernels by both, and the same seed, recipe and thread count
    train other weights on another kind. Measured: BloodMNIST in bf16, seeds 42-49, 71.4
    Edit-Discovery errors per seed on Intel Xeons with AMX and 69.5 on an AMD EPYC with AVX-512
    bf16; RetinaMNIST in fp32, seeds 42-47, Test 0.520 and 0.508 on average. In fp32 the
    instruction set is torch's (``avx512``, ``avx2``); in bf16 the one bf16 matmuls use (``amx``,
    ``avx512_bf16``, or torch's where the CPU has neither). Another architecture gives its name
    (``aarch64``). A proxy: two CPUs of one vendor and instruction set may still differ (cache
    sizes can change the blocking). ``VITEDIT_CPU_KERNELS`` overrides the probe."""
    forced = os.environ.get("VITEDIT_CPU_KERNELS")
    if forced is not None:
        return check_kind(forced, "VITEDIT_CPU_KERNELS", "unset it to probe the CPU")
    machine = platform.machine().lower()
    if machine not in X86:
        return machine or "unknown"
    isa = torch.backends.cpu.get_cpu_capability().lower()
    probes = (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for family, probe in probes if prec == "bf16" else ():
        if getattr(torch.cpu, probe, lambda: False)():  # private probes: absent means no
            isa = family
            break
    return re.sub(r"[^a-z0-9_]", "_", f"{cpu_vendor()}_{isa}")  # "NO AVX" -> "x86_no_avx"


def check_kind(kind: str, where: str, fix: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", kind):
        raise CheckpointError(
            f"{where}={kind!r} is not a CPU kind (lower-case letters, digits, '_': intel_amx, "
            f"amd_avx512_bf16, intel_avx512, aarch64): {fix}"
        )
    return kind


def cpu_vendor() -> str:
    """``intel``, ``amd`` or ``x86`` (another vendor, or no /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the processor string (Windows names the vendor there)
        text = platform.processor()
    vendors = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
    return next((v for k, v in vendors.items() if k in text), "x86")


def train_fields(params: Mapping[str, Any]) -> dict:
    """The training recipe a checkpoint records (its name's hash, and what a run's stages check)."""
    return {
        **{k: params[k] for k in TRAIN_KEYS},
        # added later: only when off, so that earlier checkpoints keep their names
        **({"augment_flips": False} if not params.get("augment_flips", True) else {}),
    }


def canonical(obj: Any) -> Any:
    """JSON-normal form (tuples -> lists), so stored and fresh fields compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def checkpoint_path(params: Mapping[str, Any], fields: dict) -> Path:
    ratio = f"{fields['ft_train_ratio']:g}"
    data = f"{fields['dataset']}{fields['size'] or ''}"
    name = f"{data}_{params['model']}_s{fields['seed']}_r{ratio}_{digest(fields)}.pt"
    return paths.resolve(params.get("checkpoint_dir") or "checkpoints") / name


def sha256_file(path: Path) -> str:
    return paths.file_hash(path, "sha256")


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on ``<path>.lock`` while the block runs (one writer of ``path`` at a time;
    ``filelock`` works on Linux, macOS and Windows, unlike ``fcntl``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(path.with_name(path.name + ".lock")):
        yield


def read_torch(path: Path, what: str, fix: str, device="cpu", weights_only: bool = False) -> Any:
    """``torch.load`` of one of the project's own files; a file that cannot be read is named as
    corrupt with ``fix`` (a truncated or overwritten file fails inside torch with an error that
    names no path)."""
    try:
        return torch.load(path, map_location=device, weights_only=weights_only)
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as e:
        if "out of memory" in str(e):  # not the file's fault
            raise
        raise CheckpointError(
            f"{what} {path} is corrupt or truncated ({type(e).__name__}: {str(e)[:120]}); {fix}"
        ) from None


def load_checkpoint(path: Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    blob = read_torch(
        path,
        "checkpoint",
        "delete it and rerun 02_train (CLI: --stage train), which trains it again",
        device,
    )
    if not isinstance(blob, dict) or "state_dict" not in blob or "fields" not in blob:
        raise CheckpointError(f"{path} is not a vitedit checkpoint")
    cfg = model_config_of(blob)
    model = models.build_model(cfg, blob["num_classes"], pretrained=False)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return model.to(device), meta


def run_checkpoint_ref(run_dir: Path) -> dict:
    """The ``checkpoint.json`` of a run (path and sha256 of the model it trained)."""
    f = Path(run_dir) / CHECKPOINT_REF
    if not f.is_file():
        raise CheckpointError(
            f"{run_dir} has no {CHECKPOINT_REF}: run notebook 02_train (CLI: --stage train) first"
        )
    return json.loads(f.read_text())


def model_config_of(meta: Mapping[str, Any]) -> models.ModelConfig:
    """The model config a checkpoint was trained with (from its metadata)."""
    return models.ModelConfig(**meta["fields"]["model"])


def load_run_model(
    run_dir: Path, split: Split | None = None, device="cpu", params: Mapping[str, Any] | None = None
) -> tuple[torch.nn.Module, dict]:
    """The model this run trained; refused if the file changed, belongs to another split, or
    (given ``params``) was trained with another dataset, seed, ratio, model config or recipe."""
    ref = run_checkpoint_ref(run_dir)
    path = Path(ref["path"])
    if not path.is_file():
        raise CheckpointError(f"the checkpoint this run trained ({path}) is gone; rerun 02_train")
    if sha256_file(path) != ref["sha256"]:
        raise CheckpointError(
            f"{path} differs from the checkpoint this run trained (sha256 mismatch); rerun 02_train"
        )
    if split is not None and ref["split"] != split.digest:
        raise CheckpointError(
            f"{path} was trained on split {ref['split']} but this run's split is {split.digest}"
        )
    if params is not None:
        f = ref["fields"]
        want = {
            "dataset": params["dataset"],
            "seed": params["seed"],
            "ft_train_ratio": params["ft_train_ratio"],
            "model": canonical(models.get_config(params["model"]).to_dict()),
            "train": train_fields(params),
        }
        diffs = [k for k, v in want.items() if canonical(f.get(k)) != canonical(v)]
        if diffs:
            raise CheckpointError(
                f"the checkpoint of {run_dir} was trained with other {', '.join(diffs)} than this "
                f"stage's parameters; rerun 02_train or use the run's parameters"
            )
    model, meta = load_checkpoint(path, device)
    return model, meta


# the merge that put the CPU's kind in the name: a file trained later records it where it differs
KIND_IN_NAME_SINCE = "2026-12-04T19:43"


def parse_kinds(text: str) -> dict[str, str]:
    """``fp32=K1 bf16=K2`` (what ``python -m vitedit.checkpoints kind`` prints; commas also
    separate) as a dict, or one kind for both precisions."""
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if len(parts) == 1 and "=" not in parts[0]:
        return {prec: check_kind(parts[0], "kind", KIND_FIX) for prec in PUBLISHED_CPU}
    kinds = dict(p.split("=", 1) for p in parts if "=" in p)
    if len(kinds) != len(parts) or set(kinds) - set(PUBLISHED_CPU):
        raise CheckpointError(
            f"kind {text!r} is not '<kind>' or 'fp32=<kind> bf16=<kind>': {KIND_FIX}"
        )
    return {prec: check_kind(k, f"kind {prec}", KIND_FIX) for prec, k in kinds.items()}


KIND_FIX = "pass what 'python -m vitedit.checkpoints kind' prints on the machine that trained it"


def adoption(path: str | os.PathLike, kinds: Mapping[str, str]) -> tuple[dict, Path]:
    """What :func:`adopt` would write (the checkpoint with the kind in its fields, and its new
    path), or the reason it refuses; writes nothing."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    blob = read_torch(path, "checkpoint", "pass a vitedit checkpoint (checkpoints/*.pt)")
    if not isinstance(blob, dict) or "fields" not in blob:
        raise CheckpointError(f"{path} is not a vitedit checkpoint")
    fields, old = canonical(blob["fields"]), path.stem.rsplit("_", 1)[-1]
    prec = fields.get("precision")
    refusals = [
        (digest(fields) != old, f"does not carry its fields' hash ({digest(fields)})"),
        ("cpu_kernels" in fields, "records its CPU's kind already: nothing to adopt"),
        (
            "bf16_kernels" in fields,  # the field's first form, for a few hours of 2026-12-04
            "records a kind under the field's first name (bf16_kernels): delete it, it is "
            "retrained under today's name",
        ),
        (
            prec == "bf16" and fields.get("attention") != "math",
            "was trained on a GPU (no CPU kind)",
        ),
        (prec not in kinds, f"is in {prec}, and no kind is given for {prec}"),
        (
            str(blob.get("created", "")) >= KIND_IN_NAME_SINCE,
            f"was trained after the kind entered the name ({KIND_IN_NAME_SINCE}): its name is right",
        ),
    ]
    why = next((w for refused, w in refusals if refused), None)
    if why is None and kinds[prec] == PUBLISHED_CPU[prec]:
        why = f"would get the published models' kind in {prec} ({kinds[prec]}): its name is right"
    if why:
        raise CheckpointError(f"{path.name} {why}")
    blob["fields"] = canonical({**fields, "cpu_kernels": kinds[prec]})
    blob["adopted"] = {"from": path.name, "kind": kinds[prec]}
    return blob, path.with_name(f"{path.stem[: -len(old)]}{digest(blob['fields'])}.pt")


def adopt(path: str | os.PathLike, kinds: str | Mapping[str, str]) -> Path:
    """Copy a checkpoint trained on another kind of CPU than the published models' before the kind
    entered the name to the name it gets today (the kind of its precision from ``kinds``, what
    ``python -m vitedit.checkpoints kind`` prints on the machine that trained it: only its owner
    knows); refusals in :func:`adoption`, or another model under the new name. The old file stays
    (run folders point at it by sha256): delete it once none does."""
    kinds = parse_kinds(kinds) if isinstance(kinds, str) else kinds
    blob, target = adoption(path, kinds)
    with file_lock(target):
        if target.is_file():
            have = read_torch(target, "checkpoint", "delete it and adopt again")
            same = have.get("state_dict", {}).keys() == blob["state_dict"].keys() and all(
                torch.equal(have["state_dict"][k], v) for k, v in blob["state_dict"].items()
            )
            if not same:
                raise CheckpointError(f"{target} exists and holds other weights: delete it first")
            return target
        models.save_atomic(blob, target)
    return target


def main(argv: list[str] | None = None) -> int:
    import argparse  # lazy: only the command line needs it
    import sys  # lazy: as argparse

    ap = argparse.ArgumentParser(prog="python -m vitedit.checkpoints")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("kind", help="this CPU's kind per precision, as checkpoint names record it")
    a = sub.add_parser("adopt", help="copy checkpoints trained before the kind entered the name")
    a.add_argument("kind", help="what 'kind' printed on the machine that trained them (quoted)")
    a.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "kind":
        print(" ".join(f"{p}={cpu_kernels(p)}" for p in PUBLISHED_CPU))
        return 0
    try:
        kinds = parse_kinds(args.kind)
        for f in args.files:  # every file checked before any is written
            adoption(f, kinds)
        for f in args.files:
            print(f"{f} -> {adopt(f, kinds)}")
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
