"""Import an existing RVC WebUI or Applio experiment folder (`logs/<exp>/`) as an rvc-peft dataset.

Nothing is recomputed: slices, content features and pitch are copied as RVC/Applio extracted them.

| data            | RVC WebUI                          | Applio                     |
|-----------------|------------------------------------|----------------------------|
| slices (model sr)| `0_gt_wavs/<i>_<j>.wav`           | `sliced_audios/<sid>_<i>_<j>.wav` |
| coarse pitch    | `2a_f0/<name>.wav.npy`             | `f0/<name>.wav.npy`        |
| F0 in Hz        | `2b-f0nsf/<name>.wav.npy`          | `f0_voiced/<name>.wav.npy` |
| features 50 fps | `3_feature256/` (v1), `3_feature768/` (v2) `<name>.npy` | `extracted/<name>.npy` |

Only names present in every folder are imported (RVC's filelist rule). Speaker ids come from `filelist.txt`
(WebUI; last field) or the `<sid>_` name prefix (Applio), else 0. No-pitch experiments lack the f0 folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import INFO_FILE, DatasetFormatError, DatasetWriter, RVCDatasetInfo

logger = logging.getLogger(__name__)

_LAYOUTS = {
    "webui": {"wavs": "0_gt_wavs", "coarse": "2a_f0", "hz": "2b-f0nsf"},
    "applio": {"wavs": "sliced_audios", "coarse": "f0", "hz": "f0_voiced"},
}


class ExperimentImportError(DatasetFormatError):
    """The folder is not a usable RVC/Applio experiment (the message names the folder or file)."""


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _stems(folder: Path, suffix: str) -> dict[str, Path]:
    return {p.name[: -len(suffix)]: p for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file()} \
        if folder.is_dir() else {}


def _speaker_ids_from_filelist(exp_dir: Path) -> dict[str, int]:
    """`{slice name: speaker id}` from a WebUI `filelist.txt` (mute lines ignored)."""
    filelist = exp_dir / "filelist.txt"
    mapping: dict[str, int] = {}
    if not filelist.is_file():
        return mapping
    for line in filelist.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.strip().split("|")
        if len(fields) >= 3 and fields[-1].strip().lstrip("-").isdigit():
            name = Path(fields[0].replace("\\", "/")).name
            mapping[name.removesuffix(".wav")] = int(fields[-1])
    return mapping


def _experiment_sample_rate(exp_dir: Path) -> int | None:
    config = exp_dir / "config.json"
    try:
        return int(json.loads(config.read_text(encoding="utf-8"))["data"]["sampling_rate"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ExperimentImportError(f"{path}: unreadable .npy ({error})") from error


def import_rvc_experiment(
    exp_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sample_rate: int | str | None = None,
    version: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RVCDatasetInfo:
    """Copy an RVC WebUI/Applio experiment's extracted data into an rvc-peft dataset in `out_dir`.

    `sample_rate` / `version` are inferred (WAV header, feature folder or width) and, when given, checked.
    Raises `ExperimentImportError` for a folder that is not an experiment or holds inconsistent files.
    """
    import soundfile as sf
    from tqdm.auto import tqdm

    from ..models.config import parse_sample_rate

    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    if not exp_dir.is_dir():
        raise ExperimentImportError(f"{exp_dir}: no such folder")
    layout_name = next((n for n, lay in _LAYOUTS.items() if (exp_dir / lay["wavs"]).is_dir()), None)
    if layout_name is None:
        raise ExperimentImportError(f"{exp_dir}: not an RVC experiment (neither 0_gt_wavs/ nor sliced_audios/ found)")
    layout = _LAYOUTS[layout_name]
    if (out_dir / INFO_FILE).exists() and not overwrite:
        raise ExperimentImportError(f"{out_dir} already holds a dataset; pass overwrite=True (--overwrite) to replace it")

    # Content features: the folder names the version (WebUI); Applio's single folder is read by width.
    if layout_name == "webui":
        feature_dirs = {v: exp_dir / f"3_feature{d}" for v, d in (("v1", 256), ("v2", 768))
                        if (exp_dir / f"3_feature{d}").is_dir()}
        if not feature_dirs:
            raise ExperimentImportError(f"{exp_dir}: no 3_feature256/ or 3_feature768/ folder (features not extracted)")
        if version is None and len(feature_dirs) > 1:
            raise ExperimentImportError(f"{exp_dir}: has both 3_feature256/ and 3_feature768/; pass version='v1' or 'v2'")
        if version is not None and version not in feature_dirs:
            raise ExperimentImportError(f"{exp_dir}: no features for {version} ({'3_feature256' if version == 'v1' else '3_feature768'}/ missing)")
        version = version or next(iter(feature_dirs))
        feature_dir = feature_dirs[version]
    else:
        feature_dir = exp_dir / "extracted"
        if not feature_dir.is_dir():
            raise ExperimentImportError(f"{exp_dir}: no extracted/ folder (features not extracted)")

    wavs = _stems(exp_dir / layout["wavs"], ".wav")
    features = _stems(feature_dir, ".npy")
    coarse, hz = _stems(exp_dir / layout["coarse"], ".wav.npy"), _stems(exp_dir / layout["hz"], ".wav.npy")
    use_f0 = bool(coarse or hz)
    if use_f0 and not (coarse and hz):
        missing = layout["hz"] if coarse else layout["coarse"]
        raise ExperimentImportError(f"{exp_dir}: pitch experiment without {missing}/ files")
    names = set(wavs) & set(features) & ((set(coarse) & set(hz)) if use_f0 else set(wavs))
    if not names:
        raise ExperimentImportError(f"{exp_dir}: no slice has all of its files ({layout['wavs']}/, {feature_dir.name}/"
                                    + (f", {layout['coarse']}/, {layout['hz']}/" if use_f0 else "") + ")")
    incomplete = sorted(set(wavs) - names, key=_natural_key)
    names = sorted(names, key=_natural_key)

    # Sample rate from the WAV header (every slice must agree); config.json and the argument are cross-checked.
    header_rate = sf.info(str(wavs[names[0]])).samplerate
    wanted = parse_sample_rate(sample_rate) if sample_rate is not None else None
    if wanted is not None and wanted != header_rate:
        raise ExperimentImportError(f"{wavs[names[0]]}: slices are at {header_rate} Hz, not the requested {wanted} Hz")
    config_rate = _experiment_sample_rate(exp_dir)
    if config_rate is not None and config_rate != header_rate:
        logger.warning("%s: config.json says %d Hz but the slices are at %d Hz; using %d Hz",
                       exp_dir, config_rate, header_rate, header_rate)

    first_width = _load_npy(features[names[0]]).shape[-1]
    if layout_name == "applio":
        if first_width not in (256, 768):
            raise ExperimentImportError(f"{features[names[0]]}: {first_width}-d features; expected 256 (v1) or 768 (v2)")
        inferred = "v1" if first_width == 256 else "v2"
        if version is not None and version != inferred:
            raise ExperimentImportError(f"{exp_dir}: features are {first_width}-d ({inferred}), not {version}")
        version = inferred
    content_dim = 256 if version == "v1" else 768

    speakers = _speaker_ids_from_filelist(exp_dir) if layout_name == "webui" else {}
    model_info = {}
    if (exp_dir / "model_info.json").is_file():
        try:
            model_info = json.loads((exp_dir / "model_info.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            model_info = {}
    encoder = str(model_info.get("embedder_model", "contentvec" if layout_name == "applio" else "hubert_base"))
    info = RVCDatasetInfo(sample_rate=header_rate, version=version, use_f0=use_f0,
                          f0_method=str(model_info.get("f0_method", "unknown")) if use_f0 else None,
                          content_encoder=encoder, content_dim=content_dim, hop_length=header_rate // 100,
                          source="rvc-experiment",
                          skipped=[{"file": f"{layout['wavs']}/{n}.wav", "reason": "missing features or pitch"}
                                   for n in incomplete])

    with DatasetWriter(out_dir, content_dim, use_f0) as writer:
        for position, name in enumerate(tqdm(names, desc="import", unit="slice", disable=not progress)):
            try:
                audio, rate = sf.read(str(wavs[name]), dtype="float32")
            except (sf.LibsndfileError, RuntimeError) as error:
                raise ExperimentImportError(f"{wavs[name]}: unreadable WAV ({error})") from error
            if rate != header_rate or audio.ndim != 1:
                raise ExperimentImportError(f"{wavs[name]}: expected mono {header_rate} Hz, got "
                                            f"{rate} Hz with {1 if audio.ndim == 1 else audio.shape[1]} channels")
            phone = _load_npy(features[name])
            if phone.ndim != 2 or phone.shape[1] != content_dim:
                raise ExperimentImportError(f"{features[name]}: shape {phone.shape}, expected [frames, {content_dim}]")
            parts = name.split("_")
            sid = speakers.get(name, 0)
            if layout_name == "applio" and len(parts) == 3 and parts[0].isdigit():
                sid = int(parts[0])
            row = {"audio": audio, "phone": phone, "speaker_id": sid, "source_file": f"{layout['wavs']}/{name}.wav",
                   "offset": float("nan"), "slice_index": int(parts[-1]) if parts[-1].isdigit() else position}
            if use_f0:
                row["pitch"], row["pitchf"] = _load_npy(coarse[name]), _load_npy(hz[name])
                for key, path in (("pitch", coarse[name]), ("pitchf", hz[name])):
                    if row[key].ndim != 1:
                        raise ExperimentImportError(f"{path}: shape {row[key].shape}, expected [frames]")
            writer.add(row)
        if incomplete:
            logger.warning("%s: %d slices lack features or pitch and were left out: %s", exp_dir, len(incomplete),
                           ", ".join(incomplete[:10]) + (" ..." if len(incomplete) > 10 else ""))
        return writer.finish(info, progress=progress)
