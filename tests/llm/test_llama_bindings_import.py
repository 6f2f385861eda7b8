"""llama-cpp-python's bindings load without its high-level API; ``Llama`` still imports when asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import pytest

pytest.importorskip("llama_cpp")

_PROBE = r"""
import json, sys
from edge_runner.backends.llama_cpp.native import llama
lib = llama()
before = {
    "high_level": sorted(m for m in ("llama_cpp.llama", "jinja2", "diskcache") if m in sys.modules),
    "decode": callable(lib.llama_decode),
    "same": lib is sys.modules["llama_cpp"],
}
from llama_cpp import Llama
import llama_cpp.llama
after = {
    "llama_is_class": Llama is llama_cpp.llama.Llama and isinstance(Llama, type),
    "version": sys.modules["llama_cpp"].__version__,
    "jinja2": "jinja2" in sys.modules,
    "decode_kept": sys.modules["llama_cpp"].llama_decode is lib.llama_decode,
}
print(json.dumps({"before": before, "after": after}))
"""


def test_serving_loads_only_the_bindings_and_llama_still_imports_later() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == {"high_level": [], "decode": True, "same": True}
    assert result["after"]["llama_is_class"] is True
    assert result["after"]["version"] == version("llama-cpp-python")
    assert result["after"]["jinja2"] is True  # the real __init__ ran: llama_chat_format imports jinja2
    assert result["after"]["decode_kept"] is True


def test_a_package_imported_first_is_used_as_it_is() -> None:
    code = (
        "import llama_cpp, sys\n"
        "from edge_runner.backends.llama_cpp.bindings import import_llama_cpp\n"
        "print(import_llama_cpp() is llama_cpp and hasattr(llama_cpp, 'Llama'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"
