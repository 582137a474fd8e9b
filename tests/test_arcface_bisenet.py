"""ArcFace IResNet and BiSeNet: exact released layouts, strict loading, forward shapes, preprocessing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsvideo.errors import WeightsError
from fsvideo.models.arcface import ArcFace, identity_embedding, load_arcface
from fsvideo.models.bisenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LABELS,
    BiSeNet,
    load_bisenet,
    parse,
    preprocess,
)


def _key_list(shared_dir, name):
    rows = []
    for line in (shared_dir / "spec" / "key-lists" / name).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, shape, dtype))
    return rows


def _own(model):
    return [(k, str(tuple(v.shape)), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]


def tiny_arcface(seed=0):
    torch.manual_seed(seed)
    return ArcFace(layers=(1, 2, 1, 1), widths=(8, 8, 16, 16), embedding_size=16, stem_channels=8)


def tiny_bisenet(seed=0):
    torch.manual_seed(seed)
    return BiSeNet(19, widths=(8, 8, 16, 16), cp_channels=8, ffm_channels=16, aux_channels=8)


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def test_arcface_default_matches_released_key_list(shared_dir):
    assert _own(ArcFace()) == _key_list(shared_dir, "arcface_iresnet50.txt")


def test_bisenet_default_matches_released_key_list(shared_dir):
    net = BiSeNet(19)
    assert _own(net) == _key_list(shared_dir, "face_parsing_bisenet19.txt")
    assert sum(p.numel() for p in net.parameters()) == 13_300_416      # "13.3M parameters"


def test_arcface_released_size_feature_shapes():
    net = ArcFace().eval()
    assert not net.features.weight.requires_grad and torch.all(net.features.weight == 1)
    with torch.no_grad():
        feats, emb = net(torch.zeros(1, 3, 112, 112), return_features=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert emb.shape == (1, 512)
    with pytest.raises(ValueError, match=r"\[N, 3, 112, 112\].*identity_embedding"):
        net(torch.zeros(1, 3, 128, 128))


def test_arcface_forward_is_the_arcface_torch_computation():
    net = _randomise_bn(tiny_arcface()).eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        feats, emb = net(x, return_features=True)
        # arcface_torch IResNet.forward, written out
        h = net.prelu(net.bn1(net.conv1(x)))
        for i, stage in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
            for blk in stage:
                out = blk.bn3(blk.conv2(blk.prelu(blk.bn2(blk.conv1(blk.bn1(h))))))
                h = out + (h if blk.downsample is None else blk.downsample(h))
            assert torch.equal(h, feats[i])
        ref = net.features(net.fc(torch.flatten(net.bn2(h), 1)))
    assert torch.equal(ref, emb)
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 56, 56), (8, 28, 28), (16, 14, 14), (16, 7, 7)]


def test_arcface_strict_loading(tmp_path):
    net = _randomise_bn(tiny_arcface()).eval()
    f = tmp_path / "backbone.pth"
    torch.save(net.state_dict(), f)
    loaded = load_arcface(f)
    assert loaded.layers_cfg == (1, 2, 1, 1) and loaded.embedding_size == 16 and not loaded.training
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    assert torch.equal(loaded(x), net(x))
    sd = net.state_dict()
    del sd["layer2.1.prelu.weight"]
    sd["head.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"missing keys: layer2\.1\.prelu\.weight; unexpected keys: head\.weight"):
        load_arcface(sd)
    with pytest.raises(WeightsError, match="not an ArcFace"):
        load_arcface({"foo": torch.zeros(1)})


def test_identity_embedding_inputs(media_dir):
    import cv2
    net = tiny_arcface().eval()
    img = cv2.cvtColor(cv2.imread(str(media_dir / "images/aligned/ffhq-lt-00000.jpg")), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
    e_np = identity_embedding(net, img)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    e_t = identity_embedding(net, t)
    assert e_np.shape == (1, 16) and torch.allclose(e_np, e_t, atol=1e-6)
    assert torch.allclose(e_np.norm(dim=1), torch.ones(1))
    raw = identity_embedding(net, t, normalize=False)
    resized = F.interpolate(t, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(raw, net(resized), atol=1e-6)
    near = identity_embedding(net, t, mode="nearest", normalize=False)
    assert torch.allclose(near, net(F.interpolate(t, size=(112, 112), mode="nearest")), atol=1e-6)
    batch = identity_embedding(net, np.stack([img, img[:, ::-1]]))
    assert batch.shape == (2, 16) and torch.allclose(batch[0], e_np[0], atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        identity_embedding(net, img.astype(np.float32))
    with pytest.raises(ValueError, match="mode"):
        identity_embedding(net, img, mode="cubic")


def test_bisenet_forward_shapes_any_size():
    net = _randomise_bn(tiny_bisenet()).eval()
    with torch.no_grad():
        outs = net(torch.randn(2, 3, 96, 80))
    assert [tuple(o.shape) for o in outs] == [(2, 19, 96, 80)] * 3
    assert not torch.allclose(outs[0], outs[1])
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        net(torch.zeros(3, 64, 64))


def test_bisenet_strict_loading(tmp_path):
    net = _randomise_bn(tiny_bisenet()).eval()
    f = tmp_path / "79999_iter.pth"
    torch.save(net.state_dict(), f)
    loaded = load_bisenet(f)
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(loaded(x), net(x)))
    sd = net.state_dict()
    sd["cp.resnet.conv1.weight"] = torch.zeros(8, 3, 3, 3)
    msg = r"shape mismatches: cp\.resnet\.conv1\.weight \[8, 3, 3, 3\] vs \[8, 3, 7, 7\]"
    with pytest.raises(WeightsError, match=msg):
        load_bisenet(sd)


def test_parse_preprocessing_and_labels(media_dir):
    import cv2
    net = _randomise_bn(tiny_bisenet()).eval()
    # preprocessing: [0, 1], then ImageNet mean/std, at 512
    grey = np.full((300, 300, 3), 153, np.uint8)
    x = preprocess(grey)
    expect = (0.6 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert x.shape == (1, 3, 512, 512) and torch.allclose(x[0, :, 100, 100], expect, atol=1e-5)
    img = cv2.cvtColor(cv2.imread(str(media_dir / "images/aligned/ffhq-lt-00001.jpg")), cv2.COLOR_BGR2RGB)
    labels = parse(net, img)
    assert labels.dtype == np.uint8 and labels.shape == (512, 512) and labels.max() < len(LABELS) == 19
    with torch.no_grad():
        ref = net(preprocess(img))[0].argmax(1)[0].numpy()
    assert np.array_equal(labels, ref)
    small = parse(net, img, out_size=(128, 96))
    assert small.shape == (128, 96)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    lt = parse(net, t)
    assert lt.dtype == torch.int64 and lt.shape == (1, 512, 512)
    assert (lt[0].numpy() == labels).mean() > 0.99        # float vs uint8 input: same map up to rounding
