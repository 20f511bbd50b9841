#!/usr/bin/env bash
# Optional: build llama-cpp-python from source for the llama.cpp rows of
# `python -m evals.latency`. PyPI ships only the source (no CPU wheel), so
# this compiles llama.cpp: about 15 minutes on a 2-core machine. Never run by
# the tests; the benchmarks skip the llama.cpp rows with a note without it.
#
#   bash evals/install_llamacpp.sh            # default CPU build
#   LLAMACPP_VERSION=0.3.36 bash evals/install_llamacpp.sh
set -euo pipefail

# CPU only, no GPU backends, no multimodal helper library (we only need the text model).
# ISA: native (the numbers are for this machine), EXCEPT on a CPU that lists AMX: there a
# native build segfaults in ggml-cpu on any prompt batch > 1 (seen on this project's
# Intel machines), so we build with explicit AVX2 / AVX512 / VNNI / BF16 flags and no AMX.
# The build kind is written to evals/.llamacpp_build so benchmark reports can name it.
common="-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF"
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { [[ " $flags " == *" $1 "* ]]; }
if has amx_tile || has amx_int8 || has amx_bf16; then
  isa="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  has avx512f && isa+=" -DGGML_AVX512=ON"
  has avx512_vnni && isa+=" -DGGML_AVX512_VNNI=ON"
  has avx512_bf16 && isa+=" -DGGML_AVX512_BF16=ON"
  has avx512vbmi && isa+=" -DGGML_AVX512_VBMI=ON"
  build_kind="explicit-isa-no-amx ($isa)"
else
  isa="-DGGML_NATIVE=ON"
  build_kind="native"
fi
export CMAKE_ARGS="${CMAKE_ARGS:-$isa $common}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
spec="llama-cpp-python${LLAMACPP_VERSION:+==$LLAMACPP_VERSION}"

echo "building $spec with CMAKE_ARGS=$CMAKE_ARGS"
python -m pip install --no-binary llama-cpp-python --no-cache-dir "$spec"
python -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'ok')"
echo "$build_kind" > "$(dirname "$0")/.llamacpp_build"
echo "llama.cpp build: $build_kind"
