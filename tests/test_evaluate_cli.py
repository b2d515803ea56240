"""``virolbi evaluate`` end to end on real CIFAR images with a tiny ResNet, and its input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from virolbi.cli import main
from virolbi.data import load_dataset
from virolbi.evaluate import load_results
from virolbi.models import create_model

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = create_model("resnet18", 10, width=0.0625)
    config = {"model": "resnet18", "num_classes": 10, "width": 0.0625, "dataset": "cifar10"}
    torch.save({"model": model.state_dict(), "config": config}, d / "full.pt")
    torch.save(model.state_dict(), d / "raw.pt")
    return d, model


def _one_error_line(capsys, code, match):
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("virolbi evaluate: error: ") and match in err, err


def test_end_to_end_quick_suite(cifar_image_tree, checkpoints, tmp_path, capsys):
    d, model = checkpoints
    out = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--data", str(cifar_image_tree),
                 "--suite", "quick", "--limit", "8", "--pgd-steps", "1", "--batch-size", "4",
                 "--device", "cpu", "--output-dir", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "results.png"]
    res = load_results(out / "results.json")
    assert res.meta["n"] == 8 and res.meta["dataset_size"] == 20 and res.meta["suite"] == "quick"
    assert res.meta["model_config"]["width"] == 0.0625
    assert {(r.perturbation, r.level) for r in res.rows if r.group != "sanity"} == {
        ("clean", "-"), ("gaussian_noise", "3"), ("fgsm", "8/255"), ("low_resolution", "1/2"),
        ("frequency", "low"), ("frequency", "high")}
    assert len(res.sanity) == 4
    # the clean row equals the checkpoint's model run by hand on the same subset
    ds = load_dataset(str(cifar_image_tree), "test")
    idx = np.sort(np.random.default_rng(0).choice(20, size=8, replace=False))
    x = torch.stack([ds[i][0] for i in idx]).float() / 255  # decoded lazily: item by item
    with torch.no_grad():
        ref = (model.eval()(x).argmax(1).numpy() == ds.targets[idx]).mean()
    assert res.accuracy("clean") == pytest.approx(ref)
    md = (out / "results.md").read_text()
    assert "## Table 2: adversarial examples" in md and "| FGSM | 8/255 | classifier alone |" in md
    assert "clean accuracy" in stdout and "sanity checks:" in stdout
    json.loads((out / "results.json").read_text())


def test_raw_state_dict_with_model_flags(cifar_image_tree, checkpoints, tmp_path, capsys):
    d, _ = checkpoints
    code = main(["evaluate", "--checkpoint", str(d / "raw.pt"), "--model", "resnet18", "--width",
                 "0.0625", "--num-classes", "10", "--data", str(cifar_image_tree), "--suite",
                 "lowres", "--limit", "4", "--output-dir", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert [r.level for r in load_results(tmp_path / "o" / "results.json").rows] == ["-", "1/4", "1/2"]


def test_bad_inputs_exit_2_with_one_line(cifar_image_tree, checkpoints, tmp_path, capsys):
    d, _ = checkpoints
    base = ["--data", str(cifar_image_tree), "--output-dir", str(tmp_path / "x")]
    code = main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt")] + base)
    _one_error_line(capsys, code, "checkpoint not found")
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--suite", "everything"] + base)
    _one_error_line(capsys, code, "unknown suite 'everything'")
    code = main(["evaluate", "--checkpoint", str(d / "raw.pt")] + base)
    _one_error_line(capsys, code, "has no 'config' naming the model: pass --model NAME")
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--limit", "0"] + base)
    _one_error_line(capsys, code, "--limit must be a positive integer, got 0")
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--preprocess-sparsity", "1.5"]
                + base)
    _one_error_line(capsys, code, "--preprocess-sparsity must be in (0, 1], got 1.5")
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--num-classes", "100"] + base)
    _one_error_line(capsys, code, "different shapes")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code = main(["evaluate", "--checkpoint", str(bad)] + base)
    _one_error_line(capsys, code, "could not read")
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--data", str(cifar_image_tree),
                 "--output-dir", "/proc/virolbi-eval"])  # checked before the evaluation runs
    _one_error_line(capsys, code, "--output-dir /proc/virolbi-eval: cannot write in /proc")
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--device", "tpu"] + base)
    _one_error_line(capsys, code, "--device must be auto, cpu, cuda or cuda:N, got 'tpu'")
    if not torch.cuda.is_available():
        code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--device", "cuda"] + base)
        _one_error_line(capsys, code, "--device cuda requested but CUDA is not available")
    assert not (tmp_path / "x").exists()


def test_subprocess_missing_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from virolbi.cli import main; sys.exit(main())",
         "evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--data", "cifar10"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"virolbi evaluate: error: checkpoint not found: {tmp_path / 'missing.pt'}"]


def test_build_model_reads_the_trainers_nested_config(tmp_path):
    """`virolbi train` checkpoints nest the model config; the class count comes from the weights."""
    import torch

    from virolbi.cli.evaluate import build_model
    from virolbi.models import create_model

    net = create_model("resnet18", num_classes=7, width=0.0625)
    ckpt = tmp_path / "last.pt"
    torch.save({"model": net.state_dict(), "epoch": 1,
                "config": {"model": {"name": "resnet18", "width": 0.0625, "kwargs": {}},
                           "data": {"name": "cifar10-jpeg", "num_classes": None}}}, ckpt)
    rebuilt, resolved = build_model(ckpt)
    assert resolved["model"] == "resnet18" and resolved["num_classes"] == 7
    assert resolved["width"] == 0.0625 and resolved["normalize"] == "cifar10"
    x = torch.rand(2, 3, 32, 32)
    net.eval(), rebuilt.eval()
    assert torch.equal(net(x), rebuilt(x))


def test_blur_preprocessing_for_the_blur_baseline(cifar_image_tree, checkpoints, tmp_path, capsys):
    """`--preprocess-blur` evaluates with the Blur baseline's test-time blur (kernel 3, σ 2 at
    32 px); the 'with' clean row equals the model on blurred images computed by hand."""
    from virolbi.perturb import gaussian_blur

    d, model = checkpoints
    out = tmp_path / "blur"
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--data", str(cifar_image_tree),
                 "--suite", "lowres", "--preprocess-blur", "--limit", "20", "--device", "cpu",
                 "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    res = load_results(out / "results.json")
    pre = [r for r in res.rows if r.perturbation == "clean" and r.preprocessing != "none"]
    assert len(pre) == 1 and pre[0].preprocessing == "GaussianBlur"
    ds = load_dataset(str(cifar_image_tree), "test")
    x = torch.stack([ds[i][0] for i in range(len(ds))]).float() / 255
    with torch.no_grad():
        ref = (model.eval()(gaussian_blur(x, 3, 2.0)).argmax(1).numpy() == ds.targets).mean()
    assert pre[0].accuracy == pytest.approx(ref)
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--data", str(cifar_image_tree),
                 "--preprocess-blur", "--preprocess-sparsity", "0.6", "--output-dir",
                 str(tmp_path / "y")])
    _one_error_line(capsys, code, "either --preprocess-sparsity or --preprocess-blur")


_EVALUATE_ON_A_FULL_DISK = """
import resource, signal, sys
from virolbi.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
sys.exit(main(["evaluate", "--checkpoint", sys.argv[1], "--data", sys.argv[2], "--suite", "noise",
               "--limit", "8", "--batch-size", "4", "--device", "cpu", "--output-dir", sys.argv[3]]))
