#!/usr/bin/env bash
# Issue #22's note table in one run, on idle cores (nothing else running: check `uptime`; about 1-1.5 h on 2 cores):
# PyTorch (fp32 eager, the fast path bf16, fast path int8) beside onnxruntime fp32 and OpenVINO fp32 / int8 on the
# same model and input, against timm's hrnet_w48 features in fp32 eager, for
#   - seed 000's HRNet_L-W48 at 512x1024 (bench/hrnet_l_w48.toml, random weights: speed only), and
#   - the CamVid zoo model hrnet_l-camvid (HRNet_L-W18, small layout) at 360x480 (its pipeline, random weights: speed
#     only);
# then the cost in accuracy on CamVid val (the zoo model's trained weights): PyTorch fp32 / fast path bf16 / int8,
# onnxruntime fp32, OpenVINO fp32 / int8 (mIoU, argmax agreement with fp32 eager), with the int8 knobs varied;
# and onnxruntime's per-op profile of the exported CamVid model at 1 thread.
#
#   pip install -e ".[export,int8,openvino]" -e plugins/classic -e plugins/hrnet-fusion
#   bash bench/bench_deploy.sh [OUT_DIR]        # THREADS=2 by default; results (text and JSON) in OUT_DIR
set -euo pipefail
out=${1:-deploy-bench}
threads=${THREADS:-2}
val=${CAMVID_VAL:-../shared/data/camvid/val}  # CamVid val images for the exports' parity checks
mkdir -p "$out"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/machine.txt"
features='avx512_bf16|amx_bf16|amx_int8|avx512_vnni|avx_vnni'
{ lscpu | grep -E "Model name|^CPU\(s\)"
  echo "int8/bf16 features: $(grep -o -w -E "$features" /proc/cpuinfo | sort -u | tr '\n' ' ')"
} | tee -a "$out/machine.txt"

modes=("fp32 eager" "fast path")   # + "fast path + int8" (--int8) + the runtimes
run_bench() {  # name pipeline size
  segcore bench "$2" --input-size "$3" --no-train --modes "${modes[@]}" --int8 --runtimes all \
    --baseline hrnet_w48 --repeats 5 --warmup 2 --threads "$threads" --json > "$out/$1.json"
  python -c "import json, sys; from segcore.tools.bench import format_bench; \
print(format_bench(json.load(open(sys.argv[1]))))" "$out/$1.json" | tee "$out/$1.txt"
}
run_bench hrnet_l_w48-512x1024 bench/hrnet_l_w48.toml 512x1024
run_bench hrnet_l_camvid-360x480 hub/models/hrnet_l-camvid/pipeline.toml 360x480

# accuracy (CamVid val, 101 images at 360x480): the knobs that keep int8 within 0.2 mIoU
acc() { python bench/bench_accuracy.py hub/models/hrnet_l-camvid --threads "$threads" "$@"; }
acc --int8 --runtime onnxruntime openvino | tee "$out/accuracy-default.txt"
acc --int8 --runtime openvino --skip-first-last | tee "$out/accuracy-skip-first-last.txt"
acc --int8 --runtime openvino --calibration-images 128 --preset mixed | tee "$out/accuracy-128-mixed.txt"

# onnxruntime's profile of the exported CamVid model, 1 thread (docs/speed.md, "Why onnxruntime was slow")
for format in onnx openvino; do
  suffix=$([ "$format" = onnx ] && echo onnx || echo xml)
  segcore export hrnet_l-camvid --format "$format" --out "$out/hrnet_l-camvid.$suffix" \
    --images "$val" --repeats 5 --threads "$threads" | tee "$out/export-$format.txt"
done
segcore export hrnet_l-camvid --format openvino --int8 --out "$out/hrnet_l-camvid-int8.xml" --images "$val" \
  --repeats 5 --threads "$threads" | tee "$out/export-openvino-int8.txt"
python bench/profile_onnx.py "$out/hrnet_l-camvid.onnx" 360x480 --threads 1 | tee "$out/profile-onnx.txt"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
