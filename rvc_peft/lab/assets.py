"""Where the voice-lab base shipped with rvc-peft lives (`rvc_peft/lab/weights/`).

The folder holds what `rvc_peft.lab.pretrain.pretrain` wrote: `f0G32k.pth` (an RVC v2 32k base in RVC's own fp16
base-file format), `content_encoder/` (the lab's MFCC stand-in for ContentVec), `training.json` and the model card
`README.md`. The discriminator of the same run (`f0D32k.pth`, 143 MB) is not shipped; `pretrain` writes it beside
the G file when you rebuild the base.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class LabBaseFiles:
    """Paths of a lab base folder; `discriminator` is None where the folder has no `f0D32k.pth`."""

    folder: Path
    synthesizer: Path
    content_encoder: Path
    model_card: Path
    discriminator: Path | None


def lab_base_files(folder: str | os.PathLike | None = None) -> LabBaseFiles:
    """The lab base in `folder` (default: the one shipped in the package); raises FileNotFoundError naming what is
    missing and how to rebuild it."""
    folder = Path(folder) if folder is not None else WEIGHTS
    files = LabBaseFiles(folder, folder / "f0G32k.pth", folder / "content_encoder", folder / "README.md",
                         folder / "f0D32k.pth" if (folder / "f0D32k.pth").is_file() else None)
    for path in (files.synthesizer, files.content_encoder / "config.json", files.content_encoder / "model.safetensors"):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the voice-lab base is incomplete; rebuild it with `rvc-peft lab-base` "
                                    "(see the README's voice-lab section)")
    return files
