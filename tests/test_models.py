import pytest
import torch

from trcnas.nas.errors import UserError
from trcnas.nas.models.backbones import BACKBONES

# every registered backbone's concatenated channels (ResNet: 64+128+256+512 or x4 for the bottleneck ones; HRNet:
# its raw branches); a backbone registered without an entry here fails the test until its width is stated
CHANNELS = {"tiny": 192, "patch": 32, "resnet18": 960, "resnet34": 960, "resnet50": 3840, "resnet101": 3840,
            "hrnet18": 270, "hrnet48": 720}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbones_concat_at_quarter_resolution_without_download(name):
    channels = CHANNELS.get(name)
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
