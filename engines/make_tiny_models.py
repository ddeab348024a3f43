#!/usr/bin/env python3
"""Builds tiny Llama checkpoints for real-engine tests, offline and deterministically.

    python engines/make_tiny_models.py OUT_DIR [--shape tiny|7b] [--variants bf16,awq,w8a8]

Writes, under OUT_DIR:
  tiny-llama/        bf16 weights (random, seed 0), byte-level BPE tokenizer, chat template
  tiny-llama-bf16    a symlink to tiny-llama/, so every variant is tiny-llama-<variant>
  tiny-llama-awq/    the same weights quantized to AWQ 4-bit (GEMM packing, group 64, zero point)
  tiny-llama-w8a8/   the same weights as compressed-tensors W8A8 int8 (per-channel weights,
                     dynamic per-token activations)

No model hub is touched. The tokenizer is trained with the `tokenizers` library on text that is on
every machine with Python: the licence texts in /usr/share/common-licenses (when present) and the
running interpreter's standard-library sources, read in sorted order, so the same Python builds the
same files. Throughput does not depend on weight values; fixed output lengths come from
`ignore_eos`, so random weights are enough to benchmark a serving engine.

`--shape 7b` builds a 7B-shaped Llama (32 layers, hidden 4096) in fp16 for GPU runs; only the bf16
variant is sensible there (quantize at load time instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
from pathlib import Path

SHAPES = {
    # 4 layers, hidden 256, 4 heads / 2 KV heads: loads in a second, serves on one CPU core.
    "tiny": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
        max_position_embeddings=4096,
    ),
    # Llama-2-7B's shape with a smaller vocabulary (the tokenizer is trained locally).
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
    ),
}

SPECIAL = ["<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CORPUS_BYTES = 3_000_000
AWQ_GROUP = 64
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def corpus_files() -> list[Path]:
    files: list[Path] = []
    licenses = Path("/usr/share/common-licenses")
    if licenses.is_dir():
        files += sorted(p for p in licenses.iterdir() if p.is_file())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files += sorted(stdlib.glob("*.py"))
    return files


def corpus() -> list[str]:
    out, total = [], 0
    for f in corpus_files():
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        out.append(text)
        total += len(text)
        if total >= CORPUS_BYTES:
            break
    if total < 100_000:
        sys.exit("make_tiny_models: found under 100 kB of local text to train the tokenizer on")
    return out


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )


def build_model(shape: str, tokenizer, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        **SHAPES[shape],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    cfg.vocab_size = max(cfg.vocab_size, len(tokenizer))
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.eval()
    model.generation_config.do_sample = False
    return model


def is_quantized(name: str) -> bool:
    return name.endswith(".weight") and name.split(".")[-2] in LINEARS


def awq_pack(q):
    """Packs 4-bit values [rows, cols] into int32 [rows, cols/8] in AutoAWQ's GEMM order."""
    import torch

    order = (0, 2, 4, 6, 1, 3, 5, 7)
    q = q.to(torch.int32)
    packed = torch.zeros(q.shape[0], q.shape[1] // 8, dtype=torch.int32)
    for i, src in enumerate(order):
        packed |= q[:, src::8] << (4 * i)
    return packed


def awq_tensors(name: str, w) -> dict:
    """Asymmetric 4-bit quantization of one Linear weight [out, in], AWQ GEMM layout."""
    import torch

    base = name[: -len(".weight")]
    wt = w.float().t().contiguous()  # [in, out]
    g = wt.reshape(-1, AWQ_GROUP, wt.shape[1])  # [in/group, group, out]
    lo, hi = g.amin(dim=1), g.amax(dim=1)  # [in/group, out]
    scales = ((hi - lo) / 15).clamp(min=1e-6)
    zeros = torch.round(-lo / scales).clamp(0, 15)
    q = torch.round(g / scales[:, None, :] + zeros[:, None, :]).clamp(0, 15)
    q = q.reshape(wt.shape)
    return {
        f"{base}.qweight": awq_pack(q),
        f"{base}.qzeros": awq_pack(zeros),
        f"{base}.scales": scales.to(torch.float16),
    }


def w8a8_tensors(name: str, w, dtype) -> dict:
    """Symmetric per-output-channel int8 weights, compressed-tensors layout."""
    import torch

    scale = (w.float().abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-8)
    q = torch.round(w.float() / scale).clamp(-128, 127).to(torch.int8)
    return {name: q, f"{name[: -len('.weight')]}.weight_scale": scale.to(dtype)}


def save_variant(out: Path, model, tokenizer, tensors: dict, dtype_name: str, quant: dict | None):
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg["architectures"] = [type(model).__name__]  # servers pick the model class from it
    cfg["torch_dtype"] = dtype_name
    cfg["dtype"] = dtype_name
    if quant is not None:
        cfg["quantization_config"] = quant
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / "model.safetensors",
              metadata={"format": "pt"})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--variants", default="bf16,awq,w8a8",
                    help="comma-separated subset of bf16,awq,w8a8 (default: all)")
    ap.add_argument("--prefix", default=None, help="folder name prefix (default: tiny-llama or llama-7b)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - {"bf16", "awq", "w8a8"}
    if unknown:
        ap.error(f"unknown variant(s) {sorted(unknown)}: use bf16, awq, w8a8")
    prefix = args.prefix or ("tiny-llama" if args.shape == "tiny" else "llama-7b")
    base_dtype, base_name = (
        (torch.bfloat16, "bfloat16") if args.shape == "tiny" else (torch.float16, "float16")
    )

    tokenizer = build_tokenizer(SHAPES[args.shape]["vocab_size"])
    model = build_model(args.shape, tokenizer, base_dtype)
    state = {k: v.detach() for k, v in model.state_dict().items()}

    if "bf16" in variants:
        save_variant(args.out / prefix, model, tokenizer, state, base_name, None)
        # `<prefix>-bf16` names the same directory, so a plan's [engine.matrix] can name every
        # variant's directory by its variant (plans/cpu_case_study.toml).
        alias = args.out / f"{prefix}-bf16"
        if not (alias.is_symlink() or alias.exists()):
            alias.symlink_to(prefix)
    if "awq" in variants:
        tensors = {}
        for k, v in state.items():
            tensors.update(awq_tensors(k, v) if is_quantized(k) else {k: v.to(torch.float16)})
        quant = {"quant_method": "awq", "bits": 4, "group_size": AWQ_GROUP,
                 "zero_point": True, "version": "gemm"}
        save_variant(args.out / f"{prefix}-awq", model, tokenizer, tensors, "float16", quant)
    if "w8a8" in variants:
        tensors = {}
        for k, v in state.items():
            tensors.update(w8a8_tensors(k, v, base_dtype) if is_quantized(k) else {k: v})
        int8 = {"num_bits": 8, "type": "int", "symmetric": True}
        quant = {
            "quant_method": "compressed-tensors",
            "format": "int-quantized",
            "quantization_status": "compressed",
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {**int8, "strategy": "channel", "dynamic": False},
                "input_activations": {**int8, "strategy": "token", "dynamic": True},
            }},
            "ignore": ["lm_head"],
        }
        save_variant(args.out / f"{prefix}-w8a8", model, tokenizer, tensors, base_name, quant)
    for v in variants:
        name = prefix if v == "bf16" else f"{prefix}-{v}"
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
