"""Datasets: every source format, the cache of decoded images, the validation slice, bad input,
batches and tensor augmentation."""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from nas.errors import DataError
from nas.train import BatchLoader, ImageSet, Preprocess, detect_format, load_dataset
from nas.train import _formats as data_mod


def load(src, tmp_path, **kw):
    kw.setdefault("val_size", 1)
    return load_dataset(src, cache_dir=tmp_path / "cache", **kw)


# ---------------------------------------------------------------------- formats
def test_image_folder_without_splits(image_folder, tmp_path):
    root = image_folder(n=4, size=(10, 12))
    d = load(root, tmp_path, val_size=3)
    assert d.format == "folder"
    assert d.classes == ("cat", "dog", "emu")
    assert d.train.x.shape == (9, 10, 12, 3)
    assert d.train.x.dtype == np.uint8
    assert len(d.val) == 3
    assert d.test is None
    assert sorted(np.bincount(np.concatenate([d.train.y, d.val.y]))) == [4, 4, 4]


def test_image_folder_with_train_and_test(image_folder, tmp_path):
    d = load(image_folder(splits=True, n=4, ext="jpg"), tmp_path)
    assert len(d.train) + len(d.val) == 12
    assert d.test is not None
    assert len(d.test) == 6
    assert set(d.test.y.tolist()) == {0, 1, 2}


def test_tar_gz_matches_the_folder_it_was_made_from(image_folder, data_files, tmp_path):
    root = image_folder(splits=True, n=3)
    tgz = data_files.tar_folder(root, tmp_path / "set.tar.gz", arcname="cifar10")
    a, b = load(root, tmp_path), load(tgz, tmp_path)
    assert b.format == "tar"
    assert detect_format(tgz) == "tar"
    assert b.classes == a.classes
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    np.testing.assert_array_equal(a.val.y, b.val.y)


@pytest.mark.parametrize("kind", ["cifar-python", "cifar-binary"])
@pytest.mark.parametrize("packed", [False, True])
def test_cifar_releases(kind, packed, data_files, tmp_path):
    writer = data_files.cifar_python if kind == "cifar-python" else data_files.cifar_binary
    d = writer(tmp_path / "raw", per_batch=6)
    src = d
    if packed:
        src = tmp_path / "cifar.tar.gz"
        with tarfile.open(src, "w:gz") as tf:
            tf.add(d, arcname=d.name)
    ds = load(src, tmp_path, val_size=5)
    assert ds.format == kind
    assert ds.train.x.shape == (25, 32, 32, 3)
    assert len(ds.val) == 5
    assert ds.test is not None
    assert len(ds.test) == 6
    if kind == "cifar-python":
        assert ds.classes[0] == "c0"
    else:
        assert ds.classes[0] == "airplane"


def test_cifar_binary_pixels_are_channel_planes(data_files, tmp_path):
    d = data_files.cifar_binary(tmp_path / "raw", per_batch=1)
    rec = np.frombuffer((d / "test_batch.bin").read_bytes(), dtype=np.uint8)
    ds = load(d, tmp_path)
    red_plane = rec[1:1025].reshape(32, 32)
    np.testing.assert_array_equal(ds.test.x[0, :, :, 0], red_plane)
    assert ds.test.y[0] == rec[0]


def test_cifar_python_refuses_arbitrary_pickles(data_files, tmp_path):
    d = data_files.cifar_python(tmp_path / "raw")
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": os.system, b"labels": []}))
    with pytest.raises(DataError, match="data_batch_3"):
        load(d, tmp_path)


