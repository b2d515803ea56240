"""The shared input checks."""

import pytest

from virolbi.errors import InputError


def test_check_positive_int():
    import numpy as np

    from virolbi.checks import check_positive_int

    assert check_positive_int(3, "n") == 3 and check_positive_int(np.int64(2), "n") == 2
    for bad in (0, -1, 2.5, "3", True, None):
        with pytest.raises(InputError, match=r"n must be a positive integer, got"):
            check_positive_int(bad, "n")


def test_resolve_device_names_the_option_the_user_typed():
    import torch

    from virolbi.checks import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu0", "tpu", 3.5, "meta"):
        with pytest.raises(InputError, match=r"--device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad, "--device")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--device cuda:1 requested but CUDA is not available"):
            resolve_device("cuda:1", "--device")


def test_evaluate_on_a_missing_gpu_is_an_input_error_not_an_assertion(cifar_batch):
    import torch

    from virolbi.evaluate import evaluate
    from virolbi.models import create_model

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = torch.utils.data.TensorDataset((cifar_batch[:4] * 255).to(torch.uint8),
                                          torch.zeros(4, dtype=torch.int64))
    with pytest.raises(InputError, match="device cuda requested but CUDA is not available"):
        evaluate(create_model("airbench", 10, width=0.125), data, suite="quick", device="cuda")
