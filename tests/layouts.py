"""Miniature copies of the published datasets' layouts, generated for tests (never downloaded).

BioVid Heat Pain (tiny mp4s and tab-separated biosignal CSVs), Affwild2 (JPEG frames, VA
annotation files, wav audio) and IEMOCAP-style pre-extracted features (.npy + labels.csv).
"""

from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image
from scipy.io import wavfile

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"

# ------------------------------------------------------------------ BioVid

FS = 512
SUBJECTS = ("071309_w_21", "071614_m_20", "072514_m_27")
PART_B = ("gsr", "ecg", "emg_trapezius", "emg_corrugator", "emg_zygomaticus")


def clip_signals(stem: str, n: int, columns) -> np.ndarray:
    """Deterministic per-clip signals (n, columns): a distinct sine mix per clip and column."""
    seed = sum(map(ord, stem))
    t = np.arange(n) / FS
    return np.stack([np.sin(2 * np.pi * (3 + (seed + 7 * c) % 50) * t) + 0.1 * c + 0.01 * seed % 1
                     for c in range(len(columns))], axis=1)


def write_csv(path: Path, stem: str, columns=PART_B, *, seconds: float = 5.5, time_scale: float = 1e6) -> None:
    n = round(seconds * FS)
    table = np.column_stack([np.arange(n) / FS * time_scale, clip_signals(stem, n, columns)])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, table, delimiter="\t", header="\t".join(("time", *columns)), comments="", fmt="%.6f")


def write_biovid_video(path: Path, level: int, *, seconds: float = 3.0, fps: int = 25) -> None:
    """A 32x24 clip whose frames are flat grey ``level`` (identifies the clip) with a brighter
    second half, so the selected span is visible in the output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(n):
            image = np.full((24, 32, 3), level + (60 if i >= n // 2 else 0), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def stems():
    for s, subject in enumerate(SUBJECTS):
        for c, cls in enumerate(("BL1", "PA4")):
            for k in range(2):
                yield subject, f"{subject}-{cls}-{10 * s + 2 * c + k + 1:03d}", 20 + 15 * (4 * s + 2 * c + k)


def make_biovid_layout(root: Path, columns=PART_B, *, time_scale: float = 1e6) -> Path:
    for subject, stem, level in stems():
        write_biovid_video(root / "video" / subject / f"{stem}.mp4", level)
        write_csv(root / "biosignals_filtered" / subject / f"{stem}_bio.csv", stem, columns, time_scale=time_scale)
    # a class that is not imported, and a stray file: both ignored
    write_csv(root / "biosignals_filtered" / SUBJECTS[0] / f"{SUBJECTS[0]}-PA2-099_bio.csv", "x", columns)
    write_biovid_video(root / "video" / SUBJECTS[0] / f"{SUBJECTS[0]}-PA2-099.mp4", 0, seconds=0.4)
    (root / "video" / SUBJECTS[0] / "notes.txt").write_text("stray")
    return root



# ------------------------------------------------------------------ Affwild2

SR = 16000
FPS = 30.0
CLIP = 4  # frames per clip in most tests


def frame_level(video: str, number: int) -> int:
    """Grey level of JPEG ``number`` of ``video``: identifies the frame (JPEG noise is small on flat images)."""
    return (7 * number + 40 * len(video)) % 200 + 20


def annotations(video: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(len(video))
    return np.round(rng.uniform(-1, 1, size=(n, 2)), 4)


def write_video(root: Path, video: str, set_name: str, values: np.ndarray, missing=(), invalid=()) -> None:
    """Annotation file (rows of ``invalid`` written as -5), JPEG frames (``missing`` left out)."""
    folder = root / "annotations" / "VA_Estimation_Challenge" / set_name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["valence,arousal"]
    for i, (v, a) in enumerate(values):
        lines.append("-5,-5" if i in invalid else f"{v},{a}")
    (folder / f"{video}.txt").write_text("\n".join(lines) + "\n")
    frames = root / "cropped_aligned" / video
    frames.mkdir(parents=True, exist_ok=True)
    for number in range(1, len(values) + 1):
        if number - 1 not in missing:
            Image.fromarray(np.full((20, 20, 3), frame_level(video, number), np.uint8)).save(
                frames / f"{number:05d}.jpg", quality=95)


def audio_of(name: str, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.3 * np.sin(2 * np.pi * (300 + 100 * len(name)) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))


def write_wav(root: Path, name: str, seconds: float) -> None:
    (root / "audio").mkdir(parents=True, exist_ok=True)
    wavfile.write(root / "audio" / f"{name}.wav", SR, (audio_of(name, seconds) * 32767).astype(np.int16))


# video -> (set, frames, missing frame indices (0-based), invalid (-5) rows)
VIDEOS = {
    "1-30-1280x720": ("Train_Set", 14, {5}, {1, 2}),
    "video10_left": ("Train_Set", 9, set(), {4, 5, 6, 7}),  # clip 2 (rows 4..7) has no valid frame: dropped
    "118": ("Validation_Set", 8, {4, 5, 6, 7}, set()),  # clip 2 has no image at all: dropped
}


def make_affwild2_layout(root: Path) -> Path:
    for video, (set_name, n, missing, invalid) in VIDEOS.items():
        write_video(root, video, set_name, annotations(video, n), missing, invalid)
    write_wav(root, "1-30-1280x720", 14 / FPS)
    write_wav(root, "video10", 9 / FPS)  # shared by video10_left (and _right)
    write_wav(root, "118", 8 / FPS)
    return root



# ------------------------------------------------------------------ IEMOCAP-style features

SESSIONS = [f"Ses0{s}" for s in range(1, 6)]
LABELS = ["neu", "hap", "ang", "sad", "exc", "fru"]


def make_features_layout(root: Path) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """5 sessions x 2 speakers x 2 utterances; audio (T, 4) and visual (T, 3) sequences, text (6,) vectors."""
    rng = np.random.default_rng(0)
    rows, arrays = [], {"audio": {}, "text": {}, "visual": {}}
    for s, session in enumerate(SESSIONS):
        for speaker in ("F", "M"):
            for k in range(2):
                uid = f"{session}{speaker}_impro0{k}_{speaker}00{k}"
                i = len(rows)
                rows.append({"utterance_id": uid, "session": session, "speaker": f"{session}{speaker}",
                             "label": LABELS[i % len(LABELS)]})
                arrays["audio"][uid] = rng.normal(size=(3 + i % 5, 4))  # T = 3..7
                arrays["text"][uid] = rng.normal(size=6)
                arrays["visual"][uid] = rng.normal(size=(2 + i % 3, 3)).astype(np.float32)
    for modality, by_id in arrays.items():
        (root / modality).mkdir(parents=True)
        for uid, array in by_id.items():
            np.save(root / modality / f"{uid}.npy", array)
    frame = pd.DataFrame(rows)
    frame.to_csv(root / "labels.csv", index=False)
    return frame, arrays


def breast_cancer_table(data: pd.DataFrame) -> pd.DataFrame:
    """scikit-learn's breast-cancer frame as the README's own-data table: a ``subject`` per row, a
    ``label`` named by class, the ``mean *`` features as modality ``mean`` and the ``worst *`` ones
    as modality ``worst`` (columns ``<modality>.<feature>``)."""
    table = pd.DataFrame({"subject": [f"p{i}" for i in range(len(data))],
                          "label": data["target"].map({0: "malignant", 1: "benign"})})
    for column in data.columns:
        if column.startswith(("mean ", "worst ")):
            kind, name = column.split(" ", 1)
            table[f"{kind}.{name.replace(' ', '_')}"] = data[column]
    return table
