import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from lwzoo.archs import create_backbone
from lwzoo.moco import KeyQueue, MoCo, Projector, update_momentum
from lwzoo.split_bn import SplitBatchNorm2d


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


def plain_key_encoder(model: MoCo) -> nn.Module:
    """An independent copy of the key encoder as it was before split BatchNorm: the query encoder's
    plain layers (the key encoder starts as its copy)."""
    return copy.deepcopy(nn.Sequential(model.backbone, model.projector))


def test_key_bn_splits_give_each_sub_batch_its_own_statistics():
    model = tiny_moco(splits=2).train()
    plain = plain_key_encoder(model).train()
    x = torch.randn(8, 3, 32, 32)
    g = torch.Generator().manual_seed(3)
    keys = model.keys(x, g)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        shuffled = torch.cat([plain(c) for c in x[perm].chunk(2)])
    expected = F.normalize(shuffled[torch.argsort(perm)], dim=1)
    assert torch.allclose(keys, expected, atol=1e-5)
    with torch.no_grad():
        whole = F.normalize(plain(x), dim=1)
    assert not torch.allclose(keys, whole, atol=1e-3)  # different BN batches, different keys


def test_a_batch_that_does_not_split_evenly_runs_as_uneven_chunks():
    model = tiny_moco(splits=2).train()
    plain = plain_key_encoder(model).train()
    x = torch.randn(9, 3, 32, 32)  # a short batch: groups of 5 and 4, as chunk() makes them
    keys = model.keys(x, torch.Generator().manual_seed(5))
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        shuffled = torch.cat([plain(c) for c in x[perm].chunk(2)])
    assert torch.allclose(keys, F.normalize(shuffled[torch.argsort(perm)], dim=1), atol=1e-5)
    assert model.keys(torch.randn(8, 3, 32, 32)).shape == (8, 16)  # even batches split in one forward again
    assert all(m.groups == 2 for m in model.key_encoder.modules() if isinstance(m, SplitBatchNorm2d))


def test_key_encoder_keeps_the_plain_state_dict_layout_and_loads_an_old_one():
    model = tiny_moco(splits=4)
    plain = plain_key_encoder(model)
    new = model.key_encoder.state_dict()
    assert [(k, v.shape) for k, v in new.items()] == [(k, v.shape) for k, v in plain.state_dict().items()]
    old = {k: v.clone() for k, v in model.state_dict().items()}  # a checkpoint written before split BN:
    for k, v in plain.state_dict().items():  # the same keys, from plain layers, with other values
        old[f"key_encoder.{k}"] = v + 1 if v.is_floating_point() else v + 3
    fresh = tiny_moco(splits=4)
    fresh.load_state_dict(old)  # strict
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in old.items())
    fresh.update_key_encoder(0.5)  # the EMA still pairs every key parameter with its query parameter
    for (name, q), k in zip(plain.named_parameters(), fresh.key_encoder.parameters(), strict=True):
        assert torch.allclose(k, (q + q + 1) / 2), name


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
