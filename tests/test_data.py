"""Tests of fastres.data: parsers on files built here, downloads from a local HTTP server, the
parsed-data cache, every bad-input error, and prepare(). Real datasets are checked when present.

    OMP_NUM_THREADS=1 python -m pytest tests/test_data.py -q

Nothing here touches the internet: $FASTRES_MIRROR points at a closed local port unless a test
starts its own server, and every test gets its own cache dir and working directory.
"""
import gzip
import hashlib
import http.server
import io
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fastres.data import DeviceData, ImageSet, download_file, load_dataset, prepare, upload
from fastres.data import cifar10, fashion, npz
from fastres.data.device import channel_stats
from fastres.errors import FastresError

REPO_ROOT = Path(__file__).resolve().parents[1]
USER_DATA = os.environ.get("FASTRES_DATA", "")      # read before the fixture below clears it
REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cwd and cache dir, no $FASTRES_DATA, no system dirs, downloads to a closed port."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("FASTRES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTRES_DATA", raising=False)
    monkeypatch.setenv("FASTRES_MIRROR", "http://127.0.0.1:9")     # discard port: refused at once
    monkeypatch.setattr(fashion, "SYSTEM_DIRS", [])


def leftovers(root: Path) -> list[Path]:
    """Temp files or extraction folders left anywhere under root."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".extract-")]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- a local HTTP server -------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))     # the full size, even when truncating
        self.end_headers()
        self.wfile.write(body[:self.server.send_bytes.get(self.path.lstrip("/"), len(body))])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """Serves server.files[name] at server.url/name; server.send_bytes[name] cuts a body short."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.send_bytes = {}, {}
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("FASTRES_MIRROR", httpd.url)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


# --- synthetic dataset files ---------------------------------------------------------------------

def cifar_batch(images: np.ndarray, labels) -> bytes:
    """Official record layout: label byte, then the R, G, B planes row-major."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1).tobytes()


def write_cifar_folder(folder: Path, per_file=3, seed=0):
    """Six small batch files with the official names; returns the expected (train_x, train_y, test_x, test_y)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    parts = []
    for name in cifar10.TRAIN_FILES + [cifar10.TEST_FILE]:
        x = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, per_file)
        (folder / name).write_bytes(cifar_batch(x, y))
        parts.append((x, y))
    return (np.concatenate([x for x, _ in parts[:5]]), np.concatenate([y for _, y in parts[:5]]),
            parts[5][0], parts[5][1])


