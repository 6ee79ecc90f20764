"""Moved to `longvid.train.tiny_v1` (longvid-tiny v1's recipe); this module keeps ``python -m longvid.synth.train``,
the command in the bundled v1 model's training card, running.
"""

from longvid.train.tiny_v1 import *  # noqa: F401,F403
from longvid.train.tiny_v1 import main

if __name__ == "__main__":
    main()