"""


def test_a_full_disk_names_the_resume_file_and_says_a_rerun_continues(cifar_image_tree,
                                                                       checkpoints, tmp_path):
    """Issue #30 item 5: the resume file on a full disk (here a 16 kB file-size limit) gave a
    message naming no file. One line naming partial-evaluation.json, and what a rerun does."""
    d, _ = checkpoints
    out = tmp_path / "eval"
    res = subprocess.run([sys.executable, "-c", _EVALUATE_ON_A_FULL_DISK, str(d / "full.pt"),
                          str(cifar_image_tree), str(out)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert lines[0] == (f"virolbi evaluate: error: File too large writing "
                        f"{out / 'partial-evaluation.json'}: free some space and run it again "
                        "(finished outputs are kept; the same command continues from the last "
                        "finished batch)")
    assert not out.exists() or list(out.iterdir()) == []      # no temporary, no half file


_HOLD_THE_FOLDER = """
import sys
from virolbi.io import locked_output_dir
with locked_output_dir(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()          # until the test closes it
"""


def test_a_second_run_into_a_busy_folder_gets_one_line(cifar_image_tree, checkpoints, tmp_path,
                                                       capsys):
    """Issue #30 item 6: two evaluations into one --output-dir both ran and the last writer won.
    While another process holds the folder, a second run stops at once, writing nothing."""
    d, _ = checkpoints
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(d / "full.pt"), "--data", str(cifar_image_tree),
            "--suite", "lowres", "--limit", "4", "--device", "cpu", "--output-dir", str(out)]
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_THE_FOLDER, str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(args)
        _one_error_line(capsys, code, f"--output-dir {out} is in use by another virolbi run")
        assert list(out.iterdir()) == []
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert main(args) == 0                                       # free again
    assert (out / "results.json").is_file()


def test_a_finished_result_is_replaced_only_with_overwrite(cifar_image_tree, checkpoints,
                                                           tmp_path, capsys):
    """Issue #30 item 6: an existing result was overwritten without a word."""
    d, _ = checkpoints
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(d / "full.pt"), "--data", str(cifar_image_tree),
            "--suite", "lowres", "--device", "cpu", "--output-dir", str(out)]
    assert main(args + ["--limit", "4"]) == 0
    capsys.readouterr()
    first = (out / "results.json").read_bytes()
    code = main(args + ["--limit", "8"])
    _one_error_line(capsys, code, f"--output-dir {out} already holds a finished evaluation "
                                  "(results.json); pass --overwrite to replace it")
    assert (out / "results.json").read_bytes() == first
    assert main(args + ["--limit", "8", "--overwrite"]) == 0
    assert load_results(out / "results.json").meta["n"] == 8


def test_an_unknown_suite_names_every_suite_there_is(cifar_image_tree, checkpoints, tmp_path,
                                                     capsys):
    """Issue #30 item 7: the message left out psnr and sdnet, which --suite also takes."""
    from virolbi.evaluate.suites import SUITES

    d, _ = checkpoints
    code = main(["evaluate", "--checkpoint", str(d / "full.pt"), "--data", str(cifar_image_tree),
                 "--suite", "everything", "--output-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    listed = err.split("expected one of ")[1].strip().split(", ")
    assert set(listed) == {*SUITES, "psnr", "sdnet"}
    assert not (tmp_path / "x").exists()


def test_every_argument_of_every_command_has_help_text():
    """Issue #30 item 7: evaluate's --batch-size and --seed had none."""
    import argparse

    from virolbi.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"{command} {(a.option_strings or [a.dest])[0]}"
            for command, parser in sub.choices.items() for a in parser._actions
            if a.help in (None, "") and a.dest != "help"]
    assert bare == []
