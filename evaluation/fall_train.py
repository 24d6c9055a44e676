"""Train the fall detector's second stage per placement, and judge it person by person.

Every labelled trial is replayed through the first stage in candidate mode
(:class:`~detectors.fall.FallDetector` with ``candidates=True``): each impact candidate
comes out with its features (:data:`~detectors.fall_model.FEATURES`). In a fall trial the
candidate with the largest impact is the fall; its other candidates (steps before the
slip) are left out of training, since no one labelled them. Every candidate of an
everyday-activity trial is a non-fall. A trial counts as a detected fall when any of its
candidates scores at or above the threshold.

Cross-validation is subject-wise (:class:`~sklearn.model_selection.GroupKFold` on the
participants): a fold's people are scored by a model that never saw them. The decision
threshold is the lowest score whose out-of-fold specificity (per trial) reaches
``target_specificity``; the shipped model is then trained on everyone with it.

The model is scikit-learn's :class:`~sklearn.ensemble.GradientBoostingClassifier`, shallow
and small, written as arrays (:class:`~detectors.fall_model.TreeModel`, no pickle) with a
card beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import GroupKFold

from detectors.fall import FallSettings
from detectors.fall_model import FEATURES, FallModels, Placement, TreeModel
from evaluation.replay import Trace, replay
from evaluation.replay_eval import Label, load_traces, read_labels
from evaluation.replay_eval import get_up as got_up

__all__ = [
    "Candidates",
    "collect",
    "cross_validate",
    "export",
    "fit",
    "gather",
    "load_traces",
    "pick_threshold",
    "rates",
    "subject_folds",
    "train_placement",
    "trial_scores",
    "write_card",
]

SEED = 20261207
PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 4,
    "learning_rate": 0.1,
    "subsample": 0.8,
    "min_samples_leaf": 5,
}
"""The ensemble's size: 200 trees of up to 31 nodes, about 35 KB as compressed arrays
(deeper than the 150 trees of depth 3 trained without mined negatives: with thousands of
them, 150 and 300 trees of depth 3 found 0.880 and 0.903 of the recorded falls out of
fold, this one 0.914: docs/falls.md)."""

MOVES_LIKE = {Placement.UNKNOWN: Placement.WRIST}
"""Whose simulated motions and wearer-days a placement's model trains on. An unknown
placement's model decides together with the rules (:func:`detectors.fall.decide`), which
judge belts and pendants: it is the wrist's partner, trained on the wrist's movements."""


def movements_of(placement: Placement) -> Placement:
    """The placement whose simulated movements ``placement``'s model learns (:data:`MOVES_LIKE`)."""
    return MOVES_LIKE.get(placement, placement)

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Candidates:
    """Impact candidates of labelled trials: features, their trial and its label."""

    x: F64
    """candidates × FEATURES"""
    trial: npt.NDArray[np.int64]
    """index into ``trials`` of each candidate"""
    train: npt.NDArray[np.bool_]
    """labelled for training (a fall trial's largest impact, or any everyday one's)"""
    trials: list[Label]

    @property
    def y(self) -> npt.NDArray[np.bool_]:
        return np.array([self.trials[t].fall for t in self.trial], bool)

    @property
    def groups(self) -> list[str]:
        return [self.trials[t].subject for t in self.trial]


SIM_PREFIX = "sim-"
"""Subjects of simulated trials (:func:`simulated`) are named so."""
GOT_UP = "~got-up-"
"""Copies of recorded falls whose wearer gets up (:func:`gather`, ``get_up``) are named
``<file>~got-up-<k>``: trained on, never counted in the recorded people's figures."""
MINED_CODE = "wear"
"""The activity code of mined sequences of everyday movements (hard negatives)."""
MINE_MOVEMENTS = 40
"""Movements per mined sequence."""
MOVEMENTS_PER_DAY = 160.0
"""About how many movements a simulated day holds (16 h awake, one every 60–600 s): only
to size the mining; each sequence's wearer-days are computed from its own movements."""


