"""The run config: one typed tree (model / data / optimizer / run), presets, overrides, checks.

Everything here is plain Python (no JAX), so configs can be built and checked before any compute.
Every check raises `ConfigError` with one line naming the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import yaml

DTYPES = ("float32", "bfloat16")
ATTENTIONS = ("vq", "full")
DATASETS = ("synthetic", "text", "enwik8", "pg19", "imagenet64")
OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("cosine", "constant")
WANDB_MODES = ("online", "offline", "disabled")
BYTE_VOCAB_SIZE = 259  # pad 0, eos 1, unk 2, then the 256 byte values


class ConfigError(ValueError):
    """A config value or combination is invalid; the message is one line naming the field."""


@dataclass(frozen=True)
class ModelConfig:
    """The model's own config: the model sees nothing else."""

    vocab_size: int = BYTE_VOCAB_SIZE  # set from the dataset's vocabulary
    d_model: int = 128  # residual width
    d_k: int = 32  # query/key width per head
    d_v: int = 256  # value/gate width per head
    d_ff: int = 0  # MLP width after each attention unit; 0 means none (the paper's GAU-only)
    n_head: int = 1  # heads per attention unit
    n_layer: int = 2  # layers; each layer is two gated attention units
    n_code: int = 64  # codebook rows per head = compressed cache length
    block_len: int = 32  # tokens per attention block
    mem_len: int = 32  # uncompressed key/value cache length
    agg_cache: bool = True  # include the aggregated (compressed) cache
    grad_thru_cache: bool = True  # let gradients flow through the caches
    attention: Literal["vq", "full"] = "vq"  # "full" is the quadratic baseline
    pe_abs: bool = False  # add absolute sinusoidal position embeddings
    pe_lam: float = 10_000.0  # maximum wavelength of the sinusoids
    p_dropemb: float = 0.0  # dropout on embeddings
    p_dropsin: float = 0.0  # dropout on relative-position sinusoids (same mask across blocks)
    p_dropres: float = 0.0  # dropout on residual branch outputs
    p_droplyr: float = 0.0  # layerdrop: drop whole attention units
    c_beta: float = 1e-4  # commitment loss weight
    c_gamma: float = 0.99  # codebook EMA rate
    e_tie: bool = False  # tie input and output embeddings
    e_preln: bool = False  # layer norm before the output projection
    e_scale: float = 1.0  # multiplier on output logits
    dtype: Literal["float32", "bfloat16"] = "float32"  # activation dtype; parameters are float32


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from and how they are cut."""

    dataset: Literal["synthetic", "text", "enwik8", "pg19", "imagenet64"] = "synthetic"
    data_dir: str = ""  # local path or gs:// (tfds data dir, or the text files)
    vocab_path: str = ""  # SentencePiece model; required for pg19
    sequence_len: int = 256  # tokens per training sequence
    update_len: int = 128  # tokens per parameter update window; state carried between windows
    global_batch_size: int = 8  # sequences per step, over all processes
    vocab_sample_bytes: int = 100_000_000  # bytes of training text that train-vocab reads


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and learning-rate schedule (the codebook is never updated by these)."""

    name: Literal["adamw", "adafactor"] = "adamw"
    lr_max: float = 2e-3
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 20
    max_steps: int = 300  # steps of the schedule (warmup included)
    extra_steps: int = 0  # constant-rate steps after the schedule
    grad_clip: float = 1.0  # global norm; 0 disables
    weight_decay: float = 0.0  # decoupled, AdamW only


@dataclass(frozen=True)
class RunConfig:
    """Everything about running: seeds, dirs, logging, sampling, distribution."""

    seed: int = 0
    out_dir: str = "runs/default"  # checkpoints go here; restored from here when present
    in_dir: str = ""  # restored from here when out_dir holds no checkpoint
    save_every: int = 100  # steps between checkpoints (and one at the end)
    keep: int = 3  # checkpoints kept
    log_every: int = 10  # steps between metrics lines
    eval_steps: int = 0  # batches per val/test pass; 0 means the whole split
    metrics_file: str = ""  # JSON lines of every logged step
    wandb_mode: Literal["online", "offline", "disabled"] = "disabled"
    wandb_project: str = "tvq"
    wandb_run_id: str = ""  # resumes this W&B run
    p_nucleus: float = 0.9  # nucleus sampling mass
    sample_len: int = 256  # tokens to sample
    sample_batch: int = 1  # samples drawn at once
    prompt: str = ""  # text that samples continue
    mesh_data: int = -1  # data-parallel axis size; -1 means all devices not used by fsdp
    mesh_fsdp: int = 1  # axis that shards parameters and optimizer state
    init_timeout_s: int = 300  # bound on the wait for the jax.distributed coordinator


