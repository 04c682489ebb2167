"""The FSD50K task on a miniature audio release (chunks/*.csv, lbl_map.json, 22,050 Hz wav chunks)."""
import csv
import json
import math

import numpy as np
import pytest
import scipy.io.wavfile
import torch

import tasks.fsd50k  # noqa: F401  (registers the task)
from formats.fsd50k import CLIPS, NAMES, write
from orca.errors import DataNotFoundError
from orca.tasks import create_task
from tasks.fsd50k import FILTERBANK, URL, chunk_features, log_mel, read_wav


def numpy_log_mel(audio: np.ndarray) -> np.ndarray:
    """An independent numpy version of the features: frames centred with reflection, a
    periodic Hann window of 661 samples centred in 1920, power spectrum, mel, dB."""
    padded = np.pad(audio.astype(np.float64), 960, mode="reflect")
    window = np.zeros(1920)
    window[629 : 629 + 661] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(661) / 661)
    frames = np.stack([padded[t * 220 : t * 220 + 1920] * window for t in range(1 + len(audio) // 220)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, 961)
    db = 10 * np.log10(np.maximum(power @ FILTERBANK.double().numpy(), 1e-10)).T  # (96, frames)
    db = np.maximum(db, db.max() - 80)
    return db - db.mean()


def test_features_match_an_independent_numpy_computation():
    audio = 0.1 * np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    db = log_mel(torch.from_numpy(audio)[None])[0].numpy()
    assert db.shape == (96, 101)  # 1 s -> 1 + 22050 // 220 frames
    np.testing.assert_allclose(db, numpy_log_mel(audio), atol=2e-3)


def test_mel_filterbank_is_htk_triangles():
    fb = FILTERBANK.numpy()  # (961, 96)
    freqs = np.linspace(0, 11025, 961)
    top = 2595 * np.log10(1 + 11025 / 700)
    centres = 700 * (10 ** (np.linspace(0, top, 98)[1:-1] / 2595) - 1)
    assert fb.shape == (961, 96) and fb.min() == 0 and fb.max() <= 1
    assert np.all(np.abs(freqs[fb.argmax(0)] - centres) <= 11025 / 960)  # peaks within a bin of the centres
    between = (freqs >= centres[0]) & (freqs <= centres[-1])
    np.testing.assert_allclose(fb[between].sum(1), 1.0, atol=1e-5)  # unnormalised triangles sum to 1


def test_a_tone_lands_in_its_band_and_the_floor_is_80_db():
    t = np.arange(22050) / 22050
    x = chunk_features(0.5 * np.sin(2 * np.pi * 1000 * t))
    assert x.shape == (1, 96, 102) and x.dtype == np.float32
    assert np.all(x[0, :, 101] == 0)  # the padded column
    spectrum = x[0, :, :101].mean(1)
    peak = np.linspace(0, 2595 * np.log10(1 + 11025 / 700), 98)[1 + spectrum.argmax()]
    assert 700 * (10 ** (peak / 2595) - 1) == pytest.approx(1000, rel=0.05)
    assert x[0, :, :101].max() - x[0, :, :101].min() == pytest.approx(80, abs=1e-3)
    assert x[0, :, :101].mean() == pytest.approx(0, abs=1e-4)


def test_short_audio_is_tiled_to_one_second():
    audio = np.random.default_rng(1).standard_normal(9000).astype(np.float32) * 0.1
    tiled = np.tile(audio, 3)[:22050]
    np.testing.assert_array_equal(chunk_features(audio), chunk_features(tiled))


def test_int16_wav_is_scaled_like_soundfile(tmp_path):
    scipy.io.wavfile.write(tmp_path / "a.wav", 22050, np.array([16384, -32768, 0], dtype=np.int16))
    np.testing.assert_array_equal(read_wav(tmp_path / "a.wav"), [0.5, -1.0, 0.0])
    scipy.io.wavfile.write(tmp_path / "b.wav", 16000, np.zeros(10, dtype=np.int16))
    with pytest.raises(DataNotFoundError, match="16000 Hz"):
        read_wav(tmp_path / "b.wav")


def test_loads_manifests_one_train_chunk_per_clip(tmp_path):
    root = write(tmp_path / "fsd50k")
    splits = create_task("fsd50k").load(root, download=False)
    chunks = {name: sum(n for _, _, n in clips) for name, clips in CLIPS.items()}
    assert splits.sizes() == {"train": len(CLIPS["tr.csv"]), "val": chunks["val.csv"], "test": chunks["eval.csv"]}
    x, y, clips = splits.train.tensors
    assert x.shape[1:] == (1, 96, 102) and x.dtype == torch.float32
    assert len(clips.unique()) == len(clips)  # one chunk a clip
    test_clips = splits.test.tensors[2]  # every chunk of a test clip carries the clip's index
    assert len(test_clips.unique()) == len(CLIPS["eval.csv"]) and len(test_clips) == chunks["eval.csv"]
    assert y.shape[1:] == (200,) and y.dtype == torch.float32
    # train clips in sorted id order, each labelled with its clip's labels
    index = {name: i for i, name in enumerate(NAMES)}
    for row, (clip, labels, _) in zip(y, sorted(CLIPS["tr.csv"])):
        assert torch.nonzero(row).flatten().tolist() == sorted(index[n] for n in labels)
    # a test sample is its wav chunk's features
    first = next(csv.DictReader(open(root / "chunks" / "eval.csv")))
    wav = root / first["files"].removeprefix("data/")
    np.testing.assert_allclose(splits.test.tensors[0][0].numpy(), chunk_features(read_wav(wav)), atol=1e-5)
    all_chunks = create_task("fsd50k", train_chunks="all").load(root, download=False)
    assert len(all_chunks.train) == chunks["tr.csv"]


def test_wav_paths_resolve_relative_or_foreign_absolute(tmp_path):
    root = write(tmp_path / "fsd50k")
    reference = create_task("fsd50k").load(root, download=False).val.tensors[0]
    rows = list(csv.DictReader(open(root / "chunks" / "val.csv")))  # files: data/dev_chunks/<clip>_<k>.wav
    for prefix in ("", "/run/determined/workdir/shared_fs/data/"):
        with open(root / "chunks" / "val.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["files", "labels", "ext"])
            writer.writeheader()
            writer.writerows({**r, "files": prefix + r["files"].split("/", 1)[1]} for r in rows)
        assert torch.equal(create_task("fsd50k").load(root, download=False).val.tensors[0], reference)
    (root / "eval_chunks" / "3000_0000.wav").unlink()
    with pytest.raises(DataNotFoundError, match="3000_0000.wav"):
        create_task("fsd50k").load(root, download=False)


def test_missing_release_names_path_and_url(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        create_task("fsd50k").load(tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "chunks" / "tr.csv") in str(err.value) and URL in str(err.value)


def test_unknown_label_is_named(tmp_path):
    root = write(tmp_path / "fsd50k")
    names = json.loads((root / "chunks" / "lbl_map.json").read_text())
    names["Barking"] = names.pop("Bark")
    (root / "chunks" / "lbl_map.json").write_text(json.dumps(names))
    with pytest.raises(DataNotFoundError, match="'Bark'"):
        create_task("fsd50k").load(root, download=False)


def test_loss_weights_positives_by_10():
    task = create_task("fsd50k")
    targets = torch.zeros(1, 200)
    targets[0, :20] = 1
    assert float(task.loss(torch.zeros(1, 200), targets)) == pytest.approx((20 * 10 + 180) * math.log(2) / 200)


def test_map_is_over_labels_with_positives():
    task = create_task("fsd50k")
    logits, targets = torch.zeros(4, 200), torch.zeros(4, 200)  # labels 3..199 have no positive: skipped
    logits[:, 0], targets[:, 0] = torch.tensor([2.0, -1.0, 0.5, -2.0]), torch.tensor([1.0, 0, 0, 1])
    logits[:, 1], targets[:, 1] = torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([1.0, 0, 1, 0])
    logits[:, 2], targets[:, 2] = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.ones(4)
    metrics = task.metrics()
    metrics.update(logits, targets, groups=torch.arange(4))  # a chunk a clip: clip and chunk mAP agree
    values = {k: float(v) for k, v in metrics.compute().items()}
    # label 0: ranking 2(+) 0.5 -1 -2(+): AP (1 + 2/4) / 2; label 1: 0.4(+) 0.3 0.2(+): (1 + 2/3) / 2; label 2: 1
    expected = (0.75 + 5 / 6 + 1) / 3
    assert values["map"] == pytest.approx(expected) and values["clip_map"] == pytest.approx(expected)
    assert task.error(values) == pytest.approx(1 - expected)


def test_error_is_clip_level_map_of_mean_chunk_logits():
    task = create_task("fsd50k")
    metrics = task.metrics()
    # Label 0: clip A (2 chunks, positive) and clip B (1 chunk, negative); label 1: only B positive.
    # Chunk logits of A: label 0: 3 and -5 (mean -1); B: label 0: 0. Per clip, B outranks A on
    # label 0 (0 > -1): AP 1/2; per chunk, A's first chunk (3) ranks first: AP 1 for label 0.
    logits = torch.full((3, 200), -9.0)
    logits[:, 0] = torch.tensor([3.0, -5.0, 0.0])
    logits[:, 1] = torch.tensor([0.0, 0.0, 1.0])
    targets = torch.zeros(3, 200)
    targets[:2, 0] = 1
    targets[2, 1] = 1
    metrics.update(logits, targets, groups=torch.tensor([7, 7, 4]))
    values = task.scores({k: float(v) for k, v in metrics.compute().items()})
    assert values["clip_map"] == pytest.approx((0.5 + 1.0) / 2)  # labels 0 and 1 have a positive clip
    assert values["error"] == pytest.approx(1 - values["clip_map"])
    assert values["map"] != pytest.approx(values["clip_map"])  # chunk level differs
