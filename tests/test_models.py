import pytest
import torch

from trcnas.nas.errors import UserError
from trcnas.nas.models.backbones import BACKBONES


@pytest.mark.parametrize("name,channels", [("tiny", 192), ("resnet18", 960), ("hrnet18", 270)])
def test_backbones_concat_at_quarter_resolution_without_download(name, channels):
    net = BACKBONES.build(name).eval()
    assert net.out_channels == channels
    with torch.no_grad():
        y = net(torch.zeros(1, 3, 64, 96))
    assert y.shape == (1, channels, 16, 24)


def test_local_weights_only(tmp_path):
    with pytest.raises(UserError, match="not found"):
        BACKBONES.build("resnet18", str(tmp_path / "missing.pth"))
    net = BACKBONES.build("tiny")
    torch.save(net.body.state_dict(), tmp_path / "tiny.pth")
    again = BACKBONES.build("tiny", str(tmp_path / "tiny.pth"))
    for k, v in net.body.state_dict().items():
        assert torch.equal(v, again.body.state_dict()[k])
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="no tensor"):
        BACKBONES.build("tiny", str(tmp_path / "bad.pth"))
