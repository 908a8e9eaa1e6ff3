import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lwzoo.archs import ARCHS, create_backbone
from lwzoo.moco import KeyQueue, MoCo, Projector, update_momentum


def test_queue_is_fifo_and_wraps_when_k_is_not_a_multiple_of_the_batch():
    queue = KeyQueue(size=10, dim=3)
    batches = [torch.full((4, 3), float(i)) for i in range(1, 5)]  # 4 pushes of 4 into 10 slots
    for b in batches[:2]:
        queue.push(b)
    assert queue.ptr.item() == 8
    assert queue.keys[:8, 0].tolist() == [1] * 4 + [2] * 4
    queue.push(batches[2])  # fills slots 8, 9 then wraps to 0, 1
    assert queue.ptr.item() == 2
    assert queue.keys[:, 0].tolist() == [3, 3, 1, 1, 2, 2, 2, 2, 3, 3]
    queue.push(batches[3])
    assert queue.ptr.item() == 6
    assert queue.keys[:, 0].tolist() == [3, 3, 4, 4, 4, 4, 2, 2, 3, 3]


def test_queue_keeps_the_newest_of_an_oversized_batch():
    queue = KeyQueue(size=4, dim=1)
    queue.push(torch.arange(6, dtype=torch.float32)[:, None])
    assert sorted(queue.keys[:, 0].tolist()) == [2, 3, 4, 5]


def test_queue_starts_with_unit_keys():
    assert torch.allclose(KeyQueue(64, 16).keys.norm(dim=1), torch.ones(64))


def test_momentum_update_is_an_ema_of_parameters_only():
    online, target = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        target.weight.copy_(torch.tensor([3.0, 2.0, 1.0]))
        online.running_mean.fill_(5.0)
    update_momentum(online, target, m=0.75)
    assert torch.allclose(target.weight, torch.tensor([2.5, 2.0, 1.5]))
    assert torch.equal(target.running_mean, torch.zeros(3))  # buffers are the key encoder's own


def test_projector_shape():
    assert Projector(1280, 2048, 128)(torch.randn(5, 1280)).shape == (5, 128)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in Projector(8, 16, 4).modules())


def tiny_moco(splits: int = 1) -> MoCo:
    torch.manual_seed(0)
    return MoCo(create_backbone("resnet18"), 512, dim=16, mlp_hidden=32, queue_size=24, key_bn_splits=splits)


def test_keys_are_unshuffled_and_match_the_key_encoder():
    model = tiny_moco(splits=4).eval()  # in eval mode BN ignores the batch, so splits change nothing
    x = torch.randn(8, 3, 32, 32)
    keys = model.keys(x, torch.Generator().manual_seed(1))
    assert torch.allclose(keys, F.normalize(model.key_encoder(x), dim=1), atol=1e-5)
    assert not keys.requires_grad


def test_key_bn_splits_give_each_sub_batch_its_own_statistics():
    model = tiny_moco(splits=2).train()
    x = torch.randn(8, 3, 32, 32)
    g = torch.Generator().manual_seed(3)
    keys = model.keys(x, g)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        shuffled = torch.cat([model.key_encoder(c) for c in x[perm].chunk(2)])
    expected = F.normalize(shuffled[torch.argsort(perm)], dim=1)
    assert torch.allclose(keys, expected, atol=1e-5)
    with torch.no_grad():
        whole = F.normalize(model.key_encoder(x), dim=1)
    assert not torch.allclose(keys, whole, atol=1e-3)  # different BN batches, different keys


def test_key_encoder_starts_as_a_copy_and_is_frozen():
    model = tiny_moco()
    for (n_q, p_q), (_, p_k) in zip(
        nn.Sequential(model.backbone, model.projector).named_parameters(),
        model.key_encoder.named_parameters(),
        strict=True,
    ):
        assert torch.equal(p_q, p_k), n_q
        assert not p_k.requires_grad
    assert model.query(torch.randn(2, 3, 32, 32)).norm(dim=1).allclose(torch.ones(2))


@pytest.mark.parametrize("name", list(ARCHS))
def test_registered_arch_feature_dim_matches_timm(name):
    backbone = create_backbone(name).eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 32, 32)).shape == (1, ARCHS[name].feature_dim)
