"""One callback stack for the search and the training (both are `model.fit`).

* `RunRecord`: the run folder's `run.json` (configuration, finished or not). `check()` runs
  before anything is written: a resume with another configuration is refused with the
  differences named, a finished run unless `overwrite`.
* `Backup`: `keras.callbacks.BackupAndRestore` whose backups survive a kill at any moment: each
  is a new file, renamed into place when complete, and `training_metadata.json` (replaced
  atomically) names the current one; the previous one is deleted only after that, and stray
  temporary or unreferenced files are removed when a run starts. Also restores the wall clock.
* `TensorBoard`: Keras' callback with the iteration (not the epoch) as the step, NaN values
  (no architecture step yet) left out, extra scalars (alpha) and no per-step work.
* `Progress`: Keras' progress bar without the metrics that have no value yet (NaN).
* `AlphaHistory`: the search's `alpha_history.csv`, alpha/softmax scalars and `alpha_history.png`.
* `WallClock`, `StepClock`, `TimeLimit`: time of the run over resumes, time to the first step
  and steady step time, a wall-clock budget.

None of them works per step unless asked to (`StepClock` reads a clock on 3 steps; TensorBoard
when profiling): on JAX, Keras then dispatches the step callbacks asynchronously and never waits
for a step's results before starting the next (`async_safe`, or no `on_train_batch_end`).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import shutil
import tempfile
import time
import warnings

import keras

from clearer_tf import device, files

RUN_FILE = "run.json"
BACKUP_METADATA = "training_metadata.json"


# --- the run folder: configuration guard, finished or not -----------------------------------
def differences(stored, current, prefix=""):
    """Human-readable differences between two JSON-like values (nested dicts by key)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in list(stored) + [k for k in current if k not in stored]:
            out += differences(stored.get(key), current.get(key), f"{prefix}{key}.")
        return out
    if stored == current:
        return []
    name = prefix[:-1]
    if isinstance(stored, list) or isinstance(current, list):
        return [f"{name} differs"]
    return [f"{name} is {stored!r} in the run, {current!r} now"]


def jsonable(value):
    return json.loads(json.dumps(value, default=files._default))


def is_first_process() -> bool:
    """False on the processes of a multi-process JAX run other than the first (they write no files)."""
    if keras.backend.backend() != "jax":
        return True
    import jax

    return jax.process_index() == 0


def barrier(name):
    """Waits for every process of a multi-process JAX run (no-op otherwise): a run folder is
    checked by all before the first process writes, and written before the others read it."""
    if keras.backend.backend() == "jax":
        import jax

        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def save_weights(model, path, write=True):
    """`files.save_weights`; with `write=False` (not the first process of a multi-process run)
    the same call into a throwaway file: Keras' `save_weights` is a collective there."""
    if write:
        return files.save_weights(model, path)
    with tempfile.TemporaryDirectory() as folder:
        model.save_weights(os.path.join(folder, "other-process.weights.h5"))


def save_model(model, path, write=True, metadata=None):
    """`files.save_model` (with `metadata` as the file's `clearer.json`), likewise collective
    (`save_weights`)."""
    if write:
        return files.save_model(model, path, metadata)
    with tempfile.TemporaryDirectory() as folder:
        model.save(os.path.join(folder, "other-process.keras"))


def remove_temporaries(folder):
    """Deletes `.tmp-*` files and folders that a killed writer left in `folder`."""
    for path in glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".tmp-*")):
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