def simulated(
    names: Sequence[str], per_motion: int, *, people: int = 4, rate: float = 40.0, seed: int = SEED
) -> tuple[list[Trace], list[Label]]:
    """Simulated trials of ``names`` (:mod:`device_sim.motions`), randomly oriented, spread
    over ``people`` simulated subjects so that cross-validation stays subject-wise."""
    from device_sim.motions import motion

    traces: list[Trace] = []
    labels: list[Label] = []
    for i, name in enumerate(names):
        for k in range(per_motion):
            rng = np.random.default_rng([seed, i, k])
            _, xyz, info = motion(name, rng, rate=rate, orientation="random")
            file = f"{SIM_PREFIX}{name}-{k}"
            traces.append(Trace(file, xyz, rate))
            labels.append(Label(file, f"{SIM_PREFIX}{k % people}", name, bool(info["expect_fall"])))
    return traces, labels


def collect(
    traces: Sequence[Trace],
    labels: Sequence[Label],
    *,
    hold_end_s: float,
    settings: FallSettings | None = None,
) -> Candidates:
    """Every first-stage candidate of every trial, with its features."""
    events = replay(
        traces,
        settings=settings,
        hold_end_s=hold_end_s,
        models=FallModels(),
        candidates=True,
    )
    index = {tr.name: i for i, tr in enumerate(traces)}
    rows: list[list[float]] = []
    trial: list[int] = []
    for e in events:
        rows.append([float(e.get(f, 0.0)) for f in FEATURES])
        trial.append(index[e["file"]])
    x = np.array(rows, np.float64).reshape(-1, len(FEATURES))
    t = np.array(trial, np.int64)
    train = np.ones(len(t), bool)
    falls = np.array([labels[i].fall for i in t], bool)
    peak = x[:, FEATURES.index("peak_g")] if len(x) else np.zeros(0)
    for i in np.unique(t[falls]):
        mine = np.flatnonzero(t == i)
        train[mine] = False
        train[mine[np.argmax(peak[mine])]] = True
    return Candidates(x, t, train, list(labels))


MINED_WEIGHT = 0.3
"""The mined candidates together weigh this much of the other everyday candidates of
training: thousands of easy negatives must not drown the recorded falls."""


def fit(
    c: Candidates,
    mask: npt.NDArray[np.bool_],
    seed: int = SEED,
    mined: npt.NDArray[np.bool_] | None = None,
) -> GradientBoostingClassifier:
    """A model trained on the training candidates of the trials in ``mask`` (per candidate);
    ``mined`` candidates (hard negatives) share :data:`MINED_WEIGHT` between them."""
    sel = mask & c.train
    weight = np.ones(len(c.x))
    if mined is not None and (sel & mined).any():
        others = int((sel & ~mined & ~c.y).sum())
        weight[mined] = MINED_WEIGHT * max(others, 1) / int((sel & mined).sum())
    model = GradientBoostingClassifier(random_state=seed, **PARAMS)
    model.fit(c.x[sel], c.y[sel], sample_weight=weight[sel])
    return model


def trial_scores(c: Candidates, scores: F64) -> F64:
    """Each trial's largest candidate score (0 for a trial without a candidate)."""
    out = np.zeros(len(c.trials))
    np.maximum.at(out, c.trial, scores)
    return out


def rates(trials: Sequence[Label], score: F64, threshold: float) -> dict[str, float]:
    fall = np.array([t.fall for t in trials], bool)
    hit = score >= threshold
    out = {"falls": float(fall.sum()), "adl": float((~fall).sum())}
    if fall.any():
        out["sensitivity"] = round(float(hit[fall].mean()), 4)
    if (~fall).any():
        out["specificity"] = round(float((~hit[~fall]).mean()), 4)
    return out


def pick_threshold(trials: Sequence[Label], score: F64, target_specificity: float) -> float:
    """The lowest threshold whose specificity over the everyday trials reaches the target."""
    adl = np.sort(np.array([s for s, t in zip(score, trials, strict=True) if not t.fall]))
    if not len(adl):
        return 0.5
    allowed = int(np.floor((1 - target_specificity) * len(adl)))  # false alarms allowed
    k = len(adl) - allowed - 1  # the largest ADL score that must stay below
    return float(np.nextafter(adl[k], 1.0)) if k >= 0 else 0.0


