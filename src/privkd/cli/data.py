"""``privkd data info``, ``privkd data import FORMAT SRC DST.h5`` (one subcommand per supported layout)
and ``privkd data synth biovid DST.h5`` (a BioVid-sized stand-in for scale checks).

Each import command only parses options and calls its importer in :mod:`privkd.data.importers`;
every layout problem surfaces as a :class:`~privkd.errors.DatasetError` naming the source
file, which the app prints as one message without a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from privkd.cli.console import console
from privkd.errors import PrivkdError
from privkd.paths import refuse_output_onto_inputs

__all__ = ["data_app", "import_app", "parse_pairs", "parse_window", "synth_app"]

data_app = typer.Typer(no_args_is_help=True, help="Inspect and prepare datasets.")
import_app = typer.Typer(no_args_is_help=True, help="Convert a dataset layout into a privkd HDF5 file.")
synth_app = typer.Typer(no_args_is_help=True, help="Write a synthetic dataset the size and layout of a real one.")
data_app.add_typer(import_app, name="import")
data_app.add_typer(synth_app, name="synth")


@data_app.command("info")
def info(path: Annotated[Path, typer.Argument(help="A privkd HDF5 dataset, or 'embedded'.")]) -> None:
    """Print a dataset's modalities, shapes, classes and subjects (after validating it)."""
    from privkd.data import describe, validate_dataset
    from privkd.data.embedded import embedded_dataset_path

    resolved = embedded_dataset_path() if str(path) == "embedded" else path
    # markup=False: text such as [eda.mean, ...] would be read as a rich style tag and vanish;
    # soft_wrap=True: long lines (the description) are not cut by inserted newlines
    console.print(describe(validate_dataset(resolved)), highlight=False, markup=False, soft_wrap=True)


