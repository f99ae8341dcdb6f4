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


@pytest.mark.slow  # ~14 s: ONNX exports on 2 idle AVX2 cores
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
    # with CamVid here, no --images: the model's own recipe (its pipeline.toml, roots from the repository) gives them
    where = [] if val else ["--images", images]
    monkeypatch.chdir(REPO)
    code, stdout, err = cli(capsys, "export", name, "--format", "onnx", "--out", out, *where,
                            "--check-images", 2, "--scales", 1.0, 0.75, "--repeats", 1)  # fmt: skip
    assert code == 0, err
    assert ("camvid validation images" in stdout) == bool(val), stdout
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
    assert [k for k in keys if k[0] == "start"] == [("start", 0)]  # the resumed session trained nothing: no start record


# -- 11: oversized inputs are refused before allocating; images over the decompression limit are named -------------


@pytest.fixture
def little_memory(monkeypatch):
    """Memory as small as the test needs (*bytes*), instead of allocating until the machine runs out."""
    import segcore.io

    def set_available(n: int) -> None:
        monkeypatch.setattr(segcore.io, "available_memory", lambda device="cpu": (n, "available in this test"))

    return set_available


def _small(small_pipeline: str, tmp_path: Path, extra: str = "") -> Path:
    return write(tmp_path / "p.toml", small_pipeline + f'out_dir = "{tmp_path / "run"}"\n' + extra)


def test_a_crop_whose_training_step_cannot_fit_is_refused_before_training(small_pipeline, tmp_path, capsys, little_memory):
    little_memory(2**20)
    path = _small(small_pipeline.replace("[data]\n", "[data.augment]\ncrop_size = [256, 256]\n[data]\n"), tmp_path)
    code, _, err = cli(capsys, "run", path, "-q")
    assert code == 2 and "Traceback" not in err, err
    assert "error: a training step at [data.augment] crop_size (batch 2 at 256x256) needs about " in err
    assert "counted by running the model on the meta device at this size" in err and "1.0 MiB is available in this test" in err
    assert "Lower data.batch_size" in err and not (tmp_path / "run" / "log.jsonl").exists()


def test_an_eval_resize_that_cannot_fit_is_refused_before_training(small_pipeline, tmp_path, capsys, little_memory):
    little_memory(16 * 2**20)  # the 32x32 training step fits; validation at 1024x1024 does not
    path = _small(small_pipeline, tmp_path, "[eval]\nresize = [1024, 1024]\nbatch_size = 4\n")
    code, _, err = cli(capsys, "run", path, "-q")
    assert code == 2 and "error: validation at [eval] resize (batch 4 at 1024x1024) needs about " in err, err
    assert "Lower [eval] batch_size or [eval] resize" in err


def test_bench_refuses_a_size_and_batch_that_cannot_fit(small_pipeline, tmp_path, capsys, little_memory):
    little_memory(2**20)
    path = _small(small_pipeline, tmp_path)
    code, out, err = cli(capsys, "bench", path, "--input-size", "256x256", "--batch", 2, "--no-train", "--repeats", 1,
                         "--warmup", 0, "--modes", "fp32 eager", "-q")  # fmt: skip
    assert code == 2 and "error: inference for segcore bench (batch 2 at 256x256) needs about " in err, err
    assert "--input-size or --batch" in err and out == ""
    code, _, err = cli(capsys, "bench", path, "--input-size", "32x32", "--train-size", "256x256", "--repeats", 1,
                       "--warmup", 0, "--modes", "fp32 eager", "--train-modes", "fp32 eager", "-q")  # fmt: skip
    assert code == 2 and "error: a training step for segcore bench (batch 2 at 256x256) needs about " in err, err


def test_predicting_an_image_that_cannot_fit_is_refused_before_allocating(registry, small_pipeline, tmp_path, little_memory):
    import segcore
    from segcore.errors import MemoryLimitError

    cfg = load_pipeline(_small(small_pipeline, tmp_path), registry=registry)
    model = build_model(cfg.model, registry, num_classes=3).eval()
    image = np.zeros((512, 768, 3), np.uint8)
    little_memory(2**20)
    with pytest.raises(MemoryLimitError, match=r"predicting a 768x512 image \(batch 1 at 512x768\) needs about .* on cpu") as err:
        segcore.predict(model, image)
    assert "predict it in windows" in str(err.value)
    little_memory(2**40)
    assert segcore.predict(model, image).shape == (512, 768)


