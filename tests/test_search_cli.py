"""train_scripts/search.py: bad input gives one clear line on stderr and exit code 2, before any work."""

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "train_scripts", "search.py")


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("search_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fails(cli, capsys, argv):
    """Runs main(argv); returns its single stderr line (and checks exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("search.py: error: ")
    return err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "inpaint"], "argument --task: invalid choice: 'inpaint'"),
        ([], "the following arguments are required: --task"),
        (["--task", "denoise", "--data", "a", "--weights-data", "b", "--arch-data", "c"],
         "--data cannot be combined with --weights-data/--arch-data"),
        (["--task", "derain", "--weights-data", "a"], "must be given together (got only --weights-data)"),
        (["--task", "denoise", "--iterations", "100", "--warmup", "100"],
         "--iterations (100) must be larger than --warmup (100)"),
        (["--task", "denoise", "--preset", "quick", "--patch-size", "36"],
         "--patch-size 36 must be a multiple of 8"),
        (["--task", "denoise", "--data", "/nonexistent/folder"], "/nonexistent/folder: folder does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(cli, capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert message in fails(cli, capsys, argv)
    assert os.listdir(tmp_path) == []  # no run directory: nothing was started


def test_resume_without_checkpoint(cli, capsys, tmp_path):
    line = fails(cli, capsys, ["--task", "denoise", "--resume", str(tmp_path)])
    assert "no search to continue there" in line


def _unfinished_run(run_dir, supernet_config, search_config, task_data):
    """A run folder holding only what the guard reads (`run.json` of an unfinished search)."""
    from clearer_tf.callbacks import RunRecord
    from clearer_tf.search.run import run_config, run_info

    RunRecord(run_dir, run_config(supernet_config, search_config, run_info(task_data)), "search").start(fresh=True)


def test_resume_with_another_configuration_names_the_difference(cli, capsys, tmp_path):
    import dataclasses

    from clearer_tf.presets import get_preset
    from pipelines.tasks import load_task_data

    preset = get_preset("quick")
    task_data = load_task_data("denoise")
    supernet = dataclasses.replace(preset.supernet, image_channels=1)
    _unfinished_run(tmp_path, supernet, preset.search, task_data)
    before = sorted(os.listdir(tmp_path))
    # same options: accepted (prepare only, no search)
    args = cli.build_parser().parse_args(["--task", "denoise", "--preset", "quick", "--resume", str(tmp_path)])
    assert cli.prepare(args)[4] == str(tmp_path)
    line = fails(cli, capsys, ["--task", "denoise", "--preset", "quick", "--iterations", "400",
                               "--resume", str(tmp_path)])
    assert "different configuration: search.iterations is 300 in the run, 400 now" in line
    line = fails(cli, capsys, ["--task", "denoise", "--preset", "quick", "--sigma", "50",
                               "--resume", str(tmp_path)])
    assert "data.degradation.sigma is 30.0 in the run, 50.0 now" in line
    line = fails(cli, capsys, ["--task", "denoise", "--preset", "quick", "--out", str(tmp_path)])
    assert "already holds a search; continue it with --resume" in line
    line = fails(cli, capsys, ["--task", "denoise", "--preset", "quick", "--resume", str(tmp_path), "--overwrite"])
    assert "give one" in line
    args = cli.build_parser().parse_args(["--task", "denoise", "--preset", "quick", "--out", str(tmp_path),
                                          "--overwrite"])
    assert cli.prepare(args)[4] == str(tmp_path)  # accepted: the search would start afresh
    assert sorted(os.listdir(tmp_path)) == before


def test_log_period_must_divide_the_iterations(cli, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = fails(cli, capsys, ["--task", "denoise", "--preset", "quick", "--iterations", "310"])
    assert "--iterations (310) must be a multiple of --log-every (25)" in line
    line = fails(cli, capsys, ["--task", "denoise", "--distribute", "multihost"])
    assert "--distribute multihost needs KERAS_BACKEND=jax" in line
    assert os.listdir(tmp_path) == []


def test_script_runs_from_a_fresh_clone_without_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, SCRIPT, "--task", "denoise", "--warmup", "-1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["search.py: error: --warmup must be >= 0, got -1"]
    assert os.listdir(tmp_path) == []