def tar_gz(folder: Path, arcname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    header = b"".join(int(v).to_bytes(4, "big") for v in (magic, *array.shape))
    return header + array.astype(np.uint8).tobytes()


def fashion_arrays(n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_y": rng.integers(0, 10, n_train).astype(np.uint8),
            "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_y": rng.integers(0, 10, n_test).astype(np.uint8)}


def fashion_files(arrays, compress=True) -> dict[str, bytes]:
    """File name -> contents for the four idx files."""
    return {fashion.FILES[k] + (".gz" if compress else ""): gzip.compress(idx_bytes(a)) if compress else idx_bytes(a)
            for k, a in arrays.items()}


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def npz_arrays(n=6, m=4, shape=(8, 8, 3), seed=0):
    rng = np.random.default_rng(seed)
    return {"train_x": rng.integers(0, 256, (n, *shape), dtype=np.uint8), "train_y": np.arange(n) % 3,
            "test_x": rng.integers(0, 256, (m, *shape), dtype=np.uint8), "test_y": np.arange(m) % 4}


def assert_matches(ds: ImageSet, train_x, train_y, test_x, test_y):
    for got, want in ((ds.train_x, train_x), (ds.train_y, train_y), (ds.test_x, test_x), (ds.test_y, test_y)):
        assert torch.equal(got, torch.from_numpy(np.asarray(want)).to(got.dtype))
    assert ds.train_x.dtype == ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == ds.test_y.dtype == torch.int64


# --- CIFAR-10 ------------------------------------------------------------------------------------

def test_cifar_folder_round_trips_exactly(tmp_path):
    expected = write_cifar_folder(tmp_path / "d" / cifar10.FOLDER)
    ds = load_dataset("cifar10", str(tmp_path / "d"), download=False)
    assert_matches(ds, *expected)
    assert (ds.name, ds.num_classes, ds.classes[0], tuple(ds.train_x.shape)) == ("cifar10", 10, "airplane", (15, 32, 32, 3))


def test_cifar_found_via_env_and_data_dir_may_be_the_folder_itself(tmp_path, monkeypatch):
    expected = write_cifar_folder(tmp_path / "env" / cifar10.FOLDER)
    monkeypatch.setenv("FASTRES_DATA", str(tmp_path / "env"))
    assert_matches(load_dataset("cifar10", download=False), *expected)
    assert_matches(load_dataset("cifar10", str(tmp_path / "env" / cifar10.FOLDER), download=False), *expected)
    for wrong in (tmp_path / "nowhere", tmp_path / "env" / cifar10.FOLDER / "test_batch.bin"):  # absent, a file
        monkeypatch.setenv("FASTRES_DATA", str(wrong))
        with pytest.raises(FastresError, match=r"\$FASTRES_DATA .* is not a directory"):
            load_dataset("cifar10", download=False)


def test_cifar_archive_is_extracted_into_the_cache(tmp_path):
    expected = write_cifar_folder(tmp_path / "src" / cifar10.FOLDER)
    write_files(tmp_path / "d", {cifar10.ARCHIVE: tar_gz(tmp_path / "src" / cifar10.FOLDER, cifar10.FOLDER)})
    assert_matches(load_dataset("cifar10", str(tmp_path / "d"), download=False), *expected)
    assert (tmp_path / "cache" / cifar10.FOLDER / "test_batch.bin").is_file()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "test_batch.bin").unlink(), "is missing test_batch.bin"),
    (lambda f: (f / "data_batch_3.bin").write_bytes(b"\0" * (2 * 3073 + 5)), "not a whole number of 3073-byte records"),
    (lambda f: (f / "data_batch_2.bin").write_bytes(b""), "not a whole number"),
    (lambda f: (f / "data_batch_1.bin").write_bytes(bytes([10]) + b"\0" * 3072), "label 10 is out of range 0..9"),
])
def test_cifar_bad_folder(tmp_path, damage, message):
    write_cifar_folder(tmp_path / cifar10.FOLDER)
    damage(tmp_path / cifar10.FOLDER)
    with pytest.raises(FastresError, match=message):
        load_dataset("cifar10", str(tmp_path), download=False)


def test_cifar_missing_while_offline_says_where_to_put_which_files(tmp_path):
    with pytest.raises(FastresError) as err:
        load_dataset("cifar10", str(tmp_path), download=False)
    msg = str(err.value)
    assert "download is disabled" in msg and "cifar-10-binary.tar.gz" in msg and "cifar-10-batches-bin" in msg
    assert str(tmp_path) in msg and str(tmp_path / "cache") in msg and "\n" not in msg


def test_cifar_unreachable_download_says_where_to_put_files(tmp_path):
    with pytest.raises(FastresError, match=r"download of http://127.0.0.1:9/cifar-10-binary.tar.gz failed.*put cifar-10-binary"):
        load_dataset("cifar10")
    assert leftovers(tmp_path) == []


