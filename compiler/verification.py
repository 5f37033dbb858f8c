"""Face-verification metrics and pairs files, in plain numpy.

Kept free of the model and of sklearn so that every number `eval` reports can be
checked by hand on constructed data (tests/test_verification.py). Scores are cosine
similarities: higher means "more likely the same person".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.errors import BadInput

N_FOLDS = 10
FARS = {"1e-3": 1e-3, "1e-4": 1e-4}  # JSON key -> false accept rate
MIN_NEGATIVES_PER_FAR = 10  # TAR@FAR needs at least 10/far negative pairs to mean anything
_ROW_BLOCK = 1024  # rank-1 similarity rows per block: bounds memory at N * 1024 floats


# --- metrics -------------------------------------------------------------------------


def _split(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    same = np.asarray(same, dtype=bool).ravel()
    if scores.shape != same.shape:
        raise ValueError(f"{scores.size} scores but {same.size} labels")
    return scores, same


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (what the Mann-Whitney U needs)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Exact ROC AUC: P(score of a same pair > score of a different pair), ties count 1/2."""
    scores, same = _split(scores, same)
    n_pos = int(same.sum())
    n_neg = same.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both same-identity and different-identity pairs")
    rank_sum = float(average_ranks(scores)[same].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, threshold) for "accept when score >= threshold", at every distinct score."""
    scores, same = _split(scores, same)
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], same[order]
    last_of_group = np.r_[ordered[1:] != ordered[:-1], True]
    tp = np.cumsum(hits)[last_of_group]
    fp = np.cumsum(~hits)[last_of_group]
    n_pos, n_neg = max(int(same.sum()), 1), max(int((~same).sum()), 1)
    return fp / n_neg, tp / n_pos, ordered[last_of_group]


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of "same when score > threshold".

    Candidates are the midpoints between consecutive distinct scores (plus one below
    and one above all of them), so the threshold generalises instead of sitting on a
    training score.
    """
    scores, same = _split(scores, same)
    distinct = np.unique(scores)
    candidates = np.r_[distinct[0] - 1.0, (distinct[1:] + distinct[:-1]) / 2.0, distinct[-1] + 1.0]
    pos, neg = np.sort(scores[same]), np.sort(scores[~same])
    true_pos = pos.size - np.searchsorted(pos, candidates, side="right")
    true_neg = np.searchsorted(neg, candidates, side="right")
    correct = true_pos + true_neg
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / scores.size)


def default_folds(n_pairs: int, n_folds: int = N_FOLDS) -> np.ndarray:
    """Fold index per pair: a seeded shuffle, so folds of all-pairs lists are not one identity each."""
    fold = np.arange(n_pairs) % n_folds
    return np.random.default_rng(0).permutation(fold)


def verification_accuracy_10fold(scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None) -> float:
    """The LFW protocol: threshold chosen on 9 folds, accuracy on the 10th, mean over folds."""
    scores, same = _split(scores, same)
    folds = default_folds(scores.size) if folds is None else np.asarray(folds)
    accuracies = []
    for fold in np.unique(folds):
        test = folds == fold
        if test.all():  # a single fold has nothing to train the threshold on
            raise ValueError("10-fold accuracy needs pairs in at least two folds")
        threshold, _ = best_threshold(scores[~test], same[~test])
        accuracies.append(float(np.mean((scores[test] > threshold) == same[test])))
    return float(np.mean(accuracies))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float] | None:
    """(TAR, threshold) for "same when score > threshold" with FAR <= far; None if too few negatives."""
    scores, same = _split(scores, same)
    negatives = np.sort(scores[~same])[::-1]
    if negatives.size == 0 or negatives.size < MIN_NEGATIVES_PER_FAR / far or not same.any():
        return None
    allowed = int(np.floor(far * negatives.size))  # false accepts we may make
    threshold = float(negatives[allowed])  # at most `allowed` negatives lie strictly above it
    return float(np.mean(scores[same] > threshold)), threshold


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so dot products are cosines."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.where(norms > 0, norms, 1.0)