Src = Annotated[Path, typer.Argument(help="Root folder (or file) of the layout to import.")]
Dst = Annotated[Path, typer.Argument(help="The privkd HDF5 file to write (written atomically).")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")]


def parse_pairs(option: str, items: list[str], convert: Callable[[str], object] = str) -> dict[str, object]:
    """``["eda=^gsr_", ...]`` → ``{"eda": "^gsr_"}``, naming the option on a malformed item."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise PrivkdError(f"{option} {item!r} is not NAME=VALUE", f"write e.g. {option} eda=...")
        try:
            pairs[name] = convert(value)
        except ValueError as err:
            raise PrivkdError(f"{option} {item!r}: {err}", f"give a valid value after '{name}='") from err
    return pairs


def parse_window(option: str, text: str | None) -> tuple[float, float] | None:
    """``"2-5"`` or ``"2,5"`` seconds → ``(2.0, 5.0)``."""
    if text is None:
        return None
    parts = text.replace(",", "-").split("-")
    try:
        start, end = (float(p) for p in parts)
    except ValueError:
        raise PrivkdError(f"{option} {text!r} is not START-END in seconds", f"write e.g. {option} 2-5") from None
    return start, end


def _checked(src: Path, dst: Path) -> None:
    """Refuse, before reading anything, a DST that is SRC, a file of SRC's tree or a saved student /
    run directory's file (``data import table X.csv X.csv`` used to replace the table with HDF5)."""
    refuse_output_onto_inputs("DST", dst, [("SRC", src)], example=f"{src.stem or 'dataset'}.h5")


def _finished(dst: Path, extra: list[str] | None = None) -> None:
    """Print what was written, as ``privkd data info`` would, then the importer's ``extra`` lines.

    Printed without rich markup (a description such as ``eda = [eda.mean, eda.slope]`` holds
    text that rich would take for a style tag and drop) and without inserted line breaks.
    """
    from privkd.data import describe, read_info

    console.print("\n".join([describe(read_info(dst)), *(extra or [])]), highlight=False, markup=False,
                  soft_wrap=True)
    console.print(f"wrote [bold]{escape(str(dst))}[/]", highlight=False)


@import_app.command("biovid")
def biovid(
    src: Src,
    dst: Dst,
    classes: Annotated[str, typer.Option(help="Comma-separated classes, in label order (BL1,PA1,...,PA4).")] = "BL1,PA4",
    signals: Annotated[str, typer.Option(help="Comma-separated biosignals: eda (gsr), ecg, emg_trapezius; part B also emg_corrugator, emg_zygomaticus.")] = "eda",
    signal_window: Annotated[str, typer.Option(help="Seconds of each clip kept for the biosignals, START-END.")] = "2-5",
    signal_format: Annotated[str, typer.Option(help="'spectrogram' (log, normalised) or 'raw'.")] = "spectrogram",
    video: Annotated[bool, typer.Option(help="Import the face videos.")] = True,
    frames: Annotated[int, typer.Option(help="Frames per clip (TSN-style segment sampling).")] = 16,
    frame_size: Annotated[int, typer.Option(help="Side of the square frames, in pixels.")] = 112,
    sampling_rate: Annotated[float, typer.Option(help="Biosignal sampling rate in Hz (BioVid: 512).")] = 512.0,
    no_progress: NoProgress = False,
) -> None:
    """BioVid Heat Pain parts A/B: video/<subject>/*.mp4 and biosignals_filtered/<subject>/*_bio.csv."""
    _checked(src, dst)
    from privkd.data.importers.biovid import import_biovid

    import_biovid(src, dst, classes=classes.split(","), signals=signals.split(","),
                  signal_window=parse_window("--signal-window", signal_window), signal_format=signal_format,
                  video=video, frames=frames, frame_size=frame_size, sampling_rate=sampling_rate,
                  progress=not no_progress)
    _finished(dst)


@import_app.command("affwild2")
def affwild2(
    src: Src,
    dst: Dst,
    clip_frames: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    frame_step: Annotated[int, typer.Option(help="Take every n-th frame inside a clip.")] = 1,
    clip_hop: Annotated[int | None, typer.Option(help="Frames between clip starts (default: clips do not overlap).")] = None,
    frame_size: Annotated[int, typer.Option(help="Side of the square frames, in pixels.")] = 112,
    fps: Annotated[float, typer.Option(help="Video frame rate, to cut the matching audio.")] = 30.0,
    n_mels: Annotated[int, typer.Option(help="Mel bands of the audio spectrogram.")] = 64,
    no_progress: NoProgress = False,
) -> None:
    """Affwild2 valence/arousal: cropped_aligned/, annotations/VA_Estimation_Challenge/, audio/<video>.wav."""
    _checked(src, dst)
    from privkd.data.importers.affwild2 import import_affwild2

    import_affwild2(src, dst, clip_frames=clip_frames, frame_step=frame_step, clip_hop=clip_hop,
                    frame_size=frame_size, fps=fps, n_mels=n_mels, progress=not no_progress)
    _finished(dst)


@import_app.command("features")
def features(
    src: Src,
    dst: Dst,
    subject_column: Annotated[str, typer.Option(help="labels.csv column whose values are the fold groups (sessions: leave-one-session-out).")] = "session",
    label_column: Annotated[str, typer.Option(help="labels.csv column with the class label.")] = "label",
    id_column: Annotated[str, typer.Option(help="labels.csv column with the utterance id (the .npy file stem).")] = "utterance_id",
    sequence: Annotated[str, typer.Option(help="'mean' pools (T, D) sequences to vectors; 'pad' keeps --length steps.")] = "mean",
    length: Annotated[int | None, typer.Option(help="Steps kept with --sequence pad (default: the longest).")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated labels to keep, e.g. neu,hap,ang,sad.")] = None,
    merge: Annotated[list[str], typer.Option(help="Relabel before filtering, FROM=TO (e.g. exc=hap); repeatable.")] = [],  # noqa: B006
    no_progress: NoProgress = False,
) -> None:
    """Pre-extracted features, IEMOCAP style: <modality>/<utterance>.npy and labels.csv."""
    _checked(src, dst)
    from privkd.data.importers.features import import_features

    import_features(src, dst, id_column=id_column, subject_column=subject_column, label_column=label_column,
                    sequence=sequence, length=length, classes=classes.split(",") if classes else None,
                    merge=parse_pairs("--merge", merge) or None, progress=not no_progress)
    _finished(dst)


@import_app.command("table")
def table(
    src: Annotated[Path, typer.Argument(help="A .csv or .parquet table, one row per sample.")],
    dst: Dst,
    subject_column: Annotated[str, typer.Option(help="Column with the subject id.")] = "subject",
    label: Annotated[list[str], typer.Option(help="Label column (repeat for several regression targets).")] = ["label"],  # noqa: B006
    task: Annotated[str | None, typer.Option(help="classification or regression (default: from the label column's type).")] = None,
    modality: Annotated[list[str], typer.Option(help="NAME=REGEX grouping feature columns into a modality; repeatable (default: prefix before the first '.').")] = [],  # noqa: B006
    group_column: Annotated[str | None, typer.Option(help="Column with a recording id.")] = None,
    split_column: Annotated[str | None, typer.Option(help="Column with an official split name.")] = None,
    no_progress: NoProgress = False,
) -> None:
    """Any user's table: feature columns named <modality>.<feature> (eda.mean, face.au12, ...)."""
    _checked(src, dst)
    from privkd.data.importers.table import (
        grouping_lines,
        import_table,
        table_modalities,
    )

    patterns = parse_pairs("--modality", modality) or None
    columns = {"subject_column": subject_column, "label_columns": tuple(label), "modality_patterns": patterns,
               "group_column": group_column, "split_column": split_column}
    import_table(src, dst, task=task, progress=not no_progress, **columns)
    _finished(dst, grouping_lines(table_modalities(src, **columns), patterns))


@import_app.command("folder")
def folder(
    src: Src,
    dst: Dst,
    manifest: Annotated[str, typer.Option(help="Manifest CSV inside SRC: sample,subject,label[,group,split].")] = "manifest.csv",
    label: Annotated[list[str], typer.Option(help="Label column (repeat for several regression targets).")] = ["label"],  # noqa: B006
    task: Annotated[str | None, typer.Option(help="classification or regression (default: from the label column's type).")] = None,
    kind: Annotated[list[str], typer.Option(help="NAME=KIND (features, signal, spectrogram, video); default from each array's rank.")] = [],  # noqa: B006
    rate: Annotated[list[str], typer.Option(help="NAME=HZ sampling rate of a signal, spectrogram or video modality.")] = [],  # noqa: B006
    no_progress: NoProgress = False,
) -> None:
    """Any user's folder: <modality>/<sample>.npy for every sample plus a CSV manifest."""
    _checked(src, dst)
    from privkd.data.importers.folder import import_folder

    import_folder(src, dst, manifest=manifest, label_columns=tuple(label), task=task,
                  kinds=parse_pairs("--kind", kind) or None, sampling_rates=parse_pairs("--rate", rate, float) or None,
                  progress=not no_progress)
    _finished(dst)


@import_app.command("ts")
def ts(
    src: Annotated[Path, typer.Argument(help="A UEA/UCR .ts file; the *_TEST.ts beside a *_TRAIN.ts is imported too, as the test split.")],
    dst: Dst,
    sampling_rate: Annotated[float, typer.Option(help="Sampling rate in Hz; .ts files do not record it (BasicMotions: 10).")],
    modality: Annotated[list[str], typer.Option(help="NAME=DIMS, 0-based dimension indices of a modality, e.g. accelerometer=0-2; repeatable (default: all dimensions in one modality 'series').")] = [],  # noqa: B006
    test: Annotated[Path | None, typer.Option(help="The test-split .ts file (default: SRC's *_TEST.ts sibling, if any).")] = None,
    subjects: Annotated[Path | None, typer.Option(help="Text file with one subject id per line: the cases of SRC, then those of the test file.")] = None,
    no_subject_ids: Annotated[bool, typer.Option("--no-subject-ids", help="The data has no subject ids: every case becomes its own recording, and results are called recording-independent.")] = False,
    no_progress: NoProgress = False,
) -> None:
    """UEA/UCR time-series archive files (.ts, as read by sktime, aeon and tslearn), official train/test split kept."""
    refuse_output_onto_inputs("DST", dst, [("SRC", src), ("--test", test), ("--subjects", subjects)],
                              example=f"{src.stem or 'dataset'}.h5")
    fix = ("pass --subjects FILE (one subject id per line: SRC's cases, then the test file's), or --no-subject-ids "
           "to make every case its own recording (results are then called recording-independent: recordings of one "
           "person may sit in training and test)")
    if subjects is None and not no_subject_ids:
        raise PrivkdError("the .ts format holds no subject ids, and privkd holds out whole subjects", fix)
    if subjects is not None and no_subject_ids:
        raise PrivkdError("--subjects and --no-subject-ids were both given", fix)
    from privkd.data.importers.common import require_file
    from privkd.data.importers.ts import import_ts, parse_dimensions

    ids = None
    if subjects is not None:
        text = require_file(subjects, "--subjects", "pass a text file with one subject id per line").read_text(
            encoding="utf-8-sig")
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    import_ts(src, dst, sampling_rate=sampling_rate, test=test or "auto",
              modalities=parse_pairs("--modality", modality, parse_dimensions) or None, subjects=ids,
              no_subject_ids=no_subject_ids, progress=not no_progress)
    _finished(dst)


@synth_app.command("biovid")
def synth_biovid(
    dst: Dst,
    subjects: Annotated[int, typer.Option(help="Subjects (BioVid: 87).")] = 87,
    clips: Annotated[int, typer.Option(help="Clips per subject, cycling through the classes (BioVid: 100).")] = 100,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    size: Annotated[int, typer.Option(help="Side of the square frames, in pixels.")] = 112,
    classes: Annotated[str, typer.Option(help="Comma-separated classes, in label order.")] = "BL1,PA1,PA2,PA3,PA4",
    signals: Annotated[str, typer.Option(help="Comma-separated biosignals, each a modality (BioVid's names).")] = "emg_trapezius,ecg,eda",
    signal_format: Annotated[str, typer.Option(help="'raw' 512 Hz windows or 'spectrogram' (as the importer).")] = "raw",
    seed: Annotated[int, typer.Option(help="Seed of the generated content (same seed, same file content).")] = 0,
    no_progress: NoProgress = False,
) -> None:
    """Synthetic clips with BioVid's layout (video + biosignals, 512 Hz, 2-5 s windows) for scale checks."""
    refuse_output_onto_inputs("DST", dst, [], example="synth_biovid.h5")
    from privkd.data.synth_biovid import write_synthetic_biovid

    result = write_synthetic_biovid(dst, subjects=subjects, clips=clips, frames=frames, size=size,
                                    classes=classes.split(","), signals=signals.split(","),
                                    signal_format=signal_format, seed=seed, progress=not no_progress)
    rate = result.samples / max(result.seconds, 1e-9)
    size = f"{result.samples} clips, {result.bytes / 2**20:.1f} MiB written in {result.seconds:.1f} s ({rate:.1f} clips/s)"
    _finished(dst, [size])
