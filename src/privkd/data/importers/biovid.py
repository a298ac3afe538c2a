"""Importer for the BioVid Heat Pain Database, parts A and B, as it ships::

    <root>/video/<subject>/<subject>-<class>-<nnn>.mp4
    <root>/biosignals_filtered/<subject>/<subject>-<class>-<nnn>_bio.csv

Classes are BL1 (baseline) and PA1..PA4 (pain thresholds). The CSVs are tab-separated
with a header ``time gsr ecg emg_trapezius`` (part A) plus ``emg_corrugator
emg_zygomaticus`` (part B); the signals are sampled at 512 Hz (the authors' code assumed
1000 Hz, which is wrong) and ``time`` counts microseconds. Clips last 5.5 s, video runs
at 25 fps.

Every selected signal becomes its own modality (``eda``, ``ecg``, ``emg_trapezius``,
``emg_corrugator``, ``emg_zygomaticus``), so any of them can be made privileged or
prevalent; the video becomes ``video`` (uint8). The whole layout is scanned, and every
CSV read and checked, before the first video is decoded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from privkd.data.h5format import write_streamed_dataset
from privkd.data.importers.common import progress as progress_bar
from privkd.data.importers.common import require_dir, source_error
from privkd.data.importers.media import (
    log_spectrogram,
    sample_video_frames,
    spectrogram_shape,
)
from privkd.errors import ConfigError

__all__ = ["BIOVID_CLASSES", "BIOVID_SIGNALS", "biovid_layout", "import_biovid"]

BIOVID_CLASSES = ("BL1", "PA1", "PA2", "PA3", "PA4")
# modality name -> CSV column; "gsr" (the CSV's name) is accepted as an alias of "eda".
BIOVID_SIGNALS = {"eda": "gsr", "ecg": "ecg", "emg_trapezius": "emg_trapezius",
                  "emg_corrugator": "emg_corrugator", "emg_zygomaticus": "emg_zygomaticus"}
_ALIASES = {"gsr": "eda"}
_PART_B_COLUMNS = ("emg_corrugator", "emg_zygomaticus")
CLIP_SECONDS = 5.5
_NAME = re.compile(r"^(?P<subject>.+)-(?P<cls>BL1|PA1|PA2|PA3|PA4)-(?P<number>\d+)$")
_TIME_UNITS = {"seconds": 1.0, "milliseconds": 1e-3, "microseconds": 1e-6}
_RATE_TOLERANCE = 0.02  # relative


@dataclass
class _Sample:
    stem: str
    subject: str
    label: int
    video: Path | None
    csv: Path | None
    windows: dict[str, np.ndarray]  # modality -> raw signal window (float32)


def _signal_modalities(signals: Sequence[str]) -> list[str]:
    names = []
    for raw in signals:
        name = _ALIASES.get(str(raw).lower(), str(raw).lower())
        if name not in BIOVID_SIGNALS:
            raise ConfigError("signals", f"unknown BioVid signal {raw!r}",
                              f"use some of {list(BIOVID_SIGNALS)} ('gsr' is accepted for 'eda')")
        if name in names:
            raise ConfigError("signals", f"signal {raw!r} is listed twice (gsr and eda are the same signal)",
                              "list each signal once")
        names.append(name)
    return names


def _check_options(classes: Sequence[str], signal_window: tuple[float, float], signal_format: str,
                   frames: int, frame_size: int, sampling_rate: float, video_window: tuple[float, float] | None,
                   nperseg: int, noverlap: int, nfft: int) -> None:
    unknown = [c for c in classes if c not in BIOVID_CLASSES]
    if unknown or not classes:
        raise ConfigError("classes", f"unknown or no classes {unknown or list(classes)}",
                          f"choose two or more of {list(BIOVID_CLASSES)}, e.g. ('BL1', 'PA4')")
    if len(set(classes)) != len(classes):
        raise ConfigError("classes", f"classes {list(classes)} contain duplicates", "list each class once")
    if signal_format not in ("spectrogram", "raw"):
        raise ConfigError("signal_format", f"unknown signal_format {signal_format!r}", "use 'spectrogram' or 'raw'")
    if not (sampling_rate > 0 and math.isfinite(sampling_rate)):
        raise ConfigError("sampling_rate", f"sampling_rate is {sampling_rate}", "give the rate in Hz (512 for BioVid)")
    start, end = signal_window
    if not 0 <= start < end:
        raise ConfigError("signal_window", f"signal_window {signal_window} is not (start, end) with 0 <= start < end",
                          f"give seconds from the clip start within 0..{CLIP_SECONDS}, e.g. (2.0, 5.0)")
    if video_window is not None and not 0 <= video_window[0] < video_window[1]:
        raise ConfigError("video_window", f"video_window {video_window} is not (start, end) with 0 <= start < end",
                          "give seconds from the clip start, or None for the whole clip")
    if frames < 1 or frame_size < 1:
        raise ConfigError("frames", f"frames={frames}, frame_size={frame_size}", "use positive values, e.g. 16 and 112")
    if signal_format == "spectrogram":
        n = round(end * sampling_rate) - round(start * sampling_rate)
        if not 0 <= noverlap < nperseg <= n or nfft < nperseg:
            raise ConfigError("nperseg", f"nperseg={nperseg}, noverlap={noverlap}, nfft={nfft} do not fit a "
                              f"{n}-sample window", "need 0 <= noverlap < nperseg <= window samples and nfft >= nperseg")


def _list_clips(folder: Path, suffix: str, classes: Sequence[str], what: str) -> dict[str, tuple[str, Path]]:
    """stem -> (subject, file) for every clip of the selected classes under ``folder/<subject>/``."""
    found: dict[str, tuple[str, Path]] = {}
    for subject_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for file in sorted(subject_dir.iterdir()):
            if not file.name.endswith(suffix):
                continue
            stem = file.name[: -len(suffix)]
            match = _NAME.match(stem)
            if match is None:
                continue
            if match["subject"] != subject_dir.name:
                raise source_error(file, f"{what} file of subject {match['subject']!r} inside the folder of "
                                   f"subject {subject_dir.name!r}",
                                   "move it to its subject's folder; subject ids are taken from folder names")
            if match["cls"] in classes:
                found[stem] = (subject_dir.name, file)
    return found


def _read_header(csv: Path) -> list[str]:
    try:
        with csv.open("r", encoding="utf-8", errors="replace") as f:
            line = f.readline()
    except OSError as exc:
        raise source_error(csv, f"cannot read the file ({exc})", "check its permissions, or re-copy it") from exc
    return [c.strip() for c in line.rstrip("\r\n").split("\t")]


def _check_time_step(csv: Path, time: np.ndarray, sampling_rate: float) -> None:
    """The median step of the ``time`` column must match ``sampling_rate`` in s, ms or µs."""
    steps = np.diff(time)
    step = float(np.median(steps)) if steps.size else float("nan")
    expected = 1.0 / sampling_rate
    for scale in _TIME_UNITS.values():
        if math.isfinite(step) and abs(step * scale - expected) <= _RATE_TOLERANCE * expected:
            return
    if not math.isfinite(step) or step <= 0:
        raise source_error(csv, f"the 'time' column does not increase (median step {step})",
                           "fix or re-copy the file; 'time' must count up by one sampling period per row",
                           field="time")
    implied = {unit: 1.0 / (step * scale) for unit, scale in _TIME_UNITS.items()}
    plausible = [rate for rate in implied.values() if 1.0 <= rate <= 1e5] or [sampling_rate]
    guess = min(plausible, key=lambda rate: abs(math.log(rate / sampling_rate)))
    listed = ", ".join(f"{rate:.6g} Hz if in {unit}" for unit, rate in implied.items())
    raise source_error(csv, f"the median step of the 'time' column is {step:g}, which does not match the declared "
                       f"sampling rate of {sampling_rate:g} Hz in seconds, milliseconds or microseconds "
                       f"(implied rate: {listed})",
                       f"pass the true rate, e.g. import_biovid(..., sampling_rate={guess:.6g}) "
                       "(BioVid's filtered biosignals are 512 Hz with 'time' in microseconds)", field="time")


def _read_windows(csv: Path, columns: dict[str, str], sampling_rate: float,
                  window: tuple[float, float]) -> dict[str, np.ndarray]:
    """Read the selected columns of one CSV, check them, and cut the window (sample indices from row 0)."""
    header = _read_header(csv)
    missing = [c for c in ("time", *columns.values()) if c not in header]
    if missing:
        part = " (a part-B signal: part A has only gsr, ecg, emg_trapezius)" if set(missing) & set(_PART_B_COLUMNS) else ""
        raise source_error(csv, f"no column {missing[0]!r}{part}; available columns: {header}",
                           "select signals among the available columns (signals=...), "
                           "or check that the file is a tab-separated BioVid biosignal CSV", field=missing[0])
    try:
        table = pd.read_csv(csv, sep="\t", usecols=["time", *columns.values()], dtype=np.float64, engine="c")
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise source_error(csv, f"cannot parse the file as a tab-separated table of numbers ({exc})",
                           "re-copy the file from the BioVid release; every row must hold numbers "
                           "in every column") from exc
    for column in ("time", *columns.values()):
        bad = np.flatnonzero(~np.isfinite(table[column].to_numpy()))
        if bad.size:
            raise source_error(csv, f"empty or non-finite value in column {column!r} on line {int(bad[0]) + 2}",
                               "re-copy the file; BioVid signals have no gaps", field=column)
    _check_time_step(csv, table["time"].to_numpy(), sampling_rate)
    first, last = round(window[0] * sampling_rate), round(window[1] * sampling_rate)
    if len(table) < last:
        raise source_error(csv, f"{len(table)} samples ({len(table) / sampling_rate:.3f} s at {sampling_rate:g} Hz) "
                           f"are too few for the signal window {window[0]:g}-{window[1]:g} s "
                           f"(samples {first}..{last})",
                           "choose a signal_window inside the recording (BioVid clips last 5.5 s), "
                           "or check the sampling_rate")
    return {name: table[column].to_numpy()[first:last].astype(np.float32) for name, column in columns.items()}


def _scan(src: Path, classes: Sequence[str], modalities: list[str], video: bool, sampling_rate: float,
          window: tuple[float, float], show: bool) -> tuple[list[_Sample], str]:
    """Pair videos and CSVs, read and check every CSV; returns the samples and the part ('A' or 'B')."""
    fix_root = "point src at the BioVid root holding video/ and biosignals_filtered/"
    videos = _list_clips(require_dir(src / "video", "BioVid video", fix_root), ".mp4", classes, "video") \
        if video else {}
    csvs = _list_clips(require_dir(src / "biosignals_filtered", "BioVid biosignals_filtered", fix_root),
                       "_bio.csv", classes, "biosignal") if modalities else {}
    if video and modalities:
        for stem, (subject, path) in videos.items():
            if stem not in csvs:
                raise source_error(src / "biosignals_filtered" / subject / f"{stem}_bio.csv",
                                   f"biosignal file missing for the video {path}",
                                   "restore it, or import without signals (signals=())")
        for stem, (subject, path) in csvs.items():
            if stem not in videos:
                raise source_error(src / "video" / subject / f"{stem}.mp4", f"video missing for the biosignals {path}",
                                   "restore it, or import without video (video=False)")
    clips = videos or csvs
    if not clips:
        folder = src / "video" if video else src / "biosignals_filtered"
        raise source_error(folder, f"no clips of the classes {list(classes)} found",
                           "expect <subject>/<subject>-<class>-<nnn>.mp4 / _bio.csv files; check src and classes")
    columns = {name: BIOVID_SIGNALS[name] for name in modalities}
    part = "A"
    samples = []
    stems = sorted(clips, key=lambda s: (clips[s][0], s))
    for stem in progress_bar(stems, "Reading BioVid biosignals" if modalities else "Listing BioVid clips",
                         enabled=show and bool(modalities)):
        subject = clips[stem][0]
        csv = csvs[stem][1] if modalities else None
        windows = _read_windows(csv, columns, sampling_rate, window) if csv is not None else {}
        if csv is not None and len(samples) == 0 and all(c in _read_header(csv) for c in _PART_B_COLUMNS):
            part = "B"
        label = list(classes).index(_NAME.match(stem)["cls"])  # type: ignore[index]
        samples.append(_Sample(stem, subject, label, videos[stem][1] if video else None, csv, windows))
    if not modalities:
        part = "A or B"
    return samples, part


def biovid_layout(signals: Sequence[str], signal_format: str, n_window: int, sampling_rate: float,
                  spectrogram: tuple[int, int, int], video: tuple[int, int, float] | None,
                  ) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, float | None]]:
    """Shapes, kinds and rates of a BioVid dataset's modalities: each signal as a raw window of
    ``n_window`` samples or its log spectrogram (``spectrogram`` = nperseg, noverlap, nfft), and
    the video, when ``video`` = (frames, frame size, seconds) is given, as ``(3, frames, size, size)``."""
    nperseg, noverlap, nfft = spectrogram
    shapes: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    rates: dict[str, float | None] = {}
    for name in signals:
        if signal_format == "spectrogram":
            shapes[name] = (1, *spectrogram_shape(n_window, nperseg=nperseg, noverlap=noverlap, nfft=nfft))
            kinds[name], rates[name] = "spectrogram", sampling_rate / (nperseg - noverlap)
        else:
            shapes[name], kinds[name], rates[name] = (1, n_window), "signal", sampling_rate
    if video is not None:
        frames, size, seconds = video
        shapes["video"], kinds["video"], rates["video"] = (3, frames, size, size), "video", frames / seconds
    return shapes, kinds, rates


def import_biovid(
    src: str | Path,
    dst: str | Path,
    *,
    classes: Sequence[str] = ("BL1", "PA4"),
    signals: Sequence[str] = ("gsr",),
    signal_window: tuple[float, float] = (2.0, 5.0),
    signal_format: str = "spectrogram",
    video: bool = True,
    frames: int = 16,
    frame_size: int = 112,
    video_window: tuple[float, float] | None = None,
    sampling_rate: float = 512.0,
    nperseg: int = 64,
    noverlap: int = 48,
    nfft: int = 128,
    progress: bool = True,
) -> Path:
    """Convert BioVid Heat Pain (part A or B) at ``src`` into a privkd dataset at ``dst``.

    * ``classes``: which classes to keep; label ``i`` is ``classes[i]`` (``class_names``).
    * ``signals``: biosignals to import, each its own modality named ``eda`` (alias
      ``gsr``), ``ecg``, ``emg_trapezius``, ``emg_corrugator``, ``emg_zygomaticus`` (the
      last two only in part B). Samples ``round(start * rate) .. round(end * rate)`` of
      ``signal_window`` (seconds from the clip start) are kept.
    * ``signal_format``: ``"spectrogram"`` gives ``(1, nfft // 2 + 1, columns)`` images
      from :func:`~privkd.data.importers.media.log_spectrogram` (column rate
      ``rate / (nperseg - noverlap)``); ``"raw"`` gives the ``(1, samples)`` window as
      stored in the CSV (kind ``signal`` at ``sampling_rate``).
    * ``video``: ``frames`` TSN-sampled frames of the whole clip (or of ``video_window``),
      resized and center-cropped to ``frame_size`` (uint8 ``(3, frames, S, S)``, rate =
      frames per second of clip).
    * ``sampling_rate``: the biosignal rate (512 Hz); checked against the ``time`` column.

    Subjects come from folder names, groups are the clip stems (``<subject>-<class>-<nnn>``).
    Raises :class:`~privkd.errors.DatasetError` naming the offending source file for
    anything missing or malformed, before any video is decoded; nothing is written then.
    """
    src, dst = Path(src), Path(dst)
    classes = (classes,) if isinstance(classes, str) else tuple(classes)
    signals = (signals,) if isinstance(signals, str) else tuple(signals)
    signal_window = (float(signal_window[0]), float(signal_window[1]))
    modalities = _signal_modalities(signals)
    _check_options(classes, signal_window, signal_format, frames, frame_size, sampling_rate, video_window,
                   nperseg, noverlap, nfft)
    if not modalities and not video:
        raise ConfigError("signals", "neither signals nor video selected", "select some signals, or video=True")
    require_dir(src, "BioVid root", "point src at the folder holding video/ and biosignals_filtered/")
    samples, part = _scan(src, classes, modalities, video, sampling_rate, signal_window, progress)

    n_window = round(signal_window[1] * sampling_rate) - round(signal_window[0] * sampling_rate)
    video_span = video_window[1] - video_window[0] if video_window is not None else CLIP_SECONDS
    shapes, kinds, rates = biovid_layout(modalities, signal_format, n_window, sampling_rate, (nperseg, noverlap, nfft),
                                         (frames, frame_size, video_span) if video else None)

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for sample in samples:
            out: dict[str, np.ndarray] = {}
            for name, window in sample.windows.items():
                out[name] = (log_spectrogram(window, sampling_rate, nperseg=nperseg, noverlap=noverlap,
                                             nfft=nfft) if signal_format == "spectrogram" else window)[None]
            if sample.video is not None:
                start, end = video_window if video_window is not None else (None, None)
                out["video"] = sample_video_frames(sample.video, frames, frame_size, start_s=start, end_s=end)
            yield out

    signal_text = (f"signals {', '.join(modalities)} ({signal_format}, {signal_window[0]:g}-{signal_window[1]:g} s "
                   f"at {sampling_rate:g} Hz)") if modalities else "no signals"
    video_text = (f"video {frames} frames of {frame_size}x{frame_size} px from "
                  f"{'the whole clip' if video_window is None else f'{video_window[0]:g}-{video_window[1]:g} s'}"
                  ) if video else "no video"
    description = (f"BioVid Heat Pain part {part}: classes {', '.join(classes)}; {signal_text}; {video_text}; "
                   f"{len(samples)} samples of {len({s.subject for s in samples})} subjects")
    source = (f"privkd.data.importers.biovid.import_biovid from {src} (part {part}, classes {list(classes)}, "
              f"signals {modalities}, signal_format {signal_format!r}, signal_window {signal_window}, "
              f"sampling_rate {sampling_rate:g}, video {video}, frames {frames}, frame_size {frame_size}, "
              f"video_window {video_window})")
    return write_streamed_dataset(
        dst,
        sample_shapes=shapes,
        samples=progress_bar(generate(), "Importing BioVid", total=len(samples), enabled=progress),
        labels=np.asarray([s.label for s in samples], dtype=np.int64),
        subjects=[s.subject for s in samples],
        task="classification",
        class_names=list(classes),
        modality_kinds=kinds,
        uint8_modalities=("video",) if video else (),
        sampling_rates=rates,
        channel_names={name: [name] for name in modalities},
        groups=[s.stem for s in samples],
        description=description,
        source=source,
    )