def test_the_estimate_counts_what_a_forward_pass_holds(registry, small_pipeline, tmp_path):
    from segcore.model.memory import activation_peak

    cfg = load_pipeline(_small(small_pipeline, tmp_path), registry=registry)
    model = build_model(cfg.model, registry, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, large = (activation_peak(model, (2, 3, s, s)) for s in (64, 256))
    assert 0 < small < large and 12 < large / small < 20  # activations grow with the pixels (16x)
    assert activation_peak(model, (2, 3, 64, 64), train=True) > 2 * small  # autograd keeps the activations
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is left as it was


def test_an_image_over_the_decompression_limit_is_named_with_its_size(tmp_path, monkeypatch, capsys):
    from segcore.data.datasets import read_image
    from segcore.errors import DataError
    from segcore.io import MAX_PIXELS_VAR

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses 2x its limit: 2000 px here, 400 Mpx normally
    monkeypatch.delenv(MAX_PIXELS_VAR, raising=False)
    path = tmp_path / "huge.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(path)
    with pytest.raises(DataError) as err:
        read_image(path)
    assert str(err.value).startswith(f"{path}: image is 64 x 48 (0 Mpx), over the limit of 1,000 pixels segcore decodes")
    assert f"if you trust the file, raise it: {MAX_PIXELS_VAR}=3072 (or 'none')" in str(err.value)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)  # 1600 px: PIL only warns, segcore refuses as well
    with pytest.raises(DataError, match="image is 40 x 40"):
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS_VAR, "5000")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(path)
    assert read_image(path).shape == (48, 64, 3)


def test_bench_names_the_timm_model_a_misspelt_baseline_meant(small_pipeline, tmp_path, capsys):
    code, out, err = cli(capsys, "bench", _small(small_pipeline, tmp_path), "--baseline", "resnet5O", "-q")
    assert code == 2 and "Traceback" not in err and out == "", err
    assert "error: --baseline 'resnet5O': timm has no such model (did you mean 'resnet50'?)" in err


# -- 13: hub push offline, Hub ids with '..', folder patterns with other placeholders --------------------------------


def test_hub_push_offline_or_to_a_bad_repo_id_is_one_message(model_folder, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for command in (("hub", "push", model_folder), ("data", "push", model_folder)):
        code, _, err = cli(capsys, *command, "--repo-id", "a/..b")
        assert code == 2 and "'a/..b' is not a Hub repo id: " in err and "Traceback" not in err, err
    with pytest.raises(ConfigError, match=r"push_to_hub repo_id 'a/\.\./b' is not a Hub repo id"):
        __import__("segcore").push_to_hub(model_folder, "a/../b")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, _, err = cli(capsys, "hub", "push", model_folder, "--repo-id", "me/model")
    assert code == 2 and "HF_HUB_OFFLINE is set, and a push needs the network; unset it" in err, err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for exc in (OfflineModeIsEnabled("offline"), ConnectionError("[Errno -3] Temporary failure in name resolution")):
        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda *a, exc=exc, **k: (_ for _ in ()).throw(exc))
        code, _, err = cli(capsys, "hub", "push", model_folder, "--repo-id", "me/model")
        assert code == 2 and "the Hub (https://" in err and "cannot be reached" in err and "Traceback" not in err, err


@pytest.mark.parametrize(("pattern", "fragment"), [
    ('images = "img/{0}"', "images = 'img/{0}': {0} is not a placeholder segcore fills; the only one is {split}"),
    ('masks = "m/{split}/{kind}"', "masks = 'm/{split}/{kind}': {kind} is not a placeholder"),
    ('images = "img/{split"', "images = 'img/{split': expected '}' before end of string; the only placeholder is {split}"),
])  # fmt: skip
def test_a_folder_pattern_with_another_placeholder_is_refused_when_the_pipeline_is_read(registry, small_pipeline, tmp_path,
                                                                                        pattern, fragment):  # fmt: skip
    table = f'name = "folder"\nroot = "{tmp_path}"\nclass_names = ["a", "b"]\n{pattern}\n'
    path = _small(small_pipeline.replace('name = "shapes"\nsize = [32, 32]\nnum_train = 8\nnum_val = 2\n', table), tmp_path)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, registry=registry)
    assert f"  data.dataset: {fragment}" in str(err.value), str(err.value)