def rank1_identification(embeddings: np.ndarray, labels: np.ndarray) -> float | None:
    """Leave-one-out nearest neighbour by cosine; only probes with another image of their identity count."""
    unit = l2_normalize(embeddings)
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    probes = np.flatnonzero(counts[inverse] >= 2)
    if probes.size == 0:
        return None
    hits = 0
    for start in range(0, probes.size, _ROW_BLOCK):
        rows = probes[start : start + _ROW_BLOCK]
        sims = unit[rows] @ unit.T
        sims[np.arange(rows.size), rows] = -np.inf  # never match an image with itself
        hits += int(np.sum(labels[np.argmax(sims, axis=1)] == labels[rows]))
    return hits / probes.size


# --- pairs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """Pairs of image indices with their ground truth; `folds` when the file defines them."""

    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    folds: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.a.size)


def all_pairs(labels: np.ndarray) -> Pairs:
    """Every pair i < j; same when the identities match."""
    labels = np.asarray(labels)
    a, b = np.triu_indices(labels.size, k=1)
    return Pairs(a, b, labels[a] == labels[b])


def pair_scores(embeddings: np.ndarray, pairs: Pairs) -> np.ndarray:
    """Cosine similarity of each pair."""
    unit = l2_normalize(embeddings)
    return np.einsum("ij,ij->i", unit[pairs.a], unit[pairs.b])


def verification_metrics(embeddings: np.ndarray, labels: np.ndarray, pairs: Pairs | None = None) -> dict:
    """Everything `eval` reports, from L2-normalisable embeddings and identity labels."""
    labels = np.asarray(labels)
    pairs = all_pairs(labels) if pairs is None else pairs
    if len(pairs) == 0 or pairs.same.all() or not pairs.same.any():
        raise BadInput(
            f"{len(pairs)} pair(s), {int(np.sum(pairs.same))} of them same-identity: verification needs both "
            "same- and different-identity pairs (at least two identities, one with two or more images)"
        )
    scores = pair_scores(embeddings, pairs)
    tars = {key: tar_at_far(scores, pairs.same, far) for key, far in FARS.items()}
    at_1e3 = tars["1e-3"]
    return {
        "auc": roc_auc(scores, pairs.same),
        "accuracy": verification_accuracy_10fold(scores, pairs.same, pairs.folds),
        "tar_at_far": {key: None if t is None else t[0] for key, t in tars.items()},
        "threshold_at_far_1e-3": None if at_1e3 is None else at_1e3[1],
        "rank1": rank1_identification(embeddings, labels),
        "n_pairs": len(pairs),
        "n_positive_pairs": int(np.sum(pairs.same)),
        "n_images": int(labels.size),
        "n_identities": int(np.unique(labels).size),
    }


_TRUE = {"1": True, "true": True, "0": False, "false": False}
_NUMBERED = re.compile(r"^(.*?)[_-]?(\d+)$")


@dataclass(frozen=True)
class PairLine:
    """One parsed line: each side is a file (CSV) or an (identity, index) (LFW)."""

    line: int
    a: str | tuple[str, int]
    b: str | tuple[str, int]
    same: bool


