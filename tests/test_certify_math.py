"""Certified partition aggregation against brute force on toy ensembles.

Every certificate is checked two ways: equal to the paper's definition written
out literally (loops, explicit subsets, the paper's dynamic programme), and
sound against an attacker who is enumerated exhaustively (every set of models
or buckets it could touch, every output it could give the models it then
controls). DPA is also tight: r + 1 changed models always suffice.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from scipy import stats

from sweep import data
from sweep.defences.certify import aggregation as agg
from sweep.defences.certify import partition as part
from sweep.errors import SweepError
from sweep.experiment.attacks.label_flips import poison_labels


def plurality_ref(profiles: np.ndarray, num_classes: int) -> np.ndarray:
    """(P, K) votes -> (P,) most votes, ties to the smaller class."""
    counts = (profiles[..., None] == np.arange(num_classes)).sum(-2)  # (P, C)
    return (counts * num_classes + num_classes - 1 - np.arange(num_classes)).argmax(-1)


def all_profiles(n_models: int, num_classes: int) -> np.ndarray:
    return np.array(list(itertools.product(range(num_classes), repeat=n_models)))


# DPA


def test_vote_ties_go_to_the_smaller_class():
    votes = np.array([[1, 2, 0, 1, 0], [1, 2, 0, 1, 0], [0, 1, 0, 1, 0],
                      [0, 1, 1, 0, 1]])  # (k=4, n=5)
    got = agg.dpa_certify(votes, num_classes=3)
    assert got.prediction.tolist() == [0, 1, 0, 1, 0]
    assert got.runner_up.tolist() == [1, 2, 1, 0, 1]
    assert got.margin.tolist() == [0, 0, 2, 2, 2]
    # 3 vs 1 for the larger class survives one change only if the runner-up
    # cannot win the resulting tie: [0,0,0,1] holds at 1, [1,1,1,0] at 0.
    assert got.radius.tolist() == [0, 0, 1, 0, 1]


@pytest.mark.parametrize("k, num_classes", [(5, 3), (6, 3), (4, 4), (5, 4)])
def test_dpa_radius_is_one_less_than_the_smallest_attack(k, num_classes):
    profiles = all_profiles(k, num_classes)  # every ensemble, (P, k)
    pred = plurality_ref(profiles, num_classes)
    changed = (profiles[:, None] != profiles[None]).sum(-1)  # (P, P) models changed
    smallest = np.where(pred[:, None] != pred[None], changed, k + 1).min(1)
    got = agg.dpa_certify(profiles.T, num_classes=num_classes)
    np.testing.assert_array_equal(got.prediction, pred)
    np.testing.assert_array_equal(got.radius, smallest - 1)  # sound and tight
    assert got.radius.max() >= k // 2 - 1


# Finite Aggregation


def bucket_subsets(n_buckets: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=n_buckets)))


def controlled(subsets: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """(S, B) touched buckets -> (S, K) models whose training set changed."""
    spread = part.models_of_bucket(shifts, subsets.shape[1])  # (B, d)
    hit = np.zeros(subsets.shape, bool)
    for j in range(spread.shape[1]):
        hit[:, spread[:, j]] |= subsets
    return hit


def fa_paper_radius(profiles, shifts, num_classes) -> np.ndarray:
    """Largest r with: for all c' != c and every r buckets T,
    sum_{b in T} pw_b(c') <= N_c - N_c' - [c' < c] (Wang et al. 2022)."""
    n_buckets = profiles.shape[1]
    pred = plurality_ref(profiles, num_classes)
    spread = part.models_of_bucket(shifts, n_buckets)
    f = profiles[:, spread]  # (P, B, d) votes of each bucket's models
    classes = np.arange(num_classes)
    pw = ((f == pred[:, None, None])[..., None].astype(int)
          + (f[..., None] != classes)).sum(2)  # (P, B, C)
    counts = (profiles[..., None] == classes).sum(1)  # (P, C)
    slack = (counts[np.arange(len(pred)), pred][:, None] - counts
             - (classes < pred[:, None]))
    subsets = bucket_subsets(n_buckets)
    sums = np.einsum("sb,pbc->spc", subsets.astype(int), pw)  # (S, P, C)
    radius = np.full(len(pred), -1)
    for r in range(n_buckets + 1):
        worst = sums[subsets.sum(1) == r].max(0)  # (P, C)
        ok = ((worst <= slack) | (classes == pred[:, None])).all(1)
        assert not (ok & (radius < r - 1)).any()  # the condition is monotone in r
        radius = np.where(ok, r, radius)
    return radius


@pytest.mark.parametrize("k, d", [(2, 2), (3, 2), (2, 3), (5, 1)])
def test_fa_certificate_is_the_papers_and_sound(k, d):
    num_classes, n_buckets = 3, k * d
    shifts = part.spread_shifts(k, d)
    profiles = all_profiles(n_buckets, num_classes)  # every ensemble (P, kd)
    pred = plurality_ref(profiles, num_classes)
    subsets = bucket_subsets(n_buckets)  # every set of touched buckets
    hit = controlled(subsets, shifts)  # (S, K)
    # Controlling models, the best attack on c' is to make them all vote c'.
    flips = np.zeros((len(subsets), len(profiles)), bool)
    for c in range(num_classes):
        attacked = np.where(hit[:, None, :], c, profiles[None])  # (S, P, K)
        flips |= plurality_ref(attacked, num_classes) != pred
    smallest = np.where(flips, subsets.sum(1)[:, None], n_buckets + 1).min(0)
    got = agg.fa_certify(profiles.T, shifts=shifts, num_classes=num_classes)
    np.testing.assert_array_equal(got.radius, fa_paper_radius(profiles, shifts, 3))
    assert (got.radius <= smallest - 1).all()
    if d == 1:
        dpa = agg.dpa_certify(profiles.T, num_classes=num_classes)
        np.testing.assert_array_equal(got.radius, dpa.radius)
    assert got.radius.max() >= 1


# Run-Off Election


def perms(num_classes: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(num_classes))))  # (R, C)