def test_cifar_truncated_archive_is_an_error_and_leaves_nothing(tmp_path):
    write_cifar_folder(tmp_path / "src" / cifar10.FOLDER)
    archive = tar_gz(tmp_path / "src" / cifar10.FOLDER, cifar10.FOLDER)
    write_files(tmp_path / "d", {cifar10.ARCHIVE: archive[: len(archive) // 2]})
    with pytest.raises(FastresError, match="corrupt, truncated or unsafe archive"):
        load_dataset("cifar10", str(tmp_path / "d"), download=False)
    assert not (tmp_path / "cache" / cifar10.FOLDER).exists() and leftovers(tmp_path) == []


def test_cifar_archive_without_the_folder(tmp_path):
    write_cifar_folder(tmp_path / "src" / "other")
    write_files(tmp_path / "d", {cifar10.ARCHIVE: tar_gz(tmp_path / "src" / "other", "other")})
    with pytest.raises(FastresError, match="does not contain the folder cifar-10-batches-bin/"):
        load_dataset("cifar10", str(tmp_path / "d"), download=False)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "fallback"])
def test_cifar_archive_with_path_traversal_is_refused(tmp_path, monkeypatch, data_filter):
    if not data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no data filter")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    write_files(tmp_path / "d", {cifar10.ARCHIVE: buf.getvalue()})
    with pytest.raises(FastresError, match="unsafe"):
        load_dataset("cifar10", str(tmp_path / "d"), download=False)
    assert not list(tmp_path.rglob("escaped.txt")) and leftovers(tmp_path) == []


def test_cifar_download_verifies_extracts_and_caches(tmp_path, server, monkeypatch, capsys):
    expected = write_cifar_folder(tmp_path / "src" / cifar10.FOLDER)
    server.files[cifar10.ARCHIVE] = tar_gz(tmp_path / "src" / cifar10.FOLDER, cifar10.FOLDER)
    monkeypatch.setattr(cifar10, "MD5", md5(server.files[cifar10.ARCHIVE]))
    assert_matches(load_dataset("cifar10"), *expected)
    assert (tmp_path / "cache" / cifar10.ARCHIVE).read_bytes() == server.files[cifar10.ARCHIVE]
    assert "100%" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


# --- download_file -------------------------------------------------------------------------------

def test_download_file_success(tmp_path, server, capsys):
    server.files["blob.bin"] = data = os.urandom(3 << 20)
    dest = download_file(f"{server.url}/blob.bin", tmp_path / "dl" / "blob.bin", md5(data))
    assert dest.read_bytes() == data and os.listdir(tmp_path / "dl") == ["blob.bin"]
    assert "downloading blob.bin" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("checksum", "checksum mismatch for .*blob.bin: expected MD5 0{32}"),
    ("truncated", "was truncated: got 1000 of 5000 bytes"),
    ("missing", "HTTP 404"),
])
def test_download_file_failures_leave_nothing(tmp_path, server, case, message):
    server.files["blob.bin"] = data = os.urandom(5000)
    expected_md5 = "0" * 32 if case == "checksum" else md5(data)
    if case == "truncated":
        server.send_bytes["blob.bin"] = 1000
    name = "nothing.bin" if case == "missing" else "blob.bin"
    with pytest.raises(FastresError, match=message):
        download_file(f"{server.url}/{name}", tmp_path / "dl" / "blob.bin", expected_md5, progress=False)
    assert os.listdir(tmp_path / "dl") == []


# --- Fashion-MNIST -------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_fashion_idx_round_trips_exactly(tmp_path, compress):
    arrays = fashion_arrays()
    write_files(tmp_path / "d" / "fashion-mnist", fashion_files(arrays, compress))
    ds = load_dataset("fashion-mnist", str(tmp_path / "d"), download=False)
    assert_matches(ds, arrays["train_x"][..., None], arrays["train_y"], arrays["test_x"][..., None], arrays["test_y"])
    assert (ds.name, ds.num_classes, len(ds.classes)) == ("fashion-mnist", 10, 10)


def test_fashion_found_in_system_dir(tmp_path, monkeypatch):
    arrays = fashion_arrays()
    monkeypatch.setattr(fashion, "SYSTEM_DIRS", [write_files(tmp_path / "usr", fashion_files(arrays))])
    assert torch.equal(load_dataset("fashion-mnist", download=False).test_x[..., 0], torch.from_numpy(arrays["test_x"]))


def _header(magic, *dims):
    return b"".join(int(v).to_bytes(4, "big") for v in (magic, *dims))


@pytest.mark.parametrize("name, data, message", [
    ("train-images-idx3-ubyte.gz", gzip.compress(_header(2049, 12)), "not an idx image file .expected magic number 2051"),
    ("train-labels-idx1-ubyte.gz", gzip.compress(_header(2051, 12, 28, 28)), "not an idx label file"),
    ("train-images-idx3-ubyte.gz", gzip.compress(_header(2051, 12, 28, 28) + b"\0" * 100), "truncated"),
    ("t10k-images-idx3-ubyte.gz", gzip.compress(_header(2051, 5, 32, 32) + b"\0" * 5 * 1024), "images are 32x32, expected 28x28"),
    ("train-labels-idx1-ubyte.gz", gzip.compress(_header(2049, 12) + bytes([3] * 11 + [10])), "label 10 is out of range 0..9"),
    ("t10k-labels-idx1-ubyte.gz", gzip.compress(_header(2049, 4) + bytes(4)), "5 images but 4 labels"),
    ("t10k-labels-idx1-ubyte.gz", gzip.compress(_header(2049, 5) + bytes(5))[:-12], "corrupt or truncated"),
    ("t10k-labels-idx1-ubyte.gz", b"not gzip at all", "corrupt or truncated"),
])
def test_fashion_bad_files(tmp_path, name, data, message):
    files = fashion_files(fashion_arrays())
    files[name] = data
    write_files(tmp_path / "d", files)
    with pytest.raises(FastresError, match=message):
        load_dataset("fashion-mnist", str(tmp_path / "d"), download=False)


