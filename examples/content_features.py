"""Content features, retrieval index and training spectrograms, end to end.

    python examples/content_features.py [--content-encoder PATH_OR_HUB_ID] [--version v1|v2] [--out DIR]

With `--content-encoder` it uses a real encoder: RVC's `hubert_base.pt` (fairseq file, converted on the fly
without fairseq), a transformers ContentVec folder, or a Hub id. Without it, a small ContentVec-shaped model
with random weights is written in the transformers folder layout first (no weights can be downloaded here),
so the numbers show the mechanics, not real voice content.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import HubertConfig, HubertModel

from rvc_peft.data.index import build_index, ivf_list_count, load_index, rvc_index_filename, save_index
from rvc_peft.features.content_encoder import ContentEncoder, load_content_encoder
from rvc_peft.features.spectrogram import mel_from_config, spectrogram_from_config
from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.models.config import RVCConfig


def random_contentvec(folder: Path) -> Path:
    """A ContentVec-shaped encoder (HuBERT-base conv stack, 12 layers, final_proj) with few channels."""
    torch.manual_seed(0)
    config = HubertConfig(hidden_size=64, num_hidden_layers=12, num_attention_heads=2, intermediate_size=128,
                          conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          classifier_proj_size=256)
    ContentEncoder(HubertModel(config), torch.nn.Linear(64, 256), "v1", kind="contentvec").save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content-encoder", default=None, help="hubert_base.pt, a transformers folder or a Hub id")
    parser.add_argument("--version", default="v2", choices=("v1", "v2"))
    parser.add_argument("--out", type=Path, default=None, help="folder for the files (default: a temp folder)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="content_features_"))
    out.mkdir(parents=True, exist_ok=True)
    source = args.content_encoder or random_contentvec(out / "random_contentvec")

    start = time.perf_counter()
    encoder = load_content_encoder(source, args.version)
    print(f"loaded {encoder.kind} encoder from {source} in {time.perf_counter() - start:.2f} s: "
          f"{args.version} -> {encoder.output_dim}-d features (layer {encoder.output_layer}), normalize="
          f"{encoder.normalize}")

    # Two "speakers": the training voice (indexed) and the voice to convert, 16 kHz like RVC's encoder input.
    training, _ = voiced_signal(140.0, 6.0, seed=1)
    source_voice, _ = voiced_signal(220.0, 2.0, seed=2)
    train_feats = encoder.extract(training)
    query = encoder.extract(source_voice)
    print(f"features: training {train_feats.shape}, source {query.shape} "
          f"(F = (L - 400) // 320 + 1 = {encoder.num_frames(len(source_voice))} at 50 fps)")

    index_path = save_index(build_index(train_feats, show_progress=False),
                            out / rvc_index_filename(ivf_list_count(len(train_feats)), "demo", args.version))
    retrieval = load_index(index_path)
    print(f"index {index_path.name}: {retrieval.big_npy.shape[0]} vectors")
    for rate in (0.0, 0.5, 0.75, 1.0):
        blended = retrieval.blend(query, rate)
        distance = np.sqrt(retrieval.index.search(blended, 1)[0]).mean()
        print(f"  index_rate {rate:.2f}: mean distance to the nearest training frame {distance:.4f}")

    config = RVCConfig.from_preset("40k", args.version, use_f0=True)
    wav40k = torch.from_numpy(voiced_signal(140.0, 1.0, sample_rate=40000, seed=1)[0])[None]
    spec, mel = spectrogram_from_config(wav40k, config), mel_from_config(wav40k, config)
    print(f"40k training spectrograms: linear {tuple(spec.shape)}, log-mel {tuple(mel.shape)}")
    print(f"files in {out}")


if __name__ == "__main__":
    main()
