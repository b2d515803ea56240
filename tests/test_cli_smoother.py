"""``virolbi smooth``, ``virolbi path`` and ``virolbi demo`` end to end on real photographs
(scikit-image's bundled samples, downscaled), and every bad input: exit code 2, one line on stderr,
no traceback, no output left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import virolbi
from virolbi.cli import main

skdata = pytest.importorskip("skimage.data")

SIZE = 40


def _small(arr: np.ndarray, size: int = SIZE, height: int | None = None) -> Image.Image:
    return Image.fromarray(arr).resize((size, height or size), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Real photographs as files: gray PNG, colour JPEG, a second colour PNG of another size, an
    RGBA PNG of the first colour size, a float .npy (C, H, W) and a gray float .npy (H, W)."""
    d = tmp_path_factory.mktemp("photos")
    _small(skdata.camera()).save(d / "camera.png")
    _small(skdata.astronaut()).save(d / "astronaut.jpg", quality=95)
    _small(skdata.coffee(), 36, 24).save(d / "coffee.png")
    _small(skdata.chelsea()).convert("RGBA").save(d / "chelsea.png")
    coins = np.asarray(_small(skdata.coins(), 20, 16), dtype=np.float64) / 255.0
    np.save(d / "coins_gray.npy", coins)
    np.save(d / "coins_rgb.npy", np.stack([coins, coins[::-1], 1 - coins]).astype(np.float32))
    return d


def _read(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img)


def _as_chw(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(arr)).float() / 255.0
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


def _expected_png(x: torch.Tensor, sparsity: float, **kw) -> np.ndarray:
    """The library's result for one (C, H, W) float image, as the uint8 array a PNG would hold."""
    y = virolbi.smooth(x, sparsity, **kw).numpy().astype(np.float64)
    y = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
    return y[0] if y.shape[0] == 1 else np.moveaxis(y, 0, -1)


def _error_line(capsys, code: int, command: str, match: str) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"virolbi {command}: error: "), lines[0]
    assert match in lines[0], lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*")) if d.exists() else []


# ------------------------------------------------------------------------------------------------
# virolbi smooth
# ------------------------------------------------------------------------------------------------

