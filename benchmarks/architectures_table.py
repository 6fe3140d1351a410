"""Every architecture physgsa reads, from a tiny random config of its real class: chain and certificate.

Each model is built from a random tiny config of the transformers / diffusers class, saved with
``save_pretrained`` to a temporary folder and read back through ``physgsa.models.load_chain``,
in static mode and in Jacobian mode (random inputs, flagged), then certified with the defaults.
Prints a markdown table (architecture, mode, factors, interfaces, chain breaks, certified
interfaces, time) and, with ``--json``, writes the rows. A mode an architecture does not offer is
listed with the reason physgsa gives.

    python benchmarks/architectures_table.py --threads 1 [--json benchmarks/results/architectures.json]

Random weights: the numbers say what the adapters build and how long it takes, not anything
about trained networks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, pin_threads

# numpy, torch, transformers and physgsa are imported inside the functions, after pin_threads: BLAS
# and OpenMP read their thread counts when they load (and `--help` stays fast).

BASE = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
        "num_hidden_layers": 2, "vocab_size": 64, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 1}


def builders():
    """Map each name to a function building the tiny model (imports deferred until after thread pinning)."""
    import diffusers
    import transformers as t

    def llm(cfg, cls, **extra):
        return lambda: getattr(t, cls)(getattr(t, cfg)(**BASE, **extra))

    tc = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 40, "num_hidden_layers": 2,
          "vocab_size": 30, "max_position_embeddings": 10, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    vc = {"hidden_size": 24, "num_attention_heads": 3, "intermediate_size": 48, "num_hidden_layers": 2,
          "image_size": 8, "patch_size": 4}
    return {
        "gpt2": lambda: t.GPT2Model(t.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=16, vocab_size=50,
                                                 bos_token_id=0, eos_token_id=0)),
        "bert": lambda: t.BertModel(t.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                                 intermediate_size=64, vocab_size=50, max_position_embeddings=16)),
        "vit": lambda: t.ViTModel(t.ViTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                              intermediate_size=64, image_size=8, patch_size=4)),
        "llama": llm("LlamaConfig", "LlamaForCausalLM"),
        "mistral": llm("MistralConfig", "MistralModel", sliding_window=3),
        "qwen2": llm("Qwen2Config", "Qwen2ForCausalLM"),
        "qwen3": llm("Qwen3Config", "Qwen3Model", head_dim=16),
        "gemma": llm("GemmaConfig", "GemmaModel", head_dim=16),
        "gemma2": llm("Gemma2Config", "Gemma2Model", head_dim=16),
        "gemma3_text": llm("Gemma3TextConfig", "Gemma3TextModel", head_dim=16, sliding_window=3),
        "phi3": llm("Phi3Config", "Phi3ForCausalLM"),
        "clip": lambda: t.CLIPModel(t.CLIPConfig(text_config=tc, vision_config=vc, projection_dim=8)),
        "resnet": lambda: t.ResNetModel(t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                       layer_type="basic")),
        "mobilenet_v2": lambda: t.MobileNetV2Model(t.MobileNetV2Config(depth_multiplier=0.25, image_size=32)),
        "efficientnet": lambda: t.EfficientNetModel(t.EfficientNetConfig(
            width_coefficient=0.25, depth_coefficient=1.0, image_size=32, hidden_dim=320, in_channels=[32, 16, 24],
            out_channels=[16, 24, 40], strides=[1, 2, 2], kernel_sizes=[3, 3, 5], expand_ratios=[1, 6, 6],
            num_block_repeats=[1, 2, 2])),
        "convnext": lambda: t.ConvNextModel(t.ConvNextConfig(hidden_sizes=[8, 16], depths=[2, 1], num_stages=2)),
        "convnextv2": lambda: t.ConvNextV2Model(t.ConvNextV2Config(hidden_sizes=[8, 16], depths=[2, 1], num_stages=2)),
        "regnet": lambda: t.RegNetModel(t.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24], depths=[1, 2, 1],
                                                       groups_width=4, layer_type="y")),
        "unet (UNet2DModel)": lambda: diffusers.UNet2DModel(
            sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4),
        "unet_cond (UNet2DConditionModel)": lambda: diffusers.UNet2DConditionModel(
            sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=6, attention_head_dim=2,
            norm_num_groups=4),
    }


def run(name, folder, mode):
    import physgsa
    from physgsa.models import load_chain

    t0 = time.perf_counter()
    try:
        kw = {"mode": "jacobian", "inputs": "random"} if mode == "jacobian" else {}
        chain = load_chain(folder, **kw)
    except Exception as exc:  # noqa: BLE001 - the table reports what physgsa says
        msg = str(exc).splitlines()[0].replace(str(folder), folder.name)
        return {"architecture": name, "mode": mode, "status": f"refused: {msg[:120]}"}
    t1 = time.perf_counter()
    res = physgsa.certify(chain)
    t2 = time.perf_counter()
    it = res.interfaces
    cert = int(it["certified_measured"].sum()) if len(it) else 0
    return {"architecture": name, "mode": mode, "status": "ok", "factors": len(chain.factors),
            "interfaces": len(chain.links), "breaks": len(chain.breaks), "certified": cert,
            "load_s": round(t1 - t0, 3), "certify_s": round(t2 - t1, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    ap.add_argument("--only", nargs="*", default=None, help="architectures to run (default: all)")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in builders().items():
            if args.only and name.split(" ")[0] not in args.only:
                continue
            torch.manual_seed(0)
            folder = Path(tmp) / name.split(" ")[0]
            build().eval().save_pretrained(folder)
            for mode in ("static", "jacobian"):
                rows.append(run(name, folder, mode))
    print("| architecture | mode | factors | interfaces | chain breaks | certified (measured) | load (s) "
          "| certify (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['architecture']} | {r['mode']} | {r['status']} | | | | | |")
        else:
            print(f"| {r['architecture']} | {r['mode']} | {r['factors']} | {r['interfaces']} | {r['breaks']} | "
                  f"{r['certified']} / {r['interfaces']} | {r['load_s']:.2f} | {r['certify_s']:.2f} |")
    if args.json:
        emit({"rows": rows, "threads": args.threads}, args.json)


if __name__ == "__main__":
    main()
