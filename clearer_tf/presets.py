"""Configuration dataclasses and named presets (`paper`, `quick`).

A value from the command line travels through exactly one of these objects to
the library call; nothing is re-defaulted elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def resolve_jit(jit_compile) -> bool:
    """`True`/`False`, or `"auto"`: XLA unless TensorFlow runs on a machine without a GPU
    (on CPUs TF's XLA convolutions are slower than its oneDNN kernels; docs/benchmarks.md).
    JAX always compiles; this only matters for the TensorFlow backend."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return True
    if jit_compile != "auto":
        return bool(jit_compile)
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


@dataclass
class SupernetConfig:
    """Shape of the multi-scale search space (paper Sec. 3.1, authors' code).

    Args:
        image_channels: 1 (grayscale) or 3 (RGB).
        base_width: channels of the full-resolution branch; branch i has
            `base_width * 2**i` channels (32, 64, 128, 256 by default).
        columns: number of searchable columns in each cell; `len(columns)`
            is the number of cells S (one transition before each cell).
        stem_planes: bottleneck planes of the stem (output `4 * stem_planes`).
        stem_blocks: bottleneck blocks in the stem.
        residual: predict `clean = input - output` instead of the clean image.
        fusion_input: `"x"` feeds the fusion module with the column input
            (paper Eq. 1); `"parallel"` feeds it with the parallel module's
            output, as the authors' code does through an in-place list update.
    """

    image_channels: int = 1
    base_width: int = 32
    columns: tuple = (4, 4, 4)
    stem_planes: int = 32
    stem_blocks: int = 2
    residual: bool = False
    fusion_input: str = "x"

    def __post_init__(self):
        self.columns = tuple(int(c) for c in self.columns)
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 or 3, got {self.image_channels}")
        if not self.columns or min(self.columns) < 1:
            raise ValueError(f"columns must be a non-empty list of positive ints, got {self.columns}")
        if self.fusion_input not in ("x", "parallel"):
            raise ValueError(f"fusion_input must be 'x' or 'parallel', got {self.fusion_input!r}")
        if self.base_width < 1 or self.stem_planes < 1 or self.stem_blocks < 1:
            raise ValueError("base_width, stem_planes and stem_blocks must be positive")

    @property
    def num_cells(self) -> int:
        return len(self.columns)

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this (2**S)."""
        return 2 ** self.num_cells

    def widths(self) -> list:
        return [self.base_width * 2**i for i in range(self.num_cells + 1)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SearchConfig:
    """Bilevel search hyper-parameters (paper Sec. 3.3 / authors' code)."""

    iterations: int = 10_000
    warmup: int = 1_000
    batch_size: int = 32
    patch_size: int = 64
    # weights: SGD, cosine lr, coupled L2 weight decay (as torch.optim.SGD), clipping
    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    weight_momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # architecture: Adam, coupled L2 weight decay (as torch.optim.Adam)
    arch_lr: float = 3e-4
    arch_beta_1: float = 0.5
    arch_beta_2: float = 0.999
    arch_weight_decay: float = 1e-3
    # BatchNorm in the architecture step: "inference" (moving statistics, the spec) or
    # "batch" (batch statistics, as the authors' train-mode step); moving statistics are
    # never updated by architecture batches
    arch_batchnorm: str = "inference"
    # loss L = L_res + lambda_arch * L_arch + lambda_comp * L_comp (Eq. 2)
    lambda_arch: float = 0.01
    lambda_comp: float = 0.0
    arch_log_base: float = 10.0
    cost: str = "params"  # a name in clearer_tf.complexity.COST_MEASURES, or "latency"
    loss: str = "mse"  # L_res: a name in clearer_tf.losses.RESTORATION_LOSSES or a weighted sum
    # cost "latency" and the budget (clearer_tf.latency): a measured LiteRT table (read from
    # `latency_table`, else measured into the run folder at `latency_size` with
    # `latency_threads`), timings of `latency_precision`
    latency_table: str | None = None
    latency_size: tuple = (512, 512)
    latency_threads: int | None = None
    latency_precision: str = "float32"
    latency_budget_ms: float | None = None
    seed: int = 0
    # one Keras epoch = one log period (`iterations` must be a multiple); a backup every
    # `checkpoint_every` iterations (a multiple of `log_every`) and at the end
    log_every: int = 50
    checkpoint_every: int = 500
    jit_compile: bool | str = "auto"  # True, False, or "auto" (see resolve_jit)
    # "tfdata", "device" (JAX: batches drawn on the accelerator) or "auto" (pipelines.batches)
    data_pipeline: str = "auto"

    def __post_init__(self):
        if self.iterations <= self.warmup:
            raise ValueError(
                f"--iterations ({self.iterations}) must be larger than --warmup ({self.warmup})"
            )
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


@dataclass
class TrainConfig:
    """Training of the discrete network (paper Sec. 4 / authors' code)."""

    iterations: int = 100_000
    batch_size: int = 32
    patch_size: int = 64
    learning_rate: float = 0.01
    learning_rate_min: float = 0.0
    loss: str = "mse"  # a name in clearer_tf.losses.RESTORATION_LOSSES or a weighted sum
    grad_clip: float = 5.0
    validate_every: int = 1_000
    seed: int = 0
    jit_compile: bool | str = "auto"  # True, False, or "auto" (see resolve_jit)
    # "tfdata", "device" (JAX: batches drawn on the accelerator) or "auto" (pipelines.batches)
    data_pipeline: str = "auto"
    # Stop at this iteration and keep the backup: a later run with the same `iterations`
    # continues the schedule (training spread over sessions shorter than the whole run).
    stop_after: int | None = None
    # Wall-clock budget in seconds for this run: stop at the step where it runs out (then the
    # validation and the weights; the backup of the last whole epoch is kept, like `stop_after`).
    time_limit: float | None = None
    # (first, last) batch of the first epoch to trace with the profiler into tensorboard/
    profile_batches: tuple | None = None
    # Warm start from model weights alone (a `.weights.h5` of this network, no optimizer state):
    # begin at iteration `init_step` of the cosine schedule (any step; validations then fall
    # every `validate_every` steps after it), the
    # learning rate ramped linearly from 0 to the schedule's value over `rewarmup` iterations.
    init_weights: str | None = None
    init_step: int = 0
    rewarmup: int = 500


@dataclass
class Preset:
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def paper() -> Preset:
    """The paper's protocol: 3 cells x 4 columns, widths 32..256, 10k search / 100k train."""
    return Preset()


def quick() -> Preset:
    """A narrow, short configuration that finishes in minutes on 2 CPU cores."""
    return Preset(
        supernet=SupernetConfig(base_width=8, columns=(2, 2, 2), stem_planes=8, stem_blocks=1),
        search=SearchConfig(
            iterations=300, warmup=100, batch_size=8, patch_size=32, log_every=25,
            checkpoint_every=100, jit_compile=False,  # on a CPU, XLA compiles long and runs slower
            arch_lr=3e-3,  # 10x the paper's: alpha must move visibly within 200 search iterations
        ),
        train=TrainConfig(iterations=600, batch_size=8, patch_size=32, validate_every=200),
    )


PRESETS = {"paper": paper, "quick": quick}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]()
