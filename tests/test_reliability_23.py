"""Issue 23, findings 8, 9, 11-15 (finding 7, the zoo name a local folder shadows, is in tests/test_sources.py):
what a user gives a plugin clash, an export, an oversized input, a hand-edited config.json, a bad log or Hub id, the
pickle-conversion hint or a resumed run ends in one message (exit 2 from the CLI) or works; never a traceback, never a
silently wrong model or metric.

The small model is timm's test_resnet + a one-conv FCN head at 32x32 on the shapes data (as tests/test_reliability.py).
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from segcore import Decoder, hookimpl, load_registry
from segcore.cli import _common as CLI
from segcore.cli.main import main
from segcore.config import load_pipeline
from segcore.contracts.plugins import get_plugin_manager
from segcore.data.datasets import dataset_meta
from segcore.errors import ConfigError
from segcore.hub import ZOO_VAR
from segcore.inference.onnx import export_onnx
from segcore.layers import DisentangledNonLocal, pool_concat
from segcore.model.build import build_model

REPO = Path(__file__).resolve().parents[1]

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def cli(capsys, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# -- 8: a component name two plugins register -----------------------------------------------------------------------


@attrs.frozen
class _EmptyCfg:  # classic's keys, so one pipeline fits both
    num_convs: int = 2
    channels: int = 256
    in_index: int = -1


class _EmptyFCN(Decoder):
    """A third party's 'fcn' without parameters: what took over classic's in the report."""

    def __init__(self, cfg: _EmptyCfg, *, in_features, attention) -> None:
        super().__init__()
        self.out_channels, self.stride = in_features[-1].channels, in_features[-1].stride

    def forward(self, features):
        return features[-1]


class _ThirdParty:
    @hookimpl(tryfirst=True)
    def segcore_register(self, registry):
        registry.add(_EmptyFCN, name="fcn", config=_EmptyCfg)


@pytest.fixture
def clash_registry(monkeypatch):
    pm = get_plugin_manager(autoload=False)
    pm.register(_ThirdParty(), name="thirdparty")
    registry = load_registry(pm)
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    return registry


def test_a_component_name_two_plugins_register_stops_the_build_naming_both(clash_registry, small_pipeline, tmp_path, capsys):
    path = write(tmp_path / "p.toml", small_pipeline)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, registry=clash_registry)
    msg = str(err.value)
    assert "model.decoder: decoder 'fcn' is registered by 2 plugins" in msg
    assert 'plugin "segcore.builtin.decoders"' in msg and 'plugin "thirdparty"' in msg
    assert "plugin = 'thirdparty'" in msg and "SEGCORE_DISABLE_PLUGINS=thirdparty" in msg
    code, out, err = cli(capsys, "check", path)
    assert code == 2 and "ok:" not in out and "Traceback" not in err
    assert "'fcn' is registered by 2 plugins" in err


@pytest.mark.parametrize(("plugin", "params"), [("segcore", "> 0"), ("segcore.builtin.decoders", "> 0"), ("thirdparty", "0")])
def test_naming_the_plugin_in_the_component_table_picks_its_component(clash_registry, small_pipeline, tmp_path, capsys, plugin, params):
    path = write(tmp_path / "p.toml", small_pipeline.replace('name = "fcn"\n', f'name = "fcn"\nplugin = "{plugin}"\n'))
    cfg = load_pipeline(path, registry=clash_registry)
    assert cfg.model.decoder.plugin == plugin
    with torch.device("meta"):
        decoder = build_model(cfg.model, clash_registry, num_classes=3).decoder
    n = sum(p.numel() for p in decoder.parameters())
    assert (n > 0) if params == "> 0" else (n == 0), n
    code, out, err = cli(capsys, "check", path)
    assert code == 0 and "ok:" in out, err


@pytest.mark.parametrize(("value", "fragment"), [
    ('"nobody"', "decoder 'fcn' is not registered by a plugin or distribution 'nobody'; it is by plugin "
                 "\"segcore.builtin.decoders\""),
    ("3", "plugin must be a string naming the plugin"),
])  # fmt: skip
def test_the_plugin_key_is_validated_like_every_key(registry, small_pipeline, tmp_path, value, fragment):
    path = write(tmp_path / "p.toml", small_pipeline.replace('name = "fcn"\n', f'name = "fcn"\nplugin = {value}\n'))
    with pytest.raises(ConfigError, match="model.decoder: ") as err:
        load_pipeline(path, registry=registry)
    assert fragment in str(err.value)


def test_the_plugin_key_is_kept_in_the_resolved_pipeline(clash_registry, small_pipeline, tmp_path):
    from segcore.config import dump_pipeline

    path = write(tmp_path / "p.toml", small_pipeline.replace('name = "fcn"\n', 'name = "fcn"\nplugin = "segcore"\n'))
    cfg = load_pipeline(path, registry=clash_registry)
    again = load_pipeline(write(tmp_path / "again.toml", dump_pipeline(cfg)), registry=clash_registry)
    assert again == cfg and again.model.decoder.plugin == "segcore"
    assert not isinstance(build_model(again.model, clash_registry, num_classes=3).decoder, _EmptyFCN)


# -- 9: export of every shipped model; --opset honoured or refused --------------------------------------------------


class _PooledContext(nn.Module):
    """What frm_van_b0-camvid's graph has that torch.export stumbled on, at toy width: maps at strides 4-32 pooled to
    the coarsest one (`pool_concat`, adaptive bins for sizes that do not divide), FRM's non-local block (2x2 ceil-mode
    pooling of a 1-2 px map), upsampled back to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(4, 4, 3, stride=2, padding=1) for _ in range(3))
        self.context = DisentangledNonLocal.variant("frm", 16, key_channels=4)
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, image: Tensor) -> Tensor:
        maps = [self.stem(image)]
        for down in self.down:
            maps.append(down(maps[-1]))
        logits = self.head(self.context(pool_concat(maps)))
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