def test_fashion_data_dir_with_only_some_files_is_an_error_not_a_silent_fallback(tmp_path, monkeypatch):
    arrays = fashion_arrays()
    monkeypatch.setattr(fashion, "SYSTEM_DIRS", [write_files(tmp_path / "usr", fashion_files(arrays))])
    files = fashion_files(arrays)
    del files["t10k-labels-idx1-ubyte.gz"]
    for folder in (tmp_path / "d", tmp_path / "e" / "fashion-mnist"):
        write_files(folder, files)
    with pytest.raises(FastresError, match=r"d holds only some of the Fashion-MNIST files: t10k-labels-idx1-ubyte.gz missing$"):
        load_dataset("fashion-mnist", str(tmp_path / "d"), download=False)
    monkeypatch.setenv("FASTRES_DATA", str(tmp_path / "e"))
    with pytest.raises(FastresError, match=r"e/fashion-mnist holds only some"):
        load_dataset("fashion-mnist", download=False)
    # A partial set in the cache dir is an interrupted download: the full copy elsewhere is used.
    monkeypatch.delenv("FASTRES_DATA")
    write_files(tmp_path / "cache" / "fashion-mnist", files)
    assert torch.equal(load_dataset("fashion-mnist", download=False).test_y, torch.from_numpy(arrays["test_y"]).long())


def test_fashion_missing_while_offline_says_where_to_put_which_files(tmp_path):
    with pytest.raises(FastresError) as err:
        load_dataset("fashion-mnist", download=False)
    msg = str(err.value)
    assert all(f"{stem}.gz" in msg for stem in fashion.FILES.values())
    assert str(tmp_path / "cache" / "fashion-mnist") in msg and "download is disabled" in msg and "\n" not in msg


def test_fashion_download_verifies_each_file(tmp_path, server, monkeypatch):
    arrays = fashion_arrays()
    server.files = fashion_files(arrays)
    monkeypatch.setattr(fashion, "MD5", {name[:-3]: md5(data) for name, data in server.files.items()})
    ds = load_dataset("fashion-mnist")
    assert torch.equal(ds.train_y, torch.from_numpy(arrays["train_y"]).long())
    assert sorted(os.listdir(tmp_path / "cache" / "fashion-mnist")) == sorted(server.files)