@dataclass(frozen=True)
class Config:
    """The whole run config."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    run: RunConfig = field(default_factory=RunConfig)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def _paper(d_model: int, d_v: int, **model: Any) -> dict[str, Any]:
    """Model fields shared by the paper's three presets (Transformer-VQ, Appendix, and scripts)."""
    return dict(
        d_model=d_model, d_k=128, d_v=d_v, d_ff=0, n_head=1, n_layer=24, n_code=512,
        block_len=512, mem_len=512, agg_cache=True, grad_thru_cache=True, c_beta=1e-4,
        c_gamma=0.99, **model,
    )


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The default: trains in one to two minutes on 2 CPU cores on the embedded synthetic task,
    # long enough for the compressed cache to learn its long-range lookup (tvq.data.synthetic).
    "cpu": {"optimizer": dict(max_steps=400, warmup_steps=10, lr_max=6e-3)},
    "enwik8": {
        "model": _paper(768, 1536, p_dropemb=0.0, p_dropsin=0.2, p_dropres=0.5, p_droplyr=0.3,
                        e_tie=False, e_preln=False, e_scale=1.0, dtype="bfloat16"),
        "data": dict(dataset="enwik8", sequence_len=8192, update_len=2048, global_batch_size=128),
        "optimizer": dict(name="adamw", lr_max=4e-4, schedule="cosine", warmup_steps=10_000,
                          max_steps=125_000, grad_clip=0.1, weight_decay=2e-4),
        "run": dict(save_every=1000, keep=5, log_every=100, eval_steps=100, p_nucleus=0.9),
    },
    "pg19": {
        "model": _paper(2048, 4096, vocab_size=32_000, p_dropemb=0.0, p_dropsin=0.1,
                        p_dropres=0.1, p_droplyr=0.1, e_tie=True, e_preln=True, e_scale=0.005,
                        dtype="bfloat16"),
        "data": dict(dataset="pg19", sequence_len=8192, update_len=2048, global_batch_size=128),
        "optimizer": dict(name="adafactor", lr_max=1e-2, schedule="cosine", warmup_steps=10_000,
                          max_steps=500_000, grad_clip=0.0, weight_decay=0.0),
        "run": dict(save_every=1000, keep=5, log_every=100, eval_steps=100, p_nucleus=0.8),
    },
    "imagenet64": {
        "model": _paper(2048, 4096, pe_abs=True, p_dropemb=0.0, p_dropsin=0.1, p_dropres=0.0,
                        p_droplyr=0.0, e_tie=True, e_preln=True, e_scale=0.005,
                        dtype="bfloat16"),
        "data": dict(dataset="imagenet64", sequence_len=12_288, update_len=1536,
                     global_batch_size=128),
        "optimizer": dict(name="adafactor", lr_max=1e-2, schedule="cosine", warmup_steps=10_000,
                          max_steps=500_000, grad_clip=0.0, weight_decay=0.0),
        "run": dict(save_every=1000, keep=5, log_every=100, eval_steps=100, p_nucleus=0.999,
                    sample_len=12_288),  # one 64x64x3 image
    },
}
DEFAULT_PRESET = "cpu"