def _onnx_opset(path: Path) -> int:
    import onnx

    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def test_a_model_with_pooled_context_exports_for_every_size(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _PooledContext().eval()
    path = export_onnx(model, tmp_path / "ctx.onnx", example_size=(96, 128))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, size in ((1, (96, 128)), (2, (75, 101)), (1, (64, 64)), (3, (131, 97))):  # sizes that do not divide
        x = torch.rand(batch, 3, *size)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == want.shape and abs(got - want).max() < 1e-4, (batch, size, abs(got - want).max())


def test_pool_concat_pools_exactly_as_pytorch_does_when_exported():
    from segcore.layers.context import adaptive_avg_pool

    class Pool(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return adaptive_avg_pool(x, (5, 7))

    x = torch.rand(2, 3, 23, 31)
    program = torch.export.export(Pool(), (x,), dynamic_shapes={"x": {2: torch.export.Dim("h", min=8, max=512),
                                                                       3: torch.export.Dim("w", min=8, max=512)}})  # fmt: skip
    for size in ((23, 31), (12, 40), (90, 11)):
        y = torch.rand(2, 3, *size)
        torch.testing.assert_close(program.module()(y), F.adaptive_avg_pool2d(y, (5, 7)), atol=1e-6, rtol=1e-5)
    assert torch.equal(Pool()(x), F.adaptive_avg_pool2d(x, (5, 7)))  # eager: PyTorch's kernel, bit for bit


def test_opset_is_honoured_or_refused_never_silently_another(tmp_path):
    pytest.importorskip("onnxscript")
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    path = export_onnx(model, tmp_path / "o19.onnx", example_size=(96, 128), opset=19)
    assert _onnx_opset(path) == 19
    with pytest.raises(ConfigError, match=r"--opset 99 does not exist: onnx .* knows opsets 1 to \d+"):
        export_onnx(model, tmp_path / "o99.onnx", example_size=(64, 64), opset=99)
    try:  # torch converts down to 13 for some graphs and not for others: either 13 is written, or nothing
        path = export_onnx(model, tmp_path / "o13.onnx", example_size=(64, 64), opset=13)
    except ConfigError as exc:
        assert "could not convert this model to opset 13 (the graph stays at opset 18); nothing was written" in str(exc)
        assert not (tmp_path / "o13.onnx").exists()
    else:
        assert _onnx_opset(path) == 13


@pytest.mark.slow
@pytest.mark.parametrize("name", ["frm_van_b0-camvid", "hrnet_l-camvid"])
def test_every_shipped_model_exports_and_passes_its_parity_check(name, tmp_path, monkeypatch, capsys):
    """``segcore export <name> --format onnx``: the shipped folder (hub/models, offline) through the CLI's own parity
    check (argmax agreement >= 99.9 % at two scales) on CamVid val images (random ones where the data is absent)."""
    pytest.importorskip("onnxruntime")
    registry = load_registry()
    if name.startswith("frm") and "frm" not in {p.name for p in registry.plugins}:
        pytest.skip("needs segcore-plugin-frm")
    if name.startswith("hrnet") and "hrnet_fusion" not in {p.name for p in registry.plugins}:
        pytest.skip("needs segcore-plugin-hrnet-fusion")
    monkeypatch.setenv(ZOO_VAR, str(REPO / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    images = tmp_path / "images"
    images.mkdir()
    val = sorted((REPO.parent / "shared" / "data" / "camvid" / "val").glob("*.png"))[:2]
    for i in range(2):
        if i < len(val):
            shutil.copy(val[i], images / val[i].name)
        else:
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (360, 480, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / f"{name}.onnx"
    code, stdout, err = cli(capsys, "export", name, "--format", "onnx", "--out", out, "--images", images,
                            "--check-images", 2, "--scales", 1.0, 0.75, "--repeats", 1)  # fmt: skip
    assert code == 0, err
    rows = re.findall(r"^\s*(\d+)x(\d+)\s+\S+\s+\S+\s+([\d.]+)%", stdout, flags=re.M)
    assert [(int(h), int(w)) for h, w, _ in rows] == [(360, 480), (270, 360)], stdout
    assert all(float(agree) >= 99.9 for *_, agree in rows), stdout


# -- 14: the pickle-conversion hint's output is accepted by init_from -------------------------------------------------


def test_the_file_segcore_s_pickle_conversion_hint_writes_is_accepted_by_init_from(registry, small_pipeline, tmp_path):
    import subprocess
    import sys

    from segcore.engine.trainer import Trainer

    cfg = load_pipeline(write(tmp_path / "p.toml", small_pipeline + f'out_dir = "{tmp_path / "run"}"\n'), registry=registry)
    torch.manual_seed(3)
    trained = build_model(cfg.model, registry, num_classes=dataset_meta(cfg.data.dataset, registry).num_classes)
    torch.save(trained.state_dict(), tmp_path / "weights.pt")  # what another tool leaves
    pipeline = attrs.evolve(cfg, model=attrs.evolve(cfg.model, init_from=str(tmp_path / "weights.pt")))
    with pytest.raises(ConfigError, match="segcore never unpickles") as err:
        Trainer.from_config(pipeline, registry, progress=False)
    command = re.search(r'python -c "(.*)"$', str(err.value)).group(1)  # the hint, run as printed
    subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True, timeout=300)
    converted = tmp_path / "model.safetensors"
    pipeline = attrs.evolve(cfg, model=attrs.evolve(cfg.model, init_from=str(converted)))
    with pytest.warns(UserWarning, match="has no integrity record .* loaded unverified"):
        trainer = Trainer.from_config(pipeline, registry, progress=False)
    got = trainer.model.state_dict()
    assert [k for k, v in trained.state_dict().items() if not torch.equal(got[k], v)] == []


# -- 12: config.json of a model folder is untrusted input ------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, registry):
    import segcore

    root = tmp_path_factory.mktemp("folder")
    cfg = load_pipeline(write(root / "p.toml", (Path(__file__).parent / "data" / "small.toml").read_text()), registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    model = build_model(cfg.model, registry, num_classes=meta.num_classes)
    return segcore.save_pretrained(model, root / "model", meta=meta, dataset="shapes", registry=registry)


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda c: c.update(model=[1, 2]), "model: "),
    (lambda c: c["dataset"].update(class_names="background"), "dataset.class_names must be a list, got 'background'"),
    (lambda c: c["dataset"].update(class_names=[1, 2, 3, 4]), "dataset.class_names[0]: expected a string, got 1"),
    (lambda c: c["dataset"].update(palette=None), "dataset.palette must be a list, got None"),
    (lambda c: c["dataset"].update(palette=[[0, 0, 0]]), "palette: 1 colours for"),
    (lambda c: c["dataset"].update(ignore_index="255"), "dataset.ignore_index: expected an integer, got '255'"),
    (lambda c: c.update(plugins={"plugin": "x"}), "plugins must be a list"),
    (lambda c: c["plugins"][0].update(provides="decoder fcn"), "plugins[0].provides must be a list"),
    (lambda c: c["segcore"].update(format="1"), "segcore.format must be an integer"),
    (lambda c: c.update(input_size=["360", 480]), "input_size[0]: expected an integer"),
    (lambda c: c.update(metrics={"mIoU": "high"}), "metrics.mIoU must be a number or null, got 'high'"),
])  # fmt: skip
def test_every_field_of_a_hand_edited_config_json_is_checked_before_use(registry, model_folder, tmp_path, capsys,
                                                                        monkeypatch, edit, fragment):  # fmt: skip
    import json

    import segcore
    from segcore.errors import DamagedFileError

    folder = shutil.copytree(model_folder, tmp_path / "edited")
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DamagedFileError) as err:
        segcore.from_pretrained(folder, registry=registry)
    assert str(err.value).startswith(f"{folder / 'config.json'}: ") and fragment in str(err.value), str(err.value)
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    code, _, stderr = cli(capsys, "export", folder, "--out", tmp_path / "m.onnx", "--no-check")
    assert code == 2 and fragment in stderr and "Traceback" not in stderr


# -- 13: bad input to plot ends in one message and exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(("line", "fragment"), [
    ('{"kind": "eval", "step": 2, "mIoU": null}', "log.jsonl:2: mIoU is None, not a number"),
    ('{"kind": "eval", "step": 2, "mIoU": "0.5"}', "log.jsonl:2: mIoU is '0.5', not a number"),
    ('{"kind": "train", "step": 2, "loss": "nan?"}', "log.jsonl:2: loss is 'nan?', not a number"),
])  # fmt: skip
def test_plot_names_a_log_field_that_is_not_a_number(tmp_path, capsys, line, fragment):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"kind": "train", "step": 1, "loss": 1.5}\n' + line + "\n")
    code, _, err = cli(capsys, "plot", run, "--out", tmp_path / "c.png")
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "c.png").exists()


def test_plot_refuses_an_out_that_is_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"kind": "train", "step": 1, "loss": 1.5}\n{"kind": "eval", "step": 1, "mIoU": 0.5}\n')
    code, _, err = cli(capsys, "plot", run, "--out", tmp_path)
    assert code == 2 and f"--out {tmp_path} is a folder; give the PNG file to write" in err, err


# -- 15: a resumed run logs each step once --------------------------------------------------------------------------


def test_a_run_resumed_after_its_final_evaluation_was_logged_logs_it_once(small_pipeline, tmp_path, capsys):
    import json

    path = write(tmp_path / "p.toml", small_pipeline)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out-dir", str(out), "-q"]) == 0
    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [r["step"] for r in evals] == [4]
    (out / "model.safetensors").unlink()  # killed after the final evaluation was logged, before the weights were written
    (out / "metrics.json").unlink()
    code, _, err = cli(capsys, "run", path, "--out-dir", out, "--resume", "-q")
    assert code == 0, err
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), keys
    assert keys.count(("eval", 4)) == 1 and (out / "model.safetensors").is_file()
