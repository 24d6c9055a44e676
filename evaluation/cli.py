"""Commands for the detectors: ``homecare replay accel|events`` and ``homecare evaluate``.

``replay accel FILE...`` prints one JSON object per detected event. Exit status: 0 when
every file was read, 1 when any file was malformed (its error is on stderr, naming the
file and line; the other files are still replayed and their events printed).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from detectors.fall import FallSettings
from detectors.fall_model import Placement, placement_code
from homecare.runtime import load_settings

replay_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Replay recorded traces through detectors."
)


class Units(StrEnum):
    G = "g"
    MS2 = "ms2"


class WornAt(StrEnum):
    """Where the recorded wearable was worn (the fall detector's model for it)."""

    WRIST = "wrist"
    CHEST = "chest"
    WAIST = "waist"
    UNKNOWN = "unknown"

    @property
    def code(self) -> Placement:
        return placement_code(self.value)


PLACEMENT_HELP = "Where the wearable was worn: wrist, chest (pendant), waist (belt) or unknown."

MineDays = Annotated[
    float,
    typer.Option(
        "--mine-days",
        help="Also train on about this many simulated wearer-days of the placement's "
        "everyday movements (hard negatives; not the days --wear-days renders).",
        min=0,
    ),
]
TargetPerDay = Annotated[
    float | None,
    typer.Option(
        "--target-per-day",
        help="With --mine-days: raise the threshold until the out-of-fold false alarms "
        "per mined wearer-day are at most this.",
        min=0,
    ),
]
GetUp = Annotated[
    int,
    typer.Option(
        "--get-up",
        help="Also train on N copies of every recorded fall whose wearer gets up 1-6 s after "
        "the impact (recovered falls; never counted in the recorded people's figures).",
        min=0,
    ),
]
"""Options of both ``evaluate --cv`` and ``train-fall``."""


@replay_app.command("accel")
def replay_accel(
    files: Annotated[list[Path], typer.Argument(help="CSV traces t,ax,ay,az (plain or .gz).")],
    units: Annotated[Units, typer.Option(help="Units of ax,ay,az: g or m/s² (ms2).")] = Units.G,
    rate: Annotated[
        float | None, typer.Option(help="Sample rate in Hz (default: from t).", min=1)
    ] = None,
    hold_end: Annotated[
        float,
        typer.Option(
            "--hold-end", help="Extend each trace by its last posture for SECONDS.", min=0
        ),
    ] = 0.0,
    still_window: Annotated[
        float | None, typer.Option(help="Stillness window in seconds (default 10).", min=1)
    ] = None,
    placement: Annotated[WornAt, typer.Option(help=PLACEMENT_HELP)] = WornAt.UNKNOWN,
) -> None:
    """Replay accelerometer traces through the fall detector; one JSON line per event."""
    from evaluation.replay import replay_files

    settings = load_settings().detectors.fall  # the environment's thresholds, checked
    if still_window is not None:
        settings = FallSettings.model_validate(
            {**settings.model_dump(), "still_window_s": still_window}
        )
    events, errors = replay_files(
        files,
        units=units.value,
        rate=rate,
        settings=settings,
        hold_end_s=hold_end,
        placement=placement.code,
    )
    for error in errors:
        typer.echo(f"error: {error}", err=True)
    out = sys.stdout
    for event in events:
        out.write(json.dumps(event) + "\n")
    out.flush()
    if errors:
        raise typer.Exit(1)


@replay_app.command("events")
def replay_events(
    log: Annotated[Path, typer.Argument(help="A home's sensor log: CSV or the ADL datasets' TSV.")],
    learn_days: Annotated[
        float, typer.Option("--learn-days", help="Baselines from this many first days.", min=0)
    ] = 7.0,
) -> None:
    """Replay a home's sensor log through the routine detectors on its own clock; one JSON
    line per alert. Malformed rows are named on stderr (exit status 1); the rest is replayed."""
    from evaluation.home import replay_home
    from evaluation.homelog import read_home_log

    home = read_home_log(log)
    for error in home.errors:
        typer.echo(f"error: {error}", err=True)
    out = sys.stdout
    for alert in replay_home(home, learn_days=learn_days, thresholds=load_settings().detectors):
        out.write(json.dumps(alert) + "\n")
    out.flush()
    if home.errors:
        raise typer.Exit(1)


def evaluate_command(
    home: Annotated[
        Path | None,
        typer.Option("--home", help="A home's sensor log: false alarms and detection delay."),
    ] = None,
    learn_days: Annotated[
        float, typer.Option("--learn-days", help="With --home: baselines from these first days.")
    ] = 7.0,
    cuts: Annotated[int, typer.Option("--cuts", help="With --home: cut copies.", min=1)] = 200,
    replay_dir: Annotated[
        Path | None,
        typer.Option("--replay-dir", help="Recorded traces instead of the simulated cohort."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="With --replay-dir: file,subject,code,label.")
    ] = None,
    hold_end: Annotated[
        float, typer.Option("--hold-end", help="Extend each trace by its last posture.", min=0)
    ] = 0.0,
    rotate: Annotated[
        int | None, typer.Option("--rotate", help="Turn each trace by a random rotation (seed).")
    ] = None,
    resample: Annotated[
        float | None, typer.Option("--resample", help="Resample every trace to HZ.", min=1)
    ] = None,
    placement: Annotated[
        WornAt, typer.Option("--placement", help="With --replay-dir: " + PLACEMENT_HELP)
    ] = WornAt.UNKNOWN,
    cut_after: Annotated[
        float | None,
        typer.Option(
            "--cut-after",
            help="With --replay-dir: cut each fall trial SECONDS after its impact and let the "
            "wearer get up (a recovered fall; reported as a fall or a recovered one counts).",
            min=0,
        ),
    ] = None,
    in_bed: Annotated[
        str,
        typer.Option(
            "--in-bed",
            help="With --replay-dir: activity codes done in a bed (comma-separated, e.g. "
            "D12,D13,D14), watched by a bed sensor as a home's would be; default: no bed sensor.",
        ),
    ] = "",
    motions: Annotated[
        int | None,
        typer.Option(
            "--motions",
            help="Play every simulator motion of --placement N times (random orientation, "
            "at --resample HZ or 50): per motion, the share reported as a fall, a recovered "
            "fall, or either.",
            min=1,
        ),
    ] = None,
    cv: Annotated[
        int | None,
        typer.Option(
            "--cv",
            help="With --replay-dir: subject-wise K-fold cross-validation of the learned "
            "stage for --placement (train on some people, score the others).",
            min=2,
        ),
    ] = None,
    target_specificity: Annotated[
        float,
        typer.Option(
            help="With --cv: the threshold is picked for this specificity.", min=0.5, max=1
        ),
    ] = 0.97,
    simulate: Annotated[
        int,
        typer.Option(
            help="With --cv: add N simulated trials of each of --placement's simulator motions "
            "to training (figures stay the recordings').",
            min=0,
        ),
    ] = 0,
    mine_days: MineDays = 0.0,
    target_per_day: TargetPerDay = None,
    get_up: GetUp = 0,
    wear_days: Annotated[
        int | None,
        typer.Option(
            "--wear-days",
            help="False fall alarms per wearer-day: simulate N days of wear at --placement "
            "(unknown: wrist, chest and waist each); with --replay-dir: play every person's "
            "everyday-activity trials back to back instead (any N); with --cv too: each "
            "person judged by the model of the fold that never saw them.",
            min=1,
        ),
    ] = None,
    elders: Annotated[int, typer.Option(help="Simulated cohort: elders.", min=1)] = 100,
    days: Annotated[float, typer.Option(help="Simulated cohort: days.", min=0.1)] = 30.0,
    seed: Annotated[int, typer.Option(help="Simulated cohort: seed.")] = 0,
    history_days: Annotated[
        float,
        typer.Option(
            help="Cohort: days of routine to fit personal baselines on first (0: none).", min=0
        ),
    ] = 0.0,
    start: Annotated[
        datetime | None,
        typer.Option(
            help="Cohort: first day simulated (UTC unless an offset is given); the routines "
            "and the scenario mix depend on it (default: days + 1 days before today).",
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"],
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Cohort: folder for labels and report.json.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the full report as JSON here.")
    ] = None,
) -> None:
    """Measure the detectors: on a simulated cohort with labelled scenarios (default), or the
    fall detector on labelled recordings (--replay-dir, --labels), or a home's routine
    detectors on its sensor log (--home)."""
    if home is not None:
        evaluate_home_log(home, learn_days, cuts, seed, json_out)
        return
    if motions is not None:
        from evaluation.replay_eval import evaluate_motions

        table = evaluate_motions(motions, placement.code, resample or 50.0, seed)
        typer.echo(f"{'motion':<22} {'fall':>6} {'recov.':>6} {'either':>6}")
        for name, r in table.items():
            flag = "" if r["expect_fall"] else "  (no fall)"
            typer.echo(f"{name:<22} {r['fall']:6.3f} {r['fall_recovered']:6.3f} "
                       f"{r['any_fall']:6.3f}{flag}")  # fmt: skip
        if json_out is not None:
            json_out.write_text(json.dumps(table, indent=2) + "\n")
        return
    if wear_days is not None and not (cv is not None and replay_dir is not None):
        evaluate_wear(wear_days, placement.code, replay_dir, labels, resample, seed, json_out,
                      _codes(in_bed))  # fmt: skip
        return
    if replay_dir is None:
        from evaluation.cohort import evaluate_cohort
        from evaluation.cohort import summary as cohort_summary

        report = evaluate_cohort(
            elders=elders,
            days=days,
            seed=seed,
            history_days=history_days,
            thresholds=load_settings().detectors,
            start=None if start is None else _utc(start).timestamp(),
            out_dir=out,
            log=typer.echo,
        )
        typer.echo(cohort_summary(report))
        if json_out is not None:
            json_out.write_text(json.dumps(report, indent=2) + "\n")
        return
    if labels is None:
        typer.echo("error: --replay-dir needs --labels", err=True)
        raise typer.Exit(2)
    if cv is not None:
        evaluate_cv(replay_dir, labels, hold_end, resample, cv, target_specificity, json_out,
                    placement.code, simulate, mine_days, target_per_day, cut_after,
                    get_up, wear_days is not None)  # fmt: skip
        return
    evaluate_replay(replay_dir, labels, hold_end, rotate, resample, json_out, placement.code,
                    cut_after, _codes(in_bed))  # fmt: skip


def _codes(text: str) -> frozenset[str]:
    """Activity codes from a comma-separated option."""
    return frozenset(c.strip() for c in text.split(",") if c.strip())


def _utc(moment: datetime) -> datetime:
    """A moment given without an offset is UTC, as the cohort's days are."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def evaluate_replay(
    replay_dir: Path,
    labels: Path,
    hold_end: float,
    rotate: int | None,
    resample: float | None,
    json_out: Path | None,
    placement: Placement = Placement.UNKNOWN,
    cut_after: float | None = None,
    in_bed: frozenset[str] = frozenset(),
) -> None:
    """Per-trial sensitivity and specificity of the fall detector on labelled recordings."""
    from evaluation.replay_eval import evaluate, summary

    if not labels.is_file():
        typer.echo(f"error: labels file {labels} not found", err=True)
        raise typer.Exit(2)
    report = evaluate(
        replay_dir,
        labels,
        hold_end_s=hold_end,
        rotate=rotate,
        resample_hz=resample,
        placement=placement,
        cut_after_s=cut_after,
        in_bed=in_bed,
    )
    typer.echo(summary(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    if report["errors"]:
        for error in report["errors"]:
            typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


def evaluate_cv(
    replay_dir: Path,
    labels: Path,
    hold_end: float,
    resample: float | None,
    folds: int,
    target_specificity: float,
    json_out: Path | None,
    placement: Placement = Placement.UNKNOWN,
    simulate: int = 0,
    mine_days: float = 0.0,
    target_per_day: float | None = None,
    cut_after: float | None = None,
    get_up: int = 0,
    wear_day: bool = False,
) -> None:
    """Subject-wise cross-validation of the learned stage on labelled recordings (as
    ``train-fall`` trains it: the same seed, simulated trials of ``placement`` added).
    ``cut_after``: then every person's trials, each fall's wearer getting up (``--cut-after``),
    go through the whole detector with their fold's model: recovered falls out of fold.
    ``wear_day``: then every person's everyday activities back to back, with their fold's
    model: false alarms per wearer-day out of fold."""
    from detectors.fall_model import FallModels
    from evaluation.fall_train import GOT_UP, collect, cross_validate, gather
    from evaluation.replay_eval import evaluate, summary
    from evaluation.wear import recorded_day
    from evaluation.wear import summary as wear_summary

    if not labels.is_file():
        typer.echo(f"error: labels file {labels} not found", err=True)
        raise typer.Exit(2)
    errors: list[str] = []
    traces, trials, days = gather(placement, [(replay_dir, labels)], resample_hz=resample,
                                  simulate=simulate, mine_days=mine_days, get_up=get_up,
                                  log=errors.append)  # fmt: skip
    kept = [t for t in trials if not t.subject.startswith("sim-") and GOT_UP not in t.file]
    c = collect(traces, trials, hold_end_s=hold_end)
    report = cross_validate(c, folds=folds, target_specificity=target_specificity, days=days,
                            target_per_day=target_per_day,
                            keep_models=cut_after is not None or wear_day)  # fmt: skip
    report.pop("trial_scores")
    fold_models = report.pop("fold_models", {})
    report["errors"] = errors
    typer.echo(
        f"trials {len(kept)} ({int(report['falls'])} falls, {int(report['adl'])} ADL), "
        f"{len({t.subject for t in kept})} people, subject-wise {report['folds']}-fold"
        f"  hold-end {hold_end} s  resample {resample}"
    )
    typer.echo(
        f"threshold {report['threshold']:.4f}: sensitivity {report.get('sensitivity', 0):.4f}"
        f"  specificity {report.get('specificity', 0):.4f}"
    )
    for code, v in report["per_code"].items():
        if v["wrong"]:
            typer.echo(f"  {code}: wrong {v['wrong']}/{v['trials']}")
    if report["mined"]:
        m = report["mined"]
        typer.echo(
            f"mined wear: {m['false_alarms']} false alarms in {m['wearer_days']} "
            f"wearer-days ({m['per_wearer_day']} per wearer-day)"
        )
        typer.echo("threshold  sensitivity  specificity  per wearer-day")
        for r in report["trade_off"]:
            typer.echo(
                f"{r['threshold']:.4f}     {r.get('sensitivity', 0):.4f}       "
                f"{r.get('specificity', 0):.4f}       {r['per_wearer_day']:.4f}"
            )
    shared = {id(m): FallModels({placement: m}) for m in fold_models.values()}
    by_subject = {who: shared[id(m)] for who, m in fold_models.items()}
    if cut_after is not None:
        cut = evaluate(
            replay_dir, labels, hold_end_s=hold_end, resample_hz=resample, placement=placement,
            cut_after_s=cut_after, models_by_subject=by_subject,
        )  # fmt: skip
        typer.echo("each person's trials through the detector with their fold's model:")
        typer.echo(summary(cut))
        report["cut"] = cut
    if wear_day:
        day = recorded_day(replay_dir, labels, placement, resample_hz=resample,
                           models_by_subject=by_subject)  # fmt: skip
        typer.echo("each person's everyday activities back to back, with their fold's model:")
        typer.echo(wear_summary([day]))
        report["wear_day"] = day
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    if errors:
        for error in errors:
            typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


def train_fall_command(
    placement: Annotated[WornAt, typer.Argument(help="The placement the model is for.")],
    data: Annotated[
        list[Path],
        typer.Option(
            "--data", help="A folder of recordings with its labels.csv (repeat for several)."
        ),
    ],
    hold_end: Annotated[
        float, typer.Option("--hold-end", help="Extend each trace by its last posture.", min=0)
    ] = 30.0,
    resample: Annotated[
        float | None, typer.Option("--resample", help="Resample every trace to HZ.", min=1)
    ] = None,
    folds: Annotated[int, typer.Option(help="Subject-wise cross-validation folds.", min=2)] = 6,
    target_specificity: Annotated[
        float, typer.Option(help="Pick the threshold for this specificity.", min=0.5, max=1)
    ] = 0.97,
    simulate: Annotated[
        int,
        typer.Option(
            help="Add this many simulated trials of each of the placement's simulator "
            "motions (device_sim.motions); thresholds and figures stay the recordings'.",
            min=0,
        ),
    ] = 0,
    mine_days: MineDays = 0.0,
    target_per_day: TargetPerDay = None,
    get_up: GetUp = 0,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the model and its card (default: shipped).")
    ] = None,
) -> None:
    """Train the fall detector's learned stage for PLACEMENT from named datasets (fixed
    seed); writes fall-<placement>.npz and its card. ``unknown``: the model a wearable of
    unknown placement asks besides the rules, trained on the wrist's movements."""
    from detectors.fall_model import MODEL_DIR
    from evaluation.fall_train import train_placement

    sources = [(d, d / "labels.csv") for d in data]
    for _, lab in sources:
        if not lab.is_file():
            typer.echo(f"error: labels file {lab} not found", err=True)
            raise typer.Exit(2)
    command = (
        f"homecare train-fall {placement.value} "
        + " ".join(f"--data {d.name}" for d in data)
        + f" --hold-end {hold_end:g}"
        + (f" --resample {resample:g}" if resample else "")
        + f" --folds {folds} --target-specificity {target_specificity:g} --simulate {simulate}"
        + (f" --mine-days {mine_days:g}" if mine_days else "")
        + (f" --target-per-day {target_per_day:g}" if target_per_day is not None else "")
        + (f" --get-up {get_up}" if get_up else "")
    )
    card = train_placement(
        placement.code,
        sources,
        out_dir=out or MODEL_DIR,
        hold_end_s=hold_end,
        resample_hz=resample,
        folds=folds,
        target_specificity=target_specificity,
        simulate=simulate,
        mine_days=mine_days,
        target_per_day=target_per_day,
        get_up=get_up,
        command=command,
        log=typer.echo,
    )
    cv = card["cross_validation"]
    typer.echo(
        f"fall-{placement.value}: {card['bytes']} bytes, threshold {card['threshold']:.4f}, "
        f"subject-wise sensitivity {cv.get('sensitivity')} specificity {cv.get('specificity')}"
    )


def evaluate_wear(
    days: int,
    placement: Placement,
    replay_dir: Path | None,
    labels: Path | None,
    resample: float | None,
    seed: int,
    json_out: Path | None,
    in_bed: frozenset[str] = frozenset(),
) -> None:
    """False fall alarms per wearer-day, simulated or from recordings back to back."""
    from evaluation.wear import recorded_day, simulated_days, summary

    reports = []
    if replay_dir is not None:
        if labels is None or not labels.is_file():
            typer.echo("error: --replay-dir needs --labels (an existing file)", err=True)
            raise typer.Exit(2)
        reports.append(
            recorded_day(replay_dir, labels, placement, resample_hz=resample, in_bed=in_bed)
        )
    else:
        places = [placement] if placement != Placement.UNKNOWN else [
            Placement.WRIST, Placement.CHEST, Placement.WAIST
        ]  # fmt: skip
        for p in places:
            typer.echo(f"simulating {days} wearer-days at the {p.name.lower()} ...")
            reports.append(simulated_days(p, days, seed=seed))
    typer.echo(summary(reports))
    if json_out is not None:
        json_out.write_text(json.dumps(reports, indent=2, default=float) + "\n")


def evaluate_home_log(
    path: Path, learn_days: float, cuts: int, seed: int, json_out: Path | None
) -> None:
    """False alarms per day and detection delay of the routine detectors on a home's log."""
    from evaluation.home import evaluate_home, summary
    from evaluation.homelog import read_home_log

    home = read_home_log(path)
    for error in home.errors:
        typer.echo(f"error: {error}", err=True)
    try:
        report = evaluate_home(
            home, learn_days=learn_days, cuts=cuts, seed=seed,
            thresholds=load_settings().detectors,
        ).as_dict()  # fmt: skip
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    if home.errors:
        raise typer.Exit(1)