def scores_of(rank_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """(..., K) ranking ids -> (..., K, C) scores, higher for earlier classes."""
    position = np.argsort(perms(num_classes), axis=1)  # (R, C) place of class c
    return (num_classes - position[rank_ids]).astype(float)


def run_off_ref(rank_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """(P, K) rankings -> (P,) the two-round winner, written from the paper."""
    table = perms(num_classes)
    top = table[rank_ids, 0]  # (P, K)
    counts = (top[..., None] == np.arange(num_classes)).sum(1)
    order = np.lexsort((np.broadcast_to(np.arange(num_classes), counts.shape),
                        -counts), axis=-1)
    m1, m2 = order[:, 0], order[:, 1]
    position = np.argsort(table, axis=1)[rank_ids]  # (P, K, C) place of class c
    place_m1 = np.take_along_axis(position, m1[:, None, None], axis=2)[..., 0]
    place_m2 = np.take_along_axis(position, m2[:, None, None], axis=2)[..., 0]
    twice = 2 * (place_m1 < place_m2).sum(-1) - rank_ids.shape[1]  # (P,)
    return np.where((twice > 0) | ((twice == 0) & (m1 < m2)), m1, m2)


def smallest_attack(rank_ids, groups, num_classes) -> int:
    """Fewest touched units that change the run-off winner. groups: (cost,
    models controlled) in rising cost; controlled models may output anything,
    and since the vote is anonymous only the multiset of their rankings counts."""
    base = run_off_ref(rank_ids[None], num_classes)[0]
    n_rank = len(perms(num_classes))
    for cost, mask in groups:
        if not mask.any():
            continue
        picks = np.array(list(itertools.combinations_with_replacement(
            range(n_rank), int(mask.sum()))), int).reshape(-1, int(mask.sum()))
        trial = np.repeat(rank_ids[None], len(picks), 0)
        trial[:, mask] = picks
        if (run_off_ref(trial, num_classes) != base).any():
            return cost
    raise AssertionError("no attack changes the winner")


def model_groups(n_models: int):
    for r in range(n_models + 1):
        for chosen in itertools.combinations(range(n_models), r):
            mask = np.zeros(n_models, bool)
            mask[list(chosen)] = True
            yield r, mask


def bucket_groups(shifts, n_buckets: int):
    subsets = bucket_subsets(n_buckets)
    subsets = subsets[np.argsort(subsets.sum(1), kind="stable")]
    return [(int(s.sum()), m) for s, m in zip(subsets, controlled(subsets, shifts))]


def ranked_profiles(n_profiles, n_models, num_classes, seed) -> np.ndarray:
    """(P, K) rankings of two kinds, so that every case of the certificate binds:
    most models sharing one favourite ranking (large radii), and first choices
    scattered with one compromise class right after them (round 2 decided by
    the compromise, round 1 close: eliminating the winner early is cheapest)."""
    rng = np.random.default_rng(seed)
    table = perms(num_classes)
    favourite = rng.integers(len(table), size=(n_profiles, 1))
    other = rng.integers(len(table), size=(n_profiles, n_models))
    keep = rng.random((n_profiles, n_models)) < rng.random((n_profiles, 1))
    shared = np.where(keep, favourite, other)
    compromise = table[favourite[:, 0], 0]  # (P,)
    ids = {tuple(r): i for i, r in enumerate(table.tolist())}
    late = [[ids[(r[0], *sorted({*r} - {r[0]}, key=lambda c: (c != m, r.index(c))))]
             for r in table[row].tolist()] for row, m in zip(other, compromise)]
    return np.where(np.arange(n_profiles)[:, None] % 2 == 0, shared, np.array(late))


def dp_table(size: int) -> np.ndarray:
    """The paper's dynamic programme (code: dp_calc.py): fewest models to cut
    two gaps i, j to <= 0 when one model cuts (2, 1) or (1, 2)."""
    table = np.zeros((size, size), int)
    for i, j in itertools.product(range(size), repeat=2):
        if i + j == 0:
            continue
        options = [table[max(i - a, 0), max(j - b, 0)] for a, b in ((2, 1), (1, 2))]
        table[i, j] = 1 + min(options)
    return table


def roe_paper_certs(scores, shifts):
    """Cert_R1, Cert_R2 of DPA+ROE and FA+ROE, looped as the paper defines them."""
    n_models, n, num_classes = scores.shape
    pred, second, _ = agg.run_off(scores)
    votes = scores.argmax(-1)  # (K, n)
    spread = part.models_of_bucket(shifts, n_models)
    dp = dp_table(2 * n_models + 3)

    def cert1(pw, gap):  # fewest largest powers reaching the gap
        total, used = 0, 0
        for p in sorted(pw, reverse=True) + [0]:
            if total >= gap:
                return used
            total, used = total + p, used + 1
        return len(pw) + 1

    dpa, fa = [], []
    for t in range(n):
        p, s, f, sc = pred[t], second[t], votes[:, t], scores[:, t]
        cnt = np.bincount(f, minlength=num_classes)

        def gap(x, c):
            return cnt[x] - cnt[c] + (c > x)

        def pw(x, c):
            return [sum(1 + (f[i] == x) - (f[i] == c) for i in row) for row in spread]

        def lead(c):  # preferring p to c, minus the converse; plus the tie term
            pref = (sc[:, p] > sc[:, c]) | ((sc[:, p] == sc[:, c]) & (p < c))
            return 2 * pref.sum() - n_models + (c > p)

        rest = [c for c in range(num_classes) if c != p]
        r1_dpa = min([dp[max(gap(p, a), 0), max(gap(p, b), 0)]
                      for a in rest for b in rest if a != b], default=10**9)
        r2_dpa = min(max(-(-max(gap(s, c), 0) // 2), -(-max(lead(c), 0) // 2))
                     for c in rest)
        dpa.append(min(r1_dpa, r2_dpa))
        r1_fa = min([max(cert1(pw(p, a), gap(p, a)), cert1(pw(p, b), gap(p, b)),
                         cert1([sum(1 + 2 * (f[i] == p) - (f[i] == a) - (f[i] == b)
                                    for i in row) for row in spread],
                               gap(p, a) + gap(p, b)))
                     for a in rest for b in rest if a != b], default=10**9)
        r2_fa = min(max(cert1(pw(s, c), gap(s, c)),
                        cert1([2 * sum((sc[i, p] > sc[i, c])
                                       | ((sc[i, p] == sc[i, c]) & (p < c))
                                       for i in row) for row in spread], lead(c)))
                    for c in rest)
        fa.append(min(r1_fa, r2_fa))
    return np.array(dpa), np.array(fa)


@pytest.mark.parametrize("n_models, num_classes", [(5, 3), (7, 3), (5, 4), (5, 2)])
def test_roe_dpa_certificate_is_the_papers_and_sound(n_models, num_classes):
    profiles = ranked_profiles(40, n_models, num_classes, seed=n_models * num_classes)
    scores = np.moveaxis(scores_of(profiles, num_classes), 0, 1)  # (K, P, C)
    got = agg.roe_dpa_certify(scores)
    np.testing.assert_array_equal(got.prediction, run_off_ref(profiles, num_classes))
    paper_dpa, paper_fa = roe_paper_certs(scores, np.zeros(1, int))
    np.testing.assert_array_equal(got.radius, paper_dpa - 1)
    fa_one = agg.roe_fa_certify(scores, shifts=[0])  # FA with d = 1: DPA's split
    np.testing.assert_array_equal(fa_one.radius, paper_fa - 1)
    assert (fa_one.radius >= got.radius).all()  # per-model powers, at least as good
    groups = list(model_groups(n_models))
    for i, profile in enumerate(profiles):
        assert fa_one.radius[i] <= smallest_attack(profile, groups, num_classes) - 1
    assert got.radius.max() >= 1


@pytest.mark.parametrize("k, d, num_classes", [(2, 2, 3), (3, 2, 3), (2, 2, 4)])
def test_roe_fa_certificate_is_the_papers_and_sound(k, d, num_classes):
    shifts = part.spread_shifts(k, d)
    profiles = ranked_profiles(30, k * d, num_classes, seed=k * d + num_classes)
    scores = np.moveaxis(scores_of(profiles, num_classes), 0, 1)
    got = agg.roe_fa_certify(scores, shifts=shifts)
    np.testing.assert_array_equal(got.radius, roe_paper_certs(scores, shifts)[1] - 1)
    groups = bucket_groups(shifts, k * d)
    smallest = [smallest_attack(p, groups, num_classes) for p in profiles]
    assert (got.radius <= np.array(smallest) - 1).all()
    assert got.radius.max() >= 1


def test_run_off_ties_go_to_the_smaller_class():
    # Two models tie classes 1 and 2 in round 1 (0 gets none); round 2 ties too.
    scores = np.array([[[0.0, 5.0, 1.0]], [[0.0, 1.0, 5.0]]])  # (K=2, n=1, C=3)
    assert agg.run_off(scores)[0].tolist() == [1]
    # Equal logits: the vote and the preference both go to the smaller index.
    flat = np.zeros((3, 1, 3))
    flat[2, 0] = [0.0, 2.0, 1.0]
    pred, second, margin = agg.run_off(flat)
    assert (pred.tolist(), second.tolist(), margin.tolist()) == ([0], [1], [1])


def test_certify_rejects_bad_input():
    with pytest.raises(SweepError):
        agg.dpa_certify(np.array([[0, 3]]), num_classes=3)
    with pytest.raises(SweepError):
        agg.fa_certify(np.zeros((4, 2), int), shifts=[1, 1], num_classes=3)
    with pytest.raises(SweepError):
        agg.roe_dpa_certify(np.full((2, 1, 3), np.nan))


# Partitions


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return data.load("sample", cache_dir=tmp_path_factory.mktemp("cache"))


def test_hash_is_salted_blake2b_of_the_bytes_alone():
    image = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    for seed in (0, 1):
        want = hashlib.blake2b(bytes(range(12)), digest_size=8,
                               salt=seed.to_bytes(16, "little"),
                               person=b"sweep-image").digest()
        assert int(part.image_hashes(image, seed=seed)[0]) == int.from_bytes(
            want, "little")
    assert hex(int(part.image_hashes(image)[0])) == "0xd04b3bed29f3bbd7"  # pinned
    assert part.spread_shifts(5, 3).tolist() == [1, 3, 11]  # pinned
    assert part.spread_shifts(7, 1, seed=3).tolist() == [0]


def test_partitions_balanced_stable_and_seeded(sample):
    images = sample.train_images  # (10000, 32, 32, 3) real CIFAR-10
    ids = part.partition_ids(images, 50)
    np.testing.assert_array_equal(ids, part.partition_ids(images.copy(), 50))
    sizes = np.bincount(ids, minlength=50)
    chi2 = ((sizes - 200) ** 2 / 200).sum()  # multinomial(10000, 1/50) expected
    assert chi2 < stats.chi2.ppf(1 - 1e-6, 49)
    other = part.partition_ids(images, 50, seed=1)
    assert 0.01 < (other == ids).mean() < 0.03  # an independent draw: 1/50 agree
    np.testing.assert_array_equal(part.bucket_ids(images, 10, 5) % 10,
                                  part.partition_ids(images, 10))
    # DPA's models: disjoint partitions covering the data, each in hash order.
    hashes = part.image_hashes(images)
    index, length = part.members(ids, hashes, [0], 50)
    np.testing.assert_array_equal(length, sizes)
    for i in range(50):
        row = index[i, :length[i]]
        np.testing.assert_array_equal(row, np.flatnonzero(ids == i)[
            np.argsort(hashes[ids == i], kind="stable")])
        assert (index[i, length[i]:] == row[0]).all()


def content(index, length, hashes, labels):
    """Each model's training set as a list of (hash, label), in training order."""
    return [list(zip(hashes[row[:n]].tolist(), labels[row[:n]].tolist()))
            for row, n in zip(index, length)]


def test_fa_members_touch_only_the_poisoned_buckets(sample):
    k, d = 10, 4
    images, labels = sample.train_images, sample.train_labels
    hashes, shifts = part.image_hashes(images), part.spread_shifts(k, d)
    buckets = part.bucket_ids(images, k, d)
    index, length = part.members(buckets, hashes, shifts, k * d)
    assert length.sum() == d * len(images)
    assert (np.abs(length - len(images) / k) < 6 * np.sqrt(len(images) / k)).all()
    clean = content(index, length, hashes, labels)
    # Label flips: the hash never sees labels, so members stay put and only
    # the d models of each flipped image's bucket see a change.
    flipped_labels, flipped = poison_labels(labels, source=3, target=5, count=7,
                                            rng=np.random.default_rng(0))
    touched = set(part.models_of_bucket(shifts, k * d)[buckets[flipped]].ravel())
    poisoned = content(index, length, hashes, flipped_labels)
    assert {i for i in range(k * d) if poisoned[i] != clean[i]} == touched
    # Delete one image and insert another in front: every other model keeps
    # its training set in the same order, positions notwithstanding.
    new = np.full((1, 32, 32, 3), 7, np.uint8)
    images2 = np.concatenate([new, np.delete(images, 0, axis=0)])
    labels2 = np.concatenate([[1], labels[1:]])
    hashes2 = part.image_hashes(images2)
    moved = content(*part.members(part.bucket_ids(images2, k, d), hashes2, shifts,
                                  k * d), hashes2, labels2)
    spread = part.models_of_bucket(shifts, k * d)
    touched = set(spread[buckets[0]]) | set(spread[part.bucket_ids(new, k, d)[0]])
    assert {i for i in range(k * d) if moved[i] != clean[i]} == touched
    # Each model trains on the d buckets h_spr maps to it.
    own = part.buckets_of_model(shifts, k * d)
    assert all(set(buckets[index[i, :length[i]]]) == set(own[i]) for i in range(k * d))
