"""Genotype: the searched architecture (which module fills each column), as JSON.

`derive` discretises a supernet by argmax over softmax(alpha) (paper Sec. 3.3).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numpy as np

from clearer_tf import files
from clearer_tf.presets import SupernetConfig
from clearer_tf.supernet import CANDIDATES, mixed_columns

FORMAT_VERSION = 1
_SHORT = {"P": "parallel", "F": "fusion"}
TASKS = ("denoise", "derain")
# Sane ranges: far beyond the paper's network (3 cells of 4 columns, base width 32, 2 stem
# blocks of 32 planes), small enough that a typo fails here, not in a hang or an OOM.
LIMITS = {"cells": 6, "columns": 16, "base_width": 512, "stem_planes": 512, "stem_blocks": 16}
MAX_WIDTH = 4096  # the widest branch, base_width * 2**cells


class GenotypeError(ValueError):
    """An invalid genotype; the message names the offending field."""


@dataclass
class Genotype:
    """A discrete CLEARER architecture.

    Args:
        cells: per cell, the module of each column (`"parallel"`/`"fusion"`).
        image_channels: 1 or 3.
        base_width: full-resolution width; branch i has `base_width * 2**i`.
        stem_planes, stem_blocks, residual: as in `SupernetConfig`.
        task: `"denoise"` or `"derain"` (informative).
        weights: optional final softmax weights per cell/column, `(w_p, w_f)`.
        search, data: optional descriptions of the search config and data.

    Example:
    >>> g = Genotype.from_string("F P P F / F F F F / P F F P")
    >>> g.cells[0]
    ['fusion', 'parallel', 'parallel', 'fusion']
    """

    cells: list
    image_channels: int = 1
    base_width: int = 32
    stem_planes: int = 32
    stem_blocks: int = 2
    residual: bool = False
    task: str = "denoise"
    weights: list | None = None
    search: dict | None = None
    data: dict | None = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_string(cls, text, **kwargs):
        """Parse `"F P P F / F F F F / P F F P"` (P = parallel, F = fusion)."""
        cells = []
        for part in text.split("/"):
            tokens = part.split()
            unknown = [t for t in tokens if t.upper() not in _SHORT]
            if unknown or not tokens:
                raise GenotypeError(f"genotype string {text!r}: expected P/F tokens, got {part!r}")
            cells.append([_SHORT[t.upper()] for t in tokens])
        return cls(cells=cells, **kwargs)

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise GenotypeError(f"genotype must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise GenotypeError(
                f"genotype field 'format_version': unsupported value {version!r} "
                f"(this version reads {FORMAT_VERSION})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "cells" not in kwargs:
            raise GenotypeError("genotype field 'cells' is missing")
        extra = {k: v for k, v in data.items() if k not in known and k not in ("widths", "columns")}
        genotype = cls(**kwargs, extra=extra)
        for name in ("widths", "columns"):
            if name in data and not _int_list(data[name]):
                raise GenotypeError(f"genotype field '{name}': must be a list of integers, got {data[name]!r}")
        if "widths" in data and list(data["widths"]) != genotype.widths():
            raise GenotypeError(
                f"genotype field 'widths': {data['widths']} does not match base_width "
                f"{genotype.base_width} and {len(genotype.cells)} cells (expected {genotype.widths()})"
            )
        if "columns" in data and list(data["columns"]) != genotype.columns():
            raise GenotypeError(
                f"genotype field 'columns': {data['columns']} does not match the cells "
                f"(which have {genotype.columns()} columns)"
            )
        return genotype

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise GenotypeError(f"genotype file {path}: not found") from None
        except IsADirectoryError:
            raise GenotypeError(f"genotype file {path}: is a folder, not a JSON file") from None
        except UnicodeDecodeError as e:
            raise GenotypeError(f"genotype file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise GenotypeError(f"genotype file {path}: not valid JSON ({e})") from None
        except RecursionError:
            raise GenotypeError(f"genotype file {path}: nested too deeply to be a genotype") from None
        try:
            return cls.from_dict(data)
        except GenotypeError as e:
            raise GenotypeError(f"genotype file {path}: {e}") from None

    @classmethod
    def coerce(cls, genotype):
        """A `Genotype` from a Genotype, a parsed dict, or a `genotype.json` path."""
        if isinstance(genotype, Genotype):
            return genotype
        if isinstance(genotype, dict):
            return cls.from_dict(genotype)
        if isinstance(genotype, (str, os.PathLike)):
            return cls.load(genotype)
        raise GenotypeError(f"genotype: expected a path, dict or Genotype, got {type(genotype).__name__}")

    # --- checks and views ----------------------------------------------------------------
    def validate(self):
        if not isinstance(self.cells, list) or not self.cells:
            raise GenotypeError("genotype field 'cells': must be a non-empty list of cells")
        if len(self.cells) > LIMITS["cells"]:
            raise GenotypeError(f"genotype field 'cells': {len(self.cells)} cells, at most "
                                f"{LIMITS['cells']} are supported")
        for s, cell in enumerate(self.cells):
            if not isinstance(cell, list) or not cell:
                raise GenotypeError(f"genotype field 'cells[{s}]': must be a non-empty list of modules")
            if len(cell) > LIMITS["columns"]:
                raise GenotypeError(f"genotype field 'cells[{s}]': {len(cell)} columns, at most "
                                    f"{LIMITS['columns']} are supported")
            for c, module in enumerate(cell):
                if not isinstance(module, str) or module not in CANDIDATES:
                    raise GenotypeError(
                        f"genotype field 'cells[{s}][{c}]': unknown module {module!r} "
                        f"(expected one of {', '.join(CANDIDATES)})"
                    )
        if not _is_int(self.image_channels) or self.image_channels not in (1, 3):
            raise GenotypeError(
                f"genotype field 'image_channels': must be 1 or 3, got {self.image_channels!r}"
            )
        for name in ("base_width", "stem_planes", "stem_blocks"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= LIMITS[name]:
                raise GenotypeError(f"genotype field '{name}': must be an integer from 1 to "
                                    f"{LIMITS[name]}, got {value!r}")
        if self.base_width * 2 ** len(self.cells) > MAX_WIDTH:
            raise GenotypeError(f"genotype field 'base_width': {self.base_width} x 2**{len(self.cells)} "
                                f"cells is wider than {MAX_WIDTH} channels")
        if not isinstance(self.residual, bool):
            raise GenotypeError(f"genotype field 'residual': must be true or false, got {self.residual!r}")
        if self.task not in TASKS:
            raise GenotypeError(f"genotype field 'task': must be one of {', '.join(TASKS)}, got {self.task!r}")
        for name in ("search", "data"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise GenotypeError(f"genotype field '{name}': must be an object or null")
        if self.weights is not None:
            shape = [len(c) for c in self.cells]
            if not isinstance(self.weights, list) or not all(
                    isinstance(w, list) and all(isinstance(p, list) for p in w) for w in self.weights) or (
                    [len(w) for w in self.weights] != shape) or any(
                    len(pair) != len(CANDIDATES) or not all(_is_number(x) for x in pair)
                    for w in self.weights for pair in w):
                raise GenotypeError(
                    f"genotype field 'weights': must hold a (w_parallel, w_fusion) pair of numbers "
                    f"for each column of each cell ({shape} columns)"
                )

    def columns(self):
        return [len(c) for c in self.cells]

    def widths(self):
        return [self.base_width * 2**i for i in range(len(self.cells) + 1)]

    def supernet_config(self) -> SupernetConfig:
        return SupernetConfig(
            image_channels=self.image_channels,
            base_width=self.base_width,
            columns=tuple(self.columns()),
            stem_planes=self.stem_planes,
            stem_blocks=self.stem_blocks,
            residual=self.residual,
        )

    def short(self):
        """`"F P P F / F F F F / P F F P"`."""
        return " / ".join(" ".join(m[0].upper() for m in cell) for cell in self.cells)

    def to_dict(self):
        data = {
            "format_version": self.format_version,
            "task": self.task,
            "image_channels": self.image_channels,
            "base_width": self.base_width,
            "widths": self.widths(),
            "columns": self.columns(),
            "stem_planes": self.stem_planes,
            "stem_blocks": self.stem_blocks,
            "residual": self.residual,
            "cells": self.cells,
            "short": self.short(),
            "weights": self.weights,
            "search": self.search,
            "data": self.data,
        }
        data.update(self.extra)
        return data

    def save(self, path):
        """Write JSON atomically (temp file + rename): never a half-written file."""
        files.write_json(path, self.to_dict())


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_list(value):
    return isinstance(value, list) and all(_is_int(v) for v in value)


def from_config(config: SupernetConfig, cells, **fields) -> Genotype:
    """The genotype of `config`'s backbone with the given modules (`cells`: per cell, one
    "parallel"/"fusion" per column); `fields` as `Genotype`'s (weights, task, ...)."""
    return Genotype(
        cells=[list(cell) for cell in cells],
        image_channels=config.image_channels,
        base_width=config.base_width,
        stem_planes=config.stem_planes,
        stem_blocks=config.stem_blocks,
        residual=config.residual,
        **fields,
    )


def derive(model, config: SupernetConfig, **fields) -> Genotype:
    """Discretise a supernet: each column takes argmax of softmax(alpha)."""
    columns = mixed_columns(model)
    weights = np.stack([np.asarray(c.mixing_weights()) for c in columns])
    cells, weight_cells, k = [], [], 0
    for n in config.columns:
        block = weights[k : k + n]
        cells.append([CANDIDATES[int(i)] for i in block.argmax(axis=1)])
        weight_cells.append(block.round(6).tolist())
        k += n
    return from_config(config, cells, weights=weight_cells, **fields)
