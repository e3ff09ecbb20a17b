"""The README runs as written: its python blocks, top to bottom, in one fresh process.

Nothing is injected: the blocks are joined into one script and run by a new interpreter in an
empty folder, as a reader pasting them would. Its output must be the README's ```text blocks, and
each ```console command must print what the README shows under it. The numbers are those of
TensorFlow on CPU (other backends draw other initial weights), the only backend these tests run on.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"

# The README's numbers are TensorFlow's; each run is a fresh, slow process.
pytestmark = [pytest.mark.slow, pytest.mark.tensorflow_only(reason="README text; slow")]


def blocks(kind):
    return re.findall(rf"^```{kind}\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def run(command, cwd, quiet_tf=True, **kwargs):
    # A reader's defaults: TensorFlow's oneDNN ops on (they change results at round-off level),
    # and for the command line nothing that quiets TensorFlow: it must not print anyway.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    if quiet_tf:
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # The console script lives beside this interpreter, as it would in the reader's environment.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs
    )


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    script = folder / "readme.py"
    script.write_text("\n".join(blocks("python")))
    return folder, run([sys.executable, str(script)], folder)


def test_the_python_blocks_run_in_order_in_a_fresh_process(readme_run):
    folder, done = readme_run
    assert len(blocks("python")) >= 3
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "classifier.keras").exists()
    assert "reloaded, same predictions: True" in done.stdout


def test_the_printed_output_is_what_the_readme_shows(readme_run):
    _, done = readme_run
    assert done.stdout == "".join(blocks("text"))


def test_the_console_commands_print_what_the_readme_shows(readme_run):
    folder, done = readme_run
    assert done.returncode == 0
    for block in blocks("console"):
        command, *expected = block.splitlines()
        assert command.startswith("$ ")
        result = run(command[2:], folder, shell=True, quiet_tf=False)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""  # not one line from TensorFlow either
        assert result.stdout.splitlines() == expected


def test_blocks_not_meant_to_run_are_not_marked_python():
    fences = re.findall(r"^```(\w*)$", README.read_text(), flags=re.M)
    openings = fences[0::2]
    assert set(openings) <= {"python", "text", "console", "bash"}, openings
    for block in blocks("bash"):
        assert "import " not in block  # python code belongs in a python block
