"""``virolbi corrupt``: the CIFAR-10-C layout, equality with ``write_cifar_c``, input errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from virolbi.cli import main
from virolbi.cli.corrupt import dataset_arrays, parse_corruptions, parse_severities
from virolbi.data import load_cifar_c, load_dataset
from virolbi.errors import InputError
from virolbi.perturb import write_cifar_c

def test_writes_the_layout_equal_to_write_cifar_c(cifar_image_tree, tmp_path, capsys):
    out = tmp_path / "C"
    code = main(["corrupt", "--data", str(cifar_image_tree), "--corruption",
                 "gaussian_noise,impulse_noise", "--severities", "1-5", "--output", str(out),
                 "--seed", "7"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["gaussian_noise.npy", "impulse_noise.npy",
                                                     "labels.npy"]
    images, labels = dataset_arrays(load_dataset(str(cifar_image_tree), "test"))
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    for name in ("gaussian_noise", "impulse_noise"):
        got = np.load(out / f"{name}.npy")
        assert got.shape == (100, 32, 32, 3) and got.dtype == np.uint8
        ref = np.load(write_cifar_c(images, labels, tmp_path / "ref", name, (1, 2, 3, 4, 5), seed=7))
        np.testing.assert_array_equal(got, ref)
        # severity blocks in order: the noise grows with the severity
        err = [np.abs(got[20 * k:20 * (k + 1)].astype(int) - images).mean() for k in range(5)]
        assert err == sorted(err) and err[0] > 0
    lab = np.load(out / "labels.npy")
    np.testing.assert_array_equal(lab, np.tile(labels, 5))
    # the data loader reads it back as severity 3
    ds = load_cifar_c(out, "gaussian_noise", 3)
    np.testing.assert_array_equal(np.asarray(ds.data), got_block(out, "gaussian_noise", 3))
    assert "wrote" in capsys.readouterr().out


def got_block(out, name, severity):
    return np.load(out / f"{name}.npy")[20 * (severity - 1):20 * severity]


def test_limit_and_severity_subset(cifar_image_tree, tmp_path, cifar_small):
    code = main(["corrupt", "--data", str(cifar_image_tree), "--corruption", "shot_noise",
                 "--severities", "2,4", "--limit", "5", "--output", str(tmp_path)])
    assert code == 0
    arr = np.load(tmp_path / "shot_noise.npy")
    assert arr.shape == (10, 32, 32, 3)
    images, labels = dataset_arrays(load_dataset(str(cifar_image_tree), "test"), 5)
    ref = np.load(write_cifar_c(images, labels, tmp_path / "r", "shot_noise", (2, 4)))
    np.testing.assert_array_equal(arr, ref)
    # --limit is class-stratified, the same rule as evaluate --limit (not the first N images)
    assert len(set(labels.tolist())) == 5
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy")[:5], labels)


def test_parsers():
    assert parse_severities("1-5") == (1, 2, 3, 4, 5)
    assert parse_severities(" 2 , 4-5") == (2, 4, 5)
    assert parse_corruptions("all") == ("gaussian_noise", "shot_noise", "impulse_noise",
                                        "speckle_noise")
    for bad in ("1-7", "0", "5-1", "a", "", "2,,3"):
        with pytest.raises(InputError, match="severities must be integers in 1..5 written like"):
            parse_severities(bad)
    with pytest.raises(InputError, match="severities must not repeat, got '1,1'"):
        parse_severities("1,1")
    with pytest.raises(InputError, match="corruption must be one or more of gaussian_noise"):
        parse_corruptions("fog")


def test_bad_inputs_exit_2_with_one_line(cifar_image_tree, tmp_path, capsys):
    cases = [(["--corruption", "gaussian_noise", "--severities", "1-7"],
              "severities must be integers in 1..5"),
             (["--corruption", "fog"], "corruption must be one or more of"),
             (["--corruption", "gaussian_noise", "--limit", "0"], "--limit must be a positive"),
             (["--corruption", "gaussian_noise", "--split", "val"], "has no 'val' split")]
    import shutil

    plain = tmp_path / "plain"  # a tree without split folders: the default --split test reads it
    shutil.copytree(cifar_image_tree / "test", plain)
    assert main(["corrupt", "--data", str(plain), "--corruption", "gaussian_noise",
                 "--severities", "1", "--output", str(tmp_path / "p")]) == 0
    assert np.load(tmp_path / "p" / "gaussian_noise.npy").shape == (20, 32, 32, 3)
    capsys.readouterr()
    for extra, match in cases:
        code = main(["corrupt", "--data", str(cifar_image_tree), "--output", str(tmp_path / "o")]
                    + extra)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err
    assert not (tmp_path / "o").exists()


def test_subprocess_bad_severities(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from virolbi.cli import main; sys.exit(main())",
         "corrupt", "--data", "cifar10", "--corruption", "gaussian_noise", "--severities", "1-7",
         "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "virolbi corrupt: error: severities must be integers in 1..5 written like '1-5', '2,4' or "
        "'3', got '1-7'"]


def test_every_option_the_readme_names_exists():
    """No documented flag that the command line does not have (the README once named --download)."""
    import re
    from pathlib import Path

    from virolbi.cli import build_parser

    parser = build_parser()
    known = set()
    for action in parser._actions:
        for sub in getattr(action, "choices", None) or {}:
            known |= {o for a in action.choices[sub]._actions for o in a.option_strings}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", readme))
    not_ours = {"--quick"}  # benchmarks/bench_smoother.py's flag, named beside its script
    assert named - not_ours <= known, sorted(named - not_ours - known)


def test_download_flag_reaches_the_loader(monkeypatch):
    import argparse

    from virolbi.cli import _common

    seen = {}
    monkeypatch.setattr("virolbi.data.load_dataset", lambda *a, **kw: seen.update(kw) or "ds")
    p = argparse.ArgumentParser()
    _common.add_dataset_arguments(p)
    assert _common.load_dataset_from_args(p.parse_args(["--data", "cifar10", "--download"])) == "ds"
    assert seen["download"] is True


def test_one_convention_for_outputs_and_devices_across_commands():
    """Folders are --output-dir (corrupt's --output stays as an alias), --device defaults to auto
    wherever a command has it, and `virolbi --help` states the conventions."""
    from virolbi.cli import CONVENTIONS, build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if getattr(a, "choices", None)).choices
    folder_outputs = {"smooth", "demo", "corrupt", "evaluate", "reproduce", "train"}
    for name, sub in subs.items():
        opts = {o: a for a in sub._actions for o in a.option_strings}
        if name in folder_outputs:
            assert "--output-dir" in opts, name
        if "--output" in opts and name != "corrupt":
            assert "FIGURE" in (opts["--output"].metavar or ""), name  # --output is one file
        if "--device" in opts:
            assert opts["--device"].default in ("auto", None), name
    assert "--output-dir DIR for a folder" in CONVENTIONS
    assert " ".join(CONVENTIONS.split()) in " ".join(parser.format_help().split())  # wrapped


@pytest.mark.parametrize("argv, line", [
    (["--data", "cifar10-jpeg", "--split", "test"], "use --split val"),
    (["--data", "cifar10-jpeg", "--split", "validation"],
     "--split must be train, val or test, got 'validation'"),
])
def test_split_errors_name_the_option_as_typed(tmp_path, capsys, argv, line):
    """Issue #30 item 7: the message said split='val' where the user typed --split."""
    code = main(["corrupt", *argv, "--corruption", "gaussian_noise", "--severities", "1",
                 "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert line in err and "split=" not in err
    assert not (tmp_path / "o").exists()
