import numpy as np
import pytest
import torch

from vitedit import models
from vitedit.models import ModelError


def test_default_model_has_twelve_hookable_blocks():
    m = models.build_model("vit_small_p4_28", 5)
    assert len(m.blocks) == 12
    for blk in m.blocks:
        assert isinstance(blk.mlp.fc2, torch.nn.Linear) and isinstance(
            blk.attn.proj, torch.nn.Linear
        )
    seen = []
    h = m.blocks[5].mlp.fc2.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    m.eval()(torch.zeros(2, 3, 28, 28))
    h.remove()
    assert seen == [torch.Size([2, 50, 96])]  # 49 patches + CLS
    assert m.head.out_features == 5


def test_vit_base_config_builds_without_weights():
    m = models.build_model("vit_base_patch16_224", 9, pretrained=False)
    assert (
        len(m.blocks) == 12 and m.blocks[0].mlp.fc2.in_features == 3072 and m.head.out_features == 9
    )


def test_unknown_config():
    with pytest.raises(ModelError, match="vit_small_p4_28"):
        models.get_config("resnet")


def test_unreachable_pretrained_weights_give_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="weights_path"):
        models.build_model("vit_base_patch16_224", 5, pretrained=True)
    with pytest.raises(ModelError, match="does not exist"):
        models.build_model(
            "vit_base_patch16_224", 5, pretrained=True, weights_path="/nonexistent.pth"
        )
    with pytest.raises(ModelError, match="pretrained is false"):
        models.build_model("vit_small_p4_28", 5, pretrained=False, weights_path="/x.pth")


def test_local_weights_file_is_loaded_and_head_replaced(tmp_path, monkeypatch):
    """The pretrained path with a local file (as a user without hub access would use it)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    src = models.build_model("vit_base_patch16_224", 1000, pretrained=False)
    f = tmp_path / "vit_base_patch16_224.pth"
    torch.save(src.state_dict(), f)
    m = models.build_model("vit_base_patch16_224", 5, pretrained=True, weights_path=str(f))
    assert torch.equal(m.blocks[7].mlp.fc2.weight, src.blocks[7].mlp.fc2.weight)
    assert m.head.out_features == 5


def test_preprocess_normalises_uint8_and_keeps_zscored_floats():
    cfg = models.get_config("vit_small_p4_28")
    x = np.full((1, 28, 28, 3), 255, np.uint8)
    assert torch.allclose(models.preprocess(x, cfg), torch.ones(1, 3, 28, 28))
    z = np.random.default_rng(0).standard_normal((2, 28, 28)).astype(np.float32)
    out = models.preprocess(z, cfg)
    assert out.shape == (2, 3, 28, 28) and torch.allclose(out[:, 1], torch.from_numpy(z))


def test_predict_is_deterministic_and_restores_mode():
    m = models.build_model("vit_tiny_test", 3, drop_path=0.5)
    m.train()
    x = np.random.default_rng(0).integers(0, 255, (10, 28, 28, 3), dtype=np.uint8)
    cfg = models.get_config("vit_tiny_test")
    a = models.predict_logits(m, x, cfg, batch_size=3)
    b = models.predict_logits(m, x, cfg, batch_size=10)
    assert m.training and a.shape == (10, 3)
    assert torch.allclose(a, b, atol=1e-5)
