"""The README runs verbatim: every ```bash and ```python block, in order, in a copy of the
repository (its tracked and new files, as a fresh clone has them), on the bundled data.

Kept fast with small settings where the README allows: the quick presets get a few
iterations appended (`SHORTER`), the NumPy `model.fit` example one epoch, and a command
shown twice runs once. Blocks marked `<!-- readme-test: skip (reason) -->` in
the README (a GPU, a server, the package install, this test's own command) are not run;
`SKIP` lists the blocks and lines that cannot run here for other reasons (your own data,
an example run folder). The walk-through (Search -> Training -> Evaluate -> Export -> Ship) and
the blocks that stand alone are two tests (`chain`).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+?)\)\s*-->")
SHORTER = [  # (script, appended options): a few iterations instead of minutes; no warm-up, so
    # TensorFlow traces one search step, not two (tests/test_search*.py cover the warm-up)
    ("train_scripts/search.py", "--iterations 4 --warmup 0 --log-every 2"),
    ("train_scripts/train.py", "--iterations 4 --validate-every 4"),
]
FEWER_EPOCHS = [("epochs=5,", "epochs=1,"),  # the NumPy model.fit example
                ("epochs=4, steps_per_epoch=10,", "epochs=2, steps_per_epoch=2,")]  # SupernetSearch.fit: warm-up only
SKIP = {  # a substring of a block or line -> why it is not run
    "--task denoise --sigma 50          # paper protocol (GPU)": "10,000 paper iterations: a GPU job",
    "--resume runs/search-denoise-20260101-120000": "resumes an example run folder",
    'load_pairs("my_data/degraded"': "needs your own data (about an hour on a CPU)",
}


def readme_blocks(text):
    """[(language, code, skip reason or None, line number)] of the fenced bash/python blocks."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        start, language = i, match.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(before)
        if language in ("bash", "python"):
            blocks.append((language, "\n".join(lines[start + 1:end]), marker and marker.group(1), start + 1))
        i = end + 1
    return blocks


def shell_commands(code):
    """Commands of a bash block: continuation lines joined, comments-only lines dropped."""
    commands, current = [], ""
    for line in code.splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip() and not current.strip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


WARM_START = ("--init-step 400 --rewarmup 100", "--init-step 4 --rewarmup 2", "--iterations 8 --validate-every 4")
"""The warm-start example enters a shortened schedule at step 4 of 8 instead of 400."""


def shortened(command):
    if WARM_START[0] in command:
        return f"{command.replace(WARM_START[0], WARM_START[1])} {WARM_START[2]}"
    for script, options in SHORTER:
        if script in command and "--preset quick" in command:
            comment = command.find("  #")
            head, tail = (command[:comment], command[comment:]) if comment > 0 else (command, "")
            return f"{head.rstrip()} {options}{tail}"
    return command


def skipped(code):
    return next((why for key, why in SKIP.items() if key in code), None)


def test_blocks_are_found_and_marked():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        blocks = readme_blocks(f.read())
    assert len(blocks) >= 15
    reasons = [why for _, _, why, _ in blocks if why]
    assert any("GPU" in why for why in reasons) and any("Serving" in why for why in reasons)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The repository's tracked and new (not ignored) files, as a fresh clone has them."""
    target = tmp_path_factory.mktemp("clone") / "clearer-tf"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for path in listed:
        source = os.path.join(REPO, path)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(target, path)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, path))
    return target


DEPENDS = ("runs/search/genotype.json", "runs/train", "runs/eval", "saved_models/clearer")
"""A block that names one of these continues the Search -> Training -> Evaluate -> Export -> Ship
walk-through (`main`); the others stand alone (`independent`). The two sets run as two tests,
which pytest-xdist (`--dist loadscope`: one class, one worker) can run side by side."""


def chain(code):
    return "main" if any(key in code for key in DEPENDS) else "independent"


def run_blocks(clone, which):
    with open(clone / "README.md", encoding="utf-8") as f:
        blocks = readme_blocks(f.read())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLEARER_MODELS")}
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["MPLBACKEND"] = "Agg"
    ran, seen = 0, set()
    for language, code, marked, line in blocks:
        if marked or skipped(code) or chain(code) != which:
            continue
        if language == "python":
            script = clone / f"readme_block_{line}.py"
            for before, after in FEWER_EPOCHS:
                code = code.replace(before, after)
            script.write_text(code + "\n")
            commands = [[sys.executable, str(script)]]
        else:
            commands = [["bash", "-c", shortened(c)] for c in shell_commands(code)
                        if not skipped(c) and c not in seen]
            seen.update(shell_commands(code))  # a command shown twice runs once
            commands = [[*c[:2], c[2].replace("python ", f"{sys.executable} ", 1)] if c[2].startswith("python ")
                        else c for c in commands]
        for command in commands:
            result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, (
                f"README.md line {line}: {command[-1]}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
            ran += 1
    return ran


class TestMainWalkThrough:
    def test_runs_verbatim(self, clone):
        assert run_blocks(clone, "main") >= 7
        # what the blocks promise, on real files
        assert (clone / "runs" / "eval" / "train" / "summary.json").is_file()
        assert (clone / "saved_models" / "clearer" / "tflite" / "clearer-v1-int8.tflite").is_file()
        assert (clone / "saved_models" / "my-denoiser" / "card.json").is_file()


class TestIndependentBlocks:
    def test_runs_verbatim(self, clone):
        assert run_blocks(clone, "independent") >= 5
        assert list((clone / "runs").glob("search-derain-*/genotype.json"))  # the main job's output
        assert (clone / "runs" / "search-latency" / "latency_table.json").is_file()