class RunRecord:
    """`out_dir/run.json`: what the run is (`config`, any JSON-able dict) and whether it finished.

    Example:
    >>> run = RunRecord("runs/x", {"iterations": 100}, what="training")
    >>> state = run.check(overwrite=False)  # "new", "resume" or "overwrite"; raises ValueError
    >>> run.start(fresh=state != "resume")  # ... fit ..., then run.finish()
    """

    def __init__(self, out_dir, config, what="run", backup_dir=None):
        self.out_dir = os.fspath(out_dir)
        self.config = jsonable(config)
        self.what = what
        self.path = os.path.join(self.out_dir, RUN_FILE)
        self.backup_dir = backup_dir or os.path.join(self.out_dir, "backup")

    def read(self):
        if not os.path.isfile(self.path):
            return None
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except ValueError:
            raise ValueError(f"{self.path} is not readable JSON: remove it or pass --overwrite") from None

    def check(self, overwrite=False, resume=True) -> str:
        """Before anything is written: `"new"`, `"resume"` or `"overwrite"`; ValueError else.

        `overwrite`: anything there may go; `resume=False`: an unfinished run may go.
        """
        if overwrite:
            return "overwrite" if os.path.exists(self.path) or os.path.isdir(self.backup_dir) else "new"
        record = self.read()
        if record is None:
            if os.path.isdir(self.backup_dir) and resume:
                if _legacy_backup(self.backup_dir):  # Keras' BackupAndRestore, from before run.json
                    warnings.warn(f"{self.backup_dir}: a backup from before {RUN_FILE}; its configuration "
                                  "cannot be checked, resuming it")
                    return "resume"
                raise ValueError(f"{self.out_dir} holds a backup but no {RUN_FILE}: pass --overwrite to start afresh")
            return "new"
        if record.get("finished"):
            raise ValueError(
                f"{self.out_dir} holds a finished {record.get('what', self.what)}: pass --overwrite to run it again from scratch, "
                "or choose another output folder"
            )
        if not resume:
            return "overwrite"
        diffs = differences(record.get("config"), self.config)
        if diffs:
            raise ValueError(
                f"{self.out_dir}: the {self.what} there is from a different configuration: "
                + "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")
            )
        return "resume"

    def start(self, fresh):
        """Writes `run.json`; `fresh` first removes an earlier run's backup. Cleans temporaries."""
        os.makedirs(self.out_dir, exist_ok=True)
        remove_temporaries(self.out_dir)
        if fresh:
            shutil.rmtree(self.backup_dir, ignore_errors=True)
        files.write_json(self.path, {"what": self.what, "finished": False, "config": self.config})

    def finish(self, **fields):
        """Marks the run finished (after its outputs are written), then deletes its backup."""
        files.write_json(self.path, {"what": self.what, "finished": True, **fields, "config": self.config})
        shutil.rmtree(self.backup_dir, ignore_errors=True)


# --- backup and restore ---------------------------------------------------------------------
def _legacy_backup(backup_dir):
    path = os.path.join(os.fspath(backup_dir), BACKUP_METADATA)
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        return "weights" not in json.load(f)


def read_backup(backup_dir):
    """The metadata of the current backup (`epoch`, `weights`, `seconds`), or None."""
    path = os.path.join(os.fspath(backup_dir), BACKUP_METADATA)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    meta.setdefault("weights", "latest.weights.h5")  # written by Keras' BackupAndRestore
    if not os.path.isfile(os.path.join(os.fspath(backup_dir), meta.get("weights", ""))):
        raise ValueError(f"{path} names {meta.get('weights')!r}, which is missing: pass --overwrite to start afresh")
    return meta


