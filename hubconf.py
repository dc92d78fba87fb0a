"""torch.hub entry points: one per pretrained model zoo ships (zoo/pretrained/index.json).

    model = torch.hub.load("path/to/zoo", "gan_digits", source="local")
    images = model.sample(16, generator=torch.Generator().manual_seed(0))

``torch.hub.list(...)`` names them, ``torch.hub.help(..., "gan_digits")`` describes one. The
entry points are made from the registry of shipped models, so the list never drifts from it.
"""

import zoo.pretrained as _pretrained

dependencies = ["torch", "lightning", "hydra", "omegaconf", "safetensors"]

globals().update(_pretrained.hub_entry_points())