def subject_folds(
    groups: npt.NDArray[np.str_], k: int
) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    """Subject-wise folds (train, test indices): the recorded people by
    :class:`~sklearn.model_selection.GroupKFold` among themselves, the simulated people
    dealt round the folds: thousands of mined candidates of a simulated person must not
    fill folds of their own and leave the recorded people in fewer, larger ones."""
    sim = np.char.startswith(groups.astype(str), SIM_PREFIX)
    real_idx = np.flatnonzero(~sim)
    if len(set(groups[real_idx].tolist())) < k:
        return list(GroupKFold(n_splits=k).split(groups, groups, groups))
    fold = np.empty(len(groups), np.int64)
    for f, (_, test) in enumerate(
        GroupKFold(n_splits=k).split(real_idx, real_idx, groups[real_idx])
    ):
        fold[real_idx[test]] = f
    for f, who in enumerate(sorted(set(groups[sim].tolist()))):
        fold[groups == who] = f % k
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def worn(c: Candidates) -> npt.NDArray[np.bool_]:
    """Candidates that the detector can call a fall at all (worn, not in free flight:
    :func:`detectors.fall.decide`)."""
    s = FallSettings()
    return (c.x[:, FEATURES.index("flight_s")] < s.drop_s) & (
        c.x[:, FEATURES.index("activity_g")] >= s.offbody_g
    )


def day_threshold(scores: F64, days: float, target_per_day: float) -> float:
    """The lowest threshold that leaves at most ``target_per_day`` alarms per wearer-day
    among candidate ``scores`` of ``days`` wearer-days of everyday movements."""
    ranked = np.sort(scores)[::-1]
    allowed = int(np.floor(target_per_day * days))
    if allowed >= len(ranked):
        return 0.0
    return float(np.nextafter(ranked[allowed], 1.0))


def trade_off(
    trials: Sequence[Label], score: F64, wear: F64, days: float, thresholds: Sequence[float]
) -> list[dict[str, float]]:
    """Sensitivity and specificity (recorded trials) against false alarms per wearer-day
    (mined wear candidates' scores ``wear``), one row per threshold."""
    rows = []
    for th in thresholds:
        row = {"threshold": round(float(th), 4), **rates(trials, score, th)}
        row["per_wearer_day"] = round(float((wear >= th).sum()) / days, 4) if days else 0.0
        rows.append(row)
    return rows