class Backup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that a kill at any moment cannot break.

    Args:
        backup_dir: the folder (only this callback writes there).
        stoppers: `TimeLimit` / `StopAtStep` callbacks; an epoch they cut short is not backed up.
        every: back up after every `every` epochs, and after the epoch `final_epoch`.
        clock: a `WallClock`; its seconds are backed up and restored with the weights.
        write: False on the processes of a multi-process run other than the first (they
            restore, but do not write).

    Each backup is `state-<epoch>.weights.h5` (the model's and the optimizer's variables),
    written to a temporary name and renamed; then `training_metadata.json` is replaced
    (temporary file + rename) by one naming it; then older states are deleted. A kill at any
    point leaves the metadata naming a complete file. Restores in `on_train_begin` (weights,
    optimizer, `initial_epoch`), after removing what a kill left behind.
    """

    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end  # no per-step hook

    def __init__(self, backup_dir, every=1, final_epoch=None, clock=None, write=True, stoppers=()):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.every, self.final_epoch, self.clock, self.write = int(every), final_epoch, clock, write
        self.stoppers = list(stoppers)  # `TimeLimit`/`StopAtStep`: no backup of an epoch they cut short
        self.restored = None

    def on_train_begin(self, logs=None):
        if self.write and os.path.isdir(self.backup_dir):
            remove_temporaries(self.backup_dir)
            meta = read_backup(self.backup_dir)
            current = meta and meta["weights"]
            for path in glob.glob(os.path.join(glob.escape(self.backup_dir), "state-*.weights.h5")):
                if os.path.basename(path) != current:
                    os.remove(path)
        self._load_model()

    def _load_model(self):
        meta = read_backup(self.backup_dir)
        self.restored = meta
        if meta is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, meta["weights"]))
        self.model._initial_epoch = self._current_epoch = int(meta["epoch"])
        if self.clock is not None:
            self.clock.earlier = float(meta.get("seconds", 0.0))

    def on_epoch_end(self, epoch, logs=None):
        if any(stopper.partial for stopper in self.stoppers):
            return  # a resumed run redoes this epoch from the last backup, as an uninterrupted run would
        self._current_epoch = epoch + 1
        if self._current_epoch % self.every == 0 or self._current_epoch == self.final_epoch:
            self._save_model()

    def _save_model(self):
        name = f"state-{self._current_epoch:06d}.weights.h5"
        save_weights(self.model, os.path.join(self.backup_dir, name), self.write)
        if not self.write:
            return
        meta = {"epoch": self._current_epoch, "batch": 0, "weights": name}
        if self.clock is not None:
            meta["seconds"] = round(self.clock.seconds, 1)
        files.write_json(os.path.join(self.backup_dir, BACKUP_METADATA), meta)
        for path in glob.glob(os.path.join(glob.escape(self.backup_dir), "state-*.weights.h5")):
            if os.path.basename(path) != name:
                os.remove(path)


# --- clocks ---------------------------------------------------------------------------------
class WallClock(keras.callbacks.Callback):
    """Wall time of the run: `earlier` (restored by `Backup`) plus the time since `fit` began."""

    def __init__(self, earlier=0.0):
        super().__init__()
        self.earlier, self.start = earlier, time.time()

    def on_train_begin(self, logs=None):
        self.start = time.time()

    @property
    def seconds(self):
        return self.earlier + time.time() - self.start


def process_seconds() -> float:
    """Seconds since this process started (Linux `/proc`; else since this module loaded)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time() - _LOADED


_LOADED = time.time()


class StepClock(keras.callbacks.Callback):
    """Time to the first executed step and the steady step time, written to `path` (JSON).

    `first_step_s`: process start to the end of the first step of this run (imports, data,
    compilation included). `step_ms`: mean over `window` steps after `skip` more, in the first
    epoch of this run. Runs on Keras' asynchronous callback thread (the logs it receives are
    already fetched, so the clock reads when each step has finished).
    """

    async_safe = True

    def __init__(self, path, skip=50, window=1000):
        super().__init__()
        self.path, self.skip, self.window = path, skip, window
        self.timing, self._marks, self._epochs = {}, {}, 0

    def on_train_batch_end(self, batch, logs=None):
        if self._epochs or batch not in (0, self.skip, self.skip + self.window):
            return
        self._marks[batch] = time.perf_counter()
        if batch == 0:
            self.timing["first_step_s"] = round(process_seconds(), 2)
        elif batch == self.skip + self.window:
            self.timing["step_ms"] = round(1e3 * (self._marks[batch] - self._marks[self.skip]) / self.window, 3)
            self.timing["step_ms_window"] = self.window

    def on_epoch_end(self, epoch, logs=None):
        if not self._epochs and self.timing:
            self.timing["device"] = device.describe()
            files.write_json(self.path, self.timing)
        self._epochs += 1


class _Stopper(keras.callbacks.Callback):
    """Ends `fit` after the step about to run; `partial`: inside an epoch (`Backup` then keeps
    the backup of the last whole epoch)."""

    stopped = partial = False

    def _stop(self, batch):
        self.model.stop_training = self.stopped = True
        self.partial = batch + 1 < self.params["steps"]


class TimeLimit(_Stopper):
    """Stops at the last step that ends within `seconds` of `start`: at any step, not only at an
    epoch end (the epoch's validation and checkpoint then follow).

    When a step has finished (`on_train_batch_end`, on Keras' callback thread when it dispatches
    asynchronously) it updates the step time, the mean since the end of this run's first step
    (whose compilation does not count). Before each step is dispatched (`on_train_batch_begin`, on
    the main thread, which may run ahead of the device) it predicts when the step after it would
    end, counting the steps still queued, and stops if that is past the limit. `partial` tells
    whether it stopped inside an epoch (`Backup` then keeps the backup of the last whole epoch).
    """

    async_safe = True

    def __init__(self, seconds, start=None):
        super().__init__()
        self.seconds, self.start = seconds, time.time() if start is None else start
        self._first = self._last = self._step = None
        self._begun = self._done = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._begun += 1
        if self.stopped or self._step is None:
            return
        queued = self._begun - self._done  # this step and those dispatched before it, not yet finished
        if self._last + (queued + 1) * self._step - self.start > self.seconds:
            self._stop(batch)

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        self._done += 1
        if self._first is None:
            self._first = now
        else:
            self._step = (now - self._first) / (self._done - 1)
        self._last = now


