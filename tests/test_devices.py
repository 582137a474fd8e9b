"""--device and --precision: every device name a user may type gets a one-line InputError or a device."""
from __future__ import annotations

import pytest
import torch

from fsvideo.errors import InputError
from fsvideo.utils import pick_device, pick_dtype


def test_auto_and_cpu_give_a_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("name, match", [
    ("tpu", "unknown device 'tpu'"),
    ("cuda:99", "cuda:99"),
    pytest.param("mps", "not usable here", marks=pytest.mark.skipif(
        torch.backends.mps.is_available(), reason="this machine has MPS")),   # it was an internal error
    pytest.param("cuda", "CUDA is not available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_a_device_this_machine_lacks_is_one_line_naming_the_fix(name, match):
    with pytest.raises(InputError, match=match) as e:
        pick_device(name)
    assert "\n" not in str(e.value) and "use" in (e.value.hint or "")


def test_precision_names():
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cuda"), "auto") == torch.float16
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(InputError, match="unknown precision"):
        pick_dtype(torch.device("cpu"), "int8")
