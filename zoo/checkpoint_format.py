"""What a zoo checkpoint holds: the keys of the file, and what sits under each.

A checkpoint is Lightning's dictionary of plain values (tensors, numbers, strings, lists,
dicts), so every one loads with ``torch.load(path, weights_only=True)``: opening it never
runs code. Lightning writes ``state_dict``, ``hyper_parameters``, ``optimizer_states``,
``lr_schedulers``, ``loops`` and ``callbacks``; zoo adds the keys below. Readers of
checkpoints (sample.py, evaluation, resume checks) use these names, never string literals.
"""

# Lightning's own keys that zoo reads.
STATE_DICT = "state_dict"  # the module's weights by parameter name (the live, not averaged, ones)
HYPER_PARAMETERS = "hyper_parameters"  # the family constructor's arguments, as plain values

# zoo's keys.
ZOO = "zoo"  # {"family": a name in zoo.models.FAMILIES, "version": zoo's version,
#             "data": {"name": the data set's name, "config": its data config as plain values}}
EMA = "ema_state_dict"  # the EMA callback's averaged weights by parameter name (zoo.callbacks.EMA)
RNG = "rng_states"  # Python's, NumPy's and torch's generator states (zoo.rng.rng_states)
GAN_STEPS = "gan_steps"  # a GAN's optimizer steps: {"discriminator": n, "generator": m}