def cross_validate(
    c: Candidates,
    *,
    folds: int = 5,
    target_specificity: float = 0.97,
    seed: int = SEED,
    days: dict[str, float] | None = None,
    target_per_day: float | None = None,
    keep_models: bool = False,
) -> dict[str, Any]:
    """Out-of-fold trial scores, subject-wise, and the figures at the picked threshold.

    With ``days`` (mined wear sequences by file, :func:`gather`) and ``target_per_day``
    the threshold is also raised until the out-of-fold false alarms per wearer-day of
    those sequences reach the target. ``keep_models``: the report's ``fold_models`` maps
    each person to the fold's model (exported with the picked threshold), so that other
    recordings of them can be judged out of fold by the whole detector."""
    oof = np.zeros(len(c.x))
    days = days or {}
    mined_trial = np.array([t.file in days for t in c.trials], bool)
    groups = np.array(c.groups)
    subjects = sorted(set(groups.tolist()))
    k = min(folds, len(subjects))
    per_fold: list[dict[str, Any]] = []
    fitted: list[GradientBoostingClassifier] = []
    for train_idx, test_idx in subject_folds(groups, k):
        mask = np.zeros(len(c.x), bool)
        mask[train_idx] = True
        model = fit(c, mask, seed, mined_trial[c.trial])
        oof[test_idx] = model.predict_proba(c.x[test_idx])[:, 1]
        per_fold.append({"subjects": sorted(set(groups[test_idx].tolist()))})
        if keep_models:
            fitted.append(model)
    score = trial_scores(c, oof)
    real = [i for i, t in enumerate(c.trials)
            if not t.subject.startswith(SIM_PREFIX) and GOT_UP not in t.file]  # fmt: skip
    sim = [i for i, t in enumerate(c.trials)
           if t.subject.startswith(SIM_PREFIX) and t.file not in days]  # fmt: skip
    mined = mined_trial[c.trial] & worn(c) if len(c.x) else np.zeros(0, bool)
    wear, wear_days = oof[mined], float(sum(days.values()))
    # the threshold and the headline figures are the recorded people's
    real_trials = [c.trials[i] for i in real]
    threshold = pick_threshold(real_trials, score[real], target_specificity)
    by_spec = threshold
    if days and target_per_day is not None:
        threshold = max(threshold, day_threshold(wear, wear_days, target_per_day))
    for fold in per_fold:
        sel = [i for i in real if c.trials[i].subject in fold["subjects"]]
        fold.update(rates([c.trials[i] for i in sel], score[sel], threshold))
        fold["subjects"] = [p for p in fold["subjects"] if not p.startswith(SIM_PREFIX)]
    wrong: dict[str, list[int]] = {}
    for t, s in zip(c.trials, score, strict=True):
        if t.file in days or GOT_UP in t.file:
            continue
        entry = wrong.setdefault(t.code, [0, 0])
        entry[0] += 1
        entry[1] += int((s >= threshold) != t.fall)
    curve = sorted({by_spec, threshold, *np.quantile(score[real], np.linspace(0.5, 1, 11))})
    fold_models: dict[str, TreeModel] = {}
    for fold, model in zip(per_fold, fitted, strict=False):
        tree = export(model, threshold)
        fold_models |= dict.fromkeys(fold["subjects"], tree)
    if fold_models:  # people without a candidate are in no fold: no model saw anything of theirs
        first = next(iter(fold_models.values()))
        fold_models |= {t.subject: first for t in c.trials if t.subject not in fold_models}
    return {
        "folds": k,
        "threshold": threshold,
        "threshold_by_specificity": by_spec,
        "target_per_day": target_per_day,
        "mined": {
            "wearer_days": round(wear_days, 2),
            "sequences": len(days),
            "candidates": int(mined.sum()),
            "false_alarms": int((wear >= threshold).sum()),
            "per_wearer_day": round(float((wear >= threshold).sum()) / wear_days, 4),
        }
        if days
        else None,
        "trade_off": trade_off(real_trials, score[real], wear, wear_days, curve) if days else [],
        **rates(real_trials, score[real], threshold),
        "simulated": rates([c.trials[i] for i in sim], score[sim], threshold) if sim else None,
        "per_fold": per_fold,
        "per_code": {code: {"trials": n, "wrong": w} for code, (n, w) in sorted(wrong.items())},
        "trial_scores": score,
        **({"fold_models": fold_models} if keep_models else {}),
    }


def export(model: GradientBoostingClassifier, threshold: float) -> TreeModel:
    """The trained ensemble as arrays (trees padded to the largest node count)."""
    trees = [est[0].tree_ for est in model.estimators_]
    nodes = max(t.node_count for t in trees)
    shape = (len(trees), nodes)
    left = np.full(shape, -1, np.int64)
    right = np.full(shape, -1, np.int64)
    feature = np.zeros(shape, np.int64)
    split = np.zeros(shape)
    value = np.zeros(shape)
    for i, t in enumerate(trees):
        n = t.node_count
        left[i, :n], right[i, :n] = t.children_left, t.children_right
        feature[i, :n] = np.maximum(t.feature, 0)
        split[i, :n] = t.threshold
        value[i, :n] = t.value[:, 0, 0]
    prior = float(model.init_.class_prior_[1])
    base = float(np.log(prior / (1 - prior)))
    return TreeModel.from_arrays(
        features=FEATURES, base=base, rate=float(model.learning_rate), threshold=threshold,
        left=left, right=right, feature=feature, split=split, value=value,
    )  # fmt: skip


