"""The package imports lazily: the command line starts without Keras, users see no difference.

Each check runs in a fresh Python process, since this one imported Keras long ago.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import keras_reg

pytestmark = pytest.mark.slow


def run_python(code, tmp_path, env=None, drop=()):
    """Runs `code` in a fresh interpreter in `tmp_path`; returns the finished process."""
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    # No TF_CPP_MIN_LOG_LEVEL here on purpose: what the command line prints must be quiet
    # without help from the environment.
    environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=environ,
    )


NO_KERAS = "assert not {'keras', 'tensorflow', 'jax', 'torch'} & set(sys.modules)"


def test_help_usage_errors_and_a_missing_file_import_no_keras(tmp_path):
    run = run_python(
        f"""
        import sys
        from keras_reg.cli import main
        assert main(["--help"]) == 0
        assert main(["report", "--help"]) == 0
        assert main(["--version"]) == 0
        assert main([]) == 2
        assert main(["report", "x.keras", "--threshold", "-1"]) == 2
        assert main(["report", "missing.keras"]) == 2
        {NO_KERAS}
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "usage: keras-reg" in run.stdout and "exit status" in run.stdout
    assert f"keras-reg {keras_reg.__version__}\n" in run.stdout
    lines = run.stderr.splitlines()
    assert len(lines) == 3, run.stderr  # one line per mistake, nothing from TensorFlow
    assert lines[2] == "keras-reg report: error: missing.keras: no such file"


def test_report_on_a_saved_model_imports_no_keras(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
    model.save(tmp_path / "m.keras")
    run = run_python(
        f"""
        import sys
        from keras_reg.cli import main
        assert main(["report", "m.keras"]) == 0
        assert main(["report", "m.keras", "--json"]) == 0
        {NO_KERAS}
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "m/d/kernel" in run.stdout


def test_the_console_script_on_a_missing_file_prints_exactly_one_line(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "keras-reg")
    if not os.path.exists(script):
        pytest.skip("the keras-reg console script is not installed")
    run = subprocess.run(
        [script, "report", "missing.keras"], capture_output=True, text=True, cwd=tmp_path
    )
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == "keras-reg report: error: missing.keras: no such file\n"


def test_import_keras_reg_alone_imports_no_keras(tmp_path):
    run = run_python(
        f"""
        import sys
        import keras_reg
        assert keras_reg.__version__
        {NO_KERAS}
        assert set(keras_reg.__all__) <= set(dir(keras_reg))
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr


# The hook is on `import keras`, the same on every backend; two fresh processes that load one.
@pytest.mark.tensorflow_only(reason="backend-independent import hook; slow")
@pytest.mark.parametrize("keras_first", [True, False])
def test_classes_are_registered_whichever_is_imported_first(tmp_path, keras_first):
    """ "Import keras_reg before loading" stays true: a saved model with them loads."""
    imports = "import keras; import keras_reg" if keras_first else "import keras_reg; import keras"
    run = run_python(
        f"""
        {imports}
        for name in ["L1", "L2", "L1L2", "ElasticNet", "GroupLasso", "SparseGroupLasso",
                     "Proximal"]:
            found = keras.saving.get_registered_object("keras_reg>" + name)
            assert found is not None and found.__module__.startswith("keras_reg."), name
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr


# Each of these imports Keras itself, and is imported by a module that registers classes: as a
# program's first import, registering at once would import it half-run (an ImportError).
@pytest.mark.tensorflow_only(reason="backend-independent import hook; slow")
@pytest.mark.parametrize("module", ["keras_reg.schedules", "keras_reg.attach"])
def test_a_submodule_imported_first_imports_and_registers(tmp_path, module):
    run = run_python(
        f"""
        from {module} import *
        import keras
        for name in ["L1", "PruneLowMagnitude", "PolynomialDecay", "Proximal"]:
            assert keras.saving.get_registered_object("keras_reg>" + name) is not None, name
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr


def test_every_public_name_resolves_like_an_eager_import():
    from keras_reg import L1, Proximal, SparsityLogger, prox, sparsity_report  # noqa: F401

    for name in keras_reg.__all__:
        assert getattr(keras_reg, name) is not None
    assert keras_reg.prox.prox_l1 is prox.prox_l1
    assert keras_reg.L1 is L1
    with pytest.raises(AttributeError, match="has no attribute 'L3'"):
        keras_reg.L3  # noqa: B018


def test_without_tensorflow_and_no_backend_set_the_error_says_what_to_do(tmp_path):
    """A JAX or PyTorch user who forgot KERAS_BACKEND: one clear message, not Keras' traceback."""
    run = run_python(
        """
        import sys

        class NoTensorFlow:  # as if only jax were installed
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, NoTensorFlow())
        import keras_reg
        try:
            keras_reg.L1
        except ImportError as error:
            print(error)
        """,
        tmp_path,
        drop=("KERAS_BACKEND",),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        "keras_reg needs a Keras backend, and Keras defaults to TensorFlow, which is not "
        "installed. Set KERAS_BACKEND=jax or KERAS_BACKEND=torch before importing (or install "
        "tensorflow)."
    )


@pytest.mark.tensorflow_only(reason="TensorFlow's log lines")
def test_shrink_command_prints_no_tensorflow_log_line(tmp_path):
    """`keras-reg shrink` must import Keras; the backend's log lines still stay out."""
    import keras

    hidden = keras.layers.Dense(4, name="h")
    model = keras.Sequential([keras.Input((3,)), hidden, keras.layers.Dense(2, name="d")], name="m")
    hidden.kernel.assign(keras.ops.concatenate([keras.ops.zeros((3, 1)), hidden.kernel[:, 1:]], 1))
    model.save(tmp_path / "m.keras")  # unit 0 of h outputs 0: something to remove
    run = run_python(
        """
        from keras_reg.cli import main
        assert main(["shrink", "m.keras", "small.keras"]) == 0
        """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.startswith("m.keras -> small.keras\n")