def test_smooth_end_to_end_on_photographs(photos, tmp_path, capsys):
    out = tmp_path / "out"
    inputs = ["camera.png", "astronaut.jpg", "coffee.png", "chelsea.png"]
    code = main(["smooth", *[str(photos / n) for n in inputs], "--sparsity", "0.6",
                 "--output-dir", str(out), "--report", str(tmp_path / "report.json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""  # no warning, no progress bar when not on a terminal
    assert "smoothed 4 image(s) at sparsity 0.6" in captured.out
    assert _files(out) == ["astronaut_s0.60.png", "camera_s0.60.png", "chelsea_s0.60.png",
                           "coffee_s0.60.png"]

    # gray stays gray, RGBA becomes RGB, sizes kept; pixels are the library's result
    modes = [("camera", "L"), ("astronaut", "RGB"), ("coffee", "RGB"), ("chelsea", "RGB")]
    for name, mode in modes:
        with Image.open(out / f"{name}_s0.60.png") as img:
            assert img.mode == mode
        src = [p for p in photos.iterdir() if p.stem == name][0]
        with Image.open(src) as img:
            pixels = np.array(img.convert("RGB") if img.mode == "RGBA" else img)
        got = _read(out / f"{name}_s0.60.png")
        assert got.shape == pixels.shape
        diff = np.abs(got.astype(int) - _expected_png(_as_chw(pixels), 0.6).astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # rounding ties only
        assert np.abs(got.astype(int) - pixels.astype(int)).mean() > 0.5  # it did smooth

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["sparsity"] == 0.6 and report["options"]["solver"] == "imex"
    recs = {Path(r["input"]).name: r for r in report["images"]}
    assert list(recs) == inputs  # in input order
    for name, rec in recs.items():
        assert rec["size"][0] == (1 if name == "camera.png" else 3)
        assert rec["reached"] and rec["warnings"] == []
        assert 0.6 <= rec["sparsity_reached"] < 0.65
        assert rec["iterations"] > 0 and rec["components"] > 1 and rec["seconds"] > 0
        assert Path(rec["output"]).exists()
    # the 40x40 colour photographs were smoothed together, the others alone
    assert [recs[n]["batch_size"] for n in inputs] == [1, 2, 1, 2]
    # iterations and sparsity are the library's
    x = _as_chw(_read(photos / "camera.png"))
    _, info = virolbi.smooth(x, 0.6, return_info=True)
    assert recs["camera.png"]["iterations"] == int(info.iterations[0, 0])
    assert recs["camera.png"]["components"] == int(info.n_components[0, 0])


def test_smooth_npy_in_npy_out_and_options(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["smooth", str(photos / "coins_gray.npy"), str(photos / "coins_rgb.npy"),
                 "--sparsity", "0.3", "--output-dir", str(out), "--solver", "dct",
                 "--per-channel", "--kappa", "4", "--max-iter", "5000"])
    assert code == 0, capsys.readouterr().err
    assert _files(out) == ["coins_gray_s0.30.npy", "coins_rgb_s0.30.npy"]
    for stem in ("coins_gray", "coins_rgb"):
        x = np.load(photos / f"{stem}.npy")
        y = np.load(out / f"{stem}_s0.30.npy", allow_pickle=False)
        assert y.shape == x.shape and y.dtype == x.dtype
        ref = virolbi.smooth(x, 0.3, solver="dct", group=False, kappa=4.0, max_iter=5000)
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
        assert not np.allclose(y, x)


def test_smooth_unreachable_target_is_a_warning(tmp_path, capsys):
    """Half of the image is flat: sparsity 0.9 cannot be reached; the image is still written and
    the report says why."""
    x = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
    x[:, :6] = 128
    Image.fromarray(x).save(tmp_path / "half.png")
    out = tmp_path / "out"
    code = main(["smooth", str(tmp_path / "half.png"), "--sparsity", "0.9",
                 "--output-dir", str(out), "--report", str(out / "r.json")])
    captured = capsys.readouterr()
    assert code == 0
    assert "warning:" in captured.err and "sparsity 0.9 not reached" in captured.err
    rec = json.loads((out / "r.json").read_text())["images"][0]
    assert not rec["reached"] and rec["sparsity_reached"] < 0.9
    assert len(rec["warnings"]) == 1 and "not reached" in rec["warnings"][0]
    assert (out / "half_s0.90.png").exists()


def _bad_npy(tmp_path: Path, name: str, arr) -> Path:
    np.save(tmp_path / name, arr)
    return tmp_path / name


@pytest.mark.parametrize("case, match", [
    ("missing", "image not found"),
    ("text.png", "cannot read"),
    ("nan.npy", "nan.npy contains NaN or Inf values"),
    ("big.npy", "must have float values in [0, 1]"),
    ("rank4.npy", "expected an image array (C, H, W) or (H, W), got shape (1, 1, 4, 4)"),
    ("last.npy", "looks channels-last"),
    ("int.npy", "got dtype int64"),
    ("pickle.npy", "cannot read"),
    ("tiny.png", "at least 2x2 pixels, got 1x5"),
    ("directory", "expected an image file, got a directory"),
    ("sparsity", "sparsity must be in (0, 1], got 1.5"),
    ("solver", "--solver must be one of imex, dct, explicit, got 'fast'"),
    ("step", "is unstable for the 'dct' solver"),
    ("imex step", "step 1e+06 is unstable for the 'imex' solver: it needs step < "),
    ("projection", "--projection must be one of graph, pinv, lsqr, got 'svd'"),
    ("batch size", "--batch-size must be a finite number > 0, got 0"),
    ("same name", "would both be written to"),
    ("output is a file", "is an existing file; expected a folder"),
    ("report is a folder", "is a folder; expected a file name"),
    ("output not writable", "--output-dir /proc/virolbi-out: cannot write in /proc"),
    ("output under a file", "so no folder can be made under it"),
])
def test_smooth_bad_input_exit_2_one_line_nothing_written(photos, tmp_path, capsys, case, match):
    good = str(photos / "camera.png")
    out = tmp_path / "out"
    args = [good]
    extra: list[str] = []
    if case == "missing":
        args = [good, str(tmp_path / "nope.png")]
    elif case == "text.png":
        (tmp_path / "text.png").write_text("not an image")
        args = [good, str(tmp_path / "text.png")]
    elif case == "nan.npy":
        a = np.full((4, 4), 0.5)
        a[1, 1] = np.nan
        args = [good, str(_bad_npy(tmp_path, "nan.npy", a))]
    elif case == "big.npy":
        args = [str(_bad_npy(tmp_path, "big.npy", np.full((3, 4, 4), 2.0)))]
    elif case == "rank4.npy":
        args = [str(_bad_npy(tmp_path, "rank4.npy", np.zeros((1, 1, 4, 4))))]
    elif case == "last.npy":
        args = [str(_bad_npy(tmp_path, "last.npy", np.zeros((8, 8, 3))))]
    elif case == "int.npy":
        args = [str(_bad_npy(tmp_path, "int.npy", np.zeros((4, 4), dtype=np.int64)))]
    elif case == "pickle.npy":
        np.save(tmp_path / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        args = [str(tmp_path / "pickle.npy")]
    elif case == "tiny.png":
        Image.fromarray(np.zeros((1, 5), np.uint8)).save(tmp_path / "tiny.png")
        args = [good, str(tmp_path / "tiny.png")]
    elif case == "directory":
        args = [good, str(photos)]
    elif case == "sparsity":
        extra = ["--sparsity", "1.5"]
    elif case == "solver":
        extra = ["--solver", "fast"]
    elif case == "step":
        extra = ["--solver", "dct", "--step", "1.0"]
    elif case == "imex step":  # the default solver: was 1 iteration, sparsity 0.998, "reached"
        extra = ["--step", "1e6"]
    elif case == "projection":
        extra = ["--projection", "svd"]
    elif case == "batch size":
        extra = ["--batch-size", "0"]
    elif case == "same name":
        other = tmp_path / "elsewhere"
        other.mkdir()
        Image.open(photos / "camera.png").save(other / "camera.png")
        args = [good, str(other / "camera.png")]
    elif case == "output is a file":
        out.write_text("I am a file")
    elif case == "output not writable":  # a pseudo file system: not writable even by root
        out = Path("/proc/virolbi-out")
    elif case == "output under a file":
        (tmp_path / "plain").write_text("a file")
        out = tmp_path / "plain" / "out"
    report = tmp_path / "r.json"
    if case == "report is a folder":
        report.mkdir()
    code = main(["smooth", *args, "--output-dir", str(out), "--report", str(report), *extra])
    _error_line(capsys, code, "smooth", match)
    if case == "output is a file":
        assert out.read_text() == "I am a file"
    else:
        assert _files(out) == []
    assert case == "report is a folder" or not report.exists()


def test_failure_midway_leaves_only_complete_files(photos, tmp_path, capsys, monkeypatch):
    """The second size group fails: the first group's images are complete files, nothing else
    (no temporary file, no report) is left."""
    real = virolbi.smooth
    calls = []

    def flaky(x, *a, **kw):
        calls.append(x.shape)
        if len(calls) == 2:
            raise virolbi.InputError("simulated failure")
        return real(x, *a, **kw)

    monkeypatch.setattr(virolbi, "smooth", flaky)
    out = tmp_path / "out"
    code = main(["smooth", str(photos / "camera.png"), str(photos / "coffee.png"),
                 "--output-dir", str(out), "--report", str(out / "report.json")])
    _error_line(capsys, code, "smooth", "simulated failure")
    assert _files(out) == ["camera_s0.60.png"]
    assert _read(out / "camera_s0.60.png").shape == (SIZE, SIZE)


def test_subprocess_python_m_virolbi_cli(photos, tmp_path):
    """A real process (one start-up only: importing torch is slow on shared machines): a bad
    input in the middle of good ones is one line on stderr, exit code 2, no traceback, no output."""
    a = np.full((4, 4), 0.5)
    a[2, 2] = np.inf
    np.save(tmp_path / "inf.npy", a)
    out = tmp_path / "out"
    bad = subprocess.run([sys.executable, "-m", "virolbi.cli", "smooth", str(photos / "camera.png"),
                          str(tmp_path / "inf.npy"), str(photos / "coins_gray.npy"),
                          "--output-dir", str(out)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2, bad.stderr
    expected = f"virolbi smooth: error: {tmp_path / 'inf.npy'} contains NaN or Inf values"
    assert bad.stderr.strip() == expected
    assert bad.stdout == ""
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# virolbi path
# ------------------------------------------------------------------------------------------------

def test_path_end_to_end(photos, tmp_path, capsys):
    fig = tmp_path / "figs" / "path.png"
    code = main(["path", str(photos / "camera.png"), str(photos / "coffee.png"),
                 str(photos / "astronaut.jpg"), "--levels", "0.6,0.2,1.0", "--output", str(fig),
                 "--report", str(tmp_path / "path.json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "levels 0.2, 0.6, 1" in captured.out
    assert _files(fig.parent) == ["path.png"]
    with Image.open(fig) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 200
    report = json.loads((tmp_path / "path.json").read_text())
    assert report["levels"] == [0.2, 0.6, 1.0]
    recs = report["images"]
    assert [Path(r["input"]).name for r in recs] == ["camera.png", "coffee.png", "astronaut.jpg"]
    for r in recs:
        assert r["levels"] == [0.2, 0.6, 1.0] and all(r["reached"])
        its = r["iterations"]
        assert its[0] <= its[1] <= its[2]  # the path runs coarse to fine
        assert r["components"][0] < r["components"][1] <= r["components"][2]
    x = _as_chw(_read(photos / "coffee.png"))
    _, info = virolbi.image_path(x, (0.2, 0.6, 1.0), return_info=True)
    assert recs[1]["iterations"] == [int(v) for v in info.iterations[:, 0]]


@pytest.mark.parametrize("extra, match", [
    (["--levels", "0.2,abc"], "--levels must be comma-separated numbers in (0, 1]"),
    (["--levels", ""], "levels must be comma-separated numbers"),
    (["--levels", "0.2,1.5"], "each of --levels must be in (0, 1], got 1.5"),
    (["--levels", "0,0.5"], "each of --levels must be in (0, 1], got 0.0"),
    (["--output-suffix", ".gif"], "--output must end in one of .png"),
    (["--missing"], "image not found"),
    (["--text"], "cannot read"),
    (["--output-dir"], "is a folder; expected a file name"),
])
def test_path_bad_input(photos, tmp_path, capsys, extra, match):
    fig = tmp_path / "out" / "path.png"
    args = [str(photos / "camera.png")]
    if extra == ["--output-suffix", ".gif"]:
        fig, extra = fig.with_suffix(".gif"), []
    elif extra == ["--missing"]:
        args, extra = args + [str(tmp_path / "missing.png")], []
    elif extra == ["--output-dir"]:
        fig, extra = tmp_path / "out" / "fig.png", []
        fig.mkdir(parents=True)
    elif extra == ["--text"]:
        (tmp_path / "t.png").write_text("hello")
        args, extra = args + [str(tmp_path / "t.png")], []
    code = main(["path", *args, "--output", str(fig), *extra])
    _error_line(capsys, code, "path", match)
    assert _files(tmp_path / "out") == ([] if not fig.is_dir() else ["fig.png"])


# ------------------------------------------------------------------------------------------------
# virolbi demo
# ------------------------------------------------------------------------------------------------

def test_demo_end_to_end_and_extra_steps(tmp_path, capsys, monkeypatch):
    from virolbi.cli import demo

    seen = {}

    def extra_step(output_dir, report):
        seen["images"] = {k: v.size for k, v in report.images.items()}
        seen["before"] = sorted(report.files)
        report.sections.append("## Extra step\n\nadded by a later feature")
        report.data["extra"] = {"ok": True}

    monkeypatch.setattr(demo, "DEMO_STEPS", demo.DEMO_STEPS + [extra_step])
    out = tmp_path / "demo"
    code = main(["demo", "--output-dir", str(out), "--size", "24", "--images", "camera,astronaut",
                 "--levels", "0.3,1.0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"demo written to {out}" in captured.out
    assert _files(out) == ["astronaut_s0.60.png", "camera_s0.60.png", "noise.png", "path.png",
                           "report.json", "report.md"]
    assert seen["images"] == {"camera": (1, 24, 24), "astronaut": (3, 24, 24)}
    assert seen["before"] == ["astronaut_s0.60.png", "camera_s0.60.png", "noise.png", "path.png"]
    assert _read(out / "camera_s0.60.png").shape == (24, 24)
    assert _read(out / "astronaut_s0.60.png").shape == (24, 24, 3)

    md = (out / "report.md").read_text()
    assert md.startswith("# ViRoLBI demo")
    assert "![image path](path.png)" in md
    assert "| image | size (H×W×C) | iterations at levels 0.3 / 0.6 / 1 | seconds |" in md
    assert "| camera | 24×24×1 |" in md and "| astronaut | 24×24×3 |" in md
    assert md.index("## Image path") < md.index("## Extra step")

    rep = json.loads((out / "report.json").read_text())
    assert rep["options"]["levels"] == [0.3, 0.6, 1.0]  # the smoothing level is added
    assert rep["steps"] == ["image_path_step", "noise_step", "extra_step"]
    assert rep["results"]["extra"] == {"ok": True}
    rows = rep["results"]["image_path"]["images"]
    assert [r["image"] for r in rows] == ["camera", "astronaut"]
    for r in rows:
        assert len(r["iterations"]) == 3 and r["seconds"] > 0 and r["kpixels_per_second"] > 0
        assert f"| {r['iterations'][0]} / {r['iterations'][1]} / {r['iterations'][2]} (stop) |" in md
    # the smoothed photograph is the library's result on the downscaled photograph
    cam = demo.sample_photographs(["camera"], 24)["camera"].image
    diff = np.abs(_read(out / "camera_s0.60.png").astype(int)
                  - _expected_png(cam, 0.6).astype(int))
    assert diff.max() <= 1


def test_demo_default_images_and_folder():
    from virolbi.cli import build_parser, demo

    args = build_parser().parse_args(["demo"])
    assert args.output_dir == "virolbi-demo" and args.size == 128
    assert args.images.split(",") == list(demo.DEFAULT_IMAGES) and len(demo.DEFAULT_IMAGES) >= 3
    photos = demo.sample_photographs(demo.DEFAULT_IMAGES, 16)
    assert all(max(im.size[1:]) == 16 for im in photos.values())
    assert photos["camera"].size[0] == 1 and photos["astronaut"].size[0] == 3


def test_demo_without_scikit_image(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    code = main(["demo", "--output-dir", str(tmp_path / "demo")])
    _error_line(capsys, code, "demo", "pip install virolbi[demo]")
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("extra, match", [
    (["--images", "camera,lena"], "unknown sample image 'lena'"),
    (["--images", " , "], "--images must name at least one sample photograph"),
    (["--size", "1"], "--size must be in [2, 4096], got 1"),
    (["--sparsity", "0"], "sparsity must be in (0, 1], got 0.0"),
    (["--levels", "x"], "levels must be comma-separated numbers"),
])
def test_demo_bad_input(tmp_path, capsys, extra, match):
    code = main(["demo", "--output-dir", str(tmp_path / "demo"), "--size", "8", *extra])
    _error_line(capsys, code, "demo", match)
    assert not (tmp_path / "demo").exists()


# ------------------------------------------------------------------------------------------------
# --help
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command, words", [
    ("smooth", ["--sparsity", "--output-dir", "--report", "--per-channel", "--solver", "imex"]),
    ("path", ["--levels", "--output", "--kappa", "--projection"]),
    ("demo", ["--output-dir", "virolbi-demo", "--size", "--images", "astronaut"]),
])
def test_help(command, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: virolbi {command}")
    for w in words:
        assert w in text, w


def test_demo_noise_step_improves_psnr(tmp_path, capsys):
    """The demo's noise step: smoothing a Gaussian-noised photograph brings it closer to the clean
    one (PSNR rises), as paper §4.1 relies on."""
    import json

    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--size", "48", "--images", "astronaut"]) == 0
    rows = json.loads((out / "report.json").read_text())["results"]["noise"]["images"]
    assert rows[0]["psnr_smoothed"] > rows[0]["psnr_noisy"] + 1.0
    assert "## Noise" in (out / "report.md").read_text()


def test_16_bit_gray_png_is_scaled_not_clipped_and_stays_gray(photos, tmp_path, capsys):
    """A real 16-bit PNG (mode I;16): Pillow's convert() saturates it to white."""
    from virolbi.io import read_image

    gray8 = _read(photos / "camera.png")
    path16 = tmp_path / "deep.png"
    Image.fromarray(gray8.astype(np.uint16) * 257).save(path16)  # the same picture on 16 bits
    with Image.open(path16) as img:
        assert img.mode.startswith("I;16") or img.mode == "I"
    assert np.array_equal(read_image(path16), gray8)
    code = main(["smooth", str(path16), "--sparsity", "0.6", "--output-dir", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    with Image.open(tmp_path / "o" / "deep_s0.60.png") as img:
        assert img.mode == "L"
        out = np.array(img)
    assert np.array_equal(out, _expected_png(_as_chw(gray8), 0.6))


_FULL_DISK = """
import resource, signal, sys
import torch, virolbi
virolbi.smooth(torch.rand(1, 3, 8, 8), 0.6)  # compile (and cache) before the limit
from virolbi.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
sys.exit(main(["smooth", sys.argv[1], "--sparsity", "0.6", "--output-dir", sys.argv[2]]))
"""


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(photos, tmp_path):
    """A real write failure (RLIMIT_FSIZE: every file is cut at 64 bytes, as on a full disk)."""
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-c", _FULL_DISK, str(photos / "camera.png"), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virolbi smooth: error: File too large")
    assert "Traceback" not in res.stderr
    assert _files(out) == []  # no half-written file, no temporary
    # issue #30 item 5: the line names the file being written, and smooth does not resume
    assert f"writing {out / 'camera_s0.60.png'}:" in lines[0]
    assert "resume" not in lines[0] and "continue" not in lines[0]


def test_large_images_are_announced_with_size_memory_and_time(photos, tmp_path, capsys,
                                                              monkeypatch):
    """A large image says what is coming before the work and switches the path's progress on
    (threshold lowered here so that a small photograph counts as large)."""
    from virolbi.cli import _common

    monkeypatch.setattr(_common, "LARGE_MEGAPIXELS", 0.001)
    code = main(["smooth", str(photos / "camera.png"), "--sparsity", "0.6", "--output-dir",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0, err
    first = err.splitlines()[0]
    assert first.startswith(f"virolbi smooth: note: {photos / 'camera.png'} is ")
    assert "GB of memory" in first and "per core at level 0.6; progress below" in first
    options: dict = {}
    _common.announce_large_images("smooth", [], options, 0.6)
    assert options == {}  # nothing large: no note, no progress


def test_the_time_estimate_follows_the_level_and_the_measured_rates():
    """Linear between the measured levels, clamped outside; a 1 MP RGB image at 0.6 is announced
    with half to twice the measured seconds."""
    from virolbi.cli import _common

    rates = _common.SECONDS_PER_MEGAPIXEL
    assert _common.seconds_per_megapixel(0.6) == rates[0.6]
    assert _common.seconds_per_megapixel(0.45) == (rates[0.3] + rates[0.6]) / 2
    assert _common.seconds_per_megapixel(0.1) == rates[0.3]
    assert rates[0.3] < rates[0.6] < rates[0.9]  # higher levels need longer paths


@pytest.mark.parametrize("extra, match", [
    (["--kappa", "0"], "--kappa must be a finite number > 0, got 0"),
    (["--nu", "-1"], "--nu must be a finite number > 0, got -1"),
    (["--max-iter", "0"], "--max-iter must be a finite number > 0, got 0"),
    (["--sparsity", "2"], "--sparsity must be in (0, 1], got 2"),
])
def test_messages_name_the_option_the_user_typed(photos, tmp_path, capsys, extra, match):
    code = main(["smooth", str(photos / "camera.png"), "--output-dir", str(tmp_path / "o"), *extra])
    _error_line(capsys, code, "smooth", match)


def test_transparency_is_announced_once_and_gray_with_alpha_stays_gray(photos, tmp_path,
                                                                       capsys):
    """Issue #30 item 7: RGBA, LA and palette images lost their alpha silently (and LA became
    RGB). One note names every file whose transparency is dropped; LA is smoothed as gray; an
    opaque alpha band (chelsea.png) loses nothing and is not named."""
    gray = np.asarray(Image.open(photos / "camera.png"))
    alpha = np.full(gray.shape, 255, np.uint8)
    alpha[:5, :5] = 0
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(tmp_path / "gray_alpha.png")
    rgb = np.asarray(Image.open(photos / "coffee.png"))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA").save(
        tmp_path / "rgba.png")
    palette = Image.open(photos / "coffee.png").convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    palette.save(tmp_path / "palette.png", transparency=palette.info["transparency"])
    inputs = [tmp_path / "gray_alpha.png", tmp_path / "rgba.png", tmp_path / "palette.png",
              photos / "chelsea.png"]
    out = tmp_path / "out"
    assert main(["smooth", *map(str, inputs), "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("virolbi smooth: note: transparency is not smoothed")
    named = err[0].rsplit("(", 1)[1].rstrip(")").split(", ")
    assert named == [str(p) for p in inputs[:3]]
    with Image.open(out / "gray_alpha_s0.60.png") as img:
        assert img.mode == "L"
        assert np.array_equal(np.array(img), _expected_png(_as_chw(gray), 0.6))
    for name in ("rgba", "palette", "chelsea"):
        with Image.open(out / f"{name}_s0.60.png") as img:
            assert img.mode == "RGB"


def test_demo_says_what_level_one_numbers_are(tmp_path, capsys):
    """Issue #30 item 7: level 1.0 got the stop point's iterations and sparsity without a word.
    Level 1's image is the photograph itself (the path's t -> infinity limit); its iterations are
    those of the last level below 1 (where the run stopped), and the report says so."""
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--size", "24", "--images", "camera",
                 "--levels", "0.3,1.0"]) == 0
    capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    row = rep["results"]["image_path"]["images"][0]
    iters, reached = row["iterations"], row["sparsity_reached"]
    assert iters[-1] == iters[-2] and reached[-1] < 1.0        # the stop point's numbers
    assert "photograph itself" in rep["results"]["image_path"]["level_1"]
    md = (out / "report.md").read_text()
    assert f"| {iters[0]} / {iters[1]} / {iters[2]} (stop) |" in md
    assert "Level 1 is the limit t → ∞: its image is the photograph itself" in md
    assert f"camera {reached[-1]:.3f}" in md

    assert main(["demo", "--output-dir", str(tmp_path / "d2"), "--size", "24", "--images",
                 "camera", "--levels", "0.3,0.8"]) == 0        # no level 1: nothing to say
    capsys.readouterr()
    assert "Level 1" not in (tmp_path / "d2" / "report.md").read_text()
    assert "level_1" not in json.loads((tmp_path / "d2" / "report.json").read_text())[
        "results"]["image_path"]