# -- 15: skip_bad never scores a sample twice; timm's checkpoint_path loads safely -----------------------------------


@pytest.fixture
def bad_folder(small_pipeline, tmp_path) -> Path:
    """A folder dataset whose val split has 3 images, the second corrupt; skip_bad = true."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 3)):
        for i in range(n):
            (tmp_path / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / split / f"{i}.png")
            Image.fromarray(rng.integers(0, 2, (32, 32), dtype=np.uint8)).save(tmp_path / "masks" / split / f"{i}.png")
    (tmp_path / "images" / "val" / "1.png").write_bytes(b"\x89PNG not really")
    table = f'name = "folder"\nroot = "{tmp_path}"\nclass_names = ["a", "b"]\nimage_suffix = ".png"\nskip_bad = true\n'
    return _small(small_pipeline.replace('name = "shapes"\nsize = [32, 32]\nnum_train = 8\nnum_val = 2\n', table), tmp_path)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_bad_val_image_is_skipped_and_reported_never_counted_twice(registry, bad_folder, batch_size):
    import functools

    from segcore.data.datasets import build_split
    from segcore.engine.evaluate import evaluate, format_metrics
    from segcore.engine.inference import pad_collate

    cfg = load_pipeline(bad_folder, registry=registry)
    val = build_split(cfg.data, registry, "val")
    loader = torch.utils.data.DataLoader(val, batch_size=batch_size, collate_fn=functools.partial(pad_collate, ignore_index=255))
    model = build_model(cfg.model, registry, num_classes=2)
    with pytest.warns(UserWarning, match=r"skipped: .*images/val/1\.png: corrupt or unreadable image"):
        result = evaluate(model, loader, val.meta, torch.device("cpu"), cfg.eval, progress=False)
    assert result.matrix.sum() == 2 * 32 * 32  # the two good images, once each
    assert result.skipped == 1 and result.metrics["skipped"] == 1
    assert "1 bad sample(s) skipped (skip_bad)" in format_metrics(result.metrics, val.meta)
    train = build_split(cfg.data, registry, "train")  # training still serves the next good sample: said in the docs
    assert "image" in train[0]


def test_timm_checkpoint_path_loads_safely_or_says_how_to_convert(registry, small_pipeline, tmp_path):
    import timm
    from safetensors.torch import save_file

    from segcore.errors import DamagedFileError

    trained = timm.create_model("test_resnet").state_dict()
    torch.save({"state_dict": trained, "epoch": 3}, tmp_path / "plain.pth")
    save_file(trained, tmp_path / "plain.safetensors")
    torch.save({"state_dict": trained, "opt": _EmptyCfg()}, tmp_path / "pickled.pth")  # a class weights_only refuses
    (tmp_path / "cut.pth").write_bytes((tmp_path / "plain.pth").read_bytes()[:200])

    def build(file: str):
        text = small_pipeline.replace('model_name = "test_resnet"\n', f'model_name = "test_resnet"\nkwargs = {{ checkpoint_path = "{tmp_path / file}" }}\n')
        return build_model(load_pipeline(_small(text, tmp_path), registry=registry).model, registry, num_classes=3).backbone

    for file in ("plain.pth", "plain.safetensors"):
        got = {k.removeprefix("model."): v for k, v in build(file).state_dict().items()}
        assert got and all(torch.equal(v, trained[k]) for k, v in got.items()), file
    with pytest.raises(ConfigError) as err:
        build("pickled.pth")
    msg = str(err.value)
    assert "checkpoint_path: " in msg and "pickled.pth: torch.load(weights_only=True) refuses it (it pickles " in msg
    assert "segcore never unpickles; convert it once where you trust it" in msg and "pickled.safetensors" in msg
    with pytest.raises(DamagedFileError, match="cut.pth: not a readable torch checkpoint"):
        build("cut.pth")
