"""Triton (PyTriton) serving one ONNX model with ONNX Runtime behind Triton's dynamic batcher: the peer of
bench/peers/bench_tensor_serving.py. Runs in its own venv (``nvidia-pytriton`` pins its own dependencies):

    python3 -m venv .venv-peers && .venv-peers/bin/pip install nvidia-pytriton==0.7.0 onnxruntime==<ours>
    LD_LIBRARY_PATH=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))') \\
        .venv-peers/bin/python bench/peers/pytriton_onnx.py MODEL.onnx NAME HTTP_PORT [--max-batch-size 32]

Prints ``ready`` on stdout once Triton answers; serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

NUMPY_OF_ORT = {
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float16)": np.float16,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("name")
    parser.add_argument("http_port", type=int)
    parser.add_argument("--max-batch-size", type=int, default=32)
    args = parser.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, Any]:
        return dict(zip(outputs, session.run(outputs, inputs), strict=True))

    def tensor(spec: Any) -> Tensor:
        shape = tuple(d if isinstance(d, int) else -1 for d in spec.shape[1:])
        return Tensor(name=spec.name, dtype=NUMPY_OF_ORT[spec.type], shape=shape)

    config = TritonConfig(http_port=args.http_port, grpc_port=args.http_port + 1, metrics_port=args.http_port + 2)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[tensor(i) for i in session.get_inputs()],
            outputs=[tensor(o) for o in session.get_outputs()],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=DynamicBatcher()),
            strict=False,
        )
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.run()
        print("ready", flush=True)
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
