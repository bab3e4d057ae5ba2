"""JAX's persistent compilation cache: default folder, environment, CLI flags; TensorFlow untouched."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# Parses argv[1:] with the scripts' parser, compiles one small function, prints what was used.
SNIPPET = """
import json, sys
sys.path.insert(0, "train_scripts")
import _cli
import keras
_cli.Parser(prog="t").parse_args(sys.argv[1:])
if keras.backend.backend() == "jax":
    import jax, jax.numpy as jnp
    jax.jit(lambda x: jnp.sin(x) * 2.0 + 1.0)(jnp.arange(7.0)).block_until_ready()
    print(json.dumps({"dir": jax.config.jax_compilation_cache_dir,
                      "on": jax.config.jax_enable_compilation_cache}))
else:
    print(json.dumps({}))
"""


def run(tmp_path, argv=(), backend="jax", **env):
    """Run SNIPPET in a fresh process with HOME/XDG_CACHE_HOME under `tmp_path`."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("JAX_COMPILATION_CACHE_DIR", "CLEARER_JAX_CACHE", "XDG_CACHE_HOME")}
    environ.update(KERAS_BACKEND=backend, HOME=str(tmp_path / "home"), JAX_PLATFORMS="cpu",
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env)
    out = subprocess.run([sys.executable, "-c", SNIPPET, *argv], cwd=REPO_ROOT, env=environ,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def entries(folder):
    return [f for f in os.listdir(folder) if not f.startswith(".")] if os.path.isdir(folder) else []


def test_default_folder_is_populated_and_xdg_respected(tmp_path):
    used = run(tmp_path)
    home_cache = tmp_path / "home" / ".cache" / "clearer-tf" / "jax"
    assert used == {"dir": str(home_cache), "on": True}
    assert entries(home_cache), "a jitted function wrote nothing"
    used = run(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert used["dir"] == str(tmp_path / "xdg" / "clearer-tf" / "jax") and entries(used["dir"])


def test_environment_variables_and_their_order(tmp_path):
    used = run(tmp_path, CLEARER_JAX_CACHE=str(tmp_path / "ours"))
    assert used["dir"] == str(tmp_path / "ours") and entries(tmp_path / "ours")
    used = run(tmp_path, CLEARER_JAX_CACHE=str(tmp_path / "ours2"),
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jaxs"))
    assert used["dir"] == str(tmp_path / "jaxs") and entries(tmp_path / "jaxs")
    assert not entries(tmp_path / "ours2")
    used = run(tmp_path, CLEARER_JAX_CACHE="off")
    assert not used["on"] and not entries(tmp_path / "home" / ".cache" / "clearer-tf" / "jax")


def test_cli_flags_win(tmp_path):
    flag = tmp_path / "flag"
    used = run(tmp_path, ["--compile-cache", str(flag)], JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jaxs"))
    assert used["dir"] == str(flag) and entries(flag) and not entries(tmp_path / "jaxs")
    used = run(tmp_path, ["--no-compile-cache"], CLEARER_JAX_CACHE=str(tmp_path / "ours"))
    assert not used["on"] and not entries(tmp_path / "ours")
    assert not entries(tmp_path / "home" / ".cache" / "clearer-tf" / "jax")


def test_nothing_happens_on_tensorflow(tmp_path):
    assert run(tmp_path, ["--compile-cache", str(tmp_path / "flag")], backend="tensorflow") == {}
    assert not (tmp_path / "flag").exists()
    assert not (tmp_path / "home" / ".cache" / "clearer-tf").exists()


@pytest.mark.parametrize("argv", [["--compile-cache", "d", "--no-compile-cache"]])
def test_flags_are_exclusive(argv, capsys):
    sys.path.insert(0, str(REPO_ROOT / "train_scripts"))
    try:
        import _cli
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit):
        _cli.Parser(prog="t").parse_args(argv)
    assert "not allowed with argument" in capsys.readouterr().err


def test_parsing_imports_nothing_on_tensorflow():
    """Scripts report argument errors before TensorFlow loads (and prints its log lines)."""
    code = ("import sys; sys.path.insert(0, 'train_scripts'); import _cli; "
            "_cli.Parser(prog='t').parse_args([]); print('keras' in sys.modules, 'jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         env=dict(os.environ, KERAS_BACKEND="tensorflow"), timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]
