"""Networks, one per file, pure PyTorch (CPU and CUDA, float32 / float16 / bfloat16).

State-dict names follow the released checkpoints, so they load strictly:

* :mod:`.stylegan2` rosinality / pSp StyleGAN2 generator with Feature-Style injection
* :mod:`.encoder`   the Feature-Style encoder (``143_enc.pth`` layout)
* :mod:`.iresnet`   the IResNet backbone shared by the encoder and ArcFace
"""
