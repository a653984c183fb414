"""DPO after SFT on the real SmolLM2-135M-Instruct: does preferring the character's words over the base model's own
answers make the persona hold better? Base vs SFT vs SFT+DPO, measured by `dantes-mlx eval` on llama.cpp GGUFs.

Steps, all through the project's own stages (what a user runs, in one process):
  1. the real demo (`dantes-mlx demo`: hybrid extraction, questions by SmolLM2, answers = Dantès' words, LoRA SFT,
     f16 export with its parity gate) into --workdir, unless demo.json is already there;
  2. `prefs`: the base GGUF answers every train/valid question (the rejected side), the character's answer is the
     chosen one;
  3. `train --method dpo`, starting from the SFT adapter (train.resume_adapter), same rank and layers;
  4. `export` of the DPO adapter (fused f16 GGUF, parity gate);
  5. `eval --base-gguf base_f16.gguf --gguf <model>.gguf` for SFT and for DPO with the same sampling, seed, probes,
     out-of-character probes, scenes and held-out rows; then `eval --side-by-side` of the two reports.
The LLM judge is not run: a 135M judge scores at random. The measures are the model-free persona checks
(dantes_mlx/evaluate/persona.py), the style markers and llama.cpp's held-out loss.

Run (torch and the plugin are needed on Linux, as for the demo): /work/venv-torch/bin/python bench/persona_dpo_real.py
     [--workdir DIR] [--dpo-iters 30]   (about 12 min on 2 cores, the demo included; reruns reuse every stage)
The last line is `score: X`: DPO's share of in-character answers minus SFT's, in percentage points, over the
out-of-character probes and every scene turn (above 0: DPO holds the persona better). One seed, few answers: noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dantes_mlx.config import CharacterConfig, EvalConfig, ExportConfig, PrefsConfig
from dantes_mlx.evaluate import stage as evaluate
from dantes_mlx.evaluate.persona import in_character
from dantes_mlx.evaluate.side_by_side import write_side_by_side
from dantes_mlx.export import stage as export
from dantes_mlx.pipeline.demo import demo
from dantes_mlx.pipeline.demo_real import RealDemoSettings, train_settings
from dantes_mlx.pipeline.run import finish
from dantes_mlx.prefs import stage as prefs
from dantes_mlx.train import stage as train
from dantes_mlx.workspace import Workspace


def log(text: str) -> None:
    print(text, flush=True)


def in_character_share(result: dict, role: str) -> tuple[float, int]:
    """(share, answers) in character over the out-of-character probes and every scene turn of one side."""
    side, language = result["sides"][role], result["settings"].get("language", "fr")
    answers = [side["answers"][t["id"]] for t in result["tasks"] if t["kind"] == "ooc"]
    answers += [a for t in result["tasks"] if t["kind"] == "scene" for a in side["turns"][t["id"]]]
    return (sum(in_character(a, language) for a in answers) / len(answers) if answers else 0.0), len(answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/persona-dpo-real", help="[default: /tmp/persona-dpo-real]")
    parser.add_argument("--dpo-iters", type=int, default=30, help="DPO steps after SFT [default: 30]")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO's beta [default: 0.1]")
    parser.add_argument("--lr", type=float, default=2e-4, help="DPO learning rate [default: 2e-4]")
    parser.add_argument("--max-tokens", type=int, default=60, help="tokens per eval answer [default: 60]")
    args = parser.parse_args()
    root, started = Path(args.workdir), time.monotonic()
    ws, character = Workspace.under(root), CharacterConfig()

    if not (root / "demo.json").is_file():
        log("== the real demo (SFT) ==")
        demo(root, log=log)
    manifest = json.loads((root / "demo.json").read_text(encoding="utf-8"))
    anchor = root.resolve().parents[len(Path(manifest["workdir"]).parts) - 1]  # the demo's paths are from its cwd

    def located(path: str) -> str:
        return path if Path(path).is_absolute() else str(anchor / path)

    base, files = located(manifest["base_model"]), manifest["exports"]["files"]
    sft_gguf, base_gguf = located(files["fused_f16"]), located(files["base_f16"])

    log("\n== prefs: the base model's own answers are the rejected side ==")
    pcfg = PrefsConfig(max_tokens=80, temperature=0.7, seed=0)
    finish(prefs.run(prefs.Settings(pcfg, base, gguf=base_gguf), ws, log), log)

    log("\n== train --method dpo, from the SFT adapter ==")
    demo_cfg = RealDemoSettings(iters=args.dpo_iters)
    tcfg = train_settings(Path(base), "auto", demo_cfg)
    tcfg.method, tcfg.beta, tcfg.learning_rate = "dpo", args.beta, args.lr
    tcfg.resume_adapter, tcfg.warmup_steps = str(ws.adapters), 0
    tcfg.steps_per_eval = tcfg.save_every = args.dpo_iters
    dpo_dir = root / "adapters-dpo"
    trained = finish(train.run(train.Settings(tcfg, data_dir=str(ws.preferences), adapter_path=str(dpo_dir),
                                              resume=None), ws, log), log)

    log("\n== export the DPO adapter (fused f16 GGUF, parity gate) ==")
    ecfg = ExportConfig(quantization="f16", ollama_name="dantes-demo-dpo", ollama_base="", ollama_create=False)
    exported = finish(export.run(export.Settings(ecfg, character.persona, base_model=base, adapter_path=str(dpo_dir),
                                                 out_dir=str(root / "export-dpo")), ws, log), log)
    dpo_gguf = exported.files["fused_f16"]

    log("\n== eval: base vs SFT, base vs DPO (llama.cpp, same sampling) ==")
    ecfg = EvalConfig(samples=-1, max_tokens=args.max_tokens, temperature=0.7, top_p=0.9, seed=0)
    reports = []
    for name, gguf in (("sft", sft_gguf), ("dpo", dpo_gguf)):
        out = root / "reports" / f"eval-{name}"
        settings = evaluate.Settings(ecfg, character, default_base=base, base_model=base, gguf=str(gguf),
                                     base_gguf=str(base_gguf), data_dir=str(ws.dataset), out_dir=str(out))
        summary = evaluate.run(settings, ws, log)
        log(summary.summary())
        reports.append(out)
    metrics, written = write_side_by_side(reports, root / "reports" / "side-by-side")
    log("\n" + metrics)
    results = [json.loads((r / "results.json").read_text(encoding="utf-8")) for r in reports]
    shares = {"base": in_character_share(results[0], "base"), "sft": in_character_share(results[0], "tuned"),
              "dpo": in_character_share(results[1], "tuned")}
    log(f"\nDPO: {args.dpo_iters} steps, beta {args.beta}, lr {args.lr}, final train loss "
        f"{trained.result.train_loss}; transcripts: {written}")
    for name, (share, n) in shares.items():
        log(f"in character ({name}): {100 * share:.0f}% of {n} answers (out-of-character probes + scene turns)")
    log(f"seconds: {time.monotonic() - started:.0f}")
    print(f"score: {100 * (shares['dpo'][0] - shares['sft'][0]):+.1f}  "
          "(DPO minus SFT, percentage points of in-character answers)")


if __name__ == "__main__":
    sys.exit(main())