def test_fashion_download_with_wrong_checksum(tmp_path, server, monkeypatch):
    server.files = fashion_files(fashion_arrays())
    checksums = {name[:-3]: md5(data) for name, data in server.files.items()}
    checksums["t10k-images-idx3-ubyte"] = "f" * 32
    monkeypatch.setattr(fashion, "MD5", checksums)
    with pytest.raises(FastresError, match="checksum mismatch for .*t10k-images-idx3-ubyte.gz.*put train-images"):
        load_dataset("fashion-mnist")
    assert not (tmp_path / "cache" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").exists()
    assert leftovers(tmp_path) == []


# --- .npz ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1), (8, 8, 3)])
def test_npz_round_trips(tmp_path, shape):
    arrays = npz_arrays(shape=shape)
    np.savez(tmp_path / "toy.npz", **arrays)
    ds = load_dataset(str(tmp_path / "toy.npz"))
    image_shape = shape if len(shape) == 3 else (*shape, 1)
    assert_matches(ds, arrays["train_x"].reshape(-1, *image_shape), arrays["train_y"],
                   arrays["test_x"].reshape(-1, *image_shape), arrays["test_y"])
    assert ds.name == "toy" and ds.num_classes == 4      # max label over train (2) and test (3), + 1


def _npz_case(**changes):
    arrays = npz_arrays()
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


@pytest.mark.parametrize("arrays, message", [
    (_npz_case(test_y=None), "is missing test_y .needs train_x, train_y, test_x, test_y"),
    (_npz_case(train_x=np.zeros((6, 8, 8, 3), np.float32)), "train_x must be uint8 images.*got float32"),
    (_npz_case(test_y=np.zeros(4, np.float64)), "test_y must hold integer labels, got float64"),
    (_npz_case(train_y=np.arange(5)), "train_x has 6 images but train_y has 5 labels"),
    (_npz_case(test_y=np.array([0, 1, -1, 2])), "test_y has negative label -1"),
    (_npz_case(train_y=np.array([0, 1, 2, 3, 4, 10 ** 9])), "label 1000000000 is out of range"),
    (_npz_case(train_x=np.zeros((0, 8, 8, 3), np.uint8), train_y=np.zeros(0, np.int64)), "no images in train_x"),
    (_npz_case(test_x=np.zeros((4, 9, 8, 3), np.uint8)), r"train and test images differ in shape: \(8, 8, 3\) vs \(9, 8, 3\)"),
    (_npz_case(train_x=np.zeros((6, 3, 8, 8), np.uint8), test_x=np.zeros((4, 3, 8, 8), np.uint8)), "C in {1, 3}, got"),
    (_npz_case(train_y=np.zeros((6, 1), np.int64)), "train_y must be a 1-D array"),
    (_npz_case(train_y=np.zeros(6, "m8[s]")), "train_y must hold integer labels, got timedelta64"),
    (_npz_case(test_y=np.array([0, 1, 2, 2 ** 63], np.uint64)), "label 9223372036854775808 is out of range"),
])
def test_npz_bad_contents(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FastresError, match=message):
        load_dataset(str(tmp_path / "bad.npz"))


def test_npz_member_that_is_not_an_array_or_claims_a_huge_shape(tmp_path):
    arrays = npz_arrays()
    with zipfile.ZipFile(tmp_path / "text.npz", "w") as z:      # members named like arrays, holding text
        for key in arrays:
            z.writestr(f"{key}.npy", b"not npy")
    with pytest.raises(FastresError, match="train_x is not a .npy array"):
        load_dataset(str(tmp_path / "text.npz"))
    np.savez(tmp_path / "huge.npz", **arrays)
    with zipfile.ZipFile(tmp_path / "huge.npz") as z:
        members = {name: z.read(name) for name in z.namelist()}
    # The header claims 10^11 images (same header length: the new digits take padding spaces).
    old, new = b"(6, 8, 8, 3), }" + b" " * 10, b"(99999999999, 8, 8, 3), }"
    assert old in members["train_x.npy"]
    members["train_x.npy"] = members["train_x.npy"].replace(old, new)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(FastresError, match="cannot read .*huge.npz"):
        load_dataset(str(tmp_path / "huge.npz"))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    arrays = npz_arrays()
    arrays["train_y"] = np.array([object()] * 6, dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(FastresError, match="cannot read .*evil.npz: Object arrays cannot be loaded"):
        load_dataset(str(tmp_path / "evil.npz"))


def test_npz_not_a_zip_or_absent(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    np.save(tmp_path / "array.npy", np.zeros((6, 8, 8, 3), np.uint8))       # one array, not an archive
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")
    for name in ("junk.npz", "array.npz"):
        with pytest.raises(FastresError, match=f"cannot read .*{name}: not a .npz archive"):
            load_dataset(str(tmp_path / name))
    np.savez(tmp_path / "whole.npz", **npz_arrays())
    (tmp_path / "cut.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:200])     # truncated
    with pytest.raises(FastresError, match="cannot read .*cut.npz"):
        load_dataset(str(tmp_path / "cut.npz"))
    with pytest.raises(FastresError, match="dataset file .*absent.npz not found"):
        load_dataset(str(tmp_path / "absent.npz"))


def test_unknown_dataset_and_bad_data_dir(tmp_path):
    with pytest.raises(FastresError, match="unknown dataset 'mnist'; use cifar10, fashion-mnist or a path"):
        load_dataset("mnist")
    with pytest.raises(FastresError, match="--data-dir .*nowhere is not a directory"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    np.savez(tmp_path / "toy.npz", **npz_arrays())
    with pytest.raises(FastresError, match="--data-dir .*nowhere is not a directory"):
        load_dataset(str(tmp_path / "toy.npz"), str(tmp_path / "nowhere"))


# --- parsed-data cache ---------------------------------------------------------------------------

def test_cache_is_used_then_rebuilt_when_corrupt(tmp_path, monkeypatch):
    np.savez(tmp_path / "toy.npz", **npz_arrays())
    first = load_dataset(str(tmp_path / "toy.npz"))
    [cache_file] = (tmp_path / "cache").glob("npz-toy-*.pt")

    real_parse = npz.parse_npz
    monkeypatch.setattr(npz, "parse_npz", lambda path: pytest.fail("cache not used"))
    assert torch.equal(load_dataset(str(tmp_path / "toy.npz")).train_x, first.train_x)
    monkeypatch.setattr(npz, "parse_npz", real_parse)

    for corrupt in (cache_file.read_bytes()[:500], b"garbage", b""):   # truncated, not a torch file, empty
        cache_file.write_bytes(corrupt)
        with pytest.warns(UserWarning, match="cache .* is corrupt.*rebuilding"):
            again = load_dataset(str(tmp_path / "toy.npz"))
        assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    assert torch.equal(load_dataset(str(tmp_path / "toy.npz")).train_x, first.train_x)   # no warning now
    assert leftovers(tmp_path) == []


def test_cache_with_wrong_contents_is_rebuilt(tmp_path):
    np.savez(tmp_path / "toy.npz", **npz_arrays())
    first = load_dataset(str(tmp_path / "toy.npz"))
    [cache_file] = (tmp_path / "cache").glob("npz-toy-*.pt")
    saved = torch.load(cache_file, weights_only=True)
    saved["train_x"] = saved["train_x"].float()            # loads fine, but fails validation
    torch.save(saved, cache_file)
    with pytest.warns(UserWarning, match="train_x must be uint8"):
        assert torch.equal(load_dataset(str(tmp_path / "toy.npz")).train_x, first.train_x)


@pytest.mark.parametrize("field, value, message", [
    ("num_classes", 10**9, "num_classes must be an integer in 1..10000, got 1000000000"),
    ("num_classes", 0, "num_classes must be an integer"),
    ("classes", [1, 2, 3, 4], "class names must be a list of strings"),
])
def test_cache_with_a_tampered_class_count_is_rebuilt(tmp_path, field, value, message):
    np.savez(tmp_path / "toy.npz", **npz_arrays())
    first = load_dataset(str(tmp_path / "toy.npz"))
    [cache_file] = (tmp_path / "cache").glob("npz-toy-*.pt")
    saved = torch.load(cache_file, weights_only=True)
    saved[field] = value
    torch.save(saved, cache_file)
    with pytest.warns(UserWarning, match=message):
        assert load_dataset(str(tmp_path / "toy.npz")).num_classes == first.num_classes


def test_cache_key_follows_the_source(tmp_path):
    np.savez(tmp_path / "toy.npz", **npz_arrays(seed=0))
    first = load_dataset(str(tmp_path / "toy.npz"))
    np.savez(tmp_path / "toy.npz", **npz_arrays(seed=1))
    os.utime(tmp_path / "toy.npz", ns=(1, 1))               # a different mtime even on coarse clocks
    second = load_dataset(str(tmp_path / "toy.npz"))
    assert not torch.equal(first.train_x, second.train_x)
    assert torch.equal(second.train_x, torch.from_numpy(npz_arrays(seed=1)["train_x"]))


# --- upload / prepare ----------------------------------------------------------------------------

def _image_set(n=200, m=50, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Channels with different brightness and contrast, so normalisation visibly does something.
    scale = torch.tensor([1.0, 0.5, 0.25])[:channels]
    offset = torch.tensor([0.0, 60.0, 120.0])[:channels]
    def images(k):
        return (torch.rand(k, 6, 5, channels, generator=g) * 255 * scale + offset).to(torch.uint8)
    return ImageSet("toy", images(n), torch.arange(n), images(m), torch.arange(m) % 10, n)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_prepare_normalises_channels_last(channels, dtype):
    ds = upload(_image_set(channels=channels), "cpu")
    data = prepare(ds, dtype)
    assert isinstance(data, DeviceData) and data.val_x is None and data.val_y is None
    for x in (data.train_x, data.test_x):
        assert x.dtype == dtype and x.is_contiguous(memory_format=torch.channels_last)
    assert data.train_x.shape == (200, channels, 6, 5) and data.test_x.shape == (50, channels, 6, 5)
    train = data.train_x.float()
    assert torch.allclose(train.mean((0, 2, 3)), torch.zeros(channels), atol=2e-3)
    assert torch.allclose(train.std((0, 2, 3), correction=0), torch.ones(channels), atol=2e-3)
    pixels = ds.train_x.float().reshape(-1, channels) / 255
    assert data.mean.dtype == data.std.dtype == torch.float32
    assert torch.allclose(data.mean, pixels.mean(0), atol=1e-6)
    assert torch.allclose(data.std, pixels.std(0, correction=0), atol=1e-6)
    expected_test = (ds.test_x.permute(0, 3, 1, 2).float() / 255 - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    assert torch.allclose(data.test_x.float(), expected_test, atol=1e-2 if dtype == torch.float16 else 1e-5)
    assert torch.equal(data.train_y, ds.train_y) and data.num_classes == 200


def test_prepare_validation_split_is_fixed_disjoint_and_ordered():
    ds = _image_set()       # train labels are the image indices, so the split can be traced
    data = prepare(ds, torch.float32, val_split=30)
    assert data.train_x.shape[0] == len(data.train_y) == 170 and data.val_x.shape[0] == len(data.val_y) == 30
    assert data.val_x.is_contiguous(memory_format=torch.channels_last)
    train_ids, val_ids = data.train_y.tolist(), data.val_y.tolist()
    assert sorted(train_ids + val_ids) == list(range(200))          # disjoint and complete
    assert train_ids == sorted(train_ids) and val_ids == sorted(val_ids)
    assert val_ids != list(range(170, 200))                          # a permutation, not the tail
    assert torch.equal(prepare(ds, torch.float32, val_split=30).val_y, data.val_y)   # same every call
    torch.manual_seed(123)                                           # and whatever the run's seed
    assert torch.equal(prepare(ds, torch.float32, val_split=30).val_y, data.val_y)
    # Statistics come from the training portion only.
    train_pixels = ds.train_x[data.train_y].float().reshape(-1, 3) / 255
    assert torch.allclose(data.mean, train_pixels.mean(0), atol=1e-6)
    # The validation images are the original images, normalised.
    expected = (ds.train_x[data.val_y].permute(0, 3, 1, 2).float() / 255 - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    assert torch.allclose(data.val_x, expected, atol=1e-5)


@pytest.mark.parametrize("val_split", [-1, 200, 1000])
def test_prepare_rejects_impossible_split(val_split):
    with pytest.raises(FastresError, match=f"--val-split {val_split} must be in 0..199"):
        prepare(_image_set(), torch.float32, val_split=val_split)


def test_channel_stats_exact_and_constant_channels_do_not_blow_up():
    images = torch.randint(0, 256, (40, 7, 7, 3), dtype=torch.uint8)
    mean, std = channel_stats(images)
    flat = images.reshape(-1, 3).double()
    assert torch.allclose(mean.double(), flat.mean(0), atol=1e-4) and torch.allclose(std.double(), flat.std(0, correction=0), atol=1e-4)
    flat_grey = ImageSet("grey", torch.full((4, 3, 3, 1), 7, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64),
                         torch.full((2, 3, 3, 1), 9, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), 1)
    data = prepare(flat_grey, torch.float32)
    assert torch.isfinite(data.test_x).all() and (data.train_x == 0).all()


# --- real datasets (skipped when absent) ---------------------------------------------------------

@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason=f"{REAL_FASHION} not found (Debian package dataset-fashion-mnist)")
def test_real_fashion_mnist():
    ds = load_dataset("fashion-mnist", str(REAL_FASHION), download=False)
    assert ds.train_x.shape == (60000, 28, 28, 1) and ds.test_x.shape == (10000, 28, 28, 1)
    assert ds.train_y.min() == 0 and ds.train_y.max() == 9 and ds.test_y.max() == 9
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10


def _real_cifar_dir():
    for d in (USER_DATA, REPO_ROOT / "data_cache"):
        if d and ((Path(d) / cifar10.FOLDER).is_dir() or (Path(d) / cifar10.ARCHIVE).is_file()):
            return str(d)
    return None


@pytest.mark.skipif(_real_cifar_dir() is None,
                    reason="real CIFAR-10 not found: set FASTRES_DATA or unpack into ./data_cache/cifar-10-batches-bin")
def test_real_cifar10():
    ds = load_dataset("cifar10", _real_cifar_dir(), download=False)
    assert ds.train_x.shape == (50000, 32, 32, 3) and ds.test_x.shape == (10000, 32, 32, 3)
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    mean, _ = channel_stats(ds.train_x)
    assert torch.allclose(mean / 255, torch.tensor([0.4914, 0.4822, 0.4465]), atol=1e-3)
