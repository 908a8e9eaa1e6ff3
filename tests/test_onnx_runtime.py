"""onnxruntime on a small graph with lwzoo's input/output names: batching must not change the features."""

import numpy as np
import torch

from lwzoo.onnx_runtime import onnx_session, run_onnx


def test_run_onnx_batches_and_matches_torch(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    path = tmp_path / "m.onnx"
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(
        model, (x,), str(path), input_names=["images"], output_names=["features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
    )  # fmt: skip
    session = onnx_session(path)
    whole, batched = run_onnx(session, x), run_onnx(session, x, batch=2)
    with torch.no_grad():
        expected = model(x).numpy()
    assert whole.shape == (5, 4) and np.allclose(whole, expected, atol=1e-5) and np.array_equal(whole, batched)