def test_npz_nchw_and_nhwc(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    y = np.arange(20) % 4
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    np.savez(tmp_path / "b.npz", x_train=x.transpose(0, 2, 3, 1), y_train=y)
    a, b = load(tmp_path / "a.npz", tmp_path, val_size=4), load(tmp_path / "b.npz", tmp_path,
                                                                   val_size=4)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert a.train.x.shape == (16, 8, 8, 3)
    assert a.num_classes == 4
    assert a.test is not None
    assert b.test is None


def test_digits_are_upscaled_to_the_requested_size(tmp_path):
    d = load_dataset("digits", val_size=100, image_size=24)
    assert d.format == "digits"
    assert d.num_classes == 10
    assert d.train.x.shape[1:] == (24, 24, 3)
    assert len(d.train) + len(d.val) + len(d.test) == 1797


# ---------------------------------------------------------------------- cache, slicing
def test_decoded_images_are_cached_and_the_cache_follows_the_source(image_folder, tmp_path,
                                                                     monkeypatch):
    root = image_folder(n=3)
    first = load(root, tmp_path)
    assert list((tmp_path / "cache").glob("*.npz"))

    def boom(*a, **k):
        raise AssertionError("decoded again")

    with monkeypatch.context() as m:
        m.setattr(data_mod, "_decode", boom)
        again = load(root, tmp_path)  # from the cache: no decoding
    np.testing.assert_array_equal(first.train.x, again.train.x)
    # a changed source is decoded again
    f = root / "cat" / "0000.png"
    from PIL import Image

    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(f)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    changed = load(root, tmp_path)
    assert not np.array_equal(changed.train.x, first.train.x) or not np.array_equal(
        changed.val.x, first.val.x)


def test_validation_slice_is_fixed_and_disjoint_from_training(tmp_path):
    n = 50
    x = np.zeros((n, 4, 4, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)  # each image carries its index
    np.savez(tmp_path / "ids.npz", x_train=x, y_train=np.zeros(n, np.int64))
    a = load(tmp_path / "ids.npz", tmp_path, val_size=10, val_seed=3)
    b = load(tmp_path / "ids.npz", tmp_path, val_size=10, val_seed=3)
    c = load(tmp_path / "ids.npz", tmp_path, val_size=10, val_seed=4)
    ids = lambda s: set(s.x[:, 0, 0, 0].tolist())  # noqa: E731
    assert ids(a.val) == ids(b.val) != ids(c.val)
    assert not ids(a.val) & ids(a.train)
    assert len(ids(a.train)) == 40
    limited = load(tmp_path / "ids.npz", tmp_path, val_size=10, val_seed=3, train_limit=7)
    assert ids(limited.val) == ids(a.val)
    assert len(limited.train) == 7
    assert a.key == b.key != limited.key


# ---------------------------------------------------------------------- bad input
def test_missing_source_names_the_path(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nowhere"):
        load(tmp_path / "nowhere", tmp_path)


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
    with pytest.raises(DataError, match=r"broken.tar.gz"):
        load(bad, tmp_path, format="tar")


def test_truncated_archive(image_folder, data_files, tmp_path):
    tgz = data_files.tar_folder(image_folder(n=4), tmp_path / "t.tar.gz", arcname="x")
    raw = tgz.read_bytes()
    tgz.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"t.tar.gz"):
        load(tgz, tmp_path)


def test_corrupt_image_names_the_file(image_folder, tmp_path):
    root = image_folder(n=2)
    (root / "dog" / "0001.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"dog/0001\.png"):
        load(root, tmp_path)


def test_empty_class_folder(image_folder, tmp_path):
    root = image_folder(n=2)
    (root / "yak").mkdir()
    with pytest.raises(DataError, match=r"class folder .*yak has no images"):
        load(root, tmp_path)


def test_empty_class_folder_in_an_archive(image_folder, data_files, tmp_path):
    root = image_folder(n=2)
    (root / "yak").mkdir()
    tgz = data_files.tar_folder(root, tmp_path / "e.tar.gz", arcname="set")
    with pytest.raises(DataError, match=r"e.tar.gz:set/yak has no images"):
        load(tgz, tmp_path)


def test_image_of_another_size_names_the_file(image_folder, tmp_path):
    from PIL import Image

    root = image_folder(n=2, size=(12, 12))
    Image.fromarray(np.zeros((9, 12, 3), np.uint8)).save(root / "emu" / "0009.png")
    with pytest.raises(DataError, match=r"emu/0009\.png is 12x9 px"):
        load(root, tmp_path)


def test_npz_without_the_expected_arrays(tmp_path):
    np.savez(tmp_path / "w.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"w.npz has no array 'x_train'"):
        load(tmp_path / "w.npz", tmp_path)


def test_truncated_cifar_binary_batch(data_files, tmp_path):
    d = data_files.cifar_binary(tmp_path / "raw")
    f = d / "data_batch_2.bin"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"data_batch_2.bin .*truncated"):
        load(d, tmp_path)


def test_val_size_larger_than_the_training_set(image_folder, tmp_path):
    with pytest.raises(DataError, match="val_size must be in"):
        load(image_folder(n=2), tmp_path, val_size=6)


# ---------------------------------------------------------------------- batches
def test_batch_loader_shards_are_disjoint_and_even():
    data = ImageSet(np.zeros((23, 4, 4, 3), np.uint8), np.arange(23))
    shards = [BatchLoader(data, 4, shuffle=True, seed=1, drop_last=True, rank=r, world_size=2)
              for r in (0, 1)]
    seen = [torch.cat([y for _, y in s.epoch(5)]).tolist() for s in shards]
    assert len(shards[0]) == len(shards[1]) == 2
    assert not set(seen[0]) & set(seen[1])
    order_a = [y.tolist() for _, y in shards[0].epoch(5)]
    order_b = [y.tolist() for _, y in shards[0].epoch(6)]
    assert order_a != order_b  # a new order each epoch
    assert [y.tolist() for _, y in shards[0].epoch(5)] == order_a  # and a seeded one


def test_preprocess_resizes_normalises_and_augments():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (6, 3, 12, 12), dtype=np.uint8))
    pre = Preprocess([0.5] * 3, [0.25] * 3, crop_padding=2)
    out = pre(x, 8)
    assert out.shape == (6, 3, 8, 8)
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    same = pre(x, 12)
    torch.testing.assert_close(same, (x.float() / 255 - 0.5) / 0.25)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = pre(x, 12, train=True, generator=g1)
    b = pre(x, 12, train=True, generator=g2)
    torch.testing.assert_close(a, b)  # seeded
    assert not torch.equal(a, same)  # and something moved
    aug = pre.augment(x, torch.Generator().manual_seed(0))
    # a crop of a zero-padded image: every pixel is an original pixel or padding
    assert aug.shape == x.shape
    assert set(aug.unique().tolist()) <= set(x.unique().tolist()) | {0}