def write_card(path: Path, card: dict[str, Any]) -> None:
    """The model card: what it was trained on, how, and how it did on unseen people."""
    cv = card["cross_validation"]
    moves = card.get("movements", card["placement"])
    lines = [
        f"# Fall model card: {card['placement']}",
        "",
        f"- Trained: {card['date']} by `{card['command']}` (seed {card['seed']}).",
        f"- Data: {', '.join(card['datasets'])}; {card['trials']} trials "
        f"({card['fall_trials']} falls, {card['adl_trials']} everyday activities), "
        f"{card['subjects']} people, {card['candidates']} impact candidates.",
        f"- Simulated trials added: {card['simulated_per_motion']} per `device_sim.motions` "
        f"motion of the {moves}, over 4 simulated people (their own folds).",
        f"- Hard negatives mined: {card.get('mined_wearer_days', 0)} simulated wearer-days "
        f"of the {moves}'s everyday movements (`--mine-days`, `evaluation.wear.mined_wear`: "
        f"other seeds than `homecare evaluate --wear-days`), in the simulated people's folds.",
        f"- Copies of the recorded falls whose wearer gets up 1-6 s after the impact "
        f"(`--get-up`, `evaluation.replay_eval.get_up`): {card.get('got_up_copies', 0)}, "
        f"trained on in their person's fold, not counted in the trials above or the figures.",
        f"- Trace extension: {card['hold_end_s']} s of the final posture (`--hold-end`); "
        f"resampled to {card['resample_hz']} Hz.",
        f"- Model: scikit-learn {card['sklearn']} GradientBoostingClassifier {card['params']}, "
        f"{card['bytes']} bytes as arrays.",
        f"- Features (orientation-free): {', '.join(FEATURES)}.",
        f"- Threshold {card['threshold']:.4f}: the lowest out-of-fold score with everyday-"
        f"activity specificity ≥ {card['target_specificity']}"
        + (
            f" and at most {card['target_per_day']} out-of-fold false alarms per mined wearer-day"
            if card.get("target_per_day") is not None
            else ""
        )
        + ".",
        "",
        f"## Subject-wise {cv['folds']}-fold cross-validation (per trial)",
        "",
        f"Recorded people: sensitivity {cv['sensitivity']:.4f}, specificity "
        f"{cv['specificity']:.4f}."
        + (f" Simulated: {cv['simulated']}." if cv.get("simulated") else ""),
        "",
        "| held-out people | falls | everyday | sensitivity | specificity |",
        "|---|---|---|---|---|",
    ]
    for f in cv["per_fold"]:
        lines.append(
            f"| {' '.join(f['subjects'])} | {int(f['falls'])} | {int(f['adl'])} | "
            f"{f.get('sensitivity', float('nan')):.3f} | {f.get('specificity', float('nan')):.3f} |"
        )
    if cv.get("mined"):
        m = cv["mined"]
        lines += [
            "",
            f"Mined wear, out of fold: {m['false_alarms']} false alarms in "
            f"{m['wearer_days']} wearer-days ({m['per_wearer_day']} per wearer-day).",
            "",
            "Trade-off (out of fold): threshold, sensitivity, specificity, false "
            "alarms per mined wearer-day:",
            "",
            "| threshold | sensitivity | specificity | per wearer-day |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r['threshold']:.4f} | {r.get('sensitivity', 0):.4f} | "
                  f"{r.get('specificity', 0):.4f} | {r['per_wearer_day']:.4f} |"
                  for r in cv["trade_off"]]  # fmt: skip
    lines += ["", "Wrong per activity code (out of fold):", ""]
    lines += [f"- {code}: {v['wrong']}/{v['trials']}" for code, v in cv["per_code"].items()
              if v["wrong"]]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def gather(
    placement: Placement,
    sources: Sequence[tuple[Path, Path]],
    *,
    resample_hz: float | None = None,
    simulate: int = 0,
    mine_days: float = 0.0,
    get_up: int = 0,
    seed: int = SEED,
    log: Any = print,
) -> tuple[list[Trace], list[Label], dict[str, float]]:
    """The labelled trials of every source (unreadable ones logged and left out), plus
    ``simulate`` simulated trials of each of the placement's simulator motions, plus about
    ``mine_days`` simulated wearer-days of the placement's everyday movements
    (:func:`~evaluation.wear.mined_wear`: hard negatives) with the wearer-days each
    stands for (by trial file)."""
    traces: list[Trace] = []
    trials: list[Label] = []
    for replay_dir, labels_csv in sources:
        got, kept, errors = load_traces(
            replay_dir, read_labels(labels_csv), resample_hz=resample_hz
        )
        for err in errors:
            log(f"left out: {err}")
        traces += [Trace(f"{replay_dir}/{t.name}", t.xyz, t.rate) for t in got]
        trials += kept
        for k in range(get_up):  # the same falls, the wearer getting up 1-6 s after the impact
            for i, (tr, lab) in enumerate(zip(got, kept, strict=True)):
                if lab.fall:
                    rng = np.random.default_rng([seed, 17, k, i])
                    xyz = got_up(tr.xyz, tr.rate, float(rng.uniform(1.0, 6.0)), rng)
                    file = f"{replay_dir}/{tr.name}{GOT_UP}{k}"
                    traces.append(Trace(file, xyz, tr.rate))
                    trials.append(Label(file, lab.subject, lab.code, True))
    if simulate:
        from device_sim.motions import JUDGED_ONLY, MOTIONS

        like = movements_of(placement).name.lower()
        names = [n for n in MOTIONS if n.startswith(f"{like}_") and n not in JUDGED_ONLY]
        got, kept = simulated(names, simulate, rate=resample_hz or 50.0, seed=seed)
        traces += got
        trials += kept
    days: dict[str, float] = {}
    if mine_days > 0:
        from evaluation.wear import mined_wear

        rate = resample_hz or 50.0
        per_seq = MINE_MOVEMENTS / MOVEMENTS_PER_DAY  # about a quarter of a day each
        for k, (xyz, d) in enumerate(
            mined_wear(movements_of(placement), max(1, round(mine_days / per_seq)), MINE_MOVEMENTS,
                       rate=rate, seed=seed)
        ):  # fmt: skip
            file = f"{SIM_PREFIX}wear-{k}"
            traces.append(Trace(file, xyz, rate))
            trials.append(Label(file, f"{SIM_PREFIX}{k % 4}", MINED_CODE, False))
            days[file] = d
    return traces, trials, days


