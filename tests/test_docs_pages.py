"""The docs pages whose code is complete run as written and print what the page shows.

Like tests/test_readme.py: a page's ```python blocks, joined, run in a fresh process in an empty
folder; the output must equal the page's ```text blocks (printed on TensorFlow, the only backend
these tests run on). The other pages show fragments (`model` defined elsewhere) or command output
(`python examples/...`, whose examples are tested in their quick mode).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
RUNNABLE = ["logging.md", "existing-models.md"]

# The pages' text and printed numbers are TensorFlow's; each run is a fresh, slow process.
pytestmark = [pytest.mark.slow, pytest.mark.tensorflow_only(reason="docs text; slow")]


def blocks(text, kind):
    return re.findall(rf"^```{kind}\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_runs_and_prints_what_it_shows(page, tmp_path):
    text = (DOCS / page).read_text()
    script = tmp_path / "page.py"
    script.write_text("\n".join(blocks(text, "python")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "".join(blocks(text, "text"))
