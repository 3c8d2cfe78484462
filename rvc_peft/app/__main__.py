"""`python -m rvc_peft.app`: the web app (same options as `rvc-peft app`)."""

import sys

from . import main

sys.exit(main())
