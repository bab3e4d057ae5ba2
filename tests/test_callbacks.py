"""The shared callback stack: atomic backups, the run-folder guard, no per-step host sync."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from clearer_tf.callbacks import (AlphaHistory, Backup, RunRecord, TensorBoard, WallClock, async_dispatch,
                                  read_backup)
import search_helpers

HELPERS = search_helpers.__file__
REPO = os.path.dirname(os.path.dirname(os.path.abspath(HELPERS)))


def small_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    return model


def fit(model, callbacks, epochs=3, initial_epoch=0):
    x = np.arange(12, dtype="float32").reshape(4, 3)
    y = np.ones((4, 2), "float32")
    return model.fit(x, y, batch_size=2, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                     verbose=0, shuffle=False)


def test_backup_names_a_complete_file_and_restores_weights_optimizer_epoch_and_clock(tmp_path):
    model, clock = small_model(), WallClock()
    backup = Backup(tmp_path / "backup", every=2, final_epoch=3, clock=clock)
    fit(model, [backup, clock])
    meta = read_backup(tmp_path / "backup")
    assert meta["epoch"] == 3 and meta["weights"] == "state-000003.weights.h5" and meta["seconds"] >= 0
    assert sorted(os.listdir(tmp_path / "backup")) == ["state-000003.weights.h5", "training_metadata.json"]
    restored, clock2 = small_model(), WallClock()
    fit(restored, [Backup(tmp_path / "backup", clock=clock2), clock2], epochs=3)  # nothing left to run
    for a, b in zip(model.weights + model.optimizer.variables, restored.weights + restored.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    assert int(restored.optimizer.iterations.numpy()) == 6 and clock2.earlier == meta["seconds"]


def test_an_interrupted_backup_leaves_the_previous_one_usable(tmp_path, monkeypatch):
    """A failure in each write of a backup (weights file, then metadata) in turn; the real
    SIGKILL during a write is in test_search_run.py and test_training.py."""
    from clearer_tf import files

    class Killed(BaseException):
        pass

    def fail(*args, **kwargs):
        raise Killed()

    for name in ("save_weights", "write_json"):
        folder = tmp_path / name
        model = small_model()
        fit(model, [Backup(folder)], epochs=1)
        monkeypatch.setattr(files, name, fail)
        with pytest.raises(Killed):
            fit(model, [Backup(folder)], epochs=2)
        monkeypatch.undo()
        meta = read_backup(folder)
        assert meta["epoch"] == 1
        restored = small_model()
        fit(restored, [Backup(folder)], epochs=1)  # loads the previous backup, nothing left to run
        assert int(restored.optimizer.iterations.numpy()) == 2


def test_run_record_guards_the_folder(tmp_path):
    record = RunRecord(tmp_path / "run", {"a": 1, "b": {"c": 2}}, what="training")
    assert record.check() == "new"
    record.start(fresh=True)
    assert RunRecord(tmp_path / "run", {"a": 1, "b": {"c": 2}}).check() == "resume"
    with pytest.raises(ValueError, match=r"from a different configuration: a is 1 in the run, 2 now; b\.c is 2"):
        RunRecord(tmp_path / "run", {"a": 2, "b": {"c": 3}}).check()
    assert RunRecord(tmp_path / "run", {"a": 2}).check(resume=False) == "overwrite"
    (tmp_path / "run" / "backup").mkdir()
    (tmp_path / "run" / ".tmp-x.json").write_text("{")
    record.finish()
    assert not (tmp_path / "run" / "backup").exists()
    with pytest.raises(ValueError, match="holds a finished training: pass --overwrite"):
        RunRecord(tmp_path / "run", {"a": 1, "b": {"c": 2}}).check()
    assert RunRecord(tmp_path / "run", {"a": 1}).check(overwrite=True) == "overwrite"
    RunRecord(tmp_path / "run", {"a": 1}).start(fresh=True)
    assert not list((tmp_path / "run").glob(".tmp-*"))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["finished"] is False


def test_no_callback_of_the_stacks_works_per_step(tmp_path):
    """Keras dispatches step hooks asynchronously only if every callback allows it (the JAX
    side of this is `test_keras_dispatches_both_stacks_asynchronously_on_jax`)."""
    from clearer_tf.presets import TrainConfig
    from clearer_tf.search.run import search_callbacks
    from clearer_tf.training import CheckpointAndLog, ValidationPSNR, training_callbacks

    _, config = search_helpers.configs()
    assert async_dispatch(search_callbacks(config, str(tmp_path / "s"), 10))
    stack = training_callbacks(TrainConfig(time_limit=10.0), str(tmp_path / "t"), ValidationPSNR.__new__(ValidationPSNR),
                               CheckpointAndLog(tmp_path), WallClock(), 0.0)
    assert async_dispatch(stack)
    assert not async_dispatch([keras.callbacks.BackupAndRestore(str(tmp_path / "b"))])  # Keras' own: per step
    profiling = TensorBoard(str(tmp_path / "tb"), profile_batch=(2, 3))
    assert not async_dispatch([profiling])  # profiling needs the step hooks


def test_keras_dispatches_both_stacks_asynchronously_on_jax(tmp_path):
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, HELPERS, "async-callbacks", str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"search": True, "training": True}


def test_tensorboard_logs_at_iterations_without_nan_and_with_extra_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = small_model()
    board = TensorBoard(str(tmp_path / "tb"), extra=[lambda: {"alpha/x": 0.25}])

    class NaN(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["arch_loss"] = float("nan")

    fit(model, [NaN(), board], epochs=2)
    events = EventAccumulator(str(tmp_path / "tb" / "train"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    assert "epoch_loss" in tags and "alpha/x" in tags and "epoch_arch_loss" not in tags
    assert [e.step for e in events.Tensors("epoch_loss")] == [2, 4]  # iterations, 2 batches per epoch


def test_alpha_history_keeps_rows_up_to_a_resumed_iteration(tmp_path):
    search = search_helpers.make_search()
    history = AlphaHistory(tmp_path / "alpha.csv")
    history.set_model(search)
    history.set_params({"steps": 2})
    history.on_train_begin()
    for epoch in range(3):
        history.on_epoch_end(epoch)
    assert [line.split(",")[0] for line in (tmp_path / "alpha.csv").read_text().splitlines()[1:]] == \
        ["0", "2", "4", "6"]
    search.optimizer.iterations.assign(4)  # a run resumed at iteration 4
    history.on_train_begin()
    assert [line.split(",")[0] for line in (tmp_path / "alpha.csv").read_text().splitlines()[1:]] == \
        ["0", "2", "4"]


def test_a_backup_of_keras_backupandrestore_from_before_run_json_still_resumes(tmp_path):
    model = small_model()
    fit(model, [keras.callbacks.BackupAndRestore(str(tmp_path / "run" / "backup"), delete_checkpoint=False)],
        epochs=2)
    with pytest.warns(UserWarning, match="cannot be checked, resuming it"):
        assert RunRecord(tmp_path / "run", {"a": 1}).check() == "resume"
    restored = small_model()
    fit(restored, [Backup(tmp_path / "run" / "backup")], epochs=2)
    assert int(restored.optimizer.iterations.numpy()) == 4
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
