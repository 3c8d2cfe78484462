"""Run by test_hub.py in a fresh process whose HF_ENDPOINT points at the fake Hub (read when huggingface_hub is
imported): push a base model with `RVCSynthesizer.push_to_hub`, load it back with `load_synthesizer("org/name")`
from an empty cache, and write OUT/results.json.

usage: python hub_roundtrip.py OUT REPO_ID
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import rvc_peft
from rvc_peft.testing import random_inputs, random_synthesizer, small_config


def main(out: Path, repo_id: str) -> None:
    torch.set_num_threads(1)
    model = random_synthesizer(small_config("v1", True, 48000, spk_embed_dim=3))
    model.config.speaker_id = 2
    x = random_inputs(model.config, frames=20)
    model.push_to_hub(repo_id)
    loaded = rvc_peft.load_synthesizer(repo_id)
    outputs = []
    for m in (model, loaded):
        torch.manual_seed(0)
        outputs.append(m.infer(**x)[0])
    snapshot = Path(rvc_peft.checkpoints.resolve_model_file(repo_id))
    results = {
        "max_abs_diff": float((outputs[0] - outputs[1]).abs().max()),
        "config": [loaded.config.version, loaded.config.use_f0, loaded.config.sampling_rate,
                   loaded.config.spk_embed_dim, loaded.config.speaker_id, loaded.config.use_posterior_encoder],
        "name_or_path": loaded.name_or_path,
        "snapshot_files": sorted(p.name for p in snapshot.iterdir()),
    }
    (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
