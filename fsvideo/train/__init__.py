"""Training the Feature-Style encoder (paper §4) for a frozen StyleGAN2.

* :mod:`.config`      typed ``train:`` config, recipes ``paper`` and ``official``
* :mod:`.data`        real images from a folder, synthetic images with their ground-truth noise
* :mod:`.losses`      Eqs. 2-8: MSE, multi-scale LPIPS, feature reconstruction, identity, parsing
* :mod:`.optim`       Adam / RAdam / Ranger (RAdam + Lookahead + gradient centralisation), step decay
* :mod:`.checkpoint`  atomic checkpoints (released encoder layout + training state), exact resume
* :mod:`.trainer`     the :class:`Trainer` (single process or torchrun / DDP)
"""
from fsvideo.train.config import TrainConfig, dump_train_config, load_train_config, train_config_from_dict
from fsvideo.train.trainer import Progress, Trainer, train

__all__ = ["Progress", "TrainConfig", "Trainer", "dump_train_config", "load_train_config", "train",
           "train_config_from_dict"]