def _int_field(value: str, path: Path, line: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadInput(f"{path}:{line}: '{value}' is not an image number") from None


def _parse_lfw_line(fields: list[str], path: Path, line: int) -> PairLine:
    if len(fields) == 3:
        name, i, j = fields
        return PairLine(line, (name, _int_field(i, path, line)), (name, _int_field(j, path, line)), True)
    if len(fields) == 4:
        name_a, i, name_b, j = fields
        return PairLine(line, (name_a, _int_field(i, path, line)), (name_b, _int_field(j, path, line)), False)
    raise BadInput(f"{path}:{line}: expected 'name idx1 idx2' or 'name1 idx1 name2 idx2', got {len(fields)} fields")


def _parse_csv_line(text: str, path: Path, line: int, first: bool) -> PairLine | None:
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 3 or not fields[0] or not fields[1]:
        raise BadInput(f"{path}:{line}: expected 'file_a,file_b,same', got '{text}'")
    same = _TRUE.get(fields[2].lower())
    if same is None:
        if first:  # a header row
            return None
        raise BadInput(f"{path}:{line}: same must be 0, 1, true or false, got '{fields[2]}'")
    return PairLine(line, fields[0], fields[1], same)


def _lfw_header(text: str, path: Path) -> int | None:
    """Folds declared by an LFW header ('N', 'F N' or 'folds N'), or None; errors on anything else."""
    fields = text.split()
    if len(fields) == 1 and fields[0].isdigit():
        return None
    if len(fields) == 2 and fields[1].isdigit() and (fields[0].isdigit() or fields[0].lower() == "folds"):
        return int(fields[0]) if fields[0].isdigit() else int(fields[1])
    raise BadInput(f"{path}:1: an LFW pairs file starts with 'N' or 'FOLDS N', got '{text}'")


def read_pairs(path: Path) -> tuple[list[PairLine], int | None]:
    """Parse LFW pairs.txt or a CSV `file_a,file_b,same`; returns the lines and the LFW fold count."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read pairs file ({exc})") from None
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        raise BadInput(f"{path}: empty pairs file")
    if "," in lines[0][1]:
        parsed = [_parse_csv_line(t, path, n, first=i == 0) for i, (n, t) in enumerate(lines)]
        return [p for p in parsed if p is not None], None
    n_folds = _lfw_header(lines[0][1], path)
    return [_parse_lfw_line(t.split(), path, n) for n, t in lines[1:]], n_folds


def _index_files(files: list[str], identities: list[str]) -> tuple[dict, dict]:
    """Lookup tables: relative path or unique basename -> index; (name, number) -> indices."""
    by_path: dict[str, int] = {}
    by_base: dict[str, list[int]] = {}
    by_number: dict[tuple[str, int], list[int]] = {}
    for i, (file, identity) in enumerate(zip(files, identities, strict=True)):
        by_path[file] = i
        base = Path(file).name
        by_base.setdefault(base, []).append(i)
        match = _NUMBERED.match(Path(file).stem)
        if match:
            number = int(match.group(2))
            for name in {match.group(1), identity}:
                by_number.setdefault((name, number), []).append(i)
    for base, hits in by_base.items():
        if len(hits) == 1:
            by_path.setdefault(base, hits[0])
    return by_path, by_number


def _lookup(key: str | tuple[str, int], by_path: dict, by_number: dict) -> list[int]:
    """Indices of the loaded images a pair side can mean (one, unless missing or ambiguous)."""
    if isinstance(key, str):
        hit = by_path.get(key.removeprefix("./"))
        return [] if hit is None else [hit]
    return sorted(set(by_number.get(key, [])))


def _describe(key: str | tuple[str, int]) -> str:
    return key if isinstance(key, str) else f"{key[0]}/{key[0]}_{key[1]:04d}"


def resolve_pairs(
    lines: list[PairLine], n_folds: int | None, files: list[str], identities: list[str], path: Path
) -> Pairs:
    """Map parsed pair lines onto loaded images; a pair naming a missing image is an error."""
    by_path, by_number = _index_files(files, identities)
    a, b = [], []
    for pair in lines:
        for key, out in ((pair.a, a), (pair.b, b)):
            hits = _lookup(key, by_path, by_number)
            if not hits:
                raise BadInput(f"{path}:{pair.line}: no image '{_describe(key)}' among the {len(files)} faces")
            if len(hits) > 1:
                names = ", ".join(files[i] for i in hits[:3])
                raise BadInput(f"{path}:{pair.line}: '{_describe(key)}' is ambiguous ({names})")
            out.append(hits[0])
    same = np.array([p.same for p in lines], dtype=bool)
    folds = None
    if n_folds and n_folds > 1 and len(lines) % n_folds == 0:  # LFW: consecutive blocks are the folds
        folds = np.arange(len(lines)) // (len(lines) // n_folds)
    return Pairs(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), same, folds)