def train_placement(
    placement: Placement,
    sources: Sequence[tuple[Path, Path]],
    *,
    out_dir: Path,
    hold_end_s: float = 30.0,
    resample_hz: float | None = None,
    folds: int = 5,
    target_specificity: float = 0.97,
    simulate: int = 0,
    mine_days: float = 0.0,
    target_per_day: float | None = None,
    get_up: int = 0,
    seed: int = SEED,
    command: str = "",
    log: Any = print,
) -> dict[str, Any]:
    """Train one placement's model from (replay_dir, labels.csv) sources; write
    ``fall-<placement>.npz`` and its card ``.md`` (and ``.json``) into ``out_dir``."""
    import sklearn

    traces, trials, days = gather(placement, sources, resample_hz=resample_hz,
                                  simulate=simulate, mine_days=mine_days, get_up=get_up,
                                  seed=seed, log=log)  # fmt: skip
    log(f"{len(traces)} trials read; collecting candidates ...")
    c = collect(traces, trials, hold_end_s=hold_end_s)
    log(f"{len(c.x)} candidates ({int(c.train.sum())} labelled); cross-validating ...")
    cv = cross_validate(c, folds=folds, target_specificity=target_specificity, seed=seed,
                        days=days, target_per_day=target_per_day)  # fmt: skip
    log(f"out of fold: sensitivity {cv.get('sensitivity')} specificity {cv.get('specificity')}")
    mined = np.array([trials[t].file in days for t in c.trial], bool)
    copies = sum(GOT_UP in t.file for t in trials)
    model = export(fit(c, np.ones(len(c.x), bool), seed, mined), cv["threshold"])
    name = f"fall-{placement.name.lower()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / f"{name}.npz")
    cv.pop("trial_scores")
    card = {
        "placement": placement.name.lower(),
        "movements": movements_of(placement).name.lower(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": command,
        "seed": seed,
        "datasets": [d.name for d, _ in sources],
        "trials": len(trials) - len(days) - copies,
        "fall_trials": sum(t.fall for t in trials) - copies,
        "got_up_copies": copies,
        "adl_trials": sum(not t.fall for t in trials) - len(days),
        "subjects": len({t.subject for t in trials}),
        "simulated_per_motion": simulate,
        "mined_wearer_days": round(sum(days.values()), 2),
        "target_per_day": target_per_day,
        "candidates": len(c.x),
        "hold_end_s": hold_end_s,
        "resample_hz": resample_hz,
        "sklearn": sklearn.__version__,
        "params": PARAMS,
        "features": list(FEATURES),
        "threshold": cv["threshold"],
        "target_specificity": target_specificity,
        "bytes": (out_dir / f"{name}.npz").stat().st_size,
        "cross_validation": cv,
    }
    write_card(out_dir / f"{name}.md", card)
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
