#!/usr/bin/env bash
# A tour of the crystalforge command line in a few minutes on a CPU.
#
#   bash examples/quickstart.sh                    # with the embedded default model
#   MODEL=out/tiny N=4 bash examples/quickstart.sh # with another checkpoint, fewer structures
#   OUT=/tmp/tour bash examples/quickstart.sh      # somewhere else than out/quickstart
#
# Run it from the repository root after `make run` (or with the venv activated).
set -euo pipefail

CF="${CRYSTALFORGE:-crystalforge}"
if ! command -v "$CF" >/dev/null 2>&1; then
    CF="$(dirname "$0")/../.venv/bin/crystalforge"
fi
OUT="${OUT:-out/quickstart}"
N="${N:-10}"
MODEL_ARGS=()
if [ -n "${MODEL:-}" ]; then
    MODEL_ARGS=(--model "$MODEL")
fi
SEARCH_ARGS=()
if [ -n "${MAX_NEW_TOKENS:-}" ]; then
    SEARCH_ARGS=(--search-opt "max_new_tokens=$MAX_NEW_TOKENS")
fi

step() { printf '\n== %s\n' "$*"; }

step "what is installed"
"$CF" --version
"$CF" plugins

step "the prompt the model sees for CaTiO3 in Pm-3m"
"$CF" prompt CaTiO3 --spacegroup Pm-3m

step "generate $N CaTiO3 structures (top-k sampling, seed 0)"
"$CF" run CaTiO3 --spacegroup Pm-3m -n "$N" --seed 0 --out "$OUT/CaTiO3" --no-progress \
    ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"} ${SEARCH_ARGS[@]+"${SEARCH_ARGS[@]}"}
head -n 4 "$OUT/CaTiO3/summary.csv"

step "validate the generated CIFs (CrystaLLM's checks plus installed plugins')"
"$CF" validate "$OUT/CaTiO3" --no-progress

step "evaluate: validity summary and plots"
"$CF" evaluate "$OUT/CaTiO3" -o "$OUT/CaTiO3_evaluation.csv" --plots "$OUT/plots" --no-progress

step "export the structures to VASP POSCAR files"
# (exit code 1 when some CIFs cannot be read, as happens with an untrained model)
"$CF" export "$OUT/CaTiO3" --format poscar --out "$OUT/poscar" || echo "(some CIFs could not be converted)"

step "done: see $OUT/"
