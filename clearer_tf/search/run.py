"""`run_search`: a whole search run (data, `SupernetSearch.fit`, callbacks, outputs) in one folder.

One Keras epoch is one log period (`log_every` iterations); a backup is taken every
`checkpoint_every` iterations and at the end. Files in the run folder: `run.json` (the
configuration; finished or not), `genotype.json`, `architecture.png`, `alpha_history.csv` and
`.png`, `tensorboard/`, and while the search runs `backup/` (removed when it finishes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass

import keras

from clearer_tf import device, latency
from clearer_tf.callbacks import (AlphaHistory, Backup, Progress, RunRecord, TensorBoard, WallClock, barrier,
                                  is_first_process, jsonable, picture, read_backup)
from clearer_tf.search.model import SupernetSearch
from clearer_tf.search.backend import replicas_in_sync
from clearer_tf.search.objective import validate
from clearer_tf.supernet import build_supernet, mixing_weights

RUNTIME_FIELDS = ("checkpoint_every", "jit_compile")
"""SearchConfig fields that do not change the result; they may differ on resume."""
DATA_PATH_FIELDS = ("data", "weights_data", "arch_data")
"""Folder paths in a data description; resume compares the images, not where they lie."""
LATENCY_TABLE = "latency_table.json"
"""The LiteRT latency table a latency-aware search used (issue 12), in the run folder."""


@dataclass
class SearchResult:
    """`genotype`: the found architecture; `search`: the `SupernetSearch` after the run."""

    genotype: object
    search: SupernetSearch
    out_dir: str


def run_info(task_data) -> dict:
    """Task and data description as a run records it (folder paths left out)."""
    description = {k: v for k, v in dict(task_data.description).items() if k not in DATA_PATH_FIELDS}
    return {"task": task_data.task, "data": description}


def run_config(supernet_config, search_config, info=None) -> dict:
    """What a resumed run must share with the run it continues (runtime-only fields left out)."""
    search = {k: v for k, v in dataclasses.asdict(search_config).items() if k not in RUNTIME_FIELDS}
    return jsonable({"supernet": supernet_config.to_dict(), "search": search, **(info or {})})


def check_run(out_dir, supernet_config, search_config, task_data, resume=False, overwrite=False) -> RunRecord:
    """Raises ValueError (one line) unless the search may start or resume in `out_dir`.

    Nothing is written. `resume=False` needs a folder without an unfinished search (or
    `overwrite`); `resume=True` one with an unfinished search of the same configuration.
    """
    record = RunRecord(out_dir, run_config(supernet_config, search_config, run_info(task_data)), what="search")
    state = record.check(overwrite=overwrite and not resume)
    if resume and state != "resume":
        raise ValueError(f"--resume {out_dir}: no search to continue there ({record.path} not found)")
    if not resume and state == "resume":
        raise ValueError(f"{out_dir} already holds a search; continue it with --resume {out_dir}")
    record.state = state
    return record


def search_callbacks(search_config, out_dir, final_epoch, write=True):
    """The callbacks of a search run: backup, wall clock, progress bar, alpha history, TensorBoard."""
    clock = WallClock()
    callbacks = [Backup(os.path.join(out_dir, "backup"), search_config.checkpoint_every // search_config.log_every,
                        final_epoch, clock=clock, write=write), clock, Progress()]
    if write:
        history = AlphaHistory(os.path.join(out_dir, "alpha_history.csv"), os.path.join(out_dir, "alpha_history.png"))
        callbacks += [history, *TensorBoard.create(os.path.join(out_dir, "tensorboard"), extra=[history.scalars])]
    return callbacks


def run_search(supernet_config, search_config, task_data, out_dir, resume=False, overwrite=False, strategy=None,
               callbacks=(), verbose=None) -> SearchResult:
    """Searches an architecture for `task_data` with `SupernetSearch.fit`; writes `out_dir`.

    Args:
        supernet_config, search_config: the search space and the search (`SearchConfig`).
        task_data: `pipelines.tasks.TaskData` (weight and architecture images, degradation).
        out_dir: the run folder (see the module docstring).
        resume: continue the unfinished search in `out_dir` (same configuration required).
        overwrite: start afresh even if `out_dir` holds a search (finished or not).
        strategy: a `tf.distribute.MirroredStrategy` (TensorFlow); on JAX set a
            `keras.distribution` before calling instead.
        callbacks: more Keras callbacks; `verbose`: `fit`'s (default: a bar on a terminal,
            else one line per log period).

    Deterministic for a seed: a killed and resumed search ends where an uninterrupted one does.
    Only the first process of a multi-process run writes files.
    """
    import sys

    from pipelines import batches

    c = search_config
    pipeline = batches.resolve(c.data_pipeline, keras.backend.backend(), task_data.degradation)
    if supernet_config.image_channels != task_data.channels:
        raise ValueError(f"the supernet has {supernet_config.image_channels} image channels, "
                         f"the {task_data.task} data {task_data.channels}")
    replicas = replicas_in_sync() if strategy is None else strategy.num_replicas_in_sync
    validate(supernet_config, c, replicas)
    out_dir = os.fspath(out_dir)
    record = check_run(out_dir, supernet_config, c, task_data, resume, overwrite)
    table, costs = None, None
    if latency.uses_latency(c):  # measured once, kept in the run folder (issue 12)
        os.makedirs(out_dir, exist_ok=True)
        table = latency.obtain_table(supernet_config, c, os.path.join(out_dir, LATENCY_TABLE))
        if c.latency_budget_ms is not None:  # refuse an impossible budget before searching
            fastest = latency.fastest_ms(table, supernet_config.columns, c.latency_precision)
            if fastest > c.latency_budget_ms:
                raise latency.LatencyError(
                    f"--latency-budget-ms {c.latency_budget_ms}: no genotype fits (the fastest is predicted at "
                    f"{fastest:.2f} ms, table {os.path.join(out_dir, LATENCY_TABLE)})")
        if c.cost == "latency":
            costs = latency.column_costs(table, supernet_config.columns, c.latency_precision)
    first = is_first_process()
    barrier("run folder checked")  # multi-process: every process checked before the first writes
    if first:
        record.start(fresh=record.state != "resume")
    barrier("run folder ready")
    backup = read_backup(os.path.join(out_dir, "backup"))
    done = backup["epoch"] if backup else 0

    keras.utils.set_random_seed(c.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        search = SupernetSearch(build_supernet(config=supernet_config), c, supernet_config, costs=costs)
        search.compile()

    # One batch of each stream per iteration (warm-up included): a resumed search skips those done.
    data = batches.search_batches(pipeline, task_data.weights_items, task_data.arch_items,
                                  task_data.degradation, c.patch_size, c.batch_size, c.seed, start=done * c.log_every)
    epochs = c.iterations // c.log_every
    stack = search_callbacks(c, out_dir, epochs, write=first)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    search.fit(data, epochs=epochs, steps_per_epoch=c.log_every, callbacks=[*stack, *callbacks],
               verbose=verbose if first else 0, shuffle=False)

    search_info = dict(dataclasses.asdict(c), fusion_input=supernet_config.fusion_input,
                       backend=keras.backend.backend(), replicas=replicas, device=device.describe(), batches=pipeline,
                       wall_seconds=round(stack[1].seconds, 1))
    genotype = search.genotype(task=task_data.task, search=search_info, data=jsonable(dict(task_data.description)))
    if table is not None:  # argmax, or the most probable genotype within the latency budget
        weights = keras.ops.convert_to_numpy(mixing_weights(search.supernet))
        genotype.cells, report = latency.derive_within_budget(weights, supernet_config.columns, table,
                                                              c.latency_budget_ms, c.latency_precision)
        genotype.search.update(report, latency_table=LATENCY_TABLE)
    if first:
        genotype.save(os.path.join(out_dir, "genotype.json"))
        picture(lambda plots: plots.plot_architecture(genotype, os.path.join(out_dir, "architecture.png")))
        record.finish(genotype=genotype.short())
    barrier("search written")  # the other processes of a multi-process run wait for the first
    return SearchResult(genotype, search, out_dir)
