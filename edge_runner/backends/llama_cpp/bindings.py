"""llama-cpp-python's ctypes bindings without its high-level API, until something asks for it.

``import llama_cpp`` runs the package's ``__init__``, which imports the high-level ``Llama`` class and with it
jinja2, diskcache and the chat formats: about 10 MiB of resident memory in every server that has an LLM,
although serving only calls the C functions of ``llama_cpp.llama_cpp``. ``import_llama_cpp`` registers the
package without running its ``__init__``, imports the bindings into it (what ``from .llama_cpp import *``
would), and runs the real ``__init__`` the first time any other name is looked up on the package (PEP 562
module ``__getattr__``): ``from llama_cpp import Llama`` keeps working anywhere, at the cost of the memory
then.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

_lock = threading.RLock()


def import_llama_cpp() -> ModuleType:
    """The ``llama_cpp`` package: as imported already, or with only its bindings loaded (see the module doc).

    Raises ImportError when llama-cpp-python is not installed, OSError when its library does not load.
    """
    with _lock:
        loaded = sys.modules.get("llama_cpp")
        if loaded is not None:
            return loaded
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or spec.loader is None or not spec.submodule_search_locations:
            raise ImportError("llama-cpp-python is not installed (pip install 'edge-runner[llama]')")
        package = importlib.util.module_from_spec(spec)
        sys.modules["llama_cpp"] = package
        try:
            native = importlib.import_module("llama_cpp.llama_cpp")
        except BaseException:
            del sys.modules["llama_cpp"]
            raise
        package.__dict__.update({k: v for k, v in vars(native).items() if not k.startswith("_")})
        package.__getattr__ = _complete(package, spec)  # type: ignore[method-assign]
        return package


def _complete(package: ModuleType, spec: Any) -> Any:
    """A module ``__getattr__`` that runs the package's real ``__init__`` once, then answers from it."""
    state = {"done": False}

    def __getattr__(name: str) -> Any:
        if (name.startswith("__") and name != "__version__") or state["done"]:  # import machinery probes
            raise AttributeError(f"module 'llama_cpp' has no attribute {name!r}")
        with _lock:
            if not state["done"]:
                state["done"] = True
                package.__dict__.pop("__getattr__", None)
                spec.loader.exec_module(package)
        return getattr(package, name)

    return __getattr__
