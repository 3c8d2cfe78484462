"""`accelerate launch` target for the multi-process test: train_accelerate.py with the narrow test discriminator.

Same entry point as the script (`parse_args` -> `rvc_peft.training.main`); only the discriminator is swapped for
`narrow_discriminator` so that a GAN step takes milliseconds on a CPU.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rvc_peft.training import TrainingError, main, parse_args
from tests.training.utils import narrow_discriminator

if __name__ == "__main__":
    args = parse_args()
    try:
        result = main(args, discriminator=narrow_discriminator("v2"))
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(130 if result.interrupted else 0)
