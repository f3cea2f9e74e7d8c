"""gflow.data: the μ-separated generator, the separation measure, digits and the IDX/MNIST reader."""

import gzip
import itertools

import numpy as np
import pytest
import scipy.optimize

from gflow import data


def brute_force_separation(X, y):
    best = np.inf
    for i, j in itertools.permutations(range(len(y)), 2):
        a, b = y[i] * X[i], y[j] * X[j]
        best = min(best, a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return best


@pytest.mark.parametrize("mu", [0.05, 0.3, 1.0])
def test_equiangular_has_exactly_mu_for_every_pair(mu):
    X, y = data.separated(3, 10, 12, mu, radii=(0.5, 2.0))
    Z = y[:, None] * X / np.linalg.norm(X, axis=1, keepdims=True)
    G = Z @ Z.T
    off = G[~np.eye(10, dtype=bool)]
    np.testing.assert_allclose(off, mu, atol=1e-12)
    assert data.separation(X, y) == pytest.approx(mu, abs=1e-12)
    assert data.separation(X, y) == pytest.approx(brute_force_separation(X, y), abs=1e-14)


def test_shapes_labels_and_radii():
    r = np.linspace(1.0, 3.0, 9)
    X, y = data.separated(0, 9, 11, 0.2, n_pos=4, radii=r)
    assert X.shape == (9, 11) and y.shape == (9,)
    np.testing.assert_array_equal(y, [1, 1, 1, 1, -1, -1, -1, -1, -1])
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), r, rtol=1e-12)
    X2, _ = data.separated(0, 9, 11, 0.2, n_pos=4, radii=r)
    np.testing.assert_array_equal(X, X2)  # seeded
    X3, _ = data.separated(1, 9, 11, 0.2, n_pos=4, radii=r)
    assert not np.allclose(X, X3)


def test_orthant_variant_for_n_larger_than_d():
    X, y = data.separated(5, 40, 6, 0.25, equiangular=False)
    assert X.shape == (40, 6)
    Z = y[:, None] * X / np.linalg.norm(X, axis=1, keepdims=True)
    G = Z @ Z.T
    assert np.all(G[~np.eye(40, dtype=bool)] >= 0.25 - 1e-12)
    assert data.separation(X, y) == pytest.approx(0.25, abs=1e-12)
    assert data.separation(X, y) == pytest.approx(brute_force_separation(X, y), abs=1e-14)


def test_separation_matches_brute_force_on_unseparated_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((15, 4))
    y = np.where(rng.random(15) < 0.5, 1.0, -1.0)
    y[:2] = [1, -1]
    mu = data.separation(X, y)
    assert mu < 0
    assert mu == pytest.approx(brute_force_separation(X, y), abs=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mu=0.0), "mu must lie in"),
        (dict(mu=1.5), "mu must lie in"),
        (dict(mu=float("nan")), "mu must lie in"),
        (dict(d=10), "d ≥ n \\+ 1"),
        (dict(n_pos=0), "both classes"),
        (dict(n_pos=10), "both classes"),
        (dict(radii=-1.0), "radii"),
        (dict(n=1), "n must be"),
    ],
)
def test_separated_bad_input(kwargs, match):
    args = dict(key=0, n=10, d=11, mu=0.3) | kwargs
    with pytest.raises(ValueError, match=match):
        data.separated(**args)


def test_separation_bad_input():
    X, y = data.separated(0, 6, 7, 0.3)
    with pytest.raises(ValueError, match="single class"):
        data.separation(X, np.ones(6))
    Xn = X.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        data.separation(Xn, y)
    Xz = X.copy()
    Xz[0] = 0
    with pytest.raises(ValueError, match="zero row"):
        data.separation(Xz, y)
    with pytest.raises(ValueError, match="±1"):
        data.separation(X, 2 * y)


def test_hyperplane_data_is_linearly_but_not_well_separated():
    X, y = data.hyperplane(200, 10, seed=3)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-14)
    assert set(np.unique(y)) == {-1.0, 1.0}
    # separable through the origin: some w has y_i⟨w, x_i⟩ ≥ 1 for all i (an LP feasibility check)
    lp = scipy.optimize.linprog(np.zeros(10), A_ub=-(y[:, None] * X), b_ub=-np.ones(200), bounds=(None, None))
    assert lp.status == 0
    # ... but not μ-separated: some pair of points has an obtuse angle after sign-flipping
    assert data.separation(X, y) < 0
    np.testing.assert_array_equal(data.hyperplane(200, 10, seed=3)[0], X)  # seeded
    with pytest.raises(ValueError, match="d must be a positive integer"):
        data.hyperplane(5, 0)


def test_digits_zero_vs_one():
    X, y = data.digits((0, 1))
    assert X.shape == (360, 64)
    assert set(np.unique(y)) == {-1.0, 1.0}
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-12)
    Xn, _ = data.digits((0, 1), center=False, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(Xn, axis=1), 1, rtol=1e-12)
    with pytest.raises(ValueError, match="two different classes"):
        data.digits((3, 3))


def write_idx(path, array, code, compress):
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    for code, dtype in ((0x08, np.uint8), (0x0C, np.int32), (0x0E, np.float64)):
        a = (rng.random((3, 4, 5)) * 200).astype(dtype)
        write_idx(tmp_path / "a.idx", a, code, compress)
        np.testing.assert_array_equal(data.read_idx(tmp_path / "a.idx"), a)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad.idx")
    write_idx(tmp_path / "short.idx", np.zeros((2, 2), np.uint8), 0x08, False)
    (tmp_path / "short.idx").write_bytes((tmp_path / "short.idx").read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "short.idx")


def test_mnist_from_local_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 50).astype(np.uint8)
    images = rng.integers(0, 256, (50, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, 0x08, True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels, 0x08, False)
    X, y = data.mnist(tmp_path, classes=(0, 1), center=False)
    keep = np.isin(labels, (0, 1))
    assert X.shape == (keep.sum(), 784)
    np.testing.assert_array_equal(y, np.where(labels[keep] == 0, 1.0, -1.0))
    np.testing.assert_allclose(X, images[keep].reshape(-1, 784) / 255.0)
    Xc, yc = data.mnist(tmp_path, classes=(0, 1), n=10, seed=3)
    assert Xc.shape == (10, 784) and set(yc) <= {-1.0, 1.0}
    np.testing.assert_allclose(Xc.mean(axis=0), 0, atol=1e-12)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        data.mnist(tmp_path, split="t10k")
    with pytest.raises(ValueError, match="n must be"):
        data.mnist(tmp_path, n=10_000)
