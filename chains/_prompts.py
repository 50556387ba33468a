"""``load_prompt``: one built-in chain's file, read and validated (kept for code that
read a chain's words before chains were files of their own; see ``chain_file``)."""

from __future__ import annotations

from functools import cache
from importlib.resources.abc import Traversable

from .chain_file import ChainFile, ChainFileError, read_chain_file
from .registry import builtin_dir

__all__ = ["PromptFileError", "load_prompt", "prompt_dir"]

# The error a broken chain file raises (its older name).
PromptFileError = ChainFileError


def prompt_dir() -> Traversable:
    """The folder of the built-in chain files, inside the installed ``chains`` package."""
    return builtin_dir()


@cache
def load_prompt(name: str, directory: Traversable | None = None) -> ChainFile:
    """Read and validate ``<name>.yaml`` from ``directory`` (default: the built-ins)."""
    return read_chain_file((directory if directory is not None else builtin_dir())
                           / f"{name}.yaml")
