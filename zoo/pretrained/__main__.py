"""python -m zoo.pretrained: the table of the pretrained models that ship with this install."""

import sys

from zoo.errors import ZooError
from zoo.pretrained import format_models, list_models

try:
    print(format_models(list_models()))
except ZooError as error:
    sys.exit(f"zoo.pretrained: {error}")
