"""Miniature FSD50K release as NAS-Bench-360's audio.zip lays it out: chunks/tr.csv,
val.csv, eval.csv (columns files, labels, ext), chunks/lbl_map.json (200 label names ->
0..199), and 22,050 Hz 16-bit mono wav chunks of 1 s named <clip>_<k>.wav. The csv paths
carry a foreign leading folder (``data/dev_chunks/...``), as the publisher's do. Each used
label has its own tone, so the labels can be learned."""
import csv
import json
from pathlib import Path

import numpy as np
import scipy.io.wavfile

RATE = 22050
USED = ["Bark", "Speech", "Rain", "Drum", "Acoustic_guitar"]
NAMES = USED + [f"Label_{i:03d}" for i in range(len(USED), 200)]
TONES = {"Bark": 440.0, "Speech": 880.0, "Rain": 1760.0, "Drum": 3520.0, "Acoustic_guitar": 7040.0}
CLIPS = {  # manifest -> [(clip id, labels, chunks)]
    "tr.csv": [(str(1000 + i), [USED[i % 5], USED[(i + 2) % 5]] if i % 3 == 0 else [USED[i % 5]], 1 + i % 2)
               for i in range(8)],
    "val.csv": [(str(2000 + i), [USED[i % 5]], 2) for i in range(4)],
    "eval.csv": [(str(3000 + i), [USED[(i + 1) % 5]], 2) for i in range(4)],
}


def write(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    meta = root / "chunks"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "lbl_map.json").write_text(json.dumps({name: i for i, name in enumerate(NAMES)}))
    t = np.arange(RATE) / RATE
    for manifest, clips in CLIPS.items():
        folder = "eval_chunks" if manifest == "eval.csv" else "dev_chunks"
        (root / folder).mkdir(exist_ok=True)
        with open(meta / manifest, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["files", "labels", "ext"])
            for clip, labels, chunks in clips:
                for k in range(chunks):
                    tones = sum(0.3 * np.sin(2 * np.pi * TONES[n] * t) for n in labels)
                    audio = np.clip(0.05 * rng.standard_normal(RATE) + tones, -1, 1)
                    name = f"{clip}_{k:04d}.wav"
                    scipy.io.wavfile.write(root / folder / name, RATE, (audio * 32767).astype(np.int16))
                    writer.writerow([f"data/{folder}/{name}", ",".join(labels), clip])
    return root
