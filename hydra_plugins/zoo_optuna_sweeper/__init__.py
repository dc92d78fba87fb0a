"""zoo's Hydra sweeper backed by Optuna: ``hydra/sweeper=zoo_optuna`` (see conf/hparams_search/).

Hydra finds it by scanning the ``hydra_plugins`` namespace package; the config is in
``config.py``, the sweeper in ``optuna_sweeper.py``.
"""
