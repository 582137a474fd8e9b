"""Networks, one per file, pure PyTorch (CPU and CUDA, float32 / float16 / bfloat16).

State-dict names follow the released checkpoints, so they load strictly:

* :mod:`.stylegan2` rosinality / pSp StyleGAN2 generator with Feature-Style injection
* :mod:`.encoder`   the Feature-Style encoder (``143_enc.pth`` layout)
* :mod:`.iresnet`   the IResNet backbone shared by the encoder and ArcFace
* :mod:`.fse`       encoder + generator + ``latent_avg``: encode / decode / G^K
* :mod:`.arcface`   ArcFace IResNet-50 (identity loss and metric)
* :mod:`.bisenet`   BiSeNet face parsing, 19 classes (blend masks, parsing loss)
* :mod:`.lpips_net` real LPIPS (AlexNet / VGG) built offline
* :mod:`.loading`   safe, strict checkpoint loading (``weights_only=True``)
* :mod:`.random_init` tiny seeded models in the official formats (tests, doctor, benchmarks)
"""