class StopAtStep(_Stopper):
    """Stops when the schedule reaches `step`, inside an epoch: epoch `e` covers the steps after
    `offset + e * steps_per_epoch` (a warm start at a step that is not an epoch boundary, or a
    schedule that ends inside an epoch). `partial` as in `TimeLimit`. Decides before the step
    runs, so it is exact when Keras dispatches the step hooks asynchronously."""

    def __init__(self, step, offset=0):
        super().__init__()
        self.step, self.offset = int(step), int(offset)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):  # on the main thread: exact also when dispatch is async
        if self.offset + self._epoch * self.params["steps"] + batch + 1 >= self.step and not self.stopped:
            self._stop(batch)


# --- logs -----------------------------------------------------------------------------------
def defined(logs) -> dict:
    """`logs` without NaN values (a mean over no step: the architecture step's metrics
    during the search's weight-only warm-up)."""
    out = {}
    for key, value in (logs or {}).items():
        try:
            if math.isnan(float(value)):
                continue
        except (TypeError, ValueError):  # not a scalar: kept as it is
            pass
        out[key] = value
    return out


class Progress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar (`fit`'s `verbose` decides its form) showing only `defined` metrics,
    so that a warm-up epoch does not print `arch_loss: nan`."""

    async_safe = True  # as Keras' own bar: it reads the logs only to print them

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, defined(logs) if self.verbose == 1 else logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, defined(logs))


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, logging at the end of each epoch with the iteration as step.

    Values that are NaN (a mean over no step) are left out; `extra` callables return more
    `{tag: value}` scalars at each epoch end; `step(model)` gives the step of an epoch end
    (default `(epoch + 1) * steps`). Without profiling it has no per-step
    work. `TensorBoard.create(...)` returns it where TensorFlow is installed, `EventScalars`
    (the same event files, written by the `tensorboard` package) where it is not, and warns and
    returns no callback without the `tensorboard` package.
    """

    def __init__(self, log_dir, extra=(), profile_batch=0, step=None, **kwargs):
        super().__init__(log_dir, write_graph=False, profile_batch=profile_batch, **kwargs)
        self.extra, self.step_of = list(extra), step
        self.async_safe = not self._should_trace  # on_train_batch_end only profiles

    @classmethod
    def create(cls, log_dir, extra=(), profile_batch=0, step=None):
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            warnings.warn("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
            return []
        from clearer_tf.quiet import has_tensorflow

        kind = cls if has_tensorflow() else EventScalars
        return [kind(log_dir, extra, profile_batch, step)]

    def on_train_batch_end(self, batch, logs=None):
        if self._should_trace:
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        step = epoch_step(self, epoch)
        super().on_epoch_end(step, defined(logs))
        with self._train_writer.as_default(step=step):
            for scalars in self.extra:
                for tag, value in scalars().items():
                    self.summary.scalar(tag, value)


def epoch_step(callback, epoch) -> int:
    if callback.step_of is not None:
        return callback.step_of(callback.model)
    return (epoch + 1) * callback.params["steps"]


class EventScalars(keras.callbacks.Callback):
    """`TensorBoard` without TensorFlow (the JAX backend on a machine without it): the epoch
    scalars (`train/`, tags `epoch_<name>`, as Keras writes them) and the `extra` ones through the
    `tensorboard` package's event writer; batches `profile_batch` (FIRST, LAST) of the first
    epoch traced with `jax.profiler` into `log_dir/plugins/profile/`."""

    def __init__(self, log_dir, extra=(), profile_batch=0, step=None):
        super().__init__()
        self.log_dir, self.extra, self.step_of = os.fspath(log_dir), list(extra), step
        first, last = (profile_batch, profile_batch) if isinstance(profile_batch, int) else profile_batch
        self.profile = (int(first), int(last)) if first else None
        self.async_safe = self.profile is None
        self._writer, self._tracing, self._epochs = None, False, 0

    def on_train_begin(self, logs=None):
        from tensorboard.summary import Writer

        self._writer = Writer(os.path.join(self.log_dir, "train"))

    def on_train_batch_begin(self, batch, logs=None):
        if self.profile and not self._epochs and batch + 1 == self.profile[0]:
            import jax

            jax.profiler.start_trace(self.log_dir)
            self._tracing = True

    def on_train_batch_end(self, batch, logs=None):
        if self._tracing and batch + 1 >= self.profile[1]:
            self._stop_trace()

    def _stop_trace(self):
        import jax

        jax.effects_barrier()
        jax.profiler.stop_trace()
        self._tracing = False

    def on_epoch_end(self, epoch, logs=None):
        step = epoch_step(self, epoch)
        for name, value in defined(logs).items():
            try:
                self._writer.add_scalar(f"epoch_{name}", float(value), step)
            except (TypeError, ValueError):
                continue  # not a scalar
        for scalars in self.extra:
            for tag, value in scalars().items():
                self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()
        self._epochs += 1

    def on_train_end(self, logs=None):
        if self._tracing:
            self._stop_trace()
        if self._writer is not None:
            self._writer.close()


class AlphaHistory(keras.callbacks.Callback):
    """The search's alpha over time: `alpha_history.csv`, scalars for TensorBoard, the picture.

    One CSV row per epoch end (and iteration 0): `iteration`, then per column
    `<cell>_<col>_parallel` and `..._fusion` (softmax weights), then `..._alpha_p` and
    `..._alpha_f` (raw alpha). A resumed run keeps the rows up to where it resumes. At the
    end of `fit`, `alpha_history.png` (if `plot_path`). Needs a `SupernetSearch`; place it
    after `Backup` in the callbacks.
    """

    def __init__(self, path, plot_path=None):
        super().__init__()
        self.path, self.plot_path = os.fspath(path), plot_path

    def header(self):
        names = self.model.column_names
        return (["iteration"] + [f"{n}_{m}" for n in names for m in ("parallel", "fusion")]
                + [f"{n}_alpha_{m}" for n in names for m in ("p", "f")])

    def on_train_begin(self, logs=None):
        iteration = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        header, rows = self.header(), []
        if iteration > 0 and os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                if next(reader, None) == header:
                    rows = [r for r in reader if r and int(r[0]) <= iteration]
        with files.atomic_path(self.path, ".csv") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows(rows)
        if not rows:
            self._append(0)

    def scalars(self):
        alphas, weights = self.model.mixing_weights()
        out = {}
        for name, alpha, weight in zip(self.model.column_names, alphas, weights):
            for k, module in enumerate(("parallel", "fusion")):
                out[f"alpha/{name}/{module}"] = alpha[k]
                out[f"softmax/{name}/{module}"] = weight[k]
        return out

    def _append(self, iteration):
        alphas, weights = self.model.mixing_weights()
        row = [iteration] + [f"{w:.8g}" for w in weights.ravel()] + [f"{a:.8g}" for a in alphas.ravel()]
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(row)

    def on_epoch_end(self, epoch, logs=None):
        self._append((epoch + 1) * self.params["steps"])

    def on_train_end(self, logs=None):
        if self.plot_path:
            picture(lambda plots: plots.plot_alpha_history(self.path, self.plot_path))


def picture(draw):
    """`draw(clearer_tf.plots)`, or one warning where matplotlib is missing (a GPU machine with
    only JAX: `bench/lease_finish.sh` draws the pictures from the CSV and JSON afterwards)."""
    try:
        from clearer_tf import plots
    except ImportError as e:
        warnings.warn(f"no pictures ({e}): pip install matplotlib")
        return
    draw(plots)


def async_dispatch(callbacks) -> bool:
    """Whether Keras may run these callbacks' step hooks asynchronously (no per-step host sync)."""
    from keras.src.utils.python_utils import is_default

    return all(getattr(cb, "async_safe", False) or (is_default(cb.on_train_batch_end) and is_default(cb.on_batch_end))
               for cb in callbacks)


__all__ = ["AlphaHistory", "Backup", "Progress", "RunRecord", "barrier", "save_model", "save_weights", "StepClock",
           "TensorBoard", "TimeLimit", "WallClock", "async_dispatch", "defined", "differences", "process_seconds",
           "read_backup", "StopAtStep", "EventScalars"]
