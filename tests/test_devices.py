import pytest
import torch

from lwzoo.devices import resolve_device
from lwzoo.errors import LwzooError


def test_auto_is_cuda_when_present_else_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["foo", "gpu0", "cuda:x"])
def test_an_unknown_device_is_a_one_line_error(name):
    with pytest.raises(LwzooError, match="unknown device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(LwzooError, match="sees no GPU; use --device cpu"):
        resolve_device("cuda")