def _field_types(section_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise ConfigError."""
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key}: got {value!r}; allowed: {', '.join(allowed)}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: got {value!r}; allowed: 0, 1, true, false")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}; allowed: an integer")
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: got {value!r}; allowed: an integer") from None
    if hint is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: got {value!r}; allowed: a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: got {value!r}; allowed: a finite number")
        return number
    if hint is str:
        return "" if value is None else str(value)
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in this module


def _merge(base: dict[str, dict[str, Any]], layer: Mapping[str, Any], origin: str) -> None:
    """Merge one nested layer of overrides into `base`, checking section and field names."""
    if not isinstance(layer, Mapping):
        raise ConfigError(f"{origin}: expected a mapping of sections "
                          f"({', '.join(SECTIONS)}), got {type(layer).__name__}")
    for section, values in layer.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section {section!r}; allowed: "
                              f"{', '.join(SECTIONS)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section}: expected a mapping of fields in {origin}")
        hints = _field_types(SECTIONS[section])
        for name, value in values.items():
            key = f"{section}.{name}"
            if name not in hints:
                raise ConfigError(f"{key}: unknown field; allowed: {', '.join(hints)}")
            base[section][name] = _coerce(key, value, hints[name])


def parse_set(assignment: str) -> dict[str, dict[str, Any]]:
    """Parse one `section.field=value` override into a nested layer."""
    key, sep, value = assignment.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"--set: got {assignment!r}; expected section.field=value, "
                          f"with section one of {', '.join(SECTIONS)}")
    return {section: {name: yaml.safe_load(value) if value.strip() else ""}}


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file (a nested mapping of sections)."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no such file {path!r}")
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            first = str(error).splitlines()[0]
            raise ConfigError(f"--config: {path} is not valid YAML ({first})") from None
    return data


def build(preset: str = DEFAULT_PRESET, layers: list[Mapping[str, Any]] | None = None,
          origins: list[str] | None = None, checked: bool = True) -> Config:
    """Build a Config from a preset and override layers applied in order.

    With checked=False the caller must call validate() itself (after deriving fields).
    """
    if preset not in PRESETS:
        raise ConfigError(f"--preset: got {preset!r}; allowed: {', '.join(PRESETS)}")
    values: dict[str, dict[str, Any]] = {
        name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()
    }
    _merge(values, PRESETS[preset], f"preset {preset}")
    for index, layer in enumerate(layers or []):
        _merge(values, layer, (origins or [])[index] if origins else "override")
    config = Config(**{name: SECTIONS[name](**values[name]) for name in SECTIONS})
    if checked:
        validate(config)
    return config


def replace(config: Config, **sections: Mapping[str, Any]) -> Config:
    """Return a checked copy with some fields replaced, e.g. replace(c, model={"n_code": 8})."""
    values = {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}
    _merge(values, sections, "replace")
    new = Config(**{name: SECTIONS[name](**values[name]) for name in SECTIONS})
    validate(new)
    return new


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The config as a nested plain dict (for YAML, checkpoints and W&B)."""
    return dataclasses.asdict(config)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: Config) -> None:
    """Check every field and combination; raise ConfigError with one line on the first problem."""
    m, d, o, r = config.model, config.data, config.optimizer, config.run
    for key, value in (("model.d_model", m.d_model), ("model.d_k", m.d_k), ("model.d_v", m.d_v),
                       ("model.n_head", m.n_head), ("model.n_layer", m.n_layer),
                       ("model.n_code", m.n_code), ("model.block_len", m.block_len),
                       ("model.vocab_size", m.vocab_size), ("data.sequence_len", d.sequence_len),
                       ("data.update_len", d.update_len),
                       ("data.global_batch_size", d.global_batch_size),
                       ("optimizer.max_steps", o.max_steps), ("run.save_every", r.save_every),
                       ("run.keep", r.keep), ("run.log_every", r.log_every),
                       ("run.sample_len", r.sample_len), ("run.sample_batch", r.sample_batch),
                       ("run.mesh_fsdp", r.mesh_fsdp), ("run.init_timeout_s", r.init_timeout_s),
                       ("data.vocab_sample_bytes", d.vocab_sample_bytes)):
        _require(value >= 1, f"{key}: got {value}; allowed: an integer >= 1")
    for key, value in (("model.d_ff", m.d_ff), ("model.mem_len", m.mem_len),
                       ("optimizer.warmup_steps", o.warmup_steps),
                       ("optimizer.extra_steps", o.extra_steps), ("run.eval_steps", r.eval_steps),
                       ("run.seed", r.seed)):
        _require(value >= 0, f"{key}: got {value}; allowed: an integer >= 0")
    _require(r.mesh_data == -1 or r.mesh_data >= 1,
             f"run.mesh_data: got {r.mesh_data}; allowed: -1 (all remaining devices) or >= 1")
    for key, value in (("model.p_dropemb", m.p_dropemb), ("model.p_dropsin", m.p_dropsin),
                       ("model.p_dropres", m.p_dropres), ("model.p_droplyr", m.p_droplyr)):
        _require(0.0 <= value < 1.0, f"{key}: got {value}; allowed: 0 <= p < 1")
    _require(0.0 < m.c_gamma < 1.0, f"model.c_gamma: got {m.c_gamma}; allowed: 0 < c_gamma < 1")
    _require(m.c_beta >= 0.0, f"model.c_beta: got {m.c_beta}; allowed: >= 0")
    _require(m.e_scale > 0.0, f"model.e_scale: got {m.e_scale}; allowed: > 0")
    _require(m.pe_lam > 1.0, f"model.pe_lam: got {m.pe_lam}; allowed: > 1")
    _require(0.0 < r.p_nucleus <= 1.0,
             f"run.p_nucleus: got {r.p_nucleus}; allowed: 0 < p_nucleus <= 1")
    _require(o.lr_max > 0.0, f"optimizer.lr_max: got {o.lr_max}; allowed: > 0")
    _require(o.grad_clip >= 0.0, f"optimizer.grad_clip: got {o.grad_clip}; allowed: >= 0 "
             "(0 disables clipping)")
    _require(o.weight_decay >= 0.0,
             f"optimizer.weight_decay: got {o.weight_decay}; allowed: >= 0")
    _require(o.warmup_steps <= o.max_steps, f"optimizer.warmup_steps: got {o.warmup_steps}; "
             f"allowed: <= optimizer.max_steps ({o.max_steps})")
    _require(m.d_k % 2 == 0, f"model.d_k: got {m.d_k}; allowed: an even number "
             "(relative-position sinusoids come in sin/cos pairs)")
    _require(m.d_model % 2 == 0 or not m.pe_abs, f"model.d_model: got {m.d_model}; allowed: an "
             "even number when model.pe_abs is on")
    _require(d.update_len % m.block_len == 0, f"model.block_len: got {m.block_len}; allowed: a "
             f"divisor of data.update_len ({d.update_len})")
    _require(d.sequence_len % d.update_len == 0, f"data.update_len: got {d.update_len}; allowed: "
             f"a divisor of data.sequence_len ({d.sequence_len})")
    _require(not (d.dataset == "pg19" and not d.vocab_path),
             "data.vocab_path: required for dataset pg19 (train one with `tvq train-vocab`)")
    _require(d.dataset in ("synthetic",) or bool(d.data_dir),
             f"data.data_dir: required for dataset {d.dataset}")
    _require(not (o.name == "adafactor" and o.weight_decay > 0),
             "optimizer.weight_decay: allowed only with optimizer.name adamw")
    _require(d.dataset != "imagenet64" or d.sequence_len % (64 * 64 * 3) == 0,
             f"data.sequence_len: got {d.sequence_len}; allowed for imagenet64: a multiple of "
             "12288 (one 64x64x3 image)")


def describe(config: Config) -> str:
    """A compact one-line summary for logs."""
    m, d = config.model, config.data
    return (f"attention={m.attention} d_model={m.d_model} n_layer={m.n_layer} n_code={m.n_code} "
            f"block_len={m.block_len} mem_len={m.mem_len} agg_cache={int(m.agg_cache)} "
            f"dataset={d.dataset} sequence_len={d.sequence_len} update_len={d.update_len} "
            f"batch={d.global_batch_size} dtype={m.dtype}")


__all__ = [
    "BYTE_VOCAB_SIZE", "Config", "ConfigError", "DataConfig", "ModelConfig", "OptimizerConfig",
    "PRESETS", "RunConfig", "build", "describe", "load_yaml", "parse_set", "replace", "to_dict",
    "validate",
]
