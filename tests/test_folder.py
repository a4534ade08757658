"""data=folder: real image files decoded by torchvision.io, cached, refreshed when the folder changes."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch
from torchvision.io import encode_jpeg, write_file, write_png

from conftest import MNIST_DIR, ROOT, cli, make_config, read_metrics

spec = importlib.util.spec_from_file_location("mnist_png", ROOT / "scripts" / "mnist_png.py")
mnist_png = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mnist_png)


def load_folder(root, *overrides, cache):
    from trainrun.data import load
    from trainrun.data.load import Shared

    sys.modules["trainrun.data.load"].SHARED = Shared()  # each load a new command's: the cache on disk is tested
    cfg = make_config(["data=folder", f"data.root={root}", f"data.cache_dir={cache}", "data.test_fraction=0.2",
                       *overrides])
    return load(cfg.data, 0, torch.device("cpu"), prenormalize=False)


@pytest.fixture(scope="module")
def mnist_pngs(tmp_path_factory):
    if not MNIST_DIR.is_dir():
        pytest.skip("../shared/data/mnist is not here")
    out = tmp_path_factory.mktemp("mnist_png")
    mnist_png.write_pngs(out, limit=400)
    return out


@pytest.mark.slow  # everyday tier under 10 min: 15 s of a worker here
def test_real_mnist_pngs_train_and_match_the_idx_pixels(tmp_path, mnist_pngs):
    from trainrun.data.shipped import read_idx

    data = load_folder(mnist_pngs, cache=tmp_path / "cache")
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.class_names == [str(d) for d in range(10)]
    assert len(data.train) + len(data.val) + len(data.test) == 400
    original = torch.from_numpy(read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:400].copy()).float() / 255
    pixels = torch.cat([data.fetch(s, slice(None))[0] for s in (data.train, data.val, data.test)]).squeeze(1)
    assert {tuple(p.flatten()[:50].tolist()) for p in pixels} <= {tuple(p.flatten()[:50].tolist()) for p in original}
    result = cli("data=folder", f"data.root={mnist_pngs}", "model=cnn", "trainer.epochs=6", "logger.enabled=false",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_metrics(next(tmp_path.glob("outputs/*/*")))["test/acc"] > 0.7


def write_mixed_folder(root):
    """JPEG and PNG, grayscale and colour, three sizes: what a real photo folder looks like."""
    torch.manual_seed(0)
    for label, name in enumerate(["cats", "dogs"]):
        (root / name).mkdir(parents=True)
        for i in range(12):
            size = (20 + 4 * (i % 3), 24)
            colour = i % 4 != 0  # a quarter grayscale
            image = torch.randint(0, 60, (3 if colour else 1, *size), dtype=torch.uint8) + 150 * label
            if i % 2:
                write_file(str(root / name / f"{i}.jpg"), encode_jpeg(image, quality=95))
            else:
                write_png(image, str(root / name / f"{i}.png"))


def test_mixed_sizes_and_modes_need_a_size_and_take_the_majority_channels(tmp_path):
    from trainrun.errors import ConfigError

    write_mixed_folder(tmp_path / "photos")
    with pytest.raises(ConfigError, match=r"different sizes \(20x24, 24x24, 28x24\); set data.image_size"):
        load_folder(tmp_path / "photos", cache=tmp_path / "cache")
    data = load_folder(tmp_path / "photos", "data.image_size=[16,16]", cache=tmp_path / "cache")
    assert data.input_shape == (3, 16, 16) and data.class_names == ["cats", "dogs"]
    gray = load_folder(tmp_path / "photos", "data.image_size=[16,16]", "data.channels=1", cache=tmp_path / "cache")
    assert gray.input_shape == (1, 16, 16)
    # the two classes differ by brightness: the labels followed the folders
    x = torch.cat([data.fetch(s, slice(None))[0] for s in (data.train, data.val, data.test)])
    y = torch.cat([data.train.y, data.val.y, data.test.y])
    assert float(x[y == 1].mean()) > float(x[y == 0].mean()) + 0.4


def test_the_cache_is_reused_and_refreshed_when_a_file_changes(tmp_path, monkeypatch):
    from trainrun.data import folder

    write_mixed_folder(tmp_path / "photos")
    decodes = []
    real = folder.decode_all
    monkeypatch.setattr(folder, "decode_all", lambda *a: decodes.append(1) or real(*a))
    first = load_folder(tmp_path / "photos", "data.image_size=[16,16]", cache=tmp_path / "cache")
    again = load_folder(tmp_path / "photos", "data.image_size=[16,16]", cache=tmp_path / "cache")
    assert len(decodes) == 1 and torch.equal(first.train.x, again.train.x)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    changed = tmp_path / "photos" / "cats" / "0.png"
    write_png(torch.full((1, 20, 24), 255, dtype=torch.uint8), str(changed))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    load_folder(tmp_path / "photos", "data.image_size=[16,16]", cache=tmp_path / "cache")
    assert len(decodes) == 2
    load_folder(tmp_path / "photos", "data.image_size=[12,12]", cache=tmp_path / "cache")  # other settings: decode
    assert len(decodes) == 3


def test_given_splits_are_taken_as_they_are(tmp_path):
    write_mixed_folder(tmp_path / "d" / "train")
    write_mixed_folder(tmp_path / "d" / "test")
    data = load_folder(tmp_path / "d", "data.image_size=[8,8]", "data.val_fraction=0.25", cache=tmp_path / "cache")
    assert len(data.test) == 24 and len(data.train) + len(data.val) == 24 and len(data.val) == 6


@pytest.mark.parametrize("setup,args,message", [
    (lambda r: r.mkdir(), [], "has no class sub-folders"),
    (lambda r: (r / "only").mkdir(parents=True), [], "has one class sub-folder (only): nothing to tell apart"),
    (lambda r: [(r / c).mkdir(parents=True) for c in ("a", "b")], [], "class folder {r}/a holds no images"),
    (lambda r: (write_mixed_folder(r), (r / "cats" / "broken.png").write_bytes(b"not a png")),
     ["data.image_size=[8,8]"], "{r}/cats/broken.png is not a readable image"),
    (lambda r: None, [], "data.root={r}: no such folder"),
])
@pytest.mark.slow  # everyday tier under 10 min: 27 s of a worker here
def test_bad_folders_are_one_line(tmp_path, setup, args, message):
    root = tmp_path / "photos"
    setup(root)
    result = cli("data=folder", f"data.root={root}", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message.format(r=root) in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "outputs").exists()


def test_a_bad_file_can_be_skipped(tmp_path, caplog):
    write_mixed_folder(tmp_path / "photos")
    (tmp_path / "photos" / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with caplog.at_level("WARNING", logger="trainrun"):
        data = load_folder(tmp_path / "photos", "data.image_size=[8,8]", "data.on_bad_file=skip", cache=tmp_path / "c")
    assert len(data.train) + len(data.val) + len(data.test) == 24
    assert "skipped 1 unreadable files (the first:" in caplog.text and "broken.jpg" in caplog.text


def test_bmp_files_decode_to_the_same_pixels_as_pngs(tmp_path, mnist_pngs):
    """torchvision cannot decode BMP; PIL (its dependency) does, so a folder of BMPs is read like one of PNGs."""
    from PIL import Image

    from trainrun.data.folder import decode_one

    for digit in ("3", "8"):
        (tmp_path / "bmp" / digit).mkdir(parents=True)
        for png in sorted((mnist_pngs / digit).glob("*.png"))[:20]:
            Image.open(png).save(tmp_path / "bmp" / digit / f"{png.stem}.bmp")
            rgb = Image.open(png).convert("RGB")
            rgb.save(tmp_path / f"{png.stem}-rgb.bmp")
            assert torch.equal(decode_one(tmp_path / "bmp" / digit / f"{png.stem}.bmp"), decode_one(png))
            assert torch.equal(decode_one(tmp_path / f"{png.stem}-rgb.bmp"), decode_one(png).expand(3, -1, -1))
    data = load_folder(tmp_path / "bmp", cache=tmp_path / "cache")
    assert data.input_shape == (1, 28, 28) and len(data.train) + len(data.val) + len(data.test) == 40
    (tmp_path / "bmp" / "3" / "broken.bmp").write_bytes(b"BM not really")
    with pytest.raises(Exception, match="broken.bmp is not a readable image"):
        load_folder(tmp_path / "bmp", cache=tmp_path / "cache2")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".gif", ".tiff"])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_every_listed_format_and_mode_decodes_to_the_pixels_pil_reads(tmp_path, suffix, mode):
    """A real photograph (scikit-learn's sample), saved by PIL in each format and mode, read back by trainrun as PIL
    reads it: gray as one channel, colour as three (alpha dropped, a palette expanded)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from trainrun.data.folder import decode_one

    photo = Image.fromarray(load_sample_image("flower.jpg")[100:148, 200:264])
    image = photo.convert(mode)
    if suffix == ".jpg" and mode in ("RGBA", "P"):
        image = image.convert("RGB")  # JPEG holds neither alpha nor a palette
    path = tmp_path / f"image{suffix}"
    image.save(path)
    with Image.open(path) as saved:
        expected = np.asarray(saved.convert("L" if saved.mode in ("L", "1") else "RGB"))
    decoded = decode_one(path)
    assert not isinstance(decoded, str), decoded
    expected = torch.from_numpy(expected.copy())
    expected = expected.unsqueeze(0) if expected.dim() == 2 else expected.permute(2, 0, 1)
    assert decoded.shape == expected.shape
    assert (decoded.int() - expected.int()).abs().max() <= (2 if suffix == ".jpg" else 0)  # JPEG: decoders' rounding


def test_a_jpegs_exif_orientation_is_applied_and_a_16_bit_png_read_as_8_bits(tmp_path):
    """A phone's portrait photo is stored sideways with an EXIF orientation tag: decoded upright, as PIL's
    exif_transpose shows it. A 16-bit gray PNG: its top 8 bits."""
    import numpy as np
    from PIL import Image, ImageOps
    from sklearn.datasets import load_sample_image

    from trainrun.data.folder import decode_one

    photo = Image.fromarray(load_sample_image("china.jpg")[0:48, 0:80])  # wider than tall
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    photo.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "portrait.jpg") as saved:
        upright = np.asarray(ImageOps.exif_transpose(saved).convert("RGB"))
    decoded = decode_one(tmp_path / "portrait.jpg")
    assert decoded.shape == (3, 80, 48)  # upright: taller than wide
    assert np.abs(decoded.permute(1, 2, 0).numpy().astype(int) - upright.astype(int)).max() <= 2  # JPEG decoders' rounding
    deep = (np.asarray(photo.convert("L")).astype(np.uint16) * 257)  # 16-bit gray, top byte = the 8-bit value
    Image.fromarray(deep).save(tmp_path / "deep.png")
    decoded = decode_one(tmp_path / "deep.png")
    assert decoded.dtype == torch.uint8 and decoded.shape == (1, 48, 80)
    assert np.array_equal(decoded[0].numpy(), np.asarray(photo.convert("L")))
